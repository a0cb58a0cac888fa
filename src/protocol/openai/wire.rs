//! Serde types of the OpenAI JSON, the one mapping of its fields: the frontend reads the
//! requests (`decode.rs`) and writes the answers (`encode.rs`); the backend writes the
//! requests (`client.rs`) and reads the answers and chunks (`stream.rs`). Field names and
//! omission rules follow openai-python's types.
//!
//! Requests are declared in the order the backend writes their fields. Answers are read
//! leniently, as servers differ: any field may be missing or null, a malformed optional
//! part is ignored rather than failing the chunk, and fields the backend does not use are
//! skipped unparsed (no allocation per streamed chunk).

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ir::Sampling;

// ---- requests ----

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDefinition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningParam>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Ollama extensions accepted at the top level (`extra_body` in the SDKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// Every sampling option, under its OpenAI name where the two share one
    /// (`temperature`, `top_p`, `seed`, `stop`, penalties) and its Ollama name otherwise.
    #[serde(flatten)]
    pub sampling: Sampling,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ReasoningParam {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// Always written: `null` only for an assistant message of tool calls alone (some
    /// servers refuse a missing content, others a null one where the client sent "").
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Message content: a string, or an array of typed parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// Accepted so the error can name it; no upstream here takes audio.
    InputAudio {
        input_audio: Value,
    },
    /// Sent by some clients for assistant history.
    Refusal {
        refusal: String,
    },
}

/// `tool_choice` naming one function; the other choices are the bare strings `"none"`,
/// `"auto"` and `"required"`.
pub fn named_tool_choice(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name}})
}

/// `{"url": ...}`, or the bare string some clients send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    Object {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Bare(String),
}

