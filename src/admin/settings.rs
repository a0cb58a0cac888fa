//! `/admin/api/settings`: limits, address rules, trusted proxies, the cache and default
//! token limits — stored, applied live, each shown with where its value comes from.

use std::collections::BTreeMap;

use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult, json_body};
use super::session::principal;
use super::{Admin, MAX_BODY, admin, audit};
use crate::config::{Origin, SETTINGS};

#[derive(Serialize, ToSchema)]
pub struct SettingView {
    #[salvo(schema(value_type = Object))]
    pub value: Value,
    /// "default", "profile" or "store".
    #[salvo(schema(value_type = String))]
    pub source: Origin,
    pub description: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Settings {
    /// By dotted key (`limits.rpm`).
    pub settings: BTreeMap<&'static str, SettingView>,
}

fn current(admin: &Admin) -> Settings {
    let live = admin.gateway.snapshot();
    let settings = live
        .overlay
        .settings_in_force(&live.profile)
        .into_iter()
        .map(|(key, value, source)| {
            let description = SETTINGS.iter().find(|(k, _)| *k == key).map_or("", |(_, d)| *d);
            (
                key,
                SettingView {
                    value,
                    source,
                    description,
                },
            )
        })
        .collect();
    Settings { settings }
}

/// Every setting the admin API may change: its value in force and where it comes from.
#[endpoint(tags("settings"))]
pub async fn get(depot: &mut Depot) -> ApiResult<Json<Settings>> {
    Ok(Json(current(&admin(depot))))
}

/// Sets settings by dotted key (`{"limits.rpm": 100}`); `null` takes a key back to the
/// profile's value. Applied at once; all or nothing.
#[endpoint(tags("settings"), request_body = serde_json::Map<String, serde_json::Value>)]
pub async fn update(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<Settings>> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let changes: Map<String, Value> = json_body(req, MAX_BODY).await?;
    for key in changes.keys() {
        if !SETTINGS.iter().any(|(k, _)| k == key) {
            let known: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
            return Err(ApiError::invalid(
                key.clone(),
                format!(
                    "'{key}' is not a setting the admin API changes; these are: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    let before = admin.gateway.snapshot().overlay.settings.clone();
    let wanted = changes.clone();
    admin
        .gateway
        .change(move |overlay| {
            for (key, value) in wanted {
                if value.is_null() {
                    overlay.settings.remove(&key);
                } else {
                    overlay.settings.insert(key, value);
                }
            }
            Ok(())
        })
        .await
        .map_err(|message| {
            let field = changes
                .keys()
                .filter(|k| message.starts_with(k.as_str()))
                .max_by_key(|k| k.len())
                .cloned();
            ApiError {
                field,
                ..ApiError::new(salvo::http::StatusCode::BAD_REQUEST, message)
            }
        })?;
    let after = admin.gateway.snapshot().overlay.settings.clone();
    audit(
        &admin,
        &who,
        "settings.update",
        "settings",
        Some(json!(before)),
        Some(json!(after)),
    )
    .await;
    Ok(Json(current(&admin)))
}
