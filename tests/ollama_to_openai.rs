//! Ollama frontend → OpenAI-compatible backend, against a fake upstream serving recorded
//! OpenAI, vLLM, llama.cpp and OpenRouter streams; plus the two same-protocol pairings.
//! Each test checks both sides: the exact upstream request and the exact Ollama answer.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::{Value, json};

/// NDJSON lines, checking the framing the strictest clients need: one object per
/// line, every line ended by `\n`, no blank lines.
fn ndjson(body: &str) -> Vec<Value> {
    assert!(body.ends_with('\n'), "last line unterminated: {body:?}");
    body.split_terminator('\n')
        .map(|line| {
            assert!(!line.trim().is_empty(), "blank line in {body:?}");
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .collect()
}

/// Every chunk carries what Zed, OllamaKit and ollama-python require.
fn check_chunk_shape(chunk: &Value, model: &str) {
    assert_eq!(chunk["model"], model);
    let created = chunk["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok(), "{created}");
    assert!(chunk["done"].is_boolean());
}

fn check_final(chunk: &Value) {
    assert_eq!(chunk["done"], true);
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(chunk[key].is_u64(), "{key} must be an integer: {chunk}");
    }
}

#[tokio::test]
async fn liveness_and_version() {
    let (_fake, base) = setup_openai().await;
    let res = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "Ollama is running");
    assert_eq!(client().head(format!("{base}/")).send().await.unwrap().status(), 200);
    assert_eq!(
        client()
            .head(format!("{base}/api/version"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let version: Value = get_json(&format!("{base}/api/version")).await;
    assert_eq!(version, json!({"version": "0.13.5"}));
}

#[tokio::test]
async fn tags_and_show_for_every_listed_model() {
    let fake = FakeUpstream::start().await;
    fake.set_models("vllm");
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Openai;
        c.models.insert(
            "oai-vision".into(),
            diglot::config::ModelSettings {
                capabilities: Some(vec!["completion".into(), "vision".into()]),
                ..Default::default()
            },
        );
    })
    .await;
    let tags: Value = get_json(&format!("{base}/api/tags")).await;
    let models = tags["models"].as_array().unwrap();
    let first = &models[0];
    assert_eq!(first["name"], "meta-llama/Llama-3.1-8B-Instruct:latest");
    assert_eq!(first["model"], first["name"]);
    assert_eq!(
        first["details"],
        json!({"parent_model": "", "format": "gguf", "family": "", "families": [], "parameter_size": "", "quantization_level": ""})
    );
    for entry in models {
        let digest = entry["digest"].as_str().unwrap();
        assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(chrono::DateTime::parse_from_rfc3339(entry["modified_at"].as_str().unwrap()).is_ok());
        assert!(entry["size"].is_u64());
        assert!(entry["name"].as_str().unwrap().contains(':'), "Open WebUI needs a tag");
        // Zed gives up on the whole provider if one listed model fails /api/show.
        let (status, show) = post(&base, "/api/show", json!({"model": entry["name"]}))
            .await
            .status_json();
        assert_eq!(status, 200, "{entry}");
        for key in ["license", "modelfile", "parameters", "template", "modified_at"] {
            assert!(show[key].is_string(), "{key}: {show}");
        }
        let arch = show["model_info"]["general.architecture"].as_str().unwrap();
        assert!(show["model_info"][format!("{arch}.context_length")].is_u64());
    }
    let (_, show) = post(&base, "/api/show", json!({"name": "meta-llama/Llama-3.1-8B-Instruct"}))
        .await
        .status_json();
    assert_eq!(
        show["model_info"]["llama.context_length"], 131072,
        "vLLM's max_model_len"
    );
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));
    assert_eq!(show["parameters"], "num_ctx 131072");
    assert!(show["template"].as_str().unwrap().contains(".Tools"));
    let (_, show) = post(&base, "/api/show", json!({"model": "oai-vision:latest"}))
        .await
        .status_json();
    assert_eq!(
        show["capabilities"],
        json!(["completion", "vision"]),
        "the profile's card wins"
    );
    let (status, body) = post(&base, "/api/show", json!({"model": "ghost"})).await.status_json();
    assert_eq!((status, body), (404, json!({"error": "model 'ghost' not found"})));
}

