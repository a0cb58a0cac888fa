//! The Responses API (`/v1/responses`) in front of both kinds of upstream, against fake
//! upstreams serving recorded fixtures: the exact upstream request and the exact answer,
//! whole and streamed, and the stored responses (chains, get, delete, input items, owners).

mod common;

use std::time::Duration;

use common::*;
use diglot::config::{Config, UpstreamKind};
use diglot::store::{Role, TokenRecord};
use futures::StreamExt;
use serde_json::{Value, json};

/// The text of the `chat-text` fixture (Ollama) and of `oai-text` (OpenAI).
const SKY: &str = "The sky is blue because of Rayleigh scattering.";

/// A diglot with a store in `dir`, in front of `fake` speaking `kind`.
async fn stored(
    fake: &FakeUpstream,
    kind: UpstreamKind,
    dir: &tempfile::TempDir,
    tweak: impl FnOnce(&mut Config),
) -> String {
    diglot(&fake.url(), |c| {
        c.upstream.kind = kind;
        c.store.data_dir = dir.path().to_owned();
        tweak(c)
    })
    .await
}

/// Checks the made-up parts of a response (ids with their prefixes, the creation time)
/// and blanks them, so the rest compares exactly.
fn normalize(mut response: Value) -> Value {
    fn blank(value: &mut Value, prefix: &str) {
        let id = value.as_str().unwrap_or_else(|| panic!("no id: {value}"));
        assert!(id.starts_with(prefix) && id.len() == prefix.len() + 24, "id {id}");
        *value = json!(format!("{prefix}ID"));
    }
    blank(&mut response["id"], "resp_");
    assert!(response["created_at"].as_i64().unwrap() > 1_700_000_000);
    response["created_at"] = json!(0);
    for item in response["output"].as_array_mut().unwrap() {
        let prefix = match item["type"].as_str().unwrap() {
            "message" => "msg_",
            "reasoning" => "rs_",
            _ => "fc_",
        };
        blank(&mut item["id"], prefix);
    }
    response
}

/// The response object of a plain request, its settings echoed as OpenAI does.
fn response(model: &str, output: Value, output_text: &str, usage: Value) -> Value {
    json!({
        "id": "resp_ID", "object": "response", "created_at": 0, "status": "completed",
        "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
        "model": model, "output": output, "output_text": output_text, "parallel_tool_calls": true,
        "previous_response_id": null, "reasoning": null, "store": true, "temperature": null,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": null,
        "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
    })
}

fn message(text: &str) -> Value {
    json!({"id": "msg_ID", "type": "message", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}], "status": "completed"})
}

#[tokio::test]
async fn text_over_ollama_both_sides() {
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-text", "input": "Why is the sky blue?"}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/api/chat"),
        vec![
            json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false})
        ]
    );
    assert_eq!(
        normalize(answer),
        response(
            "chat-text",
            json!([message(SKY)]),
            SKY,
            json!({"input_tokens": 31, "output_tokens": 7, "total_tokens": 38})
        )
    );
}

