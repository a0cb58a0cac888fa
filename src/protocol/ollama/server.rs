//! Frontend: Ollama's native `/api` routes. Decodes requests into the IR and encodes IR
//! events as NDJSON lines (one object per line, each flushed on its own) or one JSON
//! body, in the shapes the strictest Ollama clients parse.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use salvo::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::{decode, wire};
use crate::gateway::auth::Caller;
use crate::ir::{
    ChatEvent, ChatRequest, ChatResponse, EmbedRequest, Error, ErrorKind, FinishReason, Image, Input, Message,
    ModelCard, Part, Prompt, Role, TokenLogprob, Tool, ToolCall, Usage,
};
use crate::server::{App, app, caller, error_headers, read_json, write_bytes, write_json, write_stream};

/// The routes, relative to the root (and the base path).
pub fn routes() -> Vec<Router> {
    vec![
        Router::with_path("api/version").get(version).head(version),
        Router::with_path("api/tags").get(tags).head(tags),
        Router::with_path("api/show").post(show),
        Router::with_path("api/ps").get(ps),
        Router::with_path("api/chat").post(chat),
        Router::with_path("api/generate").post(generate),
        Router::with_path("api/embed").post(embed),
        Router::with_path("api/embeddings").post(embeddings),
        Router::with_path("api/pull").post(pull),
        Router::with_path("api/push").post(manage),
        Router::with_path("api/create").post(manage),
        Router::with_path("api/copy").post(manage),
        Router::with_path("api/delete").delete(manage),
        Router::with_path("api/blobs/{digest}").post(manage).head(manage),
    ]
}

/// `GET /` and `HEAD /`: how clients and monitors tell an Ollama is there.
#[handler]
pub async fn running(res: &mut Response) {
    write_bytes(res, 200, "text/plain; charset=utf-8", "Ollama is running");
}

/// Renders an IR error as Ollama does: `{"error":"..."}` with the status. An unknown
/// model says `model 'NAME' not found`, which CLIs and apps match on to offer a pull.
pub fn write_error(res: &mut Response, error: &Error, model: &str) {
    error_headers(res, error);
    write_json(
        res,
        error.status(),
        &wire::ErrorBody {
            error: message(error, model),
        },
    );
}

fn message(error: &Error, model: &str) -> String {
    if error.kind == ErrorKind::NotFound && error.param.as_deref() == Some("model") && !model.is_empty() {
        format!("model '{model}' not found")
    } else {
        error.message.clone()
    }
}

#[handler]
async fn version(depot: &mut Depot, res: &mut Response) {
    write_json(res, 200, &json!({"version": app(depot).config.ollama.version}));
}

// ---- model listing ----

/// `/api/tags` never fails because the upstream is down: clients (Home Assistant) take
/// a 4xx as "not an Ollama" and give up for good.
#[handler]
async fn tags(depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let models = match app.gateway.models(&caller(depot)).await {
        Ok(models) => models
            .iter()
            .map(|card| entry(card, app.gateway.tag_suffix()))
            .collect(),
        Err(e) => {
            warn!(error = %e, "upstream model list unavailable; /api/tags answers an empty list");
            Vec::new()
        }
    };
    write_json(res, 200, &wire::TagsResponse { models });
}

/// The name an Ollama client sees: always with a tag.
fn tagged(id: &str, suffix: &str) -> String {
    if id.contains(':') || suffix.is_empty() {
        id.to_owned()
    } else {
        format!("{id}{suffix}")
    }
}

fn entry(card: &ModelCard, suffix: &str) -> wire::ModelEntry {
    let name = tagged(&card.id, suffix);
    wire::ModelEntry {
        model: name.clone(),
        name,
        modified_at: rfc3339(card.created),
        size: card.size_bytes.unwrap_or(0),
        digest: card
            .digest
            .clone()
            .unwrap_or_else(|| hex::encode(Sha256::digest(card.id.as_bytes()))),
        details: details(card),
        display_name: card.display_name.clone(),
        description: card.description.clone(),
        ..Default::default()
    }
}

fn details(card: &ModelCard) -> wire::ModelDetails {
    let family = card.family.clone().unwrap_or_default();
    wire::ModelDetails {
        parent_model: String::new(),
        format: "gguf".into(),
        families: if family.is_empty() {
            Vec::new()
        } else {
            vec![family.clone()]
        },
        family,
        parameter_size: card.parameter_size.clone().unwrap_or_default(),
        quantization_level: card.quantization.clone().unwrap_or_default(),
    }
}

