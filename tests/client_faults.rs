//! Faults on the client side, against the real binary: bodies too large or too slow,
//! slow headers, more connections than it may hold, SIGTERM under load, SIGKILL, and
//! memory after bursts of streams. Every case is answered in the client's protocol within
//! its timeout, with diglot's RSS read from /proc.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The tests opening thousands of connections take turns: together they would pass the
/// 20,000 descriptors this process may open (`ulimit -n`).
static THOUSANDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chat(stream: bool) -> Value {
    json!({"model": "oai-text", "stream": stream, "messages": user("hi")})
}

/// Memory goes back down after bursts of streams (it stayed at 131 MiB and crept to
/// 180 MiB over five rounds of 2,000 streams, from 16 MiB idle).
#[tokio::test(flavor = "multi_thread")]
async fn memory_returns_near_idle_after_bursts_of_streams() {
    let _turn = THOUSANDS.lock().await;
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), "").await;
    let pid = diglot.pid();
    let url = format!("{}/v1/chat/completions", diglot.base);
    // Idle, once everything built on the first request is there.
    assert_eq!(post(&diglot.base, "/v1/chat/completions", chat(true)).await.status, 200);
    let idle = rss_kib(pid);
    for round in 1..=5 {
        let streams: Vec<_> = (0..2000)
            .map(|_| {
                let request = client().post(&url).json(&chat(true));
                tokio::spawn(async move { send(request).await })
            })
            .collect();
        let mut peak = 0;
        for stream in streams {
            let answer = stream.await.unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text);
            assert!(answer.text.ends_with("data: [DONE]\n\n"));
            peak = peak.max(rss_kib(pid));
        }
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
        eprintln!("round {round}: {} KiB, {fds} fds right after", rss_kib(pid));
        eventually(
            &format!("round {round}: RSS back within 2x of idle ({idle} KiB; peak {peak} KiB)"),
            || rss_kib(pid) <= 2 * idle,
        )
        .await;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
        eprintln!(
            "round {round}: idle {idle} KiB, peak {peak} KiB, after {} KiB, {fds} fds",
            rss_kib(pid)
        );
    }
}

/// `body` after the blank line of a raw HTTP/1.1 answer, and its status line.
fn split_answer(raw: &str) -> (&str, &str) {
    let status = raw.lines().next().unwrap_or_default();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

/// A 1 GB body: a declared length over the limit is refused before any of it is read,
/// with `Expect: 100-continue` never told to go on; an undeclared one is cut at the limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_1gb_body_is_refused_early_and_never_read_whole() {
    use tokio::io::AsyncWriteExt;
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), "").await;
    let idle = rss_kib(diglot.pid());
    for (path, shape) in [("/v1/chat/completions", "openai"), ("/api/chat", "ollama")] {
        for expect in ["", "Expect: 100-continue\r\n"] {
            let mut conn = raw_connect(&diglot.base).await;
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n{expect}\r\n"
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            // Nothing of the body is sent: the answer cannot wait for it.
            let raw = read_to_close(&mut conn, DEADLINE).await;
            let (status, body) = split_answer(&raw);
            assert!(status.starts_with("HTTP/1.1 413"), "{path} {expect}: {raw}");
            assert!(!raw.contains("100 Continue"), "{raw}");
            let error: Value = serde_json::from_str(body).unwrap();
            let message = match shape {
                "openai" => error["error"]["message"].as_str().unwrap(),
                _ => error["error"].as_str().unwrap(),
            };
            assert!(message.contains("max_body_bytes"), "{message}");
        }
    }
    // Chunked, with no length to refuse: read up to the limit, then refused.
    let mut conn = raw_connect(&diglot.base).await;
    conn.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = conn.into_split();
    let sending = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "a".repeat(1 << 20));
        let mut sent = 0u64;
        while sent < 1 << 30 {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 1 << 20;
        }
        sent
    });
    let mut raw = Vec::new();
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(DEADLINE, reader.read_to_end(&mut raw)).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    let sent = sending.await.unwrap();
    assert!(sent < 1 << 30, "diglot read the whole gigabyte");
    let rss = rss_kib(diglot.pid());
    eprintln!(
        "RSS idle {idle} KiB, after the 1 GB bodies {rss} KiB; {} MiB sent before the refusal",
        sent >> 20
    );
    assert!(rss < idle + 256 * 1024, "RSS {rss} KiB from {idle} KiB idle");
}

