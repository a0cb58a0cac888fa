//! Backend: a client of an OpenAI-compatible server (vLLM, llama.cpp, LiteLLM, OpenRouter,
//! OpenAI). Owns the IR → request mapping (chat completions, legacy completions,
//! embeddings, the model list) and each upstream's quirks on the way out (the token-limit
//! field, passed Ollama options, reasoning history); `stream.rs` reads the answers.

use serde_json::{Map, Value};
use tracing::debug;

use super::stream::{self, SseDecoder};
use super::wire;
use crate::config::UpstreamConfig;
use crate::ir::{
    ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, Image, Input, Message, ModelCard, Prompt, Reasoning,
    ResponseFormat, Role, Sampling, ToolChoice, new_call_id, no_tokens_answer,
};
use crate::protocol::framing::Format;
use crate::protocol::images::sniff_base64_mime;
use crate::protocol::upstream::Upstream;

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
        if request.sampling.max_tokens == Some(0) {
            return Ok(no_tokens_answer());
        }
        let response = match &request.input {
            Input::Prompt(p) if p.raw != Some(false) || p.suffix.is_some() => {
                let body = self.completion_body(request, p);
                self.upstream.post(&self.path("/completions"), &body).await?
            }
            Input::Prompt(p) => {
                let mut messages = Vec::new();
                if let Some(system) = &p.system {
                    messages.push(Message::new(Role::System, system.clone()));
                }
                let mut user = Message::new(Role::User, p.text.clone());
                user.parts.extend(p.images.iter().cloned().map(crate::ir::Part::Image));
                messages.push(user);
                let body = self.chat_body(request, &messages);
                self.upstream.post(&self.path("/chat/completions"), &body).await?
            }
            Input::Messages(messages) => {
                let body = self.chat_body(request, messages);
                self.upstream.post(&self.path("/chat/completions"), &body).await?
            }
        };
        let mut decoder = SseDecoder::new(self.think_tags);
        if !request.stream {
            let events = decoder.whole(self.upstream.chat_json(response).await?)?;
            return Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))));
        }
        Ok(stream::events(self.upstream.frames(response, Format::Sse), decoder))
    }

    /// The prompt's size in tokens from llama-server's own template and tokenizer
    /// (`/apply-template`, then `/tokenize`); `None` from servers without them.
    pub async fn count_tokens(&self, request: &ChatRequest) -> Option<u64> {
        let messages = match &request.input {
            Input::Messages(messages) => messages.clone(),
            Input::Prompt(p) => vec![Message::new(Role::User, p.text.clone())],
        };
        let mut body = self.chat_body(request, &messages);
        (body.stream, body.stream_options) = (None, None);
        let counted = async {
            let response = self.upstream.post_beside_v1("/apply-template", &body).await?;
            let templated: wire::AppliedTemplate = self.upstream.json(response).await?;
            let tokenize = wire::Tokenize {
                content: templated.prompt,
                add_special: true,
                parse_special: true,
            };
            let response = self.upstream.post_beside_v1("/tokenize", &tokenize).await?;
            let tokens: wire::Tokens = self.upstream.json(response).await?;
            Ok::<_, Error>(tokens.tokens.len() as u64)
        };
        match counted.await {
            Ok(count) => Some(count),
            Err(e) => {
                debug!(upstream = %self.upstream.base(), error = %e, "the upstream cannot count tokens");
                None
            }
        }
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        let body = wire::EmbeddingRequest {
            model: request.model.clone(),
            input: request.inputs.clone().into(),
            encoding_format: Some("float".into()),
            dimensions: request.dimensions,
            user: None,
        };
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
        Ok(model_cards(self.upstream.json(response).await?))
    }

    fn chat_body(&self, request: &ChatRequest, messages: &[Message]) -> wire::ChatCompletionRequest {
        let use_tools = !request.tools.is_empty() && request.tool_choice != ToolChoice::None;
        let tools = use_tools.then(|| {
            request
                .tools
                .iter()
                .map(|t| wire::ToolDefinition {
                    kind: "function".into(),
                    function: wire::FunctionDefinition {
                        name: t.name.clone(),
                        parameters: Some(t.parameters.clone()),
                        description: t.description.clone(),
                        strict: t.strict,
                    },
                })
                .collect()
        });
        let tool_choice = use_tools
            .then(|| match &request.tool_choice {
                ToolChoice::Required => Some(Value::from("required")),
                ToolChoice::Function(name) => Some(wire::named_tool_choice(name)),
                // OpenAI's default made explicit: some servers (llama-cpp-python) take a
                // missing tool_choice as "none".
                ToolChoice::Auto => Some(Value::from("auto")),
                ToolChoice::None => None,
            })
            .flatten();
        let response_format = request.response_format.as_ref().map(|format| match format {
            ResponseFormat::Json => wire::ResponseFormat::JsonObject,
            // OpenAI requires a name; `strict` stays unset unless the client set it, since
            // it demands additionalProperties:false and every key required.
            ResponseFormat::JsonSchema { name, schema, strict } => wire::ResponseFormat::JsonSchema {
                json_schema: wire::JsonSchemaFormat {
                    name: Some(name.as_deref().unwrap_or("response").to_owned()),
                    description: None,
                    schema: Some(schema.clone()),
                    strict: *strict,
                },
            },
        });
        let (max_tokens, max_completion_tokens) = self.max_tokens(&request.sampling);
        wire::ChatCompletionRequest {
            model: request.model.clone(),
            messages: self.messages(messages),
            tools,
            tool_choice,
            response_format,
            parallel_tool_calls: request.parallel_tool_calls.filter(|_| !request.tools.is_empty()),
            reasoning_effort: request
                .reasoning
                .and_then(|r| reasoning_effort(r, request.reasoning_budget))
                .map(str::to_owned),
            logprobs: request.logprobs.then_some(true),
            top_logprobs: request.top_logprobs.filter(|_| request.logprobs),
            sampling: self.sampling(&request.sampling),
            max_tokens,
            max_completion_tokens,
            stream: Some(request.stream),
            stream_options: stream_options(request),
            ..Default::default()
        }
    }

    fn completion_body(&self, request: &ChatRequest, prompt: &Prompt) -> wire::CompletionRequest {
        let (max_tokens, max_completion_tokens) = self.max_tokens(&request.sampling);
        wire::CompletionRequest {
            model: request.model.clone(),
            prompt: prompt.text.clone().into(),
            suffix: prompt.suffix.clone(),
            logprobs: request.logprobs.then(|| request.top_logprobs.unwrap_or(1)),
            sampling: self.sampling(&request.sampling),
            max_tokens,
            max_completion_tokens,
            stream: Some(request.stream),
            stream_options: stream_options(request),
            ..Default::default()
        }
    }

    /// OpenAI's own sampling fields, and the Ollama options this upstream is configured to
    /// take as extra body fields (under their Ollama names).
    fn sampling(&self, s: &Sampling) -> Sampling {
        let openai = Sampling {
            temperature: s.temperature,
            top_p: s.top_p,
            seed: s.seed,
            stop: s.stop.clone().filter(|v| !v.is_empty()),
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
            ..Default::default()
        };
        if self.pass_options.is_empty() {
            return openai;
        }
        let Ok(Value::Object(all)) = serde_json::to_value(s) else {
            return openai;
        };
        let passed: Map<String, Value> = self
            .pass_options
            .iter()
            .filter_map(|name| Some((name.clone(), all.get(name)?.clone())))
            .collect();
        match serde_json::from_value(Value::Object(passed)) {
            Ok(passed) => openai.or(passed),
            Err(_) => openai,
        }
    }

    /// The token limit under the field this upstream takes (`max_tokens` or
    /// `max_completion_tokens`). Ollama's -1 (and -2) mean "no limit": nothing is sent (0
    /// never gets here: `chat` answers it at once).
    fn max_tokens(&self, s: &Sampling) -> (Option<i64>, Option<i64>) {
        let limit = s.max_tokens.filter(|&n| n > 0);
        if self.max_tokens_field == "max_completion_tokens" {
            (None, limit)
        } else {
            (limit, None)
        }
    }

    fn messages(&self, messages: &[Message]) -> Vec<wire::ChatMessage> {
        // Ids given to calls that had none, so later tool results can point at them.
        let mut calls: Vec<(String, String, bool)> = Vec::new();
        messages
            .iter()
            .map(|m| {
                let mut out = wire::ChatMessage {
                    role: m.role.as_str().to_owned(),
                    content: Some(content(m)),
                    tool_calls: None,
                    reasoning_content: None,
                    reasoning: None,
                    tool_call_id: None,
                    name: None,
                };
                if m.role == Role::Assistant && !m.tool_calls.is_empty() {
                    let tool_calls = m
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
                            wire::ToolCall {
                                index: None,
                                id: Some(id),
                                kind: Some("function".into()),
                                function: wire::FunctionCall {
                                    name: Some(c.name.clone()),
                                    arguments: Some(Value::String(arguments)),
                                },
                            }
                        })
                        .collect();
                    out.tool_calls = Some(tool_calls);
                    // null only when the client sent no content; some servers refuse null
                    // where the client sent "".
                    if m.parts.is_empty() {
                        out.content = None;
                    }
                }
                if m.role == Role::Assistant
                    && let (Some(field), Some(reasoning)) = (&self.reasoning_history, &m.reasoning)
                {
                    // The configuration admits only these two names.
                    if field == "reasoning" {
                        out.reasoning = Some(reasoning.clone());
                    } else {
                        out.reasoning_content = Some(reasoning.clone());
                    }
                }
                if m.role == Role::Tool {
                    // Ollama clients often name the tool but not the call: answer the most
                    // recent unanswered call of that name.
                    let id = m.tool_call_id.clone().or_else(|| {
                        let name = m.name.as_deref()?;
                        let call = calls.iter_mut().rev().find(|(_, n, answered)| n == name && !answered)?;
                        Some(call.0.clone())
                    });
                    if let Some(id) = &id
                        && let Some(call) = calls.iter_mut().find(|(c, _, _)| c == id)
                    {
                        call.2 = true;
                    }
                    out.tool_call_id = id;
                    out.name = m.name.clone();
                }
                out
            })
            .collect()
    }
}