fn rfc3339(unix: i64) -> String {
    let time = chrono::DateTime::from_timestamp(unix, 0)
        .filter(|_| unix > 0)
        .unwrap_or_else(chrono::Utc::now);
    time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[derive(serde::Deserialize)]
struct ModelName {
    #[serde(default)]
    model: String,
    #[serde(default)]
    name: Option<String>,
}

impl ModelName {
    fn get(self) -> Result<String, Error> {
        Some(self.model)
            .filter(|m| !m.is_empty())
            .or(self.name)
            .ok_or_else(|| Error::invalid_field("model", "model is required"))
    }
}

/// `/api/show`: an Ollama upstream's own answer, else one built from the model card.
/// Every model `/api/tags` lists answers here (Zed drops the whole provider otherwise).
#[handler]
async fn show(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let name = match read_json::<ModelName>(req, app.config.max_body_bytes)
        .await
        .and_then(ModelName::get)
    {
        Ok(name) => name,
        Err(e) => return write_error(res, &e, ""),
    };
    let who = caller(depot);
    if let Some(upstream) = app.gateway.ollama_show(&name, &who).await {
        let answer = match upstream {
            Ok(answer) => answer,
            Err(e) => return write_error(res, &e, &name),
        };
        // The profile's display name and description, where clients look for them.
        let card = app.gateway.model(&name, &who).await.ok();
        let Some(card) = card.filter(|c| c.display_name.is_some() || c.description.is_some()) else {
            return write_json(res, 200, &*answer);
        };
        let mut answer = (*answer).clone();
        if let Some(info) = answer.get_mut("model_info").and_then(Value::as_object_mut) {
            if let Some(display) = card.display_name {
                info.insert("general.basename".into(), json!(display));
            }
            if let Some(description) = card.description {
                info.insert("general.description".into(), json!(description));
            }
        }
        return write_json(res, 200, &answer);
    }
    let card = match app.gateway.model(&name, &caller(depot)).await {
        Ok(card) => card,
        Err(e) => return write_error(res, &e, &name),
    };
    write_json(res, 200, &show_from_card(&card, &name));
}

fn show_from_card(card: &ModelCard, name: &str) -> wire::ShowResponse {
    let arch = card
        .family
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "llama".into());
    let context = card.context_length.unwrap_or(crate::gateway::DEFAULT_CONTEXT_LENGTH);
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), json!(arch));
    model_info.insert(
        "general.basename".into(),
        json!(card.display_name.as_deref().unwrap_or(name)),
    );
    if let Some(description) = &card.description {
        model_info.insert("general.description".into(), json!(description));
    }
    model_info.insert(format!("{arch}.context_length"), json!(context));
    // Clients read features off the template: LiteLLM looks for "tools", Continue
    // enables fill-in-the-middle only when it mentions .Suffix.
    let mut template = String::from("{{ .Prompt }}");
    if card.has_capability("tools") {
        template = format!("{{{{- if .Tools }}}}{{{{ .Tools }}}}{{{{ end }}}}{template}");
    }
    if card.has_capability("insert") {
        template.push_str("{{ .Suffix }}");
    }
    wire::ShowResponse {
        license: String::new(),
        modelfile: format!(
            "# Served by diglot from an OpenAI-compatible upstream\nFROM {}\n",
            card.id
        ),
        parameters: format!("num_ctx {context}"),
        template,
        details: details(card),
        model_info: Some(model_info),
        capabilities: card.capabilities.clone(),
        modified_at: rfc3339(card.created),
    }
}

