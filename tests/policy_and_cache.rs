//! Per-model policy and the response cache, through both APIs: option defaults and forced
//! values reaching both kinds of upstream, display names in every model list, and cached
//! embeddings and chats (per token, bounded by age and size, replayed as streams,
//! skipped on `Cache-Control`, counted in metrics and usage records).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use diglot::config::{CacheConfig, Config, ModelSettings, UpstreamKind};
use diglot::store::{Role, TokenRecord};
use serde_json::{Value, json};

fn settings(value: Value) -> ModelSettings {
    serde_json::from_value(value).unwrap()
}

/// What the tests here read of an answer: its status, its cache header and its body.
struct Cached {
    status: u16,
    cache: Option<String>,
    body: String,
}

/// `POST url` with `headers` (the shared `send`, read for the cache header).
async fn post_to(url: String, body: Value, headers: &[(&str, &str)]) -> Cached {
    let mut request = client().post(url).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = send(request).await;
    Cached {
        status: answer.status,
        cache: answer.header("x-diglot-cache").map(str::to_owned),
        body: answer.text,
    }
}

/// Defaults fill what the client left out, forced values replace what it sent, for an
/// alias and a glob, whatever the frontend, to both kinds of upstream.
#[tokio::test]
async fn overrides_reach_both_kinds_of_upstream() {
    // An Ollama upstream, reached through the OpenAI API by the alias "fast".
    let ollama = FakeUpstream::start().await;
    let base = diglot(&ollama.url(), |c| {
        c.upstream.aliases = [("fast".to_owned(), "chat-text".to_owned())].into();
        c.models = [(
            "fast".to_owned(),
            settings(json!({
                "defaults": {"num_ctx": 32768, "temperature": 0.7, "keep_alive": "10m"},
                "forced": {"top_k": 40, "max_tokens": 256}
            })),
        )]
        .into();
    })
    .await;
    let messages = json!([{"role": "user", "content": "hi"}]);
    let answer = post_to(
        format!("{base}/v1/chat/completions"),
        json!({"model": "fast", "messages": messages, "temperature": 0.2, "top_k": 5, "max_tokens": 9}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = post_to(
        format!("{base}/v1/chat/completions"),
        json!({"model": "fast", "messages": messages}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = ollama.bodies("/api/chat");
    let options = |i: usize| sent[i]["options"].clone();
    assert_eq!(sent[0]["model"], "chat-text");
    // The client's temperature stays; what it left out is filled; forced values win.
    assert_eq!(options(0)["temperature"], 0.2);
    assert_eq!(options(0)["num_ctx"], 32768);
    assert_eq!(options(0)["top_k"], 40);
    assert_eq!(options(0)["num_predict"], 256);
    assert_eq!(sent[0]["keep_alive"], "10m");
    assert_eq!(options(1)["temperature"], 0.7);
    assert_eq!(options(1)["top_k"], 40);

    // An OpenAI-compatible upstream, reached through Ollama's API, by a glob.
    let openai = FakeUpstream::start().await;
    let base = diglot(&openai.url(), |c| {
        c.upstream.kind = UpstreamKind::Openai;
        c.models = [(
            "oai-*".to_owned(),
            settings(json!({
                "defaults": {"temperature": 0.7, "max_tokens": 100, "reasoning_effort": "low"},
                "forced": {"seed": 7, "top_p": 0.5}
            })),
        )]
        .into();
    })
    .await;
    let answer = post_to(
        format!("{base}/api/chat"),
        json!({"model": "oai-text", "stream": false, "messages": messages,
               "options": {"temperature": 0.2, "top_p": 0.9, "seed": 1}}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = &openai.bodies("/v1/chat/completions")[0];
    assert_eq!(sent["model"], "oai-text");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["reasoning_effort"], "low");
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["top_p"], 0.5);

    // A policy for another model leaves this one alone.
    let answer = post_to(
        format!("{base}/api/chat"),
        json!({"model": "llamacpp-text", "stream": false, "messages": messages}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = &openai.bodies("/v1/chat/completions")[1];
    assert_eq!(sent.get("seed"), None, "{sent}");
    assert_eq!(sent.get("temperature"), None, "{sent}");
}

/// A profile with an unknown option name does not load.
#[test]
fn unknown_override_options_are_configuration_errors() {
    let dir = temp_dir();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[models.\"qwen*\".defaults]\ntemprature = 0.7\n").unwrap();
    let error = Config::load(path.to_str(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("models.\"qwen*\".defaults") && error.contains("'temprature'"),
        "{error}"
    );
}

/// Display names and descriptions show in `/v1/models`, `/api/tags` and `/api/show`
/// (built from the card, or the Ollama upstream's own answer), while ids stay as sent.
#[tokio::test]
async fn display_names_in_every_model_list() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.models = [(
            "chat-text".to_owned(),
            settings(json!({"display_name": "Chat (fast)", "description": "A small model for quick answers"})),
        )]
        .into();
    })
    .await;
    let models = get_json(&format!("{base}/v1/models")).await;
    let entry = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "chat-text")
        .unwrap()
        .clone();
    assert_eq!(entry["name"], "Chat (fast)");
    assert_eq!(entry["description"], "A small model for quick answers");
    let other = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "chat-thinking")
        .unwrap()
        .clone();
    assert_eq!(other.get("name"), None, "no display name unless configured: {other}");
    assert_eq!(
        get_json(&format!("{base}/v1/models/chat-text")).await["name"],
        "Chat (fast)"
    );

    let tags = get_json(&format!("{base}/api/tags")).await;
    let entry = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "chat-text:latest")
        .unwrap()
        .clone();
    assert_eq!(
        entry["name"], "chat-text:latest",
        "the id clients send back is unchanged"
    );
    assert_eq!(entry["display_name"], "Chat (fast)");
    assert_eq!(entry["description"], "A small model for quick answers");

    let show: Value = serde_json::from_str(
        &post_to(format!("{base}/api/show"), json!({"model": "chat-text"}), &[])
            .await
            .body,
    )
    .unwrap();
    assert_eq!(show["model_info"]["general.basename"], "Chat (fast)");
    assert_eq!(
        show["model_info"]["general.description"],
        "A small model for quick answers"
    );
    // The Ollama upstream's own facts are still there.
    assert!(show["model_info"].as_object().unwrap().len() > 2, "{show}");

    // From an OpenAI-compatible upstream, /api/show is built from the card.
    let openai = FakeUpstream::start().await;
    let base = diglot(&openai.url(), |c| {
        c.upstream.kind = UpstreamKind::Openai;
        c.models = [("oai-*".to_owned(), settings(json!({"display_name": "Hosted"})))].into();
    })
    .await;
    let show: Value = serde_json::from_str(
        &post_to(format!("{base}/api/show"), json!({"model": "oai-text"}), &[])
            .await
            .body,
    )
    .unwrap();
    assert_eq!(show["model_info"]["general.basename"], "Hosted");
}

fn embed_body(inputs: &[&str]) -> Value {
    json!({"model": "embed-minilm", "input": inputs})
}

/// Embeddings are cached by default: the same batch again is served without an upstream
/// call, with the same vectors, and counted as a hit.
#[tokio::test]
async fn an_embeddings_batch_is_served_from_the_cache() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |_| {}).await;
    let first = post_to(format!("{base}/v1/embeddings"), embed_body(&["a", "b"]), &[]).await;
    assert_eq!(
        (first.status, first.cache.as_deref()),
        (200, Some("miss")),
        "{}",
        first.body
    );
    let second = post_to(format!("{base}/v1/embeddings"), embed_body(&["a", "b"]), &[]).await;
    assert_eq!((second.status, second.cache.as_deref()), (200, Some("hit")));
    let (first, second): (Value, Value) = (
        serde_json::from_str(&first.body).unwrap(),
        serde_json::from_str(&second.body).unwrap(),
    );
    assert_eq!(first["data"], second["data"]);
    assert_eq!(first["usage"], second["usage"]);
    assert_eq!(fake.calls(), 1, "the hit made no upstream call");
    // Another batch is another entry.
    let other = post_to(format!("{base}/v1/embeddings"), embed_body(&["a"]), &[]).await;
    assert_eq!(other.cache.as_deref(), Some("miss"));
    assert_eq!(fake.calls(), 2);

    let metrics = get_text(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("diglot_cache_total{kind=\"embeddings\",result=\"hit\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("diglot_cache_total{kind=\"embeddings\",result=\"miss\"} 2\n"),
        "{metrics}"
    );
}

