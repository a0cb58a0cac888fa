//! The admin API (`/admin/api`, issue 19) changing the running gateway: tokens, channels,
//! per-model settings and settings made through it apply to the next request, are kept
//! in the store, and each change is audited without secrets. The contract is
//! `notes/admin-api.md`; signing in and its defences are in `admin_security.rs`, usage
//! (logs, dashboard, `/me`, the live tail) in `admin_usage.rs`.

mod common;

use common::*;
use diglot::store::secrets::digest;
use serde_json::{Value, json};

fn openai(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
}

fn ollama(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false})
}

/// The fields of a Token in the contract.
const TOKEN_FIELDS: &[&str] = &[
    "id",
    "name",
    "prefix",
    "role",
    "enabled",
    "models",
    "ips",
    "rpm",
    "tpm",
    "monthly_quota",
    "used_this_month",
    "max_concurrent",
    "expires_at",
    "created_at",
    "last_used_at",
];

#[tokio::test]
async fn a_token_made_through_the_api_works_at_once_and_each_change_applies_to_the_next_request() {
    let gw = AdminGateway::start(|_| {}).await;
    let admin = gw.admin().await;
    let v1 = |token: Option<&str>, model: &str| {
        let (base, body) = (gw.base.clone(), openai(model));
        let token = token.map(str::to_owned);
        async move { call(&base, "/v1/chat/completions", token.as_deref(), body).await }
    };
    assert_eq!(
        v1(None, "chat-text").await.status,
        200,
        "no token yet: loopback needs none"
    );

    let (token, secret) = admin.create_token(json!({"name": "ci-bot"})).await;
    assert!(
        secret.starts_with("dg-") && secret.len() >= 40,
        "a generated secret: {secret}"
    );
    for field in TOKEN_FIELDS {
        assert!(token.get(*field).is_some(), "a Token has '{field}': {token}");
    }
    assert_eq!(
        (&token["name"], &token["role"], &token["enabled"], &token["rpm"]),
        (&json!("ci-bot"), &json!("user"), &json!(true), &Value::Null),
        "{token}"
    );
    assert_eq!(token["prefix"], secret[..7], "the prefix shown is the secret's start");
    assert!(
        token.get("secret").is_none() && token.get("digest").is_none(),
        "{token}"
    );
    let id = id_of(&token);
    let path = format!("/admin/api/tokens/{id}");

    // Kept in the store, as a digest.
    let stored = gw.store().tokens().await.unwrap();
    let record = stored
        .iter()
        .find(|t| t.name == "ci-bot")
        .unwrap_or_else(|| panic!("the token is in the store: {stored:?}"));
    assert_eq!(record.digest, digest(&secret));
    assert_eq!(
        record.id.map(|id| id.to_string()),
        Some(id.clone()),
        "the API's id is the store's"
    );

    // The secret was in the create answer only.
    for read in ["/admin/api/tokens", path.as_str()] {
        let a = admin.get(read).await;
        assert_eq!(a.status, 200, "GET {read}: {}", a.text);
        for hidden in [secret.as_str(), &digest(&secret), "\"secret\"", "\"digest\""] {
            assert!(!a.text.contains(hidden), "GET {read} shows {hidden:?}: {}", a.text);
        }
    }
    assert_eq!(admin.get_ok(&path).await["name"], "ci-bot");

    // One request a minute, set before its first request.
    let a = admin.patch(&path, json!({"rpm": 1})).await;
    assert_eq!((a.status, &a.json()["rpm"]), (200, &json!(1)), "{}", a.text);
    assert_eq!(v1(Some(&secret), "chat-text").await.status, 200, "works at once on /v1");
    assert_eq!(
        v1(None, "chat-text").await.status,
        401,
        "a token in the store turns auth on"
    );
    let a = call(&gw.base, "/api/chat", Some(&secret), ollama("chat-text")).await;
    assert_eq!(a.status, 429, "the second request in a minute with rpm 1: {}", a.text);
    let a = admin.patch(&path, json!({"rpm": null})).await;
    assert_eq!(
        (a.status, &a.json()["rpm"]),
        (200, &Value::Null),
        "null clears: {}",
        a.text
    );
    let a = call(&gw.base, "/api/chat", Some(&secret), ollama("chat-text")).await;
    assert_eq!(
        a.status, 200,
        "works on /api/chat once the limit is cleared: {}",
        a.text
    );

    // An allow-list: another model is refused, its own still served.
    let a = admin.patch(&path, json!({"models": ["chat-text"]})).await;
    assert_eq!(
        (a.status, &a.json()["models"]),
        (200, &json!(["chat-text"])),
        "{}",
        a.text
    );
    let a = v1(Some(&secret), "chat-json").await;
    assert_eq!(a.status, 403, "a model outside the allow-list: {}", a.text);
    assert_eq!(v1(Some(&secret), "chat-text").await.status, 200);
    let record = gw
        .store()
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "ci-bot");
    assert_eq!(
        record.map(|t| t.models),
        Some(vec!["chat-text".to_owned()]),
        "the store has it"
    );

    // Disabled, then enabled again.
    let a = admin.patch(&path, json!({"enabled": false})).await;
    assert_eq!((a.status, &a.json()["enabled"]), (200, &json!(false)), "{}", a.text);
    let a = v1(Some(&secret), "chat-text").await;
    assert_eq!(a.status, 401, "a disabled token: {}", a.text);
    assert!(a.text.contains("disabled"), "the refusal says why: {}", a.text);
    assert_eq!(admin.patch(&path, json!({"enabled": true})).await.status, 200);
    assert_eq!(v1(Some(&secret), "chat-text").await.status, 200, "enabled again");

    // Revoked: refused at once, gone from the API and the store. Another token keeps
    // tokens required (with none left, loopback callers need none: see safe_defaults.rs).
    admin.create_token(json!({"name": "keeper"})).await;
    let a = admin.delete(&path).await;
    assert_eq!(a.status, 204, "DELETE {path}: {}", a.text);
    assert_eq!(v1(Some(&secret), "chat-text").await.status, 401, "a revoked token");
    let a = call(&gw.base, "/api/chat", Some(&secret), ollama("chat-text")).await;
    assert_eq!(a.status, 401, "a revoked token on /api/chat: {}", a.text);
    admin_error(&admin.get(&path).await, 404, None, "GET a deleted token");
    let stored = gw.store().tokens().await.unwrap();
    assert!(
        stored.iter().all(|t| t.name != "ci-bot"),
        "deleted from the store: {stored:?}"
    );
}

