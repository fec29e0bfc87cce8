-- spicetap fleet schema, version 1. Applied by `spicetap db migrate`.

-- The VMs tokens lead to. The password is sealed (AES-256-GCM under the
-- password key, the name as associated data); the key is never stored here.
CREATE TABLE targets (
    name                  text PRIMARY KEY,
    upstream              text,
    upstream_tls          text,
    ca_pem                text,
    host_subject          text,
    upstream_tls_channels text NOT NULL DEFAULT 'auto',
    password_sealed       bytea NOT NULL,
    created               timestamptz NOT NULL DEFAULT now(),
    CHECK (upstream IS NOT NULL OR upstream_tls IS NOT NULL)
);

-- Console tokens, stored as HMAC-SHA-256 under the token key only.
CREATE TABLE tokens (
    id          bigserial PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    target      text NOT NULL,
    issued      timestamptz NOT NULL DEFAULT now(),
    issued_by   text NOT NULL,
    expires     timestamptz NOT NULL,
    first_used  timestamptz,
    last_used   timestamptz,
    revoked     timestamptz
);
CREATE INDEX tokens_target ON tokens (target);

-- Audit events of every node and of the admin commands.
CREATE TABLE audit (
    id          bigserial PRIMARY KEY,
    time        timestamptz NOT NULL,
    node        text NOT NULL,
    event       text NOT NULL,
    client      text,
    channel     text,
    target      text,
    token_id    bigint,
    session_id  bigint,
    reason      text,
    c2s_bytes   bigint,
    s2c_bytes   bigint
);
CREATE INDEX audit_time ON audit (time);

-- The session index: one row per channel connection a node served after
-- its link stage, keyed by a random id the node chose.
CREATE TABLE session_channels (
    channel_key  bigint PRIMARY KEY,
    node         text NOT NULL,
    session_id   bigint,
    target       text,
    token_id     bigint,
    client       text NOT NULL,
    channel      text NOT NULL,
    channel_id   integer NOT NULL,
    folder       text,
    opened       timestamptz NOT NULL,
    closed       timestamptz,
    c2s_bytes    bigint,
    s2c_bytes    bigint,
    end_reason   text
);
CREATE INDEX session_channels_session ON session_channels (target, session_id);
CREATE INDEX session_channels_token ON session_channels (token_id);

-- Sessions as the index lists them: one row per node holding part of a
-- session (a load balancer may spread one session's channels over nodes).
CREATE VIEW sessions AS
SELECT target, session_id, node,
       min(client) AS client,
       min(folder) AS folder,
       min(opened) AS started,
       CASE WHEN bool_and(closed IS NOT NULL) THEN max(closed) END AS ended,
       count(*) AS channels,
       sum(c2s_bytes) AS c2s_bytes,
       sum(s2c_bytes) AS s2c_bytes
FROM session_channels
GROUP BY target, session_id, node;
