-- Staff API: staff users and change requests (maker-checker). Same shape as the SQLite
-- migration, in PostgreSQL types.

create table staff_user (
    user_name     text primary key,
    password_hash text        not null,   -- argon2id PHC string
    roles         jsonb       not null,
    disabled      boolean     not null default false,
    created_at    timestamptz not null,
    updated_at    timestamptz not null
);

create table change_request (
    change_request_id uuid primary key,
    maker             text        not null,
    source            text        not null,
    reason            text,
    status            text        not null check (status in ('pending', 'approved', 'rejected', 'cancelled')),
    submitted_at      timestamptz not null,
    drafts            jsonb       not null,
    bases             jsonb       not null,
    record_count      bigint      not null,
    decided_by        text,
    decided_at        timestamptz,
    decision_reason   text,
    change_set_id     uuid references change_set (change_set_id)
);
create index change_request_status on change_request (status, change_request_id);
