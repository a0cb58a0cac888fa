//! API tokens, access rules, rate limits, quotas and usage records, through both APIs.

mod common;

use common::*;
use diglot::config::{AuthConfig, Config, LimitsConfig};
use diglot::store::secrets::digest;
use diglot::store::{Role, TokenRecord, UsageRecord};
use serde_json::{Value, json};

/// A token declared in the profile, as `[[tokens]]` would.
fn declared(name: &str, secret: &str) -> TokenRecord {
    TokenRecord::for_secret(name, secret, Role::User)
}

fn openai(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
}

fn ollama(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false})
}

async fn gateway(fake: &FakeUpstream, tokens: Vec<TokenRecord>, tweak: impl FnOnce(&mut Config)) -> String {
    diglot(&fake.url(), |c| {
        c.tokens = tokens;
        tweak(c)
    })
    .await
}

#[tokio::test]
async fn missing_bad_disabled_and_expired_tokens_get_401_in_each_protocol() {
    let fake = FakeUpstream::start().await;
    let good = "dg-good-token-0000000000000000000000000000000";
    let off = "dg-disabled-0000000000000000000000000000000000";
    let old = "dg-expired-00000000000000000000000000000000000";
    let tokens = vec![
        declared("good", good),
        TokenRecord {
            enabled: false,
            ..declared("off", off)
        },
        TokenRecord {
            expires_at: Some(1_600_000_000),
            ..declared("old", old)
        },
    ];
    let base = gateway(&fake, tokens, |_| {}).await;
    for (token, wanted) in [
        (None, "an API token is required"),
        (Some("dg-nobody"), "not valid"),
        (Some(off), "'off' is disabled"),
        (Some(old), "'old' has expired"),
    ] {
        let a = call(&base, "/v1/chat/completions", token, openai("chat-text")).await;
        assert_eq!(a.status, 401, "{token:?}");
        assert_eq!(a.last_json()["error"]["type"], "authentication_error");
        assert!(
            a.last_json()["error"]["message"].as_str().unwrap().contains(wanted),
            "{}",
            a.last_json()
        );
        let a = call(&base, "/api/chat", token, ollama("chat-text")).await;
        assert_eq!(a.status, 401);
        assert!(
            a.last_json()["error"].as_str().unwrap().contains(wanted),
            "Ollama's shape: {}",
            a.last_json()
        );
    }
    assert_eq!(fake.calls(), 0, "nothing reached the upstream");
    // Other headers carry tokens too.
    for header in ["x-api-key", "api-key"] {
        let res = client()
            .post(format!("{base}/v1/chat/completions"))
            .header(header, good)
            .json(&openai("chat-text"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{header}");
    }
    // Public paths answer without a token; /health hides the channels.
    assert_eq!(
        client()
            .get(format!("{base}/api/version"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let health: Value = get_json(&format!("{base}/health")).await;
    assert_eq!(health, json!({"status": "ok"}));
}

#[tokio::test]
async fn model_globs_and_ip_rules_get_403_and_lists_are_filtered() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-chat-only-000000000000000000000000000000000";
    let office = "dg-office-00000000000000000000000000000000000";
    let tokens = vec![
        TokenRecord {
            models: vec!["chat-t*".into(), "llama3.2".into()],
            ..declared("chatty", secret)
        },
        TokenRecord {
            ips: vec!["10.0.0.0/8".into()],
            ..declared("office", office)
        },
    ];
    let base = gateway(&fake, tokens.clone(), |_| {}).await;
    assert_eq!(
        call(&base, "/v1/chat/completions", Some(secret), openai("chat-text"))
            .await
            .status,
        200
    );
    let a = call(&base, "/v1/chat/completions", Some(secret), openai("chat-json")).await;
    assert_eq!(
        (a.status, a.last_json()["error"]["type"].as_str()),
        (403, Some("permission_error"))
    );
    assert!(
        a.last_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not use model 'chat-json'")
    );
    let a = call(&base, "/api/chat", Some(secret), ollama("chat-json")).await;
    assert_eq!(a.status, 403);
    assert!(a.last_json()["error"].as_str().unwrap().contains("may not use"));
    let a = call(
        &base,
        "/v1/embeddings",
        Some(secret),
        json!({"model": "embed-minilm", "input": "x"}),
    )
    .await;
    assert_eq!(a.status, 403);

    let ids = |models: &Value, list: &str, key: &str| -> Vec<String> {
        models[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[key].as_str().unwrap().to_owned())
            .collect()
    };
    let res = client()
        .get(format!("{base}/v1/models"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    let listed = ids(&res.json().await.unwrap(), "data", "id");
    assert_eq!(
        listed,
        [
            "llama3.2:latest",
            "chat-text",
            "chat-thinking",
            "chat-tools",
            "chat-tools-final"
        ]
    );
    let res = client()
        .get(format!("{base}/api/tags"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&res.json().await.unwrap(), "models", "name").len(), 5);

    // The token only works from 10.0.0.0/8: from here (127.0.0.1) it does not, and a
    // forged X-Forwarded-For is ignored unless the peer is a trusted proxy.
    let forged = |base: &str| {
        client()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(office)
            .header("x-forwarded-for", "10.1.2.3")
            .json(&openai("chat-text"))
            .send()
    };
    let a = call(&base, "/v1/chat/completions", Some(office), openai("chat-text")).await;
    assert_eq!(a.status, 403);
    assert!(
        a.last_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not be used from 127.0.0.1")
    );
    assert_eq!(forged(&base).await.unwrap().status(), 403, "not a trusted proxy");
    let behind_proxy = gateway(&fake, tokens.clone(), |c| {
        c.auth.trust_proxy = vec!["127.0.0.1".into()];
    })
    .await;
    assert_eq!(forged(&behind_proxy).await.unwrap().status(), 200, "trusted proxy");

    // Global rules apply to everyone, with or without a token.
    let denied = gateway(&fake, tokens, |c| {
        c.auth.deny_ips = vec!["127.0.0.0/8".into()];
    })
    .await;
    let a = call(&denied, "/api/chat", Some(secret), ollama("chat-text")).await;
    assert_eq!(a.status, 403);
    assert!(
        a.last_json()["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1 are not allowed"),
        "{}",
        a.last_json()
    );
}

#[tokio::test]
async fn request_rate_limits_answer_429_with_retry_after_and_ratelimit_headers() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-limited-00000000000000000000000000000000000";
    let base = gateway(
        &fake,
        vec![TokenRecord {
            rpm: Some(2),
            ..declared("limited", secret)
        }],
        |_| {},
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            call(&base, "/v1/chat/completions", Some(secret), openai("chat-text"))
                .await
                .status,
            200
        );
    }
    let a = call(&base, "/v1/chat/completions", Some(secret), openai("chat-text")).await;
    assert_eq!(
        (a.status, a.last_json()["error"]["type"].as_str()),
        (429, Some("rate_limit_error"))
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(a.headers["x-ratelimit-limit-requests"], "2");
    assert_eq!(a.headers["x-ratelimit-remaining-requests"], "0");
    let a = call(&base, "/api/chat", Some(secret), ollama("chat-text")).await;
    assert_eq!(a.status, 429);
    assert!(
        a.last_json()["error"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute for your API token")
    );
    assert_eq!(fake.calls(), 2);

    // Per address, for callers without a token.
    let open = diglot(&fake.url(), |c| {
        c.limits = LimitsConfig {
            ip_rpm: 1,
            ..Default::default()
        }
    })
    .await;
    assert_eq!(call(&open, "/api/chat", None, ollama("chat-text")).await.status, 200);
    let a = call(&open, "/api/chat", None, ollama("chat-text")).await;
    assert_eq!(a.status, 429);
    assert!(a.last_json()["error"].as_str().unwrap().contains("for your address"));
}

#[tokio::test]
async fn token_limits_reserve_an_estimate_and_settle_with_real_usage() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-tpm-000000000000000000000000000000000000000";
    // Each request reserves its prompt (~10 tokens) + max_tokens 100; the fixture's real
    // usage is 31 + 7 = 38.
    let base = gateway(
        &fake,
        vec![TokenRecord {
            tpm: Some(150),
            ..declared("tpm", secret)
        }],
        |_| {},
    )
    .await;
    let body = json!({"model": "chat-text", "max_tokens": 100, "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
    // The first request is held at the upstream (its reservation made) until the second
    // has been answered.
    fake.hold();
    let first = tokio::spawn({
        let (base, body) = (base.clone(), body.clone());
        async move { call(&base, "/v1/chat/completions", Some(secret), body).await.status }
    });
    fake.wait_for_calls(1).await;
    let a = call(&base, "/v1/chat/completions", Some(secret), body.clone()).await;
    assert_eq!(
        a.status,
        429,
        "the first one's reservation leaves no room: {}",
        a.last_json()
    );
    assert!(
        a.last_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("150 tokens per minute")
    );
    fake.release();
    assert_eq!(first.await.unwrap(), 200);
    // Settled at 38: the next fits (38 + ~110 <= 150).
    assert_eq!(
        call(&base, "/v1/chat/completions", Some(secret), body.clone())
            .await
            .status,
        200
    );
    // 76 used: the next would not.
    assert_eq!(
        call(&base, "/v1/chat/completions", Some(secret), body).await.status,
        429
    );
}

#[tokio::test]
async fn monthly_quota_holds_under_concurrent_requests() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-quota-00000000000000000000000000000000000000";
    let dir = temp_dir();
    let base = gateway(
        &fake,
        vec![TokenRecord {
            monthly_quota: Some(200),
            ..declared("quota", secret)
        }],
        |c| c.store.data_dir = dir.path().to_owned(),
    )
    .await;
    let body = json!({"model": "chat-text", "max_tokens": 50, "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
    // All ten at once: the admitted ones are held at the upstream until the others have
    // been answered, so none settles early and frees room.
    fake.hold();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (base, body) = (base.clone(), body.clone());
            tokio::spawn(async move { call(&base, "/v1/chat/completions", Some(secret), body).await })
        })
        .collect();
    fake.wait_for_calls(3).await;
    eventually("seven refusals", || {
        tasks.iter().filter(|t| t.is_finished()).count() == 7
    })
    .await;
    assert_eq!(fake.calls(), 3);
    fake.release();
    let answers: Vec<Answer> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(ok, 3, "each reserves ~60 of 200: three fit at once");
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(a.status, 429);
        assert_eq!(
            (
                a.last_json()["error"]["type"].as_str(),
                a.last_json()["error"]["code"].as_str()
            ),
            (Some("insufficient_quota"), Some("insufficient_quota"))
        );
    }
    // 3 x 38 = 114 used, 86 left: a request without max_tokens is capped to what is
    // left (86 minus the prompt's ~10), so it cannot overrun either.
    let a = call(&base, "/api/chat", Some(secret), ollama("chat-text")).await;
    assert_eq!(a.status, 200, "{}", a.last_json());
    let sent = fake.bodies("/api/chat").last().unwrap().clone();
    let cap = sent["options"]["num_predict"].as_i64().unwrap();
    assert!((70..=80).contains(&cap), "max_tokens capped to the quota left: {sent}");
    // A record per request: four answered, seven refused.
    let store = usage_records(dir.path(), 11).await;
    let used: u64 = store
        .tokens_used_since(0)
        .await
        .unwrap()
        .into_iter()
        .find(|(d, _)| *d == digest(secret))
        .unwrap()
        .1;
    assert_eq!(used, 4 * 38);
    // 48 left: a request that reserves ~60 does not fit, and never reaches the upstream.
    let calls = fake.calls();
    let a = call(&base, "/v1/chat/completions", Some(secret), body).await;
    assert_eq!(
        (a.status, a.last_json()["error"]["code"].as_str()),
        (429, Some("insufficient_quota")),
        "{}",
        a.text
    );
    assert_eq!(fake.calls(), calls);
}

#[tokio::test]
async fn usage_records_count_tokens_for_whole_and_streamed_answers() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-usage-000000000000000000000000000000000000000";
    let dir = temp_dir();
    let base = gateway(&fake, vec![declared("usage", secret)], |c| {
        c.store.data_dir = dir.path().to_owned()
    })
    .await;
    assert_eq!(
        call(&base, "/v1/chat/completions", Some(secret), openai("chat-text"))
            .await
            .status,
        200
    );
    let streamed = json!({"model": "chat-text", "stream": true, "messages": [{"role": "user", "content": "Why?"}]});
    assert_eq!(
        call(&base, "/v1/chat/completions", Some(secret), streamed.clone())
            .await
            .status,
        200
    );
    assert_eq!(call(&base, "/api/chat", Some(secret), streamed).await.status, 200);
    assert_eq!(
        call(&base, "/api/chat", Some(secret), ollama("ghost")).await.status,
        404
    );
    let store = usage_records(dir.path(), 4).await;
    let days = store.daily_usage(0).await.unwrap();
    assert_eq!(days.len(), 1, "{days:?}");
    let day = &days[0];
    assert_eq!(day.token_prefix.as_deref(), Some(&secret[..7]));
    assert_eq!((day.requests, day.errors), (4, 1));
    assert_eq!(
        (day.prompt_tokens, day.completion_tokens),
        (3 * 31, 3 * 7),
        "the upstream's own counts"
    );
    let rows = store.recent_usage(10).await.unwrap();
    let ok: Vec<&UsageRecord> = rows.iter().filter(|r| r.status == 200).collect();
    assert!(ok.iter().all(|r| r.channel.as_deref() == Some("default")
        && r.upstream_model.as_deref() == Some("chat-text")
        && r.ttft_ms.is_some()
        && !r.estimated
        && r.client_ip.as_deref() == Some("127.0.0.1")));
    let frontends: Vec<&str> = rows.iter().map(|r| r.frontend).collect();
    assert_eq!(frontends.iter().filter(|f| **f == "ollama").count(), 2, "{frontends:?}");
    let missing = rows.iter().find(|r| r.status == 404).unwrap();
    assert_eq!(
        (
            missing.model.as_str(),
            missing.prompt_tokens,
            missing.channel.as_deref()
        ),
        ("ghost", 0, None)
    );
}

#[tokio::test]
async fn a_keys_file_is_reread_when_it_changes() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# team keys\nkey-one\n").unwrap();
    let base = diglot(&fake.url(), |c| {
        c.auth = AuthConfig {
            keys_file: Some(file.clone()),
            ..Default::default()
        }
    })
    .await;
    assert_eq!(
        call(&base, "/api/chat", Some("key-one"), ollama("chat-text"))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&base, "/api/chat", Some("key-two"), ollama("chat-text"))
            .await
            .status,
        401
    );
    std::fs::write(&file, "key-two\n").unwrap();
    eventually_async("the new keys file to be read", || async {
        call(&base, "/api/chat", Some("key-two"), ollama("chat-text"))
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(
        call(&base, "/api/chat", Some("key-one"), ollama("chat-text"))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_token_may_hold_only_so_many_requests_at_once() {
    let fake = FakeUpstream::start().await;
    let secret = "dg-one-at-a-time-0000000000000000000000000000";
    let base = gateway(
        &fake,
        vec![TokenRecord {
            max_concurrent: Some(1),
            ..declared("serial", secret)
        }],
        |_| {},
    )
    .await;
    // The first request is held at the upstream until the second has been answered.
    fake.hold();
    let first = tokio::spawn({
        let base = base.clone();
        async move { call(&base, "/api/chat", Some(secret), ollama("chat-text")).await.status }
    });
    fake.wait_for_calls(1).await;
    let a = call(&base, "/api/chat", Some(secret), ollama("chat-text")).await;
    assert_eq!(a.status, 429);
    assert!(
        a.last_json()["error"]
            .as_str()
            .unwrap()
            .contains("1 requests at a time"),
        "{}",
        a.last_json()
    );
    fake.release();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        call(&base, "/api/chat", Some(secret), ollama("chat-text")).await.status,
        200,
        "the slot is back"
    );
}

#[tokio::test]
async fn only_admins_manage_models() {
    let fake = FakeUpstream::start().await;
    let (user, admin) = (
        "dg-user-0000000000000000000000000000000000000",
        "dg-admin-000000000000000000000000000000000000",
    );
    let tokens = vec![
        declared("user", user),
        TokenRecord::for_secret("admin", admin, Role::Admin),
    ];
    let base = gateway(&fake, tokens, |_| {}).await;
    let delete = |token: &'static str| {
        client()
            .delete(format!("{base}/api/delete"))
            .bearer_auth(token)
            .json(&json!({"model": "qwen3:8b"}))
            .send()
    };
    let res = delete(user).await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("needs an admin token"));
    assert!(fake.requests("/api/delete").is_empty(), "not forwarded");
    assert_eq!(delete(admin).await.unwrap().status(), 200);
    assert_eq!(fake.requests("/api/delete").len(), 1);
    // Pulling a model that is already served is an answer, not management.
    let pull = call(
        &base,
        "/api/pull",
        Some(user),
        json!({"model": "chat-text", "stream": false}),
    )
    .await;
    assert_eq!((pull.status, &pull.last_json()), (200, &json!({"status": "success"})));
    let pull = call(
        &base,
        "/api/pull",
        Some(user),
        json!({"model": "brand-new:7b", "stream": false}),
    )
    .await;
    assert_eq!(pull.status, 403);
}