/// `/api/ps`: the models used in the last five minutes, as Ollama reports loaded ones.
#[handler]
async fn ps(depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let cards = app.gateway.models(&caller(depot)).await.unwrap_or_default();
    let suffix = app.gateway.tag_suffix();
    let mut models: Vec<wire::ModelEntry> = Vec::new();
    for (name, last_used) in app.gateway.recent() {
        let card = cards
            .iter()
            .find(|c| c.id == name || tagged(&c.id, suffix) == name)
            .cloned();
        let card = card.unwrap_or_else(|| ModelCard {
            id: name.clone(),
            ..Default::default()
        });
        let mut entry = entry(&card, suffix);
        entry.expires_at = Some(rfc3339(last_used + crate::gateway::RECENT_USE.as_secs() as i64));
        entry.size_vram = Some(entry.size);
        entry.context_length = Some(card.context_length.unwrap_or(crate::gateway::DEFAULT_CONTEXT_LENGTH));
        models.push(entry);
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    write_json(res, 200, &wire::TagsResponse { models });
}

// ---- generation ----

#[handler]
async fn chat(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let wire: wire::ChatRequest = match read_json(req, app.config.max_body_bytes).await {
        Ok(w) => w,
        Err(e) => return write_error(res, &e, ""),
    };
    let model = wire.model.clone();
    let stream = wire.generation.stream != Some(false);
    if wire.messages.is_empty() && !wire.model.is_empty() {
        return load_answer(res, &model, &wire.generation.keep_alive, stream, Kind::Chat);
    }
    match decode_chat(wire) {
        Ok(request) => generate_answer(res, &app, request, Kind::Chat, &caller(depot)).await,
        Err(e) => write_error(res, &e, &model),
    }
}

#[handler]
async fn generate(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let wire: wire::GenerateRequest = match read_json(req, app.config.max_body_bytes).await {
        Ok(w) => w,
        Err(e) => return write_error(res, &e, ""),
    };
    let model = wire.model.clone();
    let stream = wire.generation.stream != Some(false);
    if wire.prompt.is_empty() && wire.images.as_ref().is_none_or(Vec::is_empty) && !wire.model.is_empty() {
        return load_answer(res, &model, &wire.generation.keep_alive, stream, Kind::Generate);
    }
    match decode_generate(wire) {
        Ok(request) => generate_answer(res, &app, request, Kind::Generate, &caller(depot)).await,
        Err(e) => write_error(res, &e, &model),
    }
}

/// An empty chat or prompt only loads (or, with `keep_alive: 0`, unloads) a model in
/// Ollama; there is nothing to load behind diglot, so it answers at once.
fn load_answer(res: &mut Response, model: &str, keep_alive: &Option<Value>, stream: bool, kind: Kind) {
    let unload = matches!(keep_alive, Some(Value::Number(n)) if n.as_f64() == Some(0.0))
        || matches!(keep_alive, Some(Value::String(s)) if s.trim_end_matches(|c: char| c.is_alphabetic()) == "0");
    let mut line = json!({"model": model, "created_at": now()});
    match kind {
        Kind::Chat => line["message"] = json!({"role": "assistant", "content": ""}),
        Kind::Generate => line["response"] = json!(""),
    }
    line["done"] = json!(true);
    line["done_reason"] = json!(if unload { "unload" } else { "load" });
    if stream {
        write_bytes(res, 200, "application/x-ndjson", format!("{line}\n"));
    } else {
        write_json(res, 200, &line);
    }
}

/// Streams when the client streams; otherwise asks the upstream for the whole answer
/// (wire-formats §4.3), so usage is the upstream's own even where it reports none in
/// streams, and nothing is paid for a stream no one reads.
async fn generate_answer(res: &mut Response, app: &App, request: ChatRequest, kind: Kind, caller: &Caller) {
    let started = Instant::now();
    let mut events = match app.gateway.chat(&request, caller).await {
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

fn decode_chat(wire: wire::ChatRequest) -> Result<ChatRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "model is required"));
    }
    let messages = wire
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| decode_message(i, m))
        .collect::<Result<_, _>>()?;
    let tools = wire
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(|t| Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t.function.parameters,
            strict: None,
        })
        .collect();
    decode_generation(wire.model, Input::Messages(messages), tools, wire.generation)
}

/// The fields chat and generate share, into one IR request.
fn decode_generation(model: String, input: Input, tools: Vec<Tool>, g: wire::Generation) -> Result<ChatRequest, Error> {
    let (sampling, extra) = decode::options(g.options)?;
    Ok(ChatRequest {
        model,
        input,
        tools,
        response_format: g.format.map(decode::format).transpose()?.flatten(),
        sampling,
        reasoning: g.think.as_ref().map(decode::think).transpose()?.flatten(),
        logprobs: g.logprobs.unwrap_or(false),
        top_logprobs: g.top_logprobs,
        stream: g.stream != Some(false),
        n: 1,
        keep_alive: g.keep_alive,
        truncate: g.truncate,
        shift: g.shift,
        extra,
        ..Default::default()
    })
}

