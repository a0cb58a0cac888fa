//! Backend: the IR to an OpenAI-compatible server (vLLM, llama.cpp, LiteLLM, OpenRouter,
//! OpenAI) and its SSE answers back to IR events.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tracing::debug;

use super::wire;
use crate::config::UpstreamConfig;
use crate::ir::{
    ChatEvent, ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ErrorKind, FinishReason, Image, Input,
    Message, ModelCard, Reasoning, ResponseFormat, Role, TokenLogprob, ToolChoice, TopLogprob, Usage, new_call_id,
};
use crate::protocol::images::sniff_base64_mime;
use crate::protocol::upstream::{Upstream, root_cause};

/// A client of one OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiClient {
    upstream: Upstream,
    /// `/v1` unless the configured base URL already ends with it.
    prefix: &'static str,
    max_tokens_field: String,
    pass_options: Vec<String>,
    think_tags: bool,
    reasoning_history: Option<String>,
}

impl OpenAiClient {
    pub fn new(config: &UpstreamConfig, upstream: Upstream) -> Self {
        let prefix = if upstream.base().ends_with("/v1") { "" } else { "/v1" };
        Self {
            upstream,
            prefix,
            max_tokens_field: config.max_tokens_field.clone(),
            pass_options: config.pass_options.clone(),
            think_tags: config.think_tags,
            reasoning_history: config.reasoning_history.clone(),
        }
    }

