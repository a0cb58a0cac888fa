//! Safe defaults, with the real binary: authentication that never opens by accident,
//! one store whatever the working directory, built-in profiles, misspelt variables and
//! channel changes said in the log, the container's health check, per-command help,
//! and secrets and internal URLs kept from clients.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

/// `diglot ARGS` with the store in `dir`, from the crate's directory.
fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut command = diglot_command();
    command.args(args).env("DIGLOT_STORE__DATA_DIR", dir);
    run_to_end(command)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The token `diglot token create` printed (its first line).
fn created_token(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().next().unwrap().to_owned()
}

async fn chat(base: &str, token: Option<&str>) -> Answer {
    call(
        base,
        "/v1/chat/completions",
        token,
        json!({"model": "chat-text", "messages": user("hi")}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_tokens_are_always_required() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let mut command = diglot_command();
    command
        .args(["--upstream", &fake.url()])
        .env("DIGLOT_STORE__DATA_DIR", dir.path());
    let diglot = Binary::start_on(command, "0.0.0.0").await;
    let (status, body) = chat(&diglot.base, None).await.status_json();
    assert_eq!(status, 401, "no token exists, and the gateway is not open: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("diglot token create --name NAME"), "{message}");
    assert_eq!(fake.calls(), 0);
    eventually("the warning that no token exists", || {
        diglot.log().contains("API tokens are required") && diglot.log().contains("none exists")
    })
    .await;

    let token = created_token(&cli(dir.path(), &["token", "create", "--name", "ops"]));
    eventually_async("the new token taken", || async {
        chat(&diglot.base, Some(&token)).await.status == 200
    })
    .await;

    // The CLI reads the configuration the server runs with (as in a container).
    let listen = diglot
        .base
        .trim_start_matches("http://")
        .replace("127.0.0.1", "0.0.0.0");
    let out = cli(dir.path(), &["--listen", &listen, "token", "revoke", "ops"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("last token") && said.contains("refuses every call (401)"),
        "{said}"
    );
    eventually_async("the revoked token refused", || async {
        chat(&diglot.base, Some(&token)).await.status == 401
    })
    .await;
    assert_eq!(chat(&diglot.base, None).await.status, 401, "still not open");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_last_token_on_loopback_is_said_and_logged() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let token = created_token(&cli(dir.path(), &["token", "create", "--name", "me"]));
    let mut command = diglot_command();
    command
        .args(["--upstream", &fake.url()])
        .env("DIGLOT_STORE__DATA_DIR", dir.path());
    let diglot = Binary::start(command).await;
    assert_eq!(chat(&diglot.base, None).await.status, 401);
    assert_eq!(chat(&diglot.base, Some(&token)).await.status, 200);

    let out = cli(dir.path(), &["token", "revoke", "me"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("last token") && said.contains("WITHOUT a token"),
        "{said}"
    );
    eventually("the log's warning that authentication is off", || {
        diglot.log().contains("authentication changed: it is now OFF")
    })
    .await;
    assert_eq!(chat(&diglot.base, None).await.status, 200);
    let log = diglot.kill();
    assert_eq!(log.matches("authentication changed").count(), 1, "{log}");
}

#[test]
fn the_store_does_not_depend_on_the_working_directory() {
    let home = temp_dir();
    let (first, second) = (temp_dir(), temp_dir());
    let run = |cwd: &Path, args: &[&str]| {
        let mut command = diglot_command();
        command
            .args(args)
            .current_dir(cwd)
            .env("HOME", home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("DIGLOT_STORE__DATA_DIR");
        run_to_end(command)
    };
    let expected = home.path().join(".local/share/diglot/diglot.db");
    let out = run(first.path(), &["token", "create", "--name", "alice"]);
    created_token(&out);
    assert!(
        text(&out.stderr).contains(&format!("store {}", expected.display())),
        "the store used is printed: {}",
        text(&out.stderr)
    );
    assert!(expected.is_file());
    assert!(!first.path().join("data").exists(), "no store in the working directory");

    let out = run(second.path(), &["token", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("alice"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(&expected.display().to_string()));

    let out = run(second.path(), &["token", "create", "--name", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a token named 'alice' exists already"),
        "{}",
        text(&out.stderr)
    );
    let out = run(second.path(), &["usage"]);
    assert!(out.status.success() && text(&out.stderr).contains(&expected.display().to_string()));
}

#[test]
fn an_empty_or_unreadable_store_stops_the_server() {
    for (content, said) in [(&b""[..], "is empty"), (&b"not a database at all"[..], "diglot.db")] {
        let dir = temp_dir();
        std::fs::write(dir.path().join("diglot.db"), content).unwrap();
        let mut command = diglot_command();
        command
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .env("DIGLOT_STORE__DATA_DIR", dir.path());
        let out = run_to_end(command);
        assert!(!out.status.success(), "refused to start");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(said), "{stderr}");
        let out = cli(dir.path(), &["token", "list"]);
        assert!(!out.status.success(), "the CLI refuses it too");
        assert_eq!(
            std::fs::read(dir.path().join("diglot.db")).unwrap(),
            content,
            "left as it was"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn built_in_profiles_work_from_any_directory_and_a_local_file_wins() {
    let elsewhere = temp_dir();
    let mut command = diglot_command();
    command
        .args(["--profile", "kerlig", "check-config"])
        .current_dir(elsewhere.path());
    let out = run_to_end(command);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["listen"], "127.0.0.1:11434", "kerlig's own settings");

    let mut command = diglot_command();
    command
        .args(["--profile", "gateway", "check-config"])
        .env("OPENROUTER_API_KEY", "sk-or-test")
        .current_dir(elsewhere.path());
    assert!(run_to_end(command).status.success());

    let mut command = diglot_command();
    command.args(["--profile", "kerlig"]).current_dir(elsewhere.path());
    let diglot = Binary::start(command).await;
    eventually("the profile named in the log", || {
        diglot.log().contains("the built-in profile 'kerlig'")
    })
    .await;
    drop(diglot);

    std::fs::create_dir(elsewhere.path().join("profiles")).unwrap();
    std::fs::write(elsewhere.path().join("profiles/kerlig.toml"), "base_path = \"/mine\"\n").unwrap();
    let mut command = diglot_command();
    command
        .args(["--profile", "kerlig", "check-config"])
        .current_dir(elsewhere.path());
    let out = run_to_end(command);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["base_path"], "/mine", "the file wins");
    let mut command = diglot_command();
    command.args(["--profile", "kerlig"]).current_dir(elsewhere.path());
    let diglot = Binary::start(command).await;
    eventually("the file named in the log", || {
        diglot.log().contains("the file profiles/kerlig.toml")
    })
    .await;
}

#[test]
fn a_misspelt_variable_is_named_with_the_closest_setting() {
    let mut command = diglot_command();
    command
        .arg("check-config")
        .env("DIGLOT_UPSTREM__URL", "http://gpu:11434")
        .env("DIGLOT_CLIENTS_HOME", "/tmp/clients")
        .env("DIGLOT_ROUTING__CHECK_INTERVAL_SECS", "0");
    let out = run_to_end(command);
    assert!(out.status.success(), "a warning, not an error");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DIGLOT_UPSTREM__URL names no setting")
            && stderr.contains("did you mean DIGLOT_UPSTREAM__URL?"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("names no setting").count(), 1, "{stderr}");
}

/// A profile with two channels in front of `a` and `b`, the circuit tuned to open after
/// two failures in two requests and to probe again after 300 ms, checks every 200 ms.
fn two_channels(a: &str, b: &str) -> String {
    format!(
        "[routing]\nmax_retries = 0\nmin_requests = 2\nfailure_ratio = 1.0\ncooldown_secs = 0.3\n\
         check_interval_secs = 0.2\n\n\
         [[channels]]\nname = \"alpha\"\nurl = \"{a}\"\nmodels = [\"chat-text\"]\npriority = 1\n\n\
         [[channels]]\nname = \"beta\"\nurl = \"{b}\"\nmodels = [\"chat-text\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_answering_going_down_and_recovering_are_logged_once_each() {
    let alpha = FakeUpstream::start().await;
    let dead = dead_url();
    let dir = temp_dir();
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, two_channels(&alpha.url(), &dead)).unwrap();
    let mut command = diglot_command();
    command.args(["--profile", profile.to_str().unwrap()]);
    let diglot = Binary::start(command).await;
    eventually("a start-up line per channel", || {
        let log = diglot.log();
        log.lines()
            .any(|l| l.contains("channel answered") && l.contains("alpha"))
            && log
                .lines()
                .any(|l| l.contains("channel did not answer") && l.contains("beta"))
    })
    .await;

    alpha.fail_listing(Some(503));
    eventually("alpha down", || diglot.log().contains("channel is down")).await;
    alpha.fail_listing(None);
    eventually("alpha up", || diglot.log().contains("channel is up again")).await;

    // 500s are the model's failures: its own circuit on alpha opens, not alpha's.
    alpha.fail_next(2, 500, None);
    for _ in 0..2 {
        assert_eq!(chat(&diglot.base, None).await.status, 502);
    }
    eventually("the model's circuit opened", || {
        diglot.log().contains("model circuit opened")
    })
    .await;
    eventually_async("the model recovered", || async {
        chat(&diglot.base, None).await.status == 200 && diglot.log().contains("model recovered")
    })
    .await;
    let log = diglot.kill();
    let alpha_lines = |what: &str| log.lines().filter(|l| l.contains(what) && l.contains("alpha")).count();
    for what in [
        "channel is down",
        "channel is up again",
        "model circuit opened",
        "model recovered",
    ] {
        assert_eq!(alpha_lines(what), 1, "{what}:\n{log}");
    }
    let model_lines = log
        .lines()
        .filter(|l| l.contains("model circuit opened") || l.contains("model recovered"));
    assert!(
        model_lines.clone().count() == 2 && model_lines.into_iter().all(|l| l.contains("chat-text")),
        "{log}"
    );
    assert!(!log.contains("channel circuit opened"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_check_probes_the_running_server() {
    let fake = FakeUpstream::start().await;
    let mut command = diglot_command();
    command.args(["--upstream", &fake.url()]);
    let diglot = Binary::start(command).await;
    let listen = diglot
        .base
        .trim_start_matches("http://")
        .replace("127.0.0.1", "0.0.0.0");
    let mut command = diglot_command();
    command.args(["--listen", &listen, "health-check"]);
    let out = run_to_end(command);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("200"), "{}", text(&out.stdout));

    let mut command = diglot_command();
    command.args([
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "health-check",
        "--timeout",
        "2",
    ]);
    let out = run_to_end(command);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("did not answer"));
}

#[test]
fn token_create_help_lists_only_its_own_options_each_described() {
    let mut command = diglot_command();
    command.args(["token", "create", "--help"]);
    let out = run_to_end(command);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for own in [
        "--name",
        "--role",
        "--models",
        "--ips",
        "--expires-in-days",
        "--quota",
        "--rpm",
        "--tpm",
        "--max-concurrent",
    ] {
        assert!(help.contains(own), "{own}:\n{help}");
    }
    for foreign in ["--listen", "--upstream", "--target", "--api-key", "--debug"] {
        assert!(!help.contains(foreign), "{foreign}:\n{help}");
    }
    // Every option line is followed by its description.
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with('-') {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            assert!(
                !next.is_empty() && !next.starts_with('-'),
                "{line} has no description:\n{help}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_internal_urls_stay_in() {
    let mut command = diglot_command();
    command
        .arg("check-config")
        .env("DIGLOT_UPSTREAM__URL", "http://bob:hunter2@127.0.0.1:11434")
        .env(
            "DIGLOT_TELEMETRY__OTLP_ENDPOINT",
            "https://ci:otel-pass@collector.example:4318",
        );
    let out = run_to_end(command);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shown.contains("http://bob:<redacted>@127.0.0.1:11434"), "{shown}");
    assert!(
        shown.contains("https://ci:<redacted>@collector.example:4318"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2") && !shown.contains("otel-pass"), "{shown}");

    // A client hears of the channel by name; the URL stays in the log.
    let dead = dead_url();
    let mut command = diglot_command();
    command.args(["--target", &dead]);
    let diglot = Binary::start(command).await;
    let (status, body) = chat(&diglot.base, None).await.status_json();
    assert!(status == 502 || status == 503, "{status}: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'default'"), "{message}");
    let port = dead.rsplit(':').next().unwrap();
    assert!(!message.contains(port), "no internal address: {message}");
    let answer = post(&diglot.base, "/api/chat", json!({"model": "m", "messages": user("hi")})).await;
    assert!(!answer.text.contains(port), "{}", answer.text);
    let log = diglot.kill();
    assert!(log.contains(&dead), "the URL is in the log for the operator:\n{log}");
}
