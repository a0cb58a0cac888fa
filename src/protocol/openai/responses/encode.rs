//! Responses answers (IR → wire): the typed `response.*` SSE events with their
//! `sequence_number`, `output_index`, `content_index` and `item_id`, and the whole
//! response object, both from one fold of the IR events. A failure after the stream
//! started is a `response.failed` event, never a cut connection.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::debug;

use super::wire::{self, ContentPart, Item, SummaryText};
use crate::ir::{ChatEvent, ChatResponse, ChatStream, Error, FinishReason, Usage, new_call_id, random_id};

/// The output item being streamed: always the last of `output`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Open {
    Nothing,
    Reasoning,
    Message,
    Call(u32),
}

/// Folds IR events into a response object, writing the stream's events as it goes
/// (or not, for a whole answer).
pub struct ResponseEncoder {
    response: wire::Response,
    emit: bool,
    sequence: u64,
    open: Open,
    /// IR tool-call index → its output index.
    calls: Vec<(u32, usize)>,
    usage: Usage,
    finish: Option<FinishReason>,
}

impl ResponseEncoder {
    /// An encoder answering with `template` (the request's settings, an id, no output).
    pub fn new(template: wire::Response) -> Self {
        Self {
            response: template,
            emit: true,
            sequence: 0,
            open: Open::Nothing,
            calls: Vec::new(),
            usage: Usage::default(),
            finish: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.response.id
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Bytes {
        let mut out = Vec::new();
        let response = self.response_json();
        self.event(&mut out, "response.created", json!({"response": response}));
        self.event(&mut out, "response.in_progress", json!({"response": response}));
        out.into()
    }

    /// The events for one IR event (none for those that only update state).
    pub fn encode(&mut self, event: ChatEvent) -> Option<Bytes> {
        let mut out = Vec::new();
        match event {
            ChatEvent::Text(text) => {
                if self.open != Open::Message {
                    self.close(&mut out);
                    self.open_message(&mut out);
                }
                let (item_id, index) = self.current();
                self.event(
                    &mut out,
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
                );
                if let Some(Item::Message { content, .. }) = self.response.output.last_mut()
                    && let Some(ContentPart::OutputText { text: all, .. }) = content.first_mut()
                {
                    all.push_str(&text);
                }
            }
            ChatEvent::Reasoning(text) => {
                if self.open != Open::Reasoning {
                    self.close(&mut out);
                    self.open_reasoning(&mut out);
                }
                let (item_id, index) = self.current();
                self.event(
                    &mut out,
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": item_id, "output_index": index, "summary_index": 0, "delta": text}),
                );
                if let Some(Item::Reasoning { summary, .. }) = self.response.output.last_mut()
                    && let Some(part) = summary.first_mut()
                {
                    part.text.push_str(&text);
                }
            }
            ChatEvent::ToolCall {
                index,
                id,
                name,
                arguments_delta,
            } => {
                let output_index = match self.calls.iter().find(|(i, _)| *i == index) {
                    Some(&(_, at)) => at,
                    None => {
                        self.close(&mut out);
                        self.open_call(&mut out, index, id, name.unwrap_or_default());
                        self.response.output.len() - 1
                    }
                };
                if !arguments_delta.is_empty()
                    && let Some(Item::FunctionCall { id, arguments, .. }) = self.response.output.get_mut(output_index)
                {
                    arguments.push_str(&arguments_delta);
                    let item_id = id.clone();
                    self.event(
                        &mut out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": output_index, "delta": arguments_delta}),
                    );
                }
            }
            ChatEvent::Usage(usage) => self.usage = usage,
            ChatEvent::Finish(reason) => self.finish = Some(reason),
            // The Responses API has no place for either (its reasoning items carry no signature).
            ChatEvent::Logprobs(_) | ChatEvent::ReasoningSignature(_) | ChatEvent::StopSequence(_) => {}
        }
        (!out.is_empty()).then(|| out.into())
    }

    /// Closes the last item and writes `response.completed` (or `response.incomplete`
    /// when the answer was cut short); returns the events and the final object.
    pub fn finish(&mut self) -> (Bytes, &wire::Response) {
        let mut out = Vec::new();
        let incomplete = match self.finish {
            Some(FinishReason::Length) => Some("max_output_tokens"),
            Some(FinishReason::ContentFilter) => Some("content_filter"),
            _ => None,
        };
        if incomplete.is_some()
            && let Some(Item::Message { status, .. }) = self.response.output.last_mut()
            && self.open == Open::Message
        {
            *status = Some("incomplete".into());
        }
        self.close(&mut out);
        self.response.status = if incomplete.is_some() {
            "incomplete"
        } else {
            "completed"
        };
        self.response.incomplete_details = incomplete.map(|reason| wire::IncompleteDetails { reason });
        self.response.usage = usage(&self.usage);
        self.response.output_text = self
            .response
            .output
            .iter()
            .filter_map(|item| match item {
                Item::Message { content, .. } => Some(content),
                _ => None,
            })
            .flatten()
            .filter_map(|part| match part {
                ContentPart::OutputText { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let kind = if incomplete.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let response = self.response_json();
        self.event(&mut out, kind, json!({"response": response}));
        (out.into(), &self.response)
    }

    /// `response.failed`, carrying what was produced before the failure.
    pub fn fail(&mut self, error: &Error) -> Bytes {
        let mut out = Vec::new();
        if let Some(Item::Message { status, .. } | Item::FunctionCall { status, .. }) = self.response.output.last_mut()
            && self.open != Open::Nothing
        {
            *status = Some("incomplete".into());
        }
        self.open = Open::Nothing;
        self.response.status = "failed";
        self.response.error = Some(wire::ResponseError {
            code: "server_error".into(),
            message: error.message.clone(),
        });
        self.response.usage = usage(&self.usage);
        let response = self.response_json();
        self.event(&mut out, "response.failed", json!({"response": response}));
        out.into()
    }

    /// A whole answer, folded the way its stream would have been.
    pub fn whole(mut self, answer: ChatResponse) -> wire::Response {
        self.emit = false;
        for event in answer.into_events() {
            self.encode(event);
        }
        self.finish();
        self.response
    }

    fn current(&self) -> (String, usize) {
        let id = self
            .response
            .output
            .last()
            .and_then(Item::id)
            .unwrap_or_default()
            .to_owned();
        (id, self.response.output.len().saturating_sub(1))
    }

    fn open_message(&mut self, out: &mut Vec<u8>) {
        let id = random_id("msg_");
        let index = self.response.output.len();
        let added = Item::Message {
            id: Some(id.clone()),
            role: "assistant".into(),
            content: Vec::new(),
            status: Some("in_progress".into()),
        };
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": ContentPart::output_text(String::new())}),
        );
        self.response.output.push(Item::Message {
            id: Some(id),
            role: "assistant".into(),
            content: vec![ContentPart::output_text(String::new())],
            status: Some("in_progress".into()),
        });
        self.open = Open::Message;
    }

    fn open_reasoning(&mut self, out: &mut Vec<u8>) {
        let id = random_id("rs_");
        let index = self.response.output.len();
        let added = Item::Reasoning {
            id: Some(id.clone()),
            summary: Vec::new(),
            content: None,
            encrypted_content: None,
        };
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        self.event(
            out,
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": index, "summary_index": 0, "part": SummaryText::summary(String::new())}),
        );
        self.response.output.push(Item::Reasoning {
            id: Some(id),
            summary: vec![SummaryText::summary(String::new())],
            content: None,
            encrypted_content: None,
        });
        self.open = Open::Reasoning;
    }

    fn open_call(&mut self, out: &mut Vec<u8>, index: u32, call_id: Option<String>, name: String) {
        let output_index = self.response.output.len();
        let item = Item::FunctionCall {
            id: Some(random_id("fc_")),
            call_id: call_id.filter(|id| !id.is_empty()).unwrap_or_else(new_call_id),
            name,
            arguments: String::new(),
            status: Some("in_progress".into()),
        };
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        self.response.output.push(item);
        self.calls.push((index, output_index));
        self.open = Open::Call(index);
    }

    /// The `.done` events of the open item.
    fn close(&mut self, out: &mut Vec<u8>) {
        let open = std::mem::replace(&mut self.open, Open::Nothing);
        let index = self.response.output.len().saturating_sub(1);
        let Some(item) = self.response.output.last_mut() else {
            return;
        };
        match (open, item) {
            (
                Open::Message,
                Item::Message {
                    id, content, status, ..
                },
            ) => {
                if status.as_deref() == Some("in_progress") {
                    *status = Some("completed".into());
                }
                let (id, part) = (id.clone(), content.first().cloned());
                let text = match &part {
                    Some(ContentPart::OutputText { text, .. }) => text.clone(),
                    _ => String::new(),
                };
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
            }
            (Open::Reasoning, Item::Reasoning { id, summary, .. }) => {
                let (id, part) = (id.clone(), summary.first().cloned());
                let text = part.as_ref().map(|p| p.text.clone()).unwrap_or_default();
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                );
            }
            (
                Open::Call(_),
                Item::FunctionCall {
                    id,
                    name,
                    arguments,
                    status,
                    ..
                },
            ) => {
                *status = Some("completed".into());
                let body = json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments});
                self.event(out, "response.function_call_arguments.done", body);
            }
            _ => return,
        }
        let item = self.response.output[index].clone();
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    fn response_json(&self) -> Value {
        serde_json::to_value(&self.response).unwrap_or_default()
    }

    /// One SSE event: `event: TYPE` and its data, `type` and `sequence_number` first.
    fn event(&mut self, out: &mut Vec<u8>, kind: &str, body: Value) {
        let sequence = self.sequence;
        self.sequence += 1;
        if !self.emit {
            return;
        }
        let mut data = Map::new();
        data.insert("type".into(), json!(kind));
        data.insert("sequence_number".into(), json!(sequence));
        if let Value::Object(fields) = body {
            data.extend(fields);
        }
        let start = out.len();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        serde_json::to_writer(&mut *out, &data).expect("events serialize");
        out.extend_from_slice(b"\n\n");
        debug!(target: "diglot::wire", frame = %String::from_utf8_lossy(&out[start..out.len() - 2]), "responses event");
    }
}

/// Usage as the Responses API counts it; unknown usage is left out, never zeroed.
fn usage(usage: &Usage) -> Option<wire::Usage> {
    if usage.prompt_tokens.is_none() && usage.completion_tokens.is_none() {
        return None;
    }
    Some(wire::Usage {
        input_tokens: usage.prompt_tokens.unwrap_or(0),
        input_tokens_details: usage
            .cached_tokens
            .map(|cached_tokens| wire::InputTokensDetails { cached_tokens }),
        output_tokens: usage.completion_tokens.unwrap_or(0),
        output_tokens_details: usage
            .reasoning_tokens
            .map(|reasoning_tokens| wire::OutputTokensDetails { reasoning_tokens }),
        total_tokens: usage.total_tokens(),
    })
}

/// What to do with the final response object before its last event is sent (keep it).
pub type Finished = Box<dyn FnOnce(wire::Response) -> BoxFuture<'static, ()> + Send>;

/// The whole event stream of one answer. `finished` runs on a completed or incomplete
/// response before `response.completed` leaves, so a client that asks for it right
/// after finds it.
pub fn sse(
    mut encoder: ResponseEncoder,
    mut events: ChatStream,
    finished: Finished,
) -> BoxStream<'static, Result<Bytes, Infallible>> {
    Box::pin(async_stream::stream! {
        yield Ok(encoder.start());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => if let Some(frames) = encoder.encode(event) { yield Ok(frames) },
                Err(error) => {
                    yield Ok(encoder.fail(&error));
                    return;
                }
            }
        }
        let (frames, response) = encoder.finish();
        finished(response.clone()).await;
        yield Ok(frames);
    })
}

/// A `Serialize` value as JSON, for the store.
pub fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}
