//! Responses requests (wire → IR): `instructions` and the conversation items (earlier
//! turns of a stored chain first) become chat messages; options map as on chat. What
//! diglot cannot honour (built-in tools, background mode, conversations, ...) is a 400
//! naming the field, never a silent drop.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::wire::{self, ContentPart, CreateRequest, Item, TextFormat};
use crate::ir::{
    ChatRequest, Error, Input, Message, Part, Reasoning, ResponseFormat, Role, Tool, ToolCall, ToolChoice, random_id,
};
use crate::protocol::images::parse_image_ref;
use crate::protocol::openai::decode::decode_sampling;
use crate::protocol::options;

/// A request read: the IR request, this request's items as stored (with ids), and the
/// response object every answer to it starts from (its settings echoed).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub request: ChatRequest,
    pub input: Vec<Item>,
    pub template: wire::Response,
    pub store: bool,
}

/// The one `include` value accepted: reasoning comes back as its summary text, which
/// is all a later turn needs.
const INCLUDES: &[&str] = &["reasoning.encrypted_content"];

/// Reads `wire`, continuing from `history` (the items of a stored chain, oldest first).
/// `referenced` holds the stored items that `item_reference` inputs name, by id.
pub fn decode_response_request(
    wire: CreateRequest,
    history: Vec<Item>,
    referenced: &HashMap<String, Value>,
) -> Result<Decoded, Error> {
    if wire.model.is_empty() {
        return Err(Error::invalid_field("model", "'model' is required"));
    }
    refuse_unsupported(&wire)?;
    let input = input_items(wire.input, referenced)?;
    if input.is_empty() && history.is_empty() {
        return Err(Error::invalid_field("input", "'input' must contain at least one item"));
    }
    let mut messages = Vec::new();
    if let Some(instructions) = wire.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.push(Message::new(Role::System, instructions.clone()));
    }
    let mut turns = Turns::default();
    for item in &history {
        turns
            .push(&mut messages, item)
            .map_err(|e| Error::invalid_field("previous_response_id", e.message))?;
    }
    for (i, item) in input.iter().enumerate() {
        turns.push(&mut messages, item).map_err(|e| Error {
            param: Some(match e.param {
                Some(inner) => format!("input[{i}]{inner}"),
                None => format!("input[{i}]"),
            }),
            ..e
        })?;
    }
    let tools: Vec<Tool> = wire
        .tools
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| decode_tool(i, t))
        .collect::<Result<_, _>>()?;
    let format = wire.text.as_ref().and_then(|t| t.format.clone());
    let response_format = match (&format, wire.format) {
        (Some(format), _) => text_format(format),
        (None, Some(format)) => options::format(format)?,
        (None, None) => None,
    };
    let effort = wire.reasoning.as_ref().and_then(|r| r.effort.clone());
    let reasoning = match (&effort, &wire.think) {
        (Some(effort), _) => Reasoning::from_effort(effort).ok_or_else(|| {
            Error::invalid_field(
                "reasoning.effort",
                format!("invalid reasoning.effort '{effort}': use none, minimal, low, medium, high, xhigh or max"),
            )
        })?,
        (None, Some(think)) => options::think(think)?,
        (None, None) => None,
    };
    let (sampling, extra) = decode_sampling(
        wire.sampling.clone(),
        wire.options,
        [("max_output_tokens", wire.max_output_tokens), ("", None)],
    )?;
    let tool_choice_wire = wire.tool_choice.clone().unwrap_or_else(|| json!("auto"));
    let template = wire::Response {
        id: random_id("resp_"),
        object: "response",
        created_at: chrono::Utc::now().timestamp(),
        status: "in_progress",
        error: None,
        incomplete_details: None,
        instructions: wire.instructions,
        max_output_tokens: wire.max_output_tokens,
        model: wire.model.clone(),
        output: Vec::new(),
        output_text: String::new(),
        parallel_tool_calls: wire.parallel_tool_calls.unwrap_or(true),
        previous_response_id: wire.previous_response_id,
        reasoning: wire.reasoning,
        store: wire.store.unwrap_or(true),
        temperature: wire.sampling.temperature,
        text: wire::TextConfig {
            format: Some(format.unwrap_or(TextFormat::Text)),
        },
        tool_choice: tool_choice_wire,
        tools: wire.tools.unwrap_or_default(),
        top_p: wire.sampling.top_p,
        truncation: wire.truncation.unwrap_or_else(|| "disabled".into()),
        usage: None,
        user: wire.user,
        metadata: wire.metadata.unwrap_or_default(),
    };
    let request = ChatRequest {
        model: wire.model,
        input: Input::Messages(messages),
        tools,
        tool_choice: decode_tool_choice(wire.tool_choice)?,
        response_format,
        sampling,
        reasoning,
        parallel_tool_calls: wire.parallel_tool_calls,
        stream: wire.stream.unwrap_or(false),
        n: 1,
        keep_alive: wire.keep_alive,
        extra,
        ..Default::default()
    };
    Ok(Decoded {
        request,
        input,
        store: template.store,
        template,
    })
}

