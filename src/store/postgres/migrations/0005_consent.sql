-- Consent (issue 6): the disclosure log and the consent policies last audited.
--
-- disclosure: one row per reply that carried registry data to a partner; `document` is the
-- entry exactly as hashed (its digest is in the audit entry written in the same transaction).
-- Append-only: updates and deletes are refused.
create table disclosure (
    disclosure_id  uuid primary key,
    at             timestamptz not null,
    partner        text not null,
    action         text not null,
    message_id     text not null,
    transaction_id text not null,
    correlation_id text not null,
    document       text not null,
    digest         text not null
);
create index disclosure_at on disclosure (at);
create index disclosure_partner on disclosure (partner, at);

-- The registrants (functional ids) each disclosure carried: households and their members.
create table disclosure_registrant (
    disclosure_id uuid not null references disclosure (disclosure_id),
    functional_id text not null,
    primary key (disclosure_id, functional_id)
);
create index disclosure_registrant_lookup on disclosure_registrant (functional_id);

create function disclosure_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'the disclosure log is append-only';
end;
$$;
create trigger disclosure_no_change before update or delete on disclosure
    for each row execute function disclosure_append_only();
create trigger disclosure_registrant_no_change before update or delete on disclosure_registrant
    for each row execute function disclosure_append_only();

-- The consent policy files (name → SHA-256) as last audited; replaced, with an audit entry,
-- when nsr starts with a different set.
create table consent_policy_state (
    name   text primary key,
    digest text not null
);
