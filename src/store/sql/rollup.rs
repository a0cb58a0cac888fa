//! The rollup tables: added to in the transaction that writes usage records, and read by
//! the dashboard. Their statements are generated from the counter and bucket names in
//! `store::rollup`, the only place those are listed; each add is an atomic
//! `INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x`, so replicas writing at once
//! never lose each other's counts.

use std::borrow::Cow;
use std::sync::LazyLock;

use super::tables::{Table, USAGE_DAY_KEY, USAGE_HOUR, USAGE_HOUR_KEY, USAGE_LAST_USED, USAGE_MINUTE};
use super::{Engine, SqlStore, Step, Value};
use crate::store::rollup::{BUCKETS, COUNTERS, DAY_MS, Key, Rollups, floor, histogram_columns};
use crate::store::{Dimension, Step as Width, StoreResult, UsagePoint, UsageTop};

/// The histogram columns of the rollup tables' definitions (the migrations' `$HISTOGRAMS$`),
/// each of `int_type`.
pub fn histogram_columns_ddl(int_type: &str) -> String {
    histogram_columns()
        .map(|column| format!("{column} {int_type} NOT NULL DEFAULT 0"))
        .collect::<Vec<_>>()
        .join(",\n    ")
}

/// A step's row as `UsagePoint::from_values` reads it, after its start.
static POINT_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    COUNTERS
        .iter()
        .map(|c| c.to_string())
        .chain(histogram_columns())
        .collect::<Vec<_>>()
        .join(", ")
});

/// The `ON CONFLICT` clause adding a row's counts to the stored row with its key.
fn adding(table: &Table) -> String {
    let name = table.name;
    table.on_conflict(|c| format!("{name}.{c} + excluded.{c}"))
}

static ADD_MINUTE: LazyLock<String> = LazyLock::new(|| adding(&USAGE_MINUTE));
static ADD_HOUR: LazyLock<String> = LazyLock::new(|| adding(&USAGE_HOUR));
static ADD_HOUR_KEY: LazyLock<String> = LazyLock::new(|| adding(&USAGE_HOUR_KEY));
static ADD_DAY_KEY: LazyLock<String> = LazyLock::new(|| adding(&USAGE_DAY_KEY));
/// The latest of the stored time and the new one.
static LATEST: LazyLock<String> = LazyLock::new(|| {
    USAGE_LAST_USED.on_conflict(|c| {
        format!("CASE WHEN excluded.{c} > usage_last_used.{c} THEN excluded.{c} ELSE usage_last_used.{c} END")
    })
});

fn insert(table: &'static Table, rows: Vec<Vec<Value>>, tail: &'static str) -> Step {
    Step::Insert {
        table: table.name,
        columns: &table.columns,
        rows,
        tail: Cow::Borrowed(tail),
    }
}

fn counted(point: &UsagePoint) -> impl Iterator<Item = Value> + '_ {
    point.values().map(Value::Int)
}

fn keyed(key: &Key, point: &UsagePoint) -> Vec<Value> {
    let keys = [
        Value::Int(key.at_ms),
        key.token_digest.clone().into(),
        key.token_prefix.clone().into(),
        key.model.clone().into(),
        key.channel.clone().into(),
        key.frontend.clone().into(),
    ];
    keys.into_iter().chain(counted(point)).collect()
}

/// The steps adding a batch's rollups to the stored rows, each table's rows in key order
/// (so replicas adding to the same rows at once take their locks in the same order).
pub fn add(rollups: &Rollups) -> Vec<Step> {
    let by_time = |rows: &std::collections::BTreeMap<i64, UsagePoint>| -> Vec<Vec<Value>> {
        rows.iter()
            .map(|(&at_ms, point)| std::iter::once(Value::Int(at_ms)).chain(counted(point)).collect())
            .collect()
    };
    let by_key = |rows: &foldhash::HashMap<Key, UsagePoint>| -> Vec<Vec<Value>> {
        let mut sorted: Vec<_> = rows.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.into_iter().map(|(key, point)| keyed(key, point)).collect()
    };
    let mut last_used: Vec<_> = rollups.last_used.iter().collect();
    last_used.sort();
    vec![
        insert(&USAGE_MINUTE, by_time(&rollups.minutes), &ADD_MINUTE),
        insert(&USAGE_HOUR, by_time(&rollups.hours), &ADD_HOUR),
        insert(&USAGE_HOUR_KEY, by_key(&rollups.hours_by_key), &ADD_HOUR_KEY),
        insert(&USAGE_DAY_KEY, by_key(&rollups.days_by_key), &ADD_DAY_KEY),
        insert(
            &USAGE_LAST_USED,
            last_used
                .into_iter()
                .map(|(digest, &at_ms)| vec![digest.clone().into(), at_ms.into()])
                .collect(),
            &LATEST,
        ),
    ]
}

