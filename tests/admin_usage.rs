//! What the admin API (`/admin/api`, issue 19) shows of the traffic: the request log
//! (filters, paging, CSV), the dashboard, a token holder's own view (`/me`) and the live
//! tail. The contract is `notes/admin-api.md`.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use diglot::config::{UpstreamConfig, UpstreamKind};
use reqwest::Method;
use serde_json::{Value, json};

fn openai(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
}

fn ollama(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false})
}

/// A gateway that served six requests of two tokens made through the API, alice's
/// through the OpenAI API and bob's through Ollama's:
///
/// | # | token | frontend | model     | channel | status | tokens  |
/// |---|-------|----------|-----------|---------|--------|---------|
/// | 1 | alice | openai   | chat-text | main    | 200    | 31 + 7  |
/// | 2 | alice | openai   | chat-text | main    | 200    | 31 + 7  |
/// | 3 | bob   | ollama   | chat-text | main    | 200    | 31 + 7  |
/// |   |       |          |           |         |        | (`split_ms`) |
/// | 4 | alice | openai   | oai-text  | cloud   | 200    | 14 + 10 |
/// | 5 | bob   | ollama   | ghost     | -       | 404    | 0       |
/// | 6 | bob   | ollama   | oai-text  | cloud   | 200    | 14 + 10 |
struct Traffic {
    gw: AdminGateway,
    _cloud: FakeUpstream,
    admin: Admin,
    alice: (Value, String),
    bob: (Value, String),
    /// A time between the first three requests and the last three.
    split_ms: i64,
}

async fn traffic() -> Traffic {
    let cloud = FakeUpstream::start().await;
    let gw = AdminGateway::start(|c| {
        c.channels.push(UpstreamConfig {
            models: vec!["oai-*".into()],
            ..channel("cloud", &cloud, UpstreamKind::Openai)
        })
    })
    .await;
    let admin = gw.admin().await;
    let alice = admin
        .create_token(json!({"name": "alice", "rpm": 50, "monthly_quota": 100000, "models": ["chat-*", "oai-*"]}))
        .await;
    let bob = admin.create_token(json!({"name": "bob"})).await;
    let (a, b) = (alice.1.as_str(), bob.1.as_str());
    let request = |token: &str, model: &str, status: u16| {
        let (base, token, model) = (gw.base.clone(), token.to_owned(), model.to_owned());
        async move {
            let answer = if token == a {
                call(&base, "/v1/chat/completions", Some(&token), openai(&model)).await
            } else {
                call(&base, "/api/chat", Some(&token), ollama(&model)).await
            };
            assert_eq!(answer.status, status, "{model}: {}", answer.text);
        }
    };
    request(a, "chat-text", 200).await;
    request(a, "chat-text", 200).await;
    request(b, "chat-text", 200).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let split_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    request(a, "oai-text", 200).await;
    request(b, "ghost", 404).await;
    request(b, "oai-text", 200).await;
    eventually_async("six records in /admin/api/logs", || async {
        data(&admin.get_ok("/admin/api/logs").await).len() >= 6
    })
    .await;
    Traffic {
        gw,
        _cloud: cloud,
        admin,
        alice,
        bob,
        split_ms,
    }
}

/// The ids `GET /admin/api/logs?QUERY` lists (all of them: limit=1000).
async fn ids(caller: &Admin, route: &str, query: &str) -> BTreeSet<String> {
    let answer = caller.get_ok(&format!("{route}?limit=1000&{query}")).await;
    data(&answer).iter().map(id_of).collect()
}

/// Which log entries a filter should keep.
type Pick<'a> = Box<dyn Fn(&Value) -> bool + 'a>;

/// The ids of `entries` for which `pick` holds.
fn ids_where(entries: &[Value], pick: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    entries.iter().filter(|e| pick(e)).map(id_of).collect()
}

const LOG_FIELDS: &[&str] = &[
    "id",
    "at_ms",
    "token_prefix",
    "token_name",
    "client_ip",
    "frontend",
    "model",
    "channel",
    "upstream_model",
    "status",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "estimated",
    "cache_hit",
    "request_id",
    "trace_id",
    "attempts",
];

