-- The disclosure chain (registry::audit): one entry per disclosure, carrying its digest, in a
-- chain of its own, anchored in the registry's audit chain. Disclosures logged before this
-- migration keep their entries in audit_log. Its head row's lock serialises the disclosure
-- log's writers only, not the registry's.
create table disclosure_audit_log (
    seq       bigint primary key,
    at        timestamptz not null,
    actor     text not null,
    action    text not null,
    subject   text not null,
    detail    text not null,
    prev_hash text not null,
    hash      text not null
);
create table disclosure_audit_head (
    id   integer primary key check (id = 1),
    seq  bigint not null,
    hash text   not null
);
insert into disclosure_audit_head (id, seq, hash) values (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
