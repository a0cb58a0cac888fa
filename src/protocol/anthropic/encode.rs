//! Anthropic encoding for the frontend (IR → wire): answers as one `message` or as the
//! Messages stream (`message_start`, `ping`, content blocks opened, filled and closed in
//! order, `message_delta`, `message_stop`), errors in Anthropic's shape and statuses, and
//! the model list.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tracing::debug;

use super::wire;
use crate::ir::{ChatEvent, ChatResponse, ChatStream, Error, ErrorKind, FinishReason, ModelCard, Usage, random_id};

/// Anthropic's error type for an IR error and the status it is sent with (529 for
/// "overloaded": no upstream can take the request, or the upstream said so).
pub fn error_kind(error: &Error) -> (&'static str, u16) {
    let kind = match error.kind {
        ErrorKind::BadRequest
        | ErrorKind::NotImplemented
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::MethodNotAllowed => "invalid_request_error",
        ErrorKind::Unauthorized => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge | ErrorKind::HeadersTooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::RequestTimeout => "timeout_error",
        ErrorKind::Unavailable | ErrorKind::UpstreamError { status: 529 } => return ("overloaded_error", 529),
        ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamError { .. } | ErrorKind::Timeout | ErrorKind::Internal => {
            "api_error"
        }
    };
    (kind, error.status())
}

/// `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(error: &Error) -> wire::ErrorBody {
    wire::ErrorBody {
        kind: "error".into(),
        error: wire::ErrorObject {
            kind: error_kind(error).0.into(),
            message: error.message.clone(),
        },
    }
}

/// Anthropic's `stop_reason` for an IR finish. A stop is `stop_sequence` only when the
/// upstream named the sequence: llama-server's and Ollama's answers say `stop` for the end
/// of a turn and a stop sequence alike, so their stops stay `end_turn`.
fn stop_reason(finish: Option<FinishReason>, stop_sequence: Option<&str>) -> &'static str {
    match finish {
        Some(FinishReason::Stop) if stop_sequence.is_some() => "stop_sequence",
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        Some(FinishReason::Stop | FinishReason::Error) | None => "end_turn",
    }
}

/// Usage as Anthropic counts it: both numbers always, 0 where the upstream said nothing;
/// prompt tokens read from the upstream's cache apart, as `input_tokens` leaves them out.
fn usage(usage: &Usage) -> wire::Usage {
    let cached = usage.cached_tokens.unwrap_or(0);
    wire::Usage {
        input_tokens: Some(usage.prompt_tokens.unwrap_or(0).saturating_sub(cached)),
        output_tokens: usage.completion_tokens.unwrap_or(0),
        cache_creation_input_tokens: None,
        cache_read_input_tokens: usage.cached_tokens,
    }
}

/// A whole answer: thinking first, then text, then tool calls, as Claude orders them.
pub fn message(model: &str, answer: ChatResponse) -> wire::Message {
    let mut content = Vec::new();
    if !answer.reasoning.is_empty() {
        content.push(wire::Block::Thinking {
            thinking: answer.reasoning,
            signature: answer.reasoning_signature.unwrap_or_default(),
        });
    }
    if !answer.text.is_empty() {
        content.push(wire::Block::Text { text: answer.text });
    }
    for call in answer.tool_calls {
        content.push(wire::Block::ToolUse {
            id: tool_use_id(call.id),
            name: call.name,
            input: tool_input(&call.arguments),
        });
    }
    wire::Message {
        id: random_id("msg_"),
        kind: "message".into(),
        role: "assistant".into(),
        model: model.to_owned(),
        content,
        stop_reason: Some(stop_reason(answer.finish, answer.stop_sequence.as_deref()).into()),
        stop_sequence: answer
            .stop_sequence
            .filter(|_| answer.finish == Some(FinishReason::Stop)),
        usage: usage(&answer.usage),
    }
}

/// Arguments as the object Anthropic's `input` is; text that is not one (a model's
/// broken JSON) is kept whole rather than lost.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({"arguments": arguments}),
    }
}

fn tool_use_id(id: String) -> String {
    if id.is_empty() { random_id("toolu_") } else { id }
}

