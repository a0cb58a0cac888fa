//! The usage log: one row per request, written in batches together with the rollups
//! they add to, and read back as pages of the request log or as sums for quotas.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::{Database, failed, rollup};
use crate::store::rollup::{MINUTES_KEPT_MS, Rollups};
use crate::store::{DailyUsage, StoreResult, UsageFilter, UsageRecord, frontend_name};

/// The columns `usage_from_row` reads, in its order.
pub(super) const USAGE_COLUMNS: &str = "id, at_ms, token_digest, token_prefix, client_ip, frontend, model, channel, \
                                        upstream_model, status, latency_ms, ttft_ms, prompt_tokens, \
                                        completion_tokens, estimated, cache_hit, request_id, trace_id, attempts";

pub(super) fn usage_from_row(row: &rusqlite::Row) -> rusqlite::Result<UsageRecord> {
    let frontend: String = row.get(5)?;
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
    Ok(UsageRecord {
        id: row.get(0)?,
        at_ms: row.get(1)?,
        token_digest: row.get(2)?,
        token_prefix: row.get(3)?,
        client_ip: row.get(4)?,
        frontend: frontend_name(&frontend),
        model: row.get(6)?,
        channel: row.get(7)?,
        upstream_model: row.get(8)?,
        status: row.get(9)?,
        latency_ms: n(10)?,
        ttft_ms: row.get::<_, Option<i64>>(11)?.map(|v| v.max(0) as u64),
        prompt_tokens: n(12)?,
        completion_tokens: n(13)?,
        estimated: row.get(14)?,
        cache_hit: row.get(15)?,
        request_id: row.get(16)?,
        trace_id: row.get(17)?,
        attempts: row.get::<_, i64>(18)?.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

/// The WHERE clause selecting `filter`'s rows, and its values in order. Values are
/// always bound, never written into the text.
fn filter_clause(filter: &UsageFilter) -> (String, Vec<Value>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values = Vec::new();
    let mut text = |condition: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            conditions.push(condition);
            values.push(Value::Text(value.clone()));
        }
    };
    text("token_digest = ?", &filter.token_digest);
    text("model = ?", &filter.model);
    text("channel = ?", &filter.channel);
    text("frontend = ?", &filter.frontend);
    if let Some(class) = filter.status_class {
        conditions.push("status >= ? AND status < ?");
        values.push(Value::Integer(i64::from(class) * 100));
        values.push(Value::Integer(i64::from(class) * 100 + 100));
    }
    for (condition, value) in [
        ("at_ms >= ?", filter.since_ms),
        ("at_ms < ?", filter.until_ms),
        ("id < ?", filter.before_id),
    ] {
        if let Some(value) = value {
            conditions.push(condition);
            values.push(Value::Integer(value));
        }
    }
    let clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (clause, values)
}

impl Database {
    /// Writes `records` and adds them to the rollups in one transaction, so the totals
    /// never disagree with the log. Per-minute totals older than 48 hours (before
    /// `now_ms`) are neither written nor kept.
    pub(super) fn write_usage(&self, records: &[UsageRecord], now_ms: i64) -> StoreResult<()> {
        let minutes_from_ms = now_ms - MINUTES_KEPT_MS;
        let mut rollups = Rollups::default();
        for record in records {
            rollups.add(record, minutes_from_ms);
        }
        let prune = self.minute_prune_due(now_ms);
        self.with(|c| {
            let transaction = c.transaction().map_err(failed("begin writing usage"))?;
            {
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT INTO usage (at_ms, token_digest, token_prefix, client_ip, frontend, model, channel, \
                         upstream_model, status, latency_ms, ttft_ms, prompt_tokens, completion_tokens, estimated, \
                         cache_hit, request_id, trace_id, attempts) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                    )
                    .map_err(failed("prepare a usage insert"))?;
                for r in records {
                    insert
                        .execute(params![
                            r.at_ms,
                            r.token_digest,
                            r.token_prefix,
                            r.client_ip,
                            r.frontend,
                            r.model,
                            r.channel,
                            r.upstream_model,
                            r.status,
                            r.latency_ms as i64,
                            r.ttft_ms.map(|n| n as i64),
                            r.prompt_tokens as i64,
                            r.completion_tokens as i64,
                            r.estimated,
                            r.cache_hit,
                            r.request_id,
                            r.trace_id,
                            r.attempts,
                        ])
                        .map_err(failed("write usage"))?;
                }
            }
            rollup::add(&transaction, &rollups).map_err(failed("add usage to the rollups"))?;
            if prune {
                rollup::prune_minutes(&transaction, minutes_from_ms).map_err(failed("prune per-minute usage"))?;
            }
            transaction.commit().map_err(failed("commit usage"))
        })
    }

    pub(super) fn tokens_used_since(&self, since_ms: i64) -> StoreResult<Vec<(String, u64)>> {
        self.with(|c| {
            let mut statement = c
                .prepare(
                    "SELECT token_digest, SUM(prompt_tokens + completion_tokens) FROM usage \
                     WHERE token_digest IS NOT NULL AND at_ms >= ?1 AND cache_hit = 0 GROUP BY token_digest",
                )
                .map_err(failed("sum usage"))?;
            let rows = statement
                .query_map([since_ms], |row| Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64)))
                .map_err(failed("sum usage"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read usage"))
        })
    }

    pub(super) fn daily_usage(&self, since_ms: i64) -> StoreResult<Vec<DailyUsage>> {
        self.with(|c| {
            let mut statement = c
                .prepare(
                    "SELECT date(at_ms / 1000, 'unixepoch') AS day, token_prefix, COUNT(*), \
                     SUM(prompt_tokens * (cache_hit = 0)), SUM(completion_tokens * (cache_hit = 0)), \
                     SUM(status >= 400), SUM(cache_hit) FROM usage WHERE at_ms >= ?1 \
                     GROUP BY day, token_digest ORDER BY day, token_prefix",
                )
                .map_err(failed("aggregate usage"))?;
            let rows = statement
                .query_map([since_ms], |row| {
                    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
                    Ok(DailyUsage {
                        day: row.get(0)?,
                        token_prefix: row.get(1)?,
                        requests: n(2)?,
                        prompt_tokens: n(3)?,
                        completion_tokens: n(4)?,
                        errors: n(5)?,
                        cache_hits: n(6)?,
                    })
                })
                .map_err(failed("aggregate usage"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read usage"))
        })
    }

    pub(super) fn recent_usage(&self, limit: u32) -> StoreResult<Vec<UsageRecord>> {
        self.usage_page(&UsageFilter {
            limit,
            ..Default::default()
        })
    }

    pub(super) fn usage_page(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
        let (clause, mut values) = filter_clause(filter);
        values.push(Value::Integer(i64::from(filter.limit)));
        self.with(|c| {
            let mut statement = c
                .prepare_cached(&format!(
                    "SELECT {USAGE_COLUMNS} FROM usage {clause} ORDER BY id DESC LIMIT ?"
                ))
                .map_err(failed("read usage"))?;
            let rows = statement
                .query_map(params_from_iter(values), usage_from_row)
                .map_err(failed("read usage"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read usage"))
        })
    }

    pub(super) fn last_used(&self) -> StoreResult<Vec<(String, i64)>> {
        self.with(|c| {
            let mut statement = c
                .prepare_cached("SELECT token_digest, at_ms FROM usage_last_used ORDER BY token_digest")
                .map_err(failed("read when tokens were last used"))?;
            let rows = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(failed("read when tokens were last used"))?;
            rows.collect::<Result<_, _>>()
                .map_err(failed("read when tokens were last used"))
        })
    }

    pub(super) fn usage_count(&self) -> StoreResult<u64> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM usage", [], |row| row.get::<_, i64>(0))
                .optional()
                .map_err(failed("count usage"))
                .map(|n| n.unwrap_or(0).max(0) as u64)
        })
    }
}
