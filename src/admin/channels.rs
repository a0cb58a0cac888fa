//! `/admin/api/channels`: the profile's channels (read-only here) and the store's, with
//! live health; new and changed channels apply through the live snapshot at once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use salvo::http::StatusCode;
use salvo::oapi::ToSchema;
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult, json_body};
use super::session::principal;
use super::{Admin, MAX_BODY, admin, audit};
use crate::config::{UpstreamConfig, parse_key_line};
use crate::ir::{ChatEvent, ChatRequest, Input, Message, Role, Sampling};
use crate::store::secrets::display_prefix;

/// A channel as the admin API shows it: every setting but its keys, which show as
/// prefixes; where it comes from; and its live health.
#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    /// Every `[[channels]]` setting but `api_key` and `keys`, which are never shown.
    #[serde(flatten)]
    #[salvo(schema(value_type = Object))]
    pub config: Map<String, Value>,
    /// The start of each key (`sk-proj`), never the keys.
    pub key_prefixes: Vec<String>,
    /// "profile" (read-only here: edit the file, it reloads) or "store".
    pub source: &'static str,
    /// State, usability, in-flight requests, latency, window counts and last error, as
    /// `/health` shows them.
    #[salvo(schema(value_type = Object))]
    pub health: Value,
}

#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    pub data: Vec<ChannelView>,
}

/// A channel to create, or the fields to change: any `[[channels]]` field, and
/// `keys_text` for keys in the import formats, one per line (`sk-...`, `URL|KEY`,
/// `KEY|URL`, `URL#KEY`, `URL/KEY`; `#` starts a comment).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // The body's documentation: `read_input` reads it field by field.
pub struct ChannelInput {
    #[serde(flatten)]
    pub config: UpstreamConfig,
    pub keys_text: Option<String>,
}

/// What a test of the channel found.
#[derive(Serialize, ToSchema)]
pub struct TestReport {
    /// Everything asked for worked.
    pub ok: bool,
    pub models: ModelCheck,
    pub chat: Option<ChatCheck>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelCheck {
    pub ok: bool,
    pub took_ms: u64,
    pub count: usize,
    /// The first names the upstream lists.
    pub names: Vec<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatCheck {
    pub ok: bool,
    pub took_ms: u64,
    pub model: String,
    pub text: String,
    pub error: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// Also send one short chat.
    #[serde(default)]
    pub chat: bool,
    /// The model to chat with; the first one listed when none is given.
    pub model: Option<String>,
}

/// The fields a channel has, to name the one a validation error is about.
fn fields() -> Vec<String> {
    match serde_json::to_value(UpstreamConfig::default()) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn rejected(message: String) -> ApiError {
    let fields = fields();
    let names: Vec<&str> = fields.iter().map(String::as_str).collect();
    ApiError::rejected(message, &names)
}

/// The view of `config` with the live channel's health.
fn view(admin: &Admin, config: &UpstreamConfig, source: &'static str) -> ChannelView {
    let live = admin.gateway.snapshot();
    let health = live
        .channels()
        .iter()
        .find(|c| c.name == config.name)
        .map_or(Value::Null, |c| {
            let mut report = c.health.report();
            if let Value::Object(map) = &mut report {
                map.insert("in_flight".into(), json!(c.in_flight()));
            }
            report
        });
    let key_prefixes = config
        .endpoints()
        .map(|endpoints| {
            endpoints
                .iter()
                .filter_map(|e| e.key.as_deref().map(display_prefix))
                .collect()
        })
        .unwrap_or_default();
    let mut shown = match serde_json::to_value(config.redacted()) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    shown.remove("api_key");
    shown.remove("keys");
    ChannelView {
        config: shown,
        key_prefixes,
        source,
        health,
    }
}

/// Every channel in force, the profile's first.
fn all(admin: &Admin) -> Vec<ChannelView> {
    let live = admin.gateway.snapshot();
    let mut views: Vec<ChannelView> = live
        .profile
        .channels()
        .iter()
        .map(|c| view(admin, c, "profile"))
        .collect();
    views.extend(live.overlay.channels.iter().map(|c| view(admin, c, "store")));
    views
}

/// What the audit log keeps of a channel: its view without health.
fn audited(view: &ChannelView) -> Value {
    json!({"config": view.config, "key_prefixes": view.key_prefixes})
}

/// Reads a channel input: `keys_text` lines join `keys`, each checked.
fn read_input(mut object: Map<String, Value>) -> ApiResult<(UpstreamConfig, bool)> {
    let keys_text = match object.remove("keys_text") {
        Some(Value::String(text)) => Some(text),
        Some(Value::Null) | None => None,
        Some(_) => return Err(ApiError::invalid("keys_text", "keys_text: expected a string of lines")),
    };
    let keys_given = keys_text.is_some() || object.contains_key("keys") || object.contains_key("api_key");
    let mut config: UpstreamConfig = serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
            .unwrap_or(path);
        ApiError::invalid(field.clone(), format!("{field}: {message}"))
    })?;
    for (i, line) in keys_text.iter().flat_map(|t| t.lines()).enumerate() {
        match parse_key_line(line) {
            None => {}
            Some(Ok(_)) => config.keys.push(line.trim().to_owned()),
            Some(Err(why)) => {
                return Err(ApiError::invalid(
                    "keys_text",
                    format!("keys_text line {}: {why}", i + 1),
                ));
            }
        }
    }
    Ok((config, keys_given))
}

fn object(value: Value) -> ApiResult<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::invalid("", "the body must be a JSON object")),
    }
}