#[tokio::test]
async fn text_over_openai_both_sides() {
    let (fake, base) = setup_openai().await;
    let (status, answer) = post(
        &base,
        "/v1/responses",
        json!({"model": "oai-text", "input": "Why is the sky blue?", "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["\n\n"]}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/v1/chat/completions"),
        vec![
            json!({"model": "oai-text", "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                    "temperature": 0.5, "top_p": 0.9, "stop": ["\n\n"], "seed": 7, "stream": false})
        ]
    );
    // oai-text's usage, with its cached and reasoning token counts.
    let usage = json!({"input_tokens": 14, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10,
                       "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 24});
    let mut expected = response("oai-text", json!([message(SKY)]), SKY, usage);
    expected["temperature"] = json!(0.5);
    expected["top_p"] = json!(0.9);
    assert_eq!(normalize(answer), expected);
}

/// The events of one streamed answer, as types.
fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn streamed_text_is_the_documented_event_sequence() {
    for (fake, base, model) in [
        {
            let (fake, base) = setup_ollama().await;
            (fake, base, "chat-text")
        },
        {
            let (fake, base) = setup_openai().await;
            (fake, base, "oai-text")
        },
    ] {
        let answer = post(
            &base,
            "/v1/responses",
            json!({"model": model, "input": "hi", "stream": true}),
        )
        .await;
        assert_eq!((answer.status, answer.content_type()), (200, "text/event-stream"));
        let events = response_events(&answer.text);
        let deltas = events.len() - 8;
        let mut expected = vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ];
        expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
        expected.extend([
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]);
        assert_eq!(types(&events), expected, "{model}");
        assert!(deltas > 1, "one delta per upstream piece");
        let created = &events[0]["response"];
        assert_eq!(
            (created["status"].as_str(), created["output"].clone()),
            (Some("in_progress"), json!([]))
        );
        assert_eq!(created["usage"], Value::Null);
        let item_id = events[2]["item"]["id"].clone();
        assert_eq!(
            events[2],
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
                   "item": {"id": item_id, "type": "message", "role": "assistant", "content": [], "status": "in_progress"}})
        );
        assert_eq!(
            events[3],
            json!({"type": "response.content_part.added", "sequence_number": 3, "item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        );
        let text: String = events[4..4 + deltas]
            .iter()
            .map(|e| {
                assert_eq!(
                    (&e["item_id"], &e["output_index"], &e["content_index"]),
                    (&item_id, &json!(0), &json!(0))
                );
                e["delta"].as_str().unwrap()
            })
            .collect();
        assert_eq!(text, SKY);
        let n = 4 + deltas;
        assert_eq!(
            events[n],
            json!({"type": "response.output_text.done", "sequence_number": n, "item_id": item_id, "output_index": 0, "content_index": 0, "text": SKY, "logprobs": []})
        );
        let part = json!({"type": "output_text", "text": SKY, "annotations": [], "logprobs": []});
        assert_eq!(events[n + 1]["part"], part);
        let item =
            json!({"id": item_id, "type": "message", "role": "assistant", "content": [part], "status": "completed"});
        assert_eq!(
            events[n + 2],
            json!({"type": "response.output_item.done", "sequence_number": n + 2, "output_index": 0, "item": item})
        );
        let done = &events[n + 3]["response"];
        assert_eq!(done["id"], created["id"]);
        assert_eq!(
            (
                done["status"].as_str(),
                done["output"].clone(),
                done["output_text"].as_str()
            ),
            (Some("completed"), json!([item]), Some(SKY))
        );
        assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0, "{done}");
        // The upstream was asked for a stream.
        let upstream = fake
            .received()
            .into_iter()
            .find(|r| r.path.ends_with("/chat") || r.path.ends_with("/completions"))
            .unwrap();
        assert_eq!(upstream.body["stream"], true, "{model}");
    }
}

#[tokio::test]
async fn instructions_and_message_items_become_the_chat() {
    let input = json!([
        {"role": "developer", "content": "Answer in English."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]},
        {"role": "user", "content": "Why is the sky blue?"}
    ]);
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-text", "instructions": "Be brief.", "input": input}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["instructions"], "Be brief.");
    assert_eq!(
        fake.bodies("/api/chat")[0]["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Answer in English."},
               {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
               {"role": "user", "content": "Why is the sky blue?"}])
    );
    let (fake, base) = setup_openai().await;
    post(
        &base,
        "/v1/responses",
        json!({"model": "oai-text", "instructions": "Be brief.", "input": input}),
    )
    .await;
    assert_eq!(
        fake.bodies("/v1/chat/completions")[0]["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Answer in English."},
               {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
               {"role": "user", "content": "Why is the sky blue?"}])
    );
}

#[tokio::test]
async fn images_by_data_uri_and_url() {
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
    let data_uri = format!("data:image/png;base64,{png}");
    let input = |url: &str| json!([{"role": "user", "content": [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": url, "detail": "auto"}]}]);
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-vision", "input": input(&data_uri)}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/api/chat")[0]["messages"],
        json!([{"role": "user", "content": "What is this?", "images": [png]}])
    );
    // A URL is fetched for Ollama (here from the fake, so private addresses are allowed).
    let open = diglot(&fake.url(), |c| c.images.allow_private = true).await;
    let url = format!("{}/red.png", fake.url());
    let (status, _) = post(
        &open,
        "/v1/responses",
        json!({"model": "chat-vision", "input": input(&url)}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    let fetched = &fake.bodies("/api/chat")[1]["messages"][0]["images"];
    assert_eq!(fetched.as_array().unwrap().len(), 1);

    // An OpenAI upstream gets the image parts as chat parts.
    let (fake, base) = setup_openai().await;
    let (status, _) = post(
        &base,
        "/v1/responses",
        json!({"model": "oai-vision", "input": input("https://example.com/cat.png")}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    assert_eq!(
        fake.bodies("/v1/chat/completions")[0]["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    );
}

#[tokio::test]
async fn max_output_tokens_cut_short_is_incomplete() {
    for (fake, base, model, path) in [
        {
            let (fake, base) = setup_ollama().await;
            (fake, base, "chat-length", "/api/chat")
        },
        {
            let (fake, base) = setup_openai().await;
            (fake, base, "llamacpp-length", "/v1/chat/completions")
        },
    ] {
        let body = json!({"model": model, "input": "x", "max_output_tokens": 3});
        let (status, answer) = post(&base, "/v1/responses", body.clone()).await.status_json();
        assert_eq!(status, 200, "{answer}");
        let sent = &fake.bodies(path)[0];
        if path == "/api/chat" {
            assert_eq!(sent["options"], json!({"num_predict": 3}));
        } else {
            assert_eq!(sent["max_tokens"], 3, "{sent}");
        }
        assert_eq!(
            (answer["status"].as_str(), &answer["incomplete_details"]),
            (Some("incomplete"), &json!({"reason": "max_output_tokens"}))
        );
        assert_eq!(answer["max_output_tokens"], 3);
        assert_eq!(answer["output"][0]["status"], "incomplete", "{answer}");

        let mut streamed = body;
        streamed["stream"] = json!(true);
        let events = response_events(&post(&base, "/v1/responses", streamed).await.text);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
    }
}

#[tokio::test]
async fn json_schema_format_reaches_both_upstreams() {
    let schema = json!({"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]});
    let text = json!({"format": {"type": "json_schema", "name": "sky", "schema": schema, "strict": true}});
    let (fake, base) = setup_ollama().await;
    let (status, answer) = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-json", "input": "x", "text": text}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fake.bodies("/api/chat")[0]["format"], schema);
    assert_eq!(answer["text"], text);
    let parsed: Value = serde_json::from_str(answer["output_text"].as_str().unwrap()).unwrap();
    assert!(parsed.is_object(), "{parsed}");

    let (fake, base) = setup_openai().await;
    post(
        &base,
        "/v1/responses",
        json!({"model": "oai-json", "input": "x", "text": text}),
    )
    .await;
    assert_eq!(
        fake.bodies("/v1/chat/completions")[0]["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "sky", "schema": schema, "strict": true}})
    );
    post(
        &base,
        "/v1/responses",
        json!({"model": "oai-json", "input": "x", "text": {"format": {"type": "json_object"}}}),
    )
    .await;
    assert_eq!(
        fake.bodies("/v1/chat/completions")[1]["response_format"],
        json!({"type": "json_object"})
    );
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true})
}

#[tokio::test]
async fn function_call_round_trip_over_ollama() {
    let (fake, base) = setup_ollama().await;
    let body = json!({"model": "chat-tools", "input": "Weather in Paris and Tokyo?", "tools": [weather_tool()], "tool_choice": "auto"});
    let (status, answer) = post(&base, "/v1/responses", body.clone()).await.status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/api/chat")[0]["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    let answer = normalize(answer);
    let calls = json!([
        {"id": "fc_ID", "type": "function_call", "call_id": "call_vnmov34f", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
        {"id": "fc_ID", "type": "function_call", "call_id": "call_6sly0bao", "name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}", "status": "completed"}
    ]);
    assert_eq!(answer["output"], calls);
    assert_eq!(answer["output_text"], "");
    assert_eq!(answer["tools"], json!([weather_tool()]));

    // Streamed: each call is an item with its arguments' delta and done.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = response_events(&post(&base, "/v1/responses", streamed).await.text);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let fc = events[2]["item"]["id"].clone();
    assert_eq!(
        events[2],
        json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
               "item": {"id": fc, "type": "function_call", "call_id": "call_vnmov34f", "name": "get_weather", "arguments": "", "status": "in_progress"}})
    );
    assert_eq!(
        events[3],
        json!({"type": "response.function_call_arguments.delta", "sequence_number": 3, "item_id": fc, "output_index": 0, "delta": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(
        events[4],
        json!({"type": "response.function_call_arguments.done", "sequence_number": 4, "item_id": fc, "output_index": 0, "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(events[8]["output_index"], 1);

    // The results go back as function_call_output items after the calls.
    let mut turn = body;
    turn["model"] = json!("chat-text");
    turn["input"] = json!([
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"type": "function_call", "call_id": "call_vnmov34f", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call", "call_id": "call_6sly0bao", "name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"},
        {"type": "function_call_output", "call_id": "call_vnmov34f", "output": "18°C, sunny"},
        {"type": "function_call_output", "call_id": "call_6sly0bao", "output": "22°C, cloudy"}
    ]);
    let (status, answer) = post(&base, "/v1/responses", turn).await.status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/api/chat").last().unwrap()["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_vnmov34f", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
                {"id": "call_6sly0bao", "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Tokyo"}}}]},
            {"role": "tool", "content": "18°C, sunny", "tool_name": "get_weather", "tool_call_id": "call_vnmov34f"},
            {"role": "tool", "content": "22°C, cloudy", "tool_name": "get_weather", "tool_call_id": "call_6sly0bao"}
        ])
    );
    assert_eq!(normalize(answer)["output"], json!([message(SKY)]));
}

#[tokio::test]
async fn function_call_round_trip_over_openai() {
    let (fake, base) = setup_openai().await;
    let body = json!({"model": "oai-tools", "input": "Weather in Paris?", "tools": [weather_tool()], "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": false, "stream": true});
    let events = response_events(&post(&base, "/v1/responses", body).await.text);
    assert_eq!(fake.bodies("/v1/chat/completions")[0]["parallel_tool_calls"], false);
    assert_eq!(
        fake.bodies("/v1/chat/completions")[0]["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}}])
    );
    assert_eq!(
        fake.bodies("/v1/chat/completions")[0]["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    // The arguments arrive in pieces, each a delta of the one item.
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(deltas.len() > 1, "{deltas:?}");
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["output"][0]["arguments"], deltas.concat());
    assert_eq!(done["output"][0]["call_id"], "call_PQ9L3kCGCmyzH0KQjaV7EWni");
    let arguments = deltas.concat();

    let turn = json!({"model": "oai-text", "tools": [weather_tool()], "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_PQ9L3kCGCmyzH0KQjaV7EWni", "name": "get_weather", "arguments": arguments},
        {"type": "function_call_output", "call_id": "call_PQ9L3kCGCmyzH0KQjaV7EWni", "output": "18°C"}
    ]});
    let (status, _) = post(&base, "/v1/responses", turn).await.status_json();
    assert_eq!(status, 200);
    assert!(
        fake.bodies("/v1/chat/completions")[1]
            .get("parallel_tool_calls")
            .is_none(),
        "not sent when not asked"
    );
    assert_eq!(
        fake.bodies("/v1/chat/completions")[1]["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_PQ9L3kCGCmyzH0KQjaV7EWni", "type": "function",
                "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "content": "18°C", "tool_call_id": "call_PQ9L3kCGCmyzH0KQjaV7EWni", "name": "get_weather"}
        ])
    );
}

#[tokio::test]
async fn reasoning_is_a_reasoning_item_with_its_summary() {
    let (fake, base) = setup_ollama().await;
    let body = json!({"model": "chat-thinking", "input": "hello", "reasoning": {"effort": "high", "summary": "auto"}});
    let (status, answer) = post(&base, "/v1/responses", body.clone()).await.status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fake.bodies("/api/chat")[0]["think"], "high");
    let answer = normalize(answer);
    assert_eq!(answer["reasoning"], json!({"effort": "high", "summary": "auto"}));
    let output = answer["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{answer}");
    assert_eq!(output[0]["type"], "reasoning");
    let thought = output[0]["summary"][0]["text"].as_str().unwrap();
    assert!(thought.starts_with("Okay, the user just said hello."), "{thought}");
    assert_eq!(
        output[0],
        json!({"id": "rs_ID", "type": "reasoning", "summary": [{"type": "summary_text", "text": thought}]})
    );
    assert_eq!(output[1]["type"], "message");

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let events = response_events(&post(&base, "/v1/responses", streamed).await.text);
    let kinds = types(&events);
    let first_text = kinds.iter().position(|k| *k == "response.output_text.delta").unwrap();
    assert_eq!(
        kinds[2..5],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta"
        ]
    );
    let done_at = kinds
        .iter()
        .position(|k| *k == "response.reasoning_summary_text.done")
        .unwrap();
    assert_eq!(
        kinds[done_at..done_at + 3],
        [
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done"
        ]
    );
    assert!(done_at < first_text);
    assert_eq!(events[done_at]["text"], thought);
    assert_eq!(events[done_at + 3]["output_index"], 1, "the message is the second item");

    // Over an OpenAI upstream, the effort is reasoning_effort and its reasoning text the summary.
    let (fake, base) = setup_openai().await;
    let (status, answer) = post(
        &base,
        "/v1/responses",
        json!({"model": "vllm-reasoning", "input": "x", "reasoning": {"effort": "low"}}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fake.bodies("/v1/chat/completions")[0]["reasoning_effort"], "low");
    assert_eq!(answer["output"][0]["type"], "reasoning");
    assert!(!answer["output"][0]["summary"][0]["text"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn previous_response_id_chains_three_turns() {
    for (kind, model, path) in [
        (UpstreamKind::Ollama, "chat-text", "/api/chat"),
        (UpstreamKind::Openai, "oai-text", "/v1/chat/completions"),
    ] {
        chain_of_three(kind, model, path).await;
    }
}

async fn chain_of_three(kind: UpstreamKind, model: &str, path: &str) {
    let dir = temp_dir();
    let fake = FakeUpstream::start().await;
    let base = stored(&fake, kind, &dir, |_| {}).await;
    let first = post(
        &base,
        "/v1/responses",
        json!({"model": model, "instructions": "Be brief.", "input": "First?"}),
    )
    .await
    .json();
    let second = post(
        &base,
        "/v1/responses",
        json!({"model": model, "previous_response_id": first["id"], "input": [{"role": "user", "content": "Second?"}], "stream": true}),
    )
    .await;
    let second = response_events(&second.text).last().unwrap()["response"].clone();
    assert_eq!(second["previous_response_id"], first["id"]);
    let third = post(
        &base,
        "/v1/responses",
        json!({"model": model, "previous_response_id": second["id"], "instructions": "Be kind.", "input": "Third?"}),
    )
    .await
    .json();
    assert_eq!(third["status"], "completed", "{third}");
    let sent = fake.bodies(path);
    assert_eq!(
        sent[1]["messages"],
        json!([{"role": "user", "content": "First?"}, {"role": "assistant", "content": SKY}, {"role": "user", "content": "Second?"}]),
        "instructions are not carried over"
    );
    assert_eq!(
        sent[2]["messages"],
        json!([{"role": "system", "content": "Be kind."},
               {"role": "user", "content": "First?"}, {"role": "assistant", "content": SKY},
               {"role": "user", "content": "Second?"}, {"role": "assistant", "content": SKY},
               {"role": "user", "content": "Third?"}])
    );

    // Each is kept as it was answered; its input items are its own.
    let id = third["id"].as_str().unwrap();
    assert_eq!(get_json(&format!("{base}/v1/responses/{id}")).await, third);
    let items = get_json(&format!("{base}/v1/responses/{id}/input_items")).await;
    let item_id = items["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(item_id.starts_with("msg_"), "{items}");
    assert_eq!(
        items,
        json!({"object": "list", "data": [{"type": "message", "id": item_id, "role": "user", "content": [{"type": "input_text", "text": "Third?"}]}],
               "first_id": item_id, "last_id": item_id, "has_more": false})
    );
    let id2 = second["id"].as_str().unwrap();
    assert_eq!(get_json(&format!("{base}/v1/responses/{id2}")).await, second);

    // Deleted, it is gone, and a chain cannot continue from it.
    let deleted = send(client().delete(format!("{base}/v1/responses/{id}"))).await;
    assert_eq!(
        deleted.status_json(),
        (200, json!({"id": id, "object": "response", "deleted": true}))
    );
    let (status, body) = send(client().get(format!("{base}/v1/responses/{id}")))
        .await
        .status_json();
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = post(
        &base,
        "/v1/responses",
        json!({"model": model, "previous_response_id": id, "input": "x"}),
    )
    .await
    .status_json();
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (404, Some("previous_response_id"))
    );
    assert_eq!(
        send(client().delete(format!("{base}/v1/responses/{id}"))).await.status,
        404
    );
    assert_eq!(
        fake.bodies(path).len(),
        3,
        "nothing went upstream for the missing chain"
    );
}

#[tokio::test]
async fn input_items_page_in_either_order() {
    let dir = temp_dir();
    let (fake, _) = setup_openai().await;
    let base = stored(&fake, UpstreamKind::Openai, &dir, |_| {}).await;
    let input = json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]);
    let answer = post(&base, "/v1/responses", json!({"model": "oai-text", "input": input}))
        .await
        .json();
    let url = format!("{base}/v1/responses/{}/input_items", answer["id"].as_str().unwrap());
    let texts = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let newest_first = get_json(&url).await;
    assert_eq!(texts(&newest_first), ["c", "b", "a"]);
    let parts: Vec<&Value> = newest_first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["content"][0]["type"])
        .collect();
    assert_eq!(
        parts,
        ["input_text", "output_text", "input_text"],
        "an assistant's text is output_text"
    );
    let page = get_json(&format!("{url}?order=asc&limit=2")).await;
    assert_eq!(
        (texts(&page), page["has_more"].as_bool()),
        (vec!["a".to_owned(), "b".to_owned()], Some(true))
    );
    let rest = get_json(&format!("{url}?order=asc&after={}", page["last_id"].as_str().unwrap())).await;
    assert_eq!(
        (texts(&rest), rest["has_more"].as_bool()),
        (vec!["c".to_owned()], Some(false))
    );
    let (status, body) = send(client().get(format!("{url}?limit=0"))).await.status_json();
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("limit")));
}

#[tokio::test]
async fn unstored_responses_are_not_kept() {
    let dir = temp_dir();
    let fake = FakeUpstream::start().await;
    let base = stored(&fake, UpstreamKind::Ollama, &dir, |_| {}).await;
    let answer = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-text", "input": "x", "store": false}),
    )
    .await
    .json();
    assert_eq!(answer["store"], false);
    let status = send(client().get(format!("{base}/v1/responses/{}", answer["id"].as_str().unwrap())))
        .await
        .status;
    assert_eq!(status, 404);
    // With ttl_days = 0 nothing is kept.
    let dir = temp_dir();
    let base = stored(&fake, UpstreamKind::Ollama, &dir, |c| c.responses.ttl_days = 0).await;
    let answer = post(&base, "/v1/responses", json!({"model": "chat-text", "input": "x"}))
        .await
        .json();
    let status = send(client().get(format!("{base}/v1/responses/{}", answer["id"].as_str().unwrap())))
        .await
        .status;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn another_tokens_response_is_not_found() {
    let dir = temp_dir();
    let fake = FakeUpstream::start().await;
    let base = stored(&fake, UpstreamKind::Ollama, &dir, |c| {
        c.tokens = vec![
            TokenRecord::for_secret("alice", "sk-alice-0123456789", Role::User),
            TokenRecord::for_secret("bob", "sk-bob-0123456789", Role::User),
        ];
    })
    .await;
    let answer = call(
        &base,
        "/v1/responses",
        Some("sk-alice-0123456789"),
        json!({"model": "chat-text", "input": "x"}),
    )
    .await
    .json();
    let url = format!("{base}/v1/responses/{}", answer["id"].as_str().unwrap());
    let get = |token: &'static str| send(client().get(&url).bearer_auth(token));
    assert_eq!(get("sk-alice-0123456789").await.json(), answer);
    assert_eq!(get("sk-bob-0123456789").await.status, 404);
    assert_eq!(
        send(
            client()
                .get(format!("{url}/input_items"))
                .bearer_auth("sk-bob-0123456789")
        )
        .await
        .status,
        404
    );
    assert_eq!(
        send(client().delete(&url).bearer_auth("sk-bob-0123456789"))
            .await
            .status,
        404
    );
    let (status, body) = call(
        &base,
        "/v1/responses",
        Some("sk-bob-0123456789"),
        json!({"model": "chat-text", "previous_response_id": answer["id"], "input": "x"}),
    )
    .await
    .status_json();
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (404, Some("previous_response_id"))
    );
    assert_eq!(send(client().get(&url)).await.status, 401, "no token, no answer");
    assert_eq!(get("sk-alice-0123456789").await.status, 200, "bob deleted nothing");
}

#[tokio::test]
async fn unknown_model_and_unsupported_features_are_openai_errors() {
    let (fake, base) = setup_ollama().await;
    let (status, body) = post(&base, "/v1/responses", json!({"model": "no-such-model", "input": "x"}))
        .await
        .status_json();
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": {"message": "model 'no-such-model' not found", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
    );
    for (body, param) in [
        (
            json!({"model": "chat-text", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "chat-text", "input": "x", "tools": [weather_tool(), {"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
            "tools[1].type",
        ),
        (
            json!({"model": "chat-text", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "chat-text", "input": "x", "conversation": "conv_123"}),
            "conversation",
        ),
        (
            json!({"model": "chat-text", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].id",
        ),
        (
            json!({"model": "chat-text", "input": [{"type": "computer_call_output", "call_id": "c"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "chat-text", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]}),
            "input[0].content[0].type",
        ),
        (json!({"model": "chat-text"}), "input"),
        (json!({"input": "x"}), "model"),
    ] {
        let (status, error) = post(&base, "/v1/responses", body.clone()).await.status_json();
        assert_eq!(
            (status, error["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {error}"
        );
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let message = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-text", "input": "x", "tools": [{"type": "web_search"}]}),
    )
    .await
    .json();
    assert!(
        message["error"]["message"].as_str().unwrap().contains("'web_search'"),
        "{message}"
    );
    assert!(
        fake.bodies("/api/chat").is_empty(),
        "nothing half-translated went upstream"
    );
}

#[tokio::test]
async fn failure_mid_stream_is_response_failed() {
    for (base, model) in [
        (setup_ollama().await.1, "chat-error"),
        (setup_openai().await.1, "oai-error"),
    ] {
        let answer = post(
            &base,
            "/v1/responses",
            json!({"model": model, "input": "x", "stream": true}),
        )
        .await;
        assert_eq!(answer.status, 200);
        let events = response_events(&answer.text);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.failed", "{model}");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");
        assert!(!last["response"]["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(
            types(&events)
                .iter()
                .filter(|t| t.ends_with(".done") || t.ends_with("completed"))
                .count(),
            0,
            "{model}"
        );

        // Whole, the same failure is an error status.
        let (status, body) = post(&base, "/v1/responses", json!({"model": model, "input": "x"}))
            .await
            .status_json();
        assert_eq!(status, 502, "{model}: {body}");
        assert_eq!(body["error"]["type"], "api_error");
    }
}

#[tokio::test]
async fn client_hang_up_cancels_the_upstream_call() {
    let fake = FakeUpstream::start().await;
    fake.pause_streams_after(1);
    let base = diglot(&fake.url(), |_| {}).await;
    let res = client()
        .post(format!("{base}/v1/responses"))
        .json(&json!({"model": "chat-text", "input": "x", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    fake.wait_for_cancel().await;
    assert_eq!(fake.completed_streams(), 0);

    // And a whole answer's.
    let fake = FakeUpstream::start().await;
    fake.set_line_delay(Duration::from_millis(300));
    let base = diglot(&fake.url(), |_| {}).await;
    fake.assert_giving_up_cancels_the_call(
        &format!("{base}/v1/responses"),
        json!({"model": "chat-text", "input": "x"}),
    )
    .await;
}

#[tokio::test]
async fn routes_without_v1_and_under_a_base_path() {
    let dir = temp_dir();
    let fake = FakeUpstream::start().await;
    let base = stored(&fake, UpstreamKind::Ollama, &dir, |c| c.base_path = "/ollama".into()).await;
    for path in [
        "/v1/responses",
        "/responses",
        "/ollama/v1/responses",
        "/ollama/responses",
    ] {
        let (status, answer) = post(&base, path, json!({"model": "chat-text", "input": "x"}))
            .await
            .status_json();
        assert_eq!((path, status, answer["object"].as_str()), (path, 200, Some("response")));
        let id = answer["id"].as_str().unwrap();
        assert_eq!(
            send(client().get(format!("{base}{path}/{id}"))).await.status,
            200,
            "{path}"
        );
        assert_eq!(
            send(client().get(format!("{base}{path}/{id}/input_items")))
                .await
                .status,
            200,
            "{path}"
        );
    }
}

#[tokio::test]
async fn ollama_options_and_usage_records_apply_as_on_chat() {
    let dir = temp_dir();
    let fake = FakeUpstream::start().await;
    let base = stored(&fake, UpstreamKind::Ollama, &dir, |_| {}).await;
    let (status, _) = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-text", "input": "x", "num_ctx": 4096, "options": {"top_k": 3, "mystery": 1}, "keep_alive": "5m"}),
    )
    .await
    .status_json();
    assert_eq!(status, 200);
    let sent = &fake.bodies("/api/chat")[0];
    assert_eq!(sent["options"], json!({"top_k": 3, "num_ctx": 4096, "mystery": 1}));
    assert_eq!(sent["keep_alive"], "5m");
    let store = usage_records(dir.path(), 1).await;
    let records = store.recent_usage(1).await.unwrap();
    assert_eq!(
        (
            records[0].frontend,
            records[0].model.as_str(),
            records[0].prompt_tokens,
            records[0].completion_tokens
        ),
        ("openai", "chat-text", 31, 7)
    );
}

#[tokio::test]
async fn item_references_resolve_to_the_callers_stored_items() {
    let dir = temp_dir();
    let fake = FakeUpstream::start().await;
    let base = stored(&fake, UpstreamKind::Ollama, &dir, |_| {}).await;
    let first = post(&base, "/v1/responses", json!({"model": "chat-text", "input": "First?"}))
        .await
        .json();
    let said = first["output"][0]["id"].clone();
    let (status, answer) = post(
        &base,
        "/v1/responses",
        json!({"model": "chat-text", "input": [{"role": "user", "content": "First?"}, {"type": "item_reference", "id": said}, {"role": "user", "content": "Second?"}]}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/api/chat")[1]["messages"],
        json!([{"role": "user", "content": "First?"}, {"role": "assistant", "content": SKY}, {"role": "user", "content": "Second?"}])
    );
    // Listed as the item it refers to.
    let items = get_json(&format!(
        "{base}/v1/responses/{}/input_items?order=asc",
        answer["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(items["data"][1], first["output"][0]);
}