const SLOW_PROFILE: &str =
    "[server]\nheader_timeout_secs = 2.0\nbody_timeout_secs = 2.0\nbody_min_bytes_per_sec = 1024\n";

/// Slowloris on the headers: connections trickling their head are closed at
/// `server.header_timeout_secs`, and other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_on_headers_is_cut_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), SLOW_PROFILE).await;
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let base = diglot.base.clone();
            tokio::spawn(async move {
                let mut conn = raw_connect(&base).await;
                let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
                for byte in head {
                    if conn.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if conn.peer_addr().is_err() {
                        break;
                    }
                }
                // Closed at the header timeout, well before the head could be complete.
                read_to_close(&mut conn, Duration::from_secs(20)).await
            })
        })
        .collect();
    eventually_async("a normal client served while 200 heads trickle", || async {
        post(&diglot.base, "/v1/chat/completions", chat(false)).await.status == 200
    })
    .await;
    for conn in slow {
        let raw = conn.await.unwrap();
        assert!(raw.is_empty() || raw.starts_with("HTTP/1.1 408"), "{raw}");
    }
    eprintln!("RSS after slow heads: {} KiB", rss_kib(diglot.pid()));
}

/// Slowloris on the body: a body trickling in slower than the minimum rate gets 408 in
/// the client's protocol, naming the keys, and other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_on_the_body_gets_408_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), SLOW_PROFILE).await;
    let slow: Vec<_> = (0..100)
        .map(|i| {
            let base = diglot.base.clone();
            let path = if i % 2 == 0 {
                "/v1/chat/completions"
            } else {
                "/api/chat"
            };
            tokio::spawn(async move {
                let mut conn = raw_connect(&base).await;
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                );
                conn.write_all(head.as_bytes()).await.unwrap();
                let (mut reader, mut writer) = conn.into_split();
                let trickle = tokio::spawn(async move {
                    while writer.write_all(b" ").await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                });
                let mut raw = Vec::new();
                use tokio::io::AsyncReadExt;
                let read = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut raw)).await;
                trickle.abort();
                assert!(read.is_ok(), "a trickled body held its connection for 20 s");
                (path, String::from_utf8_lossy(&raw).into_owned())
            })
        })
        .collect();
    eventually_async("a normal client served while 100 bodies trickle", || async {
        post(&diglot.base, "/v1/chat/completions", chat(false)).await.status == 200
    })
    .await;
    for conn in slow {
        let (path, raw) = conn.await.unwrap();
        let (status, body) = split_answer(&raw);
        assert!(status.starts_with("HTTP/1.1 408"), "{path}: {raw}");
        let error: Value = serde_json::from_str(body).unwrap();
        let message = if path.starts_with("/api") {
            error["error"].as_str().unwrap().to_owned()
        } else {
            assert_eq!(error["error"]["code"], "request_timeout");
            error["error"]["message"].as_str().unwrap().to_owned()
        };
        assert!(message.contains("server.body_timeout_secs"), "{message}");
    }
    eprintln!("RSS after slow bodies: {} KiB", rss_kib(diglot.pid()));
}

/// A debug build on a shared two-core machine may take longer than the default 10 s to
/// read some of 10,000 request heads arriving at once.
const TEN_THOUSAND_PROFILE: &str = "[server]\nmax_connections = 4000\nheader_timeout_secs = 120.0\n";

