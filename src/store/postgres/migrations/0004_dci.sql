-- DCI gateway: async jobs and their callback deliveries. Same shape as the SQLite migration,
-- in PostgreSQL types. The JSON columns are text: the stored callback message is signed again
-- on every attempt, and text keeps it byte for byte.

create table dci_job (
    job_id              uuid primary key,
    sender_id           text not null,
    kind                text not null,
    transaction_id      text not null,
    correlation_id      text not null unique,
    request_message_id  text not null,
    request             text not null,
    callback_url        text not null,
    callback_message_id text not null,
    status              text not null,
    result              text,
    delivery            text not null,
    attempts            integer not null,
    next_attempt_at     timestamptz not null,
    deadline            timestamptz not null,
    last_error          text,
    leased_by           text,
    lease_until         timestamptz,
    created_at          timestamptz not null,
    updated_at          timestamptz not null
);
create index dci_job_due on dci_job (next_attempt_at) where delivery = 'pending';
create index dci_job_transaction on dci_job (sender_id, transaction_id);
create index dci_job_created on dci_job (created_at);

create table dci_job_reference (
    job_id       uuid not null references dci_job (job_id),
    sender_id    text not null,
    reference_id text not null,
    primary key (job_id, reference_id)
);
create index dci_job_reference_lookup on dci_job_reference (sender_id, reference_id);
