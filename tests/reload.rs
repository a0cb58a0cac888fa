//! Live configuration: a running diglot takes up an edited profile (an in-process reload,
//! as the admin API will call it, or the file watch), keeps in-flight requests on the
//! snapshot they started with, refuses a broken edit, and never resets limits.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use diglot::config::Source;
use diglot::http::App;
use futures::StreamExt;
use serde_json::{Value, json};

/// A profile in a directory of its own (removed with it), written whole on each edit.
struct Profile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Profile {
    fn new(text: &str) -> Self {
        let dir = temp_dir();
        let profile = Self {
            path: dir.path().join("live.toml"),
            _dir: dir,
        };
        profile.write(text);
        profile
    }

    /// Replaces the file the way editors save: a new file renamed over the old one.
    fn write(&self, text: &str) {
        let staged = self.path.with_extension("toml.new");
        std::fs::write(
            &staged,
            format!("listen = \"127.0.0.1:0\"\n[store]\ndata_dir = \"\"\n{text}"),
        )
        .unwrap();
        std::fs::rename(&staged, &self.path).unwrap();
    }

    async fn start(&self) -> (String, Arc<App>) {
        let source = Source {
            profile: Some(self.path.display().to_string()),
            overrides: Default::default(),
        };
        let (addr, app) = diglot::http::spawn_profile(source).await.unwrap();
        (format!("http://{addr}"), app)
    }
}

fn channel_toml(name: &str, fake: &FakeUpstream, models: &[&str], extra: &str) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("{m:?}")).collect();
    format!(
        "[[channels]]\nname = \"{name}\"\nkind = \"ollama\"\nurl = \"{}\"\nmodels = [{}]\n{extra}\n",
        fake.url(),
        models.join(", ")
    )
}

