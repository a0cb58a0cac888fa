//! Anthropic decoding for the frontend (wire → IR): a Messages request becomes a
//! `ChatRequest`: `system` the first message, tool results their own tool messages (before
//! the rest of their user turn, in order), thinking blocks an assistant turn's reasoning.

use serde_json::{Value, json};

use super::wire;
use crate::ir::{
    ChatRequest, Error, Image, Input, Message, Part, Reasoning, Role, Sampling, Tool, ToolCall, ToolChoice,
};

/// A `/v1/messages` request; `max_tokens` is required, as Anthropic requires it.
pub fn decode_messages(request: wire::MessagesRequest) -> Result<ChatRequest, Error> {
    let max_tokens = match request.max_tokens {
        None => return Err(Error::invalid_field("max_tokens", "max_tokens: Field required")),
        Some(n) if n < 1 => {
            return Err(Error::invalid_field(
                "max_tokens",
                format!("max_tokens: {n} is not valid, it must be at least 1"),
            ));
        }
        Some(n) => n,
    };
    let mut decoded = decode_request(request)?;
    decoded.sampling.max_tokens = Some(max_tokens);
    Ok(decoded)
}

/// A `/v1/messages/count_tokens` request: the same fields without `max_tokens`.
pub fn decode_count_tokens(request: wire::MessagesRequest) -> Result<ChatRequest, Error> {
    let mut decoded = decode_request(request)?;
    decoded.stream = false;
    Ok(decoded)
}

fn decode_request(request: wire::MessagesRequest) -> Result<ChatRequest, Error> {
    if request.model.is_empty() {
        return Err(Error::invalid_field("model", "model: Field required"));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = request.system {
        let parts: Vec<Part> = match system {
            wire::System::Text(text) => vec![Part::Text(text)],
            wire::System::Blocks(blocks) => blocks.into_iter().map(|b| Part::Text(b.text)).collect(),
        };
        if parts.iter().any(|p| matches!(p, Part::Text(t) if !t.is_empty())) {
            messages.push(Message {
                parts,
                ..Message::new(Role::System, "")
            });
        }
    }
    for (i, message) in request.messages.into_iter().enumerate() {
        decode_message(message, i, &mut messages)?;
    }
    let tools = request
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| decode_tool(t, i))
        .collect::<Result<Vec<_>, _>>()?;
    let parallel_tool_calls = match &request.tool_choice {
        Some(
            wire::ToolChoice::Auto {
                disable_parallel_tool_use,
            }
            | wire::ToolChoice::Any {
                disable_parallel_tool_use,
            }
            | wire::ToolChoice::Tool {
                disable_parallel_tool_use,
                ..
            },
        ) => disable_parallel_tool_use.map(|disable| !disable),
        Some(wire::ToolChoice::None) | None => None,
    };
    let tool_choice = match request.tool_choice {
        None | Some(wire::ToolChoice::Auto { .. }) => ToolChoice::Auto,
        Some(wire::ToolChoice::Any { .. }) => ToolChoice::Required,
        Some(wire::ToolChoice::None) => ToolChoice::None,
        Some(wire::ToolChoice::Tool { name, .. }) => {
            if !tools.iter().any(|t| t.name == name) {
                return Err(Error::invalid_field(
                    "tool_choice",
                    format!("tool_choice.name: '{name}' is not one of the tools"),
                ));
            }
            ToolChoice::Function(name)
        }
    };
    let reasoning_budget = match request.thinking {
        Some(wire::Thinking::Enabled { budget_tokens }) => Some(budget_tokens),
        _ => None,
    };
    // The budget rides along: an Anthropic upstream gets it, an OpenAI-compatible one the
    // effort level it amounts to, Ollama `think: true`.
    let reasoning = match request.thinking {
        None => None,
        Some(wire::Thinking::Disabled) => Some(Reasoning::Off),
        Some(wire::Thinking::Enabled { budget_tokens }) => {
            if budget_tokens < 1024 {
                return Err(Error::invalid_field(
                    "thinking.budget_tokens",
                    "thinking.budget_tokens: must be at least 1024",
                ));
            }
            Some(Reasoning::On)
        }
    };
    Ok(ChatRequest {
        model: request.model,
        input: Input::Messages(messages),
        tools,
        tool_choice,
        sampling: Sampling {
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.top_k,
            stop: request.stop_sequences.filter(|s| !s.is_empty()),
            ..Default::default()
        },
        reasoning,
        reasoning_budget,
        parallel_tool_calls,
        stream: request.stream.unwrap_or(false),
        n: 1,
        ..Default::default()
    })
}