/// The kind of content block open in a stream.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Thinking,
    Text,
    /// A tool call, by its IR index.
    Tool(u32),
}

/// Encodes IR events as the Messages stream: each run of thinking, text or one tool
/// call's arguments is a content block, opened when its first piece comes and closed when
/// another kind begins or the answer ends.
pub struct EventEncoder {
    id: String,
    model: String,
    open: Option<Open>,
    /// The index the next block gets.
    next_index: u32,
    usage: Usage,
    finish: Option<FinishReason>,
    stop_sequence: Option<String>,
    /// The upstream's signature of the open thinking block, sent as it closes.
    signature: Option<String>,
}

impl EventEncoder {
    pub fn new(model: &str) -> Self {
        Self {
            id: random_id("msg_"),
            model: model.to_owned(),
            open: None,
            next_index: 0,
            usage: Usage::default(),
            finish: None,
            stop_sequence: None,
            signature: None,
        }
    }

    /// `message_start` (its usage still zero: the upstream reports it at the end, and
    /// `message_delta` carries it) and a `ping`.
    pub fn start(&self) -> Bytes {
        let mut out = Vec::new();
        let message = wire::Message {
            id: self.id.clone(),
            kind: "message".into(),
            role: "assistant".into(),
            model: self.model.clone(),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: wire::Usage {
                input_tokens: Some(0),
                ..Default::default()
            },
        };
        push(&mut out, &wire::StreamEvent::MessageStart { message });
        push(&mut out, &wire::StreamEvent::Ping);
        out.into()
    }

    /// The events for one IR event (none for events that only update state).
    pub fn encode(&mut self, event: ChatEvent) -> Option<Bytes> {
        let mut out = Vec::new();
        match event {
            ChatEvent::Reasoning(thinking) => {
                self.open_block(&mut out, Open::Thinking, || wire::Block::Thinking {
                    thinking: String::new(),
                    signature: String::new(),
                });
                self.delta(&mut out, wire::Delta::ThinkingDelta { thinking });
            }
            ChatEvent::Text(text) => {
                self.open_block(&mut out, Open::Text, || wire::Block::Text { text: String::new() });
                self.delta(&mut out, wire::Delta::TextDelta { text });
            }
            ChatEvent::ToolCall {
                index,
                id,
                name,
                arguments_delta,
            } => {
                self.open_block(&mut out, Open::Tool(index), || wire::Block::ToolUse {
                    id: tool_use_id(id.unwrap_or_default()),
                    name: name.unwrap_or_default(),
                    input: json!({}),
                });
                if !arguments_delta.is_empty() {
                    self.delta(
                        &mut out,
                        wire::Delta::InputJsonDelta {
                            partial_json: arguments_delta,
                        },
                    );
                }
            }
            ChatEvent::ReasoningSignature(signature) => self.signature = Some(signature),
            ChatEvent::StopSequence(sequence) => self.stop_sequence = Some(sequence),
            ChatEvent::Usage(u) => self.usage = u,
            ChatEvent::Finish(f) => self.finish = Some(f),
            ChatEvent::Logprobs(_) => {}
        }
        (!out.is_empty()).then(|| out.into())
    }

    fn open_block(&mut self, out: &mut Vec<u8>, kind: Open, block: impl FnOnce() -> wire::Block) {
        if self.open == Some(kind) {
            return;
        }
        self.close_block(out);
        self.open = Some(kind);
        let index = self.next_index;
        push(
            out,
            &wire::StreamEvent::ContentBlockStart {
                index,
                content_block: block(),
            },
        );
    }

    fn delta(&self, out: &mut Vec<u8>, delta: wire::Delta) {
        push(
            out,
            &wire::StreamEvent::ContentBlockDelta {
                index: self.next_index,
                delta,
            },
        );
    }

    /// Closes the open block; a thinking block ends with its signature: the upstream's,
    /// or empty (no upstream but Anthropic's signs its thinking).
    fn close_block(&mut self, out: &mut Vec<u8>) {
        let Some(open) = self.open.take() else { return };
        if open == Open::Thinking {
            let signature = self.signature.take().unwrap_or_default();
            self.delta(out, wire::Delta::SignatureDelta { signature });
        }
        push(out, &wire::StreamEvent::ContentBlockStop { index: self.next_index });
        self.next_index += 1;
    }

