//! Backend: a client of an Anthropic-compatible server (Anthropic's API, or any server
//! that speaks Messages). Owns the IR → Messages request (system hoisted, tool results as
//! user blocks, consecutive turns of one role merged, `max_tokens` always set) and the
//! answers back to IR events: the SSE events as they come, or one whole `message`.

use futures::StreamExt;
use serde_json::Value;
use tracing::debug;

use super::wire;
use crate::config::UpstreamConfig;
use crate::ir::{
    ChatEvent, ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ErrorKind, FinishReason, Image, Input,
    Message, ModelCard, Part, Reasoning, Role, ToolChoice, Usage, new_call_id, no_tokens_answer,
};
use crate::protocol::framing::Format;
use crate::protocol::images::sniff_base64_mime;
use crate::protocol::upstream::{Frames, Upstream};

/// The smallest thinking budget Anthropic takes.
const MIN_THINKING_BUDGET: u64 = 1024;

/// A client of one Anthropic-compatible server.
#[derive(Clone)]
pub struct AnthropicClient {
    upstream: Upstream,
    /// `/v1` unless the configured base URL already ends with it.
    prefix: &'static str,
    /// `max_tokens` for requests that set none: Messages requires one.
    default_max_tokens: u64,
}

impl AnthropicClient {
    pub fn new(config: &UpstreamConfig, upstream: Upstream) -> Self {
        let prefix = if upstream.base().ends_with("/v1") { "" } else { "/v1" };
        Self {
            upstream,
            prefix,
            default_max_tokens: config.default_max_tokens,
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    fn path(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.prefix)
    }

    /// Starts a generation: streamed upstream when the client streams, else one answer.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        if request.sampling.max_tokens == Some(0) {
            return Ok(no_tokens_answer());
        }
        let body = self.body(request)?;
        let response = self.upstream.post(&self.path("/messages"), &body).await?;
        if !request.stream {
            let answer: wire::Message = self.upstream.chat_json(response).await?;
            let mut decoder = EventDecoder::default();
            let events = decoder.whole(answer)?;
            return Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))));
        }
        Ok(events(self.upstream.frames(response, Format::Sse)))
    }

    /// The upstream's own count of the request's input tokens.
    pub async fn count_tokens(&self, request: &ChatRequest) -> Result<u64, Error> {
        let mut body = self.body(request)?;
        (body.max_tokens, body.stream) = (None, None);
        let response = self.upstream.post(&self.path("/messages/count_tokens"), &body).await?;
        let count: wire::TokenCount = self.upstream.json(response).await?;
        Ok(count.input_tokens)
    }

    pub async fn embed(&self, _request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        Err(Error::new(
            ErrorKind::NotImplemented,
            "Anthropic-compatible upstreams have no embeddings: route embedding models to an Ollama or OpenAI-compatible channel",
        ))
    }

    /// The upstream's `/v1/models`.
    pub async fn models(&self) -> Result<Vec<ModelCard>, Error> {
        let response = self.upstream.get(&self.path("/models?limit=1000")).await?;
        let list: wire::ModelList = self.upstream.json(response).await?;
        Ok(list
            .data
            .into_iter()
            .map(|m| ModelCard {
                display_name: (!m.display_name.is_empty() && m.display_name != m.id).then_some(m.display_name),
                created: chrono::DateTime::parse_from_rfc3339(&m.created_at).map_or(0, |t| t.timestamp()),
                owned_by: "anthropic".into(),
                id: m.id,
                ..Default::default()
            })
            .collect())
    }

    /// The Messages request for `request`.
    fn body(&self, request: &ChatRequest) -> Result<wire::MessagesRequest, Error> {
        let prompt_messages;
        let messages = match &request.input {
            Input::Messages(messages) => messages,
            Input::Prompt(p) => {
                let mut user = Message::new(Role::User, p.text.clone());
                user.parts.extend(p.images.iter().cloned().map(Part::Image));
                prompt_messages = p
                    .system
                    .iter()
                    .map(|s| Message::new(Role::System, s.clone()))
                    .chain([user])
                    .collect::<Vec<_>>();
                &prompt_messages
            }
        };
        let system: Vec<String> = messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(Message::text)
            .filter(|t| !t.is_empty())
            .collect();
        let max_tokens = request
            .sampling
            .max_tokens
            .filter(|&n| n > 0)
            .map_or(self.default_max_tokens, |n| n as u64);
        let use_tools = !request.tools.is_empty();
        let tools = use_tools.then(|| {
            request
                .tools
                .iter()
                .map(|t| wire::Tool {
                    kind: None,
                    name: t.name.clone(),
                    description: t.description.clone(),
                    input_schema: t.parameters.clone(),
                })
                .collect()
        });
        let disable_parallel_tool_use = (request.parallel_tool_calls == Some(false)).then_some(true);
        let tool_choice = use_tools
            .then(|| match &request.tool_choice {
                ToolChoice::Auto => disable_parallel_tool_use.map(|_| wire::ToolChoice::Auto {
                    disable_parallel_tool_use,
                }),
                ToolChoice::Required => Some(wire::ToolChoice::Any {
                    disable_parallel_tool_use,
                }),
                ToolChoice::Function(name) => Some(wire::ToolChoice::Tool {
                    name: name.clone(),
                    disable_parallel_tool_use,
                }),
                ToolChoice::None => Some(wire::ToolChoice::None),
            })
            .flatten();
        Ok(wire::MessagesRequest {
            model: request.model.clone(),
            max_tokens: Some(max_tokens as i64),
            messages: turns(messages)?,
            system: (!system.is_empty()).then(|| wire::System::Text(system.join("\n\n"))),
            stop_sequences: request.sampling.stop.clone().filter(|s| !s.is_empty()),
            temperature: request.sampling.temperature,
            top_p: request.sampling.top_p,
            top_k: request.sampling.top_k,
            tools,
            tool_choice,
            thinking: request
                .reasoning
                .and_then(|r| thinking(r, request.reasoning_budget, max_tokens)),
            metadata: None,
            stream: Some(request.stream),
        })
    }
}

