//! The store written once for both engines: every `Store` method is SQL text that SQLite
//! and PostgreSQL both run (`$N` parameters, `CAST(... AS BIGINT)`, `CASE` rather than
//! arithmetic on booleans, `ON CONFLICT DO UPDATE`, `RETURNING`), sent as `Step`s to an
//! `Engine`, which only knows how to run steps in one transaction and hand back rows of
//! `Value`s. One file per concern: tokens, usage (the log), rollups, responses, documents
//! (with the audit log), the tables' columns, and the copy between stores.

mod documents;
mod responses;
pub(crate) mod rollup;
pub mod rows;
pub mod tables;
mod tokens;
mod usage;

use std::borrow::Cow;
use std::sync::atomic::AtomicI64;

use tokio::sync::broadcast;

use super::{
    AuditEntry, DailyUsage, Dimension, Document, Step as RollupStep, Store, StoreChange, StoreResult, StoredResponse,
    TokenRecord, UsageFilter, UsagePoint, UsageRecord, UsageTop,
};
pub use tables::{Column, Table, Ty};

/// One value bound to a statement or read from a row. SQLite keeps booleans as integers:
/// each engine converts between the two where a column's type asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// An unsigned count as the databases' signed integers keep it (saturated).
pub fn count(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// What an engine runs, in order, in one transaction.
#[derive(Debug, Clone)]
pub enum Step {
    /// A statement returning rows (a `SELECT`, or a write with `RETURNING`).
    Query(Cow<'static, str>, Vec<Value>),
    /// A write: its output is the number of rows it changed.
    Execute(Cow<'static, str>, Vec<Value>),
    /// `rows` into `columns` of `table`, then `tail` (an `ON CONFLICT` clause or ""): one
    /// statement per row in SQLite, one for all of them in PostgreSQL (`UNNEST`).
    Insert {
        table: &'static str,
        columns: &'static [Column],
        rows: Vec<Vec<Value>>,
        tail: Cow<'static, str>,
    },
    /// Tells the other replicas what changed, when the transaction commits (PostgreSQL's
    /// NOTIFY); nothing with SQLite, which has no other replicas.
    Notify(StoreChange),
}

/// What one step gave back.
#[derive(Debug, Default)]
pub struct Output {
    pub rows: Vec<Vec<Value>>,
    pub changed: u64,
}

impl Output {
    /// What a write gave: the rows it changed.
    pub fn changed(changed: u64) -> Self {
        Self {
            changed,
            rows: Vec::new(),
        }
    }
}

/// A database that runs steps: SQLite or PostgreSQL.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Runs `steps` in one transaction (all or none); what each one gave, in order.
    async fn run(&self, steps: Vec<Step>) -> StoreResult<Vec<Output>>;
    /// The schema version the database is at.
    async fn schema_version(&self) -> StoreResult<u32>;
    /// Changes other replicas made; None where there are none (SQLite).
    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        None
    }
    /// After rows were copied in with their ids: the next id of each table follows them.
    async fn ids_copied(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// The store on an engine.
pub struct SqlStore<E> {
    engine: E,
    /// When old per-minute rollups were last pruned (unix ms): at most once a minute.
    minutes_pruned_at: AtomicI64,
}

impl<E: Engine> SqlStore<E> {
    pub fn new(engine: E) -> Self {
        Self {
            engine,
            minutes_pruned_at: AtomicI64::new(0),
        }
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Runs `steps`; what each gave.
    async fn run(&self, steps: Vec<Step>) -> StoreResult<Vec<Output>> {
        self.engine.run(steps).await
    }

    /// The rows of one query.
    async fn query(&self, sql: impl Into<Cow<'static, str>>, params: Vec<Value>) -> StoreResult<Vec<Vec<Value>>> {
        let mut outputs = self.run(vec![Step::Query(sql.into(), params)]).await?;
        Ok(outputs.pop().unwrap_or_default().rows)
    }

    /// The rows of one query, each read by `read`.
    async fn read<T>(
        &self,
        sql: impl Into<Cow<'static, str>>,
        params: Vec<Value>,
        read: impl Fn(&rows::Cells) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.query(sql, params)
            .await?
            .iter()
            .map(|row| read(&rows::Cells(row)))
            .collect()
    }
}

/// The number of rows `outputs[i]` changed (0 when it is missing).
fn changed(outputs: &[Output], i: usize) -> u64 {
    outputs.get(i).map_or(0, |o| o.changed)
}

#[async_trait::async_trait]
impl<E: Engine> Store for SqlStore<E> {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<TokenRecord> {
        self.create_token(token).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.tokens().await
    }

    async fn update_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.update_token(token).await
    }

    async fn delete_token(&self, id: i64) -> StoreResult<()> {
        self.delete_token(id).await
    }

    async fn write_usage_at(&self, records: &[UsageRecord], now_ms: i64) -> StoreResult<()> {
        self.write_usage_at(records, now_ms).await
    }

    async fn tokens_used_since(&self, since_ms: i64) -> StoreResult<Vec<(String, u64)>> {
        self.tokens_used_since(since_ms).await
    }

    async fn daily_usage(&self, since_ms: i64) -> StoreResult<Vec<DailyUsage>> {
        self.daily_usage(since_ms).await
    }

    async fn usage_count(&self) -> StoreResult<u64> {
        self.usage_count().await
    }

    async fn recent_usage(&self, limit: u32) -> StoreResult<Vec<UsageRecord>> {
        self.usage_page(&UsageFilter {
            limit,
            ..Default::default()
        })
        .await
    }

    async fn usage_page(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
        self.usage_page(filter).await
    }

    async fn last_used(&self) -> StoreResult<Vec<(String, i64)>> {
        self.last_used().await
    }

    async fn usage_series(&self, since_ms: i64, until_ms: i64, step: RollupStep) -> StoreResult<Vec<UsagePoint>> {
        self.usage_series(since_ms, until_ms, step).await
    }

    async fn usage_top(&self, since_ms: i64, dimension: Dimension, limit: u32) -> StoreResult<Vec<UsageTop>> {
        self.usage_top(since_ms, dimension, limit).await
    }

    async fn save_response(&self, response: &StoredResponse) -> StoreResult<()> {
        self.save_response(response).await
    }

    async fn response(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<StoredResponse>> {
        self.response(id, owner, now).await
    }

    async fn delete_response(&self, id: &str, owner: &str) -> StoreResult<bool> {
        self.delete_response(id, owner).await
    }

    async fn response_item(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<String>> {
        self.response_item(id, owner, now).await
    }

    async fn documents(&self, kind: &str) -> StoreResult<Vec<Document>> {
        self.documents(kind).await
    }

    async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<Document>> {
        self.document(kind, key).await
    }

    async fn put_document(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<bool> {
        self.put_document(kind, key, value).await
    }

    async fn add_audit(&self, entry: &AuditEntry) -> StoreResult<i64> {
        self.add_audit(entry).await
    }

    async fn audit(&self, before_id: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.audit(before_id, limit).await
    }

    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        self.engine.changes()
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        self.engine.schema_version().await
    }

    async fn read_rows(
        &self,
        table: &'static Table,
        after: Option<Vec<Value>>,
        limit: u32,
    ) -> StoreResult<Vec<Vec<Value>>> {
        self.read_rows(table, after, limit).await
    }

    async fn write_rows(&self, table: &'static Table, rows: Vec<Vec<Value>>) -> StoreResult<()> {
        self.write_rows(table, rows).await
    }

    async fn clear(&self) -> StoreResult<()> {
        self.clear().await
    }
}
