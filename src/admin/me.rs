//! `/admin/api/me`: what a token holder may see — its own record and its own requests,
//! nothing of anyone else's.

use salvo::http::StatusCode;
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::Serialize;

use super::admin;
use super::error::{ApiError, ApiResult};
use super::session::{Principal, principal};
use super::tokens::{store, used_this_month};
use super::usage::{LogPage, LogQuery, answer};
use crate::store::Role;

/// The caller's own token: limits, quota used and left, expiry, allowed models.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub enabled: bool,
    /// Model names and globs it may use; empty: every model.
    pub models: Vec<String>,
    pub ips: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub monthly_quota: Option<u64>,
    pub used_this_month: u64,
    pub quota_left: Option<u64>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

fn own(principal: &Principal) -> ApiResult<std::sync::Arc<crate::store::TokenRecord>> {
    principal.token.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "signed in with the admin password, not a token: there is no own record to show",
        )
    })
}

/// The caller's token (its limits as they apply, defaults included).
#[endpoint(tags("me"))]
pub async fn me(depot: &mut Depot) -> ApiResult<Json<Me>> {
    let admin = admin(depot);
    let token = own(&principal(depot)?)?;
    let used = used_this_month(store(&admin)?)
        .await?
        .get(&token.digest)
        .copied()
        .unwrap_or(0);
    Ok(Json(Me {
        name: token.name.clone(),
        prefix: token.prefix.clone(),
        role: token.role,
        enabled: token.enabled,
        models: token.models.clone(),
        ips: token.ips.clone(),
        rpm: token.rpm,
        tpm: token.tpm,
        max_concurrent: token.max_concurrent,
        monthly_quota: token.monthly_quota,
        used_this_month: used,
        quota_left: token.monthly_quota.map(|q| q.saturating_sub(used)),
        expires_at: token.expires_at,
    }))
}

/// The caller's own requests, with the filters of `/admin/api/logs` (but `token`).
#[endpoint(tags("me"), responses((status_code = 200, body = LogPage, description = "A page of its own requests")))]
pub async fn logs(query: LogQuery, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let admin = admin(depot);
    let token = own(&principal(depot)?)?;
    answer(&admin, &query, Some(&token.digest), res).await
}
