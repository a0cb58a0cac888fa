//! OpenAI frontend → Ollama backend, against a fake Ollama serving recorded fixtures.
//! Each test checks both sides: the exact Ollama request diglot sent and the exact
//! OpenAI answer the client got.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

/// The text of the `chat-text` fixture.
const SKY: &str = "The sky is blue because of Rayleigh scattering.";

/// Checks the random parts of an answer and blanks them, so the rest compares exactly.
fn normalize(mut answer: Value, prefix: &str) -> Value {
    let id = answer["id"].as_str().unwrap();
    assert!(id.starts_with(prefix) && id.len() == prefix.len() + 24, "id {id}");
    assert!(answer["created"].as_i64().unwrap() > 1_700_000_000);
    answer["id"] = json!("ID");
    answer["created"] = json!(0);
    answer
}

#[tokio::test]
async fn plain_chat_both_sides() {
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("Why is the sky blue?")}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    assert_eq!(
        fake.bodies("/api/chat"),
        vec![
            json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false})
        ],
        "no invented options, no think, no tools; whole answers asked whole"
    );
    assert_eq!(
        normalize(answer, "chatcmpl-"),
        json!({
            "id": "ID", "object": "chat.completion", "created": 0, "model": "chat-text", "system_fingerprint": "fp_diglot",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering.", "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}
        })
    );
}

#[tokio::test]
async fn streamed_chat_matches_openai_format() {
    let (_fake, base) = setup_ollama().await;
    let answer = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("hi"), "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!((answer.status, answer.content_type()), (200, "text/event-stream"));
    let chunks = sse_chunks(&answer.text);
    let id = chunks[0]["id"].clone();
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["created"], chunks[0]["created"]);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "chat-text");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let pieces: Vec<&str> = chunks[1..chunks.len() - 2]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(pieces.len(), 6, "one SSE chunk per upstream chunk: {pieces:?}");
    assert_eq!(pieces.concat(), "The sky is blue because of Rayleigh scattering.");
    for chunk in &chunks[1..chunks.len() - 2] {
        assert!(
            chunk["choices"][0]["delta"].get("role").is_none(),
            "role only in the first delta"
        );
        assert_eq!(chunk["usage"], Value::Null);
        assert!(
            chunk.as_object().unwrap().contains_key("usage"),
            "usage: null on every chunk when include_usage"
        );
    }
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(
        finish["choices"][0],
        json!({"index": 0, "delta": {}, "finish_reason": "stop"})
    );
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38})
    );
}

#[tokio::test]
async fn without_include_usage_chunks_carry_no_usage_key() {
    let (_fake, base) = setup_ollama().await;
    let body = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("hi"), "stream": true}),
    )
    .await
    .text;
    let chunks = sse_chunks(&body);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn reasoning_maps_to_think_and_back() {
    let (fake, base) = setup_ollama().await;
    let (_, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-thinking", "messages": user("hi"), "reasoning_effort": "high"}),
    )
    .await
    .status_json();
    let sent = &fake.bodies("/api/chat")[0];
    assert_eq!(sent["think"], "high");
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "Hello! How can I help?");
    let reasoning = message["reasoning_content"].as_str().unwrap();
    assert!(!reasoning.is_empty());
    assert_eq!(message["reasoning"], reasoning, "both field names by default");

    // Streamed, reasoning arrives as its own deltas before the content.
    let body = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-thinking", "messages": user("hi"), "stream": true, "reasoning": {"effort": "none"}}),
    )
    .await
    .text;
    assert_eq!(fake.bodies("/api/chat")[1]["think"], false);
    let chunks = sse_chunks(&body);
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(streamed, reasoning);
    assert!(chunks[1]["choices"][0]["delta"].get("content").is_none());
}

