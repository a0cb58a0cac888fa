-- Tokens are kept only as SHA-256 digests (hex) plus a short prefix for display.
CREATE TABLE tokens (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,
    digest         TEXT    NOT NULL UNIQUE,
    prefix         TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('admin', 'user')),
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL,            -- unix seconds
    expires_at     INTEGER,                     -- unix seconds; NULL: never
    models         TEXT    NOT NULL DEFAULT '[]', -- JSON list of names and globs; empty: all
    ips            TEXT    NOT NULL DEFAULT '[]', -- JSON list of addresses and CIDRs; empty: any
    monthly_quota  INTEGER,                     -- tokens per calendar month (UTC)
    rpm            INTEGER,
    tpm            INTEGER,
    max_concurrent INTEGER
);

-- One row per request that reached the gateway's routing.
CREATE TABLE usage (
    id                INTEGER PRIMARY KEY,
    at_ms             INTEGER NOT NULL,         -- unix milliseconds, when the request arrived
    token_digest      TEXT,                     -- NULL without a token
    token_prefix      TEXT,
    client_ip         TEXT,
    frontend          TEXT    NOT NULL,         -- openai | ollama
    model             TEXT    NOT NULL,         -- as the client asked
    channel           TEXT,
    upstream_model    TEXT,
    status            INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,         -- 1: counts estimated, the upstream gave none
    cache_hit         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_by_token_and_time ON usage (token_digest, at_ms);
