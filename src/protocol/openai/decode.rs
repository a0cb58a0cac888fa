//! OpenAI decoding (wire → IR) for the frontend: chat, legacy completions and embeddings
//! requests, with every Ollama option accepted as an extension. A bad field is a 400 that
//! names it.

use serde_json::{Map, Value, json};

use super::wire;
use crate::ir::{
    ChatRequest, EmbedRequest, Error, Input, Message, Part, Prompt, Reasoning, ResponseFormat, Role, Sampling, Tool,
    ToolCall, ToolChoice,
};
use crate::protocol::images::parse_image_ref;
use crate::protocol::options;

/// Most parallel answers one request may ask for (`n`, or prompts × `n`).
const MAX_CHOICES: u32 = 16;
pub fn decode_chat(wire: wire::ChatCompletionRequest) -> Result<ChatRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "'model' is required"));
    }
    if wire.messages.is_empty() {
        return Err(Error::invalid_field(
            "messages",
            "'messages' must contain at least one message",
        ));
    }
    let messages = wire
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| decode_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let tools = wire
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| decode_tool(i, t))
        .collect::<Result<_, _>>()?;
    let response_format = match (wire.response_format, wire.format) {
        (Some(format), _) => decode_response_format(format),
        (None, Some(format)) => options::format(format)?,
        (None, None) => None,
    };
    let effort = wire.reasoning.and_then(|r| r.effort).or(wire.reasoning_effort);
    let reasoning = match (effort, wire.think) {
        (Some(effort), _) => Reasoning::from_effort(&effort).ok_or_else(|| {
            Error::invalid_field(
                "reasoning_effort",
                format!("invalid reasoning_effort '{effort}': use none, minimal, low, medium, high, xhigh or max"),
            )
        })?,
        (None, Some(think)) => options::think(&think)?,
        (None, None) => None,
    };
    let (sampling, extra) = decode_sampling(
        wire.sampling,
        wire.options,
        [
            ("max_completion_tokens", wire.max_completion_tokens),
            ("max_tokens", wire.max_tokens),
        ],
    )?;
    Ok(ChatRequest {
        model: wire.model,
        input: Input::Messages(messages),
        tools,
        tool_choice: decode_tool_choice(wire.tool_choice)?,
        parallel_tool_calls: wire.parallel_tool_calls,
        response_format,
        sampling,
        reasoning,
        logprobs: wire.logprobs.unwrap_or(false),
        top_logprobs: decode_top_logprobs(wire.top_logprobs)?,
        stream: wire.stream.unwrap_or(false),
        n: decode_n(wire.n, 1)?,
        keep_alive: wire.keep_alive,
        extra,
        ..Default::default()
    })
}