#[tokio::test]
async fn reasoning_is_dropped_for_a_model_that_cannot_think() {
    let (fake, base) = setup_ollama().await;
    let (status, _) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("hi"), "reasoning_effort": "medium"}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    assert!(
        fake.bodies("/api/chat")[0].get("think").is_none(),
        "Ollama would answer 400 to think on this model"
    );
    assert_eq!(fake.bodies("/api/show"), vec![json!({"model": "chat-text"})]);
}

#[tokio::test]
async fn parallel_tool_calls_streamed_and_whole() {
    let (fake, base) = setup_ollama().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let (_, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-tools", "messages": user("weather?"), "tools": tools}),
    )
    .await
    .status_json();
    assert_eq!(fake.bodies("/api/chat")[0]["tools"], tools);
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([
            {"id": "call_vnmov34f", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_6sly0bao", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}}
        ])
    );

    let body = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-tools", "messages": user("weather?"), "tools": tools, "stream": true}),
    )
    .await
    .text;
    let deltas: Vec<Value> = sse_chunks(&body)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls").cloned())
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!([{"index": 0, "id": "call_vnmov34f", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]),
            json!([{"index": 1, "id": "call_6sly0bao", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}}]),
        ]
    );
    assert!(body.contains("\"finish_reason\":\"tool_calls\""));
}

#[tokio::test]
async fn tool_calls_on_the_final_chunk() {
    let (_fake, base) = setup_ollama().await;
    let (_, answer) = post(&base, "/v1/chat/completions", json!({"model": "chat-tools-final", "messages": user("time?"), "tools": [{"type": "function", "function": {"name": "get_time"}}]})).await.status_json();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "jRMdM5KwYOkWmdoSwlDsxUjH8CcGQaSj");
    assert_eq!(
        call["function"]["arguments"], "{\"timezone\":\"UTC\",\"format\":\"iso\"}",
        "key order kept"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(answer["usage"]["prompt_tokens"], 198);
}

#[tokio::test]
async fn tool_history_round_trips_with_names_and_ids() {
    let (fake, base) = setup_ollama().await;
    let messages = json!([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}
    ]);
    let (status, _) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": messages}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    assert_eq!(
        fake.bodies("/api/chat")[0]["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
            {"role": "tool", "content": "21 C", "tool_name": "get_weather", "tool_call_id": "call_1"}
        ])
    );
}

