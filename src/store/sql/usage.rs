//! The usage log: one row per request, written in batches together with the rollups
//! they add to, and read back as pages of the request log or as sums for quotas.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use super::tables::USAGE;
use super::{Engine, SqlStore, Step, Value, count, rollup, rows};
use crate::store::rollup::{DAY_MS, MINUTE_MS, MINUTES_KEPT_MS, Rollups};
use crate::store::{DailyUsage, StoreResult, UsageFilter, UsageRecord};

/// The WHERE clause selecting `filter`'s rows, and its values in order. Values are
/// always bound, never written into the text.
fn filter_clause(filter: &UsageFilter) -> (String, Vec<Value>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut add = |condition: &str, value: Value| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("${}", values.len())));
    };
    for (condition, value) in [
        ("token_digest = ?", &filter.token_digest),
        ("model = ?", &filter.model),
        ("channel = ?", &filter.channel),
        ("frontend = ?", &filter.frontend),
    ] {
        if let Some(value) = value {
            add(condition, value.clone().into());
        }
    }
    if let Some(class) = filter.status_class {
        add("status >= ?", Value::Int(i64::from(class) * 100));
        add("status < ?", Value::Int(i64::from(class) * 100 + 100));
    }
    for (condition, value) in [
        ("at_ms >= ?", filter.since_ms),
        ("at_ms < ?", filter.until_ms),
        ("id < ?", filter.before_id),
    ] {
        if let Some(value) = value {
            add(condition, Value::Int(value));
        }
    }
    let clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (clause, values)
}

/// A record as the usage table's columns after its id take it.
fn usage_row(r: &UsageRecord) -> Vec<Value> {
    vec![
        r.at_ms.into(),
        r.token_digest.clone().into(),
        r.token_prefix.clone().into(),
        r.client_ip.clone().into(),
        r.frontend.into(),
        r.model.clone().into(),
        r.channel.clone().into(),
        r.upstream_model.clone().into(),
        i64::from(r.status).into(),
        count(r.latency_ms),
        r.ttft_ms.map(count).unwrap_or(Value::Null),
        count(r.prompt_tokens),
        count(r.completion_tokens),
        r.estimated.into(),
        r.cache_hit.into(),
        r.request_id.clone().into(),
        r.trace_id.clone().into(),
        i64::from(r.attempts).into(),
    ]
}

/// The day (UTC, `YYYY-MM-DD`) with the number `day` since the epoch.
fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp(day.saturating_mul(DAY_MS / 1000), 0)
        .map(|at| at.date_naive().to_string())
        .unwrap_or_default()
}

impl<E: Engine> SqlStore<E> {
    /// Whether a write at `now_ms` should prune old per-minute rows: at most once a
    /// minute, as they age by the minute.
    fn minute_prune_due(&self, now_ms: i64) -> bool {
        let last = self.minutes_pruned_at.load(Ordering::Relaxed);
        now_ms - last >= MINUTE_MS
            && self
                .minutes_pruned_at
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Writes `records` and adds them to the rollups in one transaction, so the totals
    /// never disagree with the log. Per-minute totals older than 48 hours (before
    /// `now_ms`) are neither written nor kept.
    pub(super) async fn write_usage_at(&self, records: &[UsageRecord], now_ms: i64) -> StoreResult<()> {
        let minutes_from_ms = now_ms - MINUTES_KEPT_MS;
        let mut rollups = Rollups::default();
        for record in records {
            rollups.add(record, minutes_from_ms);
        }
        let mut steps = vec![Step::Insert {
            table: USAGE.name,
            columns: &USAGE.columns[1..],
            rows: records.iter().map(usage_row).collect(),
            tail: Cow::Borrowed(""),
        }];
        steps.extend(rollup::add(&rollups));
        if self.minute_prune_due(now_ms) {
            steps.push(rollup::prune_minutes(minutes_from_ms));
        }
        self.run(steps).await.map(drop)
    }

    pub(super) async fn daily_usage(&self, since_ms: i64) -> StoreResult<Vec<DailyUsage>> {
        let sql = format!(
            "SELECT at_ms / {DAY_MS} AS day, MAX(token_prefix) AS prefix, COUNT(*), \
             CAST(SUM(CASE WHEN cache_hit THEN 0 ELSE prompt_tokens END) AS BIGINT), \
             CAST(SUM(CASE WHEN cache_hit THEN 0 ELSE completion_tokens END) AS BIGINT), \
             CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END) AS BIGINT) FROM usage WHERE at_ms >= $1 \
             GROUP BY day, token_digest ORDER BY day, prefix NULLS FIRST"
        );
        self.read(sql, vec![since_ms.into()], |row| {
            Ok(DailyUsage {
                day: day_name(row.int(0)?),
                token_prefix: row.opt_text(1)?,
                requests: row.count(2)?,
                prompt_tokens: row.count(3)?,
                completion_tokens: row.count(4)?,
                errors: row.count(5)?,
                cache_hits: row.count(6)?,
            })
        })
        .await
    }

    pub(super) async fn usage_page(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
        let (clause, mut values) = filter_clause(filter);
        values.push(Value::Int(i64::from(filter.limit)));
        let sql = format!(
            "SELECT {} FROM usage {clause} ORDER BY id DESC LIMIT ${}",
            rows::USAGE_COLUMNS,
            values.len()
        );
        self.read(sql, values, rows::usage).await
    }

    pub(super) async fn last_used(&self) -> StoreResult<Vec<(String, i64)>> {
        let sql = "SELECT token_digest, at_ms FROM usage_last_used ORDER BY token_digest";
        self.read(sql, Vec::new(), |row| Ok((row.text(0)?, row.int(1)?))).await
    }

    pub(super) async fn usage_count(&self) -> StoreResult<u64> {
        let counts = self
            .read("SELECT COUNT(*) FROM usage", Vec::new(), |row| row.count(0))
            .await?;
        Ok(counts.first().copied().unwrap_or(0))
    }
}
