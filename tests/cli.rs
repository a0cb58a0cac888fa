//! The real binary: the seed proxy's quick start works unchanged, `--debug` shows the
//! traffic without secrets, and every shipped profile loads.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn seed_quick_start_with_debug_logging() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let mut command = diglot_command();
    command
        .args(["--target", &fake.url(), "--api-key", "sk-secret-4242", "--debug"])
        .env("DIGLOT_STORE__DATA_DIR", dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let diglot = Binary::start(command).await;
    let res = client()
        .post(format!("{}/api/chat", diglot.base))
        .json(&json!({"model": "oai-text", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text: String = res
        .text()
        .await
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    assert_eq!(
        fake.requests("/v1/chat/completions")[0].header("authorization"),
        Some("Bearer sk-secret-4242")
    );

    let log = diglot.kill();
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

/// The real binary on a free port in front of `upstream`, with the store in `dir`.
async fn serve(dir: &std::path::Path, upstream: &str, env: &[(&str, &str)]) -> Binary {
    let mut command = diglot_command();
    command
        .args(["--upstream", upstream])
        .env("DIGLOT_STORE__DATA_DIR", dir)
        .env("DIGLOT_ROUTING__CHECK_INTERVAL_SECS", "0");
    for (k, v) in env {
        command.env(k, v);
    }
    Binary::start(command).await
}

/// Waits until a chat with `token` gets `wanted` (the server rereads tokens every
/// 2 s). Asks every 250 ms: alice may make 100 requests a minute.
async fn until_status(base: &str, token: &str, wanted: u16) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let status = chat_status(base, token).await;
        if status == wanted {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{token} still gets {status}, not {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
    let dir = dir.path();
    let created = diglot_cli(
        dir,
        &[
            "token", "create", "--name", "alice", "--models", "chat-*", "--rpm", "100",
        ],
    );
    let secret = created.lines().next().unwrap().to_owned();
    assert!(secret.starts_with("dg-") && secret.len() == 43, "{created}");
    assert!(created.contains("only time it is shown"));
    let listed = diglot_cli(dir, &["token", "list"]);
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

    let server = serve(dir, &fake.url(), &[]).await;
    let base = server.base.clone();
    assert_eq!(chat_status(&base, &secret).await, 200);
    assert_eq!(chat_status(&base, "dg-wrong").await, 401);
    // A token made while the server runs works once the server has looked again.
    let bob = diglot_cli(dir, &["token", "create", "--name", "bob", "--role", "admin"]);
    until_status(&base, bob.lines().next().unwrap(), 200).await;

    // Disabled, enabled and revoked within the reload interval.
    diglot_cli(dir, &["token", "update", "alice", "--disable"]);
    until_status(&base, &secret, 401).await;
    diglot_cli(dir, &["token", "update", "alice", "--enable"]);
    until_status(&base, &secret, 200).await;
    diglot_cli(dir, &["token", "revoke", "alice"]);
    until_status(&base, &secret, 401).await;
    drop(server);

    let usage = diglot_cli(dir, &["usage", "--json"]);
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
    let server = serve(dir.path(), &fake.url(), &[("API_TOKEN", "legacy-secret")]).await;
    let base = server.base.clone();
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
    let server = serve(dir.path(), &fake.url(), &[]).await;
    let base = server.base.clone();
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
    // Stopped once some requests are in flight.
    fake.wait_for_calls(5).await;
    let stopping = std::thread::spawn(move || server.stop().0);
    let mut answered = 0;
    for task in load {
        if task.await.unwrap().is_some_and(|body| body.contains("\"done\":true")) {
            answered += 1;
        }
    }
    assert!(stopping.join().unwrap().success());
    assert!(answered > 0);
    let store = diglot::store::open_data_dir(dir.path()).unwrap();
    let written = store.recent_usage(100).await.unwrap();
    let ok = written.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, answered, "every answered request has its record");
}

/// Runs `diglot ARGS` against the store in `dir` with `input` on stdin.
fn diglot_cli_with_input(dir: &std::path::Path, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_diglot"))
        .args(args)
        .env("DIGLOT_STORE__DATA_DIR", dir)
        .env_remove("DIGLOT_PROFILE")
        .env_remove("DIGLOT_ADMIN__PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_password_set_on_the_command_line_signs_in_and_is_kept_only_as_a_hash() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let dir = dir.path();
    let short = diglot_cli_with_input(dir, &["admin", "set-password"], "short\n");
    assert!(!short.status.success(), "a short password is refused");
    assert!(String::from_utf8_lossy(&short.stderr).contains("shorter than 12"));

    let password = "a long enough admin password";
    let set = diglot_cli_with_input(dir, &["admin", "set-password"], &format!("{password}\n"));
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let mut file = std::fs::read(dir.join("diglot.db")).unwrap();
    file.extend(std::fs::read(dir.join("diglot.db-wal")).unwrap_or_default());
    let bytes = String::from_utf8_lossy(&file);
    assert!(!bytes.contains(password), "the password is not stored");
    assert!(bytes.contains("$argon2id$v=19$"), "its argon2id hash is");

    let hashed = diglot_cli_with_input(dir, &["admin", "hash-password"], &format!("{password}\n"));
    let hash = String::from_utf8_lossy(&hashed.stdout).trim().to_owned();
    assert!(
        hash.starts_with("$argon2id$v=19$") && !hash.contains(password),
        "{hash}"
    );

    // A running gateway on the same store signs in with it (and not with another).
    let server = serve(dir, &fake.url(), &[]).await;
    let login = |password: &str| {
        client()
            .post(format!("{}/admin/api/login", server.base))
            .json(&json!({ "password": password }))
            .send()
    };
    assert_eq!(login("not the password").await.unwrap().status(), 401);
    let ok = login(password).await.unwrap();
    assert_eq!(ok.status(), 200);
    let answer: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(answer["role"], "admin", "{answer}");
}