fn is_profile_channel(admin: &Admin, name: &str) -> bool {
    admin
        .gateway
        .snapshot()
        .profile
        .channels()
        .iter()
        .any(|c| c.name == name)
}

/// The store's channel `name`: 409 for one of the profile's (read-only here), else 404.
fn stored(admin: &Admin, name: &str) -> ApiResult<UpstreamConfig> {
    if is_profile_channel(admin, name) {
        return Err(ApiError::conflict(
            None,
            format!(
                "the channel '{name}' comes from the profile and is read-only here: edit the profile file (it reloads)"
            ),
        ));
    }
    let live = admin.gateway.snapshot();
    let found = live.overlay.channels.iter().find(|c| c.name == name).cloned();
    found.ok_or_else(|| ApiError::not_found(format!("no channel is named '{name}'")))
}

/// Every channel: the profile's (read-only here) and the store's, with live health.
#[endpoint(tags("channels"))]
pub async fn list(depot: &mut Depot) -> ApiResult<Json<ChannelList>> {
    Ok(Json(ChannelList {
        data: all(&admin(depot)),
    }))
}

/// One channel.
#[endpoint(tags("channels"))]
pub async fn get(name: PathParam<String>, depot: &mut Depot) -> ApiResult<Json<ChannelView>> {
    all(&admin(depot))
        .into_iter()
        .find(|c| c.config.get("name").and_then(Value::as_str) == Some(name.as_str()))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no channel is named '{}'", *name)))
}

/// Adds a channel, kept in the store; it serves at once.
#[endpoint(tags("channels"), request_body = ChannelInput, status_codes(201, 400, 401, 403, 409, 413, 503))]
pub async fn create(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<Json<ChannelView>> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let body = object(json_body(req, MAX_BODY).await?)?;
    let (config, _) = read_input(body)?;
    let name = config.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "a channel needs a name"));
    }
    if is_profile_channel(&admin, &name) || admin.gateway.snapshot().overlay.channels.iter().any(|c| c.name == name) {
        return Err(ApiError::conflict(
            Some("name"),
            format!("a channel named '{name}' exists already"),
        ));
    }
    let added = config.clone();
    admin
        .gateway
        .change(move |overlay| {
            overlay.channels.push(added);
            Ok(())
        })
        .await
        .map_err(rejected)?;
    let shown = view(&admin, &config, "store");
    audit(&admin, &who, "channel.create", &name, None, Some(audited(&shown))).await;
    res.status_code(StatusCode::CREATED);
    Ok(Json(shown))
}

/// Changes the fields given (keys only when `api_key`, `keys` or `keys_text` is given);
/// the channel's health carries over.
#[endpoint(tags("channels"), request_body = ChannelInput)]
pub async fn update(name: PathParam<String>, req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ChannelView>> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let name = name.into_inner();
    let before = stored(&admin, &name)?;
    let changes = object(json_body(req, MAX_BODY).await?)?;
    if changes.get("name").is_some_and(|n| n.as_str() != Some(name.as_str())) {
        return Err(ApiError::invalid(
            "name",
            "a channel cannot be renamed: create a new one",
        ));
    }
    let mut merged = object(serde_json::to_value(&before).map_err(|e| ApiError::internal(e.to_string()))?)?;
    let keys_given = ["api_key", "keys", "keys_text"]
        .iter()
        .any(|k| changes.contains_key(*k));
    if keys_given {
        merged.remove("api_key");
        merged.remove("keys");
    }
    merged.extend(changes);
    let (after, _) = read_input(merged)?;
    let replacement = after.clone();
    admin
        .gateway
        .change(move |overlay| {
            if let Some(slot) = overlay.channels.iter_mut().find(|c| c.name == replacement.name) {
                *slot = replacement;
            }
            Ok(())
        })
        .await
        .map_err(rejected)?;
    let (was, now) = (view(&admin, &before, "store"), view(&admin, &after, "store"));
    audit(
        &admin,
        &who,
        "channel.update",
        &name,
        Some(audited(&was)),
        Some(audited(&now)),
    )
    .await;
    Ok(Json(now))
}