fn decode_message(i: usize, m: wire::Message) -> Result<Message, Error> {
    let role = match m.role.to_lowercase().as_str() {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(Error::invalid_field(
                &format!("messages[{i}].role"),
                format!("unknown role '{other}': use system, user, assistant or tool"),
            ));
        }
    };
    let mut parts = vec![Part::Text(m.content)];
    parts.extend(images(m.images).into_iter().map(Part::Image));
    let tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall {
            id: c.id.filter(|id| !id.is_empty()).unwrap_or_else(crate::ir::new_call_id),
            name: c.function.name,
            arguments: match c.function.arguments {
                Value::Null => "{}".into(),
                Value::String(s) => s,
                other => other.to_string(),
            },
        })
        .collect();
    Ok(Message {
        role,
        parts,
        tool_calls,
        tool_call_id: m.tool_call_id,
        name: m.tool_name,
        reasoning: m.thinking,
    })
}

fn images(images: Option<Vec<String>>) -> Vec<Image> {
    images
        .unwrap_or_default()
        .into_iter()
        .map(|base64| Image::Data { mime: None, base64 })
        .collect()
}

fn decode_generate(wire: wire::GenerateRequest) -> Result<ChatRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "model is required"));
    }
    if wire.raw == Some(true) && (wire.template.is_some() || wire.system.is_some() || wire.context.is_some()) {
        return Err(Error::bad_request(
            "raw mode does not support template, system, or context",
        ));
    }
    let input = Input::Prompt(Prompt {
        text: wire.prompt,
        suffix: wire.suffix.filter(|s| !s.is_empty()),
        system: wire.system.filter(|s| !s.is_empty()),
        raw: Some(wire.raw.unwrap_or(false)),
        images: images(wire.images),
    });
    decode_generation(wire.model, input, Vec::new(), wire.generation)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Chat,
    Generate,
}

/// Encodes IR events as Ollama chunks. Tool calls are sent whole, one per line with a
/// distinct `function.index` and object arguments (Zed reads one call per chunk); the
/// last line carries `done_reason` and integer metrics, measured here when the
/// upstream reports none (Open WebUI divides by them).
struct LineEncoder {
    model: String,
    kind: Kind,
    started: Instant,
    first_output: Option<Instant>,
    /// Tool-call pieces, assembled until the answer ends.
    calls: ChatResponse,
    pending_logprobs: Vec<TokenLogprob>,
    usage: Usage,
    /// `{"model":…,"created_at":"`: the same for every text line of the stream.
    text_prefix: Vec<u8>,
}

impl LineEncoder {
    fn new(model: &str, kind: Kind, started: Instant) -> Self {
        Self {
            model: model.to_owned(),
            kind,
            started,
            first_output: None,
            calls: ChatResponse::default(),
            pending_logprobs: Vec::new(),
            usage: Usage::default(),
            text_prefix: Vec::new(),
        }
    }

    /// The lines for one event (none for events that only update state). Notes when
    /// output began: the split between prompt and generation time.
    fn encode(&mut self, event: ChatEvent) -> Option<Bytes> {
        if matches!(
            event,
            ChatEvent::Text(_) | ChatEvent::Reasoning(_) | ChatEvent::ToolCall { .. }
        ) {
            self.first_output.get_or_insert_with(Instant::now);
        }
        let mut out = Vec::new();
        match event {
            ChatEvent::Text(text) if self.pending_logprobs.is_empty() => self.text_line(&mut out, &text),
            ChatEvent::Text(text) => self.line(&mut out, text, None, None, None),
            ChatEvent::Reasoning(thinking) => self.line(&mut out, String::new(), Some(thinking), None, None),
            call @ ChatEvent::ToolCall { .. } => self.calls.push(call),
            ChatEvent::Logprobs(logprobs) => self.pending_logprobs.extend(logprobs),
            ChatEvent::Usage(usage) => self.usage = usage,
            ChatEvent::Finish(reason) => {
                for (index, call) in std::mem::take(&mut self.calls.tool_calls).into_iter().enumerate() {
                    self.line(&mut out, String::new(), None, Some(vec![tool_call(index, call)]), None);
                }
                self.line(&mut out, String::new(), None, None, Some(reason));
            }
        }
        (!out.is_empty()).then(|| out.into())
    }

