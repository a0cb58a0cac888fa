//! Anthropic's Messages API, both halves: `/v1/messages` and count_tokens in front of
//! Ollama, OpenAI-compatible and Anthropic-compatible fakes; and an Anthropic upstream
//! behind the other frontends. Each test asserts the exact upstream request and the exact
//! answer, whole and streamed.

mod common;

use common::*;
use diglot::config::UpstreamKind;
use diglot::store::{Role, TokenRecord};
use serde_json::{Value, json};

/// `POST base/v1/messages` as the SDKs send it.
async fn messages(base: &str, body: Value) -> Answer {
    send(
        client()
            .post(format!("{base}/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&body),
    )
    .await
}

/// A whole answer with its random id checked and replaced by `msg_ID`.
fn whole(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.text);
    let mut message = answer.json();
    let id = message["id"].as_str().unwrap();
    assert!(id.starts_with("msg_") && id.len() > 10, "{id}");
    message["id"] = json!("msg_ID");
    message
}

/// A stream's events; the id of `message_start` checked and replaced by `msg_ID`.
fn stream(answer: &Answer) -> Vec<(String, Value)> {
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.content_type(), "text/event-stream");
    let mut events = named_events(&answer.text);
    let start = &mut events[0].1["message"]["id"];
    assert!(start.as_str().unwrap().starts_with("msg_"));
    *start = json!("msg_ID");
    events
}

/// The text of a stream's `text_delta`s, or of its `thinking_delta`s.
fn deltas(events: &[(String, Value)], kind: &str, field: &str) -> String {
    events
        .iter()
        .filter(|(_, e)| e["delta"]["type"] == kind)
        .map(|(_, e)| e["delta"][field].as_str().unwrap())
        .collect()
}

/// The events' names in order.
fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// The text of an Ollama chat fixture (every line's `message.content`).
fn ollama_text(model: &str, field: &str) -> String {
    std::fs::read_to_string(fixture(&format!("ollama/chat/{model}.ndjson")))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["message"][field].as_str().map(str::to_owned))
        .collect()
}

// ---- in front of Ollama ----

#[tokio::test]
async fn text_with_system_and_sampling_over_ollama() {
    let (fake, base) = setup_ollama().await;
    let request = json!({
        "model": "chat-text", "max_tokens": 256,
        "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["\n\n"],
        "metadata": {"user_id": "u-1"}
    });
    let answer = whole(&messages(&base, request.clone()).await);
    assert_eq!(
        fake.bodies("/api/chat")[0],
        json!({
            "model": "chat-text",
            "messages": [
                {"role": "system", "content": "You are terse.\nAnswer in English."},
                {"role": "user", "content": "Why is the sky blue?"}
            ],
            "options": {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "num_predict": 256, "stop": ["\n\n"]},
            "stream": false
        })
    );
    assert_eq!(
        answer,
        json!({
            "id": "msg_ID", "type": "message", "role": "assistant", "model": "chat-text",
            "content": [{"type": "text", "text": ollama_text("chat-text", "content")}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 31, "output_tokens": 7}
        })
    );

    let mut streamed = request;
    streamed["stream"] = json!(true);
    let events = stream(&messages(&base, streamed).await);
    assert_eq!(fake.bodies("/api/chat")[1]["stream"], true);
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    // One text delta per fixture line with content.
    expected.extend(vec!["content_block_delta"; 6]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    assert_eq!(
        events[0].1,
        json!({"type": "message_start", "message": {"id": "msg_ID", "type": "message", "role": "assistant",
            "model": "chat-text", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
    );
    assert_eq!(
        events[2].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        deltas(&events, "text_delta", "text"),
        ollama_text("chat-text", "content")
    );
    assert_eq!(
        events[events.len() - 2].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": 31, "output_tokens": 7}})
    );
    assert_eq!(events.last().unwrap().1, json!({"type": "message_stop"}));
}

#[tokio::test]
async fn images_by_base64_and_url_reach_ollama_as_base64() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.images.allow_private = true).await;
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let request = json!({
        "model": "chat-vision", "max_tokens": 50,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "image", "source": {"type": "url", "url": format!("{}/red.png", fake.url())}},
            {"type": "text", "text": "What colours are these?"}
        ]}]
    });
    let answer = whole(&messages(&base, request).await);
    assert_eq!(
        fake.bodies("/api/chat")[0]["messages"],
        json!([{"role": "user", "content": "What colours are these?", "images": [png, png]}])
    );
    assert_eq!(answer["content"][0]["text"], ollama_text("chat-vision", "content"));
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