/// Streams ask for usage (the last usage chunk is the one that counts).
fn stream_options(request: &ChatRequest) -> Option<wire::StreamOptions> {
    request.stream.then_some(wire::StreamOptions {
        include_usage: Some(true),
    })
}

/// A string when the message is only text; parts when it carries images.
fn content(m: &Message) -> wire::Content {
    let mut images = m.images().peekable();
    if images.peek().is_none() {
        return wire::Content::Text(m.text());
    }
    let mut parts = Vec::new();
    let text = m.text();
    if !text.is_empty() {
        parts.push(wire::ContentPart::Text { text });
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
        parts.push(wire::ContentPart::ImageUrl {
            image_url: wire::ImageUrl::Object { url, detail: None },
        });
    }
    wire::Content::Parts(parts)
}

/// `reasoning_effort` to send: explicit levels are, and so is the level a thinking budget
/// amounts to; a bare on/off is left to the model's default (servers reject
/// `reasoning_effort` on models that cannot reason).
fn reasoning_effort(reasoning: Reasoning, budget: Option<u64>) -> Option<&'static str> {
    match (reasoning, budget) {
        (Reasoning::On, Some(budget)) => Reasoning::from_budget(budget).level(),
        _ => reasoning.level(),
    }
}

/// The cards of an upstream's model list, with the context sizes servers add (vLLM's
/// `max_model_len`, llama.cpp's `meta`, OpenRouter's `context_length`). An entry that does
/// not read as a model is left out, not the whole list.
fn model_cards(list: wire::UpstreamModels) -> Vec<ModelCard> {
    let (wire::UpstreamModels::List { data: entries } | wire::UpstreamModels::Bare(entries)) = list;
    entries
        .into_iter()
        .filter_map(|entry| serde_json::from_value::<wire::Model>(entry).ok())
        .map(|m| {
            let meta = m.meta.unwrap_or_default();
            ModelCard {
                context_length: m.max_model_len.or(meta.n_ctx_train).or(m.context_length),
                size_bytes: meta.size,
                owned_by: if m.owned_by.is_empty() {
                    "openai".into()
                } else {
                    m.owned_by
                },
                created: m.created,
                id: m.id,
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_keep_the_context_sizes_servers_add() {
        let read = |name: &str| {
            let path = format!("{}/fixtures/openai/models/{name}.json", env!("CARGO_MANIFEST_DIR"));
            model_cards(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
        };
        let llamacpp = read("llamacpp");
        assert_eq!(llamacpp[0].id, "gemma-3-270m");
        assert_eq!(llamacpp[0].context_length, Some(32768), "meta.n_ctx_train");
        assert_eq!(llamacpp[0].size_bytes, Some(246587904));
        assert_eq!(llamacpp[0].owned_by, "llamacpp");
        let vllm = read("vllm");
        assert_eq!(vllm[0].context_length, Some(131072), "max_model_len");
        let bare = model_cards(
            serde_json::from_value(serde_json::json!([
                {"id": "a", "created": 1.5, "owned_by": 3}, {"no": "id"}, {"id": "b", "created": 7}
            ]))
            .unwrap(),
        );
        let cards: Vec<_> = bare
            .iter()
            .map(|c| (c.id.as_str(), c.created, c.owned_by.as_str()))
            .collect();
        assert_eq!(
            cards,
            [("a", 0, "openai"), ("b", 7, "openai")],
            "odd fields read as unknown, bad entries left out"
        );
    }
}
