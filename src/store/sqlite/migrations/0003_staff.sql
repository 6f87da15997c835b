-- Staff API: staff users and change requests (maker-checker). Timestamps as in 0001 (RFC 3339
-- text, six fractional digits).

-- People who use the staff API. Roles are a JSON array of role names.
create table staff_user (
    user_name     text primary key,
    password_hash text    not null,   -- argon2id PHC string
    roles         text    not null,
    disabled      integer not null default 0,
    created_at    text    not null,
    updated_at    text    not null
);

-- Change requests. A pending request holds its drafts (JSON) and, per record touched, the
-- version it was made against and the fields it touches (bases, JSON). An approved request
-- names the change set that applied it; a bulk-import batch is one approved row with no drafts.
create table change_request (
    change_request_id text primary key,
    maker             text    not null,
    source            text    not null,
    reason            text,
    status            text    not null check (status in ('pending', 'approved', 'rejected', 'cancelled')),
    submitted_at      text    not null,
    drafts            text    not null,
    bases             text    not null,
    record_count      integer not null,
    decided_by        text,
    decided_at        text,
    decision_reason   text,
    change_set_id     text references change_set (change_set_id)
);
-- Listing by status, newest first (ids are time-ordered UUIDv7).
create index change_request_status on change_request (status, change_request_id);
