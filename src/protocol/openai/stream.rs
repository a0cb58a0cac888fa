//! An OpenAI-compatible upstream's answer as IR events: the SSE stream of chat or legacy
//! completion chunks (with its mid-stream errors), or a whole answer read
//! as one chunk. Owns what the IR takes of each chunk: text, reasoning (`reasoning_content`
//! or `reasoning`, or `<think>` tags), tool-call deltas, logprobs, the last usage seen,
//! llama-server's timings and the finish reason.

use futures::StreamExt;
use serde_json::Value;
use tracing::debug;

use super::think::ThinkTags;
use super::wire;
use crate::ir::{ChatEvent, ChatStream, Error, FinishReason, TokenLogprob, TopLogprob, Usage};
use crate::protocol::upstream::Frames;

/// The events of a streamed answer, from its SSE events' data as they come (framing,
/// its size limit and idle timeout are `protocol::framing`'s).
pub fn events(mut frames: Frames, mut decoder: SseDecoder) -> ChatStream {
    Box::pin(async_stream::stream! {
        while let Some(data) = frames.next().await {
            let data = match data {
                Ok(data) => data,
                Err(e) => { yield Err(e); return; }
            };
            debug!(target: "diglot::wire", upstream_event = %data, "openai chunk");
            if data.trim() == "[DONE]" {
                decoder.done = true;
                break;
            }
            match decoder.decode(&data) {
                Ok(events) => for e in events { yield Ok(e) },
                Err(e) => { yield Err(e); return; }
            }
        }
        match decoder.finish() {
            Ok(events) => for e in events { yield Ok(e) },
            Err(e) => yield Err(e),
        }
    })
}

/// Turns SSE `data:` payloads of chat or completion chunks into IR events.
pub struct SseDecoder {
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// llama-server's own timings, when it sends them.
    timings: Option<wire::Timings>,
    /// Tool-call indexes whose id and name were passed on: some servers repeat them on
    /// every delta, and OpenAI clients would concatenate the repeats.
    named_calls: Vec<u32>,
    /// `[DONE]` seen.
    done: bool,
    think: Option<ThinkTags>,
    /// The answer's id and model were noted on the attempt's span.
    identified: bool,
}

impl SseDecoder {
    /// `think_tags`: move leading `<think>` text into reasoning.
    pub fn new(think_tags: bool) -> Self {
        Self {
            finish: None,
            usage: None,
            timings: None,
            named_calls: Vec::new(),
            done: false,
            think: think_tags.then(ThinkTags::default),
            identified: false,
        }
    }

    fn decode(&mut self, data: &str) -> Result<Vec<ChatEvent>, Error> {
        let chunk: wire::ChatCompletionChunk = serde_json::from_str(data)
            .map_err(|e| Error::upstream(502, format!("the upstream sent an unreadable chunk: {e}")))?;
        self.events(chunk)
    }

    fn events(&mut self, chunk: wire::ChatCompletionChunk) -> Result<Vec<ChatEvent>, Error> {
        if !self.identified && (!chunk.id.is_empty() || !chunk.model.is_empty()) {
            self.identified = true;
            crate::telemetry::spans::record_response(Some(&chunk.id), Some(&chunk.model));
        }
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            let message = error["message"]
                .as_str()
                .or(error.as_str())
                .unwrap_or("the upstream failed mid-stream");
            return Err(Error::upstream(500, message));
        }
        // Some servers repeat a growing usage on every chunk: the last one counts.
        if let Some(usage) = chunk.usage.flatten() {
            self.usage = Some(usage_from(usage));
        }
        if let Some(timings) = chunk.timings {
            self.timings = Some(timings);
        }
        let mut events = Vec::new();
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(events);
        };
        if let Some(content) = choice.logprobs.and_then(|l| l.content)
            && !content.is_empty()
        {
            events.push(ChatEvent::Logprobs(content.into_iter().map(logprob_from).collect()));
        }
        let delta = choice.delta;
        if let Some(text) = [delta.reasoning_content, delta.reasoning]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
        {
            events.push(ChatEvent::Reasoning(text));
        }
        let text = delta.content.or(choice.text).unwrap_or_default();
        if !text.is_empty() {
            match &mut self.think {
                Some(tags) => events.extend(tags.split(&text)),
                None => events.push(ChatEvent::Text(text)),
            }
        }
        for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
            let index = call.index.unwrap_or(position as u32);
            let function = call.function;
            let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
            let (id, name) = (non_empty(call.id), non_empty(function.name));
            let first = (id.is_some() || name.is_some()) && !self.named_calls.contains(&index);
            if first {
                self.named_calls.push(index);
            }
            events.push(ChatEvent::ToolCall {
                index,
                id: id.filter(|_| first),
                name: name.filter(|_| first),
                arguments_delta: match function.arguments {
                    Some(Value::String(s)) => s,
                    // Some servers send whole answers' arguments as an object.
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => String::new(),
                },
            });
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(match reason.as_str() {
                "length" => FinishReason::Length,
                "tool_calls" | "function_call" => FinishReason::ToolCalls,
                "content_filter" => FinishReason::ContentFilter,
                _ => FinishReason::Stop,
            });
        }
        Ok(events)
    }

    /// The closing events, or an error if the upstream stopped without finishing.
    fn finish(&mut self) -> Result<Vec<ChatEvent>, Error> {
        if !self.done && self.finish.is_none() {
            return Err(Error::upstream(
                502,
                "the upstream closed the stream before it finished",
            ));
        }
        let mut events = Vec::new();
        if let Some(tags) = &mut self.think {
            events.extend(tags.flush());
        }
        // Usage the upstream did not report stays unknown rather than zero.
        if let Some(usage) = self
            .usage
            .take()
            .or_else(|| self.timings.as_ref().map(|_| Usage::default()))
        {
            events.push(ChatEvent::Usage(with_timings(usage, self.timings.as_ref())));
        }
        events.push(ChatEvent::Finish(self.finish.unwrap_or(FinishReason::Stop)));
        Ok(events)
    }

    /// A whole (non-streamed) chat completion or completion, as the same events (its
    /// `message` is read as a delta).
    pub(super) fn whole(&mut self, answer: wire::ChatCompletionChunk) -> Result<Vec<ChatEvent>, Error> {
        let mut events = self.events(answer)?;
        self.done = true;
        events.extend(self.finish()?);
        Ok(events)
    }
}

