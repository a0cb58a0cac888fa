//! Ollama's native `/api` routes: read → decode (`protocol::ollama::decode`) → gateway →
//! encode (`protocol::ollama::encode`) → respond.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use salvo::prelude::*;
use serde_json::{Value, json};
use tracing::warn;

use super::request::{Call, read_json};
use super::respond::{write_bytes, write_json, write_ollama_error as write_error, write_stream};
use crate::ir::{ChatRequest, ChatResponse, ErrorKind};
use crate::protocol::ollama::decode::{
    decode_chat, decode_embed, decode_generate, decode_legacy_embedding, model_name,
};
use crate::protocol::ollama::encode::{self, Kind, LineEncoder, ndjson};
use crate::protocol::ollama::wire;
use crate::protocol::transport;
use crate::protocol::upstream::Forward;

/// `GET /` and `HEAD /`: how clients and monitors tell an Ollama is there.
#[handler]
pub async fn running(res: &mut Response) {
    write_bytes(res, 200, "text/plain; charset=utf-8", "Ollama is running");
}

#[handler]
pub async fn version(depot: &mut Depot, res: &mut Response) {
    write_json(res, 200, &json!({"version": Call::of(depot).config().ollama.version}));
}

/// `/api/tags` never fails because the upstream is down: clients (Home Assistant) take
/// a 4xx as "not an Ollama" and give up for good.
#[handler]
pub async fn tags(depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let cards = call.models().await.unwrap_or_else(|e| {
        warn!(error = %e, "upstream model list unavailable; /api/tags answers an empty list");
        Default::default()
    });
    write_json(res, 200, &encode::tags(&cards, &call.config().ollama.tag_suffix));
}

/// `/api/show`: an Ollama upstream's own answer, else one built from the model card.
/// Every model `/api/tags` lists answers here (Zed drops the whole provider otherwise).
#[handler]
pub async fn show(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let name = match read_json(req, call.config().max_body_bytes).await.and_then(model_name) {
        Ok(name) => name,
        Err(e) => return write_error(res, &e, ""),
    };
    if let Some(upstream) = call.ollama_show(&name).await {
        let answer = match upstream {
            Ok(answer) => answer,
            Err(e) => return write_error(res, &e, &name),
        };
        return match call.model(&name).await {
            Ok(card) if card.display_name.is_some() || card.description.is_some() => {
                write_json(res, 200, &encode::show_with_card(&answer, &card))
            }
            _ => write_json(res, 200, &*answer),
        };
    }
    match call.model(&name).await {
        Ok(card) => write_json(res, 200, &encode::show_from_card(&card, &name)),
        Err(e) => write_error(res, &e, &name),
    }
}

/// `/api/ps`: the models used in the last five minutes, as Ollama reports loaded ones.
#[handler]
pub async fn ps(depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let cards = call.models().await.unwrap_or_default();
    let keep_for = crate::gateway::RECENT_USE.as_secs() as i64;
    let loaded = encode::running(
        &cards,
        call.gateway.recent(),
        &call.config().ollama.tag_suffix,
        keep_for,
    );
    write_json(res, 200, &loaded);
}

#[handler]
pub async fn chat(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let wire: wire::ChatRequest = match read_json(req, call.config().max_body_bytes).await {
        Ok(w) => w,
        Err(e) => return write_error(res, &e, ""),
    };
    let model = wire.model.clone();
    let stream = wire.generation.stream != Some(false);
    if wire.messages.is_empty() && !wire.model.is_empty() {
        return load_answer(
            res,
            &encode::load_line(&model, &wire.generation.keep_alive, Kind::Chat),
            stream,
        );
    }
    match decode_chat(wire) {
        Ok(request) => generate_answer(res, &call, request, Kind::Chat).await,
        Err(e) => write_error(res, &e, &model),
    }
}

#[handler]
pub async fn generate(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let wire: wire::GenerateRequest = match read_json(req, call.config().max_body_bytes).await {
        Ok(w) => w,
        Err(e) => return write_error(res, &e, ""),
    };
    let model = wire.model.clone();
    let stream = wire.generation.stream != Some(false);
    if wire.prompt.is_empty() && wire.images.as_ref().is_none_or(Vec::is_empty) && !wire.model.is_empty() {
        let line = encode::load_line(&model, &wire.generation.keep_alive, Kind::Generate);
        return load_answer(res, &line, stream);
    }
    match decode_generate(wire) {
        Ok(request) => generate_answer(res, &call, request, Kind::Generate).await,
        Err(e) => write_error(res, &e, &model),
    }
}

/// An empty chat or prompt only loads (or unloads) a model in Ollama; there is nothing
/// to load behind diglot, so it answers at once.
fn load_answer(res: &mut Response, line: &Value, stream: bool) {
    if stream {
        write_bytes(res, 200, "application/x-ndjson", format!("{line}\n"));
    } else {
        write_json(res, 200, line);
    }
}

