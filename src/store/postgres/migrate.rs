//! The schema: versioned migrations in `../migrations/postgres/`, the same tables as
//! SQLite's, numbered alike. Applied in one transaction under an advisory lock, so
//! replicas starting together migrate exactly once, and recorded in `diglot_migrations`.

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;

use super::Failure;
use crate::store::sql::rollup::histogram_columns_ddl;
use crate::store::{StoreError, StoreResult};

/// The advisory lock every replica takes to migrate ("diglot" in ASCII).
const LOCK: i64 = 0x6469_676c_6f74;

static MIGRATIONS: LazyLock<[String; 4]> = LazyLock::new(|| {
    [
        include_str!("../migrations/postgres/0001_tokens_and_usage.sql").to_owned(),
        include_str!("../migrations/postgres/0002_responses.sql").to_owned(),
        include_str!("../migrations/postgres/0003_admin.sql").replace("$HISTOGRAMS$", &histogram_columns_ddl("BIGINT")),
        include_str!("../migrations/postgres/0004_usage_indexes.sql").to_owned(),
    ]
});

/// The version this diglot migrates to.
pub(super) fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// The version `client`'s database is at (0: never migrated).
pub(super) async fn version(client: &impl GenericClient) -> Result<u32, Failure> {
    let exists = client
        .query_one("SELECT to_regclass('diglot_migrations') IS NOT NULL", &[])
        .await?
        .try_get::<_, bool>(0)?;
    if !exists {
        return Ok(0);
    }
    let version: i32 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM diglot_migrations", &[])
        .await?
        .try_get(0)?;
    Ok(version.max(0) as u32)
}

/// Fails for a database a newer diglot migrated: this one would misread it.
pub(super) fn check_not_newer(version: u32) -> StoreResult<()> {
    if version > latest() {
        return Err(StoreError(format!(
            "the database's schema is at version {version}, newer than this diglot knows (version {}): \
             run the newer diglot that migrated it (or a later one)",
            latest()
        )));
    }
    Ok(())
}

/// Applies the migrations the database lacks; the version it is at after.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<u32, Failure> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS diglot_migrations (\
             version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
    let current = version(&transaction).await?;
    check_not_newer(current)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let number = i as i32 + 1;
        transaction.batch_execute(sql).await?;
        transaction
            .execute("INSERT INTO diglot_migrations (version) VALUES ($1)", &[&number])
            .await?;
        tracing::info!(version = number, "store: PostgreSQL schema migrated");
    }
    transaction.commit().await?;
    Ok(latest().max(current))
}
