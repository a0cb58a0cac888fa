//! `/admin/api/models`: the catalog as clients see it, and per-model settings (aliases,
//! display names, policy) kept in the store, checked as the profile's are.

use salvo::http::StatusCode;
use salvo::oapi::ToSchema;
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::Serialize;
use serde_json::json;
use wildmatch::WildMatch;

use super::error::{ApiError, ApiResult, json_body};
use super::session::principal;
use super::{MAX_BODY, admin, audit};
use crate::config::ModelSettings;

/// A model of the catalog.
#[derive(Serialize, ToSchema)]
pub struct ModelView {
    /// The name clients send.
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// The channels that serve it, each with the name its upstream knows it by.
    pub channels: Vec<ServedBy>,
    /// Other names clients may use for it.
    pub aliases: Vec<String>,
    pub capabilities: Vec<String>,
    pub context_length: Option<u64>,
    /// Options used when a client sends none, from every entry that applies (the more
    /// specific wins).
    #[salvo(schema(value_type = Object))]
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// Options that replace what a client sends, likewise.
    #[salvo(schema(value_type = Object))]
    pub forced: serde_json::Map<String, serde_json::Value>,
    /// Where the most specific entry is kept: "profile", "store", or null for none.
    pub policy_source: Option<&'static str>,
    /// The `[models]` entries that apply to it, most specific last.
    pub policies: Vec<PolicyView>,
}

#[derive(Serialize, ToSchema)]
pub struct ServedBy {
    pub channel: String,
    pub upstream_model: String,
}

/// One `[models."PATTERN"]` entry and where it is kept.
#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    pub pattern: String,
    /// "profile" or "store" (the store's entry replaces the profile's of the same pattern).
    pub source: &'static str,
    pub settings: ModelSettings,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub data: Vec<ModelView>,
    /// Every `[models]` entry, also those no listed model matches now.
    pub policies: Vec<PolicyView>,
}

fn matches(pattern: &str, names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| *n == pattern || WildMatch::new(pattern).matches(n))
}

/// The catalog, with the settings that apply to each model.
#[endpoint(tags("models"))]
pub async fn list(depot: &mut Depot) -> ApiResult<Json<ModelList>> {
    let admin = admin(depot);
    let live = admin.gateway.snapshot();
    let policies: Vec<PolicyView> = live
        .config
        .models
        .iter()
        .map(|(pattern, settings)| PolicyView {
            pattern: pattern.clone(),
            source: if live.overlay.models.contains_key(pattern) {
                "store"
            } else {
                "profile"
            },
            settings: settings.clone(),
        })
        .collect();
    let catalog = live
        .catalog()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.message))?;
    let channels = live.channels();
    let data = catalog
        .into_iter()
        .map(|(card, served)| {
            let mut names: Vec<&str> = vec![card.id.as_str()];
            names.extend(served.iter().map(|(_, upstream)| upstream.as_str()));
            let aliases = channels
                .iter()
                .flat_map(|c| c.aliases.iter())
                .filter(|(_, target)| names.contains(&target.as_str()))
                .map(|(alias, _)| alias.clone())
                .filter(|alias| *alias != card.id)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut applying: Vec<PolicyView> = policies
                .iter()
                .filter(|p| matches(&p.pattern, &names))
                .map(|p| PolicyView {
                    pattern: p.pattern.clone(),
                    source: p.source,
                    settings: p.settings.clone(),
                })
                .collect();
            // As policy.rs ranks them: exact names over globs, longer globs over shorter.
            applying.sort_by_key(|p| (!p.pattern.contains(['*', '?']), p.pattern.len()));
            let (mut defaults, mut forced) = (serde_json::Map::new(), serde_json::Map::new());
            for p in &applying {
                defaults.extend(p.settings.defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
                forced.extend(p.settings.forced.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            ModelView {
                defaults,
                forced,
                policy_source: applying.last().map(|p| p.source),
                policies: applying,
                name: card.id,
                display_name: card.display_name,
                description: card.description,
                channels: served
                    .into_iter()
                    .map(|(channel, upstream_model)| ServedBy {
                        channel,
                        upstream_model,
                    })
                    .collect(),
                aliases,
                capabilities: card.capabilities,
                context_length: card.context_length,
            }
        })
        .collect();
    Ok(Json(ModelList { data, policies }))
}

/// The fields a model entry has, to name the one a validation error is about.
const FIELDS: &[&str] = &[
    "display_name",
    "description",
    "aliases",
    "defaults",
    "forced",
    "capabilities",
    "context_length",
    "family",
    "parameter_size",
    "quantization",
];

/// Sets the `[models."PATTERN"]` entry kept in the store (it replaces the profile's of
/// the same pattern): display name, aliases, option defaults and forced values, facts.
#[endpoint(tags("models"), request_body = ModelSettings)]
pub async fn put(pattern: PathParam<String>, req: &mut Request, depot: &mut Depot) -> ApiResult<Json<PolicyView>> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let pattern = pattern.into_inner();
    if pattern.trim().is_empty() {
        return Err(ApiError::invalid("pattern", "the pattern is empty"));
    }
    let settings: ModelSettings = json_body(req, MAX_BODY).await?;
    let before = admin.gateway.snapshot().overlay.models.get(&pattern).cloned();
    let (key, value) = (pattern.clone(), settings.clone());
    admin
        .gateway
        .change(move |overlay| {
            overlay.models.insert(key, value);
            Ok(())
        })
        .await
        .map_err(|message| {
            // The configuration names the entry, then the field: `models."p".defaults: ...`.
            let after_pattern = message
                .split_once("\".")
                .map_or(message.as_str(), |(_, rest)| rest)
                .to_owned();
            let field = FIELDS.iter().find(|f| after_pattern.starts_with(**f));
            ApiError {
                field: field.map(|f| f.to_string()),
                ..ApiError::rejected(message, FIELDS)
            }
        })?;
    audit(
        &admin,
        &who,
        "model.put",
        &pattern,
        before.map(|b| json!(b)),
        Some(json!(settings)),
    )
    .await;
    Ok(Json(PolicyView {
        pattern,
        source: "store",
        settings,
    }))
}

/// Removes the store's entry for the pattern (the profile's, if any, applies again).
#[endpoint(tags("models"), status_codes(204, 401, 403, 404, 409, 503))]
pub async fn delete(pattern: PathParam<String>, depot: &mut Depot) -> ApiResult<StatusCode> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let pattern = pattern.into_inner();
    let Some(before) = admin.gateway.snapshot().overlay.models.get(&pattern).cloned() else {
        return Err(ApiError::not_found(format!(
            "the store has no settings for '{pattern}' (the profile's are edited in the file)"
        )));
    };
    let key = pattern.clone();
    admin
        .gateway
        .change(move |overlay| {
            overlay.models.remove(&key);
            Ok(())
        })
        .await
        .map_err(|m| ApiError::rejected(m, FIELDS))?;
    audit(&admin, &who, "model.delete", &pattern, Some(json!(before)), None).await;
    Ok(StatusCode::NO_CONTENT)
}