fn decode_message(i: usize, m: wire::ChatMessage) -> Result<Message, Error> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        other => {
            return Err(Error::invalid_field(
                &format!("messages[{i}].role"),
                format!("unknown role '{other}': use system, developer, user, assistant or tool"),
            ));
        }
    };
    let parts = match m.content {
        None if role == Role::Assistant => Vec::new(),
        None => {
            return Err(Error::invalid_field(
                &format!("messages[{i}].content"),
                "'content' is required for this role",
            ));
        }
        Some(wire::Content::Text(text)) => vec![Part::Text(text)],
        Some(wire::Content::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| match part {
                wire::ContentPart::Text { text } | wire::ContentPart::Refusal { refusal: text } => Ok(Part::Text(text)),
                wire::ContentPart::ImageUrl { image_url } => {
                    parse_image_ref(image_url.url()).map(Part::Image).map_err(|e| Error {
                        param: Some(format!("messages[{i}].content[{j}].image_url")),
                        ..e
                    })
                }
                wire::ContentPart::InputAudio { .. } => Err(Error::invalid_field(
                    &format!("messages[{i}].content[{j}]"),
                    "audio input is not supported by this gateway",
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, call)| {
            let name = call.function.name.filter(|n| !n.is_empty()).ok_or_else(|| {
                Error::invalid_field(
                    &format!("messages[{i}].tool_calls[{j}].function.name"),
                    "a tool call needs a function name",
                )
            })?;
            let arguments = match call.function.arguments {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
            };
            Ok(ToolCall {
                id: call.id.unwrap_or_else(crate::ir::new_call_id),
                name,
                arguments,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Message {
        role,
        parts,
        tool_calls,
        tool_call_id: m.tool_call_id,
        name: m.name.filter(|_| role == Role::Tool),
        reasoning: m.reasoning_content.or(m.reasoning),
        reasoning_signature: None,
    })
}

fn decode_tool(i: usize, t: wire::ToolDefinition) -> Result<Tool, Error> {
    if t.kind != "function" {
        return Err(Error::invalid_field(
            &format!("tools[{i}].type"),
            format!("tools of type '{}' are not supported; use 'function'", t.kind),
        ));
    }
    Ok(Tool {
        name: t.function.name,
        description: t.function.description,
        parameters: t
            .function
            .parameters
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: t.function.strict,
    })
}

fn decode_tool_choice(choice: Option<Value>) -> Result<ToolChoice, Error> {
    let invalid = || {
        Error::invalid_field(
            "tool_choice",
            "tool_choice must be 'none', 'auto', 'required' or {\"type\":\"function\",\"function\":{\"name\":...}}",
        )
    };
    Ok(match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            _ => return Err(invalid()),
        },
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?;
                ToolChoice::Function(name.to_owned())
            }
            // Allowed-tools lists narrow nothing here; the model may use any tool sent.
            Some("allowed_tools") => ToolChoice::Auto,
            _ => return Err(invalid()),
        },
        Some(_) => return Err(invalid()),
    })
}

fn decode_response_format(format: wire::ResponseFormat) -> Option<ResponseFormat> {
    match format {
        wire::ResponseFormat::Text => None,
        wire::ResponseFormat::JsonObject => Some(ResponseFormat::Json),
        wire::ResponseFormat::JsonSchema { json_schema } => Some(ResponseFormat::JsonSchema {
            name: json_schema.name,
            schema: json_schema.schema.unwrap_or_else(|| json!({"type": "object"})),
            strict: json_schema.strict,
        }),
    }
}

/// Options from the top level and from `options`; the top level wins. Keys no typed
/// option knows are returned separately, to reach an Ollama upstream untouched. The
/// first of `max_tokens` (named fields) that is set wins over `num_predict`.
pub(crate) fn decode_sampling(
    top: Sampling,
    options: Option<Map<String, Value>>,
    max_tokens: [(&str, Option<i64>); 2],
) -> Result<(Sampling, Map<String, Value>), Error> {
    let (from_options, extra) = match options {
        Some(options) => options::options(options)?,
        None => Default::default(),
    };
    options::check_num_predict(top.max_tokens, "num_predict")?;
    let mut sampling = top.or(from_options);
    for (field, max) in max_tokens {
        if let Some(max) = max.filter(|&n| n < 0) {
            return Err(Error::invalid_field(
                field,
                format!("'{field}' must be 0 or more, not {max}"),
            ));
        }
    }
    if let Some(max) = max_tokens.into_iter().find_map(|(_, max)| max) {
        sampling.max_tokens = Some(max);
    }
    Ok((sampling, extra))
}

fn decode_top_logprobs(top: Option<u32>) -> Result<Option<u32>, Error> {
    match top {
        Some(n) if n > 20 => Err(Error::invalid_field(
            "top_logprobs",
            "top_logprobs must be between 0 and 20",
        )),
        other => Ok(other),
    }
}

fn decode_n(n: Option<u32>, prompts: u32) -> Result<u32, Error> {
    let n = n.unwrap_or(1);
    if n == 0 || n * prompts > MAX_CHOICES {
        return Err(Error::invalid_field(
            "n",
            format!("n must be between 1 and {MAX_CHOICES} answers per request"),
        ));
    }
    Ok(n)
}
/// One IR request per prompt and per answer (`n`).
pub fn decode_completion(wire: wire::CompletionRequest) -> Result<Vec<ChatRequest>, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "'model' is required"));
    }
    let prompts = texts(wire.prompt, "prompt")?;
    let n = decode_n(wire.n, prompts.len() as u32)?;
    let (sampling, extra) = decode_sampling(
        wire.sampling,
        wire.options,
        [("max_tokens", wire.max_tokens), ("max_tokens", None)],
    )?;
    let base = ChatRequest {
        model: wire.model,
        sampling,
        reasoning: wire.think.as_ref().map(options::think).transpose()?.flatten(),
        logprobs: wire.logprobs.is_some_and(|n| n > 0),
        top_logprobs: decode_top_logprobs(wire.logprobs.filter(|&n| n > 0))?,
        stream: wire.stream.unwrap_or(false),
        n: 1,
        keep_alive: wire.keep_alive,
        extra,
        ..Default::default()
    };
    Ok(prompts
        .into_iter()
        .flat_map(|text| std::iter::repeat_n(text, n as usize))
        .map(|text| ChatRequest {
            input: Input::Prompt(Prompt {
                text,
                suffix: wire.suffix.clone(),
                ..Default::default()
            }),
            ..base.clone()
        })
        .collect())
}

