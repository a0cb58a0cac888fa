//! Frontend: OpenAI's `/v1` routes. Decodes wire requests into the IR, and encodes IR
//! events as SSE chunks or one JSON body, exactly as OpenAI shapes them.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, future};
use salvo::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::debug;

use super::wire;
use crate::config::OpenAiConfig;
use crate::gateway::auth::Caller;
use crate::ir::{
    ChatEvent, ChatRequest, ChatResponse, ChatStream, EmbedRequest, Error, ErrorKind, FinishReason, Input, Message,
    Part, Prompt, Reasoning, ResponseFormat, Role, Sampling, TokenLogprob, Tool, ToolCall, ToolChoice, Usage,
    random_id,
};
use crate::protocol::images::parse_image_ref;
use crate::protocol::ollama;
use crate::server::{App, app, caller, error_headers, read_json, write_json, write_stream};

/// Most parallel answers one request may ask for (`n`, or prompts × `n`).
const MAX_CHOICES: u32 = 16;

/// The routes, relative to `/v1` (they are also mounted without it).
pub fn routes() -> Vec<Router> {
    vec![
        Router::with_path("chat/completions").post(chat_completions),
        Router::with_path("completions").post(completions),
        Router::with_path("embeddings").post(embeddings),
        Router::with_path("models").get(list_models),
        Router::with_path("models/{**id}").get(get_model),
    ]
}

/// `GET /v1`: a quick "is this an OpenAI-compatible server" probe.
#[handler]
pub async fn connection_test(res: &mut Response) {
    write_json(res, 200, &json!({"object": "diglot", "status": "ok"}));
}

/// Renders an IR error as OpenAI does: `{"error":{"message","type","param","code"}}`.
pub fn write_error(res: &mut Response, error: &Error) {
    error_headers(res, error);
    write_json(res, error.status(), &error_body(error));
}

fn error_body(error: &Error) -> wire::ErrorBody {
    let (kind, code) = match error.kind {
        ErrorKind::BadRequest => ("invalid_request_error", None),
        ErrorKind::Unauthorized => ("authentication_error", Some("invalid_api_key")),
        ErrorKind::Forbidden => ("permission_error", None),
        ErrorKind::NotFound if error.param.as_deref() == Some("model") => {
            ("invalid_request_error", Some("model_not_found"))
        }
        ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
        ErrorKind::PayloadTooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrorKind::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::UpstreamUnavailable => ("api_error", Some("upstream_unavailable")),
        ErrorKind::UpstreamError { .. } => ("api_error", Some("upstream_error")),
        ErrorKind::Timeout => ("api_error", Some("timeout")),
        ErrorKind::Unavailable => ("api_error", Some("service_unavailable")),
        ErrorKind::Internal => ("api_error", None),
    };
    // OpenAI names an exhausted quota in both fields.
    let (kind, code) = match error.code {
        Some("insufficient_quota") => ("insufficient_quota", Some("insufficient_quota")),
        Some(code) => (kind, Some(code)),
        None => (kind, code),
    };
    wire::ErrorBody {
        error: wire::ErrorObject {
            message: error.message.clone(),
            kind: Some(kind.into()),
            param: error.param.clone(),
            code: code.map(|c| json!(c)),
        },
    }
}

// ---- chat ----

#[handler]
async fn chat_completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let who = caller(depot);
    let result = async {
        let wire: wire::ChatCompletionRequest = read_json(req, app.config.max_body_bytes).await?;
        let include_usage = wire
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let request = decode_chat(wire)?;
        let streams = start(&app, std::iter::repeat_n(&request, request.n as usize), &who).await?;
        Ok::<_, Error>((request, include_usage, streams))
    }
    .await;
    match result {
        Err(e) => write_error(res, &e),
        Ok((request, include_usage, streams)) => {
            let encoder = ChunkEncoder::new(
                &app.config.openai,
                &request.model,
                Kind::Chat,
                include_usage,
                streams.len(),
            );
            if request.stream {
                write_stream(res, "text/event-stream", sse(encoder, streams));
            } else {
                match collect(streams).await {
                    Ok(answers) => write_json(res, 200, &encoder.chat_completion(answers, request.logprobs)),
                    Err(e) => write_error(res, &e),
                }
            }
        }
    }
}

