//! Channels: several fake upstreams behind one diglot, and what routing does with them —
//! weights, priorities, failover, key rotation, circuit breaking, limits, `/health`,
//! aliases.

mod common;

use std::time::Duration;

use common::*;
use diglot::config::{RoutingConfig, UpstreamConfig, UpstreamKind};
use serde_json::{Value, json};

const OLLAMA: UpstreamKind = UpstreamKind::Ollama;
const OPENAI: UpstreamKind = UpstreamKind::Openai;

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
}

fn streamed(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why?"}], "stream": true})
}

/// Routing with no waiting between attempts, and no background checks unless a test
/// sets an interval.
fn quick(routing: RoutingConfig) -> impl FnOnce(&mut diglot::config::Config) {
    let default_interval = RoutingConfig::default().check_interval_secs;
    move |c| {
        c.routing = RoutingConfig {
            backoff_base_ms: 1,
            backoff_max_ms: 5,
            check_interval_secs: if routing.check_interval_secs == default_interval {
                0.0
            } else {
                routing.check_interval_secs
            },
            ..routing
        }
    }
}

/// Channel "a" in front of `a` as the first choice, "b" in front of `b` as the backup.
fn primary_and_backup(a: &FakeUpstream, b: &FakeUpstream) -> Vec<UpstreamConfig> {
    vec![
        UpstreamConfig {
            priority: 1,
            ..channel("a", a, OLLAMA)
        },
        channel("b", b, OLLAMA),
    ]
}

async fn health(base: &str) -> (u16, Value) {
    let res = client().get(format!("{base}/health")).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn state<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn weights_share_a_tier_and_priority_tiers_fail_over() {
    let (a, b, c) = (
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    );
    let base = diglot_channels(
        vec![
            UpstreamConfig {
                weight: 1,
                priority: 5,
                ..channel("a", &a, OLLAMA)
            },
            UpstreamConfig {
                weight: 3,
                priority: 5,
                ..channel("b", &b, OLLAMA)
            },
            UpstreamConfig {
                priority: 0,
                ..channel("backup", &c, OLLAMA)
            },
        ],
        quick(RoutingConfig {
            seed: Some(42),
            ..Default::default()
        }),
    )
    .await;
    for _ in 0..400 {
        let status = post(&base, "/v1/chat/completions", chat("chat-text")).await.status;
        assert_eq!(status, 200);
    }
    let (na, nb) = (a.calls() as f64, b.calls() as f64);
    assert_eq!(na + nb, 400.0);
    assert_eq!(c.calls(), 0, "the lower tier waits while the top tier is healthy");
    // Expected 100 : 300; a binomial(400, 1/4) stays within ±30 with p > 0.999.
    assert!((na - 100.0).abs() <= 30.0, "weights 1:3 gave {na}:{nb}");

    // Both top channels fail: the lower tier answers, each failed channel tried once.
    a.fail_next(100, 503, None);
    b.fail_next(100, 500, None);
    let (status, answer) = post(&base, "/v1/chat/completions", chat("chat-text"))
        .await
        .status_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "chat-text");
    assert_eq!((a.calls(), b.calls(), c.calls()), (na as usize + 1, nb as usize + 1, 1));
}

