//! A fast fake LLM upstream for demos and benchmarks.
//!
//! It speaks both APIs diglot can talk to at its back, on one port, with the exact wire
//! shapes of the real servers (see `/work/shared/reference/wire-formats.md`):
//!
//! - Ollama: `GET|HEAD /`, `GET|HEAD /api/version`, `GET|HEAD /api/tags`, `POST /api/show`,
//!   `POST /api/chat`, `POST /api/generate` (NDJSON stream, or one object with
//!   `"stream":false`), `POST /api/embed`, `POST /api/embeddings` (legacy).
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/completions` (SSE with `"stream":true`,
//!   `stream_options.include_usage` honoured), `POST /v1/embeddings` (`float` or `base64`),
//!   `GET /v1/models`, `GET /v1/models/{id}`.
//!
//! Every answer is N copies of `--chunk-text`, one per streamed chunk, so the cost of a
//! request is a few small writes and no model at all: what a benchmark measures through
//! diglot is diglot. Any model name is accepted and echoed back as sent. Prompt tokens are
//! the number of words in the request's JSON string values; completion tokens are N
//! (fewer when `max_tokens`, `max_completion_tokens` or `options.num_predict` cut the
//! answer, which then ends with `length`). Embeddings are deterministic per input string
//! and L2-normalised.
//!
//! One server can play several scenarios: the headers `x-mock-chunks`, `x-mock-delay-ms`
//! and `x-mock-ttft-ms` override the flags for a single request.
//!
//! Run it:
//!
//! ```sh
//! cargo run --release --example mock_upstream -- --chunks 20 --delay-ms 5
//! ```
//!
//! and try it:
//!
//! ```sh
//! curl -N localhost:11435/api/chat -d '{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}'
//! curl localhost:11435/api/chat -d '{"model":"llama3.2","messages":[],"stream":false}'
//! curl -N localhost:11435/v1/chat/completions -H 'x-mock-chunks: 3' \
//!   -d '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}'
//! curl localhost:11435/v1/embeddings -d '{"model":"nomic-embed-text","input":["a","b"],"encoding_format":"base64"}'
//! curl localhost:11435/api/tags
//! ```
//!
//! It prints `listening on http://ADDR` once bound (`--listen 127.0.0.1:0` picks a free port).

use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use rand::Rng as _;
use salvo::conn::Acceptor as _;
use salvo::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use salvo::http::{ParseError, StatusCode};
use salvo::prelude::*;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Requests larger than this are refused, as a real server would.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// What Ollama reports when the model was already in memory.
const LOAD_NS: u64 = 2_146_042;
const JSON: &str = "application/json";
const OLLAMA_JSON: &str = "application/json; charset=utf-8";
const NDJSON: &str = "application/x-ndjson";
const SSE: &str = "text/event-stream; charset=utf-8";
const FINGERPRINT: &str = "fp_mock0000";

#[derive(Parser, Debug)]
#[command(about = "A fast fake Ollama + OpenAI upstream for diglot demos and benchmarks")]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:11435")]
    listen: SocketAddr,
    /// Content chunks per answer (header `x-mock-chunks`).
    #[arg(long, default_value_t = 8)]
    chunks: u32,
    /// The text of every content chunk.
    #[arg(long, default_value = "hello ")]
    chunk_text: String,
    /// Milliseconds between content chunks (header `x-mock-delay-ms`).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Milliseconds before the first chunk (header `x-mock-ttft-ms`).
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Embedding dimensions when the request sets none.
    #[arg(long, default_value_t = 8)]
    dim: usize,
    /// Tokio worker threads; 1 leaves the other cores to the gateway under test.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Everything fixed at start-up, shared by every request.
struct Mock {
    chunks: u32,
    delay: Duration,
    ttft: Duration,
    dim: usize,
    /// The chunk text as a JSON string literal, quotes included.
    piece: String,
    tags: Bytes,
    models: Bytes,
    /// Unix seconds the fake models were "pulled" at.
    modified: i64,
    modified_at: String,
}

static MOCK: OnceLock<Mock> = OnceLock::new();

fn mock() -> &'static Mock {
    MOCK.get().expect("MOCK is set before the server starts")
}

struct ModelSpec {
    name: &'static str,
    family: &'static str,
    parameter_size: &'static str,
    quantization: &'static str,
    size: u64,
    context_length: u64,
    embedding_length: u64,
    capabilities: &'static [&'static str],
}