    /// A line of plain text, the bulk of every stream: written straight, byte for byte
    /// what `line` would serialize (a test holds them equal), around a prefix rendered
    /// once per stream, without building a chunk (its flattened ending makes serde write
    /// it as a map).
    fn text_line(&mut self, out: &mut Vec<u8>, text: &str) {
        if self.text_prefix.is_empty() {
            let mut prefix = b"{\"model\":".to_vec();
            serde_json::to_writer(&mut prefix, &self.model).expect("strings serialize");
            prefix.extend_from_slice(b",\"created_at\":\"");
            self.text_prefix = prefix;
        }
        let start = out.len();
        out.extend_from_slice(&self.text_prefix);
        out.extend_from_slice(now().as_bytes());
        out.extend_from_slice(match self.kind {
            Kind::Chat => b"\",\"message\":{\"role\":\"assistant\",\"content\":".as_slice(),
            Kind::Generate => b"\",\"response\":".as_slice(),
        });
        serde_json::to_writer(&mut *out, text).expect("strings serialize");
        out.extend_from_slice(match self.kind {
            Kind::Chat => b"},\"done\":false}\n".as_slice(),
            Kind::Generate => b",\"done\":false}\n".as_slice(),
        });
        debug!(target: "diglot::wire", line = %String::from_utf8_lossy(&out[start..out.len() - 1]), "ollama chunk");
    }

    fn line(
        &mut self,
        out: &mut Vec<u8>,
        text: String,
        thinking: Option<String>,
        calls: Option<Vec<wire::ToolCall>>,
        finish: Option<FinishReason>,
    ) {
        let logprobs = Some(std::mem::take(&mut self.pending_logprobs))
            .filter(|l| !l.is_empty())
            .map(wire_logprobs);
        let end = finish.map(|reason| self.ending(reason)).unwrap_or_default();
        let start = out.len();
        let written = match self.kind {
            Kind::Chat => serde_json::to_writer(
                &mut *out,
                &wire::ChatChunk {
                    model: self.model.clone(),
                    created_at: now(),
                    message: Some(wire::Message {
                        role: "assistant".into(),
                        content: text,
                        thinking,
                        tool_calls: calls,
                        ..Default::default()
                    }),
                    end,
                    logprobs,
                    error: None,
                },
            ),
            Kind::Generate => serde_json::to_writer(
                &mut *out,
                &wire::GenerateChunk {
                    model: self.model.clone(),
                    created_at: now(),
                    response: text,
                    thinking,
                    end,
                    logprobs,
                    error: None,
                },
            ),
        };
        written.expect("chunks serialize");
        out.push(b'\n');
        debug!(target: "diglot::wire", line = %String::from_utf8_lossy(&out[start..out.len() - 1]), "ollama chunk");
    }

    /// `done`, `done_reason` and every metric, as integers.
    fn ending(&self, reason: FinishReason) -> wire::Ending {
        let now = Instant::now();
        let nanos = |d: std::time::Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        let eval_count = self.usage.completion_tokens.unwrap_or(0);
        let timings = self.usage.timings.unwrap_or_else(|| {
            let first = self.first_output.unwrap_or(now);
            crate::ir::Timings {
                total_ns: nanos(now - self.started),
                load_ns: 0,
                prompt_eval_ns: nanos(first - self.started),
                eval_ns: nanos(now - first),
            }
        });
        wire::Ending {
            done: true,
            done_reason: Some(match reason {
                FinishReason::Length => "length".into(),
                _ => "stop".into(),
            }),
            total_duration: Some(timings.total_ns),
            load_duration: Some(timings.load_ns),
            // Counts the upstream did not report are left out (clients read that as 0).
            prompt_eval_count: self.usage.prompt_tokens,
            prompt_eval_duration: Some(timings.prompt_eval_ns),
            eval_count: self.usage.completion_tokens,
            // Clients divide by it: never 0 when tokens were generated.
            eval_duration: Some(if eval_count > 0 {
                timings.eval_ns.max(1)
            } else {
                timings.eval_ns
            }),
        }
    }