/// Features of the Responses API that need OpenAI's own platform.
fn refuse_unsupported(wire: &CreateRequest) -> Result<(), Error> {
    let refuse = |field: &str, what: &str| {
        Err(Error::invalid_field(
            field,
            format!("{what} is not supported by this gateway"),
        ))
    };
    if wire.background == Some(true) {
        return refuse("background", "background mode");
    }
    if wire.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return refuse("conversation", "'conversation' (server-side conversations)");
    }
    if wire.prompt.as_ref().is_some_and(|p| !p.is_null()) {
        return refuse("prompt", "'prompt' (stored prompt templates)");
    }
    if wire.max_tool_calls.as_ref().is_some_and(|m| !m.is_null()) {
        return refuse("max_tool_calls", "'max_tool_calls'");
    }
    if wire.top_logprobs.is_some_and(|n| n > 0) {
        return refuse("top_logprobs", "'top_logprobs'");
    }
    match wire.truncation.as_deref() {
        None | Some("disabled") => {}
        Some(other) => {
            return Err(Error::invalid_field(
                "truncation",
                format!("truncation '{other}' is not supported by this gateway: use 'disabled'"),
            ));
        }
    }
    if let Some(other) = wire.include.iter().flatten().find(|i| !INCLUDES.contains(&i.as_str())) {
        return Err(Error::invalid_field(
            "include",
            format!("include '{other}' is not supported by this gateway"),
        ));
    }
    Ok(())
}

/// The item and content-part types diglot reads; others are named in a 400.
const ITEM_TYPES: &[&str] = &["message", "function_call", "function_call_output", "reasoning"];
const PART_TYPES: &[&str] = &["input_text", "output_text", "refusal", "input_image"];