#[tokio::test]
async fn tool_choice_none_drops_tools_and_named_keeps_one() {
    let (fake, base) = setup_ollama().await;
    let tools =
        json!([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]);
    let (status, none) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("x"), "tools": tools, "tool_choice": "none"}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["choices"][0]["message"]["content"], SKY);
    let (status, named) = post(&base, "/v1/chat/completions", json!({"model": "chat-text", "messages": user("x"), "tools": tools, "tool_choice": {"type": "function", "function": {"name": "b"}}})).await.status_json();
    assert_eq!(status, 200, "{named}");
    assert_eq!(named["choices"][0]["message"]["content"], SKY);
    let bodies = fake.bodies("/api/chat");
    assert!(bodies[0].get("tools").is_none());
    assert_eq!(
        bodies[1]["tools"],
        json!([{"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}}}}])
    );
    assert_eq!(
        bodies[1]["messages"][0],
        json!({"role": "system", "content": "You must answer by calling the tool `b`."})
    );
    let (status, answer) = post(&base, "/v1/chat/completions", json!({"model": "chat-text", "messages": user("x"), "tools": tools, "tool_choice": {"type": "function", "function": {"name": "zzz"}}})).await.status_json();
    assert_eq!((status, answer["error"]["param"].as_str()), (400, Some("tool_choice")));
    assert_eq!(
        fake.bodies("/api/chat").len(),
        2,
        "a bad tool_choice never goes upstream"
    );
}

/// Ollama cannot force a tool call: `required` keeps every tool and asks for a call in a
/// system message; the model's calls come back as OpenAI tool calls.
#[tokio::test]
async fn tool_choice_required_reaches_ollama_as_an_instruction() {
    let (fake, base) = setup_ollama().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-tools", "messages": user("weather?"), "tools": tools, "tool_choice": "required"}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/api/chat"),
        vec![json!({"model": "chat-tools", "messages": [
            {"role": "system", "content": "You must answer by calling one of the provided tools."},
            {"role": "user", "content": "weather?"}
        ], "tools": tools, "stream": false})]
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"],
        json!([
            {"id": "call_vnmov34f", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_6sly0bao", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}}
        ])
    );
}

#[tokio::test]
async fn images_as_data_uris_and_urls() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |_| {}).await;
    let png = STANDARD.encode(RED_PNG);
    let content = json!([{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]);
    let (status, _) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-vision", "messages": [{"role": "user", "content": content}]}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    assert_eq!(
        fake.bodies("/api/chat")[0]["messages"],
        json!([{"role": "user", "content": "What is this?", "images": [png]}]),
        "one message, bare base64"
    );

    // A URL on loopback is refused before anything goes upstream.
    let url = format!("{}/red.png", fake.url());
    let content = json!([{"type": "text", "text": "And this?"}, {"type": "image_url", "image_url": {"url": url}}]);
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-vision", "messages": [{"role": "user", "content": content.clone()}]}),
    )
    .await
    .status_json();
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback, private or link-local"),
        "{answer}"
    );
    assert_eq!(fake.bodies("/api/chat").len(), 1);
    assert!(fake.received().iter().all(|r| r.path != "/red.png"));

    // Allowed by the profile, it is fetched and sent as base64.
    let open = diglot(&fake.url(), |c| c.images.allow_private = true).await;
    let (status, _) = post(
        &open,
        "/v1/chat/completions",
        json!({"model": "chat-vision", "messages": [{"role": "user", "content": content}]}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    assert_eq!(fake.bodies("/api/chat")[1]["messages"][0]["images"], json!([png]));
}

/// A vision request whose one image is `url`.
fn image_request(url: &str) -> Value {
    let content = json!([{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]);
    json!({"model": "chat-vision", "messages": [{"role": "user", "content": content}]})
}

/// A name is checked by what it resolves to: `localhost` is loopback, refused before
/// anything is fetched or sent upstream, and so is a redirect from an allowed URL to it.
#[tokio::test]
async fn image_urls_naming_internal_hosts_are_refused() {
    let (fake, base) = setup_ollama().await;
    let port = fake.addr.port();
    for url in [
        format!("http://localhost:{port}/red.png"),
        format!("http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/red.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/red.png"),
    ] {
        let (status, answer) = post(&base, "/v1/chat/completions", image_request(&url))
            .await
            .status_json();
        assert_eq!(status, 400, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("loopback, private or link-local"), "{url}: {message}");
        assert!(
            message.contains("images.allow_private"),
            "says how to allow it: {message}"
        );
    }
    let paths: Vec<String> = fake.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/api/tags"],
        "only the model list: nothing fetched, nothing sent"
    );
}

/// With `allow_private`, internal URLs are fetched (redirects followed), within the
/// size and time limits; each limit is a 400 that says which, with nothing sent upstream.
#[tokio::test]
async fn image_fetches_keep_to_their_size_and_time_limits() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.images.allow_private = true;
        c.images.max_bytes = 1000;
        c.images.timeout_secs = 0.5;
    })
    .await;
    let png = STANDARD.encode(RED_PNG);
    let origin = fake.url();
    let redirected = format!("{origin}/redirect?to={origin}/red.png");
    let (status, answer) = post(&base, "/v1/chat/completions", image_request(&redirected))
        .await
        .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "A red square.");
    let paths: Vec<String> = fake.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/tags", "/redirect", "/red.png", "/api/chat"]);
    assert_eq!(
        fake.bodies("/api/chat")[0]["messages"],
        json!([{"role": "user", "content": "What is this?", "images": [png]}])
    );

    // Exactly the limit is fine; one byte more is not.
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        image_request(&format!("{origin}/big.png?bytes=1000")),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        image_request(&format!("{origin}/big.png?bytes=1001")),
    )
    .await
    .status_json();
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than the 1000-byte limit"),
        "{answer}"
    );
    // An image server that does not answer within the time limit (0.5 s of 30).
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        image_request(&format!("{origin}/slow.png?ms=30000")),
    )
    .await
    .status_json();
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("took too long"),
        "{answer}"
    );
    assert_eq!(fake.bodies("/api/chat").len(), 2, "refused images never go upstream");
}

