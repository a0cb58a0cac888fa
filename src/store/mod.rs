//! What diglot keeps across restarts: tokens, usage records (with the rollups the
//! dashboard reads), the Responses API's kept answers, and what the admin API keeps
//! (documents, the audit log). Behind a small trait so a shared store (PostgreSQL, for
//! several replicas) can sit beside the embedded SQLite.

pub mod copy;
mod postgres;
pub mod rollup;
pub mod secrets;
pub mod sql;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// Tokens are declared in profiles too, so their shape is the configuration's.
pub use crate::config::{Role, StoreConfig, StoreLocation, TokenRecord};
pub use postgres::PostgresStore;
pub use rollup::{Dimension, Histogram, Step, UsagePoint, UsageTop};
use sql::{Table, Value};
pub use sqlite::SqliteStore;

/// A failure of the store, said with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

pub type StoreResult<T> = Result<T, StoreError>;

impl TokenRecord {
    /// A record for `secret`, enabled, with no limits: only its digest and prefix are kept.
    pub fn for_secret(name: &str, secret: &str, role: Role) -> Self {
        Self {
            id: None,
            name: name.to_owned(),
            digest: secrets::digest(secret),
            prefix: secrets::display_prefix(secret),
            role,
            enabled: true,
            created_at: 0,
            expires_at: None,
            models: Vec::new(),
            ips: Vec::new(),
            monthly_quota: None,
            rpm: None,
            tpm: None,
            max_concurrent: None,
        }
    }
}

/// One request, as the usage table keeps it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct UsageRecord {
    /// The row's id when read back (newer rows have higher ones); ignored when writing.
    pub id: i64,
    pub at_ms: i64,
    pub token_digest: Option<String>,
    pub token_prefix: Option<String>,
    pub client_ip: Option<String>,
    pub frontend: &'static str,
    pub model: String,
    pub channel: Option<String>,
    pub upstream_model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The upstream reported no usage: the counts are diglot's estimate.
    pub estimated: bool,
    pub cache_hit: bool,
    /// The request's id (as its answer's `x-request-id` header said).
    pub request_id: Option<String>,
    /// Its trace, to find its spans.
    pub trace_id: Option<String>,
    /// Upstream attempts made (failover adds some); 0: never routed.
    pub attempts: u32,
}

/// The frontends' names as usage records keep them (`protocol::Frontend::as_str`):
/// records read back carry these static strings.
pub const FRONTENDS: [&str; 3] = ["openai", "ollama", "anthropic"];

/// The static name of a frontend read back as text; "unknown" for a name this version
/// does not know (written by a newer one).
pub fn frontend_name(text: &str) -> &'static str {
    FRONTENDS.into_iter().find(|name| *name == text).unwrap_or("unknown")
}

/// Which usage records a page of the request log shows. Every field set narrows it.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub token_digest: Option<String>,
    pub model: Option<String>,
    pub channel: Option<String>,
    pub frontend: Option<String>,
    /// 2, 3, 4 or 5: `status / 100` (a client that hung up, 499, is 4).
    pub status_class: Option<u16>,
    pub since_ms: Option<i64>,
    /// Exclusive.
    pub until_ms: Option<i64>,
    /// Only rows with an id below this: the next page when reading newest first.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// What the admin API keeps besides tokens (a channel, a model, a setting), as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub key: String,
    /// JSON
    pub value: String,
    /// Unix seconds.
    pub updated_at: i64,
}

/// One change made through the admin API, for the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AuditEntry {
    /// 0 when writing.
    pub id: i64,
    pub at_ms: i64,
    /// Who: "admin session", "token dg-AbC1…", ...
    pub actor: String,
    pub ip: String,
    /// e.g. "token.create", "channel.update", "settings.update"
    pub action: String,
    /// What it acted on: a token's id, a channel's name, a model pattern, "settings".
    pub target: String,
    /// JSON (already without secrets) or None.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Usage of one token on one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyUsage {
    pub day: String,
    pub token_prefix: Option<String>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub errors: u64,
    /// Answered from the response cache (their tokens are not in the sums above, which
    /// count what upstreams did).
    pub cache_hits: u64,
}

/// A response kept for the Responses API, its JSON as the frontend wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub id: String,
    /// Who may read it: the token's digest, or "" when authentication is off.
    pub owner: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The response object.
    pub response: String,
    /// The request's own input items (a JSON list).
    pub input: String,
    /// The items of the turns before it (a JSON list).
    pub history: String,
    /// Its input and output items by id (each as JSON), for `item_reference`s.
    pub items: Vec<(String, String)>,
}

/// What another replica changed in a shared store, so this one reloads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// Tokens were created, changed or deleted.
    Tokens,
    /// A document of `kind` ("channel", "model", "setting", "admin") was written or deleted.
    Documents { kind: String },
    /// Changes may have been missed (the connection that listens for them was lost and is
    /// back): reload everything.
    Resync,
}