#[tokio::test]
async fn tags_survive_a_dead_upstream() {
    let dead = dead_url();
    let base = diglot(&dead, |c| c.upstream.kind = diglot::config::UpstreamKind::Openai).await;
    let res = client().get(format!("{base}/api/tags")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"models": []}));
    let (status, body) = post(&base, "/api/chat", json!({"model": "m", "messages": user("x")}))
        .await
        .status_json();
    assert_eq!(status, 503, "no upstream can take it: {body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("cannot reach the upstream 'default'") && !message.contains(&dead),
        "says which (by the channel's name, not its internal URL) and why: {body}"
    );
}

#[tokio::test]
async fn streamed_chat_both_sides() {
    let (fake, base) = setup_openai().await;
    let Answer { status, headers, text: body } = post(&base, "/api/chat", json!({"model": "oai-text:latest", "messages": user("Why?"),
        "options": {"temperature": 0.3, "num_predict": 64, "top_k": 10, "num_ctx": 8192, "seed": 1, "stop": ["\n\n"]}, "keep_alive": "5m"})).await;
    assert_eq!(
        (status, headers["content-type"].to_str().unwrap()),
        (200, "application/x-ndjson"),
        "streams when stream is absent"
    );
    assert_eq!(
        fake.bodies("/v1/chat/completions"),
        vec![
            json!({"model": "oai-text", "messages": [{"role": "user", "content": "Why?"}],
                    "temperature": 0.3, "seed": 1, "stop": ["\n\n"], "max_tokens": 64, "top_k": 10,
                    "stream": true, "stream_options": {"include_usage": true}})
        ],
        ":latest stripped, options mapped, num_ctx and keep_alive dropped"
    );
    let lines = ndjson(&body);
    for line in &lines {
        check_chunk_shape(line, "oai-text:latest");
        assert_eq!(line["message"]["role"], "assistant");
        assert!(line["message"]["content"].is_string());
    }
    let (last, pieces) = lines.split_last().unwrap();
    assert_eq!(pieces.len(), 5, "one line per upstream piece");
    let text: String = pieces
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    assert!(pieces.iter().all(|l| l["done"] == false));
    check_final(last);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(
        (&last["prompt_eval_count"], &last["eval_count"]),
        (&json!(14), &json!(10))
    );
    assert!(last["eval_duration"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn whole_chat_when_stream_is_false() {
    let (fake, base) = setup_openai().await;
    let Answer {
        status,
        headers,
        text: body,
    } = post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": user("x"), "stream": false}),
    )
    .await;
    assert_eq!(
        (status, headers["content-type"].to_str().unwrap()),
        (200, "application/json; charset=utf-8")
    );
    let answer: Value = serde_json::from_str(&body).unwrap();
    check_chunk_shape(&answer, "oai-text");
    check_final(&answer);
    assert_eq!(
        answer["message"],
        json!({"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."})
    );
    // The upstream was asked whole and answered with OpenAI's own pretty-printed body,
    // served as it is.
    assert_eq!(fake.bodies("/v1/chat/completions")[0]["stream"], false);
    let raw = std::fs::read_to_string(fixture("openai/chat-whole/oai-text.json")).unwrap();
    assert!(raw.starts_with("{\n  \"id\": ") && raw.ends_with("}\n"), "{raw}");
    assert_eq!(
        (&answer["prompt_eval_count"], &answer["eval_count"]),
        (&json!(14), &json!(10))
    );
}

#[tokio::test]
async fn tool_call_fragments_become_whole_calls_one_per_line() {
    let (fake, base) = setup_openai().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                       {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]);
    let body = post(
        &base,
        "/api/chat",
        json!({"model": "vllm-tools", "messages": user("weather and time?"), "tools": tools}),
    )
    .await
    .text;
    assert_eq!(fake.bodies("/v1/chat/completions")[0]["tools"], tools);
    assert_eq!(
        fake.bodies("/v1/chat/completions")[0]["tool_choice"],
        "auto",
        "OpenAI's default, made explicit"
    );
    let lines = ndjson(&body);
    let calls: Vec<&Value> = lines.iter().filter_map(|l| l["message"].get("tool_calls")).collect();
    assert_eq!(calls.len(), 2, "one call per line: {body}");
    assert_eq!(
        calls[0][0]["function"],
        json!({"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}})
    );
    assert_eq!(
        calls[1][0]["function"],
        json!({"index": 1, "name": "get_time", "arguments": {"timezone": "UTC"}})
    );
    assert!(calls[0][0]["id"].as_str().unwrap().starts_with("chatcmpl-tool-"));
    let last = lines.last().unwrap();
    assert_eq!(last["done_reason"], "stop", "Ollama never says tool_calls");
    assert_eq!(last["prompt_eval_count"], 412);

    // The next turn: object arguments go back as strings, a result naming only its tool
    // answers the latest unanswered call of that name.
    let history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}], "thinking": null},
        {"role": "tool", "tool_name": "get_weather", "content": "21 C"}
    ]);
    post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": history, "stream": false}),
    )
    .await;
    let sent = &fake.bodies("/v1/chat/completions")[1]["messages"];
    let call_id = sent[1]["tool_calls"][0]["id"].as_str().unwrap();
    assert!(call_id.starts_with("call_"));
    assert_eq!(
        sent[1],
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    );
    assert_eq!(
        sent[2],
        json!({"role": "tool", "content": "21 C", "tool_call_id": call_id, "name": "get_weather"})
    );
}