#[tokio::test]
async fn a_failed_channel_is_never_tried_twice_and_the_last_error_is_answered() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.fail_next(100, 500, None);
    b.fail_next(100, 502, None);
    let base = diglot_channels(
        vec![channel("a", &a, OLLAMA), channel("b", &b, OLLAMA)],
        quick(RoutingConfig {
            max_retries: 5,
            min_requests: 100,
            ..Default::default()
        }),
    )
    .await;
    let (status, body) = post(&base, "/v1/chat/completions", chat("chat-text"))
        .await
        .status_json();
    assert_eq!(
        (a.calls(), b.calls()),
        (1, 1),
        "five retries allowed, but only two channels"
    );
    assert_eq!(status, 502);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("injected failure"),
        "{body}"
    );

    // A connect error is a channel failure too.
    let dead = UpstreamConfig {
        url: dead_url(),
        priority: 1,
        ..channel("dead", &a, OLLAMA)
    };
    a.fail_next(0, 500, None);
    let base = diglot_channels(vec![dead, channel("a", &a, OLLAMA)], quick(RoutingConfig::default())).await;
    let status = post(
        &base,
        "/api/chat",
        json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}], "stream": false}),
    )
    .await
    .status;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_errors_are_answered_without_retry() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.fail_next(1, 400, None);
    let base = diglot_channels(primary_and_backup(&a, &b), quick(RoutingConfig::default())).await;
    let (status, body) = post(&base, "/v1/chat/completions", chat("chat-text"))
        .await
        .status_json();
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    assert_eq!(
        (a.calls(), b.calls()),
        (1, 0),
        "400 is the request's fault: no other channel tried"
    );
    let (status, body) = post(
        &base,
        "/api/chat",
        json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}], "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.calls(), 2, "and the channel stays in service");
}

/// A model the upstream does not have (404) and a request it cannot process (422) are
/// the request's fault, through the router too: answered at once, no other channel tried.
#[tokio::test]
async fn not_found_and_unprocessable_are_answered_without_retry() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let base = diglot_channels(primary_and_backup(&a, &b), quick(RoutingConfig::default())).await;
    a.fail_next(1, 404, None);
    let (status, body) = post(&base, "/v1/chat/completions", chat("chat-text"))
        .await
        .status_json();
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["error"],
        json!({"message": "injected failure 404", "type": "invalid_request_error", "param": "model", "code": "model_not_found"})
    );
    assert_eq!((a.calls(), b.calls()), (1, 0));
    a.fail_next(1, 422, None);
    let (status, body) = post(
        &base,
        "/api/chat",
        json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}], "stream": false}),
    )
    .await
    .status_json();
    assert_eq!((status, body), (400, json!({"error": "injected failure 422"})));
    assert_eq!((a.calls(), b.calls()), (2, 0), "no other channel tried");
    assert_eq!(state(&health(&base).await.1, "a")["state"], "healthy");
}

/// `max_retries` caps the attempts (1 + retries), however many channels could still
/// take the request.
#[tokio::test]
async fn max_retries_caps_the_attempts() {
    let fakes = [
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    ];
    for fake in &fakes {
        fake.fail_next(100, 503, None);
    }
    let channels: Vec<UpstreamConfig> = fakes
        .iter()
        .enumerate()
        .map(|(i, fake)| channel(&format!("c{i}"), fake, OLLAMA))
        .collect();
    let calls = |fakes: &[FakeUpstream; 4]| fakes.iter().map(FakeUpstream::calls).sum::<usize>();
    for (retries, attempts) in [(0, 1), (1, 2), (2, 3)] {
        let before = calls(&fakes);
        let base = diglot_channels(
            channels.clone(),
            quick(RoutingConfig {
                max_retries: retries,
                min_requests: 100,
                ..Default::default()
            }),
        )
        .await;
        let (status, body) = post(&base, "/v1/chat/completions", chat("chat-text"))
            .await
            .status_json();
        assert_eq!(status, 502, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("injected failure 503"),
            "{body}"
        );
        assert_eq!(calls(&fakes) - before, attempts, "max_retries {retries}");
        assert!(
            fakes.iter().all(|f| f.calls() <= 3),
            "no channel tried twice for one request"
        );
    }
}

/// The authorization header of each call `fake` received, in order.
fn keys_used(fake: &FakeUpstream) -> Vec<String> {
    fake.requests("/v1/chat/completions")
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect()
}

