//! The embedded store: one SQLite file, created and migrated on open (versioned
//! migrations in `../migrations/`, applied in order and recorded in `user_version`). One
//! file per concern: tokens, usage (the log and its reads), rollups (the dashboard's
//! totals), responses, and documents (with the audit log).

mod documents;
mod responses;
mod rollup;
mod tokens;
mod usage;
#[cfg(test)]
mod usage_tests;

use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, LazyLock, Mutex};

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::{
    AuditEntry, DailyUsage, Dimension, Document, Step, Store, StoreError, StoreResult, StoredResponse, TokenRecord,
    UsageFilter, UsagePoint, UsageRecord, UsageTop,
};

/// The admin migration, its histogram columns written in from `rollup::BOUNDS_MS`.
static ADMIN_MIGRATION: LazyLock<String> = LazyLock::new(|| {
    include_str!("../migrations/0003_admin.sql").replace("$HISTOGRAMS$", &rollup::histogram_columns_ddl())
});

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../migrations/0001_tokens_and_usage.sql")),
        M::up(include_str!("../migrations/0002_responses.sql")),
        M::up_with_hook(ADMIN_MIGRATION.as_str(), rollup::backfill),
    ])
}

/// WAL, so the CLI and the server may use the file at the same time; then the schema.
fn prepare(connection: &mut Connection) -> StoreResult<()> {
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(failed("set WAL mode"))?;
    migrations()
        .to_latest(connection)
        .map_err(|e| StoreError(format!("store: migrate: {e}")))
}

/// The store's calls run on Tokio's blocking threads, one at a time on the connection.
pub struct SqliteStore(Arc<Database>);

struct Database {
    connection: Mutex<Connection>,
    /// When old per-minute rollups were last pruned (unix ms): at most once a minute.
    minutes_pruned_at: AtomicI64,
}

fn failed(doing: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError(format!("store: {doing}: {e}"))
}

impl SqliteStore {
    /// Opens (creating and migrating) the file at `path`. Blocks: call it at start.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut connection = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open the database {}: {e}", path.display())))?;
        // First, so every step below waits for another process rather than failing.
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(failed("set the busy timeout"))?;
        // Several processes may open a new file at once (a gateway and the CLI, replicas).
        // Switching to WAL can still fail at once with "database is locked" (SQLite does not
        // wait there, to avoid a deadlock), and of two processes that read the old schema
        // version, the second fails on the first one's tables. Both find the work done when
        // they try again.
        let mut attempt = 0;
        while let Err(e) = prepare(&mut connection) {
            attempt += 1;
            if attempt == 10 {
                return Err(StoreError(format!(
                    "cannot prepare the database {}: {e}",
                    path.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
        }
        Ok(Self(Arc::new(Database {
            connection: Mutex::new(connection),
            minutes_pruned_at: AtomicI64::new(0),
        })))
    }

    /// Runs `call` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let database = self.0.clone();
        tokio::task::spawn_blocking(move || call(&database))
            .await
            .map_err(|e| StoreError(format!("store: the call failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<TokenRecord> {
        let token = token.clone();
        self.blocking(move |db| db.create_token(&token)).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.blocking(Database::tokens).await
    }

    async fn update_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let token = token.clone();
        self.blocking(move |db| db.update_token(&token)).await
    }

    async fn delete_token(&self, id: i64) -> StoreResult<()> {
        self.blocking(move |db| db.delete_token(id)).await
    }

    async fn write_usage(&self, records: &[UsageRecord]) -> StoreResult<()> {
        let records = records.to_vec();
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.blocking(move |db| db.write_usage(&records, now_ms)).await
    }

    async fn tokens_used_since(&self, since_ms: i64) -> StoreResult<Vec<(String, u64)>> {
        self.blocking(move |db| db.tokens_used_since(since_ms)).await
    }

    async fn daily_usage(&self, since_ms: i64) -> StoreResult<Vec<DailyUsage>> {
        self.blocking(move |db| db.daily_usage(since_ms)).await
    }

    async fn usage_count(&self) -> StoreResult<u64> {
        self.blocking(Database::usage_count).await
    }

    async fn recent_usage(&self, limit: u32) -> StoreResult<Vec<UsageRecord>> {
        self.blocking(move |db| db.recent_usage(limit)).await
    }

    async fn usage_page(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
        let filter = filter.clone();
        self.blocking(move |db| db.usage_page(&filter)).await
    }

    async fn last_used(&self) -> StoreResult<Vec<(String, i64)>> {
        self.blocking(Database::last_used).await
    }

    async fn usage_series(&self, since_ms: i64, until_ms: i64, step: Step) -> StoreResult<Vec<UsagePoint>> {
        self.blocking(move |db| db.usage_series(since_ms, until_ms, step)).await
    }

    async fn usage_top(&self, since_ms: i64, dimension: Dimension, limit: u32) -> StoreResult<Vec<UsageTop>> {
        self.blocking(move |db| db.usage_top(since_ms, dimension, limit)).await
    }

    async fn save_response(&self, response: &StoredResponse) -> StoreResult<()> {
        let response = response.clone();
        self.blocking(move |db| db.save_response(&response)).await
    }

    async fn response(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<StoredResponse>> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| db.response(&id, &owner, now)).await
    }

    async fn delete_response(&self, id: &str, owner: &str) -> StoreResult<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| db.delete_response(&id, &owner)).await
    }

    async fn response_item(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<String>> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| db.response_item(&id, &owner, now)).await
    }