impl ImageUrl {
    pub fn url(&self) -> &str {
        match self {
            ImageUrl::Object { url, .. } | ImageUrl::Bare(url) => url,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolDefinition {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A tool call in a message, or a piece of one in a stream delta.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Written, never read: a call is known by its function (some servers repeat the
    /// type on every streamed delta).
    #[serde(rename = "type", skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JSON text; some clients send an object in history, so it is read as any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, or an array of strings (token arrays are refused).
    pub prompt: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// The legacy API's count of top logprobs per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
    #[serde(flatten)]
    pub sampling: Sampling,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Written to upstreams configured to take the token limit under this name; the
    /// legacy API has no such field, so it is not read.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

// ---- responses ----

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ResponseMessage {
    pub role: String,
    /// `null` when the answer is only tool calls, as OpenAI sends it.
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

/// A streamed chunk. The backend also reads a whole chat completion or legacy completion
/// as one (its `message` as the delta, its `text` beside it), so one path decodes both.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Empty when the upstream sent none.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(skip_deserializing)]
    pub object: String,
    #[serde(skip_deserializing)]
    pub created: i64,
    /// Empty when the upstream sent none.
    #[serde(default, deserialize_with = "null_default")]
    pub model: String,
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub choices: Vec<ChunkChoice>,
    /// Absent unless usage was asked for; then `null` on every chunk but the usage chunk.
    /// Read only when it is an object.
    #[serde(default, deserialize_with = "lenient_usage", skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    /// llama-server's own timings; read, never written.
    #[serde(default, deserialize_with = "lenient_object", skip_serializing)]
    pub timings: Option<Timings>,
    /// An upstream's error in the middle of a stream: `{"message": …}` or a bare string;
    /// read, never written (diglot's own errors are rendered by its encoders).
    #[serde(default, skip_serializing)]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(skip_deserializing)]
    pub index: u32,
    /// A whole answer's `message` is read as its delta.
    #[serde(default, alias = "message", deserialize_with = "null_default")]
    pub delta: Delta,
    /// A legacy completion's text; read, never written (the frontend writes
    /// `CompletionChoice`).
    #[serde(default, skip_serializing)]
    pub text: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub logprobs: Option<ChoiceLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Delta {
    /// Written, never read.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A chat choice's logprobs (a legacy completion's parallel arrays read as none).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ChoiceLogprobs {
    /// Malformed entries are skipped when read.
    #[serde(default, deserialize_with = "lenient_items")]
    pub content: Option<Vec<TokenLogprob>>,
    #[serde(default)]
    pub refusal: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default, deserialize_with = "lenient")]
    pub bytes: Option<Vec<u8>>,
    /// Malformed entries are skipped when read.
    #[serde(default, deserialize_with = "lenient_list")]
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default, deserialize_with = "lenient")]
    pub bytes: Option<Vec<u8>>,
}

/// Token counts. Always written whole; read with a count the upstream did not send (or
/// sent malformed) as unknown, never zero.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Usage {
    #[serde(default, deserialize_with = "lenient")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub completion_tokens: Option<u64>,
    /// Not read: diglot adds the two up itself.
    #[serde(skip_deserializing)]
    pub total_tokens: u64,
    #[serde(
        default,
        deserialize_with = "lenient_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Read only (for the Responses API's reasoning tokens); chat answers leave it out.
    #[serde(default, deserialize_with = "lenient_object", skip_serializing)]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct CompletionTokensDetails {
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct PromptTokensDetails {
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
}

/// llama-server's `timings` beside the usage (durations in milliseconds).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct Timings {
    #[serde(default, deserialize_with = "lenient")]
    pub prompt_n: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub prompt_ms: Option<f64>,
    #[serde(default, deserialize_with = "lenient")]
    pub predicted_n: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub predicted_ms: Option<f64>,
    /// Prompt tokens served from the cache, not counted in `prompt_n`.
    #[serde(default, deserialize_with = "lenient")]
    pub cache_n: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Embedding {
    pub object: String,
    pub index: u32,
    /// A float array, or base64 of little-endian float32 when that encoding was asked for.
    pub embedding: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EmbeddingUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    #[serde(default)]
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub created: i64,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub owned_by: String,
    /// A display name and description from the profile, as OpenRouter's list has them
    /// (Open WebUI shows `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Context sizes upstreams add to their lists (read, never written): vLLM's
    /// `max_model_len`, OpenRouter's `context_length`, llama.cpp's `meta`.
    #[serde(default, deserialize_with = "lenient", skip_serializing)]
    pub max_model_len: Option<u64>,
    #[serde(default, deserialize_with = "lenient", skip_serializing)]
    pub context_length: Option<u64>,
    #[serde(default, deserialize_with = "lenient_object", skip_serializing)]
    pub meta: Option<ModelMeta>,
}

/// llama.cpp's facts about the model file in `/v1/models`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelMeta {
    #[serde(default, deserialize_with = "lenient")]
    pub n_ctx_train: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub size: Option<u64>,
}

/// A model list as upstreams send it: OpenAI's `{"data": [...]}`, or a bare array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UpstreamModels {
    List { data: Vec<Value> },
    Bare(Vec<Value>),
}

/// `{"error":{"message","type","param","code"}}`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
}

// ---- lenient reading of upstream answers ----

/// A field that may be null: null reads as the default.
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An optional value that may be malformed: whatever does not read as `T` is `None`.
/// (Numbers pass through `Value` without allocating.)
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(|v| T::deserialize(v).ok()))
}

/// A value that does not read as `T` (or is missing, or null) is `T`'s default.
fn lenient_or_default<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(lenient(d)?.unwrap_or_default())
}

/// An optional object: anything but an object that reads as `T` is `None`.
fn lenient_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(v @ Value::Object(_)) => T::deserialize(v).ok(),
        _ => None,
    })
}

fn lenient_usage<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Usage>>, D::Error> {
    Ok(lenient_object(d)?.map(Some))
}

/// An optional list whose malformed items are skipped; anything but a list is `None`.
fn lenient_items<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Array(items)) => Some(items.into_iter().filter_map(|v| T::deserialize(v).ok()).collect()),
        _ => None,
    })
}

fn lenient_list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(lenient_items(d)?.unwrap_or_default())
}

// ---- llama-server's own endpoints ----

/// `/apply-template`'s answer: the chat rendered by the model's template.
#[derive(Debug, Clone, Deserialize)]
pub struct AppliedTemplate {
    pub prompt: String,
}

/// A `/tokenize` request.
#[derive(Debug, Clone, Serialize)]
pub struct Tokenize {
    pub content: String,
    pub add_special: bool,
    pub parse_special: bool,
}

/// `/tokenize`'s answer (token ids, or pieces with `with_pieces`: only their number counts).
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub tokens: Vec<Value>,
}
