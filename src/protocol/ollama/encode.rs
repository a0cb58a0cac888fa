//! Ollama encoding (IR → wire) for the frontend: NDJSON lines (one object per line) or
//! one JSON body, model entries and `/api/show` answers, in the shapes the strictest
//! Ollama clients parse; errors as `{"error": "..."}`.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::wire;
use crate::ir::{
    ChatEvent, ChatResponse, DEFAULT_CONTEXT_LENGTH, EmbedResponse, Error, ErrorKind, FinishReason, ModelCard,
    TokenLogprob, ToolCall, Usage,
};

/// Ollama's error body. An unknown model says `model 'NAME' not found`, which CLIs and
/// apps match on to offer a pull.
pub fn error_body(error: &Error, model: &str) -> wire::ErrorBody {
    wire::ErrorBody {
        error: message(error, model),
    }
}

fn message(error: &Error, model: &str) -> String {
    if error.kind == ErrorKind::NotFound && error.param.as_deref() == Some("model") && !model.is_empty() {
        format!("model '{model}' not found")
    } else {
        error.message.clone()
    }
}
/// The name an Ollama client sees: always with a tag.
pub fn tagged(id: &str, suffix: &str) -> String {
    if id.contains(':') || suffix.is_empty() {
        id.to_owned()
    } else {
        format!("{id}{suffix}")
    }
}

pub fn entry(card: &ModelCard, suffix: &str) -> wire::ModelEntry {
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

pub fn details(card: &ModelCard) -> wire::ModelDetails {
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

/// Now as Ollama writes its times: RFC 3339 in UTC with nanoseconds and `Z`.
pub fn now() -> String {
    let mut text = Vec::with_capacity(30);
    write_now(&mut text);
    String::from_utf8(text).expect("the time is ASCII")
}

thread_local! {
    /// The second last written and its text up to the fraction (`2026-12-04T22:08:08.`).
    static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// Appends `now()`. The date and time of day are formatted once a second per thread and
/// only the nanoseconds per call: formatting the whole date on every streamed line was a
/// twentieth of the line's cost.
pub fn write_now(out: &mut Vec<u8>) {
    write_time(out, chrono::Utc::now());
}

fn write_time(out: &mut Vec<u8>, now: chrono::DateTime<chrono::Utc>) {
    let (seconds, nanos) = (now.timestamp(), now.timestamp_subsec_nanos());
    if nanos >= 1_000_000_000 {
        // A leap second, which chrono writes its own way.
        out.extend_from_slice(now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true).as_bytes());
        return;
    }
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != seconds {
            *second = seconds;
            *text = now.format("%Y-%m-%dT%H:%M:%S.").to_string();
        }
        out.extend_from_slice(text.as_bytes());
    });
    let mut digits = [b'0'; 9];
    let mut rest = nanos;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}
pub fn show_from_card(card: &ModelCard, name: &str) -> wire::ShowResponse {
    let arch = card
        .family
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "llama".into());
    let context = card.context_length.unwrap_or(DEFAULT_CONTEXT_LENGTH);
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

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    Chat,
    Generate,
}

