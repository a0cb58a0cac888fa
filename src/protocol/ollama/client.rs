//! Backend: the IR to Ollama's native API and its NDJSON answers back to IR events.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use moka::future::Cache;
use serde_json::{Map, Value, json};
use tracing::{debug, warn};

use super::wire;
use crate::config::UpstreamConfig;
use crate::ir::{
    ChatEvent, ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, FinishReason, Image, Input, Message,
    ModelCard, Reasoning, ResponseFormat, Role, Timings, TokenLogprob, ToolChoice, TopLogprob, Usage,
};
use crate::protocol::framing::Format;
use crate::protocol::images::ImageFetcher;
use crate::protocol::upstream::{Frames, Upstream};

/// A client of one Ollama server.
#[derive(Clone)]
pub struct OllamaClient {
    upstream: Upstream,
    images: ImageFetcher,
    /// `/api/show` answers by model name, for capability checks and pass-through.
    shows: Cache<String, Arc<Value>>,
}

impl OllamaClient {
    pub fn new(config: &UpstreamConfig, upstream: Upstream, images: ImageFetcher) -> Self {
        let ttl = Duration::from_secs(config.models_cache_secs);
        Self {
            upstream,
            images,
            shows: Cache::builder().time_to_live(ttl).max_capacity(4096).build(),
        }
    }