fn chat_cache(c: &mut Config) {
    c.cache = CacheConfig {
        chat: true,
        ..Default::default()
    };
}

fn deterministic_chat(stream: bool) -> Value {
    json!({"model": "chat-text", "temperature": 0, "stream": stream,
           "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
}

/// One tenant never gets another's cached answer; hits are marked in usage records and
/// are not charged to the token's quota.
#[tokio::test]
async fn tokens_never_share_cached_answers() {
    let fake = FakeUpstream::start().await;
    let (alice, bob) = (
        "dg-alice-00000000000000000000000000000000000",
        "dg-bob-0000000000000000000000000000000000000",
    );
    let dir = temp_dir();
    let store_dir = dir.path().to_owned();
    let base = diglot(&fake.url(), move |c| {
        chat_cache(c);
        c.store.data_dir = store_dir;
        c.tokens = vec![
            TokenRecord::for_secret("alice", alice, Role::User),
            TokenRecord::for_secret("bob", bob, Role::User),
        ];
    })
    .await;
    let ask = |token: &'static str| {
        let url = format!("{base}/v1/chat/completions");
        async move {
            post_to(
                url,
                deterministic_chat(false),
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
        }
    };
    assert_eq!(ask(alice).await.cache.as_deref(), Some("miss"));
    let hit = ask(alice).await;
    assert_eq!((hit.status, hit.cache.as_deref()), (200, Some("hit")));
    assert_eq!(
        ask(bob).await.cache.as_deref(),
        Some("miss"),
        "bob does not see alice's entry"
    );
    assert_eq!(fake.calls(), 2);
    assert_eq!(ask(bob).await.cache.as_deref(), Some("hit"));

    // Random sampling is not cached (no header: the cache was not involved).
    let random = post_to(
        format!("{base}/v1/chat/completions"),
        json!({"model": "chat-text", "messages": [{"role": "user", "content": "hi"}]}),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!((random.status, random.cache), (200, None));

    let store = usage_records(dir.path(), 5).await;
    let mut rows = store.recent_usage(10).await.unwrap();
    rows.reverse();
    let hits: Vec<bool> = rows.iter().map(|r| r.cache_hit).collect();
    assert_eq!(hits, [false, true, false, true, false]);
    assert!(rows[1].completion_tokens > 0, "a hit records the answer's size");
    let used: BTreeMap<String, u64> = store.tokens_used_since(0).await.unwrap().into_iter().collect();
    let billed = |r: &diglot::store::UsageRecord| r.prompt_tokens + r.completion_tokens;
    assert_eq!(
        used[&diglot::store::secrets::digest(alice)],
        billed(&rows[0]) + billed(&rows[4]),
        "hits are not billed"
    );
}

/// A cached whole answer replays to a streaming client as a stream, with the same text.
#[tokio::test]
async fn a_cached_chat_replays_as_a_stream() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), chat_cache).await;
    let whole = post_to(format!("{base}/v1/chat/completions"), deterministic_chat(false), &[]).await;
    assert_eq!(whole.cache.as_deref(), Some("miss"));
    let whole: Value = serde_json::from_str(&whole.body).unwrap();
    let streamed = post_to(format!("{base}/v1/chat/completions"), deterministic_chat(true), &[]).await;
    assert_eq!((streamed.status, streamed.cache.as_deref()), (200, Some("hit")));
    let chunks = sse_chunks(&streamed.body);
    assert!(chunks.len() > 2, "a stream of chunks: {chunks:?}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(fake.calls(), 1);

    // The same question through Ollama's API is the same request once decoded: it is
    // answered from the same entry, as an NDJSON stream.
    let ollama = post_to(
        format!("{base}/api/chat"),
        json!({"model": "chat-text", "options": {"temperature": 0},
               "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
        &[],
    )
    .await;
    assert_eq!(ollama.cache.as_deref(), Some("hit"));
    let lines: Vec<Value> = ollama.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The answer was cached whole (one text event): one content line, then the end.
    assert!(lines.len() >= 2, "{lines:?}");
    let content: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(content, text);
    assert_eq!(lines.last().unwrap()["done"], true);
    assert_eq!(fake.calls(), 1);
}

/// `Cache-Control: no-cache` skips the cache but refreshes it; `no-store` neither reads
/// nor writes it.
#[tokio::test]
async fn cache_control_is_honoured() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), chat_cache).await;
    let url = format!("{base}/v1/chat/completions");
    let ask =
        |headers: &'static [(&'static str, &'static str)]| post_to(url.clone(), deterministic_chat(false), headers);
    assert_eq!(
        ask(&[("cache-control", "no-store")]).await.cache.as_deref(),
        Some("bypass")
    );
    assert_eq!(ask(&[]).await.cache.as_deref(), Some("miss"), "no-store stored nothing");
    assert_eq!(ask(&[]).await.cache.as_deref(), Some("hit"));
    assert_eq!(
        ask(&[("cache-control", "no-cache")]).await.cache.as_deref(),
        Some("bypass")
    );
    assert_eq!(fake.calls(), 3, "no-store and no-cache both went upstream");
    assert_eq!(ask(&[]).await.cache.as_deref(), Some("hit"));
    assert_eq!(fake.calls(), 3);
}

