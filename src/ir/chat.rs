//! Chat and completion requests (messages or a prompt, tools, sampling, reasoning) and
//! their answers as a stream of `ChatEvent`s; a whole answer is the fold of its events.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::Error;

/// A generation request: a chat, or a plain text completion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The model name as the client sent it.
    pub model: String,
    pub input: Input,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub response_format: Option<ResponseFormat>,
    pub sampling: Sampling,
    pub reasoning: Option<Reasoning>,
    /// The most tokens the model may think for (Anthropic's `thinking.budget_tokens`), as
    /// the client set it; `reasoning` then holds the level it amounts to.
    pub reasoning_budget: Option<u64>,
    /// `Some(false)`: at most one tool call per answer (OpenAI's `parallel_tool_calls`,
    /// Anthropic's `disable_parallel_tool_use`).
    pub parallel_tool_calls: Option<bool>,
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    /// Whether the client wants a stream back. Backends may stream either way.
    pub stream: bool,
    /// How many independent answers the client wants (OpenAI's `n`).
    pub n: u32,
    /// Ollama's `keep_alive`, kept as sent (seconds or a duration string).
    pub keep_alive: Option<Value>,
    /// Ollama's `truncate` and `shift` context flags.
    pub truncate: Option<bool>,
    pub shift: Option<bool>,
    /// Options no typed field knows; they reach an Ollama upstream's `options` untouched.
    pub extra: Map<String, Value>,
}

/// Roughly four characters of text make a token; an image is counted like OpenAI's
/// low-detail tile.
const CHARS_PER_TOKEN: u64 = 4;
const TOKENS_PER_IMAGE: u64 = 85;
const TOKENS_PER_MESSAGE: u64 = 4;

/// A token count estimated from text, for limits reserved before a call and for usage
/// an upstream did not report.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(CHARS_PER_TOKEN)
}

impl ChatRequest {
    /// The prompt's size in tokens, estimated (no tokenizer knows every model).
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let tools: usize = self
            .tools
            .iter()
            .map(|t| t.name.len() + t.description.as_ref().map_or(0, String::len) + json_chars(&t.parameters))
            .sum();
        let input = match &self.input {
            Input::Messages(messages) => messages
                .iter()
                .map(|m| {
                    let text: usize = m
                        .parts
                        .iter()
                        .map(|p| match p {
                            Part::Text(t) => t.len(),
                            Part::Image(_) => 0,
                        })
                        .sum();
                    let calls: usize = m.tool_calls.iter().map(|c| c.name.len() + c.arguments.len()).sum();
                    estimate_tokens(text + calls) + TOKENS_PER_MESSAGE + m.images().count() as u64 * TOKENS_PER_IMAGE
                })
                .sum(),
            Input::Prompt(p) => {
                let chars =
                    p.text.len() + p.system.as_ref().map_or(0, String::len) + p.suffix.as_ref().map_or(0, String::len);
                estimate_tokens(chars) + p.images.len() as u64 * TOKENS_PER_IMAGE
            }
        };
        input + estimate_tokens(tools)
    }
}

/// Roughly how many characters `value` takes as JSON, without writing it out.
fn json_chars(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(json_chars).sum::<usize>() + items.len() + 1,
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + 4 + json_chars(v)).sum::<usize>() + 1,
        _ => 5,
    }
}

/// What the model continues from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Messages(Vec<Message>),
    Prompt(Prompt),
}

impl Default for Input {
    fn default() -> Self {
        Input::Messages(Vec::new())
    }
}

/// A text-completion prompt (OpenAI `/v1/completions`, Ollama `/api/generate`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prompt {
    pub text: String,
    /// Text after the insertion point, for fill-in-the-middle.
    pub suffix: Option<String>,
    pub system: Option<String>,
    /// `Some(true)`: use the prompt verbatim; `Some(false)`: wrap it in the model's chat
    /// template; `None`: the source API did not say, which for OpenAI's completions means
    /// a plain continuation.
    pub raw: Option<bool>,
    pub images: Vec<Image>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    pub tool_calls: Vec<ToolCall>,
    /// On a tool result: the call it answers.
    pub tool_call_id: Option<String>,
    /// On a tool result: the tool's name.
    pub name: Option<String>,
    /// Earlier reasoning of an assistant turn.
    pub reasoning: Option<String>,
    /// The upstream's signature over that reasoning (Anthropic's thinking `signature`),
    /// which Anthropic wants back with it on tool-use turns.
    pub reasoning_signature: Option<String>,
}