async fn model_ids(base: &str) -> Vec<String> {
    let list = get_json(&format!("{base}/v1/models")).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn tag_names(base: &str) -> Vec<String> {
    let tags = get_json(&format!("{base}/api/tags")).await;
    tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

/// An OpenAI chat, unstreamed: its status and body.
async fn chat(base: &str, model: &str, token: Option<&str>, extra: Value) -> (u16, Value) {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let mut request = client().post(format!("{base}/v1/chat/completions")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_channel_and_its_models_are_listed() {
    let (first, second) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let profile = Profile::new(&format!(
        "[reload]\nwatch = false\n{}",
        channel_toml("a", &first, &["chat-text"], "")
    ));
    let (base, app) = profile.start().await;
    assert_eq!(model_ids(&base).await, ["chat-text"]);
    assert_eq!(chat(&base, "chat-json", None, json!({})).await.0, 404);

    profile.write(&format!(
        "[reload]\nwatch = false\n{}{}",
        channel_toml("a", &first, &["chat-text"], ""),
        channel_toml("b", &second, &["chat-json"], "")
    ));
    app.reload("test").await.unwrap();

    assert_eq!(model_ids(&base).await, ["chat-text", "chat-json"]);
    assert_eq!(tag_names(&base).await, ["chat-text:latest", "chat-json:latest"]);
    let (status, answer) = chat(&base, "chat-json", None, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "chat-json");
    let sent = second.bodies("/api/chat");
    assert_eq!(sent.len(), 1, "the new channel's upstream got the request");
    assert_eq!(sent[0]["model"], "chat-json");
    assert!(first.requests("/api/chat").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_added_by_editing_the_file_works_within_two_seconds() {
    let fake = FakeUpstream::start().await;
    let profile = Profile::new(&channel_toml("a", &fake, &["chat-text"], ""));
    let (base, _app) = profile.start().await;
    assert_eq!(chat(&base, "fast", None, json!({})).await.0, 404);

    profile.write(&channel_toml(
        "a",
        &fake,
        &["chat-text"],
        "aliases = { fast = \"chat-text\" }",
    ));
    let saved = Instant::now();
    let answer = loop {
        let (status, answer) = chat(&base, "fast", None, json!({})).await;
        if status == 200 {
            break answer;
        }
        assert_eq!(status, 404, "{answer}");
        assert!(
            saved.elapsed() < Duration::from_secs(2),
            "the alias did not work within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer["model"], "fast", "answers carry the name the client used");
    assert_eq!(fake.bodies("/api/chat").last().unwrap()["model"], "chat-text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_profile_reloads_nothing_and_two_diglots_on_one_profile_stay_quiet() {
    // The watch also sees the file opened for reading: by another diglot on the same
    // profile (whose own reloads read it again), an editor, `cat`. None of that is an edit.
    let fake = FakeUpstream::start().await;
    let profile = Profile::new(&channel_toml("a", &fake, &["chat-text"], ""));
    let (_, first) = profile.start().await;
    let (_, second) = profile.start().await;
    let (a, b) = (first.gateway.snapshot(), second.gateway.snapshot());
    for _ in 0..5 {
        std::fs::read(&profile.path).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        Arc::ptr_eq(&a, &first.gateway.snapshot()) && Arc::ptr_eq(&b, &second.gateway.snapshot()),
        "reading the profile reloaded it"
    );
    // Nor do they keep reading it: each read is itself an open the watch sees, and taking
    // those for edits had each diglot read its profile every debounce period, forever.
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = opened.clone();
    let mut spy = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if matches!(event, Ok(e) if e.kind.is_access()) {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap();
    notify::Watcher::watch(&mut spy, &profile.path, notify::RecursiveMode::NonRecursive).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        opened.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "an idle diglot kept opening its profile"
    );
    // An edit still reloads both.
    profile.write(&channel_toml("a", &fake, &["chat-text"], "weight = 2"));
    let saved = Instant::now();
    while Arc::ptr_eq(&a, &first.gateway.snapshot()) || Arc::ptr_eq(&b, &second.gateway.snapshot()) {
        assert!(saved.elapsed() < Duration::from_secs(5), "the edit was not taken up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_through_a_removed_channel_finishes() {
    let (kept, removed) = (FakeUpstream::start().await, FakeUpstream::start().await);
    removed.set_line_delay(Duration::from_millis(100));
    let both = format!(
        "[reload]\nwatch = false\n{}{}",
        channel_toml("kept", &kept, &["chat-text"], ""),
        channel_toml("removed", &removed, &["chat-json"], "")
    );
    let profile = Profile::new(&both);
    let (base, app) = profile.start().await;

    let response = client()
        .post(format!("{base}/api/chat"))
        .json(&json!({"model": "chat-json", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    profile.write(&format!(
        "[reload]\nwatch = false\n{}",
        channel_toml("kept", &kept, &["chat-text"], "")
    ));
    app.reload("test").await.unwrap();
    assert_eq!(
        chat(&base, "chat-json", None, json!({})).await.0,
        404,
        "new requests no longer reach it"
    );

    let mut text = String::from_utf8(first.to_vec()).unwrap();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected = std::fs::read_to_string(fixture("ollama/chat/chat-json.ndjson")).unwrap();
    assert_eq!(lines.len(), expected.lines().count(), "{text}");
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{text}");
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(removed.completed_streams(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_is_refused_and_requests_keep_working() {
    let fake = FakeUpstream::start().await;
    let good = format!(
        "[reload]\nwatch = false\n{}",
        channel_toml("a", &fake, &["chat-text"], "")
    );
    let profile = Profile::new(&good);
    let (base, app) = profile.start().await;

    // Not TOML: figment names the file.
    profile.write("[[channels]\nname = ");
    let error = app.reload("test").await.unwrap_err();
    assert!(error.contains("live.toml"), "{error}");
    assert_eq!(chat(&base, "chat-text", None, json!({})).await.0, 200);

    // TOML, but no gateway can be built from it: the key is named.
    profile.write(&format!(
        "[reload]\nwatch = false\n{}[models.\"chat-*\".defaults]\ntemprature = 0.5\n",
        channel_toml("a", &fake, &["chat-text", "chat-json"], "")
    ));
    let error = app.reload("test").await.unwrap_err();
    assert!(
        error.contains("models.\"chat-*\".defaults") && error.contains("temprature"),
        "{error}"
    );
    assert_eq!(chat(&base, "chat-text", None, json!({})).await.0, 200);
    assert_eq!(model_ids(&base).await, ["chat-text"], "the old snapshot stays whole");
    assert_eq!(fake.bodies("/api/chat").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_windows_and_quota_counts_survive_a_reload() {
    let fake = FakeUpstream::start().await;
    let (limited, metered) = (
        "dg-reload-limited-token-0123456789abcdef",
        "dg-reload-metered-token-0123456789abcdef",
    );
    let tokens = format!(
        "[[tokens]]\nname = \"limited\"\ndigest = \"{}\"\nrpm = 2\n\
         [[tokens]]\nname = \"metered\"\ndigest = \"{}\"\nmonthly_quota = 100\n",
        diglot::store::secrets::digest(limited),
        diglot::store::secrets::digest(metered),
    );
    let text = |alias: &str| {
        format!(
            "[reload]\nwatch = false\n{tokens}{}",
            channel_toml(
                "a",
                &fake,
                &["chat-text"],
                &format!("aliases = {{ {alias} = \"chat-text\" }}")
            )
        )
    };
    let profile = Profile::new(&text("one"));
    let (base, app) = profile.start().await;
    // Each answer uses 31 + 7 tokens (the fixture's counts); each request reserves its
    // prompt's estimate plus max_tokens 30.
    let capped = json!({"max_tokens": 30});
    for _ in 0..2 {
        assert_eq!(chat(&base, "chat-text", Some(limited), json!({})).await.0, 200);
        assert_eq!(chat(&base, "chat-text", Some(metered), capped.clone()).await.0, 200);
    }

    profile.write(&text("two"));
    app.reload("test").await.unwrap();
    assert_eq!(
        chat(&base, "two", None, json!({})).await.0,
        401,
        "tokens are still required"
    );
    assert_eq!(
        chat(&base, "two", Some(metered), json!({"max_tokens": 1})).await.0,
        200,
        "the reload applied"
    );

    let (status, answer) = chat(&base, "chat-text", Some(limited), json!({})).await;
    assert_eq!(status, 429, "the minute's two requests were already made: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute"),
        "{answer}"
    );
    let (status, answer) = chat(&base, "chat-text", Some(metered), capped).await;
    assert_eq!(status, 429, "76 of 100 tokens were used before the reload: {answer}");
    assert_eq!(answer["error"]["code"], "insufficient_quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_in_flight_across_ten_reloads_all_succeed() {
    let fake = FakeUpstream::start().await;
    fake.set_line_delay(Duration::from_millis(40));
    let text = |round: usize| {
        format!(
            "[reload]\nwatch = false\n{}",
            channel_toml(
                "a",
                &fake,
                &["chat-text"],
                &format!("aliases = {{ round-{round} = \"chat-text\" }}")
            )
        )
    };
    let profile = Profile::new(&text(0));
    let (base, app) = profile.start().await;

    // Streamed, so each stays in flight while the fake sends its lines 40 ms apart.
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                let response = client()
                    .post(format!("{base}/v1/chat/completions"))
                    .json(
                        &json!({"model": "chat-text", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
                    )
                    .send()
                    .await
                    .unwrap();
                (response.status().as_u16(), response.text().await.unwrap_or_default())
            })
        })
        .collect();
    for round in 1..=10 {
        profile.write(&text(round));
        app.reload("test").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected = "The sky is blue because of Rayleigh scattering.";
    let mut failed = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        let complete = body.ends_with("data: [DONE]\n\n");
        let text: String = sse_data(&body)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        if status != 200 || !complete || text != expected {
            failed.push((status, body));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 1000 failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(fake.bodies("/api/chat").len(), 1000);
    assert_eq!(
        chat(&base, "round-10", None, json!({})).await.0,
        200,
        "the last reload is in force"
    );
    assert_eq!(chat(&base, "round-9", None, json!({})).await.0, 404);
}

/// The real binary: `diglot check-config --profile` checks an edit before it is saved,
/// and `kill -HUP` makes a running diglot read its profile again (it used to end it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_profile_and_check_config_checks_an_edit() {
    let (first, second) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let one = format!(
        "[reload]\nwatch = false\n{}",
        channel_toml("a", &first, &["chat-text"], "")
    );
    let two = format!("{one}{}", channel_toml("b", &second, &["chat-json"], ""));
    let profile = Profile::new(&one);
    let edited = Profile::new(&format!("{two}[models.\"chat-*\".forced]\nnum_ctx = \"big\"\n"));
    let check = || {
        let mut command = diglot_command();
        command.args(["check-config", "--profile", edited.path.to_str().unwrap()]);
        command.output().unwrap()
    };
    let checked = check();
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("models.\"chat-*\".forced") && stderr.contains("num_ctx"),
        "{stderr}"
    );
    edited.write(&two);
    let checked = check();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    let mut command = diglot_command();
    command.args(["--profile", profile.path.to_str().unwrap()]);
    let mut diglot = Binary::start(command).await;
    let base = diglot.base.clone();
    assert_eq!(model_ids(&base).await, ["chat-text"]);

    profile.write(&two);
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &diglot.pid().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    eventually_async("the reload SIGHUP asks for", || async {
        model_ids(&base).await == ["chat-text", "chat-json"]
    })
    .await;
    assert!(diglot.is_running(), "SIGHUP must not end diglot");
    // The line follows the swap, and the log is read from its pipe as it comes.
    eventually("the reload's log line", || {
        diglot.log().contains("configuration reloaded")
    })
    .await;
    assert_eq!(chat(&base, "chat-json", None, json!({})).await.0, 200);
    assert_eq!(second.bodies("/api/chat").len(), 1);
}

/// What is read once at start (the listener, the base path) keeps its running value and
/// is named; the rest of the same edit applies (as the admin API will call it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_read_at_start_keep_their_running_values_and_are_named() {
    let fake = FakeUpstream::start().await;
    let profile = Profile::new(&format!(
        "[reload]\nwatch = false\n{}",
        channel_toml("a", &fake, &["chat-text"], "")
    ));
    let (base, app) = profile.start().await;
    let mut config = app.gateway.snapshot().config.clone();
    config.listen = "127.0.0.1:1".into();
    config.base_path = "/elsewhere".into();
    config.channels[0].aliases.insert("fast".into(), "chat-text".into());

    let kept = app.gateway.apply(config).await.unwrap();
    assert_eq!(kept, ["listen", "base_path"]);
    let running = app.gateway.snapshot();
    assert_eq!(
        (running.config.listen.as_str(), running.config.base_path.as_str()),
        ("127.0.0.1:0", "")
    );
    assert_eq!(chat(&base, "fast", None, json!({})).await.0, 200, "the alias applied");
}