/// Streams when the client streams; otherwise asks the upstream for the whole answer
/// (wire-formats §4.3), so usage is the upstream's own even where it reports none in
/// streams, and nothing is paid for a stream no one reads.
async fn generate_answer(res: &mut Response, call: &Call, request: ChatRequest, kind: Kind) {
    let started = Instant::now();
    let mut events = match call.chat(&request).await {
        Ok(events) => events,
        Err(e) => return write_error(res, &e, &request.model),
    };
    let mut encoder = LineEncoder::new(&request.model, kind, started);
    if request.stream {
        return write_stream(res, "application/x-ndjson", ndjson(encoder, events));
    }
    let mut answer = ChatResponse::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => answer.push(event),
            Err(e) => return write_error(res, &e, &request.model),
        }
    }
    let body = encoder.whole(answer);
    write_bytes(res, 200, "application/json; charset=utf-8", body);
}

#[handler]
pub async fn embed(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let request = match read_json(req, call.config().max_body_bytes)
        .await
        .and_then(decode_embed)
    {
        Ok(request) => request,
        Err(e) => return write_error(res, &e, ""),
    };
    if request.inputs.is_empty() {
        let empty = wire::EmbedResponse {
            model: request.model,
            ..Default::default()
        };
        return write_json(res, 200, &empty);
    }
    let started = Instant::now();
    match call.embed(&request).await {
        Ok(answer) => write_json(
            res,
            200,
            &encode::embed_response(request.model, answer, started.elapsed()),
        ),
        Err(e) => write_error(res, &e, &request.model),
    }
}

/// The legacy single-prompt endpoint: `{"embedding":[...]}`, not normalised, no usage.
#[handler]
pub async fn embeddings(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let request = match read_json(req, call.config().max_body_bytes).await {
        Ok(wire) => decode_legacy_embedding(wire),
        Err(e) => return write_error(res, &e, ""),
    };
    if request.inputs.is_empty() {
        return write_json(res, 200, &json!({"embedding": []}));
    }
    match call.embed(&request).await {
        Ok(answer) => write_json(
            res,
            200,
            &json!({"embedding": answer.vectors.into_iter().next().unwrap_or_default()}),
        ),
        Err(e) => write_error(res, &e, &request.model),
    }
}

/// `/api/pull` of a model the upstream serves: a short success progress stream (Home
/// Assistant, Codex and Kerlig pull before use). Anything else goes to the fallback.
#[handler]
pub async fn pull(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let limit = call.config().max_body_bytes;
    let body: wire::PullRequest = match read_json(req, limit).await {
        Ok(p) => p,
        Err(e) => return write_error(res, &e, ""),
    };
    let stream = body.stream != Some(false);
    let name = match model_name(body.name) {
        Ok(name) => name,
        Err(e) => return write_error(res, &e, ""),
    };
    let card = match call.model(&name).await {
        Ok(card) => card,
        Err(e) if e.kind == ErrorKind::Forbidden => return write_error(res, &e, &name),
        Err(_) => {
            let read = req.payload_with_max_size(limit).await.ok().cloned().unwrap_or_default();
            return forward(req, res, &call, "pull", Some(read)).await;
        }
    };
    let steps = encode::pull_steps(&card);
    if stream {
        let body: String = steps.iter().map(|s| format!("{s}\n")).collect();
        write_bytes(res, 200, "application/x-ndjson", body);
    } else {
        write_json(res, 200, &json!({"status": "success"}));
    }
}

/// Push, create, copy, delete and blobs: forwarded to an Ollama.
#[handler]
pub async fn manage(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let what = req
        .uri()
        .path()
        .rsplit("/api/")
        .next()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    forward(req, res, &call, &what, None).await;
}

/// Passes a model-management call through to an Ollama (the gateway picks which). A
/// pull was already read to look the model up; anything else streams through unread.
async fn forward(req: &mut Request, res: &mut Response, call: &Call, what: &str, read: Option<bytes::Bytes>) {
    let body = match read {
        Some(read) => transport::whole(read),
        None => transport::streamed(
            req.take_body()
                .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) }),
        ),
    };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = &path[path.find("/api/").unwrap_or(0)..];
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok());
    let forward = Forward {
        method: req.method().as_str(),
        path_and_query: path,
        content_type,
        body,
    };
    match call.ollama_manage(what, forward).await {
        Ok(answer) => {
            res.status_code(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY));
            if let Some(content_type) = answer.content_type {
                let _ = res.add_header("content-type", content_type, true);
            }
            res.stream(answer.body);
        }
        Err(e) => write_error(res, &e, ""),
    }
}