impl Message {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![Part::Text(text.into())],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning: None,
            reasoning_signature: None,
        }
    }

    /// All text parts, joined with newlines.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::Image(_) => None,
            })
            .collect();
        texts.join("\n")
    }

    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.parts.iter().filter_map(|p| match p {
            Part::Image(i) => Some(i),
            Part::Text(_) => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// An http(s) URL the backend must fetch or pass on.
    Url(String),
    /// Inline bytes, kept base64-encoded as both wire formats carry them.
    Data { mime: Option<String>, base64: String },
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    Function(String),
}

/// A complete tool call (in history, or folded from a response's deltas).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Json,
    JsonSchema {
        name: Option<String>,
        schema: Value,
        strict: Option<bool>,
    },
}

/// How much the model should think before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reasoning {
    Off,
    /// On, at the model's default depth.
    On,
    Low,
    Medium,
    High,
    Max,
}

impl Reasoning {
    /// Reads an OpenAI `reasoning_effort` value.
    pub fn from_effort(effort: &str) -> Option<Option<Self>> {
        Some(match effort {
            "" => None,
            "none" => Some(Reasoning::Off),
            "minimal" | "low" => Some(Reasoning::Low),
            "medium" => Some(Reasoning::Medium),
            "high" => Some(Reasoning::High),
            "max" | "xhigh" | "ultra" => Some(Reasoning::Max),
            _ => return None,
        })
    }

    /// The level a thinking budget amounts to, the inverse of the budgets an Anthropic
    /// upstream gets for each level (low 1024, medium 4096, high 16384).
    pub fn from_budget(budget: u64) -> Self {
        match budget {
            0..4096 => Reasoning::Low,
            4096..16384 => Reasoning::Medium,
            _ => Reasoning::High,
        }
    }

    /// The level name both APIs share, if this is a level.
    pub fn level(self) -> Option<&'static str> {
        match self {
            Reasoning::Low => Some("low"),
            Reasoning::Medium => Some("medium"),
            Reasoning::High => Some("high"),
            Reasoning::Max => Some("max"),
            Reasoning::Off | Reasoning::On => None,
        }
    }
}

/// Every generation option either API knows, named as Ollama's `options` name them so the
/// Ollama codecs can (de)serialize it directly. Only what the client sent is `Some`: diglot
/// never invents a sampling default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typical_p: Option<f64>,
    /// Most tokens to generate (Ollama's `num_predict`).
    #[serde(rename = "num_predict", skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(deserialize_with = "stop_list", skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_last_n: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirostat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirostat_tau: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirostat_eta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_keep: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_batch: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_gpu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_gpu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_thread: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_mmap: Option<bool>,
}

impl Sampling {
    /// Fills every option this one lacks from `other`.
    pub fn or(self, other: Sampling) -> Sampling {
        let mut mine = to_map(&self);
        for (key, value) in to_map(&other) {
            mine.entry(key).or_insert(value);
        }
        serde_json::from_value(Value::Object(mine)).expect("a merge of two valid option sets is valid")
    }
}

fn to_map(sampling: &Sampling) -> Map<String, Value> {
    match serde_json::to_value(sampling) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `stop` may be one string or a list of them.
fn stop_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(vec![s]),
        Some(OneOrMany::Many(v)) => Some(v),
    })
}

/// One unit of a generated answer, shared by every backend and frontend.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Text(String),
    Reasoning(String),
    /// The upstream's signature over the reasoning so far (only Anthropic's sign).
    ReasoningSignature(String),
    /// A tool call or a piece of one. The first piece of a call carries `id` and `name`;
    /// `index` tells calls apart. A backend that receives whole calls sends one piece.
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments_delta: String,
    },
    Logprobs(Vec<TokenLogprob>),
    Usage(Usage),
    /// Which of the request's stop sequences ended the answer, when the upstream says
    /// (Anthropic's do); sent just before `Finish(Stop)`, which it belongs to.
    StopSequence(String),
    Finish(FinishReason),
}