/// Sends whole chats until one uses `key`, and returns when that was.
async fn until_key_is_used(base: &str, fake: &FakeUpstream, key: &str) -> std::time::Instant {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let before = keys_used(fake).len();
        assert_eq!(post(base, "/v1/chat/completions", chat("oai-text")).await.status, 200);
        if keys_used(fake)[before..].iter().any(|k| k == key) {
            return std::time::Instant::now();
        }
        assert!(std::time::Instant::now() < deadline, "{key} was never used again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A refused key is left out for `bad_key_secs`, a throttled one for its `Retry-After`;
/// then it is used again.
#[tokio::test]
async fn a_benched_key_comes_back_when_its_bench_ends() {
    let a = FakeUpstream::start().await;
    a.reject_key("sk-1");
    let base = diglot_channels(
        vec![UpstreamConfig {
            keys: vec!["sk-1".into(), "sk-2".into()],
            ..channel("a", &a, OPENAI)
        }],
        quick(RoutingConfig {
            bad_key_secs: 2.0,
            ..Default::default()
        }),
    )
    .await;
    // Before the request: the bench starts during it, so it ends no earlier than 2 s after this.
    let benched = std::time::Instant::now();
    assert_eq!(post(&base, "/v1/chat/completions", chat("oai-text")).await.status, 200);
    assert_eq!(keys_used(&a), ["Bearer sk-1", "Bearer sk-2"]);
    // The key is good again upstream; diglot only learns it when the bench ends.
    a.reject_key("nobody");
    let back = until_key_is_used(&base, &a, "Bearer sk-1").await;
    assert!(
        back - benched >= Duration::from_secs(2),
        "sk-1 came back after {:?}, before its 2 s bench ended",
        back - benched
    );

    // Throttled with Retry-After: 2, then used again once that has passed.
    let a = FakeUpstream::start().await;
    let base = diglot_channels(
        vec![UpstreamConfig {
            keys: vec!["sk-1".into(), "sk-2".into()],
            ..channel("a", &a, OPENAI)
        }],
        quick(RoutingConfig::default()),
    )
    .await;
    a.fail_next(1, 429, Some(2));
    let benched = std::time::Instant::now();
    assert_eq!(post(&base, "/v1/chat/completions", chat("oai-text")).await.status, 200);
    assert_eq!(keys_used(&a), ["Bearer sk-1", "Bearer sk-2"]);
    let back = until_key_is_used(&base, &a, "Bearer sk-1").await;
    assert!(
        back - benched >= Duration::from_secs(2),
        "sk-1 came back after {:?}, before its Retry-After",
        back - benched
    );
}

/// A name missing from the catalog makes one fresh look at the upstreams' lists, at most
/// once a second however many requests ask for unknown names.
#[tokio::test]
async fn an_unknown_name_refreshes_the_catalog_at_most_once_a_second() {
    let a = FakeUpstream::start().await;
    let base = diglot_channels(
        vec![UpstreamConfig {
            models: vec!["*".into()],
            ..channel("a", &a, OLLAMA)
        }],
        quick(RoutingConfig::default()),
    )
    .await;
    let listings = || a.requests("/api/tags").len();
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let (status, _) = post(&base, "/v1/chat/completions", chat("ghost")).await.status_json();
        assert_eq!(status, 404);
    }
    let took = started.elapsed();
    // The first list, then one fresh look per second begun (the first miss makes one).
    let allowed = 2 + took.as_secs() as usize;
    assert!(
        (2..=allowed).contains(&listings()),
        "{} lists for 10 misses in {took:?}",
        listings()
    );
    assert_eq!(a.calls(), 0, "unknown names never reach the upstream");
    // A second later, a miss looks again.
    let before = listings();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post(&base, "/v1/chat/completions", chat("ghost")).await.status, 404);
    assert_eq!(listings(), before + 1);
}