    fn path(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.prefix)
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Starts a chat or completion and returns its events. Streamed upstream when the
    /// client streams; otherwise asked whole, so usage is the upstream's own even where
    /// it reports none in streams (llama-cpp-python's server).
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        let (endpoint, body) = match &request.input {
            Input::Prompt(p) if p.raw != Some(false) || p.suffix.is_some() => {
                ("/completions", self.completion_body(request))
            }
            Input::Prompt(p) => {
                let mut messages = Vec::new();
                if let Some(system) = &p.system {
                    messages.push(Message::new(Role::System, system.clone()));
                }
                let mut user = Message::new(Role::User, p.text.clone());
                user.parts.extend(p.images.iter().cloned().map(crate::ir::Part::Image));
                messages.push(user);
                ("/chat/completions", self.chat_body(request, &messages)?)
            }
            Input::Messages(messages) => ("/chat/completions", self.chat_body(request, messages)?),
        };
        let response = self.upstream.post(&self.path(endpoint), &body).await?;
        let mut decoder = SseDecoder::new(self.think_tags);
        if !request.stream {
            let events = decoder.whole(self.upstream.json(response).await?)?;
            return Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))));
        }
        let idle = self.upstream.idle_timeout();
        let base = self.upstream.base().to_owned();
        // One timer for the whole stream, pushed back by each event.
        let events = tokio_stream::StreamExt::timeout(response.bytes_stream().eventsource(), idle);
        Ok(Box::pin(async_stream::stream! {
            futures::pin_mut!(events);
            loop {
                let event = match events.next().await {
                    Some(Err(_)) => {
                        yield Err(Error::new(ErrorKind::Timeout, format!("the upstream at {base} sent nothing for {} s", idle.as_secs_f64())));
                        return;
                    }
                    None => break,
                    Some(Ok(Err(e))) => {
                        yield Err(Error::new(ErrorKind::UpstreamUnavailable, format!("the stream from the upstream at {base} broke: {}", root_cause(&e))));
                        return;
                    }
                    Some(Ok(Ok(event))) => event,
                };
                debug!(target: "diglot::wire", upstream_event = %event.data, "openai chunk");
                if event.data.trim() == "[DONE]" {
                    decoder.done = true;
                    break;
                }
                match decoder.decode(&event.data) {
                    Ok(events) => for e in events { yield Ok(e) },
                    Err(e) => { yield Err(e); return; }
                }
            }
            match decoder.finish() {
                Ok(events) => for e in events { yield Ok(e) },
                Err(e) => yield Err(e),
            }
        }))
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        let mut body = json!({"model": request.model, "input": request.inputs, "encoding_format": "float"});
        if let Some(dimensions) = request.dimensions {
            body["dimensions"] = json!(dimensions);
        }
        let response = self.upstream.post(&self.path("/embeddings"), &body).await?;
        let mut answer: wire::EmbeddingResponse = self.upstream.json(response).await?;
        answer.data.sort_by_key(|d| d.index);
        let vectors = answer
            .data
            .into_iter()
            .map(|d| serde_json::from_value::<Vec<f32>>(d.embedding))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::upstream(502, format!("the upstream sent embeddings diglot cannot read: {e}")))?;
        if vectors.len() != request.inputs.len() {
            return Err(Error::upstream(
                502,
                format!(
                    "the upstream returned {} embeddings for {} inputs",
                    vectors.len(),
                    request.inputs.len()
                ),
            ));
        }
        Ok(EmbedResponse {
            vectors,
            prompt_tokens: Some(answer.usage.prompt_tokens),
            total_duration_ns: None,
        })
    }

    /// The upstream's `/v1/models`, with context sizes where the server reports them
    /// (vLLM's `max_model_len`, llama.cpp's `meta.n_ctx_train`).
    pub async fn models(&self) -> Result<Vec<ModelCard>, Error> {
        let response = self.upstream.get(&self.path("/models")).await?;
        let list: Value = self.upstream.json(response).await?;
        let data = list["data"]
            .as_array()
            .or_else(|| list.as_array())
            .cloned()
            .unwrap_or_default();
        Ok(data
            .into_iter()
            .filter_map(|m| {
                let id = m["id"].as_str()?.to_owned();
                let context_length = m["max_model_len"]
                    .as_u64()
                    .or_else(|| m["meta"]["n_ctx_train"].as_u64())
                    .or_else(|| m["context_length"].as_u64());
                Some(ModelCard {
                    owned_by: m["owned_by"].as_str().unwrap_or("openai").to_owned(),
                    created: m["created"].as_i64().unwrap_or(0),
                    context_length,
                    size_bytes: m["meta"]["size"].as_u64(),
                    id,
                    ..Default::default()
                })
            })
            .collect())
    }

    fn chat_body(&self, request: &ChatRequest, messages: &[Message]) -> Result<Value, Error> {
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        body.insert("messages".into(), Value::Array(self.messages(messages)));
        if !request.tools.is_empty() && request.tool_choice != ToolChoice::None {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    let mut function = json!({"name": t.name, "parameters": t.parameters});
                    if let Some(d) = &t.description {
                        function["description"] = json!(d);
                    }
                    if let Some(strict) = t.strict {
                        function["strict"] = json!(strict);
                    }
                    json!({"type": "function", "function": function})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            match &request.tool_choice {
                ToolChoice::Required => {
                    body.insert("tool_choice".into(), json!("required"));
                }
                ToolChoice::Function(name) => {
                    body.insert(
                        "tool_choice".into(),
                        json!({"type": "function", "function": {"name": name}}),
                    );
                }
                // OpenAI's default made explicit: some servers (llama-cpp-python) take a
                // missing tool_choice as "none".
                ToolChoice::Auto => {
                    body.insert("tool_choice".into(), json!("auto"));
                }
                ToolChoice::None => {}
            }
        }
        match &request.response_format {
            Some(ResponseFormat::Json) => {
                body.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
                // OpenAI requires a name; `strict` stays unset unless the client set it,
                // since it demands additionalProperties:false and every key required.
                let mut format = json!({"name": name.as_deref().unwrap_or("response"), "schema": schema});
                if let Some(strict) = strict {
                    format["strict"] = json!(strict);
                }
                body.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": format}),
                );
            }
            None => {}
        }
        if let Some(effort) = request.reasoning.and_then(reasoning_effort) {
            body.insert("reasoning_effort".into(), json!(effort));
        }
        if request.logprobs {
            body.insert("logprobs".into(), json!(true));
            if let Some(top) = request.top_logprobs {
                body.insert("top_logprobs".into(), json!(top));
            }
        }
        self.sampling_into(request, &mut body);
        stream_into(request, &mut body);
        Ok(Value::Object(body))
    }

    fn completion_body(&self, request: &ChatRequest) -> Value {
        let Input::Prompt(prompt) = &request.input else {
            unreachable!("completion_body is only called for prompts")
        };
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        body.insert("prompt".into(), json!(prompt.text));
        if let Some(suffix) = &prompt.suffix {
            body.insert("suffix".into(), json!(suffix));
        }
        if request.logprobs {
            body.insert("logprobs".into(), json!(request.top_logprobs.unwrap_or(1)));
        }
        self.sampling_into(request, &mut body);
        stream_into(request, &mut body);
        Value::Object(body)
    }

    /// OpenAI's own sampling fields, the token limit under the configured name, and the
    /// Ollama options this upstream is configured to take as extra body fields.
    fn sampling_into(&self, request: &ChatRequest, body: &mut Map<String, Value>) {
        let s = &request.sampling;
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                body.insert(key.to_owned(), v);
            }
        };
        put("temperature", s.temperature.map(|v| json!(v)));
        put("top_p", s.top_p.map(|v| json!(v)));
        put("seed", s.seed.map(|v| json!(v)));
        put("stop", s.stop.as_ref().filter(|v| !v.is_empty()).map(|v| json!(v)));
        put("presence_penalty", s.presence_penalty.map(|v| json!(v)));
        put("frequency_penalty", s.frequency_penalty.map(|v| json!(v)));
        // Ollama's -1 (and -2) mean "no limit": send nothing.
        put(
            &self.max_tokens_field,
            s.max_tokens.filter(|&n| n > 0).map(|v| json!(v)),
        );
        if let Ok(Value::Object(options)) = serde_json::to_value(s) {
            for name in &self.pass_options {
                if let Some(value) = options.get(name) {
                    body.insert(name.clone(), value.clone());
                }
            }
        }
    }

    fn messages(&self, messages: &[Message]) -> Vec<Value> {
        // Ids given to calls that had none, so later tool results can point at them.
        let mut calls: Vec<(String, String, bool)> = Vec::new();
        messages
            .iter()
            .map(|m| {
                let mut out = Map::new();
                out.insert("role".into(), json!(m.role.as_str()));
                out.insert("content".into(), content(m));
                if m.role == Role::Assistant && !m.tool_calls.is_empty() {
                    let tool_calls: Vec<Value> = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            let id = if c.id.is_empty() { new_call_id() } else { c.id.clone() };
                            calls.push((id.clone(), c.name.clone(), false));
                            let arguments = if c.arguments.is_empty() {
                                "{}".to_owned()
                            } else {
                                c.arguments.clone()
                            };
                            json!({"id": id, "type": "function", "function": {"name": c.name, "arguments": arguments}})
                        })
                        .collect();
                    out.insert("tool_calls".into(), Value::Array(tool_calls));
                    // null only when the client sent no content; some servers refuse null
                    // where the client sent "".
                    if m.parts.is_empty() {
                        out.insert("content".into(), Value::Null);
                    }
                }
                if m.role == Role::Assistant
                    && let (Some(field), Some(reasoning)) = (&self.reasoning_history, &m.reasoning)
                {
                    out.insert(field.clone(), json!(reasoning));
                }
                if m.role == Role::Tool {
                    // Ollama clients often name the tool but not the call: answer the most
                    // recent unanswered call of that name.
                    let id = m.tool_call_id.clone().or_else(|| {
                        let name = m.name.as_deref()?;
                        let call = calls.iter_mut().rev().find(|(_, n, answered)| n == name && !answered)?;
                        Some(call.0.clone())
                    });
                    if let Some(id) = id {
                        if let Some(call) = calls.iter_mut().find(|(c, _, _)| *c == id) {
                            call.2 = true;
                        }
                        out.insert("tool_call_id".into(), json!(id));
                    }
                    if let Some(name) = &m.name {
                        out.insert("name".into(), json!(name));
                    }
                }
                Value::Object(out)
            })
            .collect()
    }
}

