-- Quotas are summed from the per-day and per-hour rollups (a few rows per token), not from
-- the log, so the log's (token, time) index has no reader left; each record written paid for
-- it (a sixth B-tree, keyed by a 64-character digest). A token's rows are still found
-- newest first by usage_by_token_newest, and time ranges by usage_by_time.
DROP INDEX IF EXISTS usage_by_token_and_time;