#[tokio::test]
async fn a_refused_key_is_benched_and_the_next_key_used() {
    let a = FakeUpstream::start().await;
    a.reject_key("sk-revoked");
    let base = diglot_channels(
        vec![UpstreamConfig {
            keys: vec!["sk-revoked".into(), "sk-good".into()],
            ..channel("a", &a, OPENAI)
        }],
        quick(RoutingConfig::default()),
    )
    .await;
    for _ in 0..3 {
        let (status, body) = post(
            &base,
            "/api/chat",
            json!({"model": "oai-text", "messages": [{"role": "user", "content": "Why?"}], "stream": false}),
        )
        .await
        .status_json();
        assert_eq!(status, 200, "{body}");
    }
    let keys: Vec<String> = a
        .requests("/v1/chat/completions")
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "Bearer sk-revoked",
            "Bearer sk-good",
            "Bearer sk-good",
            "Bearer sk-good"
        ],
        "rotation starts at the first key; once refused it is left out"
    );
}

#[tokio::test]
async fn rate_limited_keys_rotate_and_retry_after_reaches_the_client() {
    let a = FakeUpstream::start().await;
    let base = diglot_channels(
        vec![UpstreamConfig {
            keys: vec!["sk-1".into(), "sk-2".into()],
            ..channel("a", &a, OPENAI)
        }],
        quick(RoutingConfig::default()),
    )
    .await;
    a.fail_next(1, 429, Some(30));
    let status = post(&base, "/v1/chat/completions", chat("oai-text")).await.status;
    assert_eq!(status, 200, "the other key answered");
    // Both keys throttled: the client gets 429 and the upstream's Retry-After.
    a.fail_next(2, 429, Some(7));
    let answer = post(&base, "/v1/chat/completions", chat("oai-text")).await;
    let (status, retry_after, body) = (answer.status, answer.header("retry-after"), answer.json());
    assert_eq!(
        (status, retry_after, body["error"]["type"].as_str()),
        (429, Some("7"), Some("rate_limit_error")),
        "{body}"
    );
}

#[tokio::test]
async fn streams_fail_over_before_the_first_byte_and_never_after() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let base = diglot_channels(
        primary_and_backup(&a, &b),
        quick(RoutingConfig {
            min_requests: 100,
            ..Default::default()
        }),
    )
    .await;
    a.fail_next(1, 503, None);
    let res = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&streamed("chat-text"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let chunks = sse_chunks(&res.text().await.unwrap());
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    assert_eq!((a.calls(), b.calls()), (1, 1));

    // The upstream fails after content went out: the stream ends with an error event,
    // in the client's protocol; nothing is sent twice.
    let res = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&streamed("chat-error"))
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    let data = sse_data(&body);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("unexpected EOF"),
        "{body}"
    );
    assert!(body.contains("The answer"), "{body}");
    assert_eq!((a.calls(), b.calls()), (2, 1), "no failover after the first byte");

    // An upstream silent past the idle timeout before its first line: failover.
    let slow = FakeUpstream::start().await;
    slow.pause_streams_after(0);
    let base = diglot_channels(
        vec![
            UpstreamConfig {
                priority: 1,
                idle_timeout_secs: 0.2,
                ..channel("slow", &slow, OLLAMA)
            },
            channel("b", &b, OLLAMA),
        ],
        quick(RoutingConfig::default()),
    )
    .await;
    let res = client()
        .post(format!("{base}/api/chat"))
        .json(&json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Rayleigh"));
    assert_eq!((slow.calls(), b.calls()), (1, 2));
}

/// Waits until channel `name`'s circuit is in `wanted` state.
async fn circuit(base: &str, name: &str, wanted: &str) {
    eventually_async(&format!("{name} to be {wanted}"), || async move {
        state(&health(base).await.1, name)["state"] == wanted
    })
    .await;
}

/// The state of `model`'s circuit on channel `name` ("healthy" when it is not tracked:
/// no failure lately).
fn model_state(health: &Value, name: &str, model: &str) -> String {
    state(health, name)["models"][model]["state"]
        .as_str()
        .unwrap_or("healthy")
        .to_owned()
}

/// Waits until `model`'s circuit on channel `name` is in `wanted` state.
async fn model_circuit(base: &str, name: &str, model: &str, wanted: &str) {
    eventually_async(&format!("{model} on {name} to be {wanted}"), || async move {
        model_state(&health(base).await.1, name, model) == wanted
    })
    .await;
}

