//! The official client SDKs against diglot in front of the fake upstreams. The SDKs are
//! installed outside the repository by `tests/clients/setup.sh` (pinned, reused).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

/// Runs a client script with the base URL as its argument and fails with its output.
fn run(program: &str, script: &str, base: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let home = clients_home();
    let (program, env_key, env_value) = match program {
        "python" => (venv_python(), "PYTHONUNBUFFERED", "1".to_string()),
        _ => (
            PathBuf::from("node"),
            "NODE_PATH",
            home.join("node/node_modules").display().to_string(),
        ),
    };
    let out = Command::new(program)
        .arg(&script)
        .arg(base)
        .env(env_key, env_value)
        .output()
        .expect("client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed:\n--- stdout\n{stdout}\n--- stderr\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_against_ollama_backend() {
    let (fake, base) = setup_ollama().await;
    let output = tokio::task::spawn_blocking(move || run("python", "openai_sdk.py", &format!("{base}/v1")))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
    // What the SDK's requests became upstream.
    let chats = fake.bodies("/api/chat");
    assert!(chats.iter().any(|b| b["tools"].is_array()), "tools reached Ollama");
    assert!(
        chats.iter().any(|b| b["messages"][0]["images"].is_array()),
        "images reached Ollama as base64"
    );
    assert!(
        chats.iter().any(|b| b["format"].is_object()),
        "json_schema became format"
    );
    assert!(
        chats.iter().any(|b| b["think"].is_string()),
        "reasoning_effort became think"
    );
    assert!(!fake.bodies("/api/embed").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_python_against_openai_backend() {
    let (fake, base) = setup_openai().await;
    let output = tokio::task::spawn_blocking(move || run("python", "ollama_sdk.py", &base))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
    let chats = fake.bodies("/v1/chat/completions");
    // The tool round trip: object arguments went back upstream as a JSON string.
    assert!(chats.iter().any(|b| {
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["tool_calls"][0]["function"]["arguments"].is_string())
    }));
    assert!(chats.iter().any(|b| {
        b["messages"][0]["content"][1]["image_url"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("data:image/png;base64,"))
    }));
    assert!(chats.iter().any(|b| b["response_format"]["type"] == "json_schema"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_js_against_openai_backend() {
    let (_fake, base) = setup_openai().await;
    let output = tokio::task::spawn_blocking(move || run("node", "ollama_js.cjs", &base))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_against_ollama_backend() {
    let (fake, base) = setup_ollama().await;
    let output = tokio::task::spawn_blocking(move || run("python", "anthropic_sdk.py", &base))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
    let chats = fake.bodies("/api/chat");
    assert!(chats.iter().any(|b| b["think"] == true), "thinking became think");
    assert!(
        chats.iter().any(|b| b["options"]["num_predict"] == 0),
        "count_tokens evaluated the prompt only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_js_sdk_against_ollama_backend() {
    let (_fake, base) = setup_ollama().await;
    let output = tokio::task::spawn_blocking(move || run("node", "anthropic_js.cjs", &base))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_and_ollama_python_against_anthropic_backend() {
    let (fake, base) = setup_anthropic().await;
    let output = tokio::task::spawn_blocking(move || run("python", "anthropic_upstream.py", &base))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
    let sent = fake.requests("/v1/messages");
    assert!(sent.iter().all(|r| r.header("x-api-key") == Some("sk-ant-test")));
    assert!(sent.iter().any(|r| r.body["system"] == "Be kind."), "system hoisted");
    assert!(
        sent.iter().any(|r| r.body["thinking"]["type"] == "enabled"),
        "think became thinking"
    );
    let last = &sent.last().unwrap().body;
    assert_eq!(
        last["messages"][1]["content"][0],
        json!({"type": "thinking", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
            "thinking": "I need to find the GCD of 1071 and 462. 1071 = 2 * 462 + 147, 462 = 3 * 147 + 21, 147 = 7 * 21."}),
        "the signed thinking went back"
    );
    assert_eq!(
        last["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(last["thinking"], json!({"type": "enabled", "budget_tokens": 2000}));
}

/// diglot with a store (for stored responses) in front of a fake Ollama.
async fn setup_ollama_with_store(dir: &tempfile::TempDir) -> (FakeUpstream, String) {
    let fake = FakeUpstream::start().await;
    let path = dir.path().to_owned();
    let base = diglot(&fake.url(), move |c| c.store.data_dir = path).await;
    (fake, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_responses_against_ollama_backend() {
    let dir = temp_dir();
    let (fake, base) = setup_ollama_with_store(&dir).await;
    let output = tokio::task::spawn_blocking(move || run("python", "openai_responses.py", &format!("{base}/v1")))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
    let chats = fake.bodies("/api/chat");
    assert!(
        chats.iter().any(|b| b["think"] == "low"),
        "reasoning.effort became think"
    );
    assert!(
        chats
            .iter()
            .any(|b| b["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool")),
        "the tool results went upstream as tool messages"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_node_responses_against_ollama_backend() {
    let dir = temp_dir();
    let (_fake, base) = setup_ollama_with_store(&dir).await;
    let output = tokio::task::spawn_blocking(move || run("node", "openai_responses.cjs", &format!("{base}/v1")))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ai_sdk_default_openai_provider_against_ollama_backend() {
    let dir = temp_dir();
    let (fake, base) = setup_ollama_with_store(&dir).await;
    let output = tokio::task::spawn_blocking(move || run("node", "ai_sdk.cjs", &format!("{base}/v1")))
        .await
        .unwrap();
    println!("{output}");
    assert!(output.contains("ALL OK"), "{output}");
    // The provider spoke the Responses API, and the stored answer it referred to went upstream.
    let paths: Vec<String> = fake.received().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().all(|p| p != "/v1/chat/completions"), "{paths:?}");
    let chats = fake.bodies("/api/chat");
    assert!(
        chats.iter().any(|b| b["messages"][1]
            == serde_json::json!({"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."})),
        "the referenced item reached the upstream"
    );
}
