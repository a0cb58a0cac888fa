//! The shared store for several replicas: PostgreSQL, through a pool of connections. It
//! runs the SQL the store is written in (`store::sql`); many usage records go in one
//! statement, and every change of tokens or documents is told to the other replicas
//! (NOTIFY, heard by `listen`).

mod listen;
mod migrate;
mod tls;
mod values;

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::broadcast;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

use super::sql::{Engine, Output, SqlStore, Step};
use super::{StoreChange, StoreError, StoreResult};
use crate::config::DatabaseUrl;

/// How long a start waits for PostgreSQL to accept connections: replicas and the
/// database often start together.
const START_WAIT: Duration = Duration::from_secs(10);
/// The longest the pool may take to make a connection or check a pooled one.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a store call waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The store in a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

/// The PostgreSQL engine.
pub struct Postgres {
    pool: Pool,
    /// Where the database is, for errors (no password).
    shown: String,
    changes: broadcast::Sender<StoreChange>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// What went wrong in the database or in the store's own checks.
#[derive(Debug)]
pub(crate) enum Failure {
    Database(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Database(e)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Failure::Pool(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    /// A deadlock or a serialization failure: the same transaction again may well pass.
    fn is_transient(&self) -> bool {
        let Failure::Database(e) = self else { return false };
        e.code().is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        })
    }

    /// This failure said with what the store was doing and where.
    fn said(self, doing: &str, shown: &str) -> StoreError {
        let why = match self {
            Failure::Store(e) => return e,
            Failure::Database(e) | Failure::Pool(deadpool_postgres::PoolError::Backend(e)) => match e.as_db_error() {
                Some(db) => format!("{}: {}", db.severity(), db.message()),
                None => with_causes(&e),
            },
            Failure::Pool(e) => with_causes(&e),
        };
        StoreError(format!("store ({shown}): {doing}: {why}"))
    }
}

/// `error` and what caused it, down the chain (a TLS handshake's own reason, say).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut said = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !said.contains(&text) {
            said = format!("{said}: {text}");
        }
        cause = next.source();
    }
    said
}

/// Where `config` points, without a password: `postgres://USER@HOST:PORT/DATABASE`.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or_default();
    let database = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("postgres://{at}{host}:{port}/{database}")
}

impl SqlStore<Postgres> {
    /// Connects (retrying for a few seconds while the database starts), migrates, and
    /// starts listening for other replicas' changes.
    pub async fn open(url: &DatabaseUrl, pool_size: usize) -> StoreResult<Self> {
        // Connects and keepalives are bounded by `connection`, pool waits here.
        let (config, tls) = url.connection().map_err(StoreError)?;
        let tls = tls::connector(&tls)?;
        let shown = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CHECK_TIMEOUT))
            .recycle_timeout(Some(CHECK_TIMEOUT))
            .build()
            .map_err(|e| StoreError(format!("store ({shown}): cannot make a connection pool: {e}")))?;
        let mut client = connect(&pool, &shown).await?;
        migrate::migrate(&mut client)
            .await
            .map_err(|e| e.said("migrate the schema", &shown))?;
        drop(client);
        let (changes, _) = broadcast::channel(256);
        let listener = listen::start(config, tls, changes.clone())
            .await
            .map_err(|e| Failure::from(e).said("listen for other replicas' changes", &shown))?;
        Ok(SqlStore::new(Postgres {
            pool,
            shown,
            changes,
            listener,
        }))
    }
}

/// A connection from `pool`, waiting up to `START_WAIT` for the database to accept one.
async fn connect(pool: &Pool, shown: &str) -> StoreResult<deadpool_postgres::Client> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(e) if started.elapsed() + delay > START_WAIT => {
                let error = Failure::from(e).said("connect", shown);
                return Err(StoreError(format!(
                    "cannot reach PostgreSQL at {shown} (tried for {} s): {}; is it running, and \
                     are the host, port, database, user and password in store.url right?",
                    START_WAIT.as_secs(),
                    error.0
                )));
            }
            Err(e) => {
                tracing::info!(database = %shown, error = %Failure::from(e).said("connect", shown), "store: PostgreSQL is not ready yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

impl Postgres {
    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool
            .get()
            .await
            .map_err(|e| Failure::from(e).said("connect", &self.shown))
    }

    /// Runs `steps` once: in a transaction unless there is only one.
    async fn attempt(client: &mut deadpool_postgres::Client, steps: &[Step]) -> Result<Vec<Output>, Failure> {
        if let [single @ (Step::Query(..) | Step::Execute(..))] = steps {
            return values::run(&*client, std::slice::from_ref(single)).await;
        }
        let transaction = client.transaction().await?;
        let outputs = values::run(&transaction, steps).await?;
        transaction.commit().await?;
        Ok(outputs)
    }
}

#[async_trait::async_trait]
impl Engine for Postgres {
    /// Retried a few times on a deadlock: replicas adding to the same rollup rows at once
    /// may meet one, and the transaction then left nothing behind.
    async fn run(&self, steps: Vec<Step>) -> StoreResult<Vec<Output>> {
        let mut client = self.client().await?;
        let mut attempt = 0;
        loop {
            match Self::attempt(&mut client, &steps).await {
                Err(e) if e.is_transient() && attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
                result => return result.map_err(|e| e.said("run a statement", &self.shown)),
            }
        }
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        let client = self.client().await?;
        migrate::version(&client)
            .await
            .map_err(|e| e.said("read the schema version", &self.shown))
    }

    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        Some(self.changes.subscribe())
    }

    /// Each id sequence starts after the largest id copied in.
    async fn ids_copied(&self) -> StoreResult<()> {
        let steps = ["tokens", "usage", "audit"]
            .map(|table| {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                );
                Step::Query(sql.into(), Vec::new())
            })
            .into();
        self.run(steps).await.map(drop)
    }
}