/// Entries expire after `ttl_secs`, and the cache never holds more than `max_bytes`: a
/// new answer evicts the least recently used one.
#[tokio::test]
async fn entries_expire_and_the_size_bound_holds() {
    let fake = FakeUpstream::start().await;
    // A lifetime long enough that the hit surely falls inside it; its end is polled for.
    let base = diglot(&fake.url(), |c| c.cache.ttl_secs = 3).await;
    let url = format!("{base}/api/embed");
    let stored = std::time::Instant::now();
    assert_eq!(
        post_to(url.clone(), embed_body(&["a"]), &[]).await.cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        post_to(url.clone(), embed_body(&["a"]), &[]).await.cache.as_deref(),
        Some("hit")
    );
    eventually_async("the entry to expire", || {
        let url = url.clone();
        async move { post_to(url, embed_body(&["a"]), &[]).await.cache.as_deref() == Some("miss") }
    })
    .await;
    assert!(
        stored.elapsed() >= Duration::from_secs(3),
        "expired after {:?}",
        stored.elapsed()
    );

    // One answer of one 8-dimension vector weighs 64 + 24 + 4 × 8 = 120 bytes: one fits
    // in 200, two do not.
    let base = diglot(&fake.url(), |c| c.cache.max_bytes = 200).await;
    let url = format!("{base}/api/embed");
    let status = |inputs: &'static [&'static str]| {
        let url = url.clone();
        async move { post_to(url, embed_body(inputs), &[]).await.cache.unwrap() }
    };
    assert_eq!(status(&["a"]).await, "miss");
    assert_eq!(status(&["a"]).await, "hit");
    assert_eq!(status(&["b"]).await, "miss");
    assert_eq!(status(&["b"]).await, "hit");
    assert_eq!(status(&["a"]).await, "miss", "a was evicted to make room for b");
    // An answer bigger than the whole cache is not kept.
    assert_eq!(status(&["a", "b", "c"]).await, "miss");
    assert_eq!(status(&["a", "b", "c"]).await, "miss");
}

/// Model lists and an Ollama upstream's `/api/show` answers are cached for
/// `models_cache_secs`: clients that poll them do not reach the upstream each time.
#[tokio::test]
async fn model_lists_and_show_answers_are_cached_briefly() {
    let fake = FakeUpstream::start().await;
    // Cached long enough that the rounds below surely fall inside; the end is polled for.
    let base = diglot(&fake.url(), |c| c.upstream.models_cache_secs = 3).await;
    let listed = std::time::Instant::now();
    for _ in 0..3 {
        get_json(&format!("{base}/api/tags")).await;
        get_json(&format!("{base}/v1/models")).await;
        let show = post_to(format!("{base}/api/show"), json!({"model": "chat-text"}), &[]).await;
        assert_eq!(show.status, 200);
    }
    assert_eq!(fake.requests("/api/tags").len(), 1);
    assert_eq!(fake.requests("/api/show").len(), 1);
    // Fetched again once stale.
    eventually_async("the list to be fetched again", || async {
        get_json(&format!("{base}/api/tags")).await;
        fake.requests("/api/tags").len() == 2
    })
    .await;
    assert!(
        listed.elapsed() >= Duration::from_secs(3),
        "stale after {:?}",
        listed.elapsed()
    );
}
