-- Registry core: change sets, record versions, change log, labels, hash-chained audit log.
-- Same shape as the SQLite migration, in PostgreSQL types.

create table change_set (
    change_set_id uuid primary key,
    actor         text not null,
    source        text not null,
    reason        text,
    created_at    timestamptz not null
);

-- One row per version of a record. The current version has valid_to null; older versions are
-- kept forever (nothing is overwritten: a new version only closes the old one's validity).
create table record_version (
    record_id     uuid    not null,
    version       bigint  not null,
    register      text    not null,
    functional_id text    not null,
    parent_id     uuid,
    status        text    not null,
    fields        jsonb   not null,
    change_set_id uuid    not null references change_set (change_set_id),
    valid_from    timestamptz not null,
    valid_to      timestamptz,
    primary key (record_id, version)
);
create unique index record_current_id on record_version (record_id) where valid_to is null;
create unique index record_current_functional_id on record_version (functional_id) where valid_to is null;
create index record_current_register on record_version (register, record_id) where valid_to is null;
create index record_version_parent on record_version (parent_id) where parent_id is not null;
-- Per-field indexes (rv_ix__*/rv_uq__*) are created at start from specs/registers.

create table change_log (
    record_id     uuid   not null,
    version       bigint not null,
    field         text   not null,
    old_value     jsonb,
    new_value     jsonb,
    change_set_id uuid   not null references change_set (change_set_id),
    primary key (record_id, version, field)
);

create table version_label (
    label       text   not null,
    record_id   uuid   not null,
    version     bigint not null,
    labelled_by text   not null,
    labelled_at timestamptz not null,
    primary key (label, record_id)
);

create table audit_log (
    seq       bigint primary key,
    at        timestamptz not null,
    actor     text not null,
    action    text not null,
    subject   text not null,
    detail    text not null,
    prev_hash text not null,
    hash      text not null
);
-- The last entry written. Its row lock also serialises writers, so the chain never forks.
create table audit_head (
    id   integer primary key check (id = 1),
    seq  bigint not null,
    hash text   not null
);
insert into audit_head (id, seq, hash) values (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
