-- The same tables as SQLite's 0001, in PostgreSQL's types: BIGINT for every integer
-- (BIGSERIAL for ids), BOOLEAN for flags, and the "C" collation on text that is sorted
-- or ranked, so rows come back in the order SQLite gives (by bytes).

-- Tokens are kept only as SHA-256 digests (hex) plus a short prefix for display.
CREATE TABLE tokens (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT    NOT NULL,
    digest         TEXT    NOT NULL UNIQUE,
    prefix         TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('admin', 'user')),
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     BIGINT  NOT NULL,            -- unix seconds
    expires_at     BIGINT,                      -- unix seconds; NULL: never
    models         TEXT    NOT NULL DEFAULT '[]', -- JSON list of names and globs; empty: all
    ips            TEXT    NOT NULL DEFAULT '[]', -- JSON list of addresses and CIDRs; empty: any
    monthly_quota  BIGINT,                      -- tokens per calendar month (UTC)
    rpm            BIGINT,
    tpm            BIGINT,
    max_concurrent BIGINT
);

-- One row per request that reached the gateway's routing.
CREATE TABLE usage (
    id                BIGSERIAL PRIMARY KEY,
    at_ms             BIGINT  NOT NULL,         -- unix milliseconds, when the request arrived
    token_digest      TEXT COLLATE "C",         -- NULL without a token
    token_prefix      TEXT COLLATE "C",
    client_ip         TEXT,
    frontend          TEXT    NOT NULL,
    model             TEXT    NOT NULL,         -- as the client asked
    channel           TEXT,
    upstream_model    TEXT,
    status            BIGINT  NOT NULL,
    latency_ms        BIGINT  NOT NULL,
    ttft_ms           BIGINT,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    estimated         BOOLEAN NOT NULL,         -- counts estimated, the upstream gave none
    cache_hit         BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX usage_by_token_and_time ON usage (token_digest, at_ms);
