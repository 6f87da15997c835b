-- Gateway: the partner registry and the message ids seen from each partner.
-- Same shape as the SQLite migration, in PostgreSQL types.

create table partner (
    sender_id  text primary key,
    client_id  text not null unique,
    enabled    boolean not null,
    document   jsonb not null,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

create table seen_message (
    sender_id  text not null,
    message_id text not null,
    seen_at    timestamptz not null,
    primary key (sender_id, message_id)
);
create index seen_message_seen_at on seen_message (seen_at);