#[tokio::test]
async fn a_models_circuit_opens_half_opens_and_closes_and_its_channel_serves_the_rest() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    // A cooldown long enough for every check that must fall inside it, however slow
    // the machine; its end is waited for by polling /health.
    let base = diglot_channels(
        primary_and_backup(&a, &b),
        quick(RoutingConfig {
            min_requests: 2,
            failure_ratio: 0.8,
            cooldown_secs: 3.0,
            ..Default::default()
        }),
    )
    .await;
    // Ollama answers 500 for a model it cannot load; its other models still work.
    a.fail_model("chat-text", Some(500));
    for _ in 0..2 {
        assert_eq!(post(&base, "/v1/chat/completions", chat("chat-text")).await.status, 200);
    }
    assert_eq!(a.calls(), 2);
    let (status, report) = health(&base).await;
    assert_eq!(status, 200);
    assert_eq!(model_state(&report, "a", "chat-text"), "open");
    assert_eq!(state(&report, "a")["state"], "healthy", "the channel stays in service");
    assert!(
        state(&report, "a")["models"]["chat-text"]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected failure 500")
    );
    assert_eq!(state(&report, "b")["state"], "healthy");
    for _ in 0..3 {
        assert_eq!(post(&base, "/v1/chat/completions", chat("chat-text")).await.status, 200);
    }
    assert_eq!(a.calls(), 2, "an open circuit takes no requests for its model");
    // Another model still goes to the first choice.
    assert_eq!(post(&base, "/v1/chat/completions", chat("chat-json")).await.status, 200);
    assert_eq!(a.calls(), 3, "the channel serves its other models");

    // After the cooldown one probe goes through; it fails, so the circuit opens again.
    model_circuit(&base, "a", "chat-text", "half_open").await;
    assert_eq!(post(&base, "/v1/chat/completions", chat("chat-text")).await.status, 200);
    assert_eq!(a.calls(), 4, "one probe");
    assert_eq!(model_state(&health(&base).await.1, "a", "chat-text"), "open");

    // The model recovers: the next probe closes the circuit.
    a.fail_model("chat-text", None);
    model_circuit(&base, "a", "chat-text", "half_open").await;
    assert_eq!(post(&base, "/v1/chat/completions", chat("chat-text")).await.status, 200);
    assert_eq!(a.calls(), 5);
    assert_eq!(model_state(&health(&base).await.1, "a", "chat-text"), "healthy");
    let b_before = b.calls();
    assert_eq!(post(&base, "/v1/chat/completions", chat("chat-text")).await.status, 200);
    assert_eq!(
        (a.calls(), b.calls()),
        (6, b_before),
        "back in service as the first choice"
    );
}

#[tokio::test]
async fn five_hundreds_on_every_model_open_the_channels_circuit() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let base = diglot_channels(
        primary_and_backup(&a, &b),
        quick(RoutingConfig {
            min_requests: 2,
            failure_ratio: 0.8,
            cooldown_secs: 600.0,
            ..Default::default()
        }),
    )
    .await;
    a.fail_next(1000, 500, None);
    for model in ["chat-text", "chat-json"] {
        for _ in 0..2 {
            assert_eq!(post(&base, "/v1/chat/completions", chat(model)).await.status, 200);
        }
    }
    assert_eq!(a.calls(), 4);
    let report = health(&base).await.1;
    assert_eq!(state(&report, "a")["state"], "open", "{report}");
    assert_eq!(state(&report, "a")["usable"], false);
    // Even a model never asked for goes to the backup now.
    assert_eq!(
        post(&base, "/v1/chat/completions", chat("chat-tools")).await.status,
        200
    );
    assert_eq!(a.calls(), 4);
}

