//! Tokens: kept as digests and display prefixes, never in clear. Every change is told to
//! the other replicas.

use super::{Engine, SqlStore, Step, Value, changed, count, rows};
use crate::store::{StoreChange, StoreError, StoreResult, TokenRecord};

fn json_list(list: &[String]) -> Value {
    Value::Text(serde_json::to_string(list).unwrap_or_else(|_| "[]".into()))
}

/// A token's changeable fields, in the order of `CHANGEABLE`, shared by insert and update.
fn changeable(token: &TokenRecord) -> Vec<Value> {
    vec![
        token.name.clone().into(),
        token.role.as_str().into(),
        token.enabled.into(),
        token.expires_at.into(),
        json_list(&token.models),
        json_list(&token.ips),
        token.monthly_quota.map(count).unwrap_or(Value::Null),
        token.rpm.map(count).unwrap_or(Value::Null),
        token.tpm.map(count).unwrap_or(Value::Null),
        token.max_concurrent.map(i64::from).into(),
    ]
}

const CHANGEABLE: [&str; 10] = [
    "name",
    "role",
    "enabled",
    "expires_at",
    "models",
    "ips",
    "monthly_quota",
    "rpm",
    "tpm",
    "max_concurrent",
];

/// Tokens.
impl<E: Engine> SqlStore<E> {
    pub(super) async fn create_token(&self, token: &TokenRecord) -> StoreResult<TokenRecord> {
        let mut values = changeable(token);
        values.extend([
            token.digest.clone().into(),
            token.prefix.clone().into(),
            token.created_at.into(),
        ]);
        let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO tokens ({}, digest, prefix, created_at) VALUES ({}) RETURNING id",
            CHANGEABLE.join(", "),
            placeholders.join(", ")
        );
        let outputs = self
            .run(vec![Step::Query(sql.into(), values), Step::Notify(StoreChange::Tokens)])
            .await
            .map_err(|e| StoreError(format!("store: create a token: {}", e.0)))?;
        let id = outputs
            .first()
            .and_then(|o| o.rows.first())
            .map(|row| rows::Cells(row).int(0))
            .transpose()?
            .ok_or_else(|| StoreError("store: create a token: no id came back".into()))?;
        Ok(TokenRecord {
            id: Some(id),
            ..token.clone()
        })
    }

    pub(super) async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let sql = format!("SELECT {} FROM tokens ORDER BY id", rows::TOKEN_COLUMNS);
        self.read(sql, Vec::new(), rows::token).await
    }

    pub(super) async fn update_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let id = token
            .id
            .ok_or_else(|| StoreError("store: only stored tokens can be updated".into()))?;
        let sets: Vec<String> = CHANGEABLE
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 1))
            .collect();
        let sql = format!(
            "UPDATE tokens SET {} WHERE id = ${}",
            sets.join(", "),
            CHANGEABLE.len() + 1
        );
        let mut values = changeable(token);
        values.push(id.into());
        self.change_token(id, Step::Execute(sql.into(), values)).await
    }

    pub(super) async fn delete_token(&self, id: i64) -> StoreResult<()> {
        let delete = Step::Execute("DELETE FROM tokens WHERE id = $1".into(), vec![id.into()]);
        self.change_token(id, delete).await
    }

    /// Runs `change` to the token `id`; an error when there is no such token.
    async fn change_token(&self, id: i64, change: Step) -> StoreResult<()> {
        let outputs = self.run(vec![change, Step::Notify(StoreChange::Tokens)]).await?;
        if changed(&outputs, 0) == 0 {
            return Err(StoreError(format!("no token with id {id}")));
        }
        Ok(())
    }
}
