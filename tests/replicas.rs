//! Several replicas as one fleet: two diglots sharing one Redis (started by the suite on
//! loopback, `tests/common/services.rs`), with requests spread over both. Every limit
//! holds for the fleet, not per process; an upstream one replica finds failing is skipped
//! by the other; and while Redis is down, `[redis] on_error` is followed and shared mode
//! comes back with it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use diglot::config::{Config, RedisFallback, Role, TokenRecord, UpstreamKind};
use serde_json::{Value, json};

const SECRET: &str = "dg-fleet-token-0000000000000000000000000000";

fn token(limits: impl FnOnce(&mut TokenRecord)) -> TokenRecord {
    let mut token = TokenRecord::for_secret("fleet", SECRET, Role::User);
    limits(&mut token);
    token
}

fn chat(max_tokens: u32) -> Value {
    json!({"model": "oai-text", "messages": user("hi"), "max_tokens": max_tokens})
}

/// Two replicas on `redis`, in front of `fake` (an OpenAI-compatible upstream).
async fn fleet(redis: &RedisServer, fake: &FakeUpstream, tweak: impl Fn(&mut Config)) -> [String; 2] {
    let url = fake.url();
    let replica = || {
        diglot(&url, |c| {
            c.upstream.kind = UpstreamKind::Openai;
            c.redis.url = redis.url();
            c.metrics.token = "scrape".into();
            tweak(c);
        })
    };
    [replica().await, replica().await]
}

async fn ask(base: &str, body: Value) -> Answer {
    call(base, "/v1/chat/completions", Some(SECRET), body).await
}

/// Waits until every quota reservation is settled (settling follows the answer).
async fn settled(redis: &RedisServer) {
    let connection = redis.connection().await;
    eventually_async("the quota reservations are settled", || {
        let mut connection = connection.clone();
        async move {
            let held: Vec<String> = redis::cmd("KEYS")
                .arg("diglot:quota:held:*")
                .query_async(&mut connection)
                .await
                .unwrap();
            held.is_empty()
        }
    })
    .await;
}

/// Waits until both replicas listen for each other's events (each subscribes at its
/// start; an event published before that is, by design, missed).
async fn both_follow_the_fleet(redis: &RedisServer) {
    let connection = redis.connection().await;
    eventually_async("both replicas subscribe to the fleet's events", || {
        let mut connection = connection.clone();
        async move {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("diglot:events")
                .query_async(&mut connection)
                .await
                .unwrap();
            counts.first().is_some_and(|(_, subscribers)| *subscribers == 2)
        }
    })
    .await;
}

/// The Prometheus line of `name` (with its labels), as a number.
async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = send(client().get(format!("{base}/metrics")).bearer_auth("scrape"))
        .await
        .text;
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_tokens_rpm_holds_for_the_fleet_not_per_replica() {
    let redis = redis();
    let fake = FakeUpstream::start().await;
    let replicas = fleet(&redis, &fake, |c| c.tokens = vec![token(|t| t.rpm = Some(10))]).await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let answer = ask(&replicas[i % 2], chat(16)).await;
        if answer.status == 429 {
            assert!(
                answer.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("10 requests per minute")
            );
            assert_eq!(answer.header("x-ratelimit-remaining-requests"), Some("0"));
        }
        statuses.push(answer.status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (10, 20), "{statuses:?}");
    assert_eq!(fake.calls(), 10);
}

/// Over `rediss://` the fleet shares its limits as over `redis://`, and Redis's certificate
/// is verified: a replica not told to trust the test authority runs on its own limits.
#[tokio::test]
async fn over_tls_the_fleet_shares_its_limits_and_verifies_redis() {
    let redis = redis_tls();
    let authority = redis.certificates.as_ref().unwrap().authority.display().to_string();
    let fake = FakeUpstream::start().await;
    let replicas = fleet(&redis, &fake, |c| {
        c.tokens = vec![token(|t| t.rpm = Some(4))];
        c.redis.tls_ca_file = authority.clone();
    })
    .await;
    let mut ok = 0;
    for i in 0..10 {
        if ask(&replicas[i % 2], chat(16)).await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 4, "rpm = 4 for the fleet, not per replica");
    assert_eq!(metric(&replicas[0], "diglot_redis_up").await, Some(1.0));

    let untrusting = diglot(&fake.url(), |c| {
        c.upstream.kind = UpstreamKind::Openai;
        c.redis.url = redis.url();
        c.metrics.token = "scrape".into();
        c.tokens = vec![token(|t| t.rpm = Some(4))];
    })
    .await;
    assert_eq!(
        ask(&untrusting, chat(16)).await.status,
        200,
        "its own limits, not the fleet's"
    );
    assert_eq!(metric(&untrusting, "diglot_redis_up").await, Some(0.0));
}