#[tokio::test]
async fn health_reports_states_and_503_when_nothing_is_usable() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let base = diglot_channels(
        primary_and_backup(&a, &b),
        quick(RoutingConfig {
            check_interval_secs: 0.1,
            ..Default::default()
        }),
    )
    .await;
    eventually_async("a first check", || async {
        state(&health(&base).await.1, "a")["last_check"]["took_ms"].is_number()
    })
    .await;
    let (status, report) = health(&base).await;
    assert_eq!(status, 200);
    assert_eq!(report["status"], "ok");
    let a_report = state(&report, "a");
    assert_eq!(
        (a_report["state"].as_str(), a_report["kind"].as_str()),
        (Some("healthy"), Some("ollama"))
    );
    assert!(a_report["last_check"]["took_ms"].as_f64().is_some(), "{report}");
    assert!(!a.requests("/api/tags").is_empty(), "the active check lists models");

    // The first channel's check fails: it is down, the other serves.
    a.fail_listing(Some(500));
    circuit(&base, "a", "down").await;
    let (status, report) = health(&base).await;
    assert_eq!((status, &state(&report, "a")["state"]), (200, &json!("down")));
    let ask = json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}]});
    assert_eq!(post(&base, "/api/chat", ask.clone()).await.status, 200);
    assert_eq!((a.calls(), b.calls()), (0, 1));

    // Both down: /health says 503 and so do requests, with a Retry-After.
    b.fail_listing(Some(503));
    circuit(&base, "b", "down").await;
    let (status, report) = health(&base).await;
    assert_eq!((status, &report["status"]), (503, &json!("unavailable")));
    let answer = post(&base, "/api/chat", ask).await;
    let (status, retry_after, body) = (answer.status, answer.header("retry-after"), answer.json());
    assert_eq!(status, 503);
    assert!(retry_after.is_some());
    assert!(
        body["error"].as_str().unwrap().contains("no healthy upstream"),
        "{body}"
    );
    assert_eq!((a.calls(), b.calls()), (0, 1), "never a completion as a health check");

    a.fail_listing(None);
    // Back once a check succeeds.
    eventually_async("/health to answer 200", || async { health(&base).await.0 == 200 }).await;
    assert_eq!(state(&health(&base).await.1, "a")["state"], "healthy");

    // One channel: nothing to fail over to, so no checks run.
    let lone = FakeUpstream::start().await;
    let _base = diglot_channels(
        vec![channel("lone", &lone, OLLAMA)],
        quick(RoutingConfig {
            check_interval_secs: 0.05,
            ..Default::default()
        }),
    )
    .await;
    // Twenty intervals, in which a check would have run twenty times.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(lone.requests("/api/tags").is_empty());
}

/// Starts a chat at `base` in the background, and waits until `fake` holds it.
async fn held_chat(base: &str, fake: &FakeUpstream) -> tokio::task::JoinHandle<u16> {
    let calls = fake.calls();
    let base = base.to_owned();
    let first = tokio::spawn(async move { post(&base, "/v1/chat/completions", chat("chat-text")).await.status });
    fake.wait_for_calls(calls + 1).await;
    first
}

