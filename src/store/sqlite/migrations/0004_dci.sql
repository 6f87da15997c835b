-- DCI gateway: async jobs (search, transaction status) and the delivery of their signed
-- callbacks. A job is written before the partner's request is acknowledged, so nothing
-- acknowledged is lost by a crash; workers lease jobs, so a job abandoned by a dead process is
-- taken over once its lease runs out.

create table dci_job (
    job_id              text primary key,
    sender_id           text not null,
    kind                text not null,           -- search | txn-status
    transaction_id      text not null,
    correlation_id      text not null unique,    -- ours, returned in the ACK
    request_message_id  text not null,
    request             text not null,           -- {"header", "message"} as opened (decrypted)
    callback_url        text not null,           -- header.sender_uri, checked against the partner's prefixes
    callback_message_id text not null,           -- the same on every delivery attempt
    status              text not null,           -- DCI RequestStatus: rcvd, pdng, succ, rjct
    result              text,                    -- the callback message once computed
    delivery            text not null,           -- pending | delivered | failed
    attempts            integer not null,
    next_attempt_at     text not null,
    deadline            text not null,
    last_error          text,
    leased_by           text,
    lease_until         text,
    created_at          text not null,
    updated_at          text not null
);
-- Workers look for due, pending deliveries.
create index dci_job_due on dci_job (next_attempt_at) where delivery = 'pending';
-- Transaction status by transaction id, and the operators' list.
create index dci_job_transaction on dci_job (sender_id, transaction_id);
create index dci_job_created on dci_job (created_at);

-- The reference ids of a job's items, for transaction status by reference_id_list.
create table dci_job_reference (
    job_id       text not null references dci_job (job_id),
    sender_id    text not null,
    reference_id text not null,
    primary key (job_id, reference_id)
);
create index dci_job_reference_lookup on dci_job_reference (sender_id, reference_id);

-- Partners' message ids (replay protection) are kept in a file of their own on SQLite (see
-- src/store/sqlite/replay.rs): the seen_message table of 0002 is no longer written here.