/// 10,000 streams at once against `max_connections = 4000`: the first 4,000 are served
/// (their streams held open), the rest get a clear 503 in their protocol at once, nothing
/// fails with EMFILE, and once the streams end every one has finished whole and diglot
/// serves again. (Both processes stay under the 20,000 descriptors `ulimit -n` allows.)
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_slow_streams_get_served_or_a_clear_503() {
    let _turn = THOUSANDS.lock().await;
    #[cfg(unix)]
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), TEN_THOUSAND_PROFILE).await;
    let idle = rss_kib(diglot.pid());
    fake.pause_streams_after(1);
    // No pooling: each stream its own connection, as 10,000 clients would have.
    let clients = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", diglot.base);
    let streams: Vec<_> = (0..10_000)
        .map(|_| {
            let request = clients.post(&url).json(&chat(true));
            tokio::spawn(async move { send(request).await })
        })
        .collect();
    // The streams held: 4,000 upstream calls, the rest refused. (Opening 10,000
    // connections takes a while on a loaded machine: longer than DEADLINE.)
    let started = std::time::Instant::now();
    while fake.calls() < 4000 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} upstream calls",
            fake.calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = rss_kib(diglot.pid());
    let (status, error) = post(&diglot.base, "/api/chat", chat(false)).await.status_json();
    assert_eq!(status, 503, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("server.max_connections"),
        "{error}"
    );
    fake.resume_streams();
    let (mut served, mut refused) = (0, 0);
    for stream in streams {
        let answer = stream.await.unwrap();
        match answer.status {
            200 => {
                assert!(answer.text.ends_with("data: [DONE]\n\n"), "{}", answer.text);
                served += 1;
            }
            503 => {
                let error = answer.json();
                assert_eq!(error["error"]["code"], "service_unavailable", "{error}");
                assert!(answer.header("retry-after").is_some());
                refused += 1;
            }
            other => panic!("{other}: {}", answer.text),
        }
    }
    eprintln!("{served} served, {refused} refused; RSS idle {idle} KiB, with 4,000 streams {peak} KiB");
    assert!(
        served >= 4000 && served + refused == 10_000,
        "{served} served, {refused} refused"
    );
    assert!(
        refused >= 1000,
        "{refused} refused: the 10,000 were never open together"
    );
    assert_eq!(
        fake.calls(),
        served as usize,
        "a refused request never reaches the upstream"
    );
    assert_eq!(
        post(&diglot.base, "/v1/chat/completions", chat(false)).await.status,
        200
    );
    let log = diglot.kill();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// SIGTERM under load: the listener closes at once, every accepted request is answered
/// whole, every usage record is written, and diglot exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_loses_no_accepted_request() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), "").await;
    let base = diglot.base.clone();
    fake.pause_streams_after(2);
    let load: Vec<_> = (0..40)
        .map(|i| {
            let (path, body) = if i % 2 == 0 {
                ("/v1/chat/completions", chat(i % 4 == 0))
            } else {
                ("/api/chat", chat(i % 4 == 1))
            };
            let request = client().post(format!("{base}{path}")).json(&body);
            tokio::spawn(async move { send(request).await })
        })
        .collect();
    fake.wait_for_calls(40).await;
    let pid = diglot.pid();
    let stopping = std::thread::spawn(move || diglot.stop());
    let address = base.trim_start_matches("http://").to_owned();
    eventually("the listener closed", || {
        std::net::TcpStream::connect(&address).is_err()
    })
    .await;
    // The streams go on after the listener closed.
    fake.resume_streams();
    for (i, request) in load.into_iter().enumerate() {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text);
        assert!(
            ["[DONE]", "\"done\":true", "\"finish_reason\":\"stop\""]
                .iter()
                .any(|end| answer.text.contains(end)),
            "request {i} ended whole: {}",
            answer.text
        );
    }
    let (status, log) = stopping.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped listening"), "{log}");
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err());
    usage_records(dir.path(), 40).await;
}

