//! `/admin/api/audit`: every change made through the admin API — who, what (before and
//! after, without secrets), when, from where.

use salvo::oapi::ToSchema;
use salvo::oapi::extract::QueryParam;
use salvo::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::admin;
use super::error::ApiResult;
use super::tokens::store;

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// "admin (password)" or "token dg-AbC1".
    pub actor: String,
    pub ip: String,
    /// `token.create`, `channel.update`, `settings.update`...
    pub action: String,
    /// A token's id, a channel's name, a model pattern, "settings".
    pub target: String,
    #[salvo(schema(value_type = Object))]
    pub before: Value,
    #[salvo(schema(value_type = Object))]
    pub after: Value,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditView>,
    /// Pass as `before` for the next (older) page; null at the end.
    pub next: Option<i64>,
}

/// The changes made through the admin API, newest first.
#[endpoint(tags("audit"))]
pub async fn list(
    before: QueryParam<i64, false>,
    limit: QueryParam<u32, false>,
    depot: &mut Depot,
) -> ApiResult<Json<AuditPage>> {
    let admin = admin(depot);
    let limit = limit.into_inner().unwrap_or(100).clamp(1, 1000);
    let entries = store(&admin)?.audit(before.into_inner(), limit).await?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    Ok(Json(AuditPage {
        data: entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at_ms: e.at_ms,
                actor: e.actor,
                ip: e.ip,
                action: e.action,
                target: e.target,
                before: parse(e.before),
                after: parse(e.after),
            })
            .collect(),
        next,
    }))
}
