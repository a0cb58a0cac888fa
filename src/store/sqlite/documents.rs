//! What the admin API keeps besides tokens: documents (channels, models, settings as
//! JSON, by kind and key) and the audit log of its changes.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::{Database, failed};
use crate::store::{AuditEntry, Document, StoreResult};

impl Database {
    pub(super) fn documents(&self, kind: &str) -> StoreResult<Vec<Document>> {
        self.with(|c| {
            let mut statement = c
                .prepare_cached("SELECT key, value, updated_at FROM documents WHERE kind = ?1 ORDER BY key")
                .map_err(failed("list documents"))?;
            let rows = statement
                .query_map([kind], |row| {
                    Ok(Document {
                        key: row.get(0)?,
                        value: row.get(1)?,
                        updated_at: row.get(2)?,
                    })
                })
                .map_err(failed("list documents"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read a document"))
        })
    }

    /// Writes or deletes a document, `now` its time of update (unix seconds); whether
    /// there was one before.
    pub(super) fn put_document(&self, kind: &str, key: &str, value: Option<&str>, now: i64) -> StoreResult<bool> {
        self.with(|c| {
            let Some(value) = value else {
                let deleted = c
                    .execute("DELETE FROM documents WHERE kind = ?1 AND key = ?2", [kind, key])
                    .map_err(failed("delete a document"))?;
                return Ok(deleted > 0);
            };
            // In one transaction, so "existed" is about the row this write replaced.
            let transaction = c.transaction().map_err(failed("begin writing a document"))?;
            let existed = transaction
                .query_row(
                    "SELECT 1 FROM documents WHERE kind = ?1 AND key = ?2",
                    [kind, key],
                    |_| Ok(()),
                )
                .optional()
                .map_err(failed("read a document"))?
                .is_some();
            transaction
                .execute(
                    "INSERT INTO documents (kind, key, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![kind, key, value, now],
                )
                .map_err(failed("write a document"))?;
            transaction.commit().map_err(failed("commit a document"))?;
            Ok(existed)
        })
    }

    pub(super) fn add_audit(&self, entry: &AuditEntry) -> StoreResult<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (at_ms, actor, ip, action, target, before_json, after_json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    entry.at_ms,
                    entry.actor,
                    entry.ip,
                    entry.action,
                    entry.target,
                    entry.before,
                    entry.after
                ],
            )
            .map_err(failed("write to the audit log"))?;
            Ok(c.last_insert_rowid())
        })
    }

    pub(super) fn audit(&self, before_id: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let (clause, mut values) = match before_id {
            Some(id) => ("WHERE id < ?", vec![Value::Integer(id)]),
            None => ("", Vec::new()),
        };
        values.push(Value::Integer(i64::from(limit)));
        self.with(|c| {
            let mut statement = c
                .prepare_cached(&format!(
                    "SELECT id, at_ms, actor, ip, action, target, before_json, after_json FROM audit {clause} \
                     ORDER BY id DESC LIMIT ?"
                ))
                .map_err(failed("read the audit log"))?;
            let rows = statement
                .query_map(params_from_iter(values), |row| {
                    Ok(AuditEntry {
                        id: row.get(0)?,
                        at_ms: row.get(1)?,
                        actor: row.get(2)?,
                        ip: row.get(3)?,
                        action: row.get(4)?,
                        target: row.get(5)?,
                        before: row.get(6)?,
                        after: row.get(7)?,
                    })
                })
                .map_err(failed("read the audit log"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read the audit log"))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{AuditEntry, Document, SqliteStore, Store};

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::Builder::new().prefix("diglot-documents-").tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("diglot.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn documents_are_written_replaced_and_deleted_per_kind() {
        let (_dir, store) = open();
        assert!(store.documents("channel").await.unwrap().is_empty());
        assert!(
            !store
                .put_document("channel", "local", Some(r#"{"v":1}"#))
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_document("channel", "cloud", Some(r#"{"v":2}"#))
                .await
                .unwrap()
        );
        assert!(
            !store.put_document("model", "local", Some(r#"{"m":1}"#)).await.unwrap(),
            "another kind"
        );
        assert!(
            store
                .put_document("channel", "local", Some(r#"{"v":3}"#))
                .await
                .unwrap(),
            "replaced"
        );

        let channels = store.documents("channel").await.unwrap();
        let keys_values: Vec<(&str, &str)> = channels.iter().map(|d| (d.key.as_str(), d.value.as_str())).collect();
        assert_eq!(
            keys_values,
            [("cloud", r#"{"v":2}"#), ("local", r#"{"v":3}"#)],
            "by key"
        );
        let now = chrono::Utc::now().timestamp();
        assert!(channels.iter().all(|d| (now - d.updated_at).abs() < 60));

        assert!(store.put_document("channel", "local", None).await.unwrap());
        assert!(
            !store.put_document("channel", "local", None).await.unwrap(),
            "already gone"
        );
        assert_eq!(store.documents("channel").await.unwrap().len(), 1);
        assert_eq!(
            store.documents("model").await.unwrap(),
            [Document {
                key: "local".into(),
                value: r#"{"m":1}"#.into(),
                updated_at: store.documents("model").await.unwrap()[0].updated_at,
            }],
            "untouched by the other kind's deletion"
        );
    }

    #[tokio::test]
    async fn the_audit_log_pages_newest_first() {
        let (_dir, store) = open();
        assert!(store.audit(None, 10).await.unwrap().is_empty());
        let mut ids = Vec::new();
        for i in 0..7 {
            let entry = AuditEntry {
                at_ms: 1_000 + i,
                actor: "admin session".into(),
                ip: "127.0.0.1".into(),
                action: "channel.update".into(),
                target: format!("channel-{i}"),
                before: (i > 0).then(|| format!(r#"{{"n":{}}}"#, i - 1)),
                after: Some(format!(r#"{{"n":{i}}}"#)),
                ..Default::default()
            };
            let id = store.add_audit(&entry).await.unwrap();
            assert_eq!(store.audit(None, 1).await.unwrap(), [AuditEntry { id, ..entry }]);
            ids.push(id);
        }
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store.audit(before, 3).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            seen.extend(page.iter().map(|e| e.id));
            before = page.last().map(|e| e.id);
        }
        ids.reverse();
        assert_eq!(seen, ids, "each entry once, newest first");
    }
}
