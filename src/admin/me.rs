//! `/admin/api/me`: what a token holder may see — its own record and its own requests,
//! nothing of anyone else's.

use salvo::http::StatusCode;
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::Serialize;

use super::admin;
use super::error::{ApiError, ApiResult};
use super::session::{Principal, principal};
use super::tokens::{TokenView, views};
use super::usage::{LogPage, LogQuery, answer};
use crate::store::TokenRecord;

/// The caller's own token: limits (as they apply, defaults included), quota used and
/// left, expiry, allowed models.
#[derive(Serialize, ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub token: TokenView,
    pub quota_left: Option<u64>,
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
    let mut views = views(&admin, vec![TokenRecord::clone(&token)]).await?;
    let token = views.remove(0);
    Ok(Json(Me {
        quota_left: token.monthly_quota.map(|q| q.saturating_sub(token.used_this_month)),
        token,
    }))
}

/// The caller's own requests, with the filters of `/admin/api/logs` (but `token`).
#[endpoint(tags("me"), responses((status_code = 200, body = LogPage, description = "A page of its own requests")))]
pub async fn logs(query: LogQuery, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let admin = admin(depot);
    let token = own(&principal(depot)?)?;
    answer(&admin, &query, Some(&token.digest), res).await
}