/// Encodes IR events as Ollama chunks. Tool calls are sent whole, one per line with a
/// distinct `function.index` and object arguments (Zed reads one call per chunk); the
/// last line carries `done_reason` and integer metrics, measured here when the
/// upstream reports none (Open WebUI divides by them).
pub struct LineEncoder {
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
    pub fn new(model: &str, kind: Kind, started: Instant) -> Self {
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
    pub fn encode(&mut self, event: ChatEvent) -> Option<Bytes> {
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
            // Ollama's answers carry neither (`done_reason` is `stop` either way).
            ChatEvent::ReasoningSignature(_) | ChatEvent::StopSequence(_) => {}
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
        // The line's size, near enough that it is written with no reallocation.
        out.reserve(self.text_prefix.len() + text.len() + text.len() / 8 + 128);
        out.extend_from_slice(&self.text_prefix);
        write_now(out);
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
    pub fn whole(&mut self, answer: ChatResponse) -> Vec<u8> {
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
pub fn tool_call(index: usize, call: ToolCall) -> wire::ToolCall {
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
pub fn ndjson(
    mut encoder: LineEncoder,
    events: crate::ir::ChatStream,
) -> BoxStream<'static, Result<Bytes, Infallible>> {
    Box::pin(async_stream::stream! {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => if let Some(lines) = encoder.encode(event) { yield Ok(lines) },
                Err(error) => {
                    let line = serde_json::to_string(&error_body(&error, &encoder.model)).unwrap_or_default();
                    yield Ok(Bytes::from(format!("{line}\n")));
                    return;
                }
            }
        }
    })
}
/// Ollama L2-normalises `/api/embed` vectors; other upstreams may not.
pub fn normalized(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && (norm - 1.0).abs() > 1e-6 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// `/api/tags`: every model, in catalog order.
pub fn tags(cards: &[ModelCard], suffix: &str) -> wire::TagsResponse {
    wire::TagsResponse {
        models: cards.iter().map(|card| entry(card, suffix)).collect(),
    }
}

/// `/api/ps`: the models used lately (name, unix time of last use), as Ollama reports
/// loaded ones, each expiring `keep_for` seconds after its last use.
pub fn running(cards: &[ModelCard], recent: Vec<(String, i64)>, suffix: &str, keep_for: i64) -> wire::TagsResponse {
    let mut models: Vec<wire::ModelEntry> = Vec::new();
    for (name, last_used) in recent {
        let card = cards
            .iter()
            .find(|c| c.id == name || tagged(&c.id, suffix) == name)
            .cloned();
        let card = card.unwrap_or_else(|| ModelCard {
            id: name.clone(),
            ..Default::default()
        });
        let mut entry = entry(&card, suffix);
        entry.expires_at = Some(rfc3339(last_used + keep_for));
        entry.size_vram = Some(entry.size);
        entry.context_length = Some(card.context_length.unwrap_or(DEFAULT_CONTEXT_LENGTH));
        models.push(entry);
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    wire::TagsResponse { models }
}

/// An Ollama upstream's `/api/show` answer with the profile's display name and
/// description where clients look for them.
pub fn show_with_card(answer: &Value, card: &ModelCard) -> Value {
    let mut answer = answer.clone();
    if let Some(info) = answer.get_mut("model_info").and_then(Value::as_object_mut) {
        if let Some(display) = &card.display_name {
            info.insert("general.basename".into(), json!(display));
        }
        if let Some(description) = &card.description {
            info.insert("general.description".into(), json!(description));
        }
    }
    answer
}

/// The answer to an empty chat or prompt, which only loads (or, with `keep_alive: 0`,
/// unloads) a model in Ollama.
pub fn load_line(model: &str, keep_alive: &Option<Value>, kind: Kind) -> Value {
    let unload = matches!(keep_alive, Some(Value::Number(n)) if n.as_f64() == Some(0.0))
        || matches!(keep_alive, Some(Value::String(s)) if s.trim_end_matches(|c: char| c.is_alphabetic()) == "0");
    let mut line = json!({"model": model, "created_at": now()});
    match kind {
        Kind::Chat => line["message"] = json!({"role": "assistant", "content": ""}),
        Kind::Generate => line["response"] = json!(""),
    }
    line["done"] = json!(true);
    line["done_reason"] = json!(if unload { "unload" } else { "load" });
    line
}

/// `/api/embed`'s answer: vectors L2-normalised as Ollama does; the upstream's duration
/// when it reports one, else `waited`.
pub fn embed_response(model: String, answer: EmbedResponse, waited: std::time::Duration) -> wire::EmbedResponse {
    wire::EmbedResponse {
        model,
        embeddings: answer.vectors.into_iter().map(normalized).collect(),
        total_duration: Some(answer.total_duration_ns.unwrap_or(waited.as_nanos() as u64)),
        load_duration: Some(0),
        prompt_eval_count: answer.prompt_tokens,
    }
}

/// A pull's progress lines for a model the upstream already serves.
pub fn pull_steps(card: &ModelCard) -> [Value; 4] {
    let digest = format!(
        "sha256:{}",
        card.digest
            .clone()
            .unwrap_or_else(|| hex::encode(Sha256::digest(card.id.as_bytes())))
    );
    [
        json!({"status": "pulling manifest"}),
        json!({"status": "verifying sha256 digest", "digest": digest}),
        json!({"status": "writing manifest"}),
        json!({"status": "success"}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        // Within a second, across seconds, back in time (another clock), leading zeros.
        for (secs, nanos) in [
            (1_796_423_257, 5),
            (1_796_423_257, 999_999_999),
            (1_796_423_258, 0),
            (1_000_000_000, 120_000_000),
            (1_796_423_258, 7),
        ] {
            let time = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
            let mut out = b"x".to_vec();
            write_time(&mut out, time);
            let want = time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            assert_eq!(String::from_utf8(out).unwrap(), format!("x{want}"));
        }
    }

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