#[tokio::test]
async fn a_monthly_quota_is_never_overrun_by_concurrent_requests() {
    // Each request may use its prompt plus 40 (its estimate) and uses 24 (the fixture's
    // usage): at most quota / estimate run at once, and settling frees the difference.
    const QUOTA: u64 = 500;
    let redis = redis();
    let fake = FakeUpstream::start().await;
    fake.set_line_delay(Duration::from_millis(5));
    let replicas = fleet(&redis, &fake, |c| {
        c.tokens = vec![token(|t| t.monthly_quota = Some(QUOTA))]
    })
    .await;
    let answers = futures::future::join_all((0..100).map(|i| ask(&replicas[i % 2], chat(40)))).await;
    let mut used = 0;
    let mut estimate = u64::MAX;
    for answer in &answers {
        match answer.status {
            200 => used += answer.json()["usage"]["total_tokens"].as_u64().unwrap(),
            429 => {
                // Refused only when what was left (unreserved) could not hold it.
                let message = answer.json()["error"]["message"].as_str().unwrap().to_owned();
                let left: u64 = match message.split_once(" has ") {
                    Some((_, rest)) if rest.starts_with("used all") => 0,
                    Some((_, rest)) => rest.split(' ').next().unwrap().parse().unwrap(),
                    None => panic!("a quota refusal says what is left: {message}"),
                };
                if let Some(may_use) = message.split("may use ").nth(1) {
                    estimate = may_use.split(' ').next().unwrap().parse().unwrap();
                }
                assert!(left < estimate, "refused with headroom left: {message}");
            }
            status => panic!("{status}: {}", answer.text),
        }
    }
    let served = answers.iter().filter(|a| a.status == 200).count() as u64;
    assert!(used <= QUOTA, "{used} tokens used of a quota of {QUOTA}");
    // At least as many as fit at once: later ones fit in what earlier ones did not use.
    assert!(estimate < u64::MAX, "some request was refused");
    assert!(served >= QUOTA / estimate, "only {served} served at {estimate} each");
    assert_eq!(used, served * 24);
    // The fleet's count is exact: Redis holds what was settled, nothing reserved.
    let mut redis_client = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("diglot:quota:used:*")
        .query_async(&mut redis_client)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let counted: u64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut redis_client)
        .await
        .unwrap();
    assert_eq!(counted, used);
    eventually_async("the reservations are given back", || {
        let mut redis_client = redis_client.clone();
        async move {
            let held: Vec<String> = redis::cmd("KEYS")
                .arg("diglot:quota:held:*")
                .query_async(&mut redis_client)
                .await
                .unwrap();
            held.is_empty()
        }
    })
    .await;
}

/// With a quota nearly used up, an answer of unset length is capped to what is left
/// within the same one admission (no second look at Redis); one that asks for more is
/// refused.
#[tokio::test]
async fn an_answer_of_unset_length_is_capped_to_the_quota_left() {
    let redis = redis();
    let fake = FakeUpstream::start().await;
    let replicas = fleet(&redis, &fake, |c| {
        c.tokens = vec![token(|t| t.monthly_quota = Some(100))]
    })
    .await;
    let refused = ask(&replicas[0], chat(500)).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json()["error"]["code"], "insufficient_quota");
    assert_eq!(fake.calls(), 0);

    let unset = json!({"model": "oai-text", "messages": user("hi")});
    let answer = ask(&replicas[1], unset).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let sent = fake.bodies("/v1/chat/completions").last().unwrap().clone();
    let cap = sent["max_tokens"].as_i64().or(sent["max_completion_tokens"].as_i64());
    assert!(
        cap.is_some_and(|cap| (80..100).contains(&cap)),
        "capped to the quota left less the prompt: {sent}"
    );
    settled(&redis).await;
}