/// Starts every requested answer at once; the first failure cancels the others.
async fn start<'a>(
    app: &Arc<App>,
    requests: impl IntoIterator<Item = &'a ChatRequest>,
    caller: &Caller,
) -> Result<Vec<ChatStream>, Error> {
    future::try_join_all(requests.into_iter().map(|r| app.gateway.chat(r, caller))).await
}

async fn collect(streams: Vec<ChatStream>) -> Result<Vec<ChatResponse>, Error> {
    future::try_join_all(streams.into_iter().map(ChatResponse::collect)).await
}

fn decode_chat(wire: wire::ChatCompletionRequest) -> Result<ChatRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "'model' is required"));
    }
    if wire.messages.is_empty() {
        return Err(Error::invalid_field(
            "messages",
            "'messages' must contain at least one message",
        ));
    }
    let messages = wire
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| decode_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let tools = wire
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| decode_tool(i, t))
        .collect::<Result<_, _>>()?;
    let response_format = match (wire.response_format, wire.format) {
        (Some(format), _) => decode_response_format(format),
        (None, Some(format)) => ollama::decode::format(format)?,
        (None, None) => None,
    };
    let effort = wire.reasoning.and_then(|r| r.effort).or(wire.reasoning_effort);
    let reasoning = match (effort, wire.think) {
        (Some(effort), _) => Reasoning::from_effort(&effort).ok_or_else(|| {
            Error::invalid_field(
                "reasoning_effort",
                format!("invalid reasoning_effort '{effort}': use none, minimal, low, medium, high, xhigh or max"),
            )
        })?,
        (None, Some(think)) => ollama::decode::think(&think)?,
        (None, None) => None,
    };
    let (sampling, extra) = decode_sampling(
        wire.sampling,
        wire.options,
        [wire.max_completion_tokens, wire.max_tokens],
    )?;
    Ok(ChatRequest {
        model: wire.model,
        input: Input::Messages(messages),
        tools,
        tool_choice: decode_tool_choice(wire.tool_choice)?,
        response_format,
        sampling,
        reasoning,
        logprobs: wire.logprobs.unwrap_or(false),
        top_logprobs: decode_top_logprobs(wire.top_logprobs)?,
        stream: wire.stream.unwrap_or(false),
        n: decode_n(wire.n, 1)?,
        keep_alive: wire.keep_alive,
        extra,
        ..Default::default()
    })
}