/// Extended thinking for a reasoning level, its budget below `max_tokens` (Anthropic's
/// rule); `None` when `max_tokens` leaves no room for the smallest budget. Thinking that is
/// simply on takes the client's own budget if it set one; a level (a model policy's) wins
/// over it.
fn thinking(reasoning: Reasoning, budget: Option<u64>, max_tokens: u64) -> Option<wire::Thinking> {
    let budget = match (reasoning, budget) {
        (Reasoning::Off, _) => return Some(wire::Thinking::Disabled),
        (Reasoning::On, Some(budget)) => budget,
        (Reasoning::Low, _) => MIN_THINKING_BUDGET,
        (Reasoning::On | Reasoning::Medium, _) => 4096,
        (Reasoning::High, _) => 16384,
        (Reasoning::Max, _) => 32768,
    };
    let budget = budget.min(max_tokens.saturating_sub(1));
    (budget >= MIN_THINKING_BUDGET).then_some(wire::Thinking::Enabled { budget_tokens: budget })
}

/// The IR's messages as Messages turns: system messages left out (they are hoisted),
/// tool results as `tool_result` blocks of a user turn, and consecutive turns of one role
/// merged, as Anthropic requires them to alternate.
fn turns(messages: &[Message]) -> Result<Vec<wire::MessageParam>, Error> {
    let mut out: Vec<wire::MessageParam> = Vec::new();
    // Ids given to calls that had none, so the results that follow can point at them.
    let mut given: Vec<(String, String)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User => ("user", parts(&message.parts)),
            Role::Assistant => {
                // Earlier thinking goes back only with its signature (Anthropic checks
                // it, and wants it on tool-use turns); other vendors' thinking has none.
                let mut blocks = match (&message.reasoning, &message.reasoning_signature) {
                    (Some(thinking), Some(signature)) => vec![wire::Block::Thinking {
                        thinking: thinking.clone(),
                        signature: signature.clone(),
                    }],
                    _ => Vec::new(),
                };
                blocks.extend(parts(&message.parts));
                blocks.retain(|b| !matches!(b, wire::Block::Text { text } if text.is_empty()));
                for call in &message.tool_calls {
                    let id = if call.id.is_empty() {
                        let id = new_call_id();
                        given.push((call.name.clone(), id.clone()));
                        id
                    } else {
                        call.id.clone()
                    };
                    let input = if call.arguments.trim().is_empty() {
                        Value::Object(Default::default())
                    } else {
                        serde_json::from_str(&call.arguments).map_err(|e| {
                            Error::bad_request(format!(
                                "the arguments of the call to '{}' are not a JSON object: {e}",
                                call.name
                            ))
                        })?
                    };
                    blocks.push(wire::Block::ToolUse {
                        id,
                        name: call.name.clone(),
                        input,
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let tool_use_id = match &message.tool_call_id {
                    Some(id) if !id.is_empty() => id.clone(),
                    _ => {
                        let name = message.name.as_deref().unwrap_or_default();
                        match given.iter().position(|(n, _)| n == name || name.is_empty()) {
                            Some(at) => given.remove(at).1,
                            None => {
                                return Err(Error::bad_request(
                                    "a tool result names no call: send the tool_call_id of the call it answers",
                                ));
                            }
                        }
                    }
                };
                let content = match parts(&message.parts).as_slice() {
                    [] => None,
                    [wire::Block::Text { text }] => Some(wire::ToolResultContent::Text(text.clone())),
                    blocks => Some(wire::ToolResultContent::Blocks(blocks.to_vec())),
                };
                let block = wire::Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error: None,
                };
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => {
                if let wire::Content::Blocks(existing) = &mut last.content {
                    existing.extend(blocks);
                }
            }
            _ => out.push(wire::MessageParam {
                role: role.into(),
                content: wire::Content::Blocks(blocks),
            }),
        }
    }
    Ok(out)
}

fn parts(parts: &[Part]) -> Vec<wire::Block> {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(text) => wire::Block::Text { text: text.clone() },
            Part::Image(Image::Url(url)) => wire::Block::Image {
                source: wire::ImageSource::Url { url: url.clone() },
            },
            Part::Image(Image::Data { mime, base64 }) => wire::Block::Image {
                source: wire::ImageSource::Base64 {
                    media_type: mime
                        .clone()
                        .or_else(|| sniff_base64_mime(base64).map(str::to_owned))
                        .unwrap_or_else(|| "image/png".into()),
                    data: base64.clone(),
                },
            },
        })
        .collect()
}