/// `input`: a string (one user message) or a list of items, each given an id as the
/// store keeps it. Items may leave out `type` for a message.
fn input_items(input: Option<Value>, referenced: &HashMap<String, Value>) -> Result<Vec<Item>, Error> {
    let items = match input {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => {
            return Ok(vec![with_id(Item::Message {
                id: None,
                role: "user".into(),
                content: vec![ContentPart::InputText { text }],
                status: None,
            })]);
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(Error::invalid_field(
                "input",
                "'input' must be a string or a list of items",
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            if item.get("type").and_then(Value::as_str) == Some("item_reference") {
                let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                item = referenced.get(id).cloned().ok_or_else(|| {
                    Error::invalid_field(
                        &format!("input[{i}].id"),
                        format!("no stored item '{id}' to refer to (it may have expired or belong to another token)"),
                    )
                })?;
            }
            if let Value::Object(fields) = &mut item
                && !fields.contains_key("type")
                && fields.contains_key("role")
            {
                fields.insert("type".into(), json!("message"));
            }
            let kind = item.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
            if !ITEM_TYPES.contains(&kind.as_str()) {
                return Err(Error::invalid_field(
                    &format!("input[{i}].type"),
                    format!("input items of type '{kind}' are not supported by this gateway"),
                ));
            }
            let parts = item.get("content").and_then(Value::as_array).into_iter().flatten();
            for (j, part) in parts.enumerate() {
                let part_kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                if !PART_TYPES.contains(&part_kind) {
                    return Err(Error::invalid_field(
                        &format!("input[{i}].content[{j}].type"),
                        format!("content parts of type '{part_kind}' are not supported by this gateway"),
                    ));
                }
            }
            // Items are internally tagged: serde reads them whole, so the error is the
            // item's, with what was wrong in it.
            serde_json::from_value::<Item>(item)
                .map(with_id)
                .map_err(|e| Error::invalid_field(&format!("input[{i}]"), format!("invalid 'input[{i}]': {e}")))
        })
        .collect()
}

/// The ids of the stored items `input` refers to (`{"type":"item_reference","id"}`).
pub fn item_references(input: Option<&Value>) -> Vec<String> {
    let items = input.and_then(Value::as_array).into_iter().flatten();
    items
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("item_reference"))
        .filter_map(|item| Some(item.get("id")?.as_str()?.to_owned()))
        .collect()
}

/// The item as the store keeps it and `input_items` lists it: with an id, and an
/// assistant's text as `output_text` (a string content reads as `input_text`).
fn with_id(mut item: Item) -> Item {
    if let Item::Message { role, content, .. } = &mut item
        && role == "assistant"
    {
        for part in content.iter_mut() {
            if let ContentPart::InputText { text } = part {
                *part = ContentPart::output_text(std::mem::take(text));
            }
        }
    }
    let (id, prefix) = match &mut item {
        Item::Message { id, .. } => (id, "msg_"),
        Item::FunctionCall { id, .. } => (id, "fc_"),
        Item::FunctionCallOutput { id, .. } => (id, "fco_"),
        Item::Reasoning { id, .. } => (id, "rs_"),
    };
    if id.is_none() {
        *id = Some(random_id(prefix));
    }
    item
}

/// Items → chat messages: an assistant turn's reasoning, text and calls make one
/// assistant message; a call's output is a tool message naming the call's function.
#[derive(Default)]
struct Turns {
    reasoning: Option<String>,
    /// `call_id` → function name, for the tool messages that answer them.
    calls: Vec<(String, String)>,
}

impl Turns {
    fn push(&mut self, messages: &mut Vec<Message>, item: &Item) -> Result<(), Error> {
        match item {
            Item::Message { role, content, .. } => {
                let role = match role.as_str() {
                    "system" | "developer" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(Error {
                            param: Some(".role".into()),
                            ..Error::bad_request(format!(
                                "unknown role '{other}': use system, developer, user or assistant"
                            ))
                        });
                    }
                };
                let parts = parts(content)?;
                let mut message = Message {
                    parts,
                    ..Message::new(role, "")
                };
                if role == Role::Assistant {
                    message.reasoning = self.reasoning.take();
                }
                messages.push(message);
            }
            Item::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                self.calls.push((call_id.clone(), name.clone()));
                let call = ToolCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                };
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => {
                        if last.reasoning.is_none() {
                            last.reasoning = self.reasoning.take();
                        }
                        last.tool_calls.push(call);
                    }
                    _ => messages.push(Message {
                        parts: Vec::new(),
                        tool_calls: vec![call],
                        reasoning: self.reasoning.take(),
                        ..Message::new(Role::Assistant, "")
                    }),
                }
            }
            Item::FunctionCallOutput { call_id, output, .. } => {
                let parts = match output {
                    Value::String(text) => vec![Part::Text(text.clone())],
                    parts_value => {
                        let list: Vec<ContentPart> =
                            serde_json::from_value(parts_value.clone()).map_err(|e| Error {
                                param: Some(".output".into()),
                                ..Error::bad_request(format!(
                                    "'output' must be a string or a list of content parts: {e}"
                                ))
                            })?;
                        parts(&list)?
                    }
                };
                let name = self
                    .calls
                    .iter()
                    .rev()
                    .find(|(id, _)| id == call_id)
                    .map(|(_, n)| n.clone());
                messages.push(Message {
                    parts,
                    tool_call_id: Some(call_id.clone()),
                    name,
                    ..Message::new(Role::Tool, "")
                });
            }
            Item::Reasoning {
                summary,
                content,
                encrypted_content,
                ..
            } => {
                let pieces = content.as_ref().filter(|c| !c.is_empty()).unwrap_or(summary);
                let mut text: String = pieces.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join("\n");
                if text.is_empty() {
                    text = encrypted_content.clone().unwrap_or_default();
                }
                if !text.is_empty() {
                    let pending = self.reasoning.get_or_insert_with(String::new);
                    if !pending.is_empty() {
                        pending.push('\n');
                    }
                    pending.push_str(&text);
                }
            }
        }
        Ok(())
    }
}

fn parts(content: &[ContentPart]) -> Result<Vec<Part>, Error> {
    content
        .iter()
        .enumerate()
        .map(|(j, part)| match part {
            ContentPart::InputText { text }
            | ContentPart::OutputText { text, .. }
            | ContentPart::Refusal { refusal: text } => Ok(Part::Text(text.clone())),
            ContentPart::InputImage {
                image_url: Some(url), ..
            } => parse_image_ref(url).map(Part::Image).map_err(|e| Error {
                param: Some(format!(".content[{j}].image_url")),
                ..e
            }),
            ContentPart::InputImage { .. } => Err(Error {
                param: Some(format!(".content[{j}].file_id")),
                ..Error::bad_request(
                    "images by file_id are not supported by this gateway: send image_url (a URL or a data URI)",
                )
            }),
        })
        .collect()
}

