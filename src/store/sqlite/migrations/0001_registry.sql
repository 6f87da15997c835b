-- Registry core: change sets, record versions, change log, labels, hash-chained audit log.
-- Timestamps are TEXT in RFC 3339 UTC with exactly six fractional digits (clock::to_text), so
-- text order is time order. Ids are UUID text.

-- Every write belongs to a change set: who, where from, why, when.
create table change_set (
    change_set_id text primary key,
    actor         text not null,
    source        text not null,
    reason        text,
    created_at    text not null
);

-- One row per version of a record. The current version has valid_to null; older versions are
-- kept forever (nothing is overwritten: a new version only closes the old one's validity).
create table record_version (
    record_id     text    not null,
    version       integer not null,
    register      text    not null,
    functional_id text    not null,
    parent_id     text,
    status        text    not null,
    fields        blob    not null,   -- JSONB (SQLite binary JSON): index expressions read it without re-parsing
    change_set_id text    not null references change_set (change_set_id),
    valid_from    text    not null,
    valid_to      text,
    primary key (record_id, version)
);
-- At most one current version per record and per functional id.
create unique index record_current_id on record_version (record_id) where valid_to is null;
create unique index record_current_functional_id on record_version (functional_id) where valid_to is null;
-- Listing and exporting a register in creation order (record ids are UUIDv7, time-ordered).
create index record_current_register on record_version (register, record_id) where valid_to is null;
-- Members and supporting rows by parent, now and as of an instant. (Reads as of an instant
-- by functional id resolve the record id through the current row, then use the primary key.)
create index record_version_parent on record_version (parent_id) where parent_id is not null;
-- Per-field indexes (rv_ix__*/rv_uq__*) are created at start from specs/registers.

-- Field-level change log; who and when come from the change set.
create table change_log (
    record_id     text    not null,
    version       integer not null,
    field         text    not null,
    old_value     text,              -- JSON, null when the field was absent
    new_value     text,              -- JSON, null when the field was removed
    change_set_id text    not null references change_set (change_set_id),
    primary key (record_id, version, field)
);

-- Named versions (survey rounds, feedback from connected systems).
create table version_label (
    label       text    not null,
    record_id   text    not null,
    version     integer not null,
    labelled_by text    not null,
    labelled_at text    not null,
    primary key (label, record_id)
);

-- Hash-chained audit log: hash = sha256 of [seq, at, actor, action, subject, detail, prev_hash].
create table audit_log (
    seq       integer primary key,
    at        text not null,
    actor     text not null,
    action    text not null,
    subject   text not null,
    detail    text not null,
    prev_hash text not null,
    hash      text not null
);
-- The last entry written, kept apart so removing entries from the end is detectable.
create table audit_head (
    id   integer primary key check (id = 1),
    seq  integer not null,
    hash text    not null
);
insert into audit_head (id, seq, hash) values (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
