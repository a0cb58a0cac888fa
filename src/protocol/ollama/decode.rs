//! Ollama decoding (wire → IR) for the frontend: `/api/chat`, `/api/generate` and the
//! embedding requests. A bad field is a 400 that names it.

use serde_json::Value;

use super::wire;
use crate::ir::{ChatRequest, EmbedRequest, Error, Image, Input, Message, Part, Prompt, Role, Tool, ToolCall};
use crate::protocol::options;

pub fn decode_chat(wire: wire::ChatRequest) -> Result<ChatRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "model is required"));
    }
    let messages = wire
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| decode_message(i, m))
        .collect::<Result<_, _>>()?;
    let tools = wire
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(|t| Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t.function.parameters,
            strict: None,
        })
        .collect();
    decode_generation(wire.model, Input::Messages(messages), tools, wire.generation)
}

/// The fields chat and generate share, into one IR request.
fn decode_generation(model: String, input: Input, tools: Vec<Tool>, g: wire::Generation) -> Result<ChatRequest, Error> {
    let (sampling, extra) = options::options(g.options)?;
    Ok(ChatRequest {
        model,
        input,
        tools,
        response_format: g.format.map(options::format).transpose()?.flatten(),
        sampling,
        reasoning: g.think.as_ref().map(options::think).transpose()?.flatten(),
        logprobs: g.logprobs.unwrap_or(false),
        top_logprobs: g.top_logprobs,
        stream: g.stream != Some(false),
        n: 1,
        keep_alive: g.keep_alive,
        truncate: g.truncate,
        shift: g.shift,
        extra,
        ..Default::default()
    })
}

fn decode_message(i: usize, m: wire::Message) -> Result<Message, Error> {
    let role = match m.role.to_lowercase().as_str() {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(Error::invalid_field(
                &format!("messages[{i}].role"),
                format!("unknown role '{other}': use system, user, assistant or tool"),
            ));
        }
    };
    let mut parts = vec![Part::Text(m.content)];
    parts.extend(images(m.images).into_iter().map(Part::Image));
    let tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall {
            id: c.id.filter(|id| !id.is_empty()).unwrap_or_else(crate::ir::new_call_id),
            name: c.function.name,
            arguments: match c.function.arguments {
                Value::Null => "{}".into(),
                Value::String(s) => s,
                other => other.to_string(),
            },
        })
        .collect();
    Ok(Message {
        role,
        parts,
        tool_calls,
        tool_call_id: m.tool_call_id,
        name: m.tool_name,
        reasoning: m.thinking,
        reasoning_signature: None,
    })
}

fn images(images: Option<Vec<String>>) -> Vec<Image> {
    images
        .unwrap_or_default()
        .into_iter()
        .map(|base64| Image::Data { mime: None, base64 })
        .collect()
}

pub fn decode_generate(wire: wire::GenerateRequest) -> Result<ChatRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "model is required"));
    }
    if wire.raw == Some(true) && (wire.template.is_some() || wire.system.is_some() || wire.context.is_some()) {
        return Err(Error::bad_request(
            "raw mode does not support template, system, or context",
        ));
    }
    let input = Input::Prompt(Prompt {
        text: wire.prompt,
        suffix: wire.suffix.filter(|s| !s.is_empty()),
        system: wire.system.filter(|s| !s.is_empty()),
        raw: Some(wire.raw.unwrap_or(false)),
        images: images(wire.images),
    });
    decode_generation(wire.model, input, Vec::new(), wire.generation)
}

/// `/api/embed`: a string or a list of strings (none: an empty answer, no upstream call).
pub fn decode_embed(wire: wire::EmbedRequest) -> Result<EmbedRequest, Error> {
    let invalid = || Error::invalid_field("input", "invalid input type");
    let inputs = match wire.input {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| if let Value::String(s) = v { Some(s) } else { None })
            .collect::<Option<_>>()
            .ok_or_else(invalid)?,
        Value::Null => Vec::new(),
        _ => return Err(invalid()),
    };
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "model is required"));
    }
    Ok(EmbedRequest {
        model: wire.model,
        inputs,
        dimensions: wire.dimensions,
        truncate: wire.truncate,
        keep_alive: wire.keep_alive,
        options: wire.options,
    })
}

/// The legacy `/api/embeddings`: one prompt (empty: an empty answer, no upstream call).
pub fn decode_legacy_embedding(wire: wire::LegacyEmbeddingRequest) -> EmbedRequest {
    EmbedRequest {
        model: wire.model,
        inputs: Some(wire.prompt).filter(|p| !p.is_empty()).into_iter().collect(),
        keep_alive: wire.keep_alive,
        options: wire.options,
        ..Default::default()
    }
}

/// The model a `/api/show` or `/api/pull` body names (`model`, or the older `name`).
pub fn model_name(body: wire::ModelName) -> Result<String, Error> {
    Some(body.model)
        .filter(|m| !m.is_empty())
        .or(body.name)
        .ok_or_else(|| Error::invalid_field("model", "model is required"))
}
