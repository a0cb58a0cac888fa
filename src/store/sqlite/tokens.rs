//! Tokens: kept as digests and display prefixes, never in clear.

use rusqlite::ToSql;

use super::{Database, failed};
use crate::store::{Role, StoreError, StoreResult, TokenRecord};

fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn token_from_row(row: &rusqlite::Row) -> rusqlite::Result<TokenRecord> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = row.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    let role: String = row.get(4)?;
    let as_u64 = |v: Option<i64>| v.map(|n| n.max(0) as u64);
    Ok(TokenRecord {
        id: Some(row.get(0)?),
        name: row.get(1)?,
        digest: row.get(2)?,
        prefix: row.get(3)?,
        role: if role == "admin" { Role::Admin } else { Role::User },
        enabled: row.get(5)?,
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
        models: list(8)?,
        ips: list(9)?,
        monthly_quota: as_u64(row.get(10)?),
        rpm: as_u64(row.get(11)?),
        tpm: as_u64(row.get(12)?),
        max_concurrent: row.get::<_, Option<i64>>(13)?.map(|n| n.max(0) as u32),
    })
}

type Fields = Vec<(&'static str, Box<dyn ToSql>)>;

/// A token's changeable fields as named parameters, shared by insert and update (the
/// insert adds the digest, prefix and creation time, which never change).
fn token_fields(token: &TokenRecord) -> Fields {
    vec![
        (":name", Box::new(token.name.clone())),
        (":role", Box::new(token.role.as_str())),
        (":enabled", Box::new(token.enabled)),
        (":expires_at", Box::new(token.expires_at)),
        (":models", Box::new(json_list(&token.models))),
        (":ips", Box::new(json_list(&token.ips))),
        (":monthly_quota", Box::new(token.monthly_quota.map(|n| n as i64))),
        (":rpm", Box::new(token.rpm.map(|n| n as i64))),
        (":tpm", Box::new(token.tpm.map(|n| n as i64))),
        (":max_concurrent", Box::new(token.max_concurrent)),
    ]
}

fn named<'a>(fields: &'a [(&'static str, Box<dyn ToSql>)]) -> Vec<(&'static str, &'a dyn ToSql)> {
    fields.iter().map(|(name, value)| (*name, value.as_ref())).collect()
}

const TOKEN_COLUMNS: &str = "id, name, digest, prefix, role, enabled, created_at, expires_at, models, ips, \
                             monthly_quota, rpm, tpm, max_concurrent";

/// Tokens.
impl Database {
    pub(super) fn create_token(&self, token: &TokenRecord) -> StoreResult<TokenRecord> {
        let mut fields = token_fields(token);
        fields.push((":digest", Box::new(token.digest.clone())));
        fields.push((":prefix", Box::new(token.prefix.clone())));
        fields.push((":created_at", Box::new(token.created_at)));
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens (name, digest, prefix, role, enabled, created_at, expires_at, models, ips, \
                 monthly_quota, rpm, tpm, max_concurrent) VALUES (:name, :digest, :prefix, :role, :enabled, \
                 :created_at, :expires_at, :models, :ips, :monthly_quota, :rpm, :tpm, :max_concurrent)",
                named(&fields).as_slice(),
            )
            .map_err(failed("create a token"))?;
            Ok(TokenRecord {
                id: Some(c.last_insert_rowid()),
                ..token.clone()
            })
        })
    }

    pub(super) fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.with(|c| {
            let mut statement = c
                .prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
                .map_err(failed("list tokens"))?;
            let rows = statement.query_map([], token_from_row).map_err(failed("list tokens"))?;
            rows.collect::<Result<_, _>>().map_err(failed("read a token"))
        })
    }

    pub(super) fn update_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let id = token
            .id
            .ok_or_else(|| StoreError("store: only stored tokens can be updated".into()))?;
        self.with(|c| {
            let mut fields = token_fields(token);
            fields.push((":id", Box::new(id)));
            let changed = c
                .execute(
                    "UPDATE tokens SET name = :name, role = :role, enabled = :enabled, expires_at = :expires_at, \
                     models = :models, ips = :ips, monthly_quota = :monthly_quota, rpm = :rpm, tpm = :tpm, \
                     max_concurrent = :max_concurrent WHERE id = :id",
                    named(&fields).as_slice(),
                )
                .map_err(failed("update a token"))?;
            if changed == 0 {
                return Err(StoreError(format!("no token with id {id}")));
            }
            Ok(())
        })
    }

    pub(super) fn delete_token(&self, id: i64) -> StoreResult<()> {
        self.with(|c| {
            let changed = c
                .execute("DELETE FROM tokens WHERE id = ?1", [id])
                .map_err(failed("delete a token"))?;
            if changed == 0 {
                return Err(StoreError(format!("no token with id {id}")));
            }
            Ok(())
        })
    }
}