/// The stream of events a backend produces; an `Err` ends it.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, Error>> + Send>>;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the upstream served from its cache.
    pub cached_tokens: Option<u64>,
    /// Completion tokens spent thinking, when the upstream says.
    pub reasoning_tokens: Option<u64>,
    pub timings: Option<Timings>,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.unwrap_or(0) + self.completion_tokens.unwrap_or(0)
    }

    /// Adds another answer's usage (for `n` fan-out).
    pub fn add(&mut self, other: &Usage) {
        fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            }
        }
        self.prompt_tokens = sum(self.prompt_tokens, other.prompt_tokens);
        self.completion_tokens = sum(self.completion_tokens, other.completion_tokens);
        self.cached_tokens = sum(self.cached_tokens, other.cached_tokens);
        self.reasoning_tokens = sum(self.reasoning_tokens, other.reasoning_tokens);
        if self.timings.is_none() {
            self.timings = other.timings;
        }
    }
}

/// The answer to a request for no tokens at all (`num_predict: 0`) from an upstream that
/// cannot be asked for none: OpenAI's API and vLLM refuse `max_tokens: 0`, llama-server
/// has generated tokens anyway, and Anthropic requires at least 1. Nothing is generated,
/// so nothing is sent: an empty answer stopped by its length, as Ollama gives one.
pub fn no_tokens_answer() -> ChatStream {
    Box::pin(futures::stream::iter([
        Ok(ChatEvent::Usage(Usage {
            completion_tokens: Some(0),
            ..Default::default()
        })),
        Ok(ChatEvent::Finish(FinishReason::Length)),
    ]))
}

/// Upstream timings in nanoseconds, as Ollama reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    pub total_ns: u64,
    pub load_ns: u64,
    pub prompt_eval_ns: u64,
    pub eval_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Error,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Option<Vec<u8>>,
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Option<Vec<u8>>,
}

/// A whole answer: the fold of a [`ChatEvent`] stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    pub text: String,
    pub reasoning: String,
    pub reasoning_signature: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub logprobs: Vec<TokenLogprob>,
    pub usage: Usage,
    pub finish: Option<FinishReason>,
    /// The stop sequence that ended the answer, when the upstream named it.
    pub stop_sequence: Option<String>,
    /// Tool-call indexes in `tool_calls` order, to route argument pieces.
    tool_indexes: Vec<u32>,
}

impl ChatResponse {
    pub fn push(&mut self, event: ChatEvent) {
        match event {
            ChatEvent::Text(t) => self.text.push_str(&t),
            ChatEvent::Reasoning(t) => self.reasoning.push_str(&t),
            ChatEvent::ReasoningSignature(s) => self.reasoning_signature = Some(s),
            ChatEvent::ToolCall {
                index,
                id,
                name,
                arguments_delta,
            } => {
                let slot = match self.tool_indexes.iter().position(|&i| i == index) {
                    Some(slot) => slot,
                    None => {
                        self.tool_indexes.push(index);
                        self.tool_calls.push(ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                        self.tool_calls.len() - 1
                    }
                };
                let call = &mut self.tool_calls[slot];
                if let Some(id) = id.filter(|id| !id.is_empty())
                    && call.id.is_empty()
                {
                    call.id = id;
                }
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    call.name = name;
                }
                call.arguments.push_str(&arguments_delta);
            }
            ChatEvent::Logprobs(l) => self.logprobs.extend(l),
            ChatEvent::Usage(u) => self.usage = u,
            ChatEvent::StopSequence(s) => self.stop_sequence = Some(s),
            ChatEvent::Finish(f) => self.finish = Some(f),
        }
    }

    /// Folds a whole stream; the first error ends it.
    pub async fn collect(mut stream: ChatStream) -> Result<ChatResponse, Error> {
        let mut response = ChatResponse::default();
        while let Some(event) = stream.next().await {
            response.push(event?);
        }
        Ok(response)
    }