#[tokio::test]
async fn response_formats_become_format() {
    let (fake, base) = setup_ollama().await;
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]});
    let (_, answer) = post(&base, "/v1/chat/completions", json!({"model": "chat-json", "messages": user("who?"),
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}}})).await.status_json();
    let (_, object) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-json", "messages": user("who?"), "response_format": {"type": "json_object"}}),
    )
    .await
    .status_json();
    let (_, text) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-json", "messages": user("who?"), "response_format": {"type": "text"}}),
    )
    .await
    .status_json();
    let bodies = fake.bodies("/api/chat");
    assert_eq!(bodies[0]["format"], schema);
    assert_eq!(bodies[1]["format"], "json");
    assert!(bodies[2].get("format").is_none());
    for answer in [answer, object, text] {
        let content: Value =
            serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
        assert_eq!(content, json!({"name": "Ada", "age": 36}), "{answer}");
    }
}

#[tokio::test]
async fn sampling_options_reach_ollama_untouched() {
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(&base, "/v1/chat/completions", json!({
        "model": "chat-text", "messages": user("x"),
        "temperature": 0.2, "top_p": 0.5, "seed": 7, "stop": "END", "presence_penalty": 0.1, "frequency_penalty": 0.3,
        "max_tokens": 50, "max_completion_tokens": 60, "num_ctx": 8192, "top_k": 20,
        "options": {"min_p": 0.05, "repeat_penalty": 1.1, "use_mmap": false, "num_gpu": 1, "tfs_z": 1.0, "temperature": 0.9},
        "keep_alive": "10m", "logprobs": true, "top_logprobs": 2, "user": "someone", "parallel_tool_calls": false
    })).await.status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], SKY);
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38})
    );
    let sent = &fake.bodies("/api/chat")[0];
    assert_eq!(
        sent["options"],
        json!({"temperature": 0.2, "top_p": 0.5, "top_k": 20, "min_p": 0.05, "num_predict": 60, "stop": ["END"], "seed": 7,
               "presence_penalty": 0.1, "frequency_penalty": 0.3, "repeat_penalty": 1.1, "num_ctx": 8192, "num_gpu": 1,
               "use_mmap": false, "tfs_z": 1.0})
    );
    assert_eq!(
        (&sent["keep_alive"], &sent["logprobs"], &sent["top_logprobs"]),
        (&json!("10m"), &json!(true), &json!(2))
    );
}

#[tokio::test]
async fn logprobs_are_openai_shaped() {
    let (_fake, base) = setup_ollama().await;
    let (_, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-logprobs", "messages": user("hi"), "logprobs": true, "top_logprobs": 2}),
    )
    .await
    .status_json();
    let logprobs = &answer["choices"][0]["logprobs"];
    assert_eq!(logprobs["refusal"], Value::Null);
    assert_eq!(logprobs["content"][0]["token"], "Hi");
    assert_eq!(logprobs["content"][0]["bytes"], json!([72, 105]));
    assert_eq!(logprobs["content"][0]["top_logprobs"][1]["token"], "Hello");
    assert_eq!(logprobs["content"].as_array().unwrap().len(), 2);

    let body = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-logprobs", "messages": user("hi"), "logprobs": true, "stream": true}),
    )
    .await
    .text;
    let chunks = sse_chunks(&body);
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"]["content"][0]["token"], "Hi",
        "logprobs ride on their content chunk"
    );
}