    /// The whole answer as one object (`stream: false`).
    fn whole(&mut self, answer: ChatResponse) -> Vec<u8> {
        self.usage = answer.usage.clone();
        // A whole answer does not show when output began. Without the upstream's timings,
        // the whole wait counts as generation: prompt time 0 is "unknown" to clients (Open
        // WebUI shows N/A), and the tokens per second they derive is a lower bound.
        self.first_output = Some(self.started);
        let reason = answer.finish.unwrap_or(FinishReason::Stop);
        let end = self.ending(reason);
        let logprobs = Some(answer.logprobs).filter(|l| !l.is_empty()).map(wire_logprobs);
        let thinking = Some(answer.reasoning).filter(|t| !t.is_empty());
        match self.kind {
            Kind::Chat => {
                let calls: Vec<wire::ToolCall> = answer
                    .tool_calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| tool_call(i, c))
                    .collect();
                let message = wire::Message {
                    role: "assistant".into(),
                    content: answer.text,
                    thinking,
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    ..Default::default()
                };
                to_vec(&wire::ChatChunk {
                    model: self.model.clone(),
                    created_at: now(),
                    message: Some(message),
                    end,
                    logprobs,
                    error: None,
                })
            }
            Kind::Generate => to_vec(&wire::GenerateChunk {
                model: self.model.clone(),
                created_at: now(),
                response: answer.text,
                thinking,
                end,
                logprobs,
                error: None,
            }),
        }
    }
}

fn to_vec(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).expect("chunks serialize")
}

/// A whole tool call with object arguments; unparsable argument text is kept under
/// `_raw` rather than dropped (clients iterate the arguments as a map).
fn tool_call(index: usize, call: ToolCall) -> wire::ToolCall {
    let arguments = match call.arguments.trim() {
        "" => json!({}),
        text => serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| {
                warn!(tool = %call.name, "tool call arguments are not a JSON object; sent as _raw");
                json!({"_raw": text})
            }),
    };
    wire::ToolCall {
        id: Some(call.id).filter(|id| !id.is_empty()),
        function: wire::ToolCallFunction {
            index: Some(index as u32),
            name: call.name,
            arguments,
        },
    }
}

fn wire_logprobs(logprobs: Vec<TokenLogprob>) -> Vec<wire::Logprob> {
    logprobs
        .into_iter()
        .map(|l| wire::Logprob {
            token: l.token,
            logprob: l.logprob,
            bytes: l.bytes,
            top_logprobs: Some(
                l.top
                    .into_iter()
                    .map(|t| wire::TopLogprob {
                        token: t.token,
                        logprob: t.logprob,
                        bytes: t.bytes,
                    })
                    .collect::<Vec<_>>(),
            )
            .filter(|t| !t.is_empty()),
        })
        .collect()
}

/// The NDJSON body. An error after the stream started is a final `{"error":...}` line.
fn ndjson(mut encoder: LineEncoder, events: crate::ir::ChatStream) -> BoxStream<'static, Result<Bytes, Infallible>> {
    Box::pin(async_stream::stream! {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => if let Some(lines) = encoder.encode(event) { yield Ok(lines) },
                Err(error) => {
                    let line = serde_json::to_string(&wire::ErrorBody { error: message(&error, &encoder.model) }).unwrap_or_default();
                    yield Ok(Bytes::from(format!("{line}\n")));
                    return;
                }
            }
        }
    })
}

// ---- embeddings ----

#[handler]
async fn embed(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let wire: wire::EmbedRequest = match read_json(req, app.config.max_body_bytes).await {
        Ok(w) => w,
        Err(e) => return write_error(res, &e, ""),
    };
    let model = wire.model.clone();
    let inputs = match wire.input {
        Value::String(s) => vec![s],
        Value::Array(items) => match items
            .into_iter()
            .map(|v| if let Value::String(s) = v { Some(s) } else { None })
            .collect()
        {
            Some(inputs) => inputs,
            None => return write_error(res, &Error::invalid_field("input", "invalid input type"), &model),
        },
        Value::Null => Vec::new(),
        _ => return write_error(res, &Error::invalid_field("input", "invalid input type"), &model),
    };
    if model.is_empty() {
        return write_error(res, &Error::invalid_field("model", "model is required"), "");
    }
    if inputs.is_empty() {
        return write_json(
            res,
            200,
            &wire::EmbedResponse {
                model,
                ..Default::default()
            },
        );
    }
    let started = Instant::now();
    let request = EmbedRequest {
        model: model.clone(),
        inputs,
        dimensions: wire.dimensions,
        truncate: wire.truncate,
        keep_alive: wire.keep_alive,
        options: wire.options,
    };
    match app.gateway.embed(&request, &caller(depot)).await {
        Ok(answer) => {
            let total = answer
                .total_duration_ns
                .unwrap_or_else(|| started.elapsed().as_nanos() as u64);
            let body = wire::EmbedResponse {
                model,
                embeddings: answer.vectors.into_iter().map(normalized).collect(),
                total_duration: Some(total),
                load_duration: Some(0),
                prompt_eval_count: answer.prompt_tokens,
            };
            write_json(res, 200, &body);
        }
        Err(e) => write_error(res, &e, &model),
    }
}