#[tokio::test]
async fn a_tool_round_trip_over_ollama() {
    let (fake, base) = setup_ollama().await;
    let ask = json!({"role": "user", "content": "Weather in Paris and Tokyo?"});
    let first = json!({"model": "chat-tools", "max_tokens": 200, "messages": [ask],
                       "tools": [weather_tool()], "tool_choice": {"type": "any"}});
    let answer = whole(&messages(&base, first.clone()).await);
    let sent = &fake.bodies("/api/chat")[0];
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "You must answer by calling one of the provided tools."}, ask]),
        "Ollama cannot force a call: the same instruction as for chat's tool_choice required"
    );
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
            "parameters": weather_tool()["input_schema"]}}])
    );
    assert_eq!(
        answer,
        json!({
            "id": "msg_ID", "type": "message", "role": "assistant", "model": "chat-tools",
            "content": [
                {"type": "tool_use", "id": "call_vnmov34f", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_6sly0bao", "name": "get_weather", "input": {"city": "Tokyo"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 243, "output_tokens": 37}
        })
    );

    // The client runs the tools and sends the results back, one as blocks and marked an error.
    let mut second = first;
    second["model"] = json!("chat-text");
    second["messages"] = json!([ask, {"role": "assistant", "content": answer["content"]}, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_vnmov34f", "content": "18 °C, sunny"},
        {"type": "tool_result", "tool_use_id": "call_6sly0bao", "content": [{"type": "text", "text": "service down"}], "is_error": true},
        {"type": "text", "text": "Summarize."}
    ]}]);
    second["tool_choice"] = json!({"type": "auto"});
    let answer = whole(&messages(&base, second).await);
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(
        fake.bodies("/api/chat")[1]["messages"],
        json!([
            ask,
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_vnmov34f", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
                {"id": "call_6sly0bao", "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Tokyo"}}}
            ]},
            {"role": "tool", "content": "18 °C, sunny", "tool_name": "get_weather", "tool_call_id": "call_vnmov34f"},
            {"role": "tool", "content": "Error:\nservice down", "tool_name": "get_weather", "tool_call_id": "call_6sly0bao"},
            {"role": "user", "content": "Summarize."}
        ])
    );
}

