//! Responses kept for the Responses API (`store: true`) and their items, until they
//! expire.

use rusqlite::{OptionalExtension, params};

use super::{Database, failed};
use crate::store::{StoreResult, StoredResponse};

/// Stored responses.
impl Database {
    pub(super) fn save_response(&self, r: &StoredResponse) -> StoreResult<()> {
        self.with(|c| {
            let transaction = c.transaction().map_err(failed("begin saving a response"))?;
            for table in ["responses", "response_items"] {
                transaction
                    .execute(&format!("DELETE FROM {table} WHERE expires_at <= ?1"), [r.created_at])
                    .map_err(failed("drop expired responses"))?;
            }
            transaction
                .execute(
                    "INSERT OR REPLACE INTO responses (id, owner, created_at, expires_at, response, input, history) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        r.id,
                        r.owner,
                        r.created_at,
                        r.expires_at,
                        r.response,
                        r.input,
                        r.history
                    ],
                )
                .map_err(failed("save a response"))?;
            for (id, item) in &r.items {
                transaction
                    .execute(
                        "INSERT OR REPLACE INTO response_items (owner, id, response_id, expires_at, item) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![r.owner, id, r.id, r.expires_at, item],
                    )
                    .map_err(failed("save a response item"))?;
            }
            transaction.commit().map_err(failed("commit a response"))
        })
    }

    pub(super) fn response(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<StoredResponse>> {
        self.with(|c| {
            c.query_row(
                "SELECT id, owner, created_at, expires_at, response, input, history FROM responses \
                 WHERE id = ?1 AND owner = ?2 AND expires_at > ?3",
                params![id, owner, now],
                |row| {
                    Ok(StoredResponse {
                        id: row.get(0)?,
                        owner: row.get(1)?,
                        created_at: row.get(2)?,
                        expires_at: row.get(3)?,
                        response: row.get(4)?,
                        input: row.get(5)?,
                        history: row.get(6)?,
                        items: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(failed("read a response"))
        })
    }

    pub(super) fn delete_response(&self, id: &str, owner: &str) -> StoreResult<bool> {
        self.with(|c| {
            let transaction = c.transaction().map_err(failed("begin deleting a response"))?;
            let deleted = transaction
                .execute("DELETE FROM responses WHERE id = ?1 AND owner = ?2", params![id, owner])
                .map_err(failed("delete a response"))?;
            transaction
                .execute(
                    "DELETE FROM response_items WHERE response_id = ?1 AND owner = ?2",
                    params![id, owner],
                )
                .map_err(failed("delete a response's items"))?;
            transaction.commit().map_err(failed("commit a deletion"))?;
            Ok(deleted > 0)
        })
    }

    pub(super) fn response_item(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT item FROM response_items WHERE id = ?1 AND owner = ?2 AND expires_at > ?3",
                params![id, owner, now],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed("read a response item"))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{SqliteStore, Store, StoredResponse};

    #[tokio::test]
    async fn responses_are_kept_per_owner_until_they_expire() {
        let dir = tempfile::Builder::new().prefix("diglot-responses-").tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("diglot.db")).unwrap();
        let response = |id: &str, created_at: i64, expires_at: i64| StoredResponse {
            id: id.into(),
            owner: "alice".into(),
            created_at,
            expires_at,
            response: "{}".into(),
            input: "[]".into(),
            history: "[]".into(),
            items: vec![(format!("msg_{id}"), "{}".into())],
        };
        store.save_response(&response("resp_a", 100, 200)).await.unwrap();
        let kept = store.response("resp_a", "alice", 150).await.unwrap().unwrap();
        assert_eq!(
            kept,
            StoredResponse {
                items: Vec::new(),
                ..response("resp_a", 100, 200)
            }
        );
        assert_eq!(
            store
                .response_item("msg_resp_a", "alice", 150)
                .await
                .unwrap()
                .as_deref(),
            Some("{}")
        );
        assert_eq!(store.response_item("msg_resp_a", "bob", 150).await.unwrap(), None);
        assert_eq!(
            store.response("resp_a", "bob", 150).await.unwrap(),
            None,
            "another owner's"
        );
        assert_eq!(store.response("resp_a", "alice", 200).await.unwrap(), None, "expired");
        assert!(!store.delete_response("resp_a", "bob").await.unwrap());
        // A later save drops what expired by then.
        store.save_response(&response("resp_b", 300, 400)).await.unwrap();
        assert!(!store.delete_response("resp_a", "alice").await.unwrap());
        assert_eq!(
            store.response_item("msg_resp_a", "alice", 350).await.unwrap(),
            None,
            "expired with it"
        );
        assert!(store.delete_response("resp_b", "alice").await.unwrap());
        assert_eq!(
            store.response_item("msg_resp_b", "alice", 301).await.unwrap(),
            None,
            "deleted with it"
        );
        assert_eq!(store.response("resp_b", "alice", 301).await.unwrap(), None);
    }
}