#[tokio::test]
async fn finish_reason_length() {
    let (_fake, base) = setup_ollama().await;
    let (_, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-length", "messages": user("x"), "max_tokens": 3}),
    )
    .await
    .status_json();
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn mid_stream_error_ends_the_stream_with_an_error_event() {
    let (_fake, base) = setup_ollama().await;
    let Answer { status, text: body, .. } = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-error", "messages": user("x"), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let data = sse_data(&body);
    assert_eq!(data.len(), 4, "role, two pieces, the error: {data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(
        last,
        json!({"error": {"message": "an error was encountered while running the model: unexpected EOF", "type": "api_error", "param": null, "code": "upstream_error"}})
    );

    // Not streamed, the same failure is a 502 with the upstream's message.
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-error", "messages": user("x")}),
    )
    .await
    .status_json();
    assert_eq!(status, 502);
    assert!(answer["error"]["message"].as_str().unwrap().contains("unexpected EOF"));
}

#[tokio::test]
async fn n_fans_out_and_merges_choices() {
    let (fake, base) = setup_ollama().await;
    let (_, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("x"), "n": 3}),
    )
    .await
    .status_json();
    assert_eq!(fake.bodies("/api/chat").len(), 3);
    let indexes: Vec<u64> = answer["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![0, 1, 2]);
    assert_eq!(answer["usage"]["total_tokens"], 114);

    let body = post(&base, "/v1/chat/completions", json!({"model": "chat-text", "messages": user("x"), "n": 2, "stream": true, "stream_options": {"include_usage": true}})).await.text;
    let chunks = sse_chunks(&body);
    for index in 0..2 {
        let text: String = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    }
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 76);
}

/// The `n` calls run at the same time: all of them reach the upstream while it holds
/// the first unanswered.
#[tokio::test]
async fn n_calls_are_made_at_the_same_time() {
    let (fake, base) = setup_ollama().await;
    fake.hold();
    let asked = tokio::spawn({
        let base = base.clone();
        async move {
            post(
                &base,
                "/v1/chat/completions",
                json!({"model": "chat-text", "messages": user("x"), "n": 3}),
            )
            .await
            .status_json()
        }
    });
    fake.wait_for_calls(3).await;
    fake.release();
    let (status, answer) = asked.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let texts: Vec<&str> = answer["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [SKY; 3]);
    assert_eq!(fake.bodies("/api/chat").len(), 3);
}

/// At most 16 answers per request: 16 are made, 17 are refused before any upstream call.
#[tokio::test]
async fn n_is_capped_at_16() {
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("x"), "n": 17}),
    )
    .await
    .status_json();
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("n")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and 16"),
        "{answer}"
    );
    assert_eq!(fake.calls(), 0);
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("x"), "n": 16}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"].as_array().unwrap().len(), 16);
    assert_eq!(answer["usage"]["total_tokens"], 16 * 38);
    assert_eq!(fake.calls(), 16);
    // Legacy completions count prompts × n.
    let (status, answer) = post(
        &base,
        "/v1/completions",
        json!({"model": "gen-text", "prompt": ["a", "b"], "n": 9}),
    )
    .await
    .status_json();
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("n")),
        "{answer}"
    );
    assert_eq!(fake.calls(), 16);
}