/// Streams ask for usage (the last usage chunk is the one that counts).
fn stream_into(request: &ChatRequest, body: &mut Map<String, Value>) {
    body.insert("stream".into(), json!(request.stream));
    if request.stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
}

/// A string when the message is only text; parts when it carries images.
fn content(m: &Message) -> Value {
    let mut images = m.images().peekable();
    if images.peek().is_none() {
        return json!(m.text());
    }
    let mut parts = Vec::new();
    let text = m.text();
    if !text.is_empty() {
        parts.push(json!({"type": "text", "text": text}));
    }
    for image in images {
        let url = match image {
            Image::Url(url) => url.clone(),
            Image::Data { mime, base64 } => {
                let mime = mime
                    .as_deref()
                    .or_else(|| sniff_base64_mime(base64))
                    .unwrap_or("image/png");
                format!("data:{mime};base64,{base64}")
            }
        };
        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
    }
    Value::Array(parts)
}

/// `reasoning_effort` to send: explicit levels are; a bare on/off is left to the
/// model's default (servers reject `reasoning_effort` on models that cannot reason).
fn reasoning_effort(reasoning: Reasoning) -> Option<&'static str> {
    reasoning.level()
}

/// Turns SSE `data:` payloads of chat or completion chunks into IR events.
struct SseDecoder {
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// llama-server's own timings, when it sends them.
    timings: Option<Value>,
    /// Tool-call indexes whose id and name were passed on: some servers repeat them on
    /// every delta, and OpenAI clients would concatenate the repeats.
    named_calls: Vec<u32>,
    /// `[DONE]` seen.
    done: bool,
    think: Option<ThinkTags>,
    /// The answer's id and model were noted on the attempt's span.
    identified: bool,
}