#[tokio::test]
async fn reasoning_fields_become_thinking() {
    let (fake, base) = setup_openai().await;
    for model in ["vllm-reasoning", "vllm-reasoning-legacy", "openrouter-reasoning"] {
        let (_, answer) = post(
            &base,
            "/api/chat",
            json!({"model": model, "messages": user("hello"), "stream": false, "think": "high"}),
        )
        .await
        .status_json();
        let thinking = sse_text(&format!("chat/{model}.sse"), &["reasoning", "reasoning_content"]);
        assert!(!thinking.is_empty(), "{model}");
        assert_eq!(answer["message"]["thinking"], thinking, "{model}: {answer}");
        assert_eq!(
            answer["message"]["content"],
            sse_text(&format!("chat/{model}.sse"), &["content"]),
            "{model}: {answer}"
        );
    }
    assert!(
        fake.bodies("/v1/chat/completions")
            .iter()
            .all(|b| b["reasoning_effort"] == "high")
    );
    let body = post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": user("x"), "think": true}),
    )
    .await
    .text;
    let text: String = ndjson(&body)
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    assert!(
        fake.bodies("/v1/chat/completions")[3].get("reasoning_effort").is_none(),
        "a bare true is left to the model"
    );
    let body = post(
        &base,
        "/api/chat",
        json!({"model": "vllm-reasoning", "messages": user("hello")}),
    )
    .await
    .text;
    let lines = ndjson(&body);
    assert!(lines[0]["message"]["thinking"].is_string() && lines[0]["message"]["content"] == "");
    let streamed: String = lines.iter().filter_map(|l| l["message"]["thinking"].as_str()).collect();
    assert_eq!(streamed, sse_text("chat/vllm-reasoning.sse", &["reasoning"]));
}

#[tokio::test]
async fn think_tags_are_split_out_when_configured() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Openai;
        c.upstream.think_tags = true;
    })
    .await;
    let (status, answer) = post(
        &base,
        "/api/chat",
        json!({"model": "think-tags", "messages": user("2+2"), "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.bodies("/v1/chat/completions"),
        vec![json!({"model": "think-tags", "messages": [{"role": "user", "content": "2+2"}], "stream": false})]
    );
    assert_eq!(answer["message"]["thinking"], "Let me think");
    assert_eq!(answer["message"]["content"], "The answer is 4.");
    assert_eq!(
        (&answer["prompt_eval_count"], &answer["eval_count"]),
        (&json!(15), &json!(12))
    );
}

/// The tags arrive split across chunks (`<thi` + `nk>`, `</thi` + `nk>Th`): streamed
/// through the Ollama frontend, no piece of a tag leaks into either field.
#[tokio::test]
async fn think_tags_split_across_streamed_chunks() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Openai;
        c.upstream.think_tags = true;
    })
    .await;
    let answer = post(
        &base,
        "/api/chat",
        json!({"model": "think-tags", "messages": user("2+2")}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        fake.bodies("/v1/chat/completions"),
        vec![
            json!({"model": "think-tags", "messages": [{"role": "user", "content": "2+2"}],
                    "stream": true, "stream_options": {"include_usage": true}})
        ]
    );
    let lines = ndjson(&answer.text);
    let field = |name: &str| -> String { lines.iter().filter_map(|l| l["message"][name].as_str()).collect() };
    assert_eq!(field("thinking"), "Let me think");
    assert_eq!(field("content"), "The answer is 4.");
    assert!(
        !answer.text.contains("<thi") && !answer.text.contains("nk>"),
        "no piece of a tag: {}",
        answer.text
    );
    // The thinking comes before the content, each piece as soon as it is known.
    let first_content = lines
        .iter()
        .position(|l| !l["message"]["content"].as_str().unwrap_or_default().is_empty())
        .unwrap();
    let thinking_first: String = lines[..first_content]
        .iter()
        .filter_map(|l| l["message"]["thinking"].as_str())
        .collect();
    assert_eq!(thinking_first, "Let me think");
    assert!(
        lines[first_content..]
            .iter()
            .all(|l| l["message"].get("thinking").is_none())
    );
    let last = lines.last().unwrap();
    check_final(last);
    assert_eq!(
        (&last["prompt_eval_count"], &last["eval_count"]),
        (&json!(15), &json!(12))
    );
}

