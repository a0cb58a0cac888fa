//! `/admin/api/tokens`: the store's API tokens, through the implementation the CLI uses.

use std::collections::HashMap;

use salvo::http::StatusCode;
use salvo::oapi::ToSchema;
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::Serialize;
use serde_json::json;

use super::error::{ApiResult, json_body};
use super::session::principal;
use super::{Admin, MAX_BODY, admin, audit};
use crate::gateway::tokens::{self, TokenFields};
use crate::store::{Role, Store, TokenRecord};

/// A token as the admin API shows it: never its secret or digest.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    /// The start of the token, to recognise it.
    pub prefix: String,
    pub role: Role,
    pub enabled: bool,
    pub models: Vec<String>,
    pub ips: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub monthly_quota: Option<u64>,
    /// Tokens used this calendar month (UTC).
    pub used_this_month: u64,
    pub max_concurrent: Option<u32>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub created_at: i64,
    /// Unix milliseconds of its last request.
    pub last_used_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub data: Vec<TokenView>,
}

/// A new token: its secret is in this answer only.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: TokenView,
    /// The token itself. Shown once: only its digest is kept.
    pub secret: String,
}

pub(super) fn store(admin: &Admin) -> ApiResult<&dyn Store> {
    admin.gateway.store.as_deref().ok_or_else(|| {
        super::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "there is no store (store.data_dir is empty): set one to manage tokens here",
        )
    })
}

/// Views of `tokens`, with this month's use and last use.
pub(super) async fn views(admin: &Admin, tokens: Vec<TokenRecord>) -> ApiResult<Vec<TokenView>> {
    let (last_used, used): (HashMap<String, i64>, HashMap<String, u64>) = match &admin.gateway.store {
        Some(store) => (
            store.last_used().await?.into_iter().collect(),
            used_this_month(store.as_ref()).await?,
        ),
        None => Default::default(),
    };
    let mut views = Vec::with_capacity(tokens.len());
    for token in tokens {
        let used = used.get(&token.digest).copied().unwrap_or(0);
        views.push(TokenView {
            id: token.id.unwrap_or_default(),
            last_used_at: last_used.get(&token.digest).copied(),
            used_this_month: used,
            name: token.name,
            prefix: token.prefix,
            role: token.role,
            enabled: token.enabled,
            models: token.models,
            ips: token.ips,
            rpm: token.rpm,
            tpm: token.tpm,
            monthly_quota: token.monthly_quota,
            max_concurrent: token.max_concurrent,
            expires_at: token.expires_at,
            created_at: token.created_at,
        });
    }
    Ok(views)
}

/// Tokens used this calendar month per token digest, from the hourly rollup (cache hits
/// not counted, as quotas count them).
pub(super) async fn used_this_month(store: &dyn Store) -> ApiResult<HashMap<String, u64>> {
    let month = crate::gateway::limits::month_start_ms();
    let top = store.usage_top(month, crate::store::Dimension::Token, u32::MAX).await?;
    Ok(top
        .into_iter()
        .filter_map(|t| Some((t.token_digest?, t.prompt_tokens + t.completion_tokens)))
        .collect())
}

async fn view(admin: &Admin, token: TokenRecord) -> ApiResult<TokenView> {
    let mut one = views(admin, vec![token]).await?;
    Ok(one.remove(0))
}

/// What the audit log keeps of a token: everything shown, nothing secret.
fn audited(token: &TokenRecord) -> serde_json::Value {
    json!({
        "id": token.id, "name": token.name, "prefix": token.prefix, "role": token.role,
        "enabled": token.enabled, "models": token.models, "ips": token.ips, "rpm": token.rpm,
        "tpm": token.tpm, "monthly_quota": token.monthly_quota,
        "max_concurrent": token.max_concurrent, "expires_at": token.expires_at,
    })
}

/// Every token in the store.
#[endpoint(tags("tokens"))]
pub async fn list(depot: &mut Depot) -> ApiResult<Json<TokenList>> {
    let admin = admin(depot);
    let tokens = store(&admin)?.tokens().await?;
    Ok(Json(TokenList {
        data: views(&admin, tokens).await?,
    }))
}

/// Makes a token; its secret is in the answer, once.
#[endpoint(tags("tokens"), request_body = TokenFields, status_codes(201, 400, 401, 403, 409, 413, 503))]
pub async fn create(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<Json<CreatedToken>> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let fields: TokenFields = json_body(req, MAX_BODY).await?;
    let (secret, token) = tokens::create(store(&admin)?, &fields).await?;
    admin.gateway.tokens_changed().await;
    let target = token.id.unwrap_or_default().to_string();
    audit(&admin, &who, "token.create", &target, None, Some(audited(&token))).await;
    res.status_code(StatusCode::CREATED);
    Ok(Json(CreatedToken {
        token: view(&admin, token).await?,
        secret,
    }))
}

/// One token.
#[endpoint(tags("tokens"))]
pub async fn get(id: PathParam<i64>, depot: &mut Depot) -> ApiResult<Json<TokenView>> {
    let admin = admin(depot);
    let token = tokens::get(store(&admin)?, *id).await?;
    Ok(Json(view(&admin, token).await?))
}

/// Changes any of a token's fields (`null` clears a limit or the expiry); the next
/// request with it sees the change.
#[endpoint(tags("tokens"), request_body = TokenFields)]
pub async fn update(id: PathParam<i64>, req: &mut Request, depot: &mut Depot) -> ApiResult<Json<TokenView>> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let fields: TokenFields = json_body(req, MAX_BODY).await?;
    let (before, after) = tokens::update(store(&admin)?, *id, &fields).await?;
    admin.gateway.tokens_changed().await;
    audit(
        &admin,
        &who,
        "token.update",
        &id.to_string(),
        Some(audited(&before)),
        Some(audited(&after)),
    )
    .await;
    Ok(Json(view(&admin, after).await?))
}

/// Revokes a token: its next request gets 401. Its usage records stay.
#[endpoint(tags("tokens"), status_codes(204, 401, 403, 404, 409, 503))]
pub async fn delete(id: PathParam<i64>, depot: &mut Depot) -> ApiResult<StatusCode> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let token = tokens::revoke(store(&admin)?, *id).await?;
    admin.gateway.tokens_changed().await;
    audit(
        &admin,
        &who,
        "token.delete",
        &id.to_string(),
        Some(audited(&token)),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
