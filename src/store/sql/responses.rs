//! Responses kept for the Responses API (`store: true`) and their items, until they
//! expire.

use super::tables::{RESPONSE_ITEMS, RESPONSES};
use super::{Engine, SqlStore, Step, changed};
use crate::store::{StoreResult, StoredResponse};

/// Stored responses.
impl<E: Engine> SqlStore<E> {
    pub(super) async fn save_response(&self, r: &StoredResponse) -> StoreResult<()> {
        let mut steps: Vec<Step> = ["responses", "response_items"]
            .into_iter()
            .map(|table| {
                let sql = format!("DELETE FROM {table} WHERE expires_at <= $1");
                Step::Execute(sql.into(), vec![r.created_at.into()])
            })
            .collect();
        steps.push(Step::Insert {
            table: RESPONSES.name,
            columns: &RESPONSES.columns,
            rows: vec![vec![
                r.id.clone().into(),
                r.owner.clone().into(),
                r.created_at.into(),
                r.expires_at.into(),
                r.response.clone().into(),
                r.input.clone().into(),
                r.history.clone().into(),
            ]],
            tail: RESPONSES.replacing().into(),
        });
        let items: Vec<_> = r
            .items
            .iter()
            .map(|(id, item)| {
                vec![
                    r.owner.clone().into(),
                    id.clone().into(),
                    r.id.clone().into(),
                    r.expires_at.into(),
                    item.clone().into(),
                ]
            })
            .collect();
        steps.push(Step::Insert {
            table: RESPONSE_ITEMS.name,
            columns: &RESPONSE_ITEMS.columns,
            rows: items,
            tail: RESPONSE_ITEMS.replacing().into(),
        });
        self.run(steps).await.map(drop)
    }

    pub(super) async fn response(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<StoredResponse>> {
        let sql = "SELECT id, owner, created_at, expires_at, response, input, history FROM responses \
                   WHERE id = $1 AND owner = $2 AND expires_at > $3";
        let found = self
            .read(sql, vec![id.into(), owner.into(), now.into()], |row| {
                Ok(StoredResponse {
                    id: row.text(0)?,
                    owner: row.text(1)?,
                    created_at: row.int(2)?,
                    expires_at: row.int(3)?,
                    response: row.text(4)?,
                    input: row.text(5)?,
                    history: row.text(6)?,
                    items: Vec::new(),
                })
            })
            .await?;
        Ok(found.into_iter().next())
    }

    pub(super) async fn delete_response(&self, id: &str, owner: &str) -> StoreResult<bool> {
        let steps = [
            "DELETE FROM responses WHERE id = $1 AND owner = $2",
            "DELETE FROM response_items WHERE response_id = $1 AND owner = $2",
        ]
        .map(|sql| Step::Execute(sql.into(), vec![id.into(), owner.into()]));
        let outputs = self.run(steps.into()).await?;
        Ok(changed(&outputs, 0) > 0)
    }

    pub(super) async fn response_item(&self, id: &str, owner: &str, now: i64) -> StoreResult<Option<String>> {
        let sql = "SELECT item FROM response_items WHERE id = $1 AND owner = $2 AND expires_at > $3";
        let found = self
            .read(sql, vec![id.into(), owner.into(), now.into()], |row| row.text(0))
            .await?;
        Ok(found.into_iter().next())
    }
}