/// Streams still open at the drain deadline end with an error event in their own
/// protocol (not a cut connection), and their usage is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn streams_open_at_the_drain_deadline_end_with_an_error_event() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), "[server]\ndrain_secs = 1.0\n").await;
    fake.pause_streams_after(3);
    let base = diglot.base.clone();
    let openai = tokio::spawn(send(
        client().post(format!("{base}/v1/chat/completions")).json(&chat(true)),
    ));
    let ollama = tokio::spawn(send(client().post(format!("{base}/api/chat")).json(&chat(true))));
    fake.wait_for_calls(2).await;
    let (status, log) = tokio::task::spawn_blocking(move || diglot.stop()).await.unwrap();
    assert!(status.success(), "{log}");
    let openai = openai.await.unwrap();
    let last: Value = serde_json::from_str(sse_data(&openai.text).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "service_unavailable", "{}", openai.text);
    assert!(last["error"]["message"].as_str().unwrap().contains("server.drain_secs"));
    let ollama = ollama.await.unwrap();
    let last = ollama.last_json();
    assert!(
        last["error"].as_str().unwrap().contains("server.drain_secs"),
        "{}",
        ollama.text
    );
    assert!(fake.cancelled(), "the upstream calls were cancelled");
    usage_records(dir.path(), 2).await;
}

/// SIGKILL mid-load: the SQLite store stays intact, and diglot starts on it again and
/// goes on recording.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_leaves_the_store_intact_and_usable() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), "").await;
    for _ in 0..20 {
        assert_eq!(
            post(&diglot.base, "/v1/chat/completions", chat(false)).await.status,
            200
        );
    }
    let store = diglot::store::open_data_dir(dir.path()).unwrap();
    eventually_async("20 usage records", || async {
        store.usage_count().await.unwrap() >= 20
    })
    .await;
    drop(store);
    // Killed with requests in flight and records being written.
    let base = diglot.base.clone();
    let load: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(
                client()
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&chat(true))
                    .send(),
            )
        })
        .collect();
    fake.wait_for_calls(40).await;
    diglot.kill();
    for request in load {
        let _ = request.await;
    }
    let db = rusqlite::Connection::open(dir.path().join("diglot.db")).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
    assert_eq!(check, "ok");
    drop(db);
    let store = diglot::store::open_data_dir(dir.path()).unwrap();
    let before = store.usage_count().await.unwrap();
    assert!(before >= 20);
    drop(store);
    let again = binary_with_profile(&fake, dir.path(), "").await;
    assert_eq!(post(&again.base, "/v1/chat/completions", chat(false)).await.status, 200);
    usage_records(dir.path(), before + 1).await;
}

/// Too many messages or images in one request: 400 in the caller's protocol, naming the
/// bound's key, before anything reaches the upstream.
#[tokio::test]
async fn too_many_messages_or_images_get_400_naming_the_key() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Openai;
        c.server.max_messages = 2;
        c.server.max_images = 1;
    })
    .await;
    let three = json!([
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}
    ]);
    let (status, error) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "oai-text", "messages": three}),
    )
    .await
    .status_json();
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max_messages"),
        "{error}"
    );
    let image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
    let (status, error) = post(
        &base,
        "/api/chat",
        json!({"model": "oai-text", "stream": false, "messages": [{"role": "user", "content": "two", "images": [image, image]}]}),
    )
    .await
    .status_json();
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("server.max_images"),
        "{error}"
    );
    assert_eq!(fake.calls(), 0, "nothing reached the upstream");
}

