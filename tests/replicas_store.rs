//! Several replicas on one PostgreSQL (and one Redis), both started by the suite on
//! loopback: what the admin API changes on one replica applies on the other within two
//! seconds, a console session works on either, and a rolling restart of both under load
//! loses no usage record.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn ollama(model: &str) -> Value {
    json!({"model": model, "messages": user("Why is the sky blue?"), "stream": false})
}

/// Two in-process replicas sharing a new PostgreSQL database and `redis`.
async fn pair(redis: &RedisServer) -> (AdminGateway, String) {
    let database = fresh_database(&postgres()).await;
    let a = AdminGateway::start(|c| {
        c.store.url = database.clone();
        c.redis.url = redis.url();
    })
    .await;
    let b = a.restart().await;
    (a, b)
}

/// Waits until `check` holds, and fails unless that took under two seconds.
async fn within_two_seconds<F: Future<Output = bool>>(what: &str, check: impl FnMut() -> F) {
    let started = Instant::now();
    eventually_async(what, check).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{what} took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_change_on_one_replica_applies_on_the_other_within_two_seconds() {
    let redis = redis();
    let (a, b) = pair(&redis).await;
    let admin = a.admin().await;

    // A token made on A works on B; revoked on A, B refuses it (another token stays, so
    // tokens stay required).
    let (_, kept) = admin.create_token(json!({"name": "stays"})).await;
    let (token, secret) = admin.create_token(json!({"name": "shared"})).await;
    let on_b = || call(&b, "/api/chat", Some(&secret), ollama("chat-text"));
    assert_eq!(on_b().await.status, 200);
    let revoked = admin.delete(&format!("/admin/api/tokens/{}", id_of(&token))).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    within_two_seconds("B refuses the revoked token", || async { on_b().await.status == 401 }).await;

    // A channel added on A serves on B.
    let second = FakeUpstream::start().await;
    let created = admin
        .post(
            "/admin/api/channels",
            json!({"name": "second", "kind": "openai", "url": second.url(), "models": ["oai-text"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    within_two_seconds("B serves the channel made on A", || async {
        let body = json!({"model": "oai-text", "messages": user("hi")});
        call(&b, "/v1/chat/completions", Some(&kept), body).await.status == 200
    })
    .await;
    assert!(second.calls() >= 1);

    // A model setting and a setting changed on A apply on B.
    let put = admin
        .put("/admin/api/models/chat-text", json!({"display_name": "Llama (shared)"}))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    within_two_seconds("B shows the display name set on A", || async {
        let models = send(client().get(format!("{b}/v1/models")).bearer_auth(&kept)).await;
        models.text.contains("Llama (shared)")
    })
    .await;
    let patched = admin.patch("/admin/api/settings", json!({"limits.rpm": 1})).await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    within_two_seconds("B applies the rpm set on A", || async {
        call(&b, "/api/chat", Some(&kept), ollama("chat-text")).await.status == 429
    })
    .await;
}

#[tokio::test]
async fn a_console_session_works_on_either_replica_and_ends_on_both() {
    let redis = redis();
    let (a, b) = pair(&redis).await;
    let on_a = a.admin().await;
    let on_b = on_a.at(&b);
    assert_eq!(on_b.get("/admin/api/session").await.status, 200, "B knows A's session");
    // Changes with the session's CSRF token work on B too.
    let (_, _) = on_b.create_token(json!({"name": "made-on-b"})).await;
    let out = on_a.post("/admin/api/logout", json!({})).await;
    assert_eq!(out.status, 204, "{}", out.text);
    within_two_seconds("B ends the session signed out on A", || async {
        on_b.get("/admin/api/session").await.status == 401
    })
    .await;
}

#[tokio::test]
async fn a_rolling_restart_of_both_replicas_under_load_loses_no_usage_record() {
    let redis = redis();
    let fake = FakeUpstream::start().await;
    let database = fresh_database(&postgres()).await;
    let dir = temp_dir();
    let profile = format!(
        "[store]\nurl = \"{database}\"\n[redis]\nurl = \"{}\"\n[upstream]\nkind = \"openai\"\n",
        redis.url()
    );
    std::fs::write(dir.path().join("fleet.toml"), &profile).unwrap();
    let start = || {
        let mut command = diglot_command();
        command.args([
            "--profile",
            dir.path().join("fleet.toml").to_str().unwrap(),
            "--target",
            &fake.url(),
        ]);
        Binary::start(command)
    };
    let mut binaries = vec![start().await, start().await];
    let replicas = Arc::new(std::sync::Mutex::new(
        binaries.iter().map(|b| b.base.clone()).collect::<Vec<_>>(),
    ));

    // Load: four callers, each going to the replicas in turn.
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let (replicas, answered, stop) = (replicas.clone(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                let mut turn = i;
                while !stop.load(Ordering::Relaxed) {
                    turn += 1;
                    let base = {
                        let list = replicas.lock().unwrap();
                        list[turn % list.len()].clone()
                    };
                    let body = json!({"model": "oai-text", "messages": user("hi")});
                    let sent = client()
                        .post(format!("{base}/v1/chat/completions"))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(response) = sent {
                        // An answer, whatever its status, is a request diglot accepted.
                        let _ = response.bytes().await;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Each in turn: a new replica joins, the load balancer forgets the old one, which
    // then stops (SIGTERM: it finishes what it took and writes its usage records).
    for _ in 0..2 {
        let fresh = start().await;
        {
            let mut list = replicas.lock().unwrap();
            list.push(fresh.base.clone());
            list.remove(0);
        }
        binaries.push(fresh);
        let old = binaries.remove(0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, log) = tokio::task::spawn_blocking(move || old.stop()).await.unwrap();
        assert!(status.success(), "{log}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    for binary in binaries {
        let (status, log) = tokio::task::spawn_blocking(move || binary.stop()).await.unwrap();
        assert!(status.success(), "{log}");
    }
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered > 50, "the load ran: {answered} answers");
    let store = diglot::store::open(&diglot::config::StoreConfig {
        url: database.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        store.usage_count().await.unwrap(),
        answered,
        "one usage record per answered request"
    );
}
