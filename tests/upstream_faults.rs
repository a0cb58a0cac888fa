//! Upstreams that misbehave, and what clients see: every fault is answered in the
//! client's own protocol (a status before the first byte, a final error event after it)
//! within the configured timeouts, the upstream connection diglot gave up on is closed,
//! and diglot's memory stays bounded. Both frontends, both backends (Ollama's NDJSON and
//! an OpenAI-compatible server's SSE), streamed and whole answers.

mod common;

use std::time::Duration;

use common::*;
use diglot::config::{RoutingConfig, UpstreamKind};
use serde_json::{Value, json};

/// The timeouts the faulty channels get, so hangs end quickly.
const TIMEOUT_SECS: f64 = 1.0;
/// The frame limit the faulty channels get, so an endless line ends quickly.
const MAX_LINE: usize = 1024 * 1024;
/// Longest a client waits for any answer here: the timeouts plus a loaded machine.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Frontend {
    OpenAi,
    Ollama,
}

/// A chat request in `frontend`'s protocol for `model`.
fn request(frontend: Frontend, model: &str, stream: bool) -> (&'static str, Value) {
    let messages = user("Why is the sky blue?");
    match frontend {
        Frontend::OpenAi => (
            "/v1/chat/completions",
            json!({"model": model, "messages": messages, "stream": stream}),
        ),
        Frontend::Ollama => (
            "/api/chat",
            json!({"model": model, "messages": messages, "stream": stream}),
        ),
    }
}