/// Drops the per-minute rows of steps before `before_ms`.
pub fn prune_minutes(before_ms: i64) -> Step {
    Step::Execute(
        "DELETE FROM usage_minute WHERE at_ms < $1".into(),
        vec![before_ms.into()],
    )
}

/// The per-key rollup rows (`columns` of them) covering a window: the per-day rows of its
/// whole days ($1: the first whole day) and the per-hour rows of its first, partial day
/// ($2: its first hour). `window` gives both.
fn hours_and_days(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM usage_day_key WHERE at_ms >= $1 UNION ALL \
         SELECT {columns} FROM usage_hour_key WHERE at_ms >= $2 AND at_ms < $1"
    )
}

/// The parameters of `hours_and_days` for the window from `since_ms` on.
fn window(since_ms: i64) -> Vec<Value> {
    let since_hour = Width::Hour.floor(since_ms);
    let first_whole_day = floor(since_hour + DAY_MS - 1, DAY_MS);
    vec![first_whole_day.into(), since_hour.into()]
}

impl<E: Engine> SqlStore<E> {
    pub(super) async fn usage_series(&self, since_ms: i64, until_ms: i64, step: Width) -> StoreResult<Vec<UsagePoint>> {
        let table = match step {
            Width::Minute => "usage_minute",
            Width::Hour => "usage_hour",
        };
        let sql = format!(
            "SELECT at_ms, {} FROM {table} WHERE at_ms >= $1 AND at_ms < $2 ORDER BY at_ms",
            *POINT_COLUMNS
        );
        let width = 1 + COUNTERS.len() + 2 * BUCKETS;
        self.read(sql, vec![step.floor(since_ms).into(), until_ms.into()], |row| {
            let values = (1..width).map(|i| row.int(i)).collect::<StoreResult<Vec<i64>>>()?;
            Ok(UsagePoint::from_values(row.int(0)?, &values))
        })
        .await
    }

    /// Tokens each API token used from `since_ms` (an hour's start: a month's, for quotas)
    /// on, answers from the cache not counted: about 30 rollup rows per token for a month,
    /// where the usage log holds one row per request.
    pub(super) async fn tokens_used_since(&self, since_ms: i64) -> StoreResult<Vec<(String, u64)>> {
        let sql = format!(
            "SELECT token_digest, CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) FROM ({}) AS hours_and_days \
             WHERE token_digest <> '' GROUP BY token_digest",
            hours_and_days("token_digest, prompt_tokens, completion_tokens")
        );
        self.read(sql, window(since_ms), |row| Ok((row.text(0)?, row.count(1)?)))
            .await
    }

    /// Sums the window's whole days from the per-day rows and the hours of its first,
    /// partial day from the per-hour rows: about 30 rows per key for a month.
    pub(super) async fn usage_top(
        &self,
        since_ms: i64,
        dimension: Dimension,
        limit: u32,
    ) -> StoreResult<Vec<UsageTop>> {
        // What a row is grouped by, and what names it.
        let (group, label) = match dimension {
            Dimension::Token => ("token_digest", "MAX(token_prefix)"),
            Dimension::Model => ("model", "model"),
            Dimension::Channel => ("channel", "channel"),
        };
        let columns = "token_digest, token_prefix, model, channel, requests, errors, prompt_tokens, completion_tokens";
        let sum = |c: &str| format!("CAST(SUM({c}) AS BIGINT)");
        let sql = format!(
            "SELECT {group}, {label}, {} AS total, {}, {}, {} FROM ({}) AS hours_and_days \
             GROUP BY {group} ORDER BY total DESC, {group} LIMIT $3",
            sum("requests"),
            sum("errors"),
            sum("prompt_tokens"),
            sum("completion_tokens"),
            hours_and_days(columns)
        );
        let mut params = window(since_ms);
        params.push(i64::from(limit).into());
        self.read(sql, params, |row| {
            let grouped = row.text(0)?;
            Ok(UsageTop {
                key: row.text(1)?,
                token_digest: (dimension == Dimension::Token && !grouped.is_empty()).then_some(grouped),
                requests: row.count(2)?,
                errors: row.count(3)?,
                prompt_tokens: row.count(4)?,
                completion_tokens: row.count(5)?,
            })
        })
        .await
    }
}