impl SseDecoder {
    fn new(think_tags: bool) -> Self {
        Self {
            finish: None,
            usage: None,
            timings: None,
            named_calls: Vec::new(),
            done: false,
            think: think_tags.then(ThinkTags::default),
            identified: false,
        }
    }

    fn decode(&mut self, data: &str) -> Result<Vec<ChatEvent>, Error> {
        let chunk: UpstreamChunk = serde_json::from_str(data)
            .map_err(|e| Error::upstream(502, format!("the upstream sent an unreadable chunk: {e}")))?;
        self.events(chunk)
    }

    fn events(&mut self, chunk: UpstreamChunk) -> Result<Vec<ChatEvent>, Error> {
        if !self.identified && (chunk.id.is_some() || chunk.model.is_some()) {
            self.identified = true;
            crate::telemetry::spans::record_response(chunk.id.as_deref(), chunk.model.as_deref());
        }
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            let message = error["message"]
                .as_str()
                .or(error.as_str())
                .unwrap_or("the upstream failed mid-stream");
            return Err(Error::upstream(500, message));
        }
        // Some servers repeat a growing usage on every chunk: the last one counts.
        if let Some(usage) = chunk.usage.filter(|u| u.is_object()) {
            self.usage = Some(usage_from(&usage));
        }
        if let Some(timings) = chunk.timings.filter(|t| t.is_object()) {
            self.timings = Some(timings);
        }
        let mut events = Vec::new();
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(events);
        };
        if let Some(content) = choice.logprobs.as_ref().and_then(|l| l["content"].as_array()) {
            let logprobs: Vec<TokenLogprob> = content.iter().filter_map(logprob_from).collect();
            if !logprobs.is_empty() {
                events.push(ChatEvent::Logprobs(logprobs));
            }
        }
        let delta = choice.delta.unwrap_or_default();
        if let Some(text) = [delta.reasoning_content, delta.reasoning]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
        {
            events.push(ChatEvent::Reasoning(text));
        }
        let text = delta.content.or(choice.text).unwrap_or_default();
        if !text.is_empty() {
            match &mut self.think {
                Some(tags) => events.extend(tags.split(&text)),
                None => events.push(ChatEvent::Text(text)),
            }
        }
        for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
            let index = call.index.unwrap_or(position as u32);
            let function = call.function.unwrap_or_default();
            let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
            let (id, name) = (non_empty(call.id), non_empty(function.name));
            let first = (id.is_some() || name.is_some()) && !self.named_calls.contains(&index);
            if first {
                self.named_calls.push(index);
            }
            events.push(ChatEvent::ToolCall {
                index,
                id: id.filter(|_| first),
                name: name.filter(|_| first),
                arguments_delta: match function.arguments {
                    Some(Value::String(s)) => s,
                    // Some servers send whole answers' arguments as an object.
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => String::new(),
                },
            });
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(match reason.as_str() {
                "length" => FinishReason::Length,
                "tool_calls" | "function_call" => FinishReason::ToolCalls,
                "content_filter" => FinishReason::ContentFilter,
                _ => FinishReason::Stop,
            });
        }
        Ok(events)
    }

    /// The closing events, or an error if the upstream stopped without finishing.
    fn finish(&mut self) -> Result<Vec<ChatEvent>, Error> {
        if !self.done && self.finish.is_none() {
            return Err(Error::upstream(
                502,
                "the upstream closed the stream before it finished",
            ));
        }
        let mut events = Vec::new();
        if let Some(tags) = &mut self.think {
            events.extend(tags.flush());
        }
        // Usage the upstream did not report stays unknown rather than zero.
        if let Some(usage) = self
            .usage
            .take()
            .or_else(|| self.timings.as_ref().map(|_| Usage::default()))
        {
            events.push(ChatEvent::Usage(with_timings(usage, self.timings.as_ref())));
        }
        events.push(ChatEvent::Finish(self.finish.unwrap_or(FinishReason::Stop)));
        Ok(events)
    }

    /// A whole (non-streamed) chat completion or completion, as the same events (its
    /// `message` is read as a delta).
    fn whole(&mut self, answer: UpstreamChunk) -> Result<Vec<ChatEvent>, Error> {
        let mut events = self.events(answer)?;
        self.done = true;
        events.extend(self.finish()?);
        Ok(events)
    }
}

