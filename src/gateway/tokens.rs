//! Making, changing and revoking the store's API tokens: one implementation for the
//! `diglot token` command and the admin API. A new token's secret is returned once; the
//! store keeps its digest.

use serde::{Deserialize, Deserializer};

use super::auth::parse_net;
use crate::store::secrets::generate_token;
use crate::store::{Role, Store, TokenRecord};

/// Fields to set on a token; absent ones stay as they are (on create: their defaults).
/// For the limits and the expiry, `null` clears.
#[derive(Debug, Clone, Default, Deserialize, salvo::oapi::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenFields {
    /// Unique among the store's tokens; shown in logs and usage.
    pub name: Option<String>,
    /// "user" calls the APIs; "admin" also manages diglot.
    pub role: Option<Role>,
    /// A disabled token is refused until enabled again.
    pub enabled: Option<bool>,
    /// Model names and globs it may use; empty: every model.
    pub models: Option<Vec<String>>,
    /// Addresses and CIDRs it may call from; empty: anywhere.
    pub ips: Option<Vec<String>>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<i64>>,
    /// Tokens (prompt + completion) per calendar month, UTC.
    #[serde(default, deserialize_with = "present")]
    pub monthly_quota: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub max_concurrent: Option<Option<u32>>,
}

/// A field that is present, `null` included (absent ones stay `None` by `default`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Why a token change was refused, naming the field at fault when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenError {
    pub message: String,
    pub field: Option<&'static str>,
    pub kind: TokenErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorKind {
    Invalid,
    NotFound,
    /// The name is taken.
    Conflict,
    Store,
}

impl TokenError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            field: Some(field),
            kind: TokenErrorKind::Invalid,
        }
    }

    fn store(error: crate::store::StoreError) -> Self {
        Self {
            message: error.to_string(),
            field: None,
            kind: TokenErrorKind::Store,
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl TokenFields {
    /// Sets these fields on `token`, checking each.
    fn apply_to(&self, token: &mut TokenRecord) -> Result<(), TokenError> {
        if let Some(name) = &self.name {
            let name = name.trim();
            if name.is_empty() || name.len() > 100 {
                return Err(TokenError::invalid("name", "a token's name is 1 to 100 characters"));
            }
            token.name = name.to_owned();
        }
        if let Some(role) = self.role {
            token.role = role;
        }
        if let Some(enabled) = self.enabled {
            token.enabled = enabled;
        }
        if let Some(models) = &self.models {
            if models.iter().any(|m| m.trim().is_empty()) {
                return Err(TokenError::invalid("models", "a model name or glob is empty"));
            }
            token.models = models.iter().map(|m| m.trim().to_owned()).collect();
        }
        if let Some(ips) = &self.ips {
            for ip in ips {
                parse_net(ip.trim()).map_err(|e| TokenError::invalid("ips", e))?;
            }
            token.ips = ips.iter().map(|ip| ip.trim().to_owned()).collect();
        }
        if let Some(expires_at) = self.expires_at {
            token.expires_at = expires_at;
        }
        let positive = |field: &'static str, value: Option<u64>| match value {
            Some(0) => Err(TokenError::invalid(
                field,
                format!("{field} must be above 0 (null: no limit)"),
            )),
            other => Ok(other),
        };
        if let Some(quota) = self.monthly_quota {
            token.monthly_quota = positive("monthly_quota", quota)?;
        }
        if let Some(rpm) = self.rpm {
            token.rpm = positive("rpm", rpm)?;
        }
        if let Some(tpm) = self.tpm {
            token.tpm = positive("tpm", tpm)?;
        }
        if let Some(max) = self.max_concurrent {
            token.max_concurrent = positive("max_concurrent", max.map(u64::from))?.map(|n| n as u32);
        }
        Ok(())
    }
}

/// Makes a token with `fields` (a name is required): its secret, shown once, and its record.
pub async fn create(store: &dyn Store, fields: &TokenFields) -> Result<(String, TokenRecord), TokenError> {
    let Some(name) = fields.name.as_deref() else {
        return Err(TokenError::invalid("name", "a new token needs a name"));
    };
    refuse_taken_name(store, name.trim(), None).await?;
    let secret = generate_token();
    let mut token = TokenRecord {
        created_at: chrono::Utc::now().timestamp(),
        ..TokenRecord::for_secret(name, &secret, fields.role.unwrap_or_default())
    };
    fields.apply_to(&mut token)?;
    let token = store.create_token(&token).await.map_err(TokenError::store)?;
    Ok((secret, token))
}

/// The store's token `id`.
pub async fn get(store: &dyn Store, id: i64) -> Result<TokenRecord, TokenError> {
    let tokens = store.tokens().await.map_err(TokenError::store)?;
    tokens.into_iter().find(|t| t.id == Some(id)).ok_or_else(|| TokenError {
        message: format!("no token has the id {id}"),
        field: None,
        kind: TokenErrorKind::NotFound,
    })
}

/// Changes token `id`: its record before and after.
pub async fn update(
    store: &dyn Store,
    id: i64,
    fields: &TokenFields,
) -> Result<(TokenRecord, TokenRecord), TokenError> {
    let before = get(store, id).await?;
    if let Some(name) = &fields.name {
        refuse_taken_name(store, name.trim(), Some(id)).await?;
    }
    let mut after = before.clone();
    fields.apply_to(&mut after)?;
    store.update_token(&after).await.map_err(TokenError::store)?;
    Ok((before, after))
}

/// Deletes token `id` (its usage records stay): the record it had.
pub async fn revoke(store: &dyn Store, id: i64) -> Result<TokenRecord, TokenError> {
    let token = get(store, id).await?;
    store.delete_token(id).await.map_err(TokenError::store)?;
    Ok(token)
}

/// Fails when another token (not `except`) already has `name`: names pick tokens out in
/// the CLI, and two of one name would be one too many.
async fn refuse_taken_name(store: &dyn Store, name: &str, except: Option<i64>) -> Result<(), TokenError> {
    let tokens = store.tokens().await.map_err(TokenError::store)?;
    if tokens.iter().any(|t| t.name == name && t.id != except) {
        return Err(TokenError {
            message: format!(
                "a token named '{name}' exists already: choose another name, or revoke it first \
                 (`diglot token revoke {name}`)"
            ),
            field: Some("name"),
            kind: TokenErrorKind::Conflict,
        });
    }
    Ok(())
}