/// Ollama L2-normalises `/api/embed` vectors; other upstreams may not.
fn normalized(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && (norm - 1.0).abs() > 1e-6 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// The legacy single-prompt endpoint: `{"embedding":[...]}`, not normalised, no usage.
#[handler]
async fn embeddings(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    #[derive(serde::Deserialize)]
    struct Legacy {
        #[serde(default)]
        model: String,
        #[serde(default)]
        prompt: String,
        #[serde(default)]
        options: Map<String, Value>,
        #[serde(default)]
        keep_alive: Option<Value>,
    }
    let app = app(depot);
    let wire: Legacy = match read_json(req, app.config.max_body_bytes).await {
        Ok(w) => w,
        Err(e) => return write_error(res, &e, ""),
    };
    if wire.prompt.is_empty() {
        return write_json(res, 200, &json!({"embedding": []}));
    }
    let request = EmbedRequest {
        model: wire.model.clone(),
        inputs: vec![wire.prompt],
        keep_alive: wire.keep_alive,
        options: wire.options,
        ..Default::default()
    };
    match app.gateway.embed(&request, &caller(depot)).await {
        Ok(answer) => write_json(
            res,
            200,
            &json!({"embedding": answer.vectors.into_iter().next().unwrap_or_default()}),
        ),
        Err(e) => write_error(res, &e, &wire.model),
    }
}

// ---- model management ----

/// `/api/pull` of a model the upstream serves: a short success progress stream (Home
/// Assistant, Codex and Kerlig pull before use). Anything else goes to the fallback.
#[handler]
async fn pull(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    #[derive(serde::Deserialize)]
    struct Pull {
        #[serde(flatten)]
        name: ModelName,
        #[serde(default)]
        stream: Option<bool>,
    }
    let body: Pull = match read_json(req, app.config.max_body_bytes).await {
        Ok(p) => p,
        Err(e) => return write_error(res, &e, ""),
    };
    let stream = body.stream != Some(false);
    let name = match body.name.get() {
        Ok(name) => name,
        Err(e) => return write_error(res, &e, ""),
    };
    let who = caller(depot);
    let card = match app.gateway.model(&name, &who).await {
        Ok(card) => card,
        Err(e) if e.kind == ErrorKind::Forbidden => return write_error(res, &e, &name),
        Err(_) => {
            if let Err(e) = may_manage(&who) {
                return write_error(res, &e, &name);
            }
            let read = req.payload_with_max_size(app.config.max_body_bytes).await.ok().cloned();
            return forward(req, res, &app, "pull", read).await;
        }
    };
    let digest = format!(
        "sha256:{}",
        card.digest
            .clone()
            .unwrap_or_else(|| hex::encode(Sha256::digest(card.id.as_bytes())))
    );
    let steps = [
        json!({"status": "pulling manifest"}),
        json!({"status": "verifying sha256 digest", "digest": digest}),
        json!({"status": "writing manifest"}),
        json!({"status": "success"}),
    ];
    if stream {
        let body: String = steps.iter().map(|s| format!("{s}\n")).collect();
        write_bytes(res, 200, "application/x-ndjson", body);
    } else {
        write_json(res, 200, &json!({"status": "success"}));
    }
}

/// Model management changes the upstream for everyone: with tokens on, only admins.
fn may_manage(caller: &Caller) -> Result<(), Error> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Forbidden,
            "managing models (pull, push, create, copy, delete) needs an admin token",
        ))
    }
}