#[tokio::test]
async fn images_formats_and_token_field() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Openai;
        c.upstream.max_tokens_field = "max_completion_tokens".into();
        c.upstream.pass_options = vec![];
    })
    .await;
    let png = STANDARD.encode(RED_PNG);
    let vision = post(&base, "/api/chat", json!({"model": "oai-vision", "messages": [{"role": "user", "content": "What is this?", "images": [png]}],
        "options": {"num_predict": 5, "top_k": 3}, "format": {"type": "object", "properties": {"a": {"type": "string"}}}})).await.text;
    let json_answer = post(
        &base,
        "/api/chat",
        json!({"model": "oai-json", "messages": user("x"), "format": "json", "options": {"num_predict": -1}}),
    )
    .await
    .text;
    let bodies = fake.bodies("/v1/chat/completions");
    assert_eq!(
        bodies[0]["messages"][0]["content"],
        json!([{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}])
    );
    assert_eq!(
        bodies[0]["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})
    );
    assert_eq!(bodies[0]["max_completion_tokens"], 5);
    assert!(bodies[0].get("top_k").is_none(), "not in pass_options");
    assert_eq!(bodies[1]["response_format"], json!({"type": "json_object"}));
    assert!(bodies[1].get("max_completion_tokens").is_none(), "-1 means no limit");
    // The answers, streamed (no `stream` means a stream), are the fixtures' texts.
    let text = |body: &str| -> String {
        ndjson(body)
            .iter()
            .map(|l| l["message"]["content"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text(&vision), sse_text("chat/oai-vision.sse", &["content"]));
    assert_eq!(text(&json_answer), sse_text("chat/oai-json.sse", &["content"]));
    assert!(!text(&vision).is_empty() && !text(&json_answer).is_empty());
}

#[tokio::test]
async fn the_last_usage_counts_and_length_is_kept() {
    let (_fake, base) = setup_openai().await;
    let (_, answer) = post(
        &base,
        "/api/chat",
        json!({"model": "vllm-usage-every-chunk", "messages": user("x"), "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(
        (&answer["prompt_eval_count"], &answer["eval_count"]),
        (&json!(12), &json!(4)),
        "never the sum"
    );
    assert_eq!(answer["message"]["content"], "Hello there!");

    // Captured from llama-server: usage only on the last chunk, and a length finish.
    let body = post(
        &base,
        "/api/chat",
        json!({"model": "llamacpp-text", "messages": user("x")}),
    )
    .await
    .text;
    let lines = ndjson(&body);
    let text: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Once upon a time");
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["prompt_eval_count"], &last["eval_count"], &last["done_reason"]),
        (&json!(23), &json!(5), &json!("stop"))
    );
    // llama-server's own timings become the durations.
    assert_eq!(
        (&last["prompt_eval_duration"], &last["eval_duration"]),
        (&json!(259_825_000), &json!(152_751_000))
    );
    let (_, answer) = post(
        &base,
        "/api/generate",
        json!({"model": "llamacpp-length", "prompt": "x", "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(
        (&answer["response"], &answer["done_reason"], &answer["eval_count"]),
        (&json!("Once upon a"), &json!("length"), &json!(3))
    );
}

#[tokio::test]
async fn errors_in_ollama_shape() {
    let (_fake, base) = setup_openai().await;
    let body = post(&base, "/api/chat", json!({"model": "oai-error", "messages": user("x")}))
        .await
        .text;
    let lines = ndjson(&body);
    assert_eq!(
        lines.last().unwrap(),
        &json!({"error": "The server had an error while processing your request."})
    );
    assert!(lines.iter().all(|l| l["done"] != true), "no done after an error");
    let (status, body) = post(&base, "/api/chat", json!({"model": "ghost", "messages": user("x")}))
        .await
        .status_json();
    assert_eq!((status, body), (404, json!({"error": "model 'ghost' not found"})));
    let (status, body) = post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": [{"role": "wizard", "content": "x"}]}),
    )
    .await
    .status_json();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("wizard"));
    let (status, body) = post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": user("x"), "options": {"temperature": "hot"}}),
    )
    .await
    .status_json();
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("options.temperature"),
        "{body}"
    );
    let res = client()
        .post(format!("{base}/api/chat"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn generate_uses_chat_or_completions() {
    let (fake, base) = setup_openai().await;
    let body = post(
        &base,
        "/api/generate",
        json!({"model": "oai-text", "prompt": "Why?", "system": "Be brief."}),
    )
    .await
    .text;
    assert_eq!(
        fake.bodies("/v1/chat/completions")[0]["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}])
    );
    let lines = ndjson(&body);
    let text: String = lines.iter().map(|l| l["response"].as_str().unwrap()).collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    check_final(lines.last().unwrap());
    assert!(lines.iter().all(|l| l.get("message").is_none()));

    let (status, answer) = post(
        &base,
        "/api/generate",
        json!({"model": "llamacpp-fim", "prompt": "def add(a, b):", "suffix": "\n", "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fake.bodies("/v1/completions")[0]["suffix"], "\n");
    assert_eq!(answer["response"], "\n    return a + b", "the captured FIM text");
    assert_eq!(answer["response"], sse_text("completions/llamacpp-fim.sse", &["text"]));
    assert_eq!(
        (&answer["prompt_eval_count"], &answer["eval_count"]),
        (&json!(8), &json!(7))
    );

    let (_, load) = post(
        &base,
        "/api/generate",
        json!({"model": "oai-text", "prompt": "", "stream": false, "keep_alive": 0}),
    )
    .await
    .status_json();
    assert_eq!((&load["done"], &load["done_reason"]), (&json!(true), &json!("unload")));
    let (_, load) = post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": [], "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(load["done_reason"], "load");
    assert_eq!(
        fake.bodies("/v1/chat/completions").len(),
        1,
        "load probes never reach the upstream"
    );
}

#[tokio::test]
async fn embeddings_are_normalised() {
    let (fake, base) = setup_openai().await;
    let (_, answer) = post(
        &base,
        "/api/embed",
        json!({"model": "oai-embed", "input": ["a", "b"], "dimensions": 8}),
    )
    .await
    .status_json();
    assert_eq!(
        fake.bodies("/v1/embeddings")[0],
        json!({"model": "oai-embed", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8})
    );
    let vectors: Vec<Vec<f32>> = serde_json::from_value(answer["embeddings"].clone()).unwrap();
    assert_eq!(vectors.len(), 2);
    for v in &vectors {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    let expected = 0.5
        / (0.5f32 * 0.5
            + 0.25 * 0.25
            + 0.125 * 0.125
            + 0.75 * 0.75
            + 0.375 * 0.375
            + 0.0625 * 0.0625
            + 1.5 * 1.5
            + 0.875 * 0.875)
            .sqrt();
    assert!((vectors[0][0] - expected).abs() < 1e-6);
    assert_eq!(answer["prompt_eval_count"], 7);
    let (_, legacy) = post(&base, "/api/embeddings", json!({"model": "oai-embed", "prompt": "a"}))
        .await
        .status_json();
    assert_eq!(
        fake.bodies("/v1/embeddings")[1],
        json!({"model": "oai-embed", "input": ["a"], "encoding_format": "float"})
    );
    assert_eq!(
        legacy,
        json!({"embedding": [0.5, -0.25, 0.125, 0.75, -0.375, 0.0625, 1.5, -0.875]}),
        "the fixture's first vector, not normalised, as Ollama's legacy endpoint answers"
    );
}

#[tokio::test]
async fn ps_lists_models_in_use() {
    let (_fake, base) = setup_openai().await;
    let ps: Value = get_json(&format!("{base}/api/ps")).await;
    assert_eq!(ps, json!({"models": []}));
    post(
        &base,
        "/api/chat",
        json!({"model": "oai-text:latest", "messages": user("x"), "stream": false}),
    )
    .await;
    let ps: Value = get_json(&format!("{base}/api/ps")).await;
    let entry = &ps["models"][0];
    assert_eq!(entry["name"], "oai-text:latest");
    let expires = chrono::DateTime::parse_from_rfc3339(entry["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires > chrono::Utc::now());
    assert!(entry["size_vram"].is_u64() && entry["context_length"].is_u64());
}

#[tokio::test]
async fn pull_and_model_management() {
    let (fake, base) = setup_openai().await;
    let body = post(&base, "/api/pull", json!({"model": "oai-text:latest"})).await.text;
    assert_eq!(ndjson(&body).last().unwrap(), &json!({"status": "success"}));
    let (status, body) = post(&base, "/api/pull", json!({"model": "unknown-model"}))
        .await
        .status_json();
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("fallback_url"));
    let res = client()
        .delete(format!("{base}/api/delete"))
        .json(&json!({"model": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 501);

    // With a fallback Ollama, unknown pulls and deletes are forwarded as they are.
    let fallback = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Openai;
        c.ollama.fallback_url = Some(fallback.url());
    })
    .await;
    let Answer { status, text: body, .. } = post(&base, "/api/pull", json!({"model": "unknown-model"})).await;
    assert_eq!(status, 200);
    assert!(body.contains("pulling unknown-model"));
    let res = client()
        .delete(format!("{base}/api/delete"))
        .json(&json!({"model": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(fallback.bodies("/api/delete"), vec![json!({"model": "x"})]);
}

#[tokio::test]
async fn upstream_urls_keys_and_headers() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&format!("{}/v1/", fake.url()), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Openai;
        c.upstream.api_key = Some("sk-test-123".into());
        c.upstream.headers.insert("x-team".into(), "blue".into());
    })
    .await;
    post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": user("x"), "stream": false}),
    )
    .await;
    let request = &fake.requests("/v1/chat/completions")[0];
    assert_eq!(request.header("authorization"), Some("Bearer sk-test-123"));
    assert_eq!(request.header("x-team"), Some("blue"));
}

#[tokio::test]
async fn openai_to_openai_passes_fragments_through() {
    let (fake, base) = setup_openai().await;
    let res = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "oai-tools", "messages": user("weather?"), "stream": true, "tools": [{"type": "function", "function": {"name": "get_weather"}}], "tool_choice": "required"}))
        .send()
        .await
        .unwrap();
    let chunks = sse_chunks(&res.text().await.unwrap());
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert!(deltas.len() >= 3, "argument fragments stream as they come: {deltas:?}");
    let arguments: String = deltas
        .iter()
        .map(|d| d[0]["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    assert!(deltas[1][0].get("id").is_none());
    assert_eq!(fake.bodies("/v1/chat/completions")[0]["tool_choice"], "required");
}

#[tokio::test]
async fn ollama_to_ollama_keeps_tool_calls_and_show() {
    let (fake, base) = setup_ollama().await;
    let body = post(&base, "/api/chat", json!({"model": "chat-tools", "messages": user("weather?"), "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]})).await.text;
    let lines = ndjson(&body);
    let calls: Vec<&Value> = lines.iter().filter_map(|l| l["message"].get("tool_calls")).collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1][0],
        json!({"id": "call_6sly0bao", "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Tokyo"}}})
    );
    let last = lines.last().unwrap();
    assert_eq!(last["total_duration"], 1127097607, "the upstream's own timings");
    assert_eq!(fake.bodies("/api/chat")[0]["messages"], user("weather?"));

    let (_, show) = post(&base, "/api/show", json!({"name": "chat-thinking"}))
        .await
        .status_json();
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(fixture("ollama/show/chat-thinking.json")).unwrap()).unwrap();
    assert_eq!(show, fixture, "an Ollama upstream's /api/show passes through whole");
    assert_eq!(fake.bodies("/api/show"), vec![json!({"model": "chat-thinking"})]);

    // Model management goes to the upstream Ollama itself.
    let body = post(&base, "/api/pull", json!({"model": "brand-new"})).await.text;
    assert!(body.contains("pulling brand-new"), "{body}");
}

#[tokio::test]
async fn whole_answers_are_asked_whole_and_keep_their_durations_plausible() {
    let fake = FakeUpstream::start().await;
    fake.set_line_delay(Duration::from_millis(100));
    let base = diglot(&fake.url(), |c| c.upstream.kind = diglot::config::UpstreamKind::Openai).await;
    let (status, answer) = post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "messages": user("x"), "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    // An Ollama client's whole request goes upstream whole (wire-formats §4.3) ...
    let sent = &fake.bodies("/v1/chat/completions")[0];
    assert_eq!((&sent["stream"], sent.get("stream_options")), (&json!(false), None));
    assert_eq!(
        answer["message"]["content"],
        "The sky is blue because of Rayleigh scattering."
    );
    assert_eq!(
        (&answer["prompt_eval_count"], &answer["eval_count"]),
        (&json!(14), &json!(10))
    );
    // ... which, without llama-server's timings, cannot show when output began (the fake
    // answers after nine lines' worth of 100 ms): the wait counts as generation, so the
    // rate clients derive is a lower bound, and prompt time 0 reads as unknown.
    let duration = |field: &str| answer[field].as_u64().unwrap_or_else(|| panic!("{field}: {answer}"));
    assert_eq!(duration("prompt_eval_duration"), 0, "{answer}");
    assert!(duration("eval_duration") >= 850_000_000, "{answer}");
    assert!(duration("total_duration") >= duration("eval_duration"), "{answer}");

    // llama-server's own timings, when it sends them, give the real split.
    let (_, answer) = post(
        &base,
        "/api/chat",
        json!({"model": "llamacpp-text", "messages": user("x"), "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(fake.bodies("/v1/chat/completions")[1]["stream"], false);
    assert_eq!(
        (
            &answer["prompt_eval_count"],
            &answer["prompt_eval_duration"],
            &answer["eval_count"],
            &answer["eval_duration"]
        ),
        // `chat-whole/llamacpp-text.json`: prompt_ms 1457.078, predicted_ms 837.072.
        (&json!(23), &json!(1_457_078_000), &json!(5), &json!(837_072_000)),
        "{answer}"
    );

    // An OpenAI client's whole request goes upstream whole.
    let (status, answer) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "oai-text", "messages": user("x")}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{answer}");
    let sent = &fake.bodies("/v1/chat/completions")[2];
    assert_eq!((&sent["stream"], sent.get("stream_options")), (&json!(false), None));
    assert_eq!(answer["usage"]["prompt_tokens"], 14);
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "The sky is blue because of Rayleigh scattering."
    );
}

#[tokio::test]
async fn client_hang_up_cancels_a_whole_answer() {
    let fake = FakeUpstream::start().await;
    fake.set_line_delay(Duration::from_millis(300));
    let base = diglot(&fake.url(), |c| c.upstream.kind = diglot::config::UpstreamKind::Openai).await;
    fake.assert_giving_up_cancels_the_call(
        &format!("{base}/api/chat"),
        json!({"model": "oai-text", "messages": user("x"), "stream": false}),
    )
    .await;
}

#[tokio::test]
async fn ndjson_lines_go_out_as_the_upstream_sends_them() {
    // The upstream sends its role chunk and first piece, then waits: the client must
    // have that piece's line before the upstream sends anything more.
    let fake = FakeUpstream::start().await;
    fake.pause_streams_after(2);
    let base = diglot(&fake.url(), |c| c.upstream.kind = diglot::config::UpstreamKind::Openai).await;
    let mut res = client()
        .post(format!("{base}/api/chat"))
        .json(&json!({"model": "oai-text", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    let mut body = String::new();
    while !body.contains("The sky") {
        let chunk = tokio::time::timeout(DEADLINE, res.chunk())
            .await
            .expect("the first line arrives while the upstream waits")
            .unwrap()
            .expect("the stream goes on");
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(fake.lines_sent(), 2, "written before the upstream sent its third event");
    fake.resume_streams();
    while let Some(chunk) = res.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let text: String = ndjson(&body)
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
}