#[tokio::test]
async fn concurrency_limits_overflow_queue_and_free_on_hang_up() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let limited = UpstreamConfig {
        priority: 1,
        max_concurrency: 1,
        ..channel("a", &a, OLLAMA)
    };
    // Each time, the first request is held at the upstream (its slot taken) until the
    // second has been answered.
    // No queue, no other channel: the second concurrent request gets 429 at once.
    let base = diglot_channels(
        vec![limited.clone()],
        quick(RoutingConfig {
            queue_timeout_secs: 0.0,
            ..Default::default()
        }),
    )
    .await;
    a.hold();
    let first = held_chat(&base, &a).await;
    let answer = post(
        &base,
        "/api/chat",
        json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}]}),
    )
    .await;
    let (status, retry_after, body) = (answer.status, answer.header("retry-after"), answer.json());
    assert_eq!((status, retry_after), (429, Some("1")), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("concurrency limit"),
        "Ollama's shape: {body}"
    );
    a.release();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(a.calls(), 1);

    // With a lower tier, the overflow goes there instead.
    let base = diglot_channels(
        vec![limited.clone(), channel("b", &b, OLLAMA)],
        quick(RoutingConfig::default()),
    )
    .await;
    a.hold();
    let first = held_chat(&base, &a).await;
    assert_eq!(post(&base, "/v1/chat/completions", chat("chat-text")).await.status, 200);
    assert_eq!(b.calls(), 1, "overflow");
    a.release();
    assert_eq!(first.await.unwrap(), 200);

    // With a queue, the second waits for the first and then runs on the same channel.
    let base = diglot_channels(vec![limited.clone()], quick(RoutingConfig::default())).await;
    let calls = a.calls();
    a.hold();
    let first = held_chat(&base, &a).await;
    let second = tokio::spawn({
        let base = base.clone();
        async move { post(&base, "/v1/chat/completions", chat("chat-text")).await.status }
    });
    a.release();
    assert_eq!(second.await.unwrap(), 200);
    assert_eq!((first.await.unwrap(), a.calls()), (200, calls + 2));

    // A client that hangs up mid-stream cancels the upstream call and frees the slot.
    let slow = FakeUpstream::start().await;
    slow.pause_streams_after(1);
    let base = diglot_channels(
        vec![UpstreamConfig {
            max_concurrency: 1,
            ..channel("slow", &slow, OLLAMA)
        }],
        quick(RoutingConfig {
            queue_timeout_secs: 0.0,
            ..Default::default()
        }),
    )
    .await;
    let mut res = client()
        .post(format!("{base}/api/chat"))
        .json(&json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}]}))
        .send()
        .await
        .unwrap();
    assert!(res.chunk().await.unwrap().is_some(), "the stream began");
    drop(res);
    // The upstream saw the connection close.
    slow.wait_for_cancel().await;
    assert_eq!(slow.completed_streams(), 0);
    slow.resume_streams();
    let (status, body) = post(
        &base,
        "/api/chat",
        json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why?"}], "stream": false}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "the slot was freed: {body}");
}