#[tokio::test]
async fn the_log_shows_each_request_and_filters_by_token_model_channel_status_frontend_and_time() {
    let t = traffic().await;
    let all = data(&t.admin.get_ok("/admin/api/logs?limit=1000").await);
    assert_eq!(all.len(), 6, "one record per request: {all:#?}");
    for entry in &all {
        for field in LOG_FIELDS {
            assert!(entry.get(*field).is_some(), "a LogEntry has '{field}': {entry}");
        }
    }
    let (alice, alice_secret) = &t.alice;
    let by_alice = ids(&t.admin, "/admin/api/logs", &format!("token={}", id_of(alice))).await;
    assert_eq!(by_alice.len(), 3, "token=<id>: alice made three requests");
    assert_eq!(by_alice, ids_where(&all, |e| e["token_name"] == "alice"));
    let by_prefix = ids(&t.admin, "/admin/api/logs", &format!("token={}", &alice_secret[..7])).await;
    assert_eq!(by_prefix, by_alice, "token=<prefix> too");
    let first = all
        .iter()
        .filter(|e| e["token_name"] == "alice" && e["model"] == "chat-text")
        .min_by_key(|e| e["at_ms"].as_i64())
        .expect("alice's chat-text requests");
    let shown = LOG_FIELDS[2..=10].iter().map(|f| (*f, first[*f].clone()));
    let shown: serde_json::Map<String, Value> = shown.map(|(f, v)| (f.to_owned(), v)).collect();
    let mut wanted = json!({"token_prefix": &alice_secret[..7], "token_name": "alice", "client_ip": "127.0.0.1",
        "frontend": "openai", "model": "chat-text", "channel": "main", "upstream_model": "chat-text", "status": 200});
    wanted["latency_ms"] = first["latency_ms"].clone();
    assert_eq!(Value::Object(shown), wanted, "{first}");
    assert!(first["latency_ms"].is_u64(), "{first}");
    let counts = (
        &first["prompt_tokens"],
        &first["completion_tokens"],
        &first["estimated"],
        &first["cache_hit"],
    );
    assert_eq!(counts, (&json!(31), &json!(7), &json!(false), &json!(false)), "{first}");
    assert_eq!(first["attempts"], 1, "one upstream attempt: {first}");
    assert!(
        first["request_id"].as_str().is_some_and(|id| id.starts_with("req_")),
        "a request id made by diglot (none was sent): {first}"
    );
    let ghost = all
        .iter()
        .find(|e| e["status"] == 404)
        .expect("the unknown model's record");
    assert_eq!(ghost["attempts"], 0, "an unknown model reaches no upstream: {ghost}");

    let cases: [(&str, Pick, usize); 7] = [
        ("model=oai-text", Box::new(|e| e["model"] == "oai-text"), 2),
        ("channel=cloud", Box::new(|e| e["channel"] == "cloud"), 2),
        ("status=4xx", Box::new(|e| e["status"] == 404), 1),
        ("status=2xx", Box::new(|e| e["status"] == 200), 5),
        ("frontend=ollama", Box::new(|e| e["frontend"] == "ollama"), 3),
        (
            &format!("since={}", t.split_ms),
            Box::new(|e| e["at_ms"].as_i64() > Some(t.split_ms)),
            3,
        ),
        (
            &format!("until={}", t.split_ms),
            Box::new(|e| e["at_ms"].as_i64() < Some(t.split_ms)),
            3,
        ),
    ];
    for (query, pick, count) in cases {
        let got = ids(&t.admin, "/admin/api/logs", query).await;
        assert_eq!(got.len(), count, "?{query}: {count} records, got {got:?} of {all:#?}");
        assert_eq!(got, ids_where(&all, pick), "?{query}");
    }
    let query = format!("token={}&frontend=ollama&status=2xx", id_of(&t.bob.0));
    let got = ids(&t.admin, "/admin/api/logs", &query).await;
    let wanted = ids_where(&all, |e| e["token_name"] == "bob" && e["status"] == 200);
    assert_eq!((got.len(), &got), (2, &wanted), "?{query}: filters combine");
}