/// llama-server's `timings` (milliseconds) as Ollama-style nanosecond timings; its token
/// counts fill in when the server sent no usage.
fn with_timings(mut usage: Usage, timings: Option<&wire::Timings>) -> Usage {
    let Some(t) = timings else { return usage };
    let ns = |ms: Option<f64>| (ms.unwrap_or(0.0) * 1e6) as u64;
    let (prompt, eval) = (ns(t.prompt_ms), ns(t.predicted_ms));
    usage.timings = Some(crate::ir::Timings {
        total_ns: prompt + eval,
        load_ns: 0,
        prompt_eval_ns: prompt,
        eval_ns: eval,
    });
    usage.prompt_tokens = usage
        .prompt_tokens
        .or_else(|| Some(t.prompt_n? + t.cache_n.unwrap_or(0)));
    usage.completion_tokens = usage.completion_tokens.or(t.predicted_n);
    usage
}

fn usage_from(usage: wire::Usage) -> Usage {
    Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_tokens: usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
        reasoning_tokens: usage.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        timings: None,
    }
}

fn logprob_from(l: wire::TokenLogprob) -> TokenLogprob {
    TokenLogprob {
        token: l.token,
        logprob: l.logprob,
        bytes: l.bytes,
        top: l
            .top_logprobs
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
    fn repeated_tool_call_ids_and_names_pass_once() {
        // llama-cpp-python's server repeats id, type and name on every delta (its
        // 0.3.36 behaviour, as measured in ../shared/e2e/REPORT.md).
        let mut d = SseDecoder::new(false);
        let mut events = Vec::new();
        for piece in ["{\\\"city\\\"", ": \\\"Paris\\\"}"] {
            let chunk = format!(
                r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{piece}"}}}}]}}}}]}}"#
            );
            events.extend(d.decode(&chunk).unwrap());
        }
        let ChatEvent::ToolCall { id, name, .. } = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!((id, name), (&None, &None), "only the first delta names the call");
        let mut folded = crate::ir::ChatResponse::default();
        events.into_iter().for_each(|e| folded.push(e));
        assert_eq!(folded.tool_calls[0].name, "get_weather");
        assert_eq!(folded.tool_calls[0].arguments, r#"{"city": "Paris"}"#);
    }

    #[test]
    fn unknown_usage_stays_unknown() {
        let mut d = SseDecoder::new(false);
        d.decode(r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#)
            .unwrap();
        let events = d.finish().unwrap();
        assert!(!events.iter().any(|e| matches!(e, ChatEvent::Usage(_))), "{events:?}");
    }

    #[test]
    fn last_usage_wins_and_missing_finish_is_an_error() {
        let mut d = SseDecoder::new(false);
        d.decode(
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
        )
        .unwrap();
        d.decode(
            r#"{"choices":[{"index":0,"delta":{"content":"b"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(d.usage.as_ref().unwrap().completion_tokens, Some(2));
        assert!(d.finish().is_err());
    }

    #[test]
    fn malformed_optional_parts_are_ignored() {
        let mut d = SseDecoder::new(false);
        let events = d
            .decode(
                r#"{"id":null,"usage":"soon","timings":[],"choices":[{"delta":null,"logprobs":{"content":[{"token":"a"},{"token":"b","logprob":-1,"top_logprobs":null}]},"text":"hi"}]}"#,
            )
            .unwrap();
        assert_eq!(
            events,
            vec![
                ChatEvent::Logprobs(vec![TokenLogprob {
                    token: "b".into(),
                    logprob: -1.0,
                    bytes: None,
                    top: Vec::new(),
                }]),
                ChatEvent::Text("hi".into()),
            ]
        );
        assert!(d.usage.is_none() && d.timings.is_none());
    }

    #[test]
    fn llama_server_timings_fill_in_missing_usage() {
        let mut d = SseDecoder::new(false);
        let events = d
            .whole(
                serde_json::from_str(
                    r#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"completion_tokens":3.5},"timings":{"prompt_n":4,"cache_n":2,"prompt_ms":1.5,"predicted_ms":2}}"#,
                )
                .unwrap(),
            )
            .unwrap();
        let Some(ChatEvent::Usage(usage)) = events.iter().find(|e| matches!(e, ChatEvent::Usage(_))) else {
            panic!("{events:?}")
        };
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (Some(6), None));
        assert_eq!(usage.timings.as_ref().map(|t| t.total_ns), Some(3_500_000));
    }
}
