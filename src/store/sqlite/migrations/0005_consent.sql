-- Consent (issue 6): the disclosure log and the consent policies last audited.
--
-- disclosure: one row per reply that carried registry data to a partner; `document` is the
-- entry exactly as hashed (its digest is in the audit entry written in the same transaction).
-- Append-only: updates and deletes are refused.
create table disclosure (
    disclosure_id  text primary key,
    at             text not null,
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
    disclosure_id text not null references disclosure (disclosure_id),
    functional_id text not null,
    primary key (disclosure_id, functional_id)
);
create index disclosure_registrant_lookup on disclosure_registrant (functional_id);

create trigger disclosure_no_update before update on disclosure
begin select raise(abort, 'the disclosure log is append-only'); end;
create trigger disclosure_no_delete before delete on disclosure
begin select raise(abort, 'the disclosure log is append-only'); end;
create trigger disclosure_registrant_no_update before update on disclosure_registrant
begin select raise(abort, 'the disclosure log is append-only'); end;
create trigger disclosure_registrant_no_delete before delete on disclosure_registrant
begin select raise(abort, 'the disclosure log is append-only'); end;

-- The consent policy files (name → SHA-256) as last audited; replaced, with an audit entry,
-- when nsr starts with a different set.
create table consent_policy_state (
    name   text primary key,
    digest text not null
);