/// The events of a streamed answer, from its SSE events' data as they come (framing,
/// its size limit and idle timeout are `protocol::framing`'s).
pub fn events(mut frames: Frames) -> ChatStream {
    Box::pin(async_stream::stream! {
        let mut decoder = EventDecoder::default();
        while let Some(data) = frames.next().await {
            let data = match data {
                Ok(data) => data,
                Err(e) => { yield Err(e); return; }
            };
            debug!(target: "diglot::wire", upstream_event = %data, "anthropic event");
            match decoder.decode(&data) {
                Ok(events) => for e in events { yield Ok(e) },
                Err(e) => { yield Err(e); return; }
            }
            if decoder.stopped {
                break;
            }
        }
        match decoder.finish() {
            Ok(events) => for e in events { yield Ok(e) },
            Err(e) => yield Err(e),
        }
    })
}

/// Turns Messages stream events (or a whole message) into IR events.
#[derive(Default)]
struct EventDecoder {
    /// The IR tool-call index of each `tool_use` block, by block index.
    tool_blocks: Vec<(u32, u32)>,
    usage: Usage,
    finish: Option<FinishReason>,
    /// The stop sequence that ended the answer, as `message_delta` names it.
    stop_sequence: Option<String>,
    /// `message_stop` seen.
    stopped: bool,
}