/// The storage every part of diglot goes through, async so a pooled database server
/// (PostgreSQL) can stand beside the embedded SQLite. The request path never waits on a
/// write: usage records are written in batches by a task of their own.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<TokenRecord>;
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Replaces the stored fields of the token with `token.id`.
    async fn update_token(&self, token: &TokenRecord) -> StoreResult<()>;
    async fn delete_token(&self, id: i64) -> StoreResult<()>;
    async fn write_usage(&self, records: &[UsageRecord]) -> StoreResult<()> {
        self.write_usage_at(records, chrono::Utc::now().timestamp_millis())
            .await
    }
    /// `write_usage` as if it were `now_ms` (per-minute totals are kept 48 hours from it).
    async fn write_usage_at(&self, records: &[UsageRecord], now_ms: i64) -> StoreResult<()>;
    /// Tokens used per token digest since `since_ms` (a month's start, for quotas).
    async fn tokens_used_since(&self, since_ms: i64) -> StoreResult<Vec<(String, u64)>>;
    /// Per token per day, from `since_ms` on.
    async fn daily_usage(&self, since_ms: i64) -> StoreResult<Vec<DailyUsage>>;
    async fn usage_count(&self) -> StoreResult<u64>;
    /// The latest `limit` records, newest first.
    async fn recent_usage(&self, limit: u32) -> StoreResult<Vec<UsageRecord>>;
    /// Records matching `filter`, newest first (by id), at most `filter.limit`.
    async fn usage_page(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>>;
    /// Per token digest, when it was last used (unix ms).
    async fn last_used(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Totals per step from `since_ms` (inclusive) to `until_ms` (exclusive), only the
    /// steps that had requests, oldest first. Steps are whole: from the one `since_ms`
    /// falls in to the last that starts before `until_ms`. Per-minute totals are kept for
    /// the last 48 hours only.
    async fn usage_series(&self, since_ms: i64, until_ms: i64, step: Step) -> StoreResult<Vec<UsagePoint>>;
    /// The `limit` busiest keys of `dimension` (by requests) in the hours from `since_ms`
    /// on (rounded down to its hour).
    async fn usage_top(&self, since_ms: i64, dimension: Dimension, limit: u32) -> StoreResult<Vec<UsageTop>>;
    /// Keeps a response (replacing one with its id), and drops every expired one.
    async fn save_response(&self, response: &StoredResponse) -> StoreResult<()>;
    /// The response `id` of `owner`, unless it expired before `now` (unix seconds).
    async fn response(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<StoredResponse>>;
    /// Deletes the response `id` of `owner`; whether there was one.
    async fn delete_response(&self, id: &str, owner: &str) -> StoreResult<bool>;
    /// An item (as JSON) of one of `owner`'s unexpired responses.
    async fn response_item(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<String>>;
    /// Every document of `kind` ("channel", "model", "setting", "admin"), by key.
    async fn documents(&self, kind: &str) -> StoreResult<Vec<Document>>;
    /// The document of `kind` with `key`, if there is one.
    async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<Document>>;
    /// Writes (`Some`) or deletes (`None`) one document; whether one existed before.
    async fn put_document(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<bool>;
    /// Appends to the audit log; the entry's id.
    async fn add_audit(&self, entry: &AuditEntry) -> StoreResult<i64>;
    /// Newest first; rows with id below `before_id` when given.
    async fn audit(&self, before_id: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>>;
    /// Tokens and documents that other replicas change (a shared store tells each of
    /// them within moments); None for a store no other process writes to (SQLite).
    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>>;
    /// The version of the schema the store is at (its last migration).
    async fn schema_version(&self) -> StoreResult<u32>;
    /// For `diglot store copy`: up to `limit` whole rows of `table` after the row whose
    /// key is `after`, in key order.
    async fn read_rows(
        &self,
        table: &'static Table,
        after: Option<Vec<Value>>,
        limit: u32,
    ) -> StoreResult<Vec<Vec<Value>>>;
    /// For `diglot store copy`: adds whole rows (ids included) to `table`.
    async fn write_rows(&self, table: &'static Table, rows: Vec<Vec<Value>>) -> StoreResult<()>;
    /// For `diglot store copy --force`: deletes every row of every table.
    async fn clear(&self) -> StoreResult<()>;
}

/// Fails for a store file that exists but cannot be read, or stays empty: another
/// process creating the store has written its header within a moment.
fn check_not_empty(path: &Path) -> StoreResult<()> {
    for attempt in 0..20 {
        match std::fs::File::open(path).and_then(|f| f.metadata()) {
            Ok(meta) if meta.len() == 0 => {
                if attempt == 19 {
                    return Err(StoreError(format!(
                        "the store {} exists but is empty (0 bytes): it was truncated or is not \
                         diglot's; restore it from a backup, or remove it to start a new store \
                         without tokens",
                        path.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError(format!("cannot read the store {}: {e}", path.display())));
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The store's file under `data_dir`.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("diglot.db")
}

/// Opens (creating and migrating) the SQLite store in the file `path`, creating its
/// directory. Blocks: call it at start. A file that exists but is empty or unreadable is
/// an error, never a fresh store: a fresh one would have no tokens, and authentication
/// would silently be off.
pub fn open_sqlite(path: &Path) -> StoreResult<Arc<dyn Store>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create the data directory {}: {e}", dir.display())))?;
    }
    check_not_empty(path)?;
    Ok(Arc::new(SqliteStore::open(path)?))
}

/// The SQLite store `diglot.db` under `data_dir` (see `open_sqlite`).
pub fn open_data_dir(data_dir: &Path) -> StoreResult<Arc<dyn Store>> {
    open_sqlite(&file(data_dir))
}

/// Opens (creating and migrating) the store `[store]` names: SQLite in a file, or
/// PostgreSQL (retried for a few seconds while it starts). An error when it names none.
pub async fn open(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    match config.location().map_err(StoreError)? {
        StoreLocation::None => Err(StoreError(
            "there is no store: store.data_dir is empty and store.url is not set".into(),
        )),
        StoreLocation::Sqlite(path) => tokio::task::spawn_blocking(move || open_sqlite(&path))
            .await
            .map_err(|e| StoreError(format!("store: opening failed: {e}")))?,
        StoreLocation::Postgres(url) => Ok(Arc::new(PostgresStore::open(&url, config.pool_size).await?)),
    }
}