fn decode_message(i: usize, m: wire::ChatMessage) -> Result<Message, Error> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        other => {
            return Err(Error::invalid_field(
                &format!("messages[{i}].role"),
                format!("unknown role '{other}': use system, developer, user, assistant or tool"),
            ));
        }
    };
    let parts = match m.content {
        None if role == Role::Assistant => Vec::new(),
        None => {
            return Err(Error::invalid_field(
                &format!("messages[{i}].content"),
                "'content' is required for this role",
            ));
        }
        Some(wire::Content::Text(text)) => vec![Part::Text(text)],
        Some(wire::Content::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| match part {
                wire::ContentPart::Text { text } | wire::ContentPart::Refusal { refusal: text } => Ok(Part::Text(text)),
                wire::ContentPart::ImageUrl { image_url } => {
                    parse_image_ref(image_url.url()).map(Part::Image).map_err(|e| Error {
                        param: Some(format!("messages[{i}].content[{j}].image_url")),
                        ..e
                    })
                }
                wire::ContentPart::InputAudio { .. } => Err(Error::invalid_field(
                    &format!("messages[{i}].content[{j}]"),
                    "audio input is not supported by this gateway",
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, call)| {
            let name = call.function.name.filter(|n| !n.is_empty()).ok_or_else(|| {
                Error::invalid_field(
                    &format!("messages[{i}].tool_calls[{j}].function.name"),
                    "a tool call needs a function name",
                )
            })?;
            let arguments = match call.function.arguments {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
            };
            Ok(ToolCall {
                id: call.id.unwrap_or_else(crate::ir::new_call_id),
                name,
                arguments,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Message {
        role,
        parts,
        tool_calls,
        tool_call_id: m.tool_call_id,
        name: m.name.filter(|_| role == Role::Tool),
        reasoning: m.reasoning_content.or(m.reasoning),
    })
}

fn decode_tool(i: usize, t: wire::ToolDefinition) -> Result<Tool, Error> {
    if t.kind != "function" {
        return Err(Error::invalid_field(
            &format!("tools[{i}].type"),
            format!("tools of type '{}' are not supported; use 'function'", t.kind),
        ));
    }
    Ok(Tool {
        name: t.function.name,
        description: t.function.description,
        parameters: t
            .function
            .parameters
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: t.function.strict,
    })
}

fn decode_tool_choice(choice: Option<Value>) -> Result<ToolChoice, Error> {
    let invalid = || {
        Error::invalid_field(
            "tool_choice",
            "tool_choice must be 'none', 'auto', 'required' or {\"type\":\"function\",\"function\":{\"name\":...}}",
        )
    };
    Ok(match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            _ => return Err(invalid()),
        },
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?;
                ToolChoice::Function(name.to_owned())
            }
            // Allowed-tools lists narrow nothing here; the model may use any tool sent.
            Some("allowed_tools") => ToolChoice::Auto,
            _ => return Err(invalid()),
        },
        Some(_) => return Err(invalid()),
    })
}

fn decode_response_format(format: wire::ResponseFormat) -> Option<ResponseFormat> {
    match format {
        wire::ResponseFormat::Text => None,
        wire::ResponseFormat::JsonObject => Some(ResponseFormat::Json),
        wire::ResponseFormat::JsonSchema { json_schema } => Some(ResponseFormat::JsonSchema {
            name: json_schema.name,
            schema: json_schema.schema.unwrap_or_else(|| json!({"type": "object"})),
            strict: json_schema.strict,
        }),
    }
}

/// Options from the top level and from `options`; the top level wins. Keys no typed
/// option knows are returned separately, to reach an Ollama upstream untouched.
fn decode_sampling(
    top: Sampling,
    options: Option<Map<String, Value>>,
    max_tokens: [Option<i64>; 2],
) -> Result<(Sampling, Map<String, Value>), Error> {
    let (from_options, extra) = match options {
        Some(options) => ollama::decode::options(options)?,
        None => Default::default(),
    };
    let mut sampling = top.or(from_options);
    if let Some(max) = max_tokens.into_iter().flatten().next() {
        sampling.max_tokens = Some(max);
    }
    Ok((sampling, extra))
}

fn decode_top_logprobs(top: Option<u32>) -> Result<Option<u32>, Error> {
    match top {
        Some(n) if n > 20 => Err(Error::invalid_field(
            "top_logprobs",
            "top_logprobs must be between 0 and 20",
        )),
        other => Ok(other),
    }
}

fn decode_n(n: Option<u32>, prompts: u32) -> Result<u32, Error> {
    let n = n.unwrap_or(1);
    if n == 0 || n * prompts > MAX_CHOICES {
        return Err(Error::invalid_field(
            "n",
            format!("n must be between 1 and {MAX_CHOICES} answers per request"),
        ));
    }
    Ok(n)
}

// ---- legacy completions ----

#[handler]
async fn completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let who = caller(depot);
    let result = async {
        let wire: wire::CompletionRequest = read_json(req, app.config.max_body_bytes).await?;
        let include_usage = wire
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let echo = wire.echo.unwrap_or(false);
        let requests = decode_completion(wire)?;
        let streams = start(&app, &requests, &who).await?;
        Ok::<_, Error>((requests, include_usage, echo, streams))
    }
    .await;
    let (requests, include_usage, echo, streams) = match result {
        Err(e) => return write_error(res, &e),
        Ok(ok) => ok,
    };
    let first = &requests[0];
    let mut encoder = ChunkEncoder::new(
        &app.config.openai,
        &first.model,
        Kind::Completion,
        include_usage,
        streams.len(),
    );
    let prompts: Vec<String> = requests
        .iter()
        .map(|r| match &r.input {
            Input::Prompt(p) if echo => p.text.clone(),
            _ => String::new(),
        })
        .collect();
    if first.stream {
        let echoes = prompts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .filter_map(|(i, p)| encoder.encode(i as u32, ChatEvent::Text(p)));
        let echoes: Vec<Bytes> = echoes.collect();
        write_stream(
            res,
            "text/event-stream",
            stream::iter(echoes.into_iter().map(Ok)).chain(sse(encoder, streams)),
        );
    } else {
        match collect(streams).await {
            Ok(mut answers) => {
                for (answer, prompt) in answers.iter_mut().zip(prompts) {
                    answer.text.insert_str(0, &prompt);
                }
                write_json(res, 200, &encoder.completion(answers, first.logprobs))
            }
            Err(e) => write_error(res, &e),
        }
    }
}

