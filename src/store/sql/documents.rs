//! What the admin API keeps besides tokens: documents (channels, models, settings as
//! JSON, by kind and key), told to the other replicas when they change, and the audit
//! log of its changes.

use super::tables::DOCUMENTS;
use super::{Engine, SqlStore, Step, Value, rows};
use crate::store::{AuditEntry, Document, StoreChange, StoreError, StoreResult};

const DOCUMENT: &str = "SELECT key, value, updated_at FROM documents WHERE kind = $1";

impl<E: Engine> SqlStore<E> {
    pub(super) async fn documents(&self, kind: &str) -> StoreResult<Vec<Document>> {
        let sql = format!("{DOCUMENT} ORDER BY key");
        self.read(sql, vec![kind.into()], rows::document).await
    }

    pub(super) async fn document(&self, kind: &str, key: &str) -> StoreResult<Option<Document>> {
        let sql = format!("{DOCUMENT} AND key = $2");
        let found = self.read(sql, vec![kind.into(), key.into()], rows::document).await?;
        Ok(found.into_iter().next())
    }

    /// Writes or deletes a document; whether there was one before. Both in one
    /// transaction, so "existed" is about the row this write replaced.
    pub(super) async fn put_document(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<bool> {
        let changed = StoreChange::Documents { kind: kind.to_owned() };
        let which = vec![Value::from(kind), key.into()];
        let Some(value) = value else {
            let delete = Step::Execute("DELETE FROM documents WHERE kind = $1 AND key = $2".into(), which);
            let outputs = self.run(vec![delete, Step::Notify(changed)]).await?;
            return Ok(super::changed(&outputs, 0) > 0);
        };
        let now = chrono::Utc::now().timestamp();
        let steps = vec![
            Step::Query("SELECT 1 FROM documents WHERE kind = $1 AND key = $2".into(), which),
            Step::Insert {
                table: DOCUMENTS.name,
                columns: &DOCUMENTS.columns,
                rows: vec![vec![kind.into(), key.into(), value.into(), now.into()]],
                tail: DOCUMENTS.replacing().into(),
            },
            Step::Notify(changed),
        ];
        let outputs = self.run(steps).await?;
        Ok(outputs.first().is_some_and(|o| !o.rows.is_empty()))
    }

    pub(super) async fn add_audit(&self, entry: &AuditEntry) -> StoreResult<i64> {
        let sql = "INSERT INTO audit (at_ms, actor, ip, action, target, before_json, after_json) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
        let values = vec![
            entry.at_ms.into(),
            entry.actor.clone().into(),
            entry.ip.clone().into(),
            entry.action.clone().into(),
            entry.target.clone().into(),
            entry.before.clone().into(),
            entry.after.clone().into(),
        ];
        let ids = self.read(sql, values, |row| row.int(0)).await?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError("store: write to the audit log: no id came back".into()))
    }

    pub(super) async fn audit(&self, before_id: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let (clause, mut values) = match before_id {
            Some(id) => ("WHERE id < $1", vec![Value::Int(id)]),
            None => ("", Vec::new()),
        };
        values.push(Value::Int(i64::from(limit)));
        let sql = format!(
            "SELECT {} FROM audit {clause} ORDER BY id DESC LIMIT ${}",
            rows::AUDIT_COLUMNS,
            values.len()
        );
        self.read(sql, values, rows::audit).await
    }
}