#[tokio::test]
async fn legacy_completions_use_generate() {
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(&base, "/v1/completions", json!({"model": "gen-text", "prompt": "Tell me a story", "suffix": "The end.", "max_tokens": 8, "temperature": 0.5})).await.status_json();
    assert_eq!(status, 200);
    assert_eq!(
        fake.bodies("/api/generate")[0],
        json!({"model": "gen-text", "prompt": "Tell me a story", "suffix": "The end.", "stream": false, "options": {"temperature": 0.5, "num_predict": 8}})
    );
    let answer = normalize(answer, "cmpl-");
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "Once upon a time");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let body = post(
        &base,
        "/v1/completions",
        json!({"model": "gen-text", "prompt": "Tell", "stream": true, "echo": true}),
    )
    .await
    .text;
    let chunks = sse_chunks(&body);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, "TellOnce upon a time");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));

    let (status, answer) = post(
        &base,
        "/v1/completions",
        json!({"model": "gen-text", "prompt": [1, 2, 3]}),
    )
    .await
    .status_json();
    assert_eq!((status, answer["error"]["param"].as_str()), (400, Some("prompt")));
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let (fake, base) = setup_ollama().await;
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture("ollama/embed/embed-minilm.json")).unwrap()).unwrap();
    let (status, answer) = post(
        &base,
        "/v1/embeddings",
        json!({"model": "embed-minilm", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    assert_eq!(
        fake.bodies("/api/embed")[0],
        json!({"model": "embed-minilm", "input": ["a", "b"], "dimensions": 8})
    );
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["usage"], json!({"prompt_tokens": 16, "total_tokens": 16}));
    for i in 0..2 {
        let got: Vec<f32> = serde_json::from_value(answer["data"][i]["embedding"].clone()).unwrap();
        let want: Vec<f32> = serde_json::from_value(expected["embeddings"][i].clone()).unwrap();
        assert_eq!(got, want);
        assert_eq!(answer["data"][i]["index"], i);
    }

    let (_, answer) = post(
        &base,
        "/v1/embeddings",
        json!({"model": "embed-minilm", "input": ["a", "b"], "encoding_format": "base64"}),
    )
    .await
    .status_json();
    let bytes = STANDARD
        .decode(answer["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = serde_json::from_value(expected["embeddings"][1].clone()).unwrap();
    assert_eq!(decoded, want);

    let (status, answer) = post(
        &base,
        "/v1/embeddings",
        json!({"model": "embed-minilm", "input": [[1, 2], [3]]}),
    )
    .await
    .status_json();
    assert_eq!((status, answer["error"]["param"].as_str()), (400, Some("input")));
    assert!(answer["error"]["message"].as_str().unwrap().contains("token-array"));
}

#[tokio::test]
async fn models_list_and_lookup() {
    let (_fake, base) = setup_ollama().await;
    let models: Value = get_json(&format!("{base}/v1/models")).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids[..4],
        ["llama3.2:latest", "qwen3:8b", "llava:7b", "all-minilm:latest"]
    );
    assert!(ids.contains(&"chat-text"), "and the fake's fixture models: {ids:?}");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["owned_by"], "library");
    assert_eq!(models["data"][0]["created"], 1785256867);

    let one: Value = get_json(&format!("{base}/v1/models/llama3.2")).await;
    assert_eq!(
        one,
        json!({"id": "llama3.2", "object": "model", "created": 1785256867, "owned_by": "library"})
    );
    let res = client().get(format!("{base}/v1/models/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn errors_are_openai_shaped_with_the_right_status() {
    let (fake, base) = setup_ollama().await;
    let raw = client()
        .post(format!("{base}/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("not valid JSON"));

    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": [{"role": "user", "content": 5}]}),
    )
    .await
    .status_json();
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("messages[0].content"))
    );
    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": "hi"}),
    )
    .await
    .status_json();
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("messages")));
    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("x"), "temperature": "hot"}),
    )
    .await
    .status_json();
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "ghost", "messages": user("x")}),
    )
    .await
    .status_json();
    assert_eq!(status, 404);
    assert_eq!(
        body["error"],
        json!({"message": "model 'ghost' not found", "type": "invalid_request_error", "param": "model", "code": "model_not_found"})
    );
    let (status, _) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "ghost", "messages": user("x"), "stream": true}),
    )
    .await
    .status_json();
    assert_eq!(
        status, 404,
        "a stream that fails before its first chunk gets a real status"
    );
    assert_eq!(
        fake.bodies("/api/chat").len(),
        0,
        "invalid requests and unknown models never reach the upstream"
    );

    let small = diglot(&fake.url(), |c| c.max_body_bytes = 1000).await;
    let (status, body) = post(
        &small,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user(&"x".repeat(2000))}),
    )
    .await
    .status_json();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("request_too_large"))
    );

    let (status, body) = post(&base, "/v1/nothing", json!({})).await.status_json();
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (404, Some("invalid_request_error"))
    );
}

