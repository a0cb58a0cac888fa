//! Requests diglot refuses itself, each in the caller's protocol and never reaching the
//! upstream: a wrong method on a served path (405 with `Allow`), token limits below what
//! either API takes, and a request for several answers that does not fit the quota
//! (one refusal, one usage record).

mod common;

use common::*;
use diglot::store::{Role, TokenRecord};
use serde_json::{Value, json};

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "chat-text", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn a_wrong_method_on_a_served_path_gets_405_with_allow_in_its_protocol() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.base_path = "/ollama".into()).await;
    let client = client();
    for (method, path, allow) in [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/chat/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/", "GET, HEAD"),
        ("GET", "/api/chat", "POST"),
        ("DELETE", "/api/tags", "GET, HEAD"),
        ("GET", "/ollama/api/generate", "POST"),
        ("POST", "/api/delete", "DELETE"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let a = send(client.request(method.clone(), format!("{base}{path}"))).await;
        assert_eq!(a.status, 405, "{method} {path}: {}", a.text);
        assert_eq!(a.header("allow"), Some(allow), "{method} {path}");
        let error = &a.json()["error"];
        if path.contains("/api/") {
            // Ollama's shape: {"error": "..."}.
            assert!(error.as_str().unwrap().contains(allow), "{method} {path}: {}", a.text);
        } else {
            assert_eq!(
                (error["type"].as_str(), error["code"].as_str()),
                (Some("invalid_request_error"), Some("method_not_allowed")),
                "{method} {path}"
            );
            assert!(error["message"].as_str().unwrap().contains(method.as_str()));
        }
    }
    // A path diglot does not serve stays a 404, in the shape of the API it looks like.
    let a = send(client.get(format!("{base}/api/nothing"))).await;
    assert_eq!((a.status, a.header("allow")), (404, None));
    assert!(a.json()["error"].is_string());
    let a = send(client.get(format!("{base}/v1/nothing"))).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn negative_token_limits_get_400_except_ollamas_minus_one_and_two() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |_| {}).await;
    for (path, body, param) in [
        ("/v1/chat/completions", chat(json!({"max_tokens": -5})), "max_tokens"),
        (
            "/v1/chat/completions",
            chat(json!({"max_completion_tokens": -1})),
            "max_completion_tokens",
        ),
        (
            "/v1/completions",
            json!({"model": "chat-text", "prompt": "Why?", "max_tokens": -2}),
            "max_tokens",
        ),
    ] {
        let a = post(&base, path, body).await;
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        assert_eq!(a.json()["error"]["param"], param, "{path}");
        assert!(a.json()["error"]["message"].as_str().unwrap().contains(param));
    }
    for (path, body) in [
        ("/api/chat", chat(json!({"options": {"num_predict": -3}}))),
        (
            "/api/generate",
            json!({"model": "gen-text", "prompt": "Why?", "stream": false, "options": {"num_predict": -100}}),
        ),
        ("/v1/chat/completions", chat(json!({"num_predict": -3}))),
    ] {
        let a = post(&base, path, body).await;
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        let message = a.text.clone();
        assert!(
            message.contains("num_predict") && message.contains("-1"),
            "{path}: {message}"
        );
    }
    assert_eq!(fake.calls(), 0, "nothing refused reached the upstream");

    // Ollama's own -1 (no limit) and -2 (fill the context) pass through.
    for n in [-1, -2] {
        let a = post(&base, "/api/chat", chat(json!({"options": {"num_predict": n}}))).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let sent = fake.bodies("/api/chat").last().unwrap().clone();
        assert_eq!(sent["options"]["num_predict"], n, "{sent}");
    }
}

#[tokio::test]
async fn n_answers_refused_for_quota_are_one_refusal_and_one_record() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-quota-n-000000000000000000000000000000000000";
    let dir = temp_dir();
    let base = diglot(&fake.url(), |c| {
        c.store.data_dir = dir.path().to_owned();
        c.tokens = vec![TokenRecord {
            monthly_quota: Some(600),
            ..TokenRecord::for_secret("quota-n", secret, Role::User)
        }];
    })
    .await;
    // 16 answers of ~60 tokens each: about ten fit in 600, so the request does not.
    let a = call(
        &base,
        "/v1/chat/completions",
        Some(secret),
        chat(json!({"n": 16, "max_tokens": 50})),
    )
    .await;
    assert_eq!(a.status, 429, "{}", a.text);
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("of its monthly 600 tokens left") && message.contains("ask for fewer tokens"),
        "{message}"
    );
    assert!(!message.contains("has used its monthly quota"), "{message}");
    // A request that fits follows; once its record is written, every record of the
    // refused one (sent before it) is too.
    let a = call(
        &base,
        "/v1/chat/completions",
        Some(secret),
        chat(json!({"max_tokens": 50})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let store = usage_records(dir.path(), 2).await;
    let mut statuses: Vec<u16> = store
        .recent_usage(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.status)
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 429],
        "one record for the refused request, none with 499"
    );
    // Its whole quota is still there for the answer that was given: nothing was held back
    // by the cancelled answers.
    let used: u64 = store
        .tokens_used_since(0)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, used)| used)
        .sum();
    assert!(used < 100, "only the answered request counts: {used}");
}