/// What diglot reads of an upstream's chunk or whole answer. Typed, so the rest of each
/// chunk is skipped unparsed (a `Value` tree per chunk cost a tenth of a stream's CPU);
/// every field may be missing or null, as servers differ.
#[derive(Deserialize, Default)]
struct UpstreamChunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    choices: Vec<UpstreamChoice>,
    #[serde(default)]
    usage: Option<Value>,
    /// llama-server's own timings.
    #[serde(default)]
    timings: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
struct UpstreamChoice {
    #[serde(default, alias = "message")]
    delta: Option<UpstreamDelta>,
    /// Legacy completions.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct UpstreamDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<UpstreamToolCall>>,
}

#[derive(Deserialize, Default)]
struct UpstreamToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<UpstreamFunction>,
}

#[derive(Deserialize, Default)]
struct UpstreamFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// llama-server's `timings` (milliseconds) as Ollama-style nanosecond timings; its token
/// counts fill in when the server sent no usage.
fn with_timings(mut usage: Usage, timings: Option<&Value>) -> Usage {
    let Some(t) = timings else { return usage };
    let ns = |key: &str| (t[key].as_f64().unwrap_or(0.0) * 1e6) as u64;
    let (prompt, eval) = (ns("prompt_ms"), ns("predicted_ms"));
    usage.timings = Some(crate::ir::Timings {
        total_ns: prompt + eval,
        load_ns: 0,
        prompt_eval_ns: prompt,
        eval_ns: eval,
    });
    let count = |key: &str| t[key].as_u64();
    usage.prompt_tokens = usage
        .prompt_tokens
        .or_else(|| Some(count("prompt_n")? + count("cache_n").unwrap_or(0)));
    usage.completion_tokens = usage.completion_tokens.or_else(|| count("predicted_n"));
    usage
}

fn usage_from(usage: &Value) -> Usage {
    Usage {
        prompt_tokens: usage["prompt_tokens"].as_u64(),
        completion_tokens: usage["completion_tokens"].as_u64(),
        cached_tokens: usage["prompt_tokens_details"]["cached_tokens"].as_u64(),
        timings: None,
    }
}

fn logprob_from(v: &Value) -> Option<TokenLogprob> {
    let bytes = |v: &Value| {
        v.as_array()
            .map(|b| b.iter().filter_map(|x| x.as_u64().map(|x| x as u8)).collect())
    };
    Some(TokenLogprob {
        token: v["token"].as_str()?.to_owned(),
        logprob: v["logprob"].as_f64()?,
        bytes: bytes(&v["bytes"]),
        top: v["top_logprobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(TopLogprob {
                    token: t["token"].as_str()?.to_owned(),
                    logprob: t["logprob"].as_f64()?,
                    bytes: bytes(&t["bytes"]),
                })
            })
            .collect(),
    })
}

/// Moves `<think>…</think>` at the start of the content into reasoning, even when the
/// tags are split across chunks.
#[derive(Default)]
struct ThinkTags {
    /// Text held back because it may be the start of a tag.
    pending: String,
    state: ThinkState,
}