#[tokio::test]
async fn the_log_pages_with_next_and_before_and_exports_csv() {
    let t = traffic().await;
    let all: BTreeSet<String> = data(&t.admin.get_ok("/admin/api/logs?limit=1000").await)
        .iter()
        .map(id_of)
        .collect();
    let mut visited = Vec::new();
    let mut path = "/admin/api/logs?limit=4".to_owned();
    loop {
        let page = t.admin.get_ok(&path).await;
        let entries = data(&page);
        assert!(!entries.is_empty() && entries.len() <= 4, "pages of at most 4: {page}");
        visited.extend(entries.iter().map(id_of));
        match &page["next"] {
            Value::Null => break,
            next => path = format!("/admin/api/logs?limit=4&before={}", id_of(&json!({"id": next}))),
        }
        assert!(visited.len() < 100, "paging does not end: {visited:?}");
    }
    assert_eq!(visited.len(), all.len(), "each record once: {visited:?}");
    assert_eq!(
        visited.iter().cloned().collect::<BTreeSet<_>>(),
        all,
        "every record: {visited:?}"
    );
    let page = t.admin.get_ok("/admin/api/logs?limit=2").await;
    assert_eq!(data(&page).len(), 2, "limit=2: {page}");

    let a = t.admin.get("/admin/api/logs?format=csv").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.content_type().starts_with("text/csv"), "{:?}", a.content_type());
    let lines: Vec<&str> = a.text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1 + all.len(),
        "a header and one line per record:\n{}",
        a.text
    );
    let header: Vec<&str> = lines[0].split(',').map(|h| h.trim().trim_matches('"')).collect();
    for column in ["id", "model", "status", "prompt_tokens", "completion_tokens"] {
        assert!(header.contains(&column), "the header names {column}: {}", lines[0]);
    }
    let id_column = header.iter().position(|h| *h == "id").unwrap();
    let csv_ids: BTreeSet<String> = lines[1..]
        .iter()
        .map(|l| {
            l.split(',')
                .nth(id_column)
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned()
        })
        .collect();
    assert_eq!(csv_ids, all, "one line per record:\n{}", a.text);
    let a = t.admin.get("/admin/api/logs?format=csv&model=oai-text").await;
    let lines = a.text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(lines, 1 + 2, "filters apply to the CSV too:\n{}", a.text);
}

/// The entry of a dashboard `top_*` list whose `field` is `value`.
fn top(dashboard: &Value, list: &str, field: &str, value: &str) -> Value {
    dashboard[list]
        .as_array()
        .and_then(|l| l.iter().find(|e| e[field] == value).cloned())
        .unwrap_or_else(|| panic!("{list} has {value}: {dashboard}"))
}