/// `max_queue` bounds the waiting line: past it, 429 at once; within it, a request
/// waits `queue_timeout_secs` and then gets 429 if no slot came free.
#[tokio::test]
async fn a_full_queue_and_a_queue_timeout_answer_429() {
    let a = FakeUpstream::start().await;
    let limited = UpstreamConfig {
        max_concurrency: 1,
        ..channel("a", &a, OLLAMA)
    };
    // A queue of none, with a long wait: nobody may wait, so the answer comes at once.
    let base = diglot_channels(
        vec![limited.clone()],
        quick(RoutingConfig {
            queue_timeout_secs: 3600.0,
            max_queue: 0,
            ..Default::default()
        }),
    )
    .await;
    a.hold();
    let first = held_chat(&base, &a).await;
    let answer = post(&base, "/v1/chat/completions", chat("chat-text")).await;
    assert_eq!(
        (answer.status, answer.header("retry-after")),
        (429, Some("1")),
        "{}",
        answer.text
    );
    assert_eq!(answer.json()["error"]["type"], "rate_limit_error");
    a.release();
    assert_eq!(first.await.unwrap(), 200);

    // A queue of one with a short wait: the waiting request gives up after it.
    let base = diglot_channels(
        vec![limited],
        quick(RoutingConfig {
            queue_timeout_secs: 0.3,
            max_queue: 1,
            ..Default::default()
        }),
    )
    .await;
    a.hold();
    let first = held_chat(&base, &a).await;
    let answer = post(&base, "/v1/chat/completions", chat("chat-text")).await;
    assert_eq!(
        (answer.status, answer.header("retry-after")),
        (429, Some("1")),
        "{}",
        answer.text
    );
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrency limit"),
        "{}",
        answer.text
    );
    assert_eq!(a.calls(), 2, "the one that waited never reached the upstream");
    a.release();
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn aliases_route_to_each_channels_model_and_answers_keep_the_clients_name() {
    let (ollama, openai) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let base = diglot_channels(
        vec![
            UpstreamConfig {
                priority: 1,
                models: vec![],
                aliases: [("gpt-4o".to_owned(), "chat-text".to_owned())].into(),
                ..channel("gpu", &ollama, OLLAMA)
            },
            UpstreamConfig {
                models: vec!["oai-*".into()],
                aliases: [("gpt-4o".to_owned(), "oai-text".to_owned())].into(),
                ..channel("cloud", &openai, OPENAI)
            },
        ],
        quick(RoutingConfig::default()),
    )
    .await;
    let (status, answer) = post(&base, "/v1/chat/completions", chat("gpt-4o")).await.status_json();
    assert_eq!((status, answer["model"].as_str()), (200, Some("gpt-4o")));
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "The sky is blue because of Rayleigh scattering."
    );
    assert_eq!(
        ollama.bodies("/api/chat")[0],
        json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false})
    );

    // The same alias on the other channel when the first fails, streamed, Ollama side.
    ollama.fail_next(1, 500, None);
    let res = client()
        .post(format!("{base}/api/chat"))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Why?"}]}))
        .send()
        .await
        .unwrap();
    let lines: Vec<Value> = res
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l["model"] == "gpt-4o"), "{lines:?}");
    let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    assert_eq!(lines.last().unwrap()["done"], true, "{lines:?}");
    assert_eq!(
        openai.bodies("/v1/chat/completions"),
        vec![
            json!({"model": "oai-text", "messages": [{"role": "user", "content": "Why?"}],
                    "stream": true, "stream_options": {"include_usage": true}})
        ]
    );

    // The catalog: the alias once, the glob's matches from the OpenAI list, nothing else.
    let models: Value = get_json(&format!("{base}/v1/models")).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.iter().filter(|id| **id == "gpt-4o").count(), 1, "{ids:?}");
    assert!(
        ids.contains(&"oai-text") && ids.iter().all(|id| *id == "gpt-4o" || id.starts_with("oai-")),
        "{ids:?}"
    );
    let tags: Value = get_json(&format!("{base}/api/tags")).await;
    assert!(
        tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "gpt-4o:latest"),
        "{tags}"
    );
    // chat-text is only reachable through its alias.
    let status = post(&base, "/v1/chat/completions", chat("chat-text")).await.status;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn embeddings_fail_over_too() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.fail_next(1, 503, None);
    let base = diglot_channels(primary_and_backup(&a, &b), quick(RoutingConfig::default())).await;
    let (status, body) = post(
        &base,
        "/v1/embeddings",
        json!({"model": "embed-minilm", "input": ["a", "b"]}),
    )
    .await
    .status_json();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!((a.calls(), b.calls()), (1, 1));
}

#[tokio::test]
async fn per_key_limits_spread_requests_over_keys() {
    let a = FakeUpstream::start().await;
    let base = diglot_channels(
        vec![UpstreamConfig {
            keys: vec!["sk-1".into(), "sk-2".into()],
            max_concurrency_per_key: 1,
            ..channel("a", &a, OPENAI)
        }],
        quick(RoutingConfig {
            queue_timeout_secs: 0.0,
            ..Default::default()
        }),
    )
    .await;
    // Two requests held at the upstream, one per key, until the third is answered.
    a.hold();
    let running: Vec<_> = (0..2)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { post(&base, "/v1/chat/completions", streamed("oai-text")).await.status })
        })
        .collect();
    a.wait_for_calls(2).await;
    let (status, body) = post(&base, "/v1/chat/completions", chat("oai-text"))
        .await
        .status_json();
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (429, Some("rate_limit_error"))
    );
    a.release();
    for r in running {
        assert_eq!(r.await.unwrap(), 200);
    }
    let mut keys: Vec<String> = a
        .requests("/v1/chat/completions")
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["Bearer sk-1", "Bearer sk-2"], "one request per key at a time");
}
