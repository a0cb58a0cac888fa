//! Values to and from PostgreSQL (booleans as booleans, every integer a BIGINT), and the
//! steps run in a transaction: many rows inserted in one statement through `UNNEST`.

use std::error::Error;

use bytes::BytesMut;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::Failure;
use super::listen::CHANNEL;
use crate::store::sql::{Column, Output, Step, Table, Ty, Value};
use crate::store::{StoreError, StoreResult};

type Boxed = Box<dyn Error + Sync + Send>;

/// Integers and booleans each go where the other is asked for (SQLite keeps booleans as
/// integers, so rows it gave arrive as integers).
impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Boxed> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Text(s) => s.to_sql_checked(ty, out),
            Value::Int(n) if *ty == Type::BOOL => (*n != 0).to_sql_checked(ty, out),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql_checked(ty, out),
            Value::Int(n) => n.to_sql_checked(ty, out),
            Value::Bool(b) if *ty == Type::BOOL => b.to_sql_checked(ty, out),
            Value::Bool(b) => i64::from(*b).to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// One column of a batch of rows, as the array `UNNEST` takes it.
#[derive(Debug)]
enum Array {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
}

impl ToSql for Array {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Boxed> {
        match self {
            Array::Int(v) => v.to_sql_checked(ty, out),
            Array::Text(v) => v.to_sql_checked(ty, out),
            Array::Bool(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Column `i` of `rows`, typed as `ty`.
fn array(rows: &[Vec<Value>], i: usize, ty: Ty) -> StoreResult<Array> {
    let wrong = |v: &Value| StoreError(format!("store: {v:?} does not fit a column of {ty:?}"));
    let cells = rows.iter().map(|row| row.get(i).unwrap_or(&Value::Null));
    Ok(match ty {
        Ty::Int => Array::Int(
            cells
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Int(n) => Ok(Some(*n)),
                    Value::Bool(b) => Ok(Some(i64::from(*b))),
                    Value::Text(_) => Err(wrong(v)),
                })
                .collect::<StoreResult<_>>()?,
        ),
        Ty::Bool => Array::Bool(
            cells
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Int(n) => Ok(Some(*n != 0)),
                    Value::Bool(b) => Ok(Some(*b)),
                    Value::Text(_) => Err(wrong(v)),
                })
                .collect::<StoreResult<_>>()?,
        ),
        Ty::Text => Array::Text(
            cells
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Text(s) => Ok(Some(s.clone())),
                    _ => Err(wrong(v)),
                })
                .collect::<StoreResult<_>>()?,
        ),
    })
}

/// `INSERT ... SELECT * FROM UNNEST($1::bigint[], $2::text[], ...)`: one statement for
/// every row.
fn insert_sql(table: &str, columns: &[Column], tail: &str) -> String {
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = match c.ty {
                Ty::Int => "bigint",
                Ty::Text => "text",
                Ty::Bool => "boolean",
            };
            format!("${}::{ty}[]", i + 1)
        })
        .collect();
    format!(
        "INSERT INTO {table} ({}) SELECT * FROM UNNEST({}) {tail}",
        Table::column_names(columns),
        arrays.join(", ")
    )
}

fn cell(row: &Row, i: usize) -> Result<Value, tokio_postgres::Error> {
    let ty = row.columns()[i].type_();
    Ok(if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.into()
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?.map(i64::from).into()
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)?.map(i64::from).into()
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)?.into()
    } else {
        row.try_get::<_, Option<String>>(i)?.into()
    })
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// Runs `steps` on `client` (a transaction, unless there is one step).
pub(super) async fn run(client: &impl GenericClient, steps: &[Step]) -> Result<Vec<Output>, Failure> {
    let mut outputs = Vec::with_capacity(steps.len());
    for step in steps {
        let output = match step {
            Step::Query(sql, values) => {
                let statement = client.prepare_cached(sql).await?;
                let rows = client.query(&statement, &params(values)).await?;
                let rows = rows
                    .iter()
                    .map(|row| (0..row.len()).map(|i| cell(row, i)).collect())
                    .collect::<Result<_, _>>()?;
                Output { rows, changed: 0 }
            }
            Step::Execute(sql, values) => {
                let statement = client.prepare_cached(sql).await?;
                let changed = client.execute(&statement, &params(values)).await?;
                Output::changed(changed)
            }
            Step::Insert { rows, .. } if rows.is_empty() => Output::default(),
            Step::Insert {
                table,
                columns,
                rows,
                tail,
            } => {
                let arrays = columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| array(rows, i, c.ty))
                    .collect::<StoreResult<Vec<_>>>()?;
                let statement = client.prepare_cached(&insert_sql(table, columns, tail)).await?;
                let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                let changed = client.execute(&statement, &params).await?;
                Output::changed(changed)
            }
            Step::Notify(change) => {
                let payload = super::listen::payload(change);
                let sql = format!("SELECT pg_notify('{CHANNEL}', $1)");
                client.execute(&sql, &[&payload]).await?;
                Output::default()
            }
        };
        outputs.push(output);
    }
    Ok(outputs)
}