#[tokio::test]
async fn the_dashboard_and_the_tokens_count_every_request() {
    let t = traffic().await;
    let d = t.admin.get_ok("/admin/api/dashboard?window=1h").await;
    assert_eq!(d["window"], "1h", "{d}");
    assert!(d["step_secs"].as_u64().is_some_and(|s| s > 0), "{d}");
    let totals = &d["totals"];
    let counts = ["requests", "errors", "prompt_tokens", "completion_tokens", "cache_hits"].map(|f| totals[f].clone());
    assert_eq!(
        counts,
        [
            json!(6),
            json!(1),
            json!(3 * 31 + 2 * 14),
            json!(3 * 7 + 2 * 10),
            json!(0)
        ],
        "totals of requests, errors, prompt and completion tokens, cache hits: {totals}"
    );
    let series = d["series"].as_array().expect("series");
    let sum = |f: &str| series.iter().map(|p| p[f].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(
        (sum("requests"), sum("errors")),
        (6, 1),
        "the series adds up to the totals: {d}"
    );

    let alice = top(&d, "top_tokens", "name", "alice");
    assert_eq!(
        (&alice["requests"], &alice["prompt_tokens"]),
        (&json!(3), &json!(2 * 31 + 14)),
        "{alice}"
    );
    let bob = top(&d, "top_tokens", "name", "bob");
    assert_eq!((&bob["requests"], &bob["errors"]), (&json!(3), &json!(1)), "{bob}");
    for (model, requests) in [("chat-text", 3), ("oai-text", 2), ("ghost", 1)] {
        assert_eq!(top(&d, "top_models", "key", model)["requests"], requests, "{model}");
    }
    for (channel, requests) in [("main", 3), ("cloud", 2)] {
        assert_eq!(
            top(&d, "top_channels", "key", channel)["requests"],
            requests,
            "{channel}"
        );
    }
    let main = top(&d, "channels", "name", "main");
    assert!(main["source"] == "profile" && main["health"].is_object(), "{main}");

    // Each token's month so far: alice 2 × 38 + 24, bob 38 + 24.
    for ((token, _), used) in [(&t.alice, 100), (&t.bob, 62)] {
        let path = format!("/admin/api/tokens/{}", id_of(token));
        eventually_async(&format!("{} used {used} tokens this month", token["name"]), || async {
            t.admin.get_ok(&path).await["used_this_month"] == used
        })
        .await;
        let record = t.admin.get_ok(&path).await;
        assert!(record["last_used_at"].is_i64(), "last_used_at is set: {record}");
    }
}

#[tokio::test]
async fn a_token_holder_sees_its_own_limits_and_only_its_own_requests() {
    let t = traffic().await;
    let (_, alice_secret) = &t.alice;
    let me = Admin::login_token(&t.gw.base, alice_secret).await;
    let session = me.get_ok("/admin/api/session").await;
    assert_eq!(
        (&session["role"], &session["via"], &session["token_prefix"]),
        (&json!("user"), &json!("token"), &json!(alice_secret[..7])),
        "{session}"
    );
    eventually_async("alice's 100 tokens this month in /me", || async {
        me.get_ok("/admin/api/me").await["used_this_month"] == 100
    })
    .await;
    let mine = me.get_ok("/admin/api/me").await;
    let wanted = json!({"name": "alice", "prefix": &alice_secret[..7], "role": "user", "models": ["chat-*", "oai-*"],
        "ips": [], "rpm": 50, "tpm": null, "max_concurrent": null, "monthly_quota": 100000,
        "used_this_month": 100, "quota_left": 99900, "expires_at": null, "enabled": true});
    for (field, value) in wanted.as_object().unwrap() {
        assert_eq!(&mine[field], value, "/admin/api/me {field}: {mine}");
    }
    let bearer = Admin::bearer(&t.gw.base, alice_secret);
    assert_eq!(bearer.get_ok("/admin/api/me").await["name"], "alice", "as a bearer too");

    let logs = data(&me.get_ok("/admin/api/me/logs?limit=1000").await);
    assert_eq!(logs.len(), 3, "alice's three requests, none of bob's: {logs:#?}");
    assert!(logs.iter().all(|e| e["token_prefix"] == alice_secret[..7]), "{logs:#?}");
    let oai = data(&me.get_ok("/admin/api/me/logs?model=oai-text").await);
    assert_eq!(oai.len(), 1, "filters apply: {oai:#?}");
    let (_, bob_secret) = &t.bob;
    let bobs = data(&Admin::bearer(&t.gw.base, bob_secret).get_ok("/admin/api/me/logs").await);
    assert!(
        bobs.len() == 3 && bobs.iter().all(|e| e["token_name"] == "bob"),
        "{bobs:#?}"
    );

    for path in ["/admin/api/tokens", "/admin/api/logs", "/admin/api/dashboard?window=1h"] {
        admin_error(
            &me.get(path).await,
            403,
            None,
            &format!("a user token's session on {path}"),
        );
        admin_error(&bearer.get(path).await, 403, None, &format!("a user token on {path}"));
    }
    let message = admin_error(
        &t.admin.get("/admin/api/me").await,
        404,
        None,
        "/me for a password session",
    );
    assert!(
        message.contains("password"),
        "says it was signed in with the password: {message}"
    );
}

#[tokio::test]
async fn the_live_tail_sends_a_data_line_for_each_request_as_it_ends() {
    let gw = AdminGateway::start(|_| {}).await;
    let admin = gw.admin().await;
    let subscribe = admin.request(Method::GET, "/admin/api/logs/stream").send();
    let mut res = tokio::time::timeout(DEADLINE, subscribe)
        .await
        .expect("the stream answers its headers without waiting for a request")
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{content_type:?}"
    );
    let received = Arc::new(Mutex::new(String::new()));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            while let Ok(Some(chunk)) = res.chunk().await {
                received.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk));
            }
        }
    });
    let chat_line = || {
        let text = received.lock().unwrap().clone();
        let lines = text.lines().filter_map(|l| l.strip_prefix("data:"));
        let mut events = lines.filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok());
        events.find(|e| e["path"] == "/v1/chat/completions")
    };
    // A request after subscribing (another each second, should the subscription be late).
    let deadline = Instant::now() + DEADLINE;
    let line = loop {
        let a = post(&gw.base, "/v1/chat/completions", openai("chat-text")).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let second = Instant::now() + Duration::from_secs(1);
        while chat_line().is_none() && Instant::now() < second {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(line) = chat_line() {
            break line;
        }
        let so_far = received.lock().unwrap().clone();
        assert!(
            Instant::now() < deadline,
            "no data: line for the chat within {DEADLINE:?}; got:\n{so_far}"
        );
    };
    reader.abort();
    let wanted = json!({"method": "POST", "path": "/v1/chat/completions", "status": 200, "client_ip": "127.0.0.1",
        "frontend": "openai", "model": "chat-text", "channel": "main", "token_prefix": null});
    for (field, value) in wanted.as_object().unwrap() {
        assert_eq!(&line[field], value, "the access line's {field}: {line}");
    }
    for field in ["at_ms", "duration_ms"] {
        assert!(line[field].is_u64(), "{field}: {line}");
    }
    assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
    assert!(line.get("route").is_some() && line.get("trace_id").is_some(), "{line}");
}