const KEY_A: &str = "sk-alpha-11111111111111111111111111";
const KEY_B: &str = "sk-bravo-22222222222222222222222222";
const KEY_C: &str = "sk-charlie-333333333333333333333333";

/// The keys `fake`'s chat requests carried, in order.
fn keys_used(fake: &FakeUpstream) -> Vec<String> {
    fake.requests("/v1/chat/completions")
        .iter()
        .map(|r| {
            r.header("authorization")
                .unwrap_or_default()
                .trim_start_matches("Bearer ")
                .to_owned()
        })
        .collect()
}

/// The channel `name` of a `{"data": [Channel]}` list.
fn listed(list: &Value, name: &str) -> Value {
    data(list)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("channel '{name}' is listed: {list}"))
}

#[tokio::test]
async fn a_channel_added_through_the_api_serves_at_once_hides_its_keys_and_survives_a_restart() {
    let gw = AdminGateway::start(|_| {}).await;
    let second = FakeUpstream::start().await;
    let admin = gw.admin().await;
    let created = admin
        .post(
            "/admin/api/channels",
            json!({"name": "second", "kind": "openai", "url": second.url(),
                   "models": ["oai-text"], "aliases": {"m2": "oai-text"},
                   "keys_text": format!("# two keys\n{KEY_A}\n{KEY_B}\n")}),
        )
        .await;
    assert_eq!(created.status, 201, "POST /admin/api/channels: {}", created.text);
    assert!(
        !created.text.contains(KEY_A) && !created.text.contains(KEY_B),
        "{}",
        created.text
    );

    // At once: a chat for m2 reaches the second upstream, with one of its keys.
    let (status, answer) = post(&gw.base, "/v1/chat/completions", openai("m2")).await.status_json();
    assert_eq!(status, 200, "a chat for the new channel's model: {answer}");
    let text = sse_text("chat/oai-text.sse", &["content"]);
    assert_eq!(answer["choices"][0]["message"]["content"], text.as_str());
    let sent = second.bodies("/v1/chat/completions");
    assert_eq!(sent.len(), 1, "the second upstream got the chat");
    assert_eq!(sent[0]["model"], "oai-text", "as the alias's target");
    assert!(
        [KEY_A, KEY_B].contains(&keys_used(&second)[0].as_str()),
        "{:?}",
        keys_used(&second)
    );
    assert_eq!(gw.fake.calls(), 0, "the profile's channel got nothing");

    // Listed with its source and key prefixes, never its keys.
    let a = admin.get("/admin/api/channels").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        !a.text.contains(KEY_A) && !a.text.contains(KEY_B),
        "keys shown: {}",
        a.text
    );
    let channel = listed(&a.json(), "second");
    assert_eq!(
        (&channel["source"], &channel["kind"], &channel["url"]),
        (&json!("store"), &json!("openai"), &json!(second.url())),
        "{channel}"
    );
    let prefixes = channel["key_prefixes"].as_array().expect("key_prefixes").clone();
    assert_eq!(prefixes.len(), 2, "one prefix per key: {channel}");
    for (prefix, key) in prefixes.iter().zip([KEY_A, KEY_B]) {
        let start = prefix.as_str().unwrap().trim_end_matches('…').trim_end_matches("...");
        assert!(
            key.starts_with(start) && start.len() <= 10,
            "{prefix} is a short start of its key"
        );
    }
    for secret_field in ["api_key", "keys", "keys_text"] {
        assert!(
            channel.get(secret_field).is_none(),
            "'{secret_field}' returned: {channel}"
        );
    }
    assert!(channel["health"].is_object(), "its health: {channel}");
    assert_eq!(listed(&a.json(), "main")["source"], "profile");
    assert_eq!(admin.get_ok("/admin/api/channels/second").await["name"], "second");
    admin_error(
        &admin.get("/admin/api/channels/nope").await,
        404,
        None,
        "GET an unknown channel",
    );

    // The profile's channel is read-only, and its name taken.
    let a = admin.patch("/admin/api/channels/main", json!({"weight": 2})).await;
    admin_error(&a, 409, None, "PATCH a profile channel");
    admin_error(
        &admin.delete("/admin/api/channels/main").await,
        409,
        None,
        "DELETE a profile channel",
    );
    let a = admin
        .post("/admin/api/channels", json!({"name": "main", "url": second.url()}))
        .await;
    admin_error(&a, 409, Some("name"), "POST a channel named as the profile's");

    // The test: models and a chat against the live upstream...
    let t = admin.post("/admin/api/channels/second/test", json!({})).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let t = t.json();
    assert_eq!(
        (&t["ok"], &t["models"]["ok"], &t["chat"]),
        (&json!(true), &json!(true), &Value::Null),
        "{t}"
    );
    assert!(t["models"]["count"].as_u64() >= Some(1), "{t}");
    let names = t["models"]["names"].as_array().expect("models.names");
    assert!(!names.is_empty() && names.len() <= 20, "{t}");
    let t = admin
        .post(
            "/admin/api/channels/second/test",
            json!({"chat": true, "model": "oai-text"}),
        )
        .await
        .json();
    assert_eq!((&t["ok"], &t["chat"]["ok"]), (&json!(true), &json!(true)), "{t}");
    assert_eq!(
        (&t["chat"]["model"], &t["chat"]["text"]),
        (&json!("oai-text"), &json!(text)),
        "{t}"
    );
    // ...and against a dead one.
    let dead = json!({"name": "dead", "kind": "openai", "url": dead_url(), "models": ["nothing-here"]});
    assert_eq!(admin.post("/admin/api/channels", dead).await.status, 201);
    let t = admin.post("/admin/api/channels/dead/test", json!({})).await.json();
    assert_eq!((&t["ok"], &t["models"]["ok"]), (&json!(false), &json!(false)), "{t}");
    assert!(
        t["models"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "says why: {t}"
    );

    // Disabled, it serves nothing (and says so in its view); enabled, it serves again.
    let a = admin
        .patch("/admin/api/channels/second", json!({"enabled": false}))
        .await;
    assert_eq!((a.status, &a.json()["enabled"]), (200, &json!(false)), "{}", a.text);
    let refused = post(&gw.base, "/v1/chat/completions", openai("m2")).await;
    assert_eq!(refused.status, 404, "no channel serves m2 now: {}", refused.text);
    let a = admin
        .patch("/admin/api/channels/second", json!({"enabled": true}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(post(&gw.base, "/v1/chat/completions", openai("m2")).await.status, 200);

    // A change merges; the keys stay unless new ones are given, then apply at once.
    let a = admin.patch("/admin/api/channels/second", json!({"weight": 3})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let (changed, kept) = (a.json(), prefixes.len());
    assert_eq!(
        (&changed["weight"], changed["key_prefixes"].as_array().map(Vec::len)),
        (&json!(3), Some(kept))
    );
    assert_eq!(changed["aliases"], json!({"m2": "oai-text"}), "untouched fields stay");
    let a = admin
        .patch("/admin/api/channels/second", json!({"keys_text": KEY_C}))
        .await;
    assert_eq!(a.json()["key_prefixes"].as_array().map(Vec::len), Some(1), "{}", a.text);
    assert_eq!(post(&gw.base, "/v1/chat/completions", openai("m2")).await.status, 200);
    assert_eq!(
        keys_used(&second).last().map(String::as_str),
        Some(KEY_C),
        "the new key at once"
    );

    // Kept in the store: another diglot on the same data dir lists it and routes to it.
    let again = gw.restart().await;
    let list = Admin::login(&again, ADMIN_PASSWORD)
        .await
        .get_ok("/admin/api/channels")
        .await;
    assert_eq!(listed(&list, "second")["source"], "store", "after a restart: {list}");
    let calls = second.calls();
    assert_eq!(post(&again, "/v1/chat/completions", openai("m2")).await.status, 200);
    assert_eq!(second.calls(), calls + 1, "the restarted gateway routed m2 to it");
    assert_eq!(keys_used(&second).last().map(String::as_str), Some(KEY_C));

    // Deleted: gone, and its models with it.
    let a = admin.delete("/admin/api/channels/second").await;
    assert_eq!(a.status, 204, "{}", a.text);
    admin_error(
        &admin.get("/admin/api/channels/second").await,
        404,
        None,
        "a deleted channel",
    );
    let calls = second.calls();
    let a = post(&gw.base, "/v1/chat/completions", openai("m2")).await;
    assert_eq!(a.status, 404, "its model is no longer served: {}", a.text);
    assert_eq!(second.calls(), calls, "nothing reached it after the delete");
}

#[tokio::test]
async fn model_settings_put_through_the_api_rename_alias_and_force_options_at_once() {
    let gw = AdminGateway::start(|_| {}).await;
    let admin = gw.admin().await;
    let display_name = |base: String| async move {
        let models = get_json(&format!("{base}/v1/models")).await;
        let entry = data(&models).into_iter().find(|m| m["id"] == "chat-text");
        entry.unwrap_or_else(|| panic!("chat-text listed: {models}"))["name"].clone()
    };
    assert_eq!(display_name(gw.base.clone()).await, Value::Null, "no display name yet");

    let put = json!({"display_name": "Chat Text", "aliases": ["fast"], "forced": {"temperature": 0.1}});
    let a = admin.put("/admin/api/models/chat-text", put).await;
    assert_eq!(a.status, 200, "PUT /admin/api/models/chat-text: {}", a.text);
    let answer = a.json();
    assert_eq!(
        (&answer["pattern"], &answer["source"]),
        (&json!("chat-text"), &json!("store")),
        "{answer}"
    );
    assert_eq!(answer["settings"]["display_name"], "Chat Text", "{answer}");

    // At once: the display name listed, the alias served as the real name, the option forced.
    assert_eq!(display_name(gw.base.clone()).await, "Chat Text");
    let body = json!({"model": "fast", "temperature": 0.9, "messages": [{"role": "user", "content": "hi"}]});
    let a = post(&gw.base, "/v1/chat/completions", body).await;
    assert_eq!(a.status, 200, "a chat for the alias: {}", a.text);
    let sent = gw
        .fake
        .bodies("/api/chat")
        .pop()
        .expect("the chat reached the upstream");
    assert_eq!(sent["model"], "chat-text", "the upstream gets the real name: {sent}");
    assert_eq!(sent["options"]["temperature"], 0.1, "the forced value wins: {sent}");

    let models = admin.get_ok("/admin/api/models").await;
    let entry = data(&models).into_iter().find(|m| m["name"] == "chat-text");
    let entry = entry.unwrap_or_else(|| panic!("chat-text in /admin/api/models: {models}"));
    assert_eq!(
        (
            &entry["display_name"],
            &entry["aliases"],
            &entry["forced"],
            &entry["policy_source"]
        ),
        (
            &json!("Chat Text"),
            &json!(["fast"]),
            &json!({"temperature": 0.1}),
            &json!("store")
        ),
        "{entry}"
    );
    let via_main = json!({"channel": "main", "upstream_model": "chat-text"});
    assert!(
        entry["channels"].as_array().is_some_and(|c| c.contains(&via_main)),
        "{entry}"
    );

    // A bad option is refused, naming the table, and changes nothing.
    let a = admin
        .put("/admin/api/models/chat-text", json!({"defaults": {"nonsense": 1}}))
        .await;
    let message = admin_error(&a, 400, Some("defaults"), "an unknown option");
    assert!(message.contains("nonsense"), "names the option: {message}");
    assert_eq!(
        display_name(gw.base.clone()).await,
        "Chat Text",
        "the refused PUT changed nothing"
    );

    // Deleted: back to the upstream's own.
    assert_eq!(admin.delete("/admin/api/models/chat-text").await.status, 204);
    assert_eq!(
        display_name(gw.base.clone()).await,
        Value::Null,
        "the display name is gone"
    );
    let a = post(&gw.base, "/v1/chat/completions", openai("fast")).await;
    assert_eq!(a.status, 404, "the alias is gone: {}", a.text);
    admin_error(
        &admin.delete("/admin/api/models/chat-text").await,
        404,
        None,
        "DELETE it twice",
    );
}

/// The settings the admin API may change (the contract's list).
const SETTINGS: &[&str] = &[
    "limits.rpm",
    "limits.tpm",
    "limits.ip_rpm",
    "limits.ip_tpm",
    "limits.default_max_tokens",
    "limits.token_rpm",
    "limits.token_tpm",
    "limits.token_monthly_quota",
    "limits.token_max_concurrent",
    "auth.allow_ips",
    "auth.deny_ips",
    "auth.trust_proxy",
    "cache.embeddings",
    "cache.chat",
    "cache.chat_nondeterministic",
    "cache.max_bytes",
    "cache.ttl_secs",
];

#[tokio::test]
async fn settings_say_where_they_come_from_and_changes_apply_live() {
    let gw = AdminGateway::start(|c| c.limits.tpm = 1_000_000).await;
    let admin = gw.admin().await;
    let setting = |all: &Value, key: &str| {
        (
            all["settings"][key]["value"].clone(),
            all["settings"][key]["source"].clone(),
        )
    };
    let all = admin.get_ok("/admin/api/settings").await;
    for key in SETTINGS {
        let entry = &all["settings"][key];
        assert!(
            entry["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{key}: {entry}"
        );
        assert!(entry.get("value").is_some(), "{key} has a value: {entry}");
    }
    assert_eq!(setting(&all, "limits.rpm"), (json!(0), json!("default")));
    assert_eq!(setting(&all, "limits.tpm"), (json!(1_000_000), json!("profile")));

    let a = admin.patch("/admin/api/settings", json!({"limits.rpm": 1})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        setting(&a.json(), "limits.rpm"),
        (json!(1), json!("store")),
        "the same shape as GET"
    );
    assert_eq!(
        post(&gw.base, "/v1/chat/completions", openai("chat-text")).await.status,
        200
    );
    let a = post(&gw.base, "/v1/chat/completions", openai("chat-text")).await;
    assert_eq!(
        a.status, 429,
        "the second request within a minute at limits.rpm = 1: {}",
        a.text
    );

    let a = admin.patch("/admin/api/settings", json!({"limits.rpm": null})).await;
    assert_eq!(
        setting(&a.json(), "limits.rpm"),
        (json!(0), json!("default")),
        "{}",
        a.text
    );
    let a = post(&gw.base, "/v1/chat/completions", openai("chat-text")).await;
    assert_eq!(a.status, 200, "no limit again: {}", a.text);

    let a = admin.patch("/admin/api/settings", json!({"limits.nope": 1})).await;
    admin_error(&a, 400, Some("limits.nope"), "an unknown setting");
    let a = admin.patch("/admin/api/settings", json!({"limits.rpm": "many"})).await;
    admin_error(&a, 400, Some("limits.rpm"), "a setting of the wrong type");
    let a = admin
        .patch("/admin/api/settings", json!({"limits.rpm": 5, "cache.nope": true}))
        .await;
    admin_error(&a, 400, Some("cache.nope"), "one bad key among good ones");
    let all = admin.get_ok("/admin/api/settings").await;
    assert_eq!(
        setting(&all, "limits.rpm"),
        (json!(0), json!("default")),
        "a refused PATCH applies nothing"
    );
}

/// Whether an audit entry's target names the object (by name or id).
fn names(entry: &Value, candidates: &[&str]) -> bool {
    let target = entry["target"].as_str().unwrap_or_default();
    candidates.iter().any(|c| !c.is_empty() && target.contains(c))
}

#[tokio::test]
async fn every_change_is_audited_with_who_and_from_where_and_no_secret() {
    let gw = AdminGateway::start(|_| {}).await;
    let admin = gw.admin().await;
    let key = "sk-audited-key-99999999999999999999";
    let (ci, ci_secret) = admin.create_token(json!({"name": "ci"})).await;
    let (ops, ops_secret) = admin.create_token(json!({"name": "ops", "role": "admin"})).await;
    let ci_path = format!("/admin/api/tokens/{}", id_of(&ci));
    let changes = [
        admin.patch(&ci_path, json!({"rpm": 10})).await,
        admin
            .post(
                "/admin/api/channels",
                json!({"name": "extra", "kind": "openai", "url": dead_url(), "models": ["x"], "keys_text": key}),
            )
            .await,
        admin.patch("/admin/api/channels/extra", json!({"weight": 2})).await,
        admin
            .put("/admin/api/models/chat-text", json!({"display_name": "Chat"}))
            .await,
        admin.delete("/admin/api/models/chat-text").await,
        admin.patch("/admin/api/settings", json!({"limits.rpm": 100})).await,
        admin.delete("/admin/api/channels/extra").await,
    ];
    for a in &changes {
        assert!(
            (200..300).contains(&a.status),
            "each change succeeds: {} {}",
            a.status,
            a.text
        );
    }
    // Refusals and reads change nothing, and are not recorded.
    assert_eq!(admin.post("/admin/api/tokens", json!({"name": "ci"})).await.status, 409);
    admin.get_ok("/admin/api/tokens").await;
    // The last change by the admin token, as a bearer.
    let a = Admin::bearer(&gw.base, &ops_secret).delete(&ci_path).await;
    assert_eq!(a.status, 204, "{}", a.text);

    let a = admin.get("/admin/api/audit").await;
    assert_eq!(a.status, 200, "{}", a.text);
    for secret in [
        ci_secret.as_str(),
        &ops_secret,
        key,
        ADMIN_PASSWORD,
        &digest(&ci_secret),
        &digest(&ops_secret),
    ] {
        assert!(
            !a.text.contains(secret),
            "the audit shows a secret ({secret}): {}",
            a.text
        );
    }
    let mut entries = data(&a.json());
    entries.sort_by_key(|e| (e["at_ms"].as_i64(), id_of(e).parse::<i64>().ok()));
    let password = "admin (password)";
    let by_token = format!("token {}", &ops_secret[..7]);
    let (ci_id, ops_id) = (id_of(&ci), id_of(&ops));
    let expected: Vec<(&str, &str, Vec<&str>)> = vec![
        (password, "token.create", vec!["ci", &ci_id]),
        (password, "token.create", vec!["ops", &ops_id]),
        (password, "token.update", vec!["ci", &ci_id]),
        (password, "channel.create", vec!["extra"]),
        (password, "channel.update", vec!["extra"]),
        (password, "model.put", vec!["chat-text"]),
        (password, "model.delete", vec!["chat-text"]),
        (password, "settings.update", vec!["limits.rpm", "settings"]),
        (password, "channel.delete", vec!["extra"]),
        (&by_token, "token.delete", vec!["ci", &ci_id]),
    ];
    let seen: Vec<(Value, Value, Value)> = entries
        .iter()
        .map(|e| (e["actor"].clone(), e["action"].clone(), e["target"].clone()))
        .collect();
    assert_eq!(
        entries.len(),
        expected.len(),
        "one entry per change, oldest first: {seen:?}"
    );
    for (entry, (actor, action, target)) in entries.iter().zip(&expected) {
        assert_eq!(
            (&entry["actor"], &entry["action"]),
            (&json!(actor), &json!(action)),
            "{entry}"
        );
        assert_eq!(entry["ip"], "127.0.0.1", "{entry}");
        assert!(names(entry, target), "the target names one of {target:?}: {entry}");
    }
    let (created, updated, deleted) = (&entries[0], &entries[2], &entries[9]);
    assert!(created["before"].is_null() && created["after"].is_object(), "{created}");
    assert_eq!(
        (&updated["before"]["rpm"], &updated["after"]["rpm"]),
        (&Value::Null, &json!(10)),
        "{updated}"
    );
    assert!(deleted["before"].is_object() && deleted["after"].is_null(), "{deleted}");

    // Pages of three visit every entry once.
    let mut ids = Vec::new();
    let mut path = "/admin/api/audit?limit=3".to_owned();
    loop {
        let page = admin.get_ok(&path).await;
        let got = data(&page);
        assert!(got.len() <= 3, "limit=3: {page}");
        ids.extend(got.iter().map(id_of));
        match &page["next"] {
            Value::Null => break,
            next => path = format!("/admin/api/audit?limit=3&before={}", id_of(&json!({"id": next}))),
        }
        assert!(ids.len() <= expected.len(), "paging goes on past the end: {ids:?}");
    }
    let mut all: Vec<String> = entries.iter().map(id_of).collect();
    all.sort();
    ids.sort();
    assert_eq!(ids, all, "every entry once");
}
