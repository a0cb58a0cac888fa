-- What the admin API reads and keeps: each request's ids and attempts, indexes for the
-- request log's filters, usage rollups (kept as records are written, so the dashboard
-- never scans `usage`), documents (channels, models, settings) and the audit log.
--
-- The placeholder in the rollup tables below stands for the latency and time-to-first-
-- token histograms: one BIGINT column per bucket (l0, l1, ... then t0, t1, ...), written
-- in by the migration from store::rollup::BOUNDS_MS. (SQLite's migration then fills the
-- rollups from the rows already in `usage`; PostgreSQL's starts with none.)

ALTER TABLE usage ADD COLUMN request_id TEXT;
ALTER TABLE usage ADD COLUMN trace_id TEXT;
-- Upstream attempts made; 0: never routed. Older rows that were routed made at least one.
ALTER TABLE usage ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
UPDATE usage SET attempts = 1 WHERE channel IS NOT NULL;

-- The request log is read newest first (by id) with optional filters. An index that ends
-- in the id serves one token's, model's or channel's rows already in that order: a page
-- reads its rows and stops, where (model, at_ms) would sort all of the model's rows first.
CREATE INDEX usage_by_time ON usage (at_ms);
CREATE INDEX usage_by_token_newest ON usage (token_digest, id);
CREATE INDEX usage_by_model ON usage (model, id);
CREATE INDEX usage_by_channel ON usage (channel, id);

-- Totals per minute (kept 48 hours, for short windows) and per hour (kept), `at_ms` the
-- step's start (unix ms). Tokens of answers from the cache are not in the token sums.
CREATE TABLE usage_minute (
    at_ms             BIGINT  PRIMARY KEY,
    requests          BIGINT  NOT NULL,
    errors            BIGINT  NOT NULL,     -- status >= 400
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    cache_hits        BIGINT  NOT NULL,
    $HISTOGRAMS$
);

CREATE TABLE usage_hour (
    at_ms             BIGINT  PRIMARY KEY,
    requests          BIGINT  NOT NULL,
    errors            BIGINT  NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    cache_hits        BIGINT  NOT NULL,
    $HISTOGRAMS$
);

-- Per hour and key, for the "top" lists. Absent values are '' (NULLs never match in a
-- primary key). Clustered by hour, so a window is one range of the table.
CREATE TABLE usage_hour_key (
    at_ms             BIGINT  NOT NULL,
    token_digest      TEXT COLLATE "C" NOT NULL,     -- '' without a token
    token_prefix      TEXT COLLATE "C" NOT NULL,
    model             TEXT COLLATE "C" NOT NULL,
    channel           TEXT COLLATE "C" NOT NULL,     -- '' when never routed
    frontend          TEXT COLLATE "C" NOT NULL,
    requests          BIGINT  NOT NULL,
    errors            BIGINT  NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    cache_hits        BIGINT  NOT NULL,
    $HISTOGRAMS$,
    PRIMARY KEY (at_ms, token_digest, token_prefix, model, channel, frontend)
);

-- The same per day (UTC): a month's "top" list reads 30 of these per key, and only the
-- hours of its first, partial day from usage_hour_key.
CREATE TABLE usage_day_key (
    at_ms             BIGINT  NOT NULL,
    token_digest      TEXT COLLATE "C" NOT NULL,
    token_prefix      TEXT COLLATE "C" NOT NULL,
    model             TEXT COLLATE "C" NOT NULL,
    channel           TEXT COLLATE "C" NOT NULL,
    frontend          TEXT COLLATE "C" NOT NULL,
    requests          BIGINT  NOT NULL,
    errors            BIGINT  NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    cache_hits        BIGINT  NOT NULL,
    $HISTOGRAMS$,
    PRIMARY KEY (at_ms, token_digest, token_prefix, model, channel, frontend)
);

-- The latest request of each token (unix ms), for the token list.
CREATE TABLE usage_last_used (
    token_digest TEXT COLLATE "C" PRIMARY KEY,
    at_ms        BIGINT  NOT NULL
);

-- What the admin API keeps besides tokens, as JSON by kind ('channel', 'model',
-- 'setting', 'admin') and key.
CREATE TABLE documents (
    kind       TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    value      TEXT    NOT NULL,            -- JSON
    updated_at BIGINT  NOT NULL,            -- unix seconds
    PRIMARY KEY (kind, key)
);

-- Every change made through the admin API.
CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    at_ms       BIGINT  NOT NULL,
    actor       TEXT    NOT NULL,           -- 'admin session', 'token dg-AbC1…', ...
    ip          TEXT    NOT NULL,
    action      TEXT    NOT NULL,           -- 'token.create', 'channel.update', ...
    target      TEXT    NOT NULL,
    before_json TEXT,                       -- JSON without secrets
    after_json  TEXT
);
