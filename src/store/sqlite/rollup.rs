//! The rollup tables: added to in the transaction that writes usage records (and once,
//! from existing records, by the migration that creates them), and read by the dashboard.
//! Their statements are generated from the counter and bucket names in
//! `store::rollup`, the only place those are listed.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use rusqlite::types::Value;
use rusqlite::{Connection, Transaction, params, params_from_iter};
use rusqlite_migration::HookResult;

use super::usage::{USAGE_COLUMNS, usage_from_row};
use super::{Database, failed};
use crate::store::rollup::{
    COUNTERS, DAY_MS, Key, MINUTE_MS, MINUTES_KEPT_MS, Rollups, Step, floor, histogram_columns,
};
use crate::store::{Dimension, StoreResult, UsagePoint, UsageTop};

/// The histogram columns of the rollup tables' definitions (see the admin migration).
pub(super) fn histogram_columns_ddl() -> String {
    histogram_columns()
        .map(|column| format!("{column} INTEGER NOT NULL DEFAULT 0"))
        .collect::<Vec<_>>()
        .join(",\n    ")
}

/// Every counted column of a rollup row, in `UsagePoint::values` order.
fn value_columns() -> Vec<String> {
    COUNTERS
        .iter()
        .map(|c| c.to_string())
        .chain(histogram_columns())
        .collect()
}

/// `INSERT ... ON CONFLICT DO UPDATE` adding a row's counts to `table`'s row with the same
/// `keys` (or creating it): plain SQL that PostgreSQL runs as well.
fn upsert(table: &str, keys: &[&str]) -> String {
    let values = value_columns();
    let columns: Vec<&str> = keys.iter().copied().chain(values.iter().map(String::as_str)).collect();
    let placeholders = vec!["?"; columns.len()].join(", ");
    let sums: Vec<String> = values
        .iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({placeholders}) ON CONFLICT ({}) DO UPDATE SET {}",
        columns.join(", "),
        keys.join(", "),
        sums.join(", ")
    )
}

const KEYS: [&str; 6] = ["at_ms", "token_digest", "token_prefix", "model", "channel", "frontend"];

static UPSERT_MINUTE: LazyLock<String> = LazyLock::new(|| upsert("usage_minute", &["at_ms"]));
static UPSERT_HOUR: LazyLock<String> = LazyLock::new(|| upsert("usage_hour", &["at_ms"]));
static UPSERT_HOUR_KEY: LazyLock<String> = LazyLock::new(|| upsert("usage_hour_key", &KEYS));
static UPSERT_DAY_KEY: LazyLock<String> = LazyLock::new(|| upsert("usage_day_key", &KEYS));
/// A step's row as `UsagePoint::from_values` reads it, after its start.
static POINT_COLUMNS: LazyLock<String> = LazyLock::new(|| value_columns().join(", "));

fn counted(point: &UsagePoint) -> impl Iterator<Item = Value> + '_ {
    point.values().map(Value::Integer)
}

/// Adds a batch's rollups to the stored rows: one statement per row it touches.
pub(super) fn add(connection: &Connection, rollups: &Rollups) -> rusqlite::Result<()> {
    for (sql, rows) in [(&*UPSERT_MINUTE, &rollups.minutes), (&*UPSERT_HOUR, &rollups.hours)] {
        let mut statement = connection.prepare_cached(sql)?;
        for (&at_ms, point) in rows {
            statement.execute(params_from_iter(
                std::iter::once(Value::Integer(at_ms)).chain(counted(point)),
            ))?;
        }
    }
    for (sql, rows) in [
        (&*UPSERT_HOUR_KEY, &rollups.hours_by_key),
        (&*UPSERT_DAY_KEY, &rollups.days_by_key),
    ] {
        let mut statement = connection.prepare_cached(sql)?;
        for (key, point) in rows {
            let Key {
                at_ms,
                token_digest,
                token_prefix,
                model,
                channel,
                frontend,
            } = key;
            let keys = [
                Value::Integer(*at_ms),
                Value::Text(token_digest.clone()),
                Value::Text(token_prefix.clone()),
                Value::Text(model.clone()),
                Value::Text(channel.clone()),
                Value::Text(frontend.clone()),
            ];
            statement.execute(params_from_iter(keys.into_iter().chain(counted(point))))?;
        }
    }
    let mut statement = connection.prepare_cached(
        "INSERT INTO usage_last_used (token_digest, at_ms) VALUES (?1, ?2) ON CONFLICT (token_digest) \
         DO UPDATE SET at_ms = CASE WHEN excluded.at_ms > usage_last_used.at_ms \
         THEN excluded.at_ms ELSE usage_last_used.at_ms END",
    )?;
    for (digest, at_ms) in &rollups.last_used {
        statement.execute(params![digest, at_ms])?;
    }
    Ok(())
}

