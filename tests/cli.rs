//! The real binary: the seed proxy's quick start works unchanged, `--debug` shows the
//! traffic without secrets, and every shipped profile loads.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