const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "llama3.2:latest",
        family: "llama",
        parameter_size: "3.2B",
        quantization: "Q4_K_M",
        size: 2_019_393_189,
        context_length: 131_072,
        embedding_length: 3072,
        capabilities: &["completion", "tools"],
    },
    ModelSpec {
        name: "qwen3:8b",
        family: "qwen3",
        parameter_size: "8.2B",
        quantization: "Q4_K_M",
        size: 5_225_388_164,
        context_length: 40_960,
        embedding_length: 4096,
        capabilities: &["completion", "tools"],
    },
    ModelSpec {
        name: "mistral:7b",
        family: "llama",
        parameter_size: "7.2B",
        quantization: "Q4_0",
        size: 4_113_301_824,
        context_length: 32_768,
        embedding_length: 4096,
        capabilities: &["completion", "tools"],
    },
    ModelSpec {
        name: "nomic-embed-text:latest",
        family: "nomic-bert",
        parameter_size: "137M",
        quantization: "F16",
        size: 274_302_450,
        context_length: 2048,
        embedding_length: 768,
        capabilities: &["embedding"],
    },
];

/// The entry for `name`, with or without its `:latest` tag; an unknown name gets the
/// first model's details, since the mock serves any model.
fn model_spec(name: &str) -> &'static ModelSpec {
    MODELS
        .iter()
        .find(|m| m.name == name || m.name.strip_suffix(":latest") == Some(name))
        .unwrap_or(&MODELS[0])
}

fn details(spec: &ModelSpec) -> serde_json::Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": spec.parameter_size,
        "quantization_level": spec.quantization,
    })
}

impl Mock {
    fn new(args: &Args) -> Self {
        let modified = chrono::Utc::now() - chrono::TimeDelta::days(3);
        let modified_at = modified.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let tags = json!({
            "models": MODELS.iter().map(|m| json!({
                "name": m.name,
                "model": m.name,
                "modified_at": modified_at,
                "size": m.size,
                "digest": digest(m.name),
                "details": details(m),
            })).collect::<Vec<_>>()
        });
        let models = json!({
            "object": "list",
            "data": MODELS.iter().map(|m| json!({
                "id": m.name, "object": "model", "created": modified.timestamp(), "owned_by": "library",
            })).collect::<Vec<_>>()
        });
        Self {
            chunks: args.chunks,
            delay: Duration::from_millis(args.delay_ms),
            ttft: Duration::from_millis(args.ttft_ms),
            dim: args.dim.max(1),
            piece: serde_json::to_string(&args.chunk_text).expect("a string serialises"),
            tags: serde_json::to_vec(&tags).expect("json serialises").into(),
            models: serde_json::to_vec(&models).expect("json serialises").into(),
            modified: modified.timestamp(),
            modified_at,
        }
    }

    /// The chunk text, JSON-escaped, without its quotes.
    fn piece_inner(&self) -> &str {
        &self.piece[1..self.piece.len() - 1]
    }
}