/// One IR request per prompt and per answer (`n`).
fn decode_completion(wire: wire::CompletionRequest) -> Result<Vec<ChatRequest>, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "'model' is required"));
    }
    let token_arrays = || {
        Error::invalid_field(
            "prompt",
            "token-array prompts are not supported: send the prompt as text",
        )
    };
    let prompts: Vec<String> = match wire.prompt {
        Value::String(s) => vec![s],
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|v| {
                if let Value::String(s) = v {
                    Ok(s)
                } else {
                    Err(token_arrays())
                }
            })
            .collect::<Result<_, _>>()?,
        Value::Array(_) => return Err(Error::invalid_field("prompt", "'prompt' must not be empty")),
        _ => return Err(token_arrays()),
    };
    let n = decode_n(wire.n, prompts.len() as u32)?;
    let (sampling, extra) = decode_sampling(wire.sampling, wire.options, [wire.max_tokens, None])?;
    let base = ChatRequest {
        model: wire.model,
        sampling,
        reasoning: wire.think.as_ref().map(ollama::decode::think).transpose()?.flatten(),
        logprobs: wire.logprobs.is_some_and(|n| n > 0),
        top_logprobs: decode_top_logprobs(wire.logprobs.filter(|&n| n > 0))?,
        stream: wire.stream.unwrap_or(false),
        n: 1,
        keep_alive: wire.keep_alive,
        extra,
        ..Default::default()
    };
    Ok(prompts
        .into_iter()
        .flat_map(|text| std::iter::repeat_n(text, n as usize))
        .map(|text| ChatRequest {
            input: Input::Prompt(Prompt {
                text,
                suffix: wire.suffix.clone(),
                ..Default::default()
            }),
            ..base.clone()
        })
        .collect())
}

// ---- encoding answers ----

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// Encodes IR events as OpenAI chunks: one id and one `created` for the whole answer,
/// `role` only in each choice's first delta, `finish_reason` in its own chunk, and the
/// usage chunk (`choices: []`) last when it was asked for.
struct ChunkEncoder {
    id: String,
    created: i64,
    model: String,
    fingerprint: String,
    kind: Kind,
    include_usage: bool,
    reasoning_content: bool,
    reasoning: bool,
    started: Vec<bool>,
    pending_logprobs: Vec<Vec<TokenLogprob>>,
    usage: Usage,
    /// `data: {"id":…,"choices":[{"index":`: the same for every text chunk of the stream.
    text_prefix: Vec<u8>,
}

impl ChunkEncoder {
    fn new(config: &OpenAiConfig, model: &str, kind: Kind, include_usage: bool, choices: usize) -> Self {
        Self {
            id: random_id(if kind == Kind::Chat { "chatcmpl-" } else { "cmpl-" }),
            created: chrono::Utc::now().timestamp(),
            model: model.to_owned(),
            fingerprint: config.system_fingerprint.clone(),
            kind,
            include_usage,
            reasoning_content: config.reasoning_fields.iter().any(|f| f == "reasoning_content"),
            reasoning: config.reasoning_fields.iter().any(|f| f == "reasoning"),
            started: vec![false; choices],
            pending_logprobs: vec![Vec::new(); choices],
            usage: Usage::default(),
            text_prefix: Vec::new(),
        }
    }

