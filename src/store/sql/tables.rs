//! The stored tables' columns with their types, as inserts and `diglot store copy` need
//! them (the migrations create the same tables), and the copy's reads and writes.

use std::borrow::Cow;
use std::sync::LazyLock;

use super::{Engine, SqlStore, Step, Value};
use crate::store::StoreResult;
use crate::store::rollup::{COUNTERS, histogram_columns};

/// A column's type: SQLite keeps `Bool` as an integer, PostgreSQL as a boolean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Text,
    Bool,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: Cow<'static, str>,
    pub ty: Ty,
}

/// A table: its columns, the first `key` of which are its primary key.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: Vec<Column>,
    pub key: usize,
}

impl Table {
    fn new(name: &'static str, key: usize, columns: &[(&'static str, Ty)]) -> Self {
        Self {
            name,
            key,
            columns: columns
                .iter()
                .map(|&(name, ty)| Column {
                    name: Cow::Borrowed(name),
                    ty,
                })
                .collect(),
        }
    }

    /// This table with every rollup column (counters, then histogram buckets) after its own.
    fn with_rollup_values(mut self) -> Self {
        let values = COUNTERS
            .iter()
            .map(|c| Cow::Borrowed(*c))
            .chain(histogram_columns().map(Cow::Owned));
        self.columns.extend(values.map(|name| Column { name, ty: Ty::Int }));
        self
    }

    pub fn column_names(columns: &[Column]) -> String {
        columns.iter().map(|c| c.name.as_ref()).collect::<Vec<_>>().join(", ")
    }

    fn key_names(&self) -> String {
        Self::column_names(&self.columns[..self.key])
    }

    /// `ON CONFLICT (key) DO UPDATE SET` each other column to `set(column)`.
    pub fn on_conflict(&self, set: impl Fn(&str) -> String) -> String {
        let sets: Vec<String> = self.columns[self.key..]
            .iter()
            .map(|c| format!("{} = {}", c.name, set(&c.name)))
            .collect();
        format!("ON CONFLICT ({}) DO UPDATE SET {}", self.key_names(), sets.join(", "))
    }

    /// `ON CONFLICT` replacing the row with the same key.
    pub fn replacing(&self) -> String {
        self.on_conflict(|c| format!("excluded.{c}"))
    }
}

use Ty::{Bool, Int, Text};

pub static TOKENS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "tokens",
        1,
        &[
            ("id", Int),
            ("name", Text),
            ("digest", Text),
            ("prefix", Text),
            ("role", Text),
            ("enabled", Bool),
            ("created_at", Int),
            ("expires_at", Int),
            ("models", Text),
            ("ips", Text),
            ("monthly_quota", Int),
            ("rpm", Int),
            ("tpm", Int),
            ("max_concurrent", Int),
        ],
    )
});

pub static USAGE: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "usage",
        1,
        &[
            ("id", Int),
            ("at_ms", Int),
            ("token_digest", Text),
            ("token_prefix", Text),
            ("client_ip", Text),
            ("frontend", Text),
            ("model", Text),
            ("channel", Text),
            ("upstream_model", Text),
            ("status", Int),
            ("latency_ms", Int),
            ("ttft_ms", Int),
            ("prompt_tokens", Int),
            ("completion_tokens", Int),
            ("estimated", Bool),
            ("cache_hit", Bool),
            ("request_id", Text),
            ("trace_id", Text),
            ("attempts", Int),
        ],
    )
});

pub static USAGE_MINUTE: LazyLock<Table> =
    LazyLock::new(|| Table::new("usage_minute", 1, &[("at_ms", Int)]).with_rollup_values());
pub static USAGE_HOUR: LazyLock<Table> =
    LazyLock::new(|| Table::new("usage_hour", 1, &[("at_ms", Int)]).with_rollup_values());

/// The key columns of the per-key rollups.
const ROLLUP_KEY: [(&str, Ty); 6] = [
    ("at_ms", Int),
    ("token_digest", Text),
    ("token_prefix", Text),
    ("model", Text),
    ("channel", Text),
    ("frontend", Text),
];

pub static USAGE_HOUR_KEY: LazyLock<Table> =
    LazyLock::new(|| Table::new("usage_hour_key", ROLLUP_KEY.len(), &ROLLUP_KEY).with_rollup_values());
pub static USAGE_DAY_KEY: LazyLock<Table> =
    LazyLock::new(|| Table::new("usage_day_key", ROLLUP_KEY.len(), &ROLLUP_KEY).with_rollup_values());
pub static USAGE_LAST_USED: LazyLock<Table> =
    LazyLock::new(|| Table::new("usage_last_used", 1, &[("token_digest", Text), ("at_ms", Int)]));

pub static RESPONSES: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "responses",
        1,
        &[
            ("id", Text),
            ("owner", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("response", Text),
            ("input", Text),
            ("history", Text),
        ],
    )
});

pub static RESPONSE_ITEMS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "response_items",
        2,
        &[
            ("owner", Text),
            ("id", Text),
            ("response_id", Text),
            ("expires_at", Int),
            ("item", Text),
        ],
    )
});

pub static DOCUMENTS: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "documents",
        2,
        &[("kind", Text), ("key", Text), ("value", Text), ("updated_at", Int)],
    )
});

pub static AUDIT: LazyLock<Table> = LazyLock::new(|| {
    Table::new(
        "audit",
        1,
        &[
            ("id", Int),
            ("at_ms", Int),
            ("actor", Text),
            ("ip", Text),
            ("action", Text),
            ("target", Text),
            ("before_json", Text),
            ("after_json", Text),
        ],
    )
});

/// Every table a store keeps, in the order `diglot store copy` moves them.
pub fn all() -> [&'static Table; 11] {
    [
        &TOKENS,
        &USAGE,
        &USAGE_MINUTE,
        &USAGE_HOUR,
        &USAGE_HOUR_KEY,
        &USAGE_DAY_KEY,
        &USAGE_LAST_USED,
        &RESPONSES,
        &RESPONSE_ITEMS,
        &DOCUMENTS,
        &AUDIT,
    ]
}

/// The copy's reads and writes: whole rows, by key.
impl<E: Engine> SqlStore<E> {
    pub(super) async fn read_rows(
        &self,
        table: &'static Table,
        after: Option<Vec<Value>>,
        limit: u32,
    ) -> StoreResult<Vec<Vec<Value>>> {
        let key = table.key_names();
        let mut params = Vec::new();
        let mut clause = String::new();
        if let Some(after) = after {
            let placeholders: Vec<String> = (1..=after.len()).map(|i| format!("${i}")).collect();
            clause = format!("WHERE ({key}) > ({})", placeholders.join(", "));
            params = after;
        }
        params.push(Value::Int(i64::from(limit)));
        let sql = format!(
            "SELECT {} FROM {} {clause} ORDER BY {key} LIMIT ${}",
            Table::column_names(&table.columns),
            table.name,
            params.len()
        );
        self.query(sql, params).await
    }

    pub(super) async fn write_rows(&self, table: &'static Table, rows: Vec<Vec<Value>>) -> StoreResult<()> {
        self.run(vec![Step::Insert {
            table: table.name,
            columns: &table.columns,
            rows,
            tail: Cow::Borrowed(""),
        }])
        .await?;
        self.engine.ids_copied().await
    }

    pub(super) async fn clear(&self) -> StoreResult<()> {
        let steps = all()
            .into_iter()
            .map(|table| Step::Execute(format!("DELETE FROM {}", table.name).into(), Vec::new()))
            .collect();
        self.run(steps).await.map(drop)
    }
}
