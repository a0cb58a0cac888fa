//! The embedded store: one SQLite file, created and migrated on open. It runs the SQL the
//! store is written in (`store::sql`) on one connection, on Tokio's blocking threads.

mod migrate;
mod values;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior};

use super::sql::{Engine, Output, SqlStore, Step};
use super::{StoreError, StoreResult};
pub(crate) use migrate::migrations;

/// WAL, so the CLI and the server may use the file at the same time; then the schema.
fn prepare(connection: &mut Connection) -> StoreResult<()> {
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(failed("set WAL mode"))?;
    migrations()
        .to_latest(connection)
        .map_err(|e| StoreError(format!("store: migrate: {e}")))
}

/// The SQLite engine: one connection, one call at a time.
pub struct Sqlite(Arc<Mutex<Connection>>);

/// The store in an SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

fn failed(doing: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError(format!("store: {doing}: {e}"))
}

impl SqlStore<Sqlite> {
    /// Opens (creating and migrating) the file at `path`. Blocks: call it at start.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut connection = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open the database {}: {e}", path.display())))?;
        // First, so every step below waits for another process rather than failing.
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(failed("set the busy timeout"))?;
        // Every statement the store runs stays prepared.
        connection.set_prepared_statement_cache_capacity(64);
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
        Ok(SqlStore::new(Sqlite(Arc::new(Mutex::new(connection)))))
    }
}

impl Sqlite {
    /// Runs `call` on the connection, on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let connection = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| StoreError("store: a previous call panicked".into()))?;
            call(&mut connection)
        })
        .await
        .map_err(|e| StoreError(format!("store: the call failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Engine for Sqlite {
    async fn run(&self, steps: Vec<Step>) -> StoreResult<Vec<Output>> {
        self.blocking(move |connection| {
            // Steps that write take the write lock as they begin, waiting for it up to the
            // busy timeout. Begun as a read, a transaction whose snapshot another process
            // wrote past (the CLI, a second gateway on the same file) could not write at
            // all: SQLite answers "database is locked" at once, without waiting.
            let behavior = if values::writes(connection, &steps)? {
                TransactionBehavior::Immediate
            } else {
                TransactionBehavior::Deferred
            };
            let transaction = connection
                .transaction_with_behavior(behavior)
                .map_err(failed("begin"))?;
            let outputs = values::run(&transaction, &steps)?;
            transaction.commit().map_err(failed("commit"))?;
            Ok(outputs)
        })
        .await
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        self.blocking(|connection| {
            connection
                .pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))
                .map_err(failed("read the schema version"))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