/// A stable fake sha256: 64 hex digits derived from the name.
fn digest(name: &str) -> String {
    let mut state = fnv1a(name.as_bytes());
    (0..4).fold(String::with_capacity(64), |mut hex, _| {
        let _ = write!(hex, "{:016x}", splitmix64(&mut state));
        hex
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------
// Request parsing: only the fields that change the answer.

/// The knobs of one request: the flags, overridden by `x-mock-*` headers.
struct Scenario {
    chunks: u32,
    delay: Duration,
    ttft: Duration,
}

impl Scenario {
    fn of(req: &Request) -> Self {
        let m = mock();
        let header = |name: &str| -> Option<u64> { req.headers().get(name)?.to_str().ok()?.trim().parse().ok() };
        Self {
            chunks: header("x-mock-chunks").map_or(m.chunks, |n| n.min(u64::from(u32::MAX)) as u32),
            delay: header("x-mock-delay-ms").map_or(m.delay, Duration::from_millis),
            ttft: header("x-mock-ttft-ms").map_or(m.ttft, Duration::from_millis),
        }
    }
}

/// The parts of a chat or completion request the mock looks at; the rest is skipped
/// by the parser without being kept.
#[derive(Deserialize)]
struct GenerateBody {
    #[serde(default)]
    model: String,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    options: Option<OllamaOptions>,
    messages: Option<IsEmpty>,
    prompt: Option<IsEmpty>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct OllamaOptions {
    num_predict: Option<i64>,
}

#[derive(Deserialize)]
struct EmbedBody {
    #[serde(default)]
    model: String,
    input: Option<EmbedInput>,
    /// The legacy `/api/embeddings` field.
    prompt: Option<String>,
    dimensions: Option<usize>,
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

/// Whether a JSON value is empty (`""`, `[]` or `null`), read without keeping it.
struct IsEmpty(bool);

impl<'de> Deserialize<'de> for IsEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Check;
        impl<'de> Visitor<'de> for Check {
            type Value = IsEmpty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<IsEmpty, E> {
                Ok(IsEmpty(v.is_empty()))
            }
            fn visit_unit<E>(self) -> Result<IsEmpty, E> {
                Ok(IsEmpty(true))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IsEmpty, E> {
                Ok(IsEmpty(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<IsEmpty, E> {
                Ok(IsEmpty(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<IsEmpty, E> {
                Ok(IsEmpty(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IsEmpty, E> {
                Ok(IsEmpty(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsEmpty, A::Error> {
                let mut empty = true;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    empty = false;
                }
                Ok(IsEmpty(empty))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsEmpty, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsEmpty(false))
            }
        }
        deserializer.deserialize_any(Check)
    }
}

/// A rough prompt token count: the words inside the JSON string values of the body
/// (keys are not counted), in one pass over the bytes without parsing.
fn rough_prompt_tokens(body: &[u8]) -> u32 {
    let (mut total, mut pending) = (0u32, 0u32);
    let (mut in_string, mut escaped, mut in_word, mut after_string) = (false, false, false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
                // `\n`, `\t` and `\r` are whitespace in the text.
                if matches!(b, b'n' | b't' | b'r') {
                    in_word = false;
                }
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                after_string = true;
            } else if b.is_ascii_whitespace() {
                in_word = false;
            } else if !in_word {
                in_word = true;
                pending += 1;
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if after_string {
            after_string = false;
            if b != b':' {
                total += pending;
            }
            pending = 0;
        }
        if b == b'"' {
            in_string = true;
            in_word = false;
        }
    }
    total.saturating_add(pending).max(1)
}

fn words(text: &str) -> u32 {
    (text.split_whitespace().count() as u32).max(1)
}

// ---------------------------------------------------------------------------------------
// Responses.

fn send(res: &mut Response, status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) {
    res.status_code(status);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.body(body.into());
}

fn send_json(res: &mut Response, body: &impl Serialize) {
    send(res, StatusCode::OK, JSON, serde_json::to_vec(body).unwrap_or_default());
}

/// Renders an error in the shape of the API the client called.
fn send_error(res: &mut Response, openai: bool, status: StatusCode, message: &str) {
    let body = if openai {
        let kind = if status == StatusCode::NOT_FOUND {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
    } else {
        json!({ "error": message })
    };
    let content_type = if openai { JSON } else { OLLAMA_JSON };
    send(res, status, content_type, serde_json::to_vec(&body).unwrap_or_default());
}

async fn read_body(req: &mut Request, res: &mut Response, openai: bool) -> Option<Bytes> {
    match req.payload_with_max_size(MAX_BODY_BYTES).await {
        Ok(body) => Some(body.clone()),
        Err(ParseError::PayloadTooLarge) => {
            send_error(res, openai, StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            None
        }
        Err(e) => {
            send_error(
                res,
                openai,
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            );
            None
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], res: &mut Response, openai: bool) -> Option<T> {
    match serde_json::from_slice(body) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            send_error(res, openai, StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"));
            None
        }
    }
}

fn push_timestamp(out: &mut String) {
    out.push_str(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
}

fn random_id(prefix: &str, len: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    id.extend(
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(len)
            .map(char::from),
    );
    id
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------------------------------
// Generation: one `Reply` renders every frame of one answer.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    OllamaChat,
    OllamaGenerate,
    OpenAiChat,
    OpenAiCompletion,
}

impl Api {
    fn is_openai(self) -> bool {
        matches!(self, Api::OpenAiChat | Api::OpenAiCompletion)
    }
}

struct Reply {
    api: Api,
    /// The model as a JSON string literal, quotes included.
    model: String,
    id: String,
    created: i64,
    /// What every frame starts with: `{"model":M,"created_at":"` for Ollama, the SSE
    /// prefix up to `"choices":[` for OpenAI.
    head: String,
    pieces: u32,
    finish: &'static str,
    prompt_tokens: u32,
    include_usage: bool,
    started: Instant,
    first: Option<Instant>,
}

impl Reply {
    fn new(api: Api, model: &str, pieces: u32, finish: &'static str, prompt_tokens: u32, include_usage: bool) -> Self {
        let model = serde_json::to_string(model).expect("a string serialises");
        let created = unix_now();
        let (id, head) = match api {
            Api::OllamaChat | Api::OllamaGenerate => (String::new(), format!("{{\"model\":{model},\"created_at\":\"")),
            Api::OpenAiChat | Api::OpenAiCompletion => {
                // The legacy completions API has no service tier.
                let (id, object, tier) = if api == Api::OpenAiChat {
                    (
                        random_id("chatcmpl-", 29),
                        "chat.completion.chunk",
                        "\"service_tier\":\"default\",",
                    )
                } else {
                    (random_id("cmpl-", 29), "text_completion", "")
                };
                let head = format!(
                    "data: {{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":{created},\"model\":{model},\
                     {tier}\"system_fingerprint\":\"{FINGERPRINT}\",\"choices\":["
                );
                (id, head)
            }
        };
        Self {
            api,
            model,
            id,
            created,
            head,
            pieces,
            finish,
            prompt_tokens,
            include_usage,
            started: Instant::now(),
            first: None,
        }
    }

    /// Frame `i` of the stream: content chunks for `i < pieces`, then the closing frame(s).
    fn frame(&mut self, i: u32) -> Bytes {
        let first = *self.first.get_or_insert_with(Instant::now);
        let piece = &mock().piece;
        let mut out = String::with_capacity(self.head.len() + piece.len() + 256);
        let last = i >= self.pieces;
        match self.api {
            Api::OllamaChat | Api::OllamaGenerate => {
                out.push_str(&self.head);
                push_timestamp(&mut out);
                let chat = self.api == Api::OllamaChat;
                out.push_str(if chat {
                    "\",\"message\":{\"role\":\"assistant\",\"content\":"
                } else {
                    "\",\"response\":"
                });
                out.push_str(if last { "\"\"" } else { piece });
                if chat {
                    out.push('}');
                }
                if last {
                    self.push_done(&mut out, first);
                } else {
                    out.push_str(",\"done\":false}");
                }
                out.push('\n');
            }
            Api::OpenAiChat => {
                if i == 0 {
                    self.push_event(
                        &mut out,
                        &[r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#],
                    );
                }
                if last {
                    self.push_event(
                        &mut out,
                        &[
                            r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":""#,
                            self.finish,
                            "\"}",
                        ],
                    );
                    self.push_usage_event(&mut out);
                } else {
                    let choice = [
                        r#"{"index":0,"delta":{"content":"#,
                        piece,
                        r#"},"logprobs":null,"finish_reason":null}"#,
                    ];
                    self.push_event(&mut out, &choice);
                }
            }
            Api::OpenAiCompletion => {
                if last {
                    self.push_event(
                        &mut out,
                        &[
                            r#"{"text":"","index":0,"logprobs":null,"finish_reason":""#,
                            self.finish,
                            "\"}",
                        ],
                    );
                    self.push_usage_event(&mut out);
                } else {
                    self.push_event(
                        &mut out,
                        &[
                            r#"{"text":"#,
                            piece,
                            r#","index":0,"logprobs":null,"finish_reason":null}"#,
                        ],
                    );
                }
            }
        }
        Bytes::from(out)
    }

    fn push_event(&self, out: &mut String, choice: &[&str]) {
        out.push_str(&self.head);
        choice.iter().for_each(|part| out.push_str(part));
        out.push_str(if self.include_usage {
            "],\"usage\":null}\n\n"
        } else {
            "]}\n\n"
        });
    }

    /// The `choices:[]` usage chunk (when asked for) and `[DONE]`.
    fn push_usage_event(&self, out: &mut String) {
        if self.include_usage {
            out.push_str(&self.head);
            out.push_str("],\"usage\":");
            self.push_openai_usage(out);
            out.push_str("}\n\n");
        }
        out.push_str("data: [DONE]\n\n");
    }

    fn push_openai_usage(&self, out: &mut String) {
        let (prompt, completion) = (self.prompt_tokens, self.pieces);
        let _ = write!(
            out,
            "{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}",
            u64::from(prompt) + u64::from(completion)
        );
        if self.api == Api::OpenAiChat {
            out.push_str(
                ",\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\
                 \"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\
                 \"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}",
            );
        }
        out.push('}');
    }

    /// The tail of Ollama's final object: `done`, `done_reason`, `context` and the
    /// timings, measured, but never faster than 10k prompt tokens/s and 1k tokens/s.
    fn push_done(&self, out: &mut String, first: Instant) {
        let now = Instant::now();
        let prompt_eval =
            (first.duration_since(self.started).as_nanos() as u64).max(u64::from(self.prompt_tokens) * 100_000);
        let eval = (now.duration_since(first).as_nanos() as u64).max(u64::from(self.pieces) * 1_000_000);
        let _ = write!(out, ",\"done\":true,\"done_reason\":\"{}\"", self.finish);
        if self.api == Api::OllamaGenerate {
            out.push_str(",\"context\":[");
            for token in 1..=(self.prompt_tokens + self.pieces).min(4096) {
                if token > 1 {
                    out.push(',');
                }
                let _ = write!(out, "{token}");
            }
            out.push(']');
        }
        let _ = write!(
            out,
            ",\"total_duration\":{},\"load_duration\":{LOAD_NS},\"prompt_eval_count\":{},\
             \"prompt_eval_duration\":{prompt_eval},\"eval_count\":{},\"eval_duration\":{eval}}}",
            LOAD_NS + prompt_eval + eval,
            self.prompt_tokens,
            self.pieces,
        );
    }

    fn push_full_content(&self, out: &mut String) {
        let inner = mock().piece_inner();
        out.reserve(inner.len() * self.pieces as usize + 2);
        out.push('"');
        (0..self.pieces).for_each(|_| out.push_str(inner));
        out.push('"');
    }

    /// The whole answer as one JSON object, for `"stream": false`.
    fn whole(&mut self) -> Bytes {
        let first = *self.first.get_or_insert_with(Instant::now);
        let mut out = String::with_capacity(self.head.len() + 512);
        match self.api {
            Api::OllamaChat | Api::OllamaGenerate => {
                out.push_str(&self.head);
                push_timestamp(&mut out);
                if self.api == Api::OllamaChat {
                    out.push_str("\",\"message\":{\"role\":\"assistant\",\"content\":");
                    self.push_full_content(&mut out);
                    out.push('}');
                } else {
                    out.push_str("\",\"response\":");
                    self.push_full_content(&mut out);
                }
                self.push_done(&mut out, first);
            }
            Api::OpenAiChat => {
                let _ = write!(
                    out,
                    "{{\"id\":\"{}\",\"object\":\"chat.completion\",\"created\":{},\"model\":{},\
                     \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":",
                    self.id, self.created, self.model
                );
                self.push_full_content(&mut out);
                let _ = write!(
                    out,
                    ",\"refusal\":null,\"annotations\":[]}},\"logprobs\":null,\"finish_reason\":\"{}\"}}],\"usage\":",
                    self.finish
                );
                self.push_openai_usage(&mut out);
                let _ = write!(
                    out,
                    ",\"service_tier\":\"default\",\"system_fingerprint\":\"{FINGERPRINT}\"}}"
                );
            }
            Api::OpenAiCompletion => {
                let _ = write!(
                    out,
                    "{{\"id\":\"{}\",\"object\":\"text_completion\",\"created\":{},\"model\":{},\"choices\":[{{\"text\":",
                    self.id, self.created, self.model
                );
                self.push_full_content(&mut out);
                let _ = write!(
                    out,
                    ",\"index\":0,\"logprobs\":null,\"finish_reason\":\"{}\"}}],\"usage\":",
                    self.finish
                );
                self.push_openai_usage(&mut out);
                let _ = write!(out, ",\"system_fingerprint\":\"{FINGERPRINT}\"}}");
            }
        }
        Bytes::from(out)
    }
}

async fn generate(req: &mut Request, res: &mut Response, api: Api) {
    let openai = api.is_openai();
    let scenario = Scenario::of(req);
    let Some(body) = read_body(req, res, openai).await else {
        return;
    };
    let Some(parsed) = parse::<GenerateBody>(&body, res, openai) else {
        return;
    };
    if parsed.model.is_empty() {
        let message = if openai {
            "you must provide a model parameter"
        } else {
            "model is required"
        };
        return send_error(res, openai, StatusCode::BAD_REQUEST, message);
    }

    // Ollama loads the model and says so when there is nothing to answer.
    let nothing_asked = match api {
        Api::OllamaChat => parsed.messages.as_ref().is_none_or(|m| m.0),
        Api::OllamaGenerate => parsed.prompt.as_ref().is_none_or(|p| p.0),
        _ => false,
    };
    if nothing_asked {
        let mut out = format!(
            "{{\"model\":{},\"created_at\":\"",
            serde_json::to_string(&parsed.model).unwrap_or_default()
        );
        push_timestamp(&mut out);
        out.push_str(if api == Api::OllamaChat {
            "\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"load\"}"
        } else {
            "\",\"response\":\"\",\"done\":true,\"done_reason\":\"load\"}"
        });
        return send(res, StatusCode::OK, OLLAMA_JSON, out);
    }

    let limit = [
        parsed.max_tokens,
        parsed.max_completion_tokens,
        parsed.options.and_then(|o| o.num_predict),
    ]
    .into_iter()
    .flatten()
    .filter(|&n| n > 0)
    .min();
    let (pieces, finish) = match limit {
        Some(limit) if limit < i64::from(scenario.chunks) => (limit as u32, "length"),
        _ => (scenario.chunks, "stop"),
    };
    let include_usage = parsed.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let mut reply = Reply::new(
        api,
        &parsed.model,
        pieces,
        finish,
        rough_prompt_tokens(&body),
        include_usage,
    );

    // Ollama streams unless told not to; OpenAI the other way round.
    if !parsed.stream.unwrap_or(!openai) {
        if !scenario.ttft.is_zero() {
            tokio::time::sleep(scenario.ttft).await;
        }
        reply.first = Some(Instant::now());
        let generating = scenario.delay * pieces.saturating_sub(1);
        if !generating.is_zero() {
            tokio::time::sleep(generating).await;
        }
        let content_type = if openai { JSON } else { OLLAMA_JSON };
        return send(res, StatusCode::OK, content_type, reply.whole());
    }

    res.status_code(StatusCode::OK);
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if openai { SSE } else { NDJSON }),
    );
    if openai {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if scenario.ttft.is_zero() && scenario.delay.is_zero() {
        res.stream(futures::stream::iter(0..=pieces).map(move |i| Ok::<_, Infallible>(reply.frame(i))));
    } else {
        res.stream(async_stream::stream! {
            for i in 0..=pieces {
                let wait = if i == 0 { scenario.ttft } else if i < pieces { scenario.delay } else { Duration::ZERO };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                yield Ok::<_, Infallible>(reply.frame(i));
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Embeddings.

/// A deterministic unit vector for `seed` (a hash of the input), so equal inputs embed
/// equally, as a cache in front of the mock would expect.
fn embedding(seed: u64, dim: usize, normalise: bool) -> Vec<f32> {
    let mut state = seed;
    let mut vector: Vec<f32> = (0..dim)
        .map(|_| ((splitmix64(&mut state) >> 40) as f32 / (1u64 << 23) as f32) - 1.0)
        .collect();
    if normalise {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
    }
    vector
}

/// Each input's hash seed and word count.
fn embed_inputs(input: EmbedInput) -> Vec<(u64, u32)> {
    let tokens = |ids: &[u32]| {
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        (fnv1a(&bytes), (ids.len() as u32).max(1))
    };
    match input {
        EmbedInput::One(text) => vec![(fnv1a(text.as_bytes()), words(&text))],
        EmbedInput::Many(texts) => texts.iter().map(|t| (fnv1a(t.as_bytes()), words(t))).collect(),
        EmbedInput::Tokens(ids) => vec![tokens(&ids)],
        EmbedInput::TokenBatches(batches) => batches.iter().map(|ids| tokens(ids)).collect(),
    }
}

#[derive(Serialize)]
struct OllamaEmbedResponse<'a> {
    model: &'a str,
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: u32,
}

#[handler]
async fn ollama_embed(req: &mut Request, res: &mut Response) {
    let Some(body) = read_body(req, res, false).await else {
        return;
    };
    let Some(parsed) = parse::<EmbedBody>(&body, res, false) else {
        return;
    };
    if parsed.model.is_empty() {
        return send_error(res, false, StatusCode::BAD_REQUEST, "model is required");
    }
    let Some(input) = parsed.input else {
        return send_error(res, false, StatusCode::BAD_REQUEST, "invalid input type");
    };
    let dim = parsed.dimensions.filter(|&d| d > 0).unwrap_or(mock().dim);
    let inputs = embed_inputs(input);
    let prompt_eval_count = inputs.iter().map(|&(_, n)| n).sum::<u32>();
    let embeddings = inputs.into_iter().map(|(seed, _)| embedding(seed, dim, true)).collect();
    let eval = u64::from(prompt_eval_count) * 100_000;
    let answer = OllamaEmbedResponse {
        model: &parsed.model,
        embeddings,
        total_duration: LOAD_NS + eval,
        load_duration: LOAD_NS,
        prompt_eval_count,
    };
    send(
        res,
        StatusCode::OK,
        OLLAMA_JSON,
        serde_json::to_vec(&answer).unwrap_or_default(),
    );
}

/// The legacy endpoint: one `prompt`, one vector, not normalised, no usage.
#[handler]
async fn ollama_embeddings(req: &mut Request, res: &mut Response) {
    let Some(body) = read_body(req, res, false).await else {
        return;
    };
    let Some(parsed) = parse::<EmbedBody>(&body, res, false) else {
        return;
    };
    let prompt = parsed.prompt.unwrap_or_default();
    let vector = if prompt.is_empty() {
        Vec::new()
    } else {
        embedding(fnv1a(prompt.as_bytes()), mock().dim, false)
    };
    let body = serde_json::to_vec(&json!({ "embedding": vector })).unwrap_or_default();
    send(res, StatusCode::OK, OLLAMA_JSON, body);
}

#[derive(Serialize)]
struct OpenAiEmbedResponse<'a> {
    object: &'static str,
    data: Vec<OpenAiEmbedding>,
    model: &'a str,
    usage: OpenAiEmbedUsage,
}

#[derive(Serialize)]
struct OpenAiEmbedding {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct OpenAiEmbedUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

#[handler]
async fn openai_embeddings(req: &mut Request, res: &mut Response) {
    let Some(body) = read_body(req, res, true).await else {
        return;
    };
    let Some(parsed) = parse::<EmbedBody>(&body, res, true) else {
        return;
    };
    if parsed.model.is_empty() {
        return send_error(res, true, StatusCode::BAD_REQUEST, "you must provide a model parameter");
    }
    let base64 = match parsed.encoding_format.as_deref() {
        None => false,
        Some(f) if f.eq_ignore_ascii_case("float") => false,
        Some(f) if f.eq_ignore_ascii_case("base64") => true,
        Some(f) => {
            let message = format!("invalid encoding_format {f:?}: use \"float\" or \"base64\"");
            return send_error(res, true, StatusCode::BAD_REQUEST, &message);
        }
    };
    let inputs = parsed.input.map(embed_inputs).unwrap_or_default();
    if inputs.is_empty() {
        return send_error(
            res,
            true,
            StatusCode::BAD_REQUEST,
            "invalid input: expected a string or an array of strings",
        );
    }
    let dim = parsed.dimensions.filter(|&d| d > 0).unwrap_or(mock().dim);
    let prompt_tokens = inputs.iter().map(|&(_, n)| n).sum::<u32>();
    let data = inputs
        .into_iter()
        .enumerate()
        .map(|(index, (seed, _))| {
            let vector = embedding(seed, dim, true);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingData::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingData::Float(vector)
            };
            OpenAiEmbedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let answer = OpenAiEmbedResponse {
        object: "list",
        data,
        model: &parsed.model,
        usage: OpenAiEmbedUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    send_json(res, &answer);
}

// ---------------------------------------------------------------------------------------
// Handlers.

#[handler]
async fn ollama_chat(req: &mut Request, res: &mut Response) {
    generate(req, res, Api::OllamaChat).await;
}

#[handler]
async fn ollama_generate(req: &mut Request, res: &mut Response) {
    generate(req, res, Api::OllamaGenerate).await;
}

#[handler]
async fn openai_chat(req: &mut Request, res: &mut Response) {
    generate(req, res, Api::OpenAiChat).await;
}

#[handler]
async fn openai_completions(req: &mut Request, res: &mut Response) {
    generate(req, res, Api::OpenAiCompletion).await;
}

#[handler]
async fn ollama_root(res: &mut Response) {
    send(
        res,
        StatusCode::OK,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"Ollama is running"),
    );
}

#[handler]
async fn ollama_version(res: &mut Response) {
    send(
        res,
        StatusCode::OK,
        OLLAMA_JSON,
        Bytes::from_static(br#"{"version":"0.12.11"}"#),
    );
}

#[handler]
async fn ollama_tags(res: &mut Response) {
    send(res, StatusCode::OK, OLLAMA_JSON, mock().tags.clone());
}

#[derive(Deserialize)]
struct ShowBody {
    #[serde(default)]
    model: String,
    /// The old field name, still sent by some clients.
    #[serde(default)]
    name: String,
}

#[handler]
async fn ollama_show(req: &mut Request, res: &mut Response) {
    let Some(body) = read_body(req, res, false).await else {
        return;
    };
    let Some(parsed) = parse::<ShowBody>(&body, res, false) else {
        return;
    };
    let name = if parsed.model.is_empty() {
        parsed.name
    } else {
        parsed.model
    };
    if name.is_empty() {
        return send_error(res, false, StatusCode::BAD_REQUEST, "model is required");
    }
    let spec = model_spec(&name);
    // GGUF keys are namespaced by architecture, which is the family for these models.
    let arch = spec.family;
    let mut model_info = serde_json::Map::new();
    model_info.insert("general.architecture".into(), arch.into());
    model_info.insert(
        "general.basename".into(),
        name.split(':').next().unwrap_or(&name).into(),
    );
    model_info.insert("general.parameter_count".into(), json!(spec.size * 2));
    model_info.insert(format!("{arch}.context_length"), spec.context_length.into());
    model_info.insert(format!("{arch}.embedding_length"), spec.embedding_length.into());
    let answer = json!({
        "license": "MOCK LICENSE\nThis model is served by diglot's mock upstream.",
        "modelfile": format!(
            "# Modelfile generated by \"ollama show\"\nFROM /models/blobs/sha256-{}\n\
             TEMPLATE \"{{{{ .Prompt }}}}\"\nPARAMETER stop \"<|eot_id|>\"\n",
            digest(spec.name)
        ),
        "parameters": "stop                           \"<|eot_id|>\"\ntemperature                    0.8",
        "template": "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|eot_id|>\n{{- end }}<|assistant|>\n",
        "details": details(spec),
        "model_info": model_info,
        "capabilities": spec.capabilities,
        "modified_at": mock().modified_at,
    });
    send(
        res,
        StatusCode::OK,
        OLLAMA_JSON,
        serde_json::to_vec(&answer).unwrap_or_default(),
    );
}

#[handler]
async fn openai_models(res: &mut Response) {
    send(res, StatusCode::OK, JSON, mock().models.clone());
}

#[handler]
async fn openai_model(req: &mut Request, res: &mut Response) {
    let id = req.param::<String>("id").unwrap_or_default();
    send_json(
        res,
        &json!({"id": id, "object": "model", "created": mock().modified, "owned_by": "library"}),
    );
}

#[handler]
async fn no_route(req: &mut Request, res: &mut Response) {
    let openai = req.uri().path().starts_with("/v1");
    let message = format!(
        "the mock upstream has no route for {} {}",
        req.method(),
        req.uri().path()
    );
    send_error(res, openai, StatusCode::NOT_FOUND, &message);
}

fn router() -> Router {
    Router::new()
        .get(ollama_root)
        .head(ollama_root)
        .push(
            Router::with_path("api/version")
                .get(ollama_version)
                .head(ollama_version),
        )
        .push(Router::with_path("api/tags").get(ollama_tags).head(ollama_tags))
        .push(Router::with_path("api/show").post(ollama_show))
        .push(Router::with_path("api/chat").post(ollama_chat))
        .push(Router::with_path("api/generate").post(ollama_generate))
        .push(Router::with_path("api/embed").post(ollama_embed))
        .push(Router::with_path("api/embeddings").post(ollama_embeddings))
        .push(Router::with_path("v1/chat/completions").post(openai_chat))
        .push(Router::with_path("v1/completions").post(openai_completions))
        .push(Router::with_path("v1/embeddings").post(openai_embeddings))
        .push(Router::with_path("v1/models").get(openai_models))
        .push(Router::with_path("v1/models/{**id}").get(openai_model))
        .push(Router::with_path("{**rest}").goal(no_route))
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let _ = MOCK.set(Mock::new(&args));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(async {
            let acceptor = diglot::http::bind_one(args.listen).await?;
            let local = acceptor.holdings()[0]
                .local_addr
                .clone()
                .into_std()
                .unwrap_or(args.listen);
            println!("listening on http://{local}");
            Server::new(acceptor).serve(router()).await;
            Ok(())
        })
}
