//! The real binary: the seed proxy's quick start works unchanged, `--debug` shows the
//! traffic without secrets, and every shipped profile loads.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn seed_quick_start_with_debug_logging() {
    let fake = FakeUpstream::start().await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_diglot"))
        .args([
            "--listen",
            &format!(":{port}"),
            "--target",
            &fake.url(),
            "--api-key",
            "sk-secret-4242",
            "--debug",
        ])
        .env("RUST_LOG", "")
        .env("DIGLOT_STORE__DATA_DIR", temp_dir())
        .env_remove("DIGLOT_PROFILE")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if client().get(format!("{base}/")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "diglot did not start");
    let res = client()
        .post(format!("{base}/api/chat"))
        .json(&json!({"model": "oai-text", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    assert_eq!(
        fake.requests("/v1/chat/completions")[0].header("authorization"),
        Some("Bearer sk-secret-4242")
    );

    child.kill().unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    child.wait().unwrap();
    assert!(
        log.contains("upstream request") && log.contains("stream_options"),
        "outgoing payload logged:\n{log}"
    );
    assert!(
        log.contains("openai chunk") && log.contains("Rayleigh"),
        "raw upstream chunks logged:\n{log}"
    );
    assert!(log.contains("ollama chunk"), "translated chunks logged:\n{log}");
    assert!(
        !log.contains("sk-secret-4242"),
        "the API key must never be logged:\n{log}"
    );
}

#[test]
fn every_shipped_profile_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(env!("CARGO_BIN_EXE_diglot"))
            .args(["--profile", path.to_str().unwrap(), "check-config"])
            .env("OPENROUTER_API_KEY", "sk-or-test")
            .env_remove("DIGLOT_PROFILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_diglot"))
        .args(["--api-key", "sk-never-shown", "check-config"])
        .env("DIGLOT_UPSTREAM__HEADERS__X_SECRET", "hush-123")
        .env_remove("DIGLOT_PROFILE")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("<redacted>") && shown.contains("x_secret"),
        "{shown}"
    );
    assert!(
        !shown.contains("sk-never-shown") && !shown.contains("hush-123"),
        "{shown}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_diglot"))
        .args(["--profile", "nope", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("profiles/nope.toml"));
}

/// Runs `diglot ARGS` against the store in `dir`, returning stdout (and asserting success).
fn diglot_cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_diglot"))
        .args(args)
        .env("DIGLOT_STORE__DATA_DIR", dir)
        .env_remove("DIGLOT_PROFILE")
        .env_remove("API_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running diglot, killed when the test ends however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real binary on a free port with `env`, and waits until it answers.
async fn serve(dir: &std::path::Path, upstream: &str, env: &[(&str, &str)]) -> (Running, String) {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_diglot"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", upstream])
        .env("DIGLOT_STORE__DATA_DIR", dir)
        .env("DIGLOT_ROUTING__CHECK_INTERVAL_SECS", "0")
        .env_remove("DIGLOT_PROFILE")
        .env_remove("API_TOKEN")
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = Running(command.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if client().get(format!("{base}/")).send().await.is_ok() {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("diglot did not start");
}

async fn chat_status(base: &str, token: &str) -> u16 {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": "chat-text", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_lifecycle_through_the_cli() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let created = diglot_cli(
        &dir,
        &[
            "token", "create", "--name", "alice", "--models", "chat-*", "--rpm", "100",
        ],
    );
    let secret = created.lines().next().unwrap().to_owned();
    assert!(secret.starts_with("dg-") && secret.len() == 43, "{created}");
    assert!(created.contains("only time it is shown"));
    let listed = diglot_cli(&dir, &["token", "list"]);
    assert!(
        listed.contains("alice") && listed.contains(&secret[..7]) && listed.contains("100 rpm"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "never the token itself: {listed}");

    // Only the digest is in the database file.
    let mut file = std::fs::read(dir.join("diglot.db")).unwrap();
    // Whatever is still in the write-ahead log counts too.
    file.extend(std::fs::read(dir.join("diglot.db-wal")).unwrap_or_default());
    let bytes = String::from_utf8_lossy(&file);
    assert!(!bytes.contains(&secret), "the token is not stored");
    assert!(
        bytes.contains(&diglot::store::secrets::digest(&secret)),
        "its digest is"
    );

    let (server, base) = serve(&dir, &fake.url(), &[]).await;
    assert_eq!(chat_status(&base, &secret).await, 200);
    assert_eq!(chat_status(&base, "dg-wrong").await, 401);
    // A token made while the server runs works at once.
    let bob = diglot_cli(&dir, &["token", "create", "--name", "bob", "--role", "admin"]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(chat_status(&base, bob.lines().next().unwrap()).await, 200);

    diglot_cli(&dir, &["token", "update", "alice", "--disable"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        chat_status(&base, &secret).await,
        401,
        "disabled within the reload interval"
    );
    diglot_cli(&dir, &["token", "update", "alice", "--enable"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(chat_status(&base, &secret).await, 200);
    diglot_cli(&dir, &["token", "revoke", "alice"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(chat_status(&base, &secret).await, 401, "revoked");
    drop(server);

    let usage = diglot_cli(&dir, &["usage", "--json"]);
    let days: serde_json::Value = serde_json::from_str(&usage).unwrap();
    let requests: u64 = days
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["requests"].as_u64().unwrap())
        .sum();
    assert!(requests >= 3, "{usage}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_api_token_from_the_environment() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let (_server, base) = serve(&dir, &fake.url(), &[("API_TOKEN", "legacy-secret")]).await;
    assert_eq!(chat_status(&base, "legacy-secret").await, 200);
    assert_eq!(chat_status(&base, "other").await, 401);
    let res = client()
        .get(format!("{base}/health"))
        .bearer_auth("legacy-secret")
        .send()
        .await
        .unwrap();
    let health: serde_json::Value = res.json().await.unwrap();
    assert!(health["channels"].is_array(), "the legacy token is an admin: {health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_usage_record_is_lost_when_the_server_stops_under_load() {
    let fake = FakeUpstream::start().await;
    fake.set_line_delay(Duration::from_millis(20));
    let dir = temp_dir();
    let (mut server, base) = serve(&dir, &fake.url(), &[]).await;
    let pid = server.0.id();
    let load: Vec<_> = (0..40)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 5)).await;
                client()
                    .post(format!("{base}/api/chat"))
                    .json(&json!({"model": "chat-text", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let mut answered = 0;
    for task in load {
        if task.await.unwrap().is_some_and(|body| body.contains("\"done\":true")) {
            answered += 1;
        }
    }
    assert!(server.0.wait().unwrap().success());
    assert!(answered > 0);
    let store = diglot::store::open(&dir).unwrap();
    let written = store.recent_usage(100).await.unwrap();
    let ok = written.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, answered, "every answered request has its record");
}