/// A `prompt` or `input`: a string or a non-empty list of strings (token arrays are not
/// taken: nothing here can turn token ids back into text for an upstream).
fn texts(value: Value, field: &str) -> Result<Vec<String>, Error> {
    let token_arrays = || {
        Error::invalid_field(
            field,
            format!("token-array {field}s are not supported: send the {field} as text"),
        )
    };
    match value {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|v| {
                if let Value::String(s) = v {
                    Ok(s)
                } else {
                    Err(token_arrays())
                }
            })
            .collect(),
        Value::Array(_) => Err(Error::invalid_field(field, format!("'{field}' must not be empty"))),
        _ => Err(token_arrays()),
    }
}

/// `encoding_format`: whether vectors go back as base64 (`"base64"`) or floats.
pub fn wants_base64(format: Option<&str>) -> Result<bool, Error> {
    match format {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(Error::invalid_field(
            "encoding_format",
            format!("encoding_format '{other}' is not 'float' or 'base64'"),
        )),
    }
}

pub fn decode_embedding(wire: wire::EmbeddingRequest) -> Result<EmbedRequest, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "'model' is required"));
    }
    let inputs = texts(wire.input, "input")?;
    Ok(EmbedRequest {
        model: wire.model,
        inputs,
        dimensions: wire.dimensions,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn chat(body: Value) -> Result<ChatRequest, Error> {
        decode_chat(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn negative_token_limits_are_refused_except_ollamas_own() {
        let with = |extra: Value| {
            let mut body = json!({"model":"m","messages":[{"role":"user","content":"hi"}]});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            chat(body)
        };
        for (field, body) in [
            ("max_tokens", json!({"max_tokens": -5})),
            ("max_completion_tokens", json!({"max_completion_tokens": -1})),
            ("num_predict", json!({"num_predict": -3})),
            ("options.num_predict", json!({"options": {"num_predict": -100}})),
        ] {
            let e = with(body).unwrap_err();
            assert_eq!((e.status(), e.param.as_deref()), (400, Some(field)), "{}", e.message);
            assert!(e.message.contains(field), "{}", e.message);
        }
        for n in [-1, -2, 0, 10] {
            let r = with(json!({"options": {"num_predict": n}})).unwrap();
            assert_eq!(r.sampling.max_tokens, Some(n));
        }
        assert_eq!(with(json!({"max_tokens": 0})).unwrap().sampling.max_tokens, Some(0));
        let completion =
            decode_completion(serde_json::from_value(json!({"model":"m","prompt":"p","max_tokens":-1})).unwrap());
        assert_eq!(completion.unwrap_err().param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn options_merge_top_level_over_options_and_keep_unknown_ones() {
        let r = chat(json!({"model":"m","messages":[{"role":"user","content":"hi"}],
            "temperature":0.1,"num_ctx":4096,"options":{"temperature":0.9,"top_k":3,"mystery":true},
            "max_tokens":5,"max_completion_tokens":7}))
        .unwrap();
        assert_eq!(r.sampling.temperature, Some(0.1));
        assert_eq!(r.sampling.num_ctx, Some(4096));
        assert_eq!(r.sampling.top_k, Some(3));
        assert_eq!(r.sampling.max_tokens, Some(7));
        assert_eq!(r.extra.get("mystery"), Some(&json!(true)));
        assert!(!r.extra.contains_key("top_k"));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = chat(json!({"model":"m","messages":[{"role":"wizard","content":"hi"}]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"options":{"top_k":"many"}}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("options.top_k"), "{e:?}");
        let e = chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"extreme"}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
    }

    #[test]
    fn reasoning_effort_maps_to_levels() {
        let r =
            chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"minimal"})).unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Low));
        let r = chat(json!({"model":"m","messages":[{"role":"user","content":"x"}],"reasoning":{"effort":"none"},"reasoning_effort":"high"})).unwrap();
        assert_eq!(r.reasoning, Some(Reasoning::Off));
    }
}
