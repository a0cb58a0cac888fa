//! The spans of a request, named and attributed after the OpenTelemetry HTTP and GenAI
//! semantic conventions: one server span per HTTP request, continuing the caller's W3C
//! `traceparent`, and one client span per upstream attempt, whose context goes upstream
//! in a `traceparent` of its own.

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Array, StringValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::tracing_on;
use crate::ir::{ChatRequest, FinishReason, Input, Part};

/// The server span of one HTTP request (`POST /v1/chat/completions`), child of the
/// caller's trace when it sent a `traceparent`. `Span::none()` when traces are off.
pub fn server_span(method: &str, route: &str, headers: &reqwest::header::HeaderMap) -> Span {
    if !tracing_on() {
        return Span::none();
    }
    let name = if route.is_empty() {
        method.to_owned()
    } else {
        format!("{method} {route}")
    };
    let span = tracing::info_span!(
        target: "diglot::otel",
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        error.type = Empty,
        diglot.token_prefix = Empty,
        diglot.cache_hit = Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
    span
}

/// The trace id of `span` (32 hex digits), or of the caller's `traceparent` when spans
/// are off, for the access line.
pub fn trace_id(span: &Span, headers: &reqwest::header::HeaderMap) -> Option<String> {
    if tracing_on() {
        let context = span.context();
        let id = context.span().span_context().trace_id();
        if id != opentelemetry::trace::TraceId::INVALID {
            return Some(id.to_string());
        }
    }
    // `00-<trace id>-<span id>-<flags>`
    let parent = headers.get("traceparent")?.to_str().ok()?;
    let id = parent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// Adds the current span's `traceparent` to an upstream request.
pub fn inject(headers: &mut reqwest::header::HeaderMap) {
    if !tracing_on() {
        return;
    }
    let context = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// What a client span says of the attempt it stands for.
pub struct Attempt<'a> {
    /// `chat`, `text_completion` or `embeddings`.
    pub operation: &'static str,
    /// `openai` or `ollama`.
    pub provider: &'static str,
    /// The name sent upstream.
    pub upstream_model: &'a str,
    /// The name the client used.
    pub client_model: &'a str,
    pub channel: &'a str,
    /// The upstream's base URL.
    pub url: &'a str,
    /// 1 for the first attempt of the request.
    pub number: u32,
    pub token_prefix: Option<&'a str>,
}

/// The client span of one upstream attempt, child of the current (server) span.
/// Integers go in as i64: tracing-opentelemetry records u64 values as strings.
pub fn attempt_span(attempt: &Attempt<'_>, request: Option<&ChatRequest>) -> Span {
    if !tracing_on() {
        return Span::none();
    }
    let (address, port) = match reqwest::Url::parse(attempt.url) {
        Ok(url) => (
            url.host_str().unwrap_or_default().to_owned(),
            url.port_or_known_default().map(i64::from),
        ),
        Err(_) => (String::new(), None),
    };
    let span = tracing::info_span!(
        target: "diglot::otel",
        "upstream",
        otel.name = format!("{} {}", attempt.operation, attempt.upstream_model),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
        gen_ai.operation.name = attempt.operation,
        gen_ai.provider.name = attempt.provider,
        gen_ai.request.model = attempt.upstream_model,
        gen_ai.request.stream = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.request.top_p = Empty,
        gen_ai.request.top_k = Empty,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.seed = Empty,
        gen_ai.request.frequency_penalty = Empty,
        gen_ai.request.presence_penalty = Empty,
        gen_ai.request.choice.count = Empty,
        gen_ai.response.model = attempt.upstream_model,
        gen_ai.response.id = Empty,
        gen_ai.response.time_to_first_chunk = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        server.address = address,
        server.port = port,
        diglot.channel = attempt.channel,
        diglot.attempt = i64::from(attempt.number),
        diglot.model = attempt.client_model,
        diglot.token_prefix = attempt.token_prefix,
    );
    if let Some(request) = request {
        let sampling = &request.sampling;
        // A `None` records nothing: only what the client (or an override) set shows.
        span.record("gen_ai.request.stream", request.stream.then_some(true));
        span.record("gen_ai.request.temperature", sampling.temperature);
        span.record("gen_ai.request.top_p", sampling.top_p);
        span.record("gen_ai.request.top_k", sampling.top_k);
        span.record("gen_ai.request.max_tokens", sampling.max_tokens);
        span.record("gen_ai.request.seed", sampling.seed);
        span.record("gen_ai.request.frequency_penalty", sampling.frequency_penalty);
        span.record("gen_ai.request.presence_penalty", sampling.presence_penalty);
        if request.n > 1 {
            span.record("gen_ai.request.choice.count", i64::from(request.n));
        }
        if let Some(stop) = sampling.stop.as_ref().filter(|s| !s.is_empty()) {
            span.set_attribute(
                "gen_ai.request.stop_sequences",
                strings(stop.iter().map(String::as_str)),
            );
        }
        if super::capture_content() {
            span.record("gen_ai.input.messages", input_messages(&request.input).to_string());
        }
    }
    span
}

/// Marks `span` failed with `kind` as `error.type` (a status code, `timeout`...).
pub fn record_error(span: &Span, kind: &str, message: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", kind);
    span.record("otel.status_code", "error");
    span.record("otel.status_description", message);
}

/// The upstream's own id and model name for its answer, on the current attempt span.
pub fn record_response(id: Option<&str>, model: Option<&str>) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(id) = id.filter(|s| !s.is_empty()) {
        span.record("gen_ai.response.id", id);
    }
    if let Some(model) = model.filter(|s| !s.is_empty()) {
        span.record("gen_ai.response.model", model);
    }
}

pub fn record_finish(span: &Span, reason: FinishReason) {
    if span.is_disabled() {
        return;
    }
    let name = match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Error => "error",
    };
    span.set_attribute("gen_ai.response.finish_reasons", strings([name]));
}

/// The answer's text as `gen_ai.output.messages` (only with `capture_content`).
pub fn record_output(span: &Span, text: &str) {
    if span.is_disabled() {
        return;
    }
    let messages = serde_json::json!([{
        "role": "assistant",
        "parts": [{"type": "text", "content": text}],
    }]);
    span.record("gen_ai.output.messages", messages.to_string());
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> Value {
    let values: Vec<StringValue> = values.into_iter().map(|s| StringValue::from(s.to_owned())).collect();
    Value::Array(Array::String(values))
}

/// The request's messages in the GenAI `parts` shape, text only (images are named, not
/// copied).
fn input_messages(input: &Input) -> serde_json::Value {
    let text = |content: &str| serde_json::json!({"type": "text", "content": content});
    match input {
        Input::Messages(messages) => messages
            .iter()
            .map(|message| {
                let parts: Vec<serde_json::Value> = message
                    .parts
                    .iter()
                    .map(|part| match part {
                        Part::Text(t) => text(t),
                        Part::Image(_) => serde_json::json!({"type": "image"}),
                    })
                    .collect();
                serde_json::json!({"role": message.role.as_str(), "parts": parts})
            })
            .collect(),
        Input::Prompt(prompt) => {
            let mut messages = Vec::new();
            if let Some(system) = &prompt.system {
                messages.push(serde_json::json!({"role": "system", "parts": [text(system)]}));
            }
            messages.push(serde_json::json!({"role": "user", "parts": [text(&prompt.text)]}));
            serde_json::Value::Array(messages)
        }
    }
}
