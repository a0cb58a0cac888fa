//! The schema: versioned migrations in `../migrations/sqlite/`, applied in order and
//! recorded in `user_version`; the admin migration's hook fills the rollups from the
//! records already in the log.

use std::sync::LazyLock;

use rusqlite::Transaction;
use rusqlite_migration::{HookError, HookResult, M, Migrations};

use super::values;
use crate::store::rollup::{MINUTES_KEPT_MS, Rollups};
use crate::store::sql::{Step, Value, rollup, rows};

/// The admin migration, its histogram columns written in from `rollup::BOUNDS_MS`.
static ADMIN_MIGRATION: LazyLock<String> = LazyLock::new(|| {
    include_str!("../migrations/sqlite/0003_admin.sql")
        .replace("$HISTOGRAMS$", &rollup::histogram_columns_ddl("INTEGER"))
});

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../migrations/sqlite/0001_tokens_and_usage.sql")),
        M::up(include_str!("../migrations/sqlite/0002_responses.sql")),
        M::up_with_hook(ADMIN_MIGRATION.as_str(), backfill),
        M::up(include_str!("../migrations/sqlite/0004_usage_indexes.sql")),
    ])
}

/// Records read per step of the backfill: bounds its memory on a large log.
const BACKFILL_CHUNK: i64 = 50_000;

/// The admin migration's hook: adds the records already in the log to the new rollups,
/// the same way writes do, so totals cover them too.
fn backfill(transaction: &Transaction) -> HookResult {
    let minutes_from_ms = chrono::Utc::now().timestamp_millis() - MINUTES_KEPT_MS;
    let sql = format!(
        "SELECT {} FROM usage WHERE id > $1 ORDER BY id LIMIT $2",
        rows::USAGE_COLUMNS
    );
    let failed = |e: crate::store::StoreError| HookError::Hook(e.0);
    let mut after = i64::MIN;
    loop {
        let page = Step::Query(sql.clone().into(), vec![Value::Int(after), Value::Int(BACKFILL_CHUNK)]);
        let outputs = values::run(transaction, &[page]).map_err(failed)?;
        let Some(rows) = outputs.into_iter().next().map(|o| o.rows).filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        let mut rollups = Rollups::default();
        for row in &rows {
            let record = rows::usage(&rows::Cells(row)).map_err(failed)?;
            after = record.id;
            rollups.add(&record, minutes_from_ms);
        }
        values::run(transaction, &rollup::add(&rollups)).map_err(failed)?;
    }
}