    /// The SSE frames for one event of choice `index` (none for events that only
    /// update state).
    fn encode(&mut self, index: u32, event: ChatEvent) -> Option<Bytes> {
        let i = index as usize;
        let mut out = Vec::new();
        if self.kind == Kind::Chat && !std::mem::replace(&mut self.started[i], true) {
            let role = wire::Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Default::default()
            };
            self.push_chat_chunk(&mut out, index, role, None, None);
        }
        let mut delta = wire::Delta::default();
        let mut finish = None;
        match event {
            ChatEvent::Text(text) if self.kind == Kind::Chat && self.pending_logprobs[i].is_empty() => {
                self.push_text_chunk(&mut out, index, &text);
                return finish_frames(out);
            }
            ChatEvent::Text(text) => delta.content = Some(text),
            ChatEvent::Reasoning(text) if self.kind == Kind::Chat => {
                delta.reasoning_content = self.reasoning_content.then(|| text.clone());
                delta.reasoning = self.reasoning.then_some(text);
            }
            ChatEvent::Reasoning(_) => return finish_frames(out),
            ChatEvent::ToolCall {
                index: call,
                id,
                name,
                arguments_delta,
            } => {
                let first = id.is_some() || name.is_some();
                delta.tool_calls = Some(vec![wire::ToolCall {
                    index: Some(call),
                    id,
                    kind: first.then(|| "function".into()),
                    function: wire::FunctionCall {
                        name,
                        arguments: Some(Value::String(arguments_delta)),
                    },
                }]);
            }
            ChatEvent::Logprobs(l) => {
                self.pending_logprobs[i].extend(l);
                return finish_frames(out);
            }
            ChatEvent::Usage(u) => {
                self.usage.add(&u);
                return finish_frames(out);
            }
            ChatEvent::Finish(reason) => finish = Some(finish_reason(reason)),
        }
        let logprobs = std::mem::take(&mut self.pending_logprobs[i]);
        match self.kind {
            Kind::Chat => self.push_chat_chunk(&mut out, index, delta, finish, Some(logprobs)),
            Kind::Completion => {
                let choice = wire::CompletionChoice {
                    index,
                    text: delta.content.unwrap_or_default(),
                    logprobs: legacy_logprobs(&logprobs),
                    finish_reason: finish.map(str::to_owned),
                };
                self.push_frame(&mut out, &self.completion_chunk(vec![choice], self.usage_placeholder()));
            }
        }
        finish_frames(out)
    }

    fn push_chat_chunk(
        &self,
        out: &mut Vec<u8>,
        index: u32,
        delta: wire::Delta,
        finish: Option<&str>,
        logprobs: Option<Vec<TokenLogprob>>,
    ) {
        let chunk = wire::ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(self.fingerprint.clone()),
            choices: vec![wire::ChunkChoice {
                index,
                delta,
                logprobs: logprobs.filter(|l| !l.is_empty()).map(|l| chat_logprobs(&l)),
                finish_reason: finish.map(str::to_owned),
            }],
            usage: self.usage_placeholder(),
        };
        self.push_frame(out, &chunk);
    }

    /// A chunk of plain text, the bulk of every stream: written straight, byte for byte
    /// what `push_chat_chunk` would serialize (a test holds them equal), around a prefix
    /// rendered once per stream.
    fn push_text_chunk(&mut self, out: &mut Vec<u8>, index: u32, text: &str) {
        if self.text_prefix.is_empty() {
            let mut prefix = b"data: {\"id\":".to_vec();
            serde_json::to_writer(&mut prefix, &self.id).expect("strings serialize");
            prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            prefix.extend_from_slice(self.created.to_string().as_bytes());
            prefix.extend_from_slice(b",\"model\":");
            serde_json::to_writer(&mut prefix, &self.model).expect("strings serialize");
            prefix.extend_from_slice(b",\"system_fingerprint\":");
            serde_json::to_writer(&mut prefix, &self.fingerprint).expect("strings serialize");
            prefix.extend_from_slice(b",\"choices\":[{\"index\":");
            self.text_prefix = prefix;
        }
        let start = out.len();
        out.extend_from_slice(&self.text_prefix);
        out.extend_from_slice(index.to_string().as_bytes());
        out.extend_from_slice(b",\"delta\":{\"content\":");
        serde_json::to_writer(&mut *out, text).expect("strings serialize");
        out.extend_from_slice(if self.include_usage {
            b"},\"finish_reason\":null}],\"usage\":null}\n\n".as_slice()
        } else {
            b"},\"finish_reason\":null}]}\n\n".as_slice()
        });
        debug!(target: "diglot::wire", frame = %String::from_utf8_lossy(&out[start..out.len() - 2]), "openai chunk");
    }

    fn completion_chunk(
        &self,
        choices: Vec<wire::CompletionChoice>,
        usage: Option<Option<wire::Usage>>,
    ) -> wire::Completion {
        wire::Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(self.fingerprint.clone()),
            choices,
            usage,
        }
    }

    fn usage_placeholder(&self) -> Option<Option<wire::Usage>> {
        self.include_usage.then_some(None)
    }

    fn push_frame(&self, out: &mut Vec<u8>, body: &impl Serialize) {
        out.extend_from_slice(b"data: ");
        serde_json::to_writer(&mut *out, body).expect("chunks serialize");
        out.extend_from_slice(b"\n\n");
        debug!(target: "diglot::wire", frame = %String::from_utf8_lossy(&out[..out.len() - 2]), "openai chunk");
    }

    /// The usage chunk (when asked for and known) and `[DONE]`.
    fn end(&self) -> Bytes {
        let mut out = Vec::new();
        if self.include_usage && known(&self.usage) {
            let usage = Some(Some(wire_usage(&self.usage)));
            match self.kind {
                Kind::Chat => {
                    let chunk = wire::ChatCompletionChunk {
                        id: self.id.clone(),
                        object: "chat.completion.chunk".into(),
                        created: self.created,
                        model: self.model.clone(),
                        system_fingerprint: Some(self.fingerprint.clone()),
                        choices: Vec::new(),
                        usage,
                    };
                    self.push_frame(&mut out, &chunk);
                }
                Kind::Completion => self.push_frame(&mut out, &self.completion_chunk(Vec::new(), usage)),
            }
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out.into()
    }

    fn chat_completion(&self, answers: Vec<ChatResponse>, logprobs: bool) -> wire::ChatCompletion {
        let mut usage = Usage::default();
        let choices = answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| {
                usage.add(&answer.usage);
                let reasoning = (!answer.reasoning.is_empty()).then_some(answer.reasoning);
                let tool_calls: Vec<wire::ToolCall> = answer
                    .tool_calls
                    .into_iter()
                    .map(|c| wire::ToolCall {
                        index: None,
                        id: Some(c.id),
                        kind: Some("function".into()),
                        function: wire::FunctionCall {
                            name: Some(c.name),
                            arguments: Some(Value::String(c.arguments)),
                        },
                    })
                    .collect();
                let content = if answer.text.is_empty() && !tool_calls.is_empty() {
                    None
                } else {
                    Some(answer.text)
                };
                wire::Choice {
                    index: i as u32,
                    message: wire::ResponseMessage {
                        role: "assistant".into(),
                        content,
                        refusal: None,
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        reasoning_content: reasoning.clone().filter(|_| self.reasoning_content),
                        reasoning: reasoning.filter(|_| self.reasoning),
                    },
                    logprobs: logprobs.then(|| chat_logprobs(&answer.logprobs)),
                    finish_reason: Some(finish_reason(answer.finish.unwrap_or(FinishReason::Stop)).into()),
                }
            })
            .collect();
        wire::ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(self.fingerprint.clone()),
            choices,
            usage: known(&usage).then(|| wire_usage(&usage)),
        }
    }

    fn completion(&self, answers: Vec<ChatResponse>, logprobs: bool) -> wire::Completion {
        let mut usage = Usage::default();
        let choices = answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| {
                usage.add(&answer.usage);
                wire::CompletionChoice {
                    index: i as u32,
                    text: answer.text,
                    logprobs: if logprobs {
                        legacy_logprobs(&answer.logprobs)
                    } else {
                        None
                    },
                    finish_reason: Some(finish_reason(answer.finish.unwrap_or(FinishReason::Stop)).into()),
                }
            })
            .collect();
        self.completion_chunk(choices, known(&usage).then(|| Some(wire_usage(&usage))))
    }
}

