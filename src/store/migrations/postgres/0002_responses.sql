-- Responses kept for /v1/responses (`store: true`): the response object, the request's
-- own input items, and the items of the turns before it (a chain continues from them).
CREATE TABLE responses (
    id          TEXT COLLATE "C" PRIMARY KEY,   -- resp_...
    owner       TEXT    NOT NULL,               -- the token's digest; '' with authentication off
    created_at  BIGINT  NOT NULL,               -- unix seconds
    expires_at  BIGINT  NOT NULL,               -- unix seconds
    response    TEXT    NOT NULL,               -- JSON: the response object
    input       TEXT    NOT NULL,               -- JSON: this request's input items
    history     TEXT    NOT NULL                -- JSON: the items of the turns before it
);
CREATE INDEX responses_by_expiry ON responses (expires_at);

-- Every item of a kept response (its input and output), for `item_reference` inputs.
CREATE TABLE response_items (
    owner       TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,      -- msg_..., fc_..., rs_...
    response_id TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL,
    item        TEXT    NOT NULL,               -- JSON: the item
    PRIMARY KEY (owner, id)
);
CREATE INDEX response_items_by_response ON response_items (response_id);
CREATE INDEX response_items_by_expiry ON response_items (expires_at);