impl EventDecoder {
    fn decode(&mut self, data: &str) -> Result<Vec<ChatEvent>, Error> {
        let event: wire::StreamEvent = match serde_json::from_str(data) {
            Ok(event) => event,
            // Event types added later are skipped, as Anthropic's versioning policy asks.
            Err(_) if serde_json::from_str::<Value>(data).is_ok_and(|v| v["type"].is_string()) => {
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(Error::upstream(
                    502,
                    format!("the upstream sent an unreadable event: {e}"),
                ));
            }
        };
        let mut events = Vec::new();
        match event {
            wire::StreamEvent::MessageStart { message } => {
                crate::telemetry::spans::record_response(Some(&message.id), Some(&message.model));
                self.add_usage(&message.usage);
            }
            wire::StreamEvent::ContentBlockStart { index, content_block } => {
                self.block(index, content_block, &mut events);
            }
            wire::StreamEvent::ContentBlockDelta { index, delta } => match delta {
                wire::Delta::TextDelta { text } if !text.is_empty() => events.push(ChatEvent::Text(text)),
                wire::Delta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                    events.push(ChatEvent::Reasoning(thinking))
                }
                wire::Delta::SignatureDelta { signature } if !signature.is_empty() => {
                    events.push(ChatEvent::ReasoningSignature(signature))
                }
                wire::Delta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    let call = self.tool_index(index);
                    events.push(ChatEvent::ToolCall {
                        index: call,
                        id: None,
                        name: None,
                        arguments_delta: partial_json,
                    });
                }
                _ => {}
            },
            wire::StreamEvent::MessageDelta { delta, usage } => {
                self.add_usage(&usage);
                if let Some(reason) = delta.stop_reason {
                    self.finish = Some(finish_reason(&reason));
                }
                self.stop_sequence = delta.stop_sequence.or(self.stop_sequence.take());
            }
            wire::StreamEvent::MessageStop => self.stopped = true,
            wire::StreamEvent::ContentBlockStop { .. } | wire::StreamEvent::Ping => {}
            wire::StreamEvent::Error { error } => return Err(stream_error(error)),
        }
        Ok(events)
    }

    /// A block's first piece: a tool call's id and name, any text it starts with.
    fn block(&mut self, index: u32, block: wire::Block, events: &mut Vec<ChatEvent>) {
        match block {
            wire::Block::Text { text } if !text.is_empty() => events.push(ChatEvent::Text(text)),
            wire::Block::Thinking { thinking, signature } => {
                if !thinking.is_empty() {
                    events.push(ChatEvent::Reasoning(thinking));
                }
                // A whole message's block holds its signature; a stream's sends it as a delta.
                if !signature.is_empty() {
                    events.push(ChatEvent::ReasoningSignature(signature));
                }
            }
            wire::Block::ToolUse { id, name, input } => {
                let call = self.tool_blocks.len() as u32;
                self.tool_blocks.push((index, call));
                // A stream starts with `{}` and sends the arguments as deltas; a whole
                // message has them here.
                let arguments = match input {
                    Value::Object(o) if o.is_empty() => String::new(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                events.push(ChatEvent::ToolCall {
                    index: call,
                    id: Some(id),
                    name: Some(name),
                    arguments_delta: arguments,
                });
            }
            _ => {}
        }
    }

    fn tool_index(&self, block: u32) -> u32 {
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == block)
            .map_or(0, |(_, call)| *call)
    }

    /// Anthropic's `input_tokens` leaves out what was read from or written to its
    /// prompt cache: the IR's prompt counts them all.
    fn add_usage(&mut self, usage: &wire::Usage) {
        let cached = usage.cache_read_input_tokens.unwrap_or(0);
        if let Some(input) = usage.input_tokens {
            self.usage.prompt_tokens = Some(input + cached + usage.cache_creation_input_tokens.unwrap_or(0));
        }
        if usage.cache_read_input_tokens.is_some() {
            self.usage.cached_tokens = Some(cached);
        }
        if usage.output_tokens > 0 || self.usage.completion_tokens.is_none() {
            self.usage.completion_tokens = Some(usage.output_tokens);
        }
    }

    /// The closing events, or an error if the upstream stopped without finishing.
    fn finish(&mut self) -> Result<Vec<ChatEvent>, Error> {
        if !self.stopped && self.finish.is_none() {
            return Err(Error::upstream(
                502,
                "the upstream closed the stream before it finished",
            ));
        }
        let finish = self.finish.unwrap_or(FinishReason::Stop);
        let mut events = vec![ChatEvent::Usage(std::mem::take(&mut self.usage))];
        if let Some(sequence) = self.stop_sequence.take().filter(|_| finish == FinishReason::Stop) {
            events.push(ChatEvent::StopSequence(sequence));
        }
        events.push(ChatEvent::Finish(finish));
        Ok(events)
    }

    /// A whole message, as the same events.
    fn whole(&mut self, message: wire::Message) -> Result<Vec<ChatEvent>, Error> {
        crate::telemetry::spans::record_response(Some(&message.id), Some(&message.model));
        let mut events = Vec::new();
        for (index, block) in message.content.into_iter().enumerate() {
            self.block(index as u32, block, &mut events);
        }
        self.add_usage(&message.usage);
        self.finish = Some(message.stop_reason.as_deref().map_or(FinishReason::Stop, finish_reason));
        self.stop_sequence = message.stop_sequence;
        self.stopped = true;
        events.extend(self.finish()?);
        Ok(events)
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// An `error` event in the stream, as the IR error of the status Anthropic gives its type.
fn stream_error(error: wire::ErrorObject) -> Error {
    let kind = match error.kind.as_str() {
        "rate_limit_error" => ErrorKind::RateLimited,
        "overloaded_error" => ErrorKind::UpstreamError { status: 529 },
        "invalid_request_error" => ErrorKind::BadRequest,
        "authentication_error" => ErrorKind::UpstreamError { status: 401 },
        "permission_error" => ErrorKind::UpstreamError { status: 403 },
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::PayloadTooLarge,
        _ => ErrorKind::UpstreamError { status: 500 },
    };
    Error::new(kind, error.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ToolCall;

    #[test]
    fn turns_hoist_nothing_but_merge_roles_and_carry_tool_results_as_user_blocks() {
        let mut call = Message::new(Role::Assistant, "");
        call.tool_calls.push(ToolCall {
            id: String::new(),
            name: "f".into(),
            arguments: "{\"x\":1}".into(),
        });
        let result = Message {
            tool_call_id: None,
            name: Some("f".into()),
            ..Message::new(Role::Tool, "42")
        };
        let messages = [
            Message::new(Role::System, "sys"),
            Message::new(Role::User, "a"),
            Message::new(Role::User, "b"),
            call,
            result,
            Message::new(Role::User, "thanks"),
        ];
        let out = serde_json::to_value(turns(&messages).unwrap()).unwrap();
        let id = out[1]["content"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            out,
            serde_json::json!([
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "f", "input": {"x": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "42"},
                                              {"type": "text", "text": "thanks"}]},
            ])
        );
    }

    #[test]
    fn thinking_budgets_stay_below_max_tokens() {
        assert_eq!(
            thinking(Reasoning::High, None, 8000),
            Some(wire::Thinking::Enabled { budget_tokens: 7999 })
        );
        assert_eq!(
            thinking(Reasoning::On, Some(2048), 8000),
            Some(wire::Thinking::Enabled { budget_tokens: 2048 })
        );
        assert_eq!(
            thinking(Reasoning::On, Some(20000), 16000),
            Some(wire::Thinking::Enabled { budget_tokens: 15999 })
        );
        assert_eq!(
            thinking(Reasoning::Low, Some(8000), 16000),
            Some(wire::Thinking::Enabled { budget_tokens: 1024 }),
            "a level set by policy wins over the client's budget"
        );
        assert_eq!(thinking(Reasoning::On, None, 1000), None);
        assert_eq!(
            thinking(Reasoning::Off, Some(2048), 1000),
            Some(wire::Thinking::Disabled)
        );
    }
}