#[handler]
async fn manage(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    if let Err(e) = may_manage(&caller(depot)) {
        return write_error(res, &e, "");
    }
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
    forward(req, res, &app, &what, None).await;
}

/// Passes a model-management call through to the fallback Ollama. Both bodies stream:
/// blob uploads and pull progress can be gigabytes and minutes long.
async fn forward(req: &mut Request, res: &mut Response, app: &App, what: &str, read: Option<Bytes>) {
    let Some(fallback) = app.fallback_url() else {
        let message = format!(
            "diglot cannot {what} models on its upstream; set ollama.fallback_url to forward model management to an Ollama server"
        );
        return write_json(
            res,
            if what == "pull" { 404 } else { 501 },
            &wire::ErrorBody { error: message },
        );
    };
    // A pull was already read to look the model up; anything else is passed on unread.
    let body = match read {
        Some(read) => reqwest::Body::from(read),
        None => reqwest::Body::wrap_stream(
            req.take_body()
                .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) }),
        ),
    };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = &path[path.find("/api/").unwrap_or(0)..];
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut upstream = app
        .http
        .request(method, format!("{}{path}", fallback.trim_end_matches('/')))
        .body(body);
    if let Some(content_type) = req.headers().get("content-type") {
        upstream = upstream.header("content-type", content_type.as_bytes());
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = salvo::http::StatusCode::from_u16(answer.status().as_u16());
            res.status_code(status.unwrap_or(salvo::http::StatusCode::BAD_GATEWAY));
            if let Some(content_type) = answer.headers().get("content-type").and_then(|v| v.to_str().ok()) {
                let _ = res.add_header("content-type", content_type.to_owned(), true);
            }
            res.stream(answer.bytes_stream());
        }
        Err(e) => {
            let error = format!(
                "cannot reach the Ollama at {fallback}: {}",
                crate::protocol::http::root_cause(&e)
            );
            write_json(res, 502, &wire::ErrorBody { error });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_lines_are_what_serde_writes() {
        for kind in [Kind::Chat, Kind::Generate] {
            let mut encoder = LineEncoder::new("qwen3:8b \"q\"", kind, Instant::now());
            for text in [
                "Hello",
                "",
                "quote \" backslash \\ newline \n tab \t",
                "ünïcödé 🌍 \u{1}",
            ] {
                let (mut fast, mut slow) = (Vec::new(), Vec::new());
                encoder.text_line(&mut fast, text);
                encoder.line(&mut slow, text.to_owned(), None, None, None);
                // Byte for byte, but for the timestamps (both "now", nanoseconds apart).
                let stamped = |line: &[u8]| {
                    let line = String::from_utf8(line.to_vec()).unwrap();
                    let at = line.find("\"created_at\":\"").unwrap() + "\"created_at\":\"".len();
                    let end = at + line[at..].find('"').unwrap();
                    format!("{}T{}", &line[..at], &line[end..])
                };
                assert_eq!(stamped(&fast), stamped(&slow), "{kind:?} {text:?}");
                assert_eq!(fast.last(), Some(&b'\n'));
            }
        }
    }

    #[test]
    fn names_always_carry_a_tag() {
        assert_eq!(tagged("gpt-4o", ":latest"), "gpt-4o:latest");
        assert_eq!(tagged("qwen3:8b", ":latest"), "qwen3:8b");
        assert_eq!(tagged("gpt-4o", ":proxy"), "gpt-4o:proxy");
    }

    #[test]
    fn unparsable_tool_arguments_are_kept() {
        let call = tool_call(
            2,
            ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "{oops".into(),
            },
        );
        assert_eq!(call.function.arguments, json!({"_raw": "{oops"}));
        assert_eq!(call.function.index, Some(2));
    }

    #[test]
    fn vectors_are_normalised() {
        let v = normalized(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn ending_has_integer_metrics_even_without_upstream_timings() {
        let mut encoder = LineEncoder::new("m", Kind::Chat, Instant::now());
        encoder.usage.completion_tokens = Some(3);
        let end = encoder.ending(FinishReason::ToolCalls);
        assert_eq!(end.done_reason.as_deref(), Some("stop"));
        assert!(end.eval_duration.unwrap() > 0);
        assert_eq!(end.load_duration, Some(0));
    }
}