#[tokio::test]
async fn tool_use_streams_as_input_json_deltas() {
    let (_fake, base) = setup_openai().await;
    let request = json!({"model": "oai-tools", "max_tokens": 200, "stream": true,
        "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [weather_tool()]});
    let events = stream(&messages(&base, request).await);
    let start = events.iter().find(|(n, _)| n == "content_block_start").unwrap();
    assert_eq!(
        start.1["content_block"],
        json!({"type": "tool_use", "id": "call_PQ9L3kCGCmyzH0KQjaV7EWni", "name": "get_weather", "input": {}})
    );
    let arguments: Value = serde_json::from_str(&deltas(&events, "input_json_delta", "partial_json")).unwrap();
    assert_eq!(
        arguments,
        json!({"city": "Paris"}),
        "the fixture's argument pieces, joined"
    );
    assert_eq!(events[events.len() - 2].1["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn thinking_over_ollama_becomes_think_and_thinking_blocks() {
    let (fake, base) = setup_ollama().await;
    let request = json!({"model": "chat-thinking", "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "hello"}]});
    let answer = whole(&messages(&base, request.clone()).await);
    assert_eq!(fake.bodies("/api/chat")[0]["think"], true);
    assert_eq!(
        answer["content"],
        json!([
            {"type": "thinking", "thinking": ollama_text("chat-thinking", "thinking"), "signature": ""},
            {"type": "text", "text": ollama_text("chat-thinking", "content")}
        ])
    );
    let mut streamed = request;
    streamed["stream"] = json!(true);
    let events = stream(&messages(&base, streamed).await);
    assert_eq!(
        events[2].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
    );
    assert_eq!(
        deltas(&events, "thinking_delta", "thinking"),
        ollama_text("chat-thinking", "thinking")
    );
    let signature = events
        .iter()
        .position(|(_, e)| e["delta"]["type"] == "signature_delta")
        .unwrap();
    assert_eq!(
        events[signature + 1].1,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(events[signature + 2].1["content_block"]["type"], "text");
    assert_eq!(events[signature + 2].1["index"], 1);
}

#[tokio::test]
async fn max_tokens_stop_over_every_upstream() {
    for (kind, model) in [
        ("ollama", "chat-length"),
        ("openai", "llamacpp-length"),
        ("anthropic", "claude-length"),
    ] {
        let (fake, base) = match kind {
            "ollama" => setup_ollama().await,
            "openai" => setup_openai().await,
            _ => setup_anthropic().await,
        };
        let request =
            json!({"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "Tell a story"}]});
        let answer = whole(&messages(&base, request.clone()).await);
        assert_eq!(answer["stop_reason"], "max_tokens", "{kind}");
        let sent = fake.received().into_iter().find(|r| r.method == "POST").unwrap().body;
        let limit = match kind {
            "ollama" => &sent["options"]["num_predict"],
            _ => &sent["max_tokens"],
        };
        assert_eq!(limit, 3, "{kind}: {sent}");
        let mut streamed = request;
        streamed["stream"] = json!(true);
        let events = stream(&messages(&base, streamed).await);
        assert_eq!(
            events[events.len() - 2].1["delta"]["stop_reason"],
            "max_tokens",
            "{kind}"
        );
    }
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_is_an_error_event() {
    for (kind, model, error_type) in [
        ("ollama", "chat-error", "api_error"),
        ("openai", "oai-error", "api_error"),
        ("anthropic", "claude-overloaded", "overloaded_error"),
    ] {
        let (_fake, base) = match kind {
            "ollama" => setup_ollama().await,
            "openai" => setup_openai().await,
            _ => setup_anthropic().await,
        };
        let request =
            json!({"model": model, "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let events = stream(&messages(&base, request).await);
        let (name, last) = events.last().unwrap();
        assert_eq!(name, "error", "{kind}: {events:?}");
        assert_eq!(last["error"]["type"], error_type, "{kind}");
        assert!(!last["error"]["message"].as_str().unwrap().is_empty());
        assert!(
            !deltas(&events, "text_delta", "text").is_empty(),
            "{kind}: text came before the error"
        );
        assert!(!names(&events).contains(&"message_stop"), "{kind}");
    }
}

#[tokio::test]
async fn a_client_hanging_up_cancels_the_upstream_call() {
    for kind in ["ollama", "anthropic"] {
        let (fake, base) = match kind {
            "ollama" => setup_ollama().await,
            _ => setup_anthropic().await,
        };
        fake.set_line_delay(std::time::Duration::from_millis(200));
        let model = if kind == "ollama" { "chat-text" } else { "claude-text" };
        let body =
            json!({"model": model, "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let response = client()
            .post(format!("{base}/v1/messages"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let mut frames = response.bytes_stream();
        let first = futures::StreamExt::next(&mut frames).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).starts_with("event: message_start"));
        drop(frames);
        fake.wait_for_cancel().await;
        assert_eq!(fake.completed_streams(), 0, "{kind}");
    }
}

// ---- count_tokens ----

async fn count(base: &str, model: &str) -> Answer {
    send(client().post(format!("{base}/v1/messages/count_tokens")).json(&json!({
        "model": model, "system": "Be brief.", "messages": [{"role": "user", "content": "Why is the sky blue?"}]
    })))
    .await
}

#[tokio::test]
async fn count_tokens_asks_each_upstream_its_own_count() {
    // Ollama: a chat that generates nothing; its prompt evaluation is the count.
    let (fake, base) = setup_ollama().await;
    let answer = count(&base, "chat-text").await;
    assert_eq!(answer.status_json(), (200, json!({"input_tokens": 31})));
    assert_eq!(answer.header("x-diglot-token-count"), Some("upstream"));
    assert_eq!(
        fake.bodies("/api/chat")[0],
        json!({"model": "chat-text", "messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Why is the sky blue?"}], "options": {"num_predict": 0}, "stream": false})
    );

    // llama-server: its template, then its tokenizer.
    let (fake, base) = setup_openai().await;
    let answer = count(&base, "llamacpp-text").await;
    let templated = fake.bodies("/apply-template");
    assert_eq!(
        templated[0]["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}])
    );
    let tokenized = &fake.bodies("/tokenize")[0];
    assert_eq!(
        tokenized,
        &json!({"content": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n",
            "add_special": true, "parse_special": true})
    );
    // The fake's tokenizer makes one token of each whitespace-separated piece: 10 here.
    assert_eq!(answer.status_json(), (200, json!({"input_tokens": 10})));
    assert_eq!(answer.header("x-diglot-token-count"), Some("upstream"));

    // A server without a tokenizer endpoint (OpenAI's own): diglot's estimate, flagged.
    let answer = count(&base, "oai-text").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-diglot-token-count"), Some("estimate"));
    assert!(answer.json()["input_tokens"].as_u64().unwrap() > 0);

    // Anthropic: its own count_tokens, without max_tokens.
    let (fake, base) = setup_anthropic().await;
    let answer = count(&base, "claude-text").await;
    assert_eq!(answer.status_json(), (200, json!({"input_tokens": 14})));
    assert_eq!(answer.header("x-diglot-token-count"), Some("upstream"));
    assert_eq!(
        fake.bodies("/v1/messages/count_tokens")[0],
        json!({"model": "claude-text", "messages": [{"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}],
            "system": "Be brief."})
    );
}

// ---- in front of an Anthropic upstream ----

#[tokio::test]
async fn messages_pass_to_an_anthropic_upstream_with_its_key_and_version() {
    let (fake, base) = setup_anthropic().await;
    let request = json!({"model": "claude-text", "max_tokens": 1024, "system": "Be kind.",
        "messages": [{"role": "user", "content": "Hello"}], "stop_sequences": ["END"], "temperature": 0.7, "top_k": 5});
    let answer = whole(&messages(&base, request.clone()).await);
    let sent = &fake.requests("/v1/messages")[0];
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.body,
        json!({"model": "claude-text", "max_tokens": 1024, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "system": "Be kind.", "stop_sequences": ["END"], "temperature": 0.7, "top_k": 5, "stream": false})
    );
    assert_eq!(
        answer,
        json!({"id": "msg_ID", "type": "message", "role": "assistant", "model": "claude-text",
            "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 15, "cache_read_input_tokens": 0}})
    );

    let mut streamed = request;
    streamed["stream"] = json!(true);
    let events = stream(&messages(&base, streamed).await);
    assert_eq!(fake.bodies("/v1/messages")[1]["stream"], true);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        deltas(&events, "text_delta", "text"),
        "Hello! How can I help you today?"
    );
    assert_eq!(
        events[6].1["usage"],
        json!({"input_tokens": 25, "output_tokens": 15, "cache_read_input_tokens": 0})
    );
}

#[tokio::test]
async fn a_tool_round_trip_and_thinking_over_an_anthropic_upstream() {
    let (fake, base) = setup_anthropic().await;
    let ask = json!({"role": "user", "content": "Weather in San Francisco?"});
    let request = json!({"model": "claude-tools", "max_tokens": 1024, "messages": [ask],
        "tools": [weather_tool()], "tool_choice": {"type": "tool", "name": "get_weather"}});
    let answer = whole(&messages(&base, request.clone()).await);
    let sent = &fake.bodies("/v1/messages")[0];
    assert_eq!(sent["tools"], json!([weather_tool()]));
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "get_weather"}));
    assert_eq!(
        answer["content"],
        json!([
            {"type": "text", "text": "Okay, let me check the weather."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"location": "San Francisco, CA"}}
        ])
    );
    assert_eq!(answer["stop_reason"], "tool_use");

    let mut next = request;
    next["model"] = json!("claude-text");
    next["messages"] = json!([ask, {"role": "assistant", "content": answer["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "content": "15 °C"}]}]);
    whole(&messages(&base, next).await);
    assert_eq!(
        fake.bodies("/v1/messages")[1]["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in San Francisco?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Okay, let me check the weather."},
                {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"location": "San Francisco, CA"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "content": "15 °C"}]}
        ])
    );

    let thinking = json!({"model": "claude-thinking", "max_tokens": 8000, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 2000}, "messages": [{"role": "user", "content": "GCD of 1071 and 462?"}]});
    let events = stream(&messages(&base, thinking).await);
    assert_eq!(
        fake.bodies("/v1/messages")[2]["thinking"],
        json!({"type": "enabled", "budget_tokens": 2000}),
        "the client's own budget"
    );
    // The upstream's signature closes the thinking block, as the upstream sent it.
    assert_eq!(
        events[5].1,
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": SIGNATURE}})
    );
    assert_eq!(events[6].1, json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        deltas(&events, "thinking_delta", "thinking"),
        "I need to find the GCD of 1071 and 462. 1071 = 2 * 462 + 147, 462 = 3 * 147 + 21, 147 = 7 * 21."
    );
    assert_eq!(
        deltas(&events, "text_delta", "text"),
        "The greatest common divisor is 21."
    );
}

/// The signature of `claude-thinking`'s thinking block.
const SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds";

#[tokio::test]
async fn thinking_signatures_reach_the_client_and_go_back_to_the_upstream() {
    let (fake, base) = setup_anthropic().await;
    let ask = json!({"role": "user", "content": "GCD of 1071 and 462?"});
    let request = json!({"model": "claude-thinking", "max_tokens": 16000,
        "thinking": {"type": "enabled", "budget_tokens": 20000}, "messages": [ask]});
    let answer = whole(&messages(&base, request.clone()).await);
    assert_eq!(
        fake.bodies("/v1/messages")[0]["thinking"],
        json!({"type": "enabled", "budget_tokens": 15999}),
        "a budget above max_tokens is capped below it"
    );
    assert_eq!(
        answer["content"][0],
        json!({"type": "thinking", "thinking": "I need to find the GCD of 1071 and 462. 1071 = 2 * 462 + 147, 462 = 3 * 147 + 21, 147 = 7 * 21.",
            "signature": SIGNATURE})
    );
    // A tool-use turn sent back with its signed thinking: the block goes to the upstream
    // first in its turn, signature and all.
    let thinking = answer["content"][0].clone();
    let mut next = request;
    next["tools"] = json!([weather_tool()]);
    next["messages"] = json!([ask,
        {"role": "assistant", "content": [thinking.clone(),
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 °C"}]}]);
    whole(&messages(&base, next.clone()).await);
    assert_eq!(
        fake.bodies("/v1/messages")[1]["messages"][1],
        json!({"role": "assistant", "content": [thinking,
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}}]})
    );
    // Other upstreams have no use for it: the chat request to an OpenAI-compatible one
    // carries the thinking as reasoning, without the signature.
    let (openai, base) = setup_openai().await;
    next["model"] = json!("llamacpp-text");
    whole(&messages(&base, next).await);
    let sent = &openai.bodies("/v1/chat/completions")[0];
    assert!(!sent.to_string().contains(SIGNATURE), "{sent}");
}

#[tokio::test]
async fn a_thinking_budget_becomes_each_upstreams_own_setting() {
    let request = |model: &str, budget: u64| {
        json!({"model": model, "max_tokens": 32000, "thinking": {"type": "enabled", "budget_tokens": budget},
            "messages": [{"role": "user", "content": "hello"}]})
    };
    // OpenAI-compatible: the effort level the budget amounts to, as chat's reasoning_effort.
    let (fake, base) = setup_openai().await;
    for (budget, effort) in [
        (1024, "low"),
        (4096, "medium"),
        (10000, "medium"),
        (16384, "high"),
        (30000, "high"),
    ] {
        whole(&messages(&base, request("llamacpp-text", budget)).await);
        let sent = fake.bodies("/v1/chat/completions").pop().unwrap();
        assert_eq!(sent["reasoning_effort"], effort, "{budget}");
    }
    // Ollama: think on.
    let (fake, base) = setup_ollama().await;
    whole(&messages(&base, request("chat-thinking", 5000)).await);
    assert_eq!(fake.bodies("/api/chat")[0]["think"], true);
    // Anthropic: the budget itself.
    let (fake, base) = setup_anthropic().await;
    whole(&messages(&base, request("claude-thinking", 5000)).await);
    assert_eq!(
        fake.bodies("/v1/messages")[0]["thinking"],
        json!({"type": "enabled", "budget_tokens": 5000})
    );
}

#[tokio::test]
async fn a_stop_sequence_is_named_when_the_upstream_names_it() {
    let (fake, base) = setup_anthropic().await;
    let request = json!({"model": "claude-stop", "max_tokens": 100, "stop_sequences": [", 5"],
        "messages": [{"role": "user", "content": "Count to ten"}]});
    let answer = whole(&messages(&base, request.clone()).await);
    assert_eq!(fake.bodies("/v1/messages")[0]["stop_sequences"], json!([", 5"]));
    assert_eq!(
        answer,
        json!({"id": "msg_ID", "type": "message", "role": "assistant", "model": "claude-stop",
            "content": [{"type": "text", "text": "1, 2, 3, 4"}],
            "stop_reason": "stop_sequence", "stop_sequence": ", 5",
            "usage": {"input_tokens": 18, "output_tokens": 9, "cache_read_input_tokens": 0}})
    );
    let mut streamed = request;
    streamed["stream"] = json!(true);
    let events = stream(&messages(&base, streamed).await);
    assert_eq!(
        events[events.len() - 2],
        (
            "message_delta".to_owned(),
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": ", 5"},
                "usage": {"input_tokens": 18, "output_tokens": 9, "cache_read_input_tokens": 0}})
        )
    );
    // The other frontends have no field for it: a plain stop.
    let chat =
        json!({"model": "claude-stop", "stop": [", 5"], "messages": [{"role": "user", "content": "Count to ten"}]});
    let answer = post(&base, "/v1/chat/completions", chat.clone()).await;
    assert_eq!(answer.json()["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "1, 2, 3, 4");
    let mut chat_stream = chat;
    chat_stream["stream"] = json!(true);
    let chunks = sse_chunks(&post(&base, "/v1/chat/completions", chat_stream).await.text);
    let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("stop"));
    let answer = post(
        &base,
        "/api/chat",
        json!({"model": "claude-stop", "stream": false,
        "messages": [{"role": "user", "content": "Count to ten"}]}),
    )
    .await;
    assert_eq!(answer.json()["done_reason"], "stop");

    // llama-server's answers say `stop` for a stop sequence and the end of a turn alike
    // (no matched sequence named): end_turn, with no sequence.
    let (_fake, base) = setup_openai().await;
    let answer = whole(
        &messages(
            &base,
            json!({"model": "llamacpp-text", "max_tokens": 100, "stop_sequences": ["END"],
        "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
    );
    assert_eq!(
        (answer["stop_reason"].clone(), answer["stop_sequence"].clone()),
        (json!("end_turn"), Value::Null)
    );
}

#[tokio::test]
async fn disable_parallel_tool_use_reaches_every_upstream_that_has_it() {
    let request = |model: &str, choice: Value| {
        json!({"model": model, "max_tokens": 100, "tools": [weather_tool()], "tool_choice": choice,
            "messages": [{"role": "user", "content": "Weather in SF and NYC?"}]})
    };
    let (fake, base) = setup_anthropic().await;
    for choice in [
        json!({"type": "auto", "disable_parallel_tool_use": true}),
        json!({"type": "any", "disable_parallel_tool_use": true}),
        json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
    ] {
        whole(&messages(&base, request("claude-tools", choice.clone())).await);
        assert_eq!(fake.bodies("/v1/messages").pop().unwrap()["tool_choice"], choice);
    }
    // Allowed (the default) is not sent.
    whole(
        &messages(
            &base,
            request(
                "claude-tools",
                json!({"type": "auto", "disable_parallel_tool_use": false}),
            ),
        )
        .await,
    );
    assert_eq!(fake.bodies("/v1/messages").pop().unwrap().get("tool_choice"), None);
    // From chat's parallel_tool_calls: false.
    let chat = json!({"model": "claude-tools", "parallel_tool_calls": false, "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
    post(&base, "/v1/chat/completions", chat).await;
    assert_eq!(
        fake.bodies("/v1/messages").pop().unwrap()["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // An OpenAI-compatible upstream gets parallel_tool_calls: false.
    let (fake, base) = setup_openai().await;
    whole(
        &messages(
            &base,
            request(
                "llamacpp-text",
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
        )
        .await,
    );
    assert_eq!(fake.bodies("/v1/chat/completions")[0]["parallel_tool_calls"], false);
}

#[tokio::test]
async fn num_predict_zero_generates_nothing_over_upstreams_that_cannot_be_asked_for_none() {
    for (setup, model, path) in [
        ("openai", "llamacpp-text", "/v1/chat/completions"),
        ("anthropic", "claude-text", "/v1/messages"),
    ] {
        let (fake, base) = match setup {
            "openai" => setup_openai().await,
            _ => setup_anthropic().await,
        };
        for stream in [false, true] {
            let answer = post(
                &base,
                "/api/chat",
                json!({"model": model, "stream": stream, "options": {"num_predict": 0},
                "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
            )
            .await;
            assert_eq!(answer.status, 200, "{setup}: {}", answer.text);
            let last = answer.last_json();
            assert_eq!(
                (
                    last["message"]["content"].clone(),
                    last["done"].clone(),
                    last["done_reason"].clone(),
                    last["eval_count"].clone()
                ),
                (json!(""), json!(true), json!("length"), json!(0)),
                "{setup}: {last}"
            );
        }
        let answer = post(
            &base,
            "/v1/chat/completions",
            json!({"model": model, "max_tokens": 0,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
        )
        .await;
        assert_eq!(answer.json()["choices"][0]["finish_reason"], "length", "{setup}");
        assert_eq!(answer.json()["usage"]["completion_tokens"], 0, "{setup}");
        assert!(
            fake.requests(path).is_empty(),
            "{setup}: no upstream call, so no unbounded generation"
        );
    }
}

#[tokio::test]
async fn count_tokens_goes_through_auth_model_access_and_request_limits_without_usage() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let secret = "dg-counting-token-000000000000000000000000000000";
    let base = diglot(&fake.url(), |c| {
        c.store.data_dir = dir.path().to_owned();
        c.tokens = vec![TokenRecord {
            models: vec!["chat-text".into()],
            rpm: Some(2),
            ..TokenRecord::for_secret("counting", secret, Role::User)
        }];
    })
    .await;
    let count_as = |key: Option<&'static str>, model: &'static str| {
        let mut request = client().post(format!("{base}/v1/messages/count_tokens")).json(&json!({
            "model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}]
        }));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        send(request)
    };
    assert_eq!(
        error_of(&count_as(None, "chat-text").await),
        (401, "authentication_error".into())
    );
    assert_eq!(
        error_of(&count_as(Some(secret), "chat-tools").await),
        (403, "permission_error".into())
    );
    assert_eq!(count_as(Some(secret), "chat-text").await.status, 200);
    assert_eq!(count_as(Some(secret), "chat-text").await.status, 200);
    let limited = count_as(Some(secret), "chat-text").await;
    assert_eq!(
        error_of(&limited),
        (429, "rate_limit_error".into()),
        "2 requests per minute"
    );
    assert_eq!(limited.header("x-ratelimit-limit-requests"), Some("2"));
    // No usage record for a count (nothing was generated); a refused message gets one.
    let answer = send(
        client()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", secret)
            .json(&json!({"model": "chat-text", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(error_of(&answer), (429, "rate_limit_error".into()));
    usage_records(dir.path(), 1).await;
}

// ---- errors in Anthropic's shape ----

fn error_of(answer: &Answer) -> (u16, String) {
    let body = answer.json();
    assert_eq!(body["type"], "error", "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty(), "{body}");
    (answer.status, body["error"]["type"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn every_error_kind_in_anthropics_shape_and_status() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-anthropic-token-00000000000000000000000000";
    let limited = "dg-limited-token-000000000000000000000000000000";
    let base = diglot(&fake.url(), |c| {
        c.max_body_bytes = 4096;
        c.tokens = vec![
            TokenRecord::for_secret("claude-code", secret, Role::User),
            TokenRecord {
                models: vec!["chat-text".into()],
                ..TokenRecord::for_secret("limited", limited, Role::User)
            },
        ];
    })
    .await;
    let ok = json!({"model": "chat-text", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let post = |key: Option<&'static str>, body: Value| {
        let mut request = client()
            .post(format!("{base}/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        send(request)
    };
    assert_eq!(
        post(Some(secret), ok.clone()).await.status,
        200,
        "x-api-key carries the token"
    );
    assert_eq!(
        error_of(&post(None, ok.clone()).await),
        (401, "authentication_error".into())
    );
    assert_eq!(
        error_of(&post(Some("dg-wrong"), ok.clone()).await),
        (401, "authentication_error".into())
    );
    let mut other = ok.clone();
    other["model"] = json!("chat-tools");
    assert_eq!(
        error_of(&post(Some(limited), other).await),
        (403, "permission_error".into())
    );
    let mut missing = ok.clone();
    missing.as_object_mut().unwrap().remove("max_tokens");
    let answer = post(Some(secret), missing).await;
    assert_eq!(error_of(&answer), (400, "invalid_request_error".into()));
    assert!(answer.text.contains("max_tokens"), "{}", answer.text);
    let mut unknown_block = ok.clone();
    unknown_block["messages"][0]["content"] = json!([{"type": "document", "source": {}}]);
    assert_eq!(
        error_of(&post(Some(secret), unknown_block).await),
        (400, "invalid_request_error".into())
    );
    let mut unknown = ok.clone();
    unknown["model"] = json!("no-such-model");
    assert_eq!(
        error_of(&post(Some(secret), unknown).await),
        (404, "not_found_error".into())
    );
    let mut big = ok.clone();
    big["messages"][0]["content"] = json!("x".repeat(5000));
    assert_eq!(
        error_of(&post(Some(secret), big).await),
        (413, "request_too_large".into())
    );
    for (status, wanted) in [
        (429, (429, "rate_limit_error")),
        (529, (529, "overloaded_error")),
        (500, (502, "api_error")),
    ] {
        fake.fail_next(3, status, None);
        let answer = post(Some(secret), ok.clone()).await;
        assert_eq!(error_of(&answer), (wanted.0, wanted.1.to_owned()), "upstream {status}");
    }
    // The same kinds on count_tokens.
    let answer = send(client().post(format!("{base}/v1/messages/count_tokens")).json(&ok)).await;
    assert_eq!(error_of(&answer), (401, "authentication_error".into()));
}

// ---- an Anthropic upstream behind the other frontends ----

#[tokio::test]
async fn openai_chat_over_an_anthropic_upstream() {
    let (fake, base) = setup_anthropic().await;
    let request = json!({"model": "claude-tools", "messages": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Weather in SF?"},
        {"role": "system", "content": "Use tools."}
    ], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
       "tool_choice": "required", "stream": true});
    let answer = post(&base, "/v1/chat/completions", request).await;
    assert_eq!(
        fake.bodies("/v1/messages")[0],
        json!({"model": "claude-tools", "max_tokens": 4096,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in SF?"}]}],
            "system": "Be kind.\n\nUse tools.",
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"}, "stream": true})
    );
    let chunks = sse_chunks(&answer.text);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Okay, let me check the weather.");
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"location\": \"San Francisco, CA\"}");
    let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));

    // A tool result goes back as a user turn's tool_result block.
    let request = json!({"model": "claude-text", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Weather in SF?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"SF\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "15 °C"},
        {"role": "user", "content": "And tomorrow?"}
    ]});
    let answer = post(&base, "/v1/chat/completions", request).await;
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "Hello! How can I help you today?"
    );
    assert_eq!(answer.json()["usage"]["prompt_tokens"], 25);
    assert_eq!(
        fake.bodies("/v1/messages")[1]["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in SF?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 °C"},
                                          {"type": "text", "text": "And tomorrow?"}]}
        ])
    );
    assert_eq!(fake.bodies("/v1/messages")[1]["max_tokens"], 100);
}

#[tokio::test]
async fn ollama_chat_over_an_anthropic_upstream() {
    let (fake, base) = setup_anthropic().await;
    let answer = post(
        &base,
        "/api/chat",
        json!({"model": "claude-thinking", "think": true, "stream": false, "options": {"num_predict": 3000},
            "messages": [{"role": "user", "content": "GCD?"}]}),
    )
    .await;
    assert_eq!(
        fake.bodies("/v1/messages")[0],
        json!({"model": "claude-thinking", "max_tokens": 3000, "messages": [{"role": "user", "content": [{"type": "text", "text": "GCD?"}]}],
            "thinking": {"type": "enabled", "budget_tokens": 2999}, "stream": false})
    );
    let body = answer.json();
    assert_eq!(body["message"]["content"], "The greatest common divisor is 21.");
    assert!(
        body["message"]["thinking"]
            .as_str()
            .unwrap()
            .starts_with("I need to find")
    );
    assert_eq!(
        (body["prompt_eval_count"].clone(), body["eval_count"].clone()),
        (json!(36), json!(62))
    );
    assert_eq!(body["done_reason"], "stop");
}

#[tokio::test]
async fn an_overloaded_or_throttled_anthropic_channel_fails_over() {
    for status in [529, 429] {
        let claude = FakeUpstream::start().await;
        let backup = FakeUpstream::start().await;
        let base = diglot_channels(
            vec![
                diglot::config::UpstreamConfig {
                    priority: 10,
                    models: vec!["chat-text".into()],
                    ..channel("claude", &claude, UpstreamKind::Anthropic)
                },
                channel("backup", &backup, UpstreamKind::Ollama),
            ],
            |_| {},
        )
        .await;
        claude.fail_next(1, status, None);
        let answer = messages(
            &base,
            json!({"model": "chat-text", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(answer.status, 200, "{status}: {}", answer.text);
        assert_eq!(claude.calls(), 1, "{status}");
        assert_eq!(backup.calls(), 1, "{status}");
    }
}

// ---- routes and the model list ----

#[tokio::test]
async fn messages_answer_without_v1_and_under_the_base_path() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.base_path = "/ollama".into()).await;
    let body = json!({"model": "chat-text", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    for path in ["/v1/messages", "/messages", "/ollama/v1/messages", "/ollama/messages"] {
        let answer = post(&base, path, body.clone()).await;
        assert_eq!(answer.json()["type"], "message", "{path}");
    }
    let answer = post(&base, "/ollama/v1/messages/count_tokens", body).await;
    assert_eq!(answer.json()["input_tokens"], 31);
}

#[tokio::test]
async fn the_model_list_takes_anthropics_shape_for_anthropic_clients() {
    let (_fake, base) = setup_ollama().await;
    let list = send(
        client()
            .get(format!("{base}/v1/models"))
            .header("anthropic-version", "2023-06-01"),
    )
    .await;
    let list = list.json();
    assert_eq!(list["has_more"], false);
    let first = &list["data"][0];
    assert_eq!(first["type"], "model");
    assert_eq!(list["first_id"], first["id"]);
    assert!(first["display_name"].is_string());
    assert!(chrono::DateTime::parse_from_rfc3339(first["created_at"].as_str().unwrap()).is_ok());
    let one = send(
        client()
            .get(format!("{base}/v1/models/chat-text"))
            .header("anthropic-version", "2023-06-01"),
    )
    .await;
    assert_eq!(one.json()["id"], "chat-text");
    assert_eq!(one.json()["type"], "model");
    // Without the header: OpenAI's list as before.
    assert_eq!(get_json(&format!("{base}/v1/models")).await["object"], "list");
}