#[tokio::test]
async fn unreachable_and_slow_upstreams() {
    let dead = dead_url();
    let base = diglot(&dead, |_| {}).await;
    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "m", "messages": user("x")}),
    )
    .await
    .status_json();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("service_unavailable"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot reach the upstream 'default'") && !message.contains(&dead),
        "names the upstream (by its channel, not its internal URL) and why: {body}"
    );

    // An upstream that sends its headers and then nothing (paused until the test ends).
    let fake = FakeUpstream::start().await;
    fake.pause_streams_after(1);
    let impatient = diglot(&fake.url(), |c| c.upstream.idle_timeout_secs = 0.2).await;
    let (status, body) = post(
        &impatient,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("x")}),
    )
    .await
    .status_json();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");

    // One that does not even send its headers (held until the test ends).
    let mute = FakeUpstream::start().await;
    mute.hold();
    let impatient = diglot(&mute.url(), |c| c.upstream.first_byte_timeout_secs = 0.2).await;
    let (status, body) = post(
        &impatient,
        "/v1/chat/completions",
        json!({"model": "chat-text", "messages": user("x")}),
    )
    .await
    .status_json();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert_eq!(mute.calls(), 1);
}

#[tokio::test]
async fn streams_pass_through_unbuffered() {
    // The upstream sends its first line, then waits: the client must see that piece
    // before the upstream sends anything more.
    let fake = FakeUpstream::start().await;
    fake.pause_streams_after(1);
    let base = diglot(&fake.url(), |_| {}).await;
    let res = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "chat-text", "messages": user("x"), "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"The\"") {
        let chunk = tokio::time::timeout(DEADLINE, body.next())
            .await
            .expect("the first piece arrives while the upstream waits")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        fake.lines_sent(),
        1,
        "the first piece left before the upstream sent the second"
    );
    assert!(!seen.contains("\"content\":\" sky\""), "{seen}");
    fake.resume_streams();
    while let Some(chunk) = body.next().await {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let text: String = sse_chunks(&seen)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    assert_eq!(fake.lines_sent(), 7);
}

#[tokio::test]
async fn client_hang_up_cancels_the_upstream_call() {
    // The upstream stops after its first line, so it can only end by being dropped.
    let fake = FakeUpstream::start().await;
    fake.pause_streams_after(1);
    let base = diglot(&fake.url(), |_| {}).await;
    let res = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "chat-text", "messages": user("x"), "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    // The upstream stream must be dropped when the client goes.
    fake.wait_for_cancel().await;
    assert_eq!(fake.completed_streams(), 0);
}

#[tokio::test]
async fn routes_without_v1_and_under_a_base_path() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.base_path = "/ollama/".into()).await;
    for path in [
        "/v1/chat/completions",
        "/chat/completions",
        "/ollama/v1/chat/completions",
        "/ollama/chat/completions",
    ] {
        let (status, answer) = post(&base, path, json!({"model": "chat-text", "messages": user("x")}))
            .await
            .status_json();
        assert_eq!((path, status), (path, 200));
        assert_eq!(answer["object"], "chat.completion");
    }
    for path in ["/v1/models", "/models", "/ollama/v1/models"] {
        assert_eq!(
            client().get(format!("{base}{path}")).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let probe: Value = get_json(&format!("{base}/v1")).await;
    assert_eq!(probe["status"], "ok");
}

#[tokio::test]
async fn client_hang_up_cancels_a_whole_answer_too() {
    let fake = FakeUpstream::start().await;
    fake.set_line_delay(Duration::from_millis(300));
    let base = diglot(&fake.url(), |_| {}).await;
    fake.assert_giving_up_cancels_the_call(
        &format!("{base}/v1/chat/completions"),
        json!({"model": "chat-text", "messages": user("x")}),
    )
    .await;
}
