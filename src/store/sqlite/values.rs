//! Values to and from SQLite, which keeps booleans as integers, and the steps run on a
//! connection (the same text PostgreSQL runs, its `$N` parameters read as `?N`).

use std::borrow::Cow;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, ToSql, params_from_iter};

use super::failed;
use crate::store::sql::{Output, Step, Table, Value};
use crate::store::{StoreError, StoreResult};

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Value::Int(n) => ToSqlOutput::from(*n),
            Value::Text(s) => ToSqlOutput::from(s.as_str()),
            Value::Bool(b) => ToSqlOutput::from(i64::from(*b)),
        })
    }
}

fn read(cell: ValueRef) -> StoreResult<Value> {
    match cell {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(n) => Ok(Value::Int(n)),
        ValueRef::Text(bytes) => Ok(Value::Text(String::from_utf8_lossy(bytes).into_owned())),
        ValueRef::Real(x) => Ok(Value::Int(x as i64)),
        ValueRef::Blob(_) => Err(StoreError(
            "store: a column holds bytes, not a value diglot wrote".into(),
        )),
    }
}

/// `sql` with PostgreSQL's `$1` parameters written as SQLite's `?1`.
fn positional(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let numbered = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if numbered { '?' } else { c });
    }
    Cow::Owned(out)
}

fn query(connection: &Connection, sql: &str, params: &[Value]) -> StoreResult<Output> {
    let mut statement = prepare(connection, sql)?;
    let width = statement.column_count();
    let mut rows = statement.query(params_from_iter(params)).map_err(failed("query"))?;
    let mut output = Output::default();
    while let Some(row) = rows.next().map_err(failed("read a row"))? {
        let cells = (0..width)
            .map(|i| read(row.get_ref(i).map_err(failed("read a column"))?))
            .collect::<StoreResult<Vec<Value>>>()?;
        output.rows.push(cells);
    }
    Ok(output)
}

/// `sql`'s statement, prepared once per connection and then taken from its cache.
fn prepare<'c>(connection: &'c Connection, sql: &str) -> StoreResult<CachedStatement<'c>> {
    connection
        .prepare_cached(&positional(sql))
        .map_err(failed("prepare a statement"))
}

fn execute(statement: &mut CachedStatement, params: &[Value]) -> StoreResult<u64> {
    let changed = statement.execute(params_from_iter(params)).map_err(failed("write"))?;
    Ok(changed as u64)
}

/// Whether `steps` change anything: every `Execute` and `Insert` does, a `Query` when its
/// statement is no read (a write with `RETURNING`), as SQLite itself judges it.
pub(super) fn writes(connection: &Connection, steps: &[Step]) -> StoreResult<bool> {
    for step in steps {
        let write = match step {
            Step::Query(sql, _) => !prepare(connection, sql)?.readonly(),
            Step::Execute(..) | Step::Insert { .. } => true,
            Step::Notify(_) => false,
        };
        if write {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs `steps` on `connection` (inside the caller's transaction).
pub(super) fn run(connection: &Connection, steps: &[Step]) -> StoreResult<Vec<Output>> {
    steps
        .iter()
        .map(|step| match step {
            Step::Query(sql, params) => query(connection, sql, params),
            Step::Execute(sql, params) => Ok(Output::changed(execute(&mut prepare(connection, sql)?, params)?)),
            Step::Insert {
                table,
                columns,
                rows,
                tail,
            } => {
                let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({}) {tail}",
                    Table::column_names(columns),
                    placeholders.join(", ")
                );
                // Prepared once for all the rows: looking the statement up by its text per
                // row cost as much as binding the row.
                let mut statement = prepare(connection, &sql)?;
                let mut changed = 0;
                for row in rows {
                    changed += execute(&mut statement, row)?;
                }
                Ok(Output::changed(changed))
            }
            Step::Notify(_) => Ok(Output::default()),
        })
        .collect()
}