    /// Starts a chat or completion and returns its events as they arrive.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        let think = self.think_for(request).await;
        let response = match &request.input {
            Input::Messages(messages) => {
                let body = self.chat_body(request, messages, think).await?;
                self.upstream.post("/api/chat", &body).await?
            }
            Input::Prompt(_) => {
                let body = self.generate_body(request, think).await?;
                self.upstream.post("/api/generate", &body).await?
            }
        };
        let is_chat = matches!(request.input, Input::Messages(_));
        if !request.stream {
            // A whole answer is the stream's last line with everything before folded in.
            let body = self.upstream.chat_body(response).await?;
            let line = std::str::from_utf8(&body)
                .map_err(|_| Error::upstream(502, "the Ollama upstream sent an answer that is not UTF-8"))?;
            let mut decoder = ChunkDecoder::default();
            let events = decoder.decode(line, is_chat)?;
            if !decoder.done {
                return Err(Error::upstream(
                    502,
                    "the Ollama upstream sent an answer without \"done\": true",
                ));
            }
            return Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))));
        }
        Ok(events(self.upstream.frames(response, Format::Ndjson), is_chat))
    }

    /// The prompt's size in tokens as the model's own tokenizer and template count it: a
    /// chat that generates nothing (`num_predict: 0`), whose `prompt_eval_count` it is.
    pub async fn count_tokens(&self, request: &ChatRequest) -> Result<u64, Error> {
        let mut counted = request.clone();
        counted.stream = false;
        counted.reasoning = None;
        counted.sampling.max_tokens = Some(0);
        let messages = match &counted.input {
            Input::Messages(messages) => messages.clone(),
            Input::Prompt(p) => vec![Message::new(Role::User, p.text.clone())],
        };
        let body = self.chat_body(&counted, &messages, None).await?;
        let response = self.upstream.post("/api/chat", &body).await?;
        let answer: wire::ChatChunk = self.upstream.json(response).await?;
        answer
            .end
            .prompt_eval_count
            .ok_or_else(|| Error::upstream(502, "the Ollama upstream did not report prompt_eval_count"))
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        let body = wire::EmbedRequest {
            model: request.model.clone(),
            input: json!(request.inputs),
            truncate: request.truncate,
            dimensions: request.dimensions,
            keep_alive: request.keep_alive.clone(),
            options: request.options.clone(),
        };
        let response = self.upstream.post("/api/embed", &body).await?;
        let answer: wire::EmbedResponse = self.upstream.json(response).await?;
        if answer.embeddings.len() != request.inputs.len() {
            return Err(Error::upstream(
                502,
                format!(
                    "the Ollama upstream returned {} embeddings for {} inputs",
                    answer.embeddings.len(),
                    request.inputs.len()
                ),
            ));
        }
        Ok(EmbedResponse {
            vectors: answer.embeddings,
            prompt_tokens: answer.prompt_eval_count,
            total_duration_ns: answer.total_duration,
        })
    }

    /// Every model the server has, from `/api/tags`.
    pub async fn models(&self) -> Result<Vec<ModelCard>, Error> {
        let response = self.upstream.get("/api/tags").await?;
        let tags: wire::TagsResponse = self.upstream.json(response).await?;
        Ok(tags.models.into_iter().map(card_from_entry).collect())
    }

    /// The server's `/api/show` for `model`, cached briefly.
    pub async fn show(&self, model: &str) -> Result<Arc<Value>, Error> {
        self.shows
            .try_get_with(model.to_owned(), async {
                let body = wire::ShowRequest {
                    model: model.to_owned(),
                    ..Default::default()
                };
                let response = self.upstream.post("/api/show", &body).await?;
                self.upstream.json(response).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<Error>| (*e).clone())
    }

    /// `think` to send: Ollama answers 400 when a model without the `thinking`
    /// capability is asked to think, so such a request drops it instead.
    async fn think_for(&self, request: &ChatRequest) -> Option<Value> {
        let reasoning = request.reasoning?;
        if reasoning != Reasoning::Off {
            // Boxed: the cache lookup's future is kilobytes, and inline it would make the
            // future of every chat (and every one awaiting it) that much larger, moved
            // whole at each await, though only requests that ask to think reach it.
            match Box::pin(self.show(&request.model)).await {
                Ok(show)
                    if show["capabilities"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c == "thinking")) => {}
                Ok(_) => {
                    debug!(model = %request.model, "model cannot think; reasoning request dropped");
                    return None;
                }
                Err(e) => {
                    warn!(model = %request.model, error = %e, "capabilities unknown; reasoning request dropped");
                    return None;
                }
            }
        }
        Some(match reasoning {
            Reasoning::Off => json!(false),
            Reasoning::On => json!(true),
            level => json!(level.level()),
        })
    }

    async fn chat_body(
        &self,
        request: &ChatRequest,
        messages: &[Message],
        think: Option<Value>,
    ) -> Result<wire::ChatRequest, Error> {
        let mut out = Vec::with_capacity(messages.len() + 1);
        for (i, message) in messages.iter().enumerate() {
            out.push(self.message(message, i, messages).await?);
        }
        let tools = tools_for(request)?;
        if let Some(hint) = tool_choice_hint(&request.tool_choice) {
            match out.iter_mut().find(|m| m.role == "system") {
                Some(system) => system.content = format!("{}\n\n{hint}", system.content),
                None => out.insert(
                    0,
                    wire::Message {
                        role: "system".into(),
                        content: hint,
                        ..Default::default()
                    },
                ),
            }
        }
        Ok(wire::ChatRequest {
            model: request.model.clone(),
            messages: out,
            tools,
            generation: generation(request, think),
        })
    }

    async fn generate_body(&self, request: &ChatRequest, think: Option<Value>) -> Result<wire::GenerateRequest, Error> {
        let Input::Prompt(prompt) = &request.input else {
            unreachable!("generate_body is only called for prompts")
        };
        Ok(wire::GenerateRequest {
            model: request.model.clone(),
            prompt: prompt.text.clone(),
            suffix: prompt.suffix.clone(),
            system: prompt.system.clone(),
            raw: prompt.raw.filter(|&raw| raw),
            images: self.images(prompt.images.iter()).await?,
            generation: generation(request, think),
            ..Default::default()
        })
    }

    async fn message(&self, message: &Message, position: usize, history: &[Message]) -> Result<wire::Message, Error> {
        let tool_calls = message
            .tool_calls
            .iter()
            .enumerate()
            .map(|(j, call)| {
                let arguments = if call.arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&call.arguments).map_err(|e| {
                        Error::invalid_field(
                            &format!("messages[{position}].tool_calls[{j}].function.arguments"),
                            format!("tool call arguments must be a JSON object: {e}"),
                        )
                    })?
                };
                Ok(wire::ToolCall {
                    id: Some(call.id.clone()).filter(|id| !id.is_empty()),
                    function: wire::ToolCallFunction {
                        index: Some(j as u32),
                        name: call.name.clone(),
                        arguments,
                    },
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let tool_name = match (&message.role, &message.name) {
            (Role::Tool, Some(name)) => Some(name.clone()),
            (Role::Tool, None) => message
                .tool_call_id
                .as_deref()
                .and_then(|id| tool_name_for(id, &history[..position])),
            _ => None,
        };
        Ok(wire::Message {
            role: message.role.as_str().into(),
            content: message.text(),
            thinking: message.reasoning.clone().filter(|r| !r.is_empty()),
            images: self.images(message.images()).await?,
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            tool_name,
            tool_call_id: message.tool_call_id.clone(),
        })
    }

    /// Ollama takes bare base64: URLs are fetched here, before anything is sent upstream.
    async fn images(&self, images: impl Iterator<Item = &Image>) -> Result<Option<Vec<String>>, Error> {
        let mut out = Vec::new();
        for image in images {
            out.push(match image {
                Image::Data { base64, .. } => base64.clone(),
                Image::Url(url) => self.images.fetch(url).await?.0,
            });
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// The name of the tool an earlier assistant call with `id` invoked (the last match wins).
fn tool_name_for(id: &str, earlier: &[Message]) -> Option<String> {
    earlier
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| c.id == id)
        .map(|c| c.name.clone())
}

/// Ollama cannot enforce `tool_choice`: `none` drops the tools, a named function keeps
/// only that one, and `required` / named ones add a system instruction (see README).
fn tools_for(request: &ChatRequest) -> Result<Option<Vec<wire::Tool>>, Error> {
    let keep = |name: &str| match &request.tool_choice {
        ToolChoice::None => false,
        ToolChoice::Function(chosen) => chosen == name,
        ToolChoice::Auto | ToolChoice::Required => true,
    };
    if let ToolChoice::Function(chosen) = &request.tool_choice
        && !request.tools.iter().any(|t| &t.name == chosen)
    {
        return Err(Error::invalid_field(
            "tool_choice",
            format!("tool_choice names '{chosen}', which is not in tools"),
        ));
    }
    let tools: Vec<wire::Tool> = request
        .tools
        .iter()
        .filter(|t| keep(&t.name))
        .map(|t| wire::Tool {
            kind: "function".into(),
            function: wire::ToolFunction {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            },
        })
        .collect();
    Ok((!tools.is_empty()).then_some(tools))
}

fn tool_choice_hint(choice: &ToolChoice) -> Option<String> {
    match choice {
        ToolChoice::Required => Some("You must answer by calling one of the provided tools.".into()),
        ToolChoice::Function(name) => Some(format!("You must answer by calling the tool `{name}`.")),
        ToolChoice::Auto | ToolChoice::None => None,
    }
}

/// What chat and generate requests share. Streamed only when the client streams: a whole
/// answer is one object instead of a line per token.
fn generation(request: &ChatRequest, think: Option<Value>) -> wire::Generation {
    wire::Generation {
        format: format_for(request),
        options: options_for(request),
        stream: Some(request.stream),
        keep_alive: request.keep_alive.clone(),
        think,
        truncate: request.truncate,
        shift: request.shift,
        logprobs: request.logprobs.then_some(true),
        top_logprobs: request.top_logprobs,
    }
}

fn format_for(request: &ChatRequest) -> Option<Value> {
    request.response_format.as_ref().map(|f| match f {
        ResponseFormat::Json => json!("json"),
        ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
    })
}

/// Typed options, then unknown ones untouched (a typed value wins over an unknown duplicate).
fn options_for(request: &ChatRequest) -> Map<String, Value> {
    let mut options = match serde_json::to_value(&request.sampling) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (key, value) in &request.extra {
        options.entry(key.clone()).or_insert_with(|| value.clone());
    }
    options
}

fn card_from_entry(entry: wire::ModelEntry) -> ModelCard {
    let id = if entry.model.is_empty() {
        entry.name
    } else {
        entry.model
    };
    let owned_by = match id.rsplit_once('/') {
        Some((namespace, _)) => namespace.rsplit('/').next().unwrap_or("library").to_owned(),
        None => "library".to_owned(),
    };
    let created = chrono::DateTime::parse_from_rfc3339(&entry.modified_at)
        .map(|t| t.timestamp())
        .unwrap_or(0);
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    ModelCard {
        id,
        owned_by,
        created,
        family: non_empty(entry.details.family),
        parameter_size: non_empty(entry.details.parameter_size),
        quantization: non_empty(entry.details.quantization_level),
        context_length: entry.context_length,
        size_bytes: Some(entry.size),
        digest: non_empty(entry.digest),
        capabilities: Vec::new(),
        ..Default::default()
    }
}

/// The events of a streamed `/api/chat` (`is_chat`) or `/api/generate` answer, from its
/// NDJSON lines as they come (framing, its size limit and idle timeout are
/// `protocol::framing`'s).
pub fn events(mut lines: Frames, is_chat: bool) -> ChatStream {
    Box::pin(async_stream::stream! {
        let mut decoder = ChunkDecoder::default();
        while let Some(line) = lines.next().await {
            let line = match line {
                Ok(line) => line,
                Err(e) => { yield Err(e); return; }
            };
            debug!(target: "diglot::wire", upstream_line = %line, "ollama chunk");
            match decoder.decode(&line, is_chat) {
                Ok(events) => for event in events { yield Ok(event) },
                Err(e) => { yield Err(e); return; }
            }
            if decoder.done {
                return;
            }
        }
        yield Err(Error::upstream(502, "the Ollama upstream closed the stream before it finished"));
    })
}

/// Turns NDJSON lines of `/api/chat` or `/api/generate` into IR events.
#[derive(Default)]
struct ChunkDecoder {
    next_tool_index: u32,
    done: bool,
}

impl ChunkDecoder {
    fn decode(&mut self, line: &str, is_chat: bool) -> Result<Vec<ChatEvent>, Error> {
        let bad =
            |e: serde_json::Error| Error::upstream(502, format!("the Ollama upstream sent an unreadable line: {e}"));
        let mut line: wire::Line = serde_json::from_str(line).map_err(bad)?;
        let end = line.take_ending();
        let (text, thinking, tool_calls) = if is_chat {
            let message = line.message.unwrap_or_default();
            (message.content, message.thinking, message.tool_calls)
        } else {
            (line.response, line.thinking, None)
        };
        let (logprobs, error) = (line.logprobs, line.error);
        if let Some(error) = error {
            return Err(Error::upstream(500, error));
        }
        let mut events = Vec::new();
        // Logprobs first: encoders attach them to the next piece of output.
        if let Some(logprobs) = logprobs.filter(|l| !l.is_empty()) {
            events.push(ChatEvent::Logprobs(
                logprobs.into_iter().map(logprob_from_wire).collect(),
            ));
        }
        if let Some(thinking) = thinking.filter(|t| !t.is_empty()) {
            events.push(ChatEvent::Reasoning(thinking));
        }
        if !text.is_empty() {
            events.push(ChatEvent::Text(text));
        }
        for call in tool_calls.unwrap_or_default() {
            let index = self.next_tool_index;
            self.next_tool_index += 1;
            let arguments = match call.function.arguments {
                Value::Null => "{}".to_owned(),
                Value::String(s) => s,
                other => other.to_string(),
            };
            events.push(ChatEvent::ToolCall {
                index,
                id: Some(
                    call.id
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(crate::ir::new_call_id),
                ),
                name: Some(call.function.name),
                arguments_delta: arguments,
            });
        }
        if end.done {
            self.done = true;
            events.push(ChatEvent::Usage(usage_from(&end)));
            events.push(ChatEvent::Finish(match end.done_reason.as_deref() {
                Some("length") => FinishReason::Length,
                _ if self.next_tool_index > 0 => FinishReason::ToolCalls,
                _ => FinishReason::Stop,
            }));
        }
        Ok(events)
    }
}

/// Ollama's metrics as IR usage. A missing count stays unknown: behind a chain of
/// gateways it may mean the first upstream never reported one, and inventing 0 would
/// pass a false count on.
pub fn usage_from(end: &wire::Ending) -> Usage {
    let durations = [
        end.total_duration,
        end.load_duration,
        end.prompt_eval_duration,
        end.eval_duration,
    ];
    Usage {
        prompt_tokens: end.prompt_eval_count,
        completion_tokens: end.eval_count,
        cached_tokens: None,
        reasoning_tokens: None,
        timings: durations.iter().any(Option::is_some).then(|| Timings {
            total_ns: end.total_duration.unwrap_or(0),
            load_ns: end.load_duration.unwrap_or(0),
            prompt_eval_ns: end.prompt_eval_duration.unwrap_or(0),
            eval_ns: end.eval_duration.unwrap_or(0),
        }),
    }
}

fn logprob_from_wire(l: wire::Logprob) -> TokenLogprob {
    TokenLogprob {
        token: l.token,
        logprob: l.logprob,
        bytes: l.bytes,
        top: l
            .top_logprobs
            .unwrap_or_default()
            .into_iter()
            .map(|t| TopLogprob {
                token: t.token,
                logprob: t.logprob,
                bytes: t.bytes,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_numbers_tool_calls_across_chunks_and_finishes_with_tool_calls() {
        let mut d = ChunkDecoder::default();
        let a = d.decode(r#"{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"b":1,"a":2}}}]},"done":false}"#, true).unwrap();
        let ChatEvent::ToolCall {
            index,
            id,
            arguments_delta,
            ..
        } = &a[0]
        else {
            panic!()
        };
        assert_eq!((*index, arguments_delta.as_str()), (0, r#"{"b":1,"a":2}"#));
        assert!(id.as_ref().unwrap().starts_with("call_"));
        let b = d.decode(r#"{"message":{"role":"assistant","content":"","tool_calls":[{"id":"x","function":{"name":"g","arguments":{}}}]},"done":true,"done_reason":"stop","eval_count":3}"#, true).unwrap();
        assert!(matches!(b[0], ChatEvent::ToolCall { index: 1, .. }));
        assert_eq!(b.last(), Some(&ChatEvent::Finish(FinishReason::ToolCalls)));
        assert!(d.done);
    }

    #[test]
    fn missing_counts_stay_unknown() {
        let events = ChunkDecoder::default()
            .decode(
                r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}"#,
                true,
            )
            .unwrap();
        assert_eq!(
            events[0],
            ChatEvent::Usage(Usage::default()),
            "no counts, no timings: nothing invented"
        );
    }

    #[test]
    fn decoder_turns_error_lines_into_errors() {
        let err = ChunkDecoder::default().decode(r#"{"error":"boom"}"#, true).unwrap_err();
        assert_eq!(err.message, "boom");
    }

    #[test]
    fn tool_names_are_found_from_earlier_calls() {
        let mut call = Message::new(Role::Assistant, "");
        call.tool_calls.push(crate::ir::ToolCall {
            id: "c1".into(),
            name: "weather".into(),
            arguments: "{}".into(),
        });
        assert_eq!(tool_name_for("c1", &[call]).as_deref(), Some("weather"));
    }

    #[test]
    fn unknown_options_pass_through_and_typed_ones_win() {
        let mut request = ChatRequest::default();
        request.sampling.top_k = Some(7);
        request.extra.insert("top_k".into(), json!(99));
        request.extra.insert("mystery".into(), json!({"a":1}));
        let options = options_for(&request);
        assert_eq!(options["top_k"], json!(7));
        assert_eq!(options["mystery"], json!({"a":1}));
    }
}