/// Removes a store channel; its models are no longer served through it.
#[endpoint(tags("channels"), status_codes(204, 401, 403, 404, 409, 503))]
pub async fn delete(name: PathParam<String>, depot: &mut Depot) -> ApiResult<StatusCode> {
    let admin = admin(depot);
    let who = principal(depot)?;
    let name = name.into_inner();
    let before = stored(&admin, &name)?;
    let shown = view(&admin, &before, "store");
    let gone = name.clone();
    admin
        .gateway
        .change(move |overlay| {
            overlay.channels.retain(|c| c.name != gone);
            Ok(())
        })
        .await
        .map_err(rejected)?;
    audit(&admin, &who, "channel.delete", &name, Some(audited(&shown)), None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks the channel for its model list and, with `chat`, sends it one short chat;
/// answers what happened.
#[endpoint(tags("channels"), request_body = TestRequest)]
pub async fn test(name: PathParam<String>, req: &mut Request, depot: &mut Depot) -> ApiResult<Json<TestReport>> {
    let admin = admin(depot);
    let ask: TestRequest = json_body(req, MAX_BODY).await?;
    let live = admin.gateway.snapshot();
    let Some(channel) = live.channels().iter().find(|c| c.name == *name).cloned() else {
        return Err(ApiError::not_found(format!("no channel is named '{}'", *name)));
    };
    let backend = channel.any_backend().clone();
    let started = Instant::now();
    let listed = tokio::time::timeout(Duration::from_secs(30), backend.models()).await;
    let took_ms = started.elapsed().as_millis() as u64;
    let (models, names) = match listed {
        Ok(Ok(cards)) => {
            let names: Vec<String> = cards.iter().map(|c| c.id.clone()).collect();
            let check = ModelCheck {
                ok: true,
                took_ms,
                count: names.len(),
                names: names.iter().take(20).cloned().collect(),
                error: None,
            };
            (check, names)
        }
        Ok(Err(error)) => (failed_listing(took_ms, error.message), Vec::new()),
        Err(_) => (failed_listing(took_ms, "no answer within 30 s".into()), Vec::new()),
    };
    let chat = if ask.chat {
        let model = ask.model.or_else(|| names.first().cloned()).unwrap_or_default();
        Some(chat_check(&backend, model).await)
    } else {
        None
    };
    Ok(Json(TestReport {
        ok: models.ok && chat.as_ref().is_none_or(|c| c.ok),
        models,
        chat,
    }))
}

fn failed_listing(took_ms: u64, error: String) -> ModelCheck {
    ModelCheck {
        ok: false,
        took_ms,
        count: 0,
        names: Vec::new(),
        error: Some(error),
    }
}

/// One short chat with `model`, its answer collected (60 s at most).
async fn chat_check(backend: &crate::protocol::Backend, model: String) -> ChatCheck {
    let started = Instant::now();
    let request = ChatRequest {
        model: model.clone(),
        input: Input::Messages(vec![Message::new(Role::User, "Say OK.")]),
        sampling: Sampling {
            max_tokens: Some(16),
            ..Sampling::default()
        },
        n: 1,
        ..ChatRequest::default()
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), async {
        let mut events = backend.chat(&request).await.map_err(|e| e.message)?;
        let mut text = String::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(ChatEvent::Text(t)) => text.push_str(&t),
                Ok(_) => {}
                Err(e) => return Err(e.message),
            }
        }
        Ok(text)
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 60 s".into()));
    let took_ms = started.elapsed().as_millis() as u64;
    match answer {
        Ok(text) => ChatCheck {
            ok: true,
            took_ms,
            model,
            text,
            error: None,
        },
        Err(error) => ChatCheck {
            ok: false,
            took_ms,
            model,
            text: String::new(),
            error: Some(error),
        },
    }
}