/// Too many or too large headers: 431 in the caller's protocol naming the key; past twice
/// the limit hyper refuses the head before it is parsed, with a bare 431.
#[tokio::test]
async fn too_many_or_too_large_headers_get_431_naming_the_key() {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.server.max_headers = 20;
        c.server.max_header_bytes = 16 * 1024;
    })
    .await;
    let ask = |headers: Vec<(String, String)>, path: &'static str| {
        let mut request = client().post(format!("{base}{path}")).json(&chat(false));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        send(request)
    };
    let many: Vec<_> = (0..25).map(|i| (format!("x-extra-{i}"), "1".to_owned())).collect();
    let answer = ask(many, "/v1/chat/completions").await;
    assert_eq!(answer.status, 431);
    let error: Value = serde_json::from_str(&answer.text).unwrap();
    assert_eq!(error["error"]["code"], "request_header_fields_too_large", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max_headers"),
        "{error}"
    );

    let large = vec![("x-large".to_owned(), "a".repeat(20 * 1024))];
    let answer = ask(large, "/api/chat").await;
    assert_eq!(answer.status, 431);
    let error: Value = serde_json::from_str(&answer.text).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("server.max_header_bytes"),
        "{error}"
    );

    let huge = vec![("x-large".to_owned(), "a".repeat(40 * 1024))];
    assert_eq!(ask(huge, "/v1/chat/completions").await.status, 431);
    assert_eq!(fake.calls(), 0, "nothing reached the upstream");
}

/// The front speaks HTTP/1.1: a client opening with HTTP/2's prior-knowledge preface has
/// its connection closed (no HTTP/2 frames, no hang), and HTTP/1.1 clients are served.
#[tokio::test]
async fn an_http2_preface_is_refused_and_http1_is_served() {
    use tokio::io::AsyncWriteExt;
    let (fake, base) = setup_openai().await;
    let mut conn = raw_connect(&base).await;
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut conn, Duration::from_secs(10)).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    assert_eq!(fake.calls(), 0, "nothing reached the upstream");
    assert_eq!(post(&base, "/v1/chat/completions", chat(false)).await.status, 200);
}

/// The binary serves on `server.workers` threads, each taking its share of the connections
/// (the kernel spreads them over one listening socket per worker), and a port already
/// taken is still an error: sockets sharing a port must not let a second diglot in.
#[tokio::test(flavor = "multi_thread")]
async fn workers_share_the_connections_and_a_taken_port_is_refused() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let diglot = binary_with_profile(&fake, dir.path(), "[server]\nworkers = 2\n").await;
    // The port answers once one worker serves; a thread takes its name as it starts.
    eventually("two worker threads", || worker_threads(diglot.pid()).len() >= 2).await;
    let workers = worker_threads(diglot.pid());
    assert_eq!(workers.len(), 2, "{workers:?}");
    let before: Vec<u64> = workers.iter().map(|w| run_time_ns(diglot.pid(), w)).collect();
    let url = format!("{}/v1/chat/completions", diglot.base);
    // 64 clients, each on its own keep-alive connection.
    let load: Vec<_> = (0..64)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in 0..5 {
                    let answer = send(client.post(&url).json(&chat(false))).await;
                    assert_eq!(answer.status, 200, "{}", answer.text);
                }
            })
        })
        .collect();
    for client in load {
        client.await.unwrap();
    }
    for (worker, before) in workers.iter().zip(before) {
        let ran_ms = (run_time_ns(diglot.pid(), worker) - before) / 1_000_000;
        assert!(ran_ms >= 10, "{worker} ran {ran_ms} ms of 320 requests");
    }

    let port = diglot.base.rsplit(':').next().unwrap().to_owned();
    let mut second = diglot_command()
        .args(["--target", &fake.url(), "--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second diglot started on the port the first listens on");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!status.success());
    assert!(log.contains("cannot listen on"), "{log}");
}

/// The task ids of the `diglot-worker-N` threads of process `pid`.
fn worker_threads(pid: u32) -> Vec<String> {
    let mut workers: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?.file_name().into_string().ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/task/{task}/comm")).ok()?;
            name.starts_with("diglot-worker").then_some(task)
        })
        .collect();
    workers.sort();
    workers
}

/// How long thread `task` of `pid` has run on a CPU, in nanoseconds.
fn run_time_ns(pid: u32, task: &str) -> u64 {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/task/{task}/schedstat")).unwrap();
    schedstat.split_whitespace().next().unwrap().parse().unwrap()
}