fn finish_frames(out: Vec<u8>) -> Option<Bytes> {
    (!out.is_empty()).then(|| out.into())
}

/// Merges the choices' event streams into one SSE body. An error after the stream
/// started is sent as a final `data: {"error":...}` event, never as a cut connection.
fn sse(mut encoder: ChunkEncoder, streams: Vec<ChatStream>) -> BoxStream<'static, Result<Bytes, Infallible>> {
    // One choice (nearly always) needs no merging: select_all costs a poll of its
    // FuturesUnordered per event.
    let tagged: BoxStream<'static, (u32, Result<ChatEvent, Error>)> = if let [_] = streams.as_slice() {
        let only = streams.into_iter().next().expect("one stream");
        Box::pin(only.map(|event| (0, event)))
    } else {
        Box::pin(stream::select_all(
            streams
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.map(move |e| (i as u32, e))),
        ))
    };
    Box::pin(async_stream::stream! {
        futures::pin_mut!(tagged);
        while let Some((index, event)) = tagged.next().await {
            match event {
                Ok(event) => if let Some(frame) = encoder.encode(index, event) { yield Ok(frame) },
                Err(error) => {
                    let body = serde_json::to_string(&error_body(&error)).unwrap_or_default();
                    yield Ok(Bytes::from(format!("data: {body}\n\n")));
                    return;
                }
            }
        }
        yield Ok(encoder.end());
    })
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Error => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// Whether the upstream reported any usage; unknown usage is left out, never zeroed.
fn known(usage: &Usage) -> bool {
    usage.prompt_tokens.is_some() || usage.completion_tokens.is_some()
}

