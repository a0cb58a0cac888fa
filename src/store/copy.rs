//! `diglot store copy`: every row of every table from one store into another (SQLite to
//! PostgreSQL or back), ids included, in batches. The rollups are copied with the records
//! they sum, so the target's totals agree with its log as the source's did.

use super::sql::tables;
use super::{Store, StoreError, StoreResult};

/// Rows read and written at a time.
const BATCH: u32 = 2_000;

/// How many rows of each table were copied.
pub type Counts = Vec<(&'static str, u64)>;

/// Whether `store` holds no row at all.
pub async fn is_empty(store: &dyn Store) -> StoreResult<bool> {
    for table in tables::all() {
        if !store.read_rows(table, None, 1).await?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies everything in `from` into `to`, which must be empty unless `force` (then what
/// it held is deleted first).
pub async fn copy(from: &dyn Store, to: &dyn Store, force: bool) -> StoreResult<Counts> {
    if !is_empty(to).await? {
        if !force {
            return Err(StoreError(
                "the target store is not empty: copy into a new one, or add --force to delete what it holds first"
                    .into(),
            ));
        }
        to.clear().await?;
    }
    let mut counts = Vec::new();
    for table in tables::all() {
        let mut copied = 0;
        let mut after = None;
        loop {
            let rows = from.read_rows(table, after, BATCH).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last[..table.key].to_vec());
            copied += rows.len() as u64;
            to.write_rows(table, rows).await?;
        }
        counts.push((table.name, copied));
    }
    Ok(counts)
}
