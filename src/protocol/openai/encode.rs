//! OpenAI encoding (IR → wire) for the frontend: answers as SSE chunks or one JSON body,
//! exactly as OpenAI shapes them, and errors in OpenAI's error object.

use std::convert::Infallible;
use std::io::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::debug;

use super::wire;
use crate::config::OpenAiConfig;
use crate::ir::{
    ChatEvent, ChatResponse, ChatStream, EmbedResponse, Error, ErrorKind, FinishReason, ModelCard, TokenLogprob, Usage,
    random_id,
};

/// OpenAI's error object: `{"error":{"message","type","param","code"}}`.
pub fn error_body(error: &Error) -> wire::ErrorBody {
    let (kind, code) = match error.kind {
        ErrorKind::BadRequest => ("invalid_request_error", None),
        ErrorKind::Unauthorized => ("authentication_error", Some("invalid_api_key")),
        ErrorKind::Forbidden => ("permission_error", None),
        ErrorKind::NotFound if error.param.as_deref() == Some("model") => {
            ("invalid_request_error", Some("model_not_found"))
        }
        ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
        ErrorKind::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
        ErrorKind::PayloadTooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrorKind::HeadersTooLarge => ("invalid_request_error", Some("request_header_fields_too_large")),
        ErrorKind::UnsupportedMediaType => ("invalid_request_error", Some("unsupported_media_type")),
        ErrorKind::RequestTimeout => ("invalid_request_error", Some("request_timeout")),
        ErrorKind::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::UpstreamUnavailable => ("api_error", Some("upstream_unavailable")),
        ErrorKind::UpstreamError { .. } => ("api_error", Some("upstream_error")),
        ErrorKind::Timeout => ("api_error", Some("timeout")),
        ErrorKind::Unavailable => ("api_error", Some("service_unavailable")),
        ErrorKind::NotImplemented => ("invalid_request_error", Some("not_implemented")),
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

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Chat,
    Completion,
}

/// Encodes IR events as OpenAI chunks: one id and one `created` for the whole answer,
/// `role` only in each choice's first delta, `finish_reason` in its own chunk, and the
/// usage chunk (`choices: []`) last when it was asked for.
pub struct ChunkEncoder {
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
    pub fn new(config: &OpenAiConfig, model: &str, kind: Kind, include_usage: bool, choices: usize) -> Self {
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
    pub fn encode(&mut self, index: u32, event: ChatEvent) -> Option<Bytes> {
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
            // OpenAI's shapes have no reasoning signature, and no field naming the stop
            // sequence (`finish_reason` is `stop` either way).
            ChatEvent::Reasoning(_) | ChatEvent::ReasoningSignature(_) | ChatEvent::StopSequence(_) => {
                return finish_frames(out);
            }
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
                text: None,
                logprobs: logprobs.filter(|l| !l.is_empty()).map(|l| chat_logprobs(&l)),
                finish_reason: finish.map(str::to_owned),
            }],
            usage: self.usage_placeholder(),
            timings: None,
            error: None,
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
        // The frame's size, near enough that it is written with no reallocation.
        out.reserve(self.text_prefix.len() + text.len() + text.len() / 8 + 64);
        out.extend_from_slice(&self.text_prefix);
        write!(out, "{index}").expect("writing to a Vec cannot fail");
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
    pub fn end(&self) -> Bytes {
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
                        timings: None,
                        error: None,
                    };
                    self.push_frame(&mut out, &chunk);
                }
                Kind::Completion => self.push_frame(&mut out, &self.completion_chunk(Vec::new(), usage)),
            }
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out.into()
    }

    pub fn chat_completion(&self, answers: Vec<ChatResponse>, logprobs: bool) -> wire::ChatCompletion {
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

    pub fn completion(&self, answers: Vec<ChatResponse>, logprobs: bool) -> wire::Completion {
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
pub fn sse(mut encoder: ChunkEncoder, streams: Vec<ChatStream>) -> BoxStream<'static, Result<Bytes, Infallible>> {
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
        prompt_tokens: Some(usage.prompt_tokens.unwrap_or(0)),
        completion_tokens: Some(usage.completion_tokens.unwrap_or(0)),
        total_tokens: usage.total_tokens(),
        prompt_tokens_details: usage
            .cached_tokens
            .map(|c| wire::PromptTokensDetails { cached_tokens: Some(c) }),
        completion_tokens_details: None,
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

/// An embeddings answer; vectors as floats or, with `base64`, as base64 of their bytes.
pub fn embedding_response(model: String, answer: EmbedResponse, base64: bool) -> wire::EmbeddingResponse {
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
    wire::EmbeddingResponse {
        object: "list".into(),
        data,
        model,
        usage: wire::EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }
}

/// `GET /v1/models`.
pub fn model_list(cards: &[ModelCard]) -> wire::ModelList {
    wire::ModelList {
        object: "list".into(),
        data: cards.iter().map(model_entry).collect(),
    }
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

pub fn model_entry(card: &ModelCard) -> wire::Model {
    wire::Model {
        id: card.id.clone(),
        object: "model".into(),
        created: card.created,
        owned_by: card.owned_by.clone(),
        name: card.display_name.clone(),
        description: card.description.clone(),
        ..Default::default()
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

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let Value::String(s) = encode_vector(vec![1.0, -2.5], true) else {
            panic!()
        };
        let bytes = STANDARD.decode(s).unwrap();
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -2.5);
    }
}