/// One turn, as one IR message or more: a user turn's tool results come first, each a
/// tool message; the rest of its blocks follow as one user message.
fn decode_message(message: wire::MessageParam, i: usize, out: &mut Vec<Message>) -> Result<(), Error> {
    let role = match message.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(Error::invalid_field(
                &format!("messages[{i}].role"),
                format!("messages.{i}.role: '{other}' is neither 'user' nor 'assistant'"),
            ));
        }
    };
    let blocks = match message.content {
        wire::Content::Text(text) => vec![wire::Block::Text { text }],
        wire::Content::Blocks(blocks) => blocks,
    };
    let mut turn = Message {
        parts: Vec::new(),
        ..Message::new(role, "")
    };
    let mut reasoning = String::new();
    for (j, block) in blocks.into_iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        match block {
            wire::Block::Text { text } => turn.parts.push(Part::Text(text)),
            wire::Block::Image { source } => turn.parts.push(Part::Image(image(source))),
            wire::Block::ToolUse { id, name, input } if role == Role::Assistant => {
                let arguments = match input {
                    Value::Object(_) => input.to_string(),
                    Value::Null => "{}".into(),
                    _ => {
                        return Err(Error::invalid_field(
                            &at(),
                            format!("{}: a tool_use input must be an object", at()),
                        ));
                    }
                };
                turn.tool_calls.push(ToolCall { id, name, arguments });
            }
            wire::Block::ToolResult {
                tool_use_id,
                content,
                is_error,
            } if role == Role::User => {
                let mut result = Message {
                    parts: tool_result_parts(content, &at)?,
                    tool_call_id: Some(tool_use_id),
                    ..Message::new(Role::Tool, "")
                };
                // The IR has no error flag: the model reads it as the tool's own words.
                if is_error == Some(true) {
                    result.parts.insert(0, Part::Text("Error:".into()));
                }
                out.push(result);
            }
            wire::Block::Thinking { thinking, signature } if role == Role::Assistant => {
                reasoning.push_str(&thinking);
                if !signature.is_empty() {
                    turn.reasoning_signature = Some(signature);
                }
            }
            wire::Block::RedactedThinking { .. } if role == Role::Assistant => {}
            other => {
                let kind = serde_json::to_value(&other).ok();
                let kind = kind.as_ref().and_then(|v| v["type"].as_str()).unwrap_or("this");
                return Err(Error::invalid_field(
                    &at(),
                    format!("{}: a {} message cannot hold a {kind} block", at(), message.role),
                ));
            }
        }
    }
    if !reasoning.is_empty() {
        turn.reasoning = Some(reasoning);
    }
    if !turn.parts.is_empty() || !turn.tool_calls.is_empty() || turn.reasoning.is_some() {
        out.push(turn);
    }
    Ok(())
}

fn tool_result_parts(content: Option<wire::ToolResultContent>, at: &dyn Fn() -> String) -> Result<Vec<Part>, Error> {
    Ok(match content {
        None => Vec::new(),
        Some(wire::ToolResultContent::Text(text)) => vec![Part::Text(text)],
        Some(wire::ToolResultContent::Blocks(blocks)) => blocks
            .into_iter()
            .map(|b| match b {
                wire::Block::Text { text } => Ok(Part::Text(text)),
                wire::Block::Image { source } => Ok(Part::Image(image(source))),
                _ => Err(Error::invalid_field(
                    &at(),
                    format!("{}: a tool_result holds text and image blocks only", at()),
                )),
            })
            .collect::<Result<_, _>>()?,
    })
}

fn image(source: wire::ImageSource) -> Image {
    match source {
        wire::ImageSource::Base64 { media_type, data } => Image::Data {
            mime: Some(media_type),
            base64: data,
        },
        wire::ImageSource::Url { url } => Image::Url(url),
    }
}

fn decode_tool(tool: wire::Tool, i: usize) -> Result<Tool, Error> {
    if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
        return Err(Error::invalid_field(
            &format!("tools[{i}].type"),
            format!(
                "tools.{i}: '{kind}' is one of Anthropic's server tools, which the models behind diglot do not have; send a custom tool with an input_schema"
            ),
        ));
    }
    if tool.name.is_empty() {
        return Err(Error::invalid_field(
            &format!("tools[{i}].name"),
            format!("tools.{i}.name: Field required"),
        ));
    }
    let parameters = match tool.input_schema {
        Value::Null => json!({"type": "object", "properties": {}}),
        schema @ Value::Object(_) => schema,
        _ => {
            return Err(Error::invalid_field(
                &format!("tools[{i}].input_schema"),
                format!("tools.{i}.input_schema: must be a JSON Schema object"),
            ));
        }
    };
    Ok(Tool {
        name: tool.name,
        description: tool.description,
        parameters,
        strict: None,
    })
}