    async fn documents(&self, kind: &str) -> StoreResult<Vec<Document>> {
        let kind = kind.to_owned();
        self.blocking(move |db| db.documents(&kind)).await
    }

    async fn put_document(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<bool> {
        let (kind, key, value) = (kind.to_owned(), key.to_owned(), value.map(str::to_owned));
        let now = chrono::Utc::now().timestamp();
        self.blocking(move |db| db.put_document(&kind, &key, value.as_deref(), now))
            .await
    }

    async fn add_audit(&self, entry: &AuditEntry) -> StoreResult<i64> {
        let entry = entry.clone();
        self.blocking(move |db| db.add_audit(&entry)).await
    }

    async fn audit(&self, before_id: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.blocking(move |db| db.audit(before_id, limit)).await
    }
}

impl Database {
    fn with<T>(&self, run: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut connection = self
            .connection
            .lock()
            .map_err(|_| StoreError("store: a previous call panicked".into()))?;
        run(&mut connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    /// Where a child process of `processes_opening_a_new_file_at_once_all_succeed` opens
    /// the store, and the file whose appearance starts them all at once.
    const CHILD_DB: &str = "DIGLOT_TEST_CHILD_DB";
    const CHILD_GO: &str = "DIGLOT_TEST_CHILD_GO";

    /// POSIX locks are per process, so the race is between processes: this test binary is
    /// run again, six times, each running only `child_opens_the_store`.
    #[test]
    fn processes_opening_a_new_file_at_once_all_succeed() {
        let dir = tempfile::Builder::new().prefix("diglot-race-").tempdir().unwrap();
        let path = dir.path().join("diglot.db");
        let go = dir.path().join("go");
        let children: Vec<_> = (0..6)
            .map(|_| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "store::sqlite::tests::child_opens_the_store",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_DB, &path)
                    .env(CHILD_GO, &go)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Every child is waiting for this file; they all open the new store together.
        std::fs::write(&go, "").unwrap();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "a process failed to open the new store:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(SqliteStore::open(&path).is_ok());
    }

    /// One child of `processes_opening_a_new_file_at_once_all_succeed` (run by it only).
    #[test]
    #[ignore = "run by processes_opening_a_new_file_at_once_all_succeed in its own process"]
    fn child_opens_the_store() {
        let path = std::path::PathBuf::from(std::env::var_os(CHILD_DB).expect("run by the parent test"));
        let go = std::path::PathBuf::from(std::env::var_os(CHILD_GO).expect("run by the parent test"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !go.exists() {
            assert!(std::time::Instant::now() < deadline, "the parent never said go");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Err(e) = SqliteStore::open(&path) {
            panic!("{e}");
        }
    }
}