#[derive(Default, PartialEq)]
enum ThinkState {
    /// Nothing but whitespace seen yet: a `<think>` may still open.
    #[default]
    Start,
    Thinking,
    Answering,
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

impl ThinkTags {
    fn split(&mut self, text: &str) -> Vec<ChatEvent> {
        self.pending.push_str(text);
        let mut events = Vec::new();
        loop {
            match self.state {
                ThinkState::Start => {
                    let trimmed = self.pending.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.pending = rest.to_owned();
                        self.state = ThinkState::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        return events; // wait for more
                    } else {
                        self.state = ThinkState::Answering;
                    }
                }
                ThinkState::Thinking => match self.pending.find(CLOSE) {
                    Some(at) => {
                        let thought: String = self.pending.drain(..at + CLOSE.len()).take(at).collect();
                        if !thought.is_empty() {
                            events.push(ChatEvent::Reasoning(thought));
                        }
                        self.pending = self.pending.trim_start().to_owned();
                        self.state = ThinkState::Answering;
                    }
                    None => {
                        let keep = partial_suffix(&self.pending, CLOSE);
                        let emit = self.pending.len() - keep;
                        if emit > 0 {
                            events.push(ChatEvent::Reasoning(self.pending.drain(..emit).collect()));
                        }
                        return events;
                    }
                },
                ThinkState::Answering => {
                    if !self.pending.is_empty() {
                        events.push(ChatEvent::Text(std::mem::take(&mut self.pending)));
                    }
                    return events;
                }
            }
        }
    }

    fn flush(&mut self) -> Vec<ChatEvent> {
        let rest = std::mem::take(&mut self.pending);
        match (rest.is_empty(), &self.state) {
            (true, _) => Vec::new(),
            (false, ThinkState::Thinking) => vec![ChatEvent::Reasoning(rest)],
            (false, _) => vec![ChatEvent::Text(rest)],
        }
    }
}

/// How many bytes at the end of `text` could begin `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(events: &[ChatEvent]) -> (String, String) {
        let mut reasoning = String::new();
        let mut text = String::new();
        for e in events {
            match e {
                ChatEvent::Reasoning(r) => reasoning.push_str(r),
                ChatEvent::Text(t) => text.push_str(t),
                _ => {}
            }
        }
        (reasoning, text)
    }

    #[test]
    fn think_tags_split_across_chunks() {
        let mut tags = ThinkTags::default();
        let mut events = Vec::new();
        for piece in ["<thi", "nk>Let me ", "think</thi", "nk>The answer", " is 4."] {
            events.extend(tags.split(piece));
        }
        events.extend(tags.flush());
        assert_eq!(texts(&events), ("Let me think".into(), "The answer is 4.".into()));
    }

    #[test]
    fn content_without_think_tags_passes_through() {
        let mut tags = ThinkTags::default();
        let events = tags.split("<b>bold</b>");
        assert_eq!(texts(&events), (String::new(), "<b>bold</b>".into()));
    }

    #[test]
    fn repeated_tool_call_ids_and_names_pass_once() {
        // llama-cpp-python's server repeats id, type and name on every delta (its
        // 0.3.36 behaviour, as measured in ../shared/e2e/REPORT.md).
        let mut d = SseDecoder::new(false);
        let mut events = Vec::new();
        for piece in ["{\\\"city\\\"", ": \\\"Paris\\\"}"] {
            let chunk = format!(
                r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{piece}"}}}}]}}}}]}}"#
            );
            events.extend(d.decode(&chunk).unwrap());
        }
        let ChatEvent::ToolCall { id, name, .. } = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!((id, name), (&None, &None), "only the first delta names the call");
        let mut folded = crate::ir::ChatResponse::default();
        events.into_iter().for_each(|e| folded.push(e));
        assert_eq!(folded.tool_calls[0].name, "get_weather");
        assert_eq!(folded.tool_calls[0].arguments, r#"{"city": "Paris"}"#);
    }

    #[test]
    fn unknown_usage_stays_unknown() {
        let mut d = SseDecoder::new(false);
        d.decode(r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#)
            .unwrap();
        let events = d.finish().unwrap();
        assert!(!events.iter().any(|e| matches!(e, ChatEvent::Usage(_))), "{events:?}");
    }

    #[test]
    fn last_usage_wins_and_missing_finish_is_an_error() {
        let mut d = SseDecoder::new(false);
        d.decode(
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
        )
        .unwrap();
        d.decode(
            r#"{"choices":[{"index":0,"delta":{"content":"b"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(d.usage.as_ref().unwrap().completion_tokens, Some(2));
        assert!(d.finish().is_err());
    }
}