#[tokio::test]
async fn a_channels_max_concurrency_holds_across_the_fleet() {
    let redis = redis();
    let fake = FakeUpstream::start().await;
    let replicas = fleet(&redis, &fake, |c| {
        c.upstream.max_concurrency = 2;
        c.routing.queue_timeout_secs = 10.0;
    })
    .await;
    fake.hold();
    let requests = futures::future::join_all((0..6).map(|i| {
        let base = replicas[i % 2].clone();
        async move { post(&base, "/v1/chat/completions", chat(16)).await }
    }));
    let watch = async {
        fake.wait_for_calls(2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let at_once = fake.calls();
        fake.release();
        at_once
    };
    let (answers, at_once) = tokio::join!(requests, watch);
    assert_eq!(
        at_once, 2,
        "two replicas with max_concurrency = 2 sent {at_once} at once"
    );
    // The others waited for a slot and were served as slots came free.
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(fake.calls(), 6);
}

#[tokio::test]
async fn an_upstream_failing_on_one_replica_is_skipped_by_the_other() {
    let redis = redis();
    let flaky = FakeUpstream::start().await;
    let steady = FakeUpstream::start().await;
    let replicas = fleet(&redis, &flaky, |c| {
        c.upstream = Default::default();
        c.channels = vec![
            diglot::config::UpstreamConfig {
                priority: 1,
                ..channel("flaky", &flaky, UpstreamKind::Openai)
            },
            channel("steady", &steady, UpstreamKind::Openai),
        ];
        c.routing.min_requests = 3;
        c.routing.cooldown_secs = 60.0;
        c.routing.check_interval_secs = 0.0;
    })
    .await;
    both_follow_the_fleet(&redis).await;
    flaky.fail_next(1000, 503, None);
    // Replica A finds it failing (each request fails over to the steady channel).
    for _ in 0..4 {
        let answer = post(&replicas[0], "/v1/chat/completions", chat(16)).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let flaky_calls = flaky.calls();
    assert!(flaky_calls >= 3, "A tried the flaky channel: {flaky_calls}");
    // Replica B has sent it nothing, yet learns its circuit is open.
    let started = Instant::now();
    // (An upstream's 5xx opens the circuit of the model that failed.)
    let model_state = |health: &Value| health["channels"][0]["models"]["oai-text"].clone();
    eventually_async("B sees the flaky channel's circuit for the model open", || async {
        let health = get_json(&format!("{}/health", replicas[1])).await;
        model_state(&health)["state"] == "open"
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let health = get_json(&format!("{}/health", replicas[1])).await;
    assert!(
        model_state(&health).to_string().contains("seen by another replica"),
        "{health}"
    );
    for _ in 0..3 {
        assert_eq!(post(&replicas[1], "/v1/chat/completions", chat(16)).await.status, 200);
    }
    assert_eq!(flaky.calls(), flaky_calls, "B skipped the channel A found failing");
}

#[tokio::test]
async fn a_key_benched_on_one_replica_is_left_out_by_the_other() {
    let redis = redis();
    let fake = FakeUpstream::start().await;
    fake.reject_key("sk-revoked");
    let replicas = fleet(&redis, &fake, |c| {
        c.upstream.keys = vec!["sk-revoked".into(), "sk-good".into()];
        c.routing.bad_key_secs = 60.0;
    })
    .await;
    both_follow_the_fleet(&redis).await;
    let keys_used = || {
        fake.requests("/v1/chat/completions")
            .iter()
            .map(|r| r.header("authorization").unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // A meets the refused key (and fails over to the good one).
    while !keys_used().contains(&"Bearer sk-revoked".to_owned()) {
        assert_eq!(post(&replicas[0], "/v1/chat/completions", chat(16)).await.status, 200);
    }
    let refused_before = keys_used().iter().filter(|k| *k == "Bearer sk-revoked").count();
    // B, which never tried it, leaves it out from then on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..6 {
        assert_eq!(post(&replicas[1], "/v1/chat/completions", chat(16)).await.status, 200);
    }
    let refused_after = keys_used().iter().filter(|k| *k == "Bearer sk-revoked").count();
    assert_eq!(
        refused_after,
        refused_before,
        "B sent nothing with the key A benched: {:?}",
        keys_used()
    );
}

#[tokio::test]
async fn while_redis_is_down_each_replica_keeps_its_share_then_shares_again() {
    let mut redis = redis();
    let fake = FakeUpstream::start().await;
    let replicas = fleet(&redis, &fake, |c| {
        c.tokens = vec![token(|t| t.rpm = Some(10))];
        c.redis.replicas_hint = 2;
        c.redis.timeout_ms = 200;
    })
    .await;
    assert_eq!(ask(&replicas[0], chat(16)).await.status, 200);
    redis.kill();
    // Each replica now allows its share, 10 / 2 a minute, and says why it refuses.
    for base in &replicas {
        let started = Instant::now();
        let statuses: Vec<u16> = futures::future::join_all((0..8).map(|_| ask(base, chat(16))))
            .await
            .iter()
            .map(|a| a.status)
            .collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no request waits long on a dead Redis"
        );
    }
    assert_eq!(metric(&replicas[0], "diglot_redis_up").await, Some(0.0));
    assert!(
        metric(&replicas[0], "diglot_redis_fallbacks_total{mode=\"local\"}")
            .await
            .unwrap_or(0.0)
            >= 8.0
    );
    let ready = get_json(&format!("{}/health/ready", replicas[0])).await;
    assert_eq!(
        (&ready["status"], &ready["redis"]),
        (&json!("ready"), &json!("unreachable")),
        "{ready}"
    );

    // Back (empty): the fleet counts together again.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let statuses: Vec<u16> = futures::future::join_all((0..14).map(|i| ask(&replicas[i % 2], chat(16))))
        .await
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(metric(&replicas[1], "diglot_redis_up").await, Some(1.0));
}

#[tokio::test]
async fn with_on_error_reject_a_redis_outage_is_a_503_until_it_is_back() {
    let mut redis = redis();
    let fake = FakeUpstream::start().await;
    let replicas = fleet(&redis, &fake, |c| {
        c.tokens = vec![token(|t| t.rpm = Some(100))];
        c.redis.on_error = RedisFallback::Reject;
        c.redis.timeout_ms = 200;
    })
    .await;
    assert_eq!(ask(&replicas[0], chat(16)).await.status, 200);
    let ready = get_json(&format!("{}/health/ready", replicas[0])).await;
    assert_eq!(
        (&ready["status"], &ready["redis"]),
        (&json!("ready"), &json!("ok")),
        "{ready}"
    );
    redis.kill();
    let answer = ask(&replicas[1], chat(16)).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert!(
        answer.json()["error"]["message"].as_str().unwrap().contains("Redis"),
        "{}",
        answer.text
    );
    assert!(answer.header("retry-after").is_some());
    let ready = send(client().get(format!("{}/health/ready", replicas[1]))).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json()["redis"], "unreachable");
    assert_eq!(
        get_json(&format!("{}/health/live", replicas[1])).await["status"],
        "alive"
    );
    let calls = fake.calls();
    redis.restart();
    eventually_async("requests are served again", || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ask(&replicas[1], chat(16)).await.status == 200
    })
    .await;
    assert_eq!(fake.calls(), calls + 1, "nothing was sent upstream while refusing");
}

#[tokio::test]
async fn quotas_are_rebuilt_from_the_store_when_redis_comes_back_empty() {
    let mut redis = redis();
    let fake = FakeUpstream::start().await;
    let data = temp_dir();
    let dir = data.path().to_owned();
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = UpstreamKind::Openai;
        c.redis.url = redis.url();
        c.store.data_dir = dir.clone();
        c.tokens = vec![token(|t| t.monthly_quota = Some(100))];
    })
    .await;
    for _ in 0..2 {
        assert_eq!(ask(&base, chat(40)).await.status, 200);
    }
    usage_records(&dir, 2).await;
    redis.kill();
    redis.restart();
    eventually_async("the replica sees Redis back", || async {
        get_json(&format!("{base}/health/ready")).await["redis"] == "ok"
    })
    .await;
    // 48 used before: one more (24, estimated at about 45) fits, a second would not.
    let answer = ask(&base, chat(40)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    settled(&redis).await;
    let refused = ask(&base, chat(40)).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert!(
        refused.text.contains("has 28 of its monthly 100 tokens left"),
        "{}",
        refused.text
    );
}
