-- Gateway: the partner registry and the message ids seen from each partner.

-- A partner system (ministry, programme MIS). `document` is the partner's JSON definition
-- (scopes, signature profile and algorithms, keys or JWKS URL, callback prefixes, encryption
-- key, hashed client secret); the columns beside it are what lookups need.
create table partner (
    sender_id  text primary key,
    client_id  text not null unique,
    enabled    integer not null,
    document   text not null,
    created_at text not null,
    updated_at text not null
);

-- Replay protection (DCI rjct.message_id.duplicate): a message id may be used once per sender
-- within the retention window. Kept in the database so it holds across restarts and replicas.
create table seen_message (
    sender_id  text not null,
    message_id text not null,
    seen_at    text not null,
    primary key (sender_id, message_id)
);
create index seen_message_seen_at on seen_message (seen_at);