fn wire_usage(usage: &Usage) -> wire::Usage {
    wire::Usage {
        prompt_tokens: usage.prompt_tokens.unwrap_or(0),
        completion_tokens: usage.completion_tokens.unwrap_or(0),
        total_tokens: usage.total_tokens(),
        prompt_tokens_details: usage
            .cached_tokens
            .map(|c| wire::PromptTokensDetails { cached_tokens: Some(c) }),
    }
}

fn chat_logprobs(logprobs: &[TokenLogprob]) -> wire::ChoiceLogprobs {
    wire::ChoiceLogprobs {
        content: Some(
            logprobs
                .iter()
                .map(|l| wire::TokenLogprob {
                    token: l.token.clone(),
                    logprob: l.logprob,
                    bytes: Some(l.bytes.clone().unwrap_or_else(|| l.token.as_bytes().to_vec())),
                    top_logprobs: l
                        .top
                        .iter()
                        .map(|t| wire::TopLogprob {
                            token: t.token.clone(),
                            logprob: t.logprob,
                            bytes: Some(t.bytes.clone().unwrap_or_else(|| t.token.as_bytes().to_vec())),
                        })
                        .collect(),
                })
                .collect(),
        ),
        refusal: None,
    }
}

/// The legacy completions shape: parallel arrays plus one map of top tokens per token.
fn legacy_logprobs(logprobs: &[TokenLogprob]) -> Option<Value> {
    if logprobs.is_empty() {
        return None;
    }
    let mut offset = 0;
    let offsets: Vec<usize> = logprobs
        .iter()
        .map(|l| {
            let at = offset;
            offset += l.token.len();
            at
        })
        .collect();
    Some(json!({
        "tokens": logprobs.iter().map(|l| &l.token).collect::<Vec<_>>(),
        "token_logprobs": logprobs.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": logprobs.iter().map(|l| l.top.iter().map(|t| (t.token.clone(), json!(t.logprob))).collect::<Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    }))
}

// ---- embeddings ----

#[handler]
async fn embeddings(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let app = app(depot);
    let who = caller(depot);
    let result = async {
        let wire: wire::EmbeddingRequest = read_json(req, app.config.max_body_bytes).await?;
        let base64 = match wire.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(Error::invalid_field(
                    "encoding_format",
                    format!("encoding_format '{other}' is not 'float' or 'base64'"),
                ));
            }
        };
        let request = decode_embedding(wire)?;
        let answer = app.gateway.embed(&request, &who).await?;
        Ok((request.model, base64, answer))
    }
    .await;
    match result {
        Err(e) => write_error(res, &e),
        Ok((model, base64, answer)) => {
            let tokens = answer.prompt_tokens.unwrap_or(0);
            let data = answer
                .vectors
                .into_iter()
                .enumerate()
                .map(|(i, vector)| wire::Embedding {
                    object: "embedding".into(),
                    index: i as u32,
                    embedding: encode_vector(vector, base64),
                })
                .collect();
            let body = wire::EmbeddingResponse {
                object: "list".into(),
                data,
                model,
                usage: wire::EmbeddingUsage {
                    prompt_tokens: tokens,
                    total_tokens: tokens,
                },
            };
            write_json(res, 200, &body);
        }
    }
}

fn decode_embedding(wire: wire::EmbeddingRequest) -> Result<EmbedRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "'model' is required"));
    }
    let token_arrays = || Error::invalid_field("input", "token-array inputs are not supported: send the input as text");
    let inputs = match wire.input {
        Value::String(s) => vec![s],
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|v| {
                if let Value::String(s) = v {
                    Ok(s)
                } else {
                    Err(token_arrays())
                }
            })
            .collect::<Result<_, _>>()?,
        Value::Array(_) => return Err(Error::invalid_field("input", "'input' must not be empty")),
        _ => return Err(token_arrays()),
    };
    Ok(EmbedRequest {
        model: wire.model,
        inputs,
        dimensions: wire.dimensions,
        ..Default::default()
    })
}