/// What a client got: the status, and the error message in its protocol's shape (for a
/// stream, from its last event), if any.
async fn ask(base: &str, frontend: Frontend, model: &str, stream: bool) -> (u16, Option<String>, String) {
    let (path, body) = request(frontend, model, stream);
    let res = client()
        .post(format!("{base}{path}"))
        .json(&body)
        .timeout(CLIENT_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{frontend:?} {model}: no answer within {CLIENT_TIMEOUT:?}: {e}"));
    let status = res.status().as_u16();
    let text = res
        .text()
        .await
        .unwrap_or_else(|e| panic!("{frontend:?} {model}: the answer was cut instead of ended: {e}"));
    let last: Value = match frontend {
        Frontend::OpenAi if status == 200 && stream => sse_data(&text)
            .into_iter()
            .rfind(|d| d != "[DONE]")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default(),
        Frontend::Ollama if status == 200 && stream => text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default(),
        _ => serde_json::from_str(&text).unwrap_or_default(),
    };
    let message = match frontend {
        Frontend::OpenAi => last["error"]["message"].as_str().map(str::to_owned),
        Frontend::Ollama => last["error"].as_str().map(str::to_owned),
    };
    (status, message, text)
}

/// One channel per backend format, each in front of its own faulty upstream, and one
/// whose upstream refuses connections; circuits that never open, so every request
/// shows its own fault.
fn profile(ndjson: &FaultyUpstream, sse: &FaultyUpstream, gone: &str) -> String {
    let channel = |name: &str, kind: &str, url: &str| {
        format!(
            "[[channels]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\nmodels = [\"{name}\"]\n\
             first_byte_timeout_secs = {TIMEOUT_SECS:?}\nidle_timeout_secs = {TIMEOUT_SECS:?}\n\
             max_line_bytes = {MAX_LINE}\n\n"
        )
    };
    format!(
        "[routing]\nmin_requests = 1000000\nmax_retries = 0\n\n{}{}{}",
        channel("ndjson", "ollama", &ndjson.url()),
        channel("sse", "openai", &format!("{}/v1", sse.url())),
        channel("gone", "ollama", gone),
    )
}

/// A case: how the upstream misbehaves, and what a client must get for a streamed and
/// for a whole answer (status, a piece of the error message).
struct Case {
    name: &'static str,
    misbehave: fn(ollama: bool) -> Misbehave,
    streamed: (u16, &'static str),
    whole: (u16, &'static str),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "reset before the first byte",
            misbehave: |_| Misbehave::ResetBeforeHeaders,
            streamed: (502, "cannot reach the upstream"),
            whole: (502, "cannot reach the upstream"),
        },
        Case {
            name: "reset after the first line",
            misbehave: |_| Misbehave::ResetAfterFirstLine,
            streamed: (200, "broke"),
            whole: (502, "cannot reach the upstream"),
        },
        Case {
            name: "hang before the headers",
            misbehave: |_| Misbehave::HangBeforeHeaders,
            streamed: (504, "did not answer within 1 s"),
            whole: (504, "did not answer within 1 s"),
        },
        Case {
            name: "hang mid-stream",
            misbehave: |_| Misbehave::HangAfterFirstLine,
            streamed: (200, "sent nothing for 1 s"),
            whole: (504, "did not answer within 1 s"),
        },
        Case {
            name: "a malformed line",
            misbehave: |ollama| Misbehave::ThenBytes(if ollama { b"{not json\n" } else { b"data: {not json\n\n" }),
            streamed: (200, "unreadable"),
            whole: (502, ""),
        },
        Case {
            name: "a truncated line",
            misbehave: |ollama| {
                Misbehave::ThenBytes(if ollama {
                    br#"{"model":"chat-text","created_at":"2026-08-01T12:00:00Z","mess"#
                } else {
                    br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","cho"#
                })
            },
            streamed: (200, "unreadable"),
            whole: (502, ""),
        },
        Case {
            name: "an oversized line",
            misbehave: |_| Misbehave::EndlessLine,
            streamed: (
                200,
                "larger than 1048576 bytes (the limit is the channel's max_line_bytes",
            ),
            whole: (
                502,
                "larger than 1048576 bytes (the limit is the channel's max_line_bytes",
            ),
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_fault_is_answered_in_the_clients_protocol_and_closed() {
    let ndjson = FaultyUpstream::start(Misbehave::HangBeforeHeaders).await;
    let sse = FaultyUpstream::start(Misbehave::HangBeforeHeaders).await;
    let dir = temp_dir();
    let path = dir.path().join("faults.toml");
    std::fs::write(&path, profile(&ndjson, &sse, &dead_url())).unwrap();
    let mut command = diglot_command();
    command.args(["--profile", path.to_str().unwrap()]);
    let diglot = Binary::start(command).await;
    let base = diglot.base.clone();
    let idle_rss = rss_kib(diglot.pid());

    // Connection refused, before anything else can have marked the channel down.
    for frontend in [Frontend::OpenAi, Frontend::Ollama] {
        for stream in [true, false] {
            let (status, message, text) = ask(&base, frontend, "gone", stream).await;
            // 503 once the health check has found the upstream gone; its reason says why.
            assert!(matches!(status, 502 | 503), "{frontend:?} refused: {status} {text}");
            let message = message.unwrap_or_else(|| panic!("{frontend:?} refused: {text}"));
            assert!(message.contains("cannot reach the upstream"), "{frontend:?}: {message}");
        }
    }

    let mut peak_rss = idle_rss;
    for case in cases() {
        for (fake, model, ollama) in [(&ndjson, "ndjson", true), (&sse, "sse", false)] {
            fake.set((case.misbehave)(ollama));
            for frontend in [Frontend::OpenAi, Frontend::Ollama] {
                for stream in [true, false] {
                    let what = format!("{}: {model} upstream, {frontend:?} client, stream {stream}", case.name);
                    let calls = fake.calls();
                    let (status, message, text) = ask(&base, frontend, model, stream).await;
                    let (want_status, want_message) = if stream { case.streamed } else { case.whole };
                    assert_eq!(status, want_status, "{what}: {text}");
                    let message = message.unwrap_or_else(|| panic!("{what}: no error in the answer: {text}"));
                    assert!(message.contains(want_message), "{what}: {message}");
                    if status == 200 {
                        // The first line got through before the fault: the stream started.
                        assert!(text.contains("The"), "{what}: {text}");
                    }
                    assert_eq!(fake.calls(), calls + 1, "{what}: one upstream call, no retry");
                    eventually(&format!("{what}: the upstream connection to close"), || {
                        fake.open_connections() == 0
                    })
                    .await;
                    peak_rss = peak_rss.max(rss_kib(diglot.pid()));
                }
            }
        }
    }
    let end_rss = rss_kib(diglot.pid());
    println!(
        "diglot RSS: {} KiB idle, {} KiB at most after a case, {} KiB at the end",
        idle_rss, peak_rss, end_rss
    );
    // Each oversized line is dropped at 1 MiB; nothing of the faults stays behind.
    assert!(
        peak_rss < idle_rss + 64 * 1024,
        "RSS grew from {idle_rss} to {peak_rss} KiB"
    );
    assert!(
        diglot.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        diglot.log()
    );
}

#[tokio::test]
async fn five_hundreds_on_one_model_leave_the_other_models_working() {
    let (ollama, openai) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let quick = RoutingConfig {
        min_requests: 3,
        failure_ratio: 0.5,
        cooldown_secs: 600.0,
        ..Default::default()
    };
    // One channel per backend: each model has no other channel to go to.
    let base = diglot_channels(
        vec![
            diglot::config::UpstreamConfig {
                models: vec!["chat-text".into(), "chat-json".into()],
                ..channel("ollama", &ollama, UpstreamKind::Ollama)
            },
            diglot::config::UpstreamConfig {
                models: vec!["oai-text".into(), "oai-json".into()],
                ..channel("openai", &openai, UpstreamKind::Openai)
            },
        ],
        |c| c.routing = quick,
    )
    .await;
    // Ollama answers 500 for a model that does not fit in memory, and only for it.
    ollama.fail_model("chat-text", Some(500));
    openai.fail_model("oai-text", Some(503));
    for (fake, failing, working) in [(&ollama, "chat-text", "chat-json"), (&openai, "oai-text", "oai-json")] {
        for round in 0..10 {
            for frontend in [Frontend::OpenAi, Frontend::Ollama] {
                let calls = fake.calls();
                let (status, message, text) = ask(&base, frontend, failing, false).await;
                assert_eq!(status, 502, "{failing} round {round}: {text}");
                assert!(message.unwrap().contains("injected failure"), "{text}");
                assert_eq!(
                    fake.calls(),
                    calls + 1,
                    "the only channel never refuses while its upstream answers"
                );
                let (status, _, text) = ask(&base, frontend, working, round % 2 == 0).await;
                assert_eq!(status, 200, "{working} while {failing} fails, round {round}: {text}");
            }
        }
    }
    let health = get_json(&format!("{base}/health")).await;
    assert_eq!(health["status"], "ok", "{health}");
    for (name, failing) in [("ollama", "chat-text"), ("openai", "oai-text")] {
        let channel = health["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        assert_eq!(
            (&channel["state"], &channel["usable"]),
            (&json!("healthy"), &json!(true)),
            "{channel}"
        );
        let model = &channel["models"][failing];
        assert_eq!(model["state"], "open", "{channel}");
        assert!(
            model["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains("injected failure"),
            "{channel}"
        );
    }
    // The model comes back: its next answer closes its circuit.
    ollama.fail_model("chat-text", None);
    let (status, _, text) = ask(&base, Frontend::Ollama, "chat-text", false).await;
    assert_eq!(status, 200, "{text}");
    let health = get_json(&format!("{base}/health")).await;
    assert!(health["channels"][0]["models"].get("chat-text").is_none(), "{health}");
}

#[tokio::test]
async fn failures_the_request_caused_never_count_against_the_upstream() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let base = diglot_channels(
        vec![
            diglot::config::UpstreamConfig {
                priority: 1,
                ..channel("a", &a, UpstreamKind::Ollama)
            },
            channel("b", &b, UpstreamKind::Ollama),
        ],
        |c| {
            c.routing = RoutingConfig {
                min_requests: 2,
                failure_ratio: 0.5,
                cooldown_secs: 600.0,
                check_interval_secs: 0.0,
                ..Default::default()
            }
        },
    )
    .await;
    // The upstream refuses the request itself (400, 413, 422), again and again.
    for status in [400, 413, 422] {
        a.fail_next(3, status, None);
        for _ in 0..3 {
            let (got, message, text) = ask(&base, Frontend::Ollama, "chat-text", false).await;
            assert!((400..500).contains(&got), "{status}: {text}");
            assert!(message.unwrap().contains("injected failure"), "{text}");
        }
    }
    // Clients that hang up before their answer is whole.
    a.set_line_delay(Duration::from_millis(300));
    for _ in 0..3 {
        let (path, body) = request(Frontend::OpenAi, "chat-text", false);
        a.assert_giving_up_cancels_the_call(&format!("{base}{path}"), body)
            .await;
    }
    a.set_line_delay(Duration::ZERO);
    let health = get_json(&format!("{base}/health")).await;
    let channel = &health["channels"][0];
    assert_eq!(channel["name"], "a");
    assert_eq!(
        (&channel["state"], &channel["window"]["failures"], &channel["models"]),
        (&json!("healthy"), &json!(0), &json!({})),
        "{channel}"
    );
    let calls = a.calls();
    let (status, _, text) = ask(&base, Frontend::Ollama, "chat-text", false).await;
    assert_eq!((status, a.calls()), (200, calls + 1), "still the first choice: {text}");
    assert_eq!(b.calls(), 0, "nothing failed over");
}

/// `total_timeout_secs` bounds a whole call: an upstream that keeps the connection open
/// under its idle timeout is cut when the total runs out, mid-stream with a final error
/// event, before its head with 504.
#[tokio::test]
async fn the_total_timeout_ends_a_call_that_stays_within_the_other_timeouts() {
    let (ndjson, sse) = (
        FaultyUpstream::start(Misbehave::HangAfterFirstLine).await,
        FaultyUpstream::start(Misbehave::HangAfterFirstLine).await,
    );
    let bounded = |name: &str, kind: UpstreamKind, url: String| diglot::config::UpstreamConfig {
        name: name.into(),
        kind,
        url,
        models: vec![name.into()],
        first_byte_timeout_secs: 30.0,
        idle_timeout_secs: 30.0,
        total_timeout_secs: TIMEOUT_SECS,
        ..Default::default()
    };
    let base = diglot_channels(
        vec![
            bounded("ndjson", UpstreamKind::Ollama, ndjson.url()),
            bounded("sse", UpstreamKind::Openai, format!("{}/v1", sse.url())),
        ],
        |c| c.routing.max_retries = 0,
    )
    .await;
    for (fake, model) in [(&ndjson, "ndjson"), (&sse, "sse")] {
        for (misbehave, streamed) in [
            (
                Misbehave::HangAfterFirstLine,
                (200, "did not finish its answer within 1 s"),
            ),
            (Misbehave::HangBeforeHeaders, (504, "did not answer within 1 s")),
        ] {
            fake.set(misbehave);
            for frontend in [Frontend::OpenAi, Frontend::Ollama] {
                for stream in [true, false] {
                    let what = format!("{model} upstream, {frontend:?} client, stream {stream}");
                    let started = std::time::Instant::now();
                    let (status, message, text) = ask(&base, frontend, model, stream).await;
                    let (want_status, want_message) = if stream {
                        streamed
                    } else {
                        (504, "did not answer within 1 s")
                    };
                    assert_eq!(status, want_status, "{what}: {text}");
                    let message = message.unwrap_or_else(|| panic!("{what}: no error in the answer: {text}"));
                    assert!(message.contains(want_message), "{what}: {message}");
                    assert!(
                        started.elapsed() < Duration::from_secs(15),
                        "{what}: ended after {:?}, not at the total timeout",
                        started.elapsed()
                    );
                }
            }
        }
    }
}

/// An upstream that an environment proxy applies to is called through that proxy (here
/// one that is down, so the call fails), and one that `NO_PROXY` exempts is called
/// directly: hyper's path for plain HTTP must not bypass an operator's proxy.
#[tokio::test(flavor = "multi_thread")]
async fn an_environment_proxy_is_used_for_the_upstreams_it_applies_to() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let path = dir.path().join("proxied.toml");
    std::fs::write(
        &path,
        format!(
            "[routing]\nmax_retries = 0\ncheck_interval_secs = 0.0\n\n[[channels]]\nname = \"local\"\nkind = \"ollama\"\nurl = \"{}\"\n",
            fake.url()
        ),
    )
    .unwrap();
    let proxy = dead_url();
    for (no_proxy, proxied) in [("", true), ("127.0.0.1", false)] {
        let mut command = diglot_command();
        command.args(["--profile", path.to_str().unwrap()]);
        for name in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
            command.env(name, &proxy);
        }
        for name in ["NO_PROXY", "no_proxy"] {
            command.env(name, no_proxy);
        }
        let diglot = Binary::start(command).await;
        let calls = fake.calls();
        let (status, message, text) = ask(&diglot.base, Frontend::OpenAi, "chat-text", false).await;
        if proxied {
            // 503 once the channel is known to be unreachable; its reason says why.
            assert!(matches!(status, 502 | 503), "NO_PROXY={no_proxy:?}: {status} {text}");
            assert!(message.unwrap().contains("cannot reach"), "{text}");
            assert_eq!(fake.calls(), calls, "the upstream was called around the proxy");
        } else {
            assert_eq!(status, 200, "NO_PROXY={no_proxy:?}: {text}");
            assert_eq!(fake.calls(), calls + 1);
        }
    }
}

/// An upstream connection serves one call after another, and one the upstream closed
/// while it sat idle (as uvicorn does after 5 s) is not used again: the next call goes
/// on a new connection and succeeds. Both backends, both frontends, streamed.
#[tokio::test]
async fn upstream_connections_are_reused_and_one_closed_while_idle_is_replaced() {
    let idle = Duration::from_millis(300);
    let (ndjson, sse) = (
        FaultyUpstream::start(Misbehave::KeepAlive(idle)).await,
        FaultyUpstream::start(Misbehave::KeepAlive(idle)).await,
    );
    let plain = |name: &str, kind: UpstreamKind, url: String| diglot::config::UpstreamConfig {
        name: name.into(),
        kind,
        url,
        models: vec![name.into()],
        ..Default::default()
    };
    let base = diglot_channels(
        vec![
            plain("ndjson", UpstreamKind::Ollama, ndjson.url()),
            plain("sse", UpstreamKind::Openai, format!("{}/v1", sse.url())),
        ],
        |c| {
            c.routing.max_retries = 0;
            c.routing.check_interval_secs = 0.0;
        },
    )
    .await;
    let base = &base;
    for (fake, model) in [(&ndjson, "ndjson"), (&sse, "sse")] {
        let call = |frontend| async move {
            let (status, message, text) = ask(base, frontend, model, true).await;
            assert_eq!(
                (status, message),
                (200, None),
                "{model} upstream, {frontend:?} client: {text}"
            );
            assert!(text.contains("The"), "{model}, {frontend:?}: {text}");
        };
        call(Frontend::OpenAi).await;
        let opened = fake.connections();
        for frontend in [Frontend::Ollama, Frontend::OpenAi, Frontend::Ollama] {
            call(frontend).await;
        }
        assert_eq!(fake.connections(), opened, "{model}: calls in a row share a connection");
        assert_eq!(fake.calls(), 4, "{model}");

        // The upstream closes the idle connection; the next call must not fail on it.
        tokio::time::sleep(idle * 3).await;
        call(Frontend::Ollama).await;
        assert_eq!(
            fake.connections(),
            opened + 1,
            "{model}: a new connection after the close"
        );
        assert_eq!(fake.calls(), 5, "{model}: no call was lost or repeated");
    }
}