/// A function tool (`{"type":"function","name",...}`); built-in tools are refused.
fn decode_tool(i: usize, tool: &Value) -> Result<Tool, Error> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "function" {
        return Err(Error::invalid_field(
            &format!("tools[{i}].type"),
            format!(
                "tools of type '{kind}' (built-in tools) are not supported by this gateway; declare function tools"
            ),
        ));
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::invalid_field(&format!("tools[{i}].name"), "a function tool needs a name"))?;
    Ok(Tool {
        name: name.to_owned(),
        description: tool.get("description").and_then(Value::as_str).map(str::to_owned),
        parameters: tool
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: tool.get("strict").and_then(Value::as_bool),
    })
}

/// `tool_choice`: the chat strings, `{"type":"function","name"}`, or an allowed-tools list
/// (which narrows nothing here, as on chat: its `mode` is what applies).
fn decode_tool_choice(choice: Option<Value>) -> Result<ToolChoice, Error> {
    let invalid = || {
        Error::invalid_field(
            "tool_choice",
            "tool_choice must be 'none', 'auto', 'required' or {\"type\":\"function\",\"name\":...}; built-in tools are not supported by this gateway",
        )
    };
    Ok(match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(invalid()),
        },
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                ToolChoice::Function(o.get("name").and_then(Value::as_str).ok_or_else(invalid)?.to_owned())
            }
            Some("allowed_tools") => match o.get("mode").and_then(Value::as_str) {
                Some("required") => ToolChoice::Required,
                _ => ToolChoice::Auto,
            },
            _ => return Err(invalid()),
        },
        Some(_) => return Err(invalid()),
    })
}

fn text_format(format: &TextFormat) -> Option<ResponseFormat> {
    match format {
        TextFormat::Text => None,
        TextFormat::JsonObject => Some(ResponseFormat::Json),
        TextFormat::JsonSchema {
            name, schema, strict, ..
        } => Some(ResponseFormat::JsonSchema {
            name: name.clone(),
            schema: schema.clone(),
            strict: *strict,
        }),
    }
}

/// The items a stored response continues with: its history, its input, its output.
pub fn history(stored: impl IntoIterator<Item = Value>) -> Vec<Item> {
    stored
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: Value) -> Result<Decoded, Error> {
        decode_response_request(serde_json::from_value(body).unwrap(), Vec::new(), &HashMap::new())
    }

    #[test]
    fn a_turn_of_reasoning_text_and_calls_is_one_assistant_message() {
        let d = decode(json!({"model": "m", "instructions": "Be brief.", "input": [
            {"role": "user", "content": "weather?"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "use the tool"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
        ]}))
        .unwrap();
        let Input::Messages(m) = d.request.input else { panic!() };
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].text(), "Be brief.");
        assert_eq!(m[2].role, Role::Assistant);
        assert_eq!(m[2].reasoning.as_deref(), Some("use the tool"));
        assert_eq!(m[2].tool_calls[0].name, "weather");
        assert_eq!(
            (m[3].tool_call_id.as_deref(), m[3].name.as_deref()),
            (Some("c1"), Some("weather"))
        );
        assert!(d.input.iter().all(|i| matches!(
            i,
            Item::Message { id: Some(_), .. }
                | Item::FunctionCall { id: Some(_), .. }
                | Item::FunctionCallOutput { id: Some(_), .. }
                | Item::Reasoning { id: Some(_), .. }
        )));
    }

    #[test]
    fn unsupported_features_are_named() {
        let param = |body: Value| decode(body).unwrap_err().param.unwrap();
        assert_eq!(
            param(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})),
            "tools[0].type"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "background": true})),
            "background"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "conversation": "conv_1"})),
            "conversation"
        );
        assert_eq!(
            param(json!({"model": "m", "input": [{"type": "web_search_call", "id": "w"}]})),
            "input[0].type"
        );
        assert_eq!(
            param(
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]})
            ),
            "input[0].content[0].type"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "include": ["file_search_call.results"]})),
            "include"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}})),
            "tool_choice"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "reasoning": {"effort": "huge"}})),
            "reasoning.effort"
        );
    }
}