/// A float array, or base64 of the little-endian float32 bytes (what the SDKs ask for).
fn encode_vector(vector: Vec<f32>, base64: bool) -> Value {
    if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
        Value::String(STANDARD.encode(bytes))
    } else {
        json!(vector)
    }
}

// ---- models ----

#[handler]
async fn list_models(depot: &mut Depot, res: &mut Response) {
    match app(depot).gateway.models(&caller(depot)).await {
        Ok(models) => {
            let data = models.iter().map(model_entry).collect();
            write_json(
                res,
                200,
                &wire::ModelList {
                    object: "list".into(),
                    data,
                },
            );
        }
        Err(e) => write_error(res, &e),
    }
}

#[handler]
async fn get_model(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let id: String = req.param("id").unwrap_or_default();
    match app(depot).gateway.model(&id, &caller(depot)).await {
        Ok(card) => write_json(
            res,
            200,
            &wire::Model {
                id,
                ..model_entry(&card)
            },
        ),
        Err(e) => write_error(res, &e),
    }
}

fn model_entry(card: &crate::ir::ModelCard) -> wire::Model {
    wire::Model {
        id: card.id.clone(),
        object: "model".into(),
        created: card.created,
        owned_by: card.owned_by.clone(),
        name: card.display_name.clone(),
        description: card.description.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_chunks_are_what_serde_writes() {
        let config = OpenAiConfig::default();
        for include_usage in [false, true] {
            let mut encoder = ChunkEncoder::new(&config, "gpt \"4o\"", Kind::Chat, include_usage, 2);
            for (index, text) in [
                (0, "Hello"),
                (1, ""),
                (0, "quote \" backslash \\ newline \n"),
                (1, "ünïcödé 🌍 \u{1}"),
            ] {
                let (mut fast, mut slow) = (Vec::new(), Vec::new());
                encoder.push_text_chunk(&mut fast, index, text);
                let delta = wire::Delta {
                    content: Some(text.to_owned()),
                    ..Default::default()
                };
                encoder.push_chat_chunk(&mut slow, index, delta, None, Some(Vec::new()));
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(slow).unwrap(),
                    "include_usage {include_usage}"
                );
            }
        }
    }

    fn chat(body: Value) -> Result<ChatRequest, Error> {
        decode_chat(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn options_merge_top_level_over_options_and_keep_unknown_ones() {
        let r = chat(json!({"model":"m","messages":[{"role":"user","content":"hi"}],
            "temperature":0.1,"num_ctx":4096,"options":{"temperature":0.9,"top_k":3,"mystery":true},
            "max_tokens":5,"max_completion_tokens":7}))
        .unwrap();
        assert_eq!(r.sampling.temperature, Some(0.1));
        assert_eq!(r.sampling.num_ctx, Some(4096));
        assert_eq!(r.sampling.top_k, Some(3));
        assert_eq!(r.sampling.max_tokens, Some(7));
        assert_eq!(r.extra.get("mystery"), Some(&json!(true)));
        assert!(!r.extra.contains_key("top_k"));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = chat(json!({"model":"m","messages":[{"role":"wizard","content":"hi"}]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"options":{"top_k":"many"}}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("options.top_k"), "{e:?}");
        let e = chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"extreme"}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
    }

    #[test]
    fn reasoning_effort_maps_to_levels() {
        let r =
            chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"minimal"})).unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Low));
        let r = chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"reasoning":{"effort":"none"},"reasoning_effort":"high"})).unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Off));
    }

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let Value::String(s) = encode_vector(vec![1.0, -2.5], true) else {
            panic!()
        };
        let bytes = STANDARD.decode(s).unwrap();
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -2.5);
    }
}