    /// The open block closed, `message_delta` (stop reason and usage) and `message_stop`.
    pub fn end(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.close_block(&mut out);
        push(
            &mut out,
            &wire::StreamEvent::MessageDelta {
                delta: wire::MessageDelta {
                    stop_reason: Some(stop_reason(self.finish, self.stop_sequence.as_deref()).into()),
                    stop_sequence: self
                        .stop_sequence
                        .take()
                        .filter(|_| self.finish == Some(FinishReason::Stop)),
                },
                usage: usage(&self.usage),
            },
        );
        push(&mut out, &wire::StreamEvent::MessageStop);
        out.into()
    }

    /// An error after the stream started: a final `error` event.
    pub fn error(&self, error: &Error) -> Bytes {
        let mut out = Vec::new();
        push(
            &mut out,
            &wire::StreamEvent::Error {
                error: error_body(error).error,
            },
        );
        out.into()
    }
}

/// Appends one SSE event: `event: TYPE` and its JSON as `data:`.
fn push(out: &mut Vec<u8>, event: &wire::StreamEvent) {
    let start = out.len();
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.name().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut *out, event).expect("events serialize");
    out.extend_from_slice(b"\n\n");
    debug!(target: "diglot::wire", frame = %String::from_utf8_lossy(&out[start..out.len() - 2]), "anthropic event");
}

/// The Messages stream of one answer. An error after the start is a final `error` event,
/// never a cut connection.
pub fn sse(mut encoder: EventEncoder, events: ChatStream) -> BoxStream<'static, Result<Bytes, Infallible>> {
    Box::pin(async_stream::stream! {
        yield Ok(encoder.start());
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => if let Some(frame) = encoder.encode(event) { yield Ok(frame) },
                Err(error) => {
                    yield Ok(encoder.error(&error));
                    return;
                }
            }
        }
        yield Ok(encoder.end());
    })
}

/// `GET /v1/models` in Anthropic's shape.
pub fn model_list(cards: &[ModelCard]) -> wire::ModelList {
    let data: Vec<wire::ModelInfo> = cards.iter().map(model_info).collect();
    wire::ModelList {
        first_id: data.first().map(|m| m.id.clone()),
        last_id: data.last().map(|m| m.id.clone()),
        has_more: false,
        data,
    }
}

pub fn model_info(card: &ModelCard) -> wire::ModelInfo {
    let created = chrono::DateTime::from_timestamp(card.created, 0).unwrap_or_default();
    wire::ModelInfo {
        kind: "model".into(),
        id: card.id.clone(),
        display_name: card.display_name.clone().unwrap_or_else(|| card.id.clone()),
        created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(frames: &[Bytes]) -> Vec<(String, Value)> {
        frames
            .iter()
            .flat_map(|f| {
                std::str::from_utf8(f)
                    .unwrap()
                    .split("\n\n")
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.strip_prefix("event: ").unwrap().to_owned(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn blocks_open_and_close_in_order() {
        let mut e = EventEncoder::new("m");
        let mut frames = vec![e.start()];
        for event in [
            ChatEvent::Reasoning("hmm".into()),
            ChatEvent::Text("Hi".into()),
            ChatEvent::Text("!".into()),
            ChatEvent::ToolCall {
                index: 0,
                id: Some("call_1".into()),
                name: Some("f".into()),
                arguments_delta: "{\"a\"".into(),
            },
            ChatEvent::ToolCall {
                index: 0,
                id: None,
                name: None,
                arguments_delta: ":1}".into(),
            },
            ChatEvent::Usage(Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(5),
                ..Default::default()
            }),
            ChatEvent::Finish(FinishReason::ToolCalls),
        ] {
            frames.extend(e.encode(event));
        }
        frames.push(e.end());
        let all = events(&frames);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(all[4].1["delta"], json!({"type": "signature_delta", "signature": ""}));
        assert_eq!(
            all[10].1,
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}})
        );
        assert_eq!(
            all[14].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"input_tokens": 3, "output_tokens": 5}})
        );
    }
}