/// Drops the per-minute rows of steps before `before_ms`.
pub(super) fn prune_minutes(connection: &Connection, before_ms: i64) -> rusqlite::Result<()> {
    connection
        .prepare_cached("DELETE FROM usage_minute WHERE at_ms < ?1")?
        .execute([before_ms])
        .map(drop)
}

/// Records read per step of the backfill: bounds its memory on a large log.
const BACKFILL_CHUNK: usize = 50_000;

/// The admin migration's hook: adds the records already in the log to the new rollups,
/// the same way writes do, so totals cover them too.
pub(super) fn backfill(transaction: &Transaction) -> HookResult {
    let minutes_from_ms = chrono::Utc::now().timestamp_millis() - MINUTES_KEPT_MS;
    let mut statement = transaction.prepare(&format!("SELECT {USAGE_COLUMNS} FROM usage ORDER BY id"))?;
    let mut rows = statement.query([])?;
    let mut rollups = Rollups::default();
    let mut read = 0;
    while let Some(row) = rows.next()? {
        rollups.add(&usage_from_row(row)?, minutes_from_ms);
        read += 1;
        if read % BACKFILL_CHUNK == 0 {
            add(transaction, &std::mem::take(&mut rollups))?;
        }
    }
    add(transaction, &rollups)?;
    Ok(())
}

impl Database {
    /// Whether a write at `now_ms` should prune old per-minute rows: at most once a
    /// minute, as they age by the minute.
    pub(super) fn minute_prune_due(&self, now_ms: i64) -> bool {
        let last = self.minutes_pruned_at.load(Ordering::Relaxed);
        now_ms - last >= MINUTE_MS
            && self
                .minutes_pruned_at
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub(super) fn usage_series(&self, since_ms: i64, until_ms: i64, step: Step) -> StoreResult<Vec<UsagePoint>> {
        let table = match step {
            Step::Minute => "usage_minute",
            Step::Hour => "usage_hour",
        };
        let sql = format!(
            "SELECT at_ms, {} FROM {table} WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms",
            *POINT_COLUMNS
        );
        self.with(|c| {
            let mut statement = c.prepare_cached(&sql).map_err(failed("read a usage series"))?;
            let width = 1 + COUNTERS.len() + 2 * crate::store::rollup::BUCKETS;
            let rows = statement
                .query_map([step.floor(since_ms), until_ms], |row| {
                    let values = (1..width).map(|i| row.get(i)).collect::<rusqlite::Result<Vec<i64>>>()?;
                    Ok(UsagePoint::from_values(row.get(0)?, &values))
                })
                .map_err(failed("read a usage series"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read a usage series"))
        })
    }

    /// Sums the window's whole days from the per-day rows and the hours of its first,
    /// partial day from the per-hour rows: about 30 rows per key for a month.
    pub(super) fn usage_top(&self, since_ms: i64, dimension: Dimension, limit: u32) -> StoreResult<Vec<UsageTop>> {
        // What a row is grouped by, and what names it.
        let (group, label) = match dimension {
            Dimension::Token => ("token_digest", "MAX(token_prefix)"),
            Dimension::Model => ("model", "model"),
            Dimension::Channel => ("channel", "channel"),
        };
        let columns = "token_digest, token_prefix, model, channel, requests, errors, prompt_tokens, completion_tokens";
        let sql = format!(
            "SELECT {group}, {label}, SUM(requests) AS total, SUM(errors), SUM(prompt_tokens), \
             SUM(completion_tokens) FROM (\
             SELECT {columns} FROM usage_day_key WHERE at_ms >= ?1 UNION ALL \
             SELECT {columns} FROM usage_hour_key WHERE at_ms >= ?2 AND at_ms < ?1\
             ) AS hours_and_days GROUP BY {group} ORDER BY total DESC, {group} LIMIT ?3"
        );
        let since_hour = Step::Hour.floor(since_ms);
        let first_whole_day = floor(since_hour + DAY_MS - 1, DAY_MS);
        self.with(|c| {
            let mut statement = c.prepare_cached(&sql).map_err(failed("rank usage"))?;
            let rows = statement
                .query_map(params![first_whole_day, since_hour, limit], |row| {
                    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
                    let grouped: String = row.get(0)?;
                    Ok(UsageTop {
                        key: row.get(1)?,
                        token_digest: (dimension == Dimension::Token && !grouped.is_empty()).then_some(grouped),
                        requests: n(2)?,
                        errors: n(3)?,
                        prompt_tokens: n(4)?,
                        completion_tokens: n(5)?,
                    })
                })
                .map_err(failed("rank usage"))?;
            rows.collect::<Result<_, _>>().map_err(failed("rank usage"))
        })
    }
}