    /// Replays this answer as events, so a whole answer can feed a streaming encoder.
    pub fn into_events(self) -> Vec<ChatEvent> {
        let mut events = Vec::new();
        if !self.reasoning.is_empty() {
            events.push(ChatEvent::Reasoning(self.reasoning));
        }
        if let Some(signature) = self.reasoning_signature {
            events.push(ChatEvent::ReasoningSignature(signature));
        }
        if !self.text.is_empty() {
            events.push(ChatEvent::Text(self.text));
        }
        if !self.logprobs.is_empty() {
            events.push(ChatEvent::Logprobs(self.logprobs));
        }
        for (call, index) in self.tool_calls.into_iter().zip(self.tool_indexes) {
            events.push(ChatEvent::ToolCall {
                index,
                id: Some(call.id),
                name: Some(call.name),
                arguments_delta: call.arguments,
            });
        }
        events.push(ChatEvent::Usage(self.usage));
        if let Some(sequence) = self.stop_sequence {
            events.push(ChatEvent::StopSequence(sequence));
        }
        if let Some(finish) = self.finish {
            events.push(ChatEvent::Finish(finish));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_assembles_tool_call_pieces_by_index() {
        let mut r = ChatResponse::default();
        for e in [
            ChatEvent::ToolCall {
                index: 1,
                id: Some("b".into()),
                name: Some("g".into()),
                arguments_delta: "{\"x".into(),
            },
            ChatEvent::ToolCall {
                index: 0,
                id: Some("a".into()),
                name: Some("f".into()),
                arguments_delta: "{}".into(),
            },
            ChatEvent::ToolCall {
                index: 1,
                id: Some(String::new()),
                name: None,
                arguments_delta: "\":1}".into(),
            },
        ] {
            r.push(e);
        }
        assert_eq!(
            r.tool_calls[0],
            ToolCall {
                id: "b".into(),
                name: "g".into(),
                arguments: "{\"x\":1}".into()
            }
        );
        assert_eq!(r.tool_calls[1].arguments, "{}");
    }

    #[test]
    fn a_replayed_answer_keeps_its_signature_and_stop_sequence_in_order() {
        let events = vec![
            ChatEvent::Reasoning("hmm".into()),
            ChatEvent::ReasoningSignature("sig".into()),
            ChatEvent::Text("1, 2".into()),
            ChatEvent::Usage(Usage::default()),
            ChatEvent::StopSequence(", 3".into()),
            ChatEvent::Finish(FinishReason::Stop),
        ];
        let mut r = ChatResponse::default();
        events.iter().cloned().for_each(|e| r.push(e));
        assert_eq!(
            (r.reasoning_signature.as_deref(), r.stop_sequence.as_deref()),
            (Some("sig"), Some(", 3"))
        );
        assert_eq!(
            r.into_events(),
            events,
            "the stop sequence comes just before its finish"
        );
    }

    #[test]
    fn thinking_budgets_amount_to_levels() {
        assert_eq!(
            [1024, 4095, 4096, 16383, 16384, 100_000].map(Reasoning::from_budget),
            [
                Reasoning::Low,
                Reasoning::Low,
                Reasoning::Medium,
                Reasoning::Medium,
                Reasoning::High,
                Reasoning::High
            ]
        );
    }

    #[test]
    fn sampling_or_keeps_own_values_and_fills_gaps() {
        let a = Sampling {
            temperature: Some(0.2),
            ..Default::default()
        };
        let b = Sampling {
            temperature: Some(0.9),
            top_k: Some(5),
            ..Default::default()
        };
        let merged = a.or(b);
        assert_eq!(merged.temperature, Some(0.2));
        assert_eq!(merged.top_k, Some(5));
    }

    #[test]
    fn stop_accepts_string_or_list() {
        let s: Sampling = serde_json::from_str(r#"{"stop":"x"}"#).unwrap();
        assert_eq!(s.stop, Some(vec!["x".to_string()]));
        let s: Sampling = serde_json::from_str(r#"{"stop":["a","b"]}"#).unwrap();
        assert_eq!(s.stop.unwrap().len(), 2);
    }
}
