//! Observability of the real binary: OTLP traces received by a local collector over both
//! gRPC and HTTP/protobuf (span tree, names, GenAI attributes, `traceparent` continued
//! from the client and passed upstream), the access log, and requests that stay fast
//! while the collector hangs.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, Value>,
    /// 0 unset, 1 ok, 2 error.
    status: i32,
    service: String,
    transport: &'static str,
}

impl ReceivedSpan {
    fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// A local OTLP collector: `POST /v1/traces` (HTTP/protobuf) and the gRPC
/// `TraceService/Export` over h2c, on one port (hyper's auto connection builder).
#[derive(Clone)]
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let spans = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| export(req, spans.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, spans }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `enough` says the spans received so far are complete.
    async fn wait_for(&self, enough: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if enough(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type Body = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn export(
    req: hyper::Request<hyper::body::Incoming>,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
) -> Result<hyper::Response<Body>, Infallible> {
    let grpc = req.uri().path() == "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let http = req.uri().path() == "/v1/traces";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let frames = |frames: Vec<Frame<Bytes>>| {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = frames.into_iter().map(Ok).collect();
        StreamBody::new(futures::stream::iter(frames))
    };
    if !grpc && !http {
        return Ok(hyper::Response::builder().status(404).body(frames(vec![])).unwrap());
    }
    // gRPC frames a message as: compressed flag (1 byte), length (4 bytes), message.
    let message = if grpc { body.slice(5..) } else { body };
    let request = ExportTraceServiceRequest::decode(message).expect("an OTLP export decodes");
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| any(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), any(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                        .collect(),
                    status: span.status.map_or(0, |s| s.code),
                    service: service.clone(),
                    transport: if grpc { "grpc" } else { "http" },
                });
            }
        }
    }
    let response = if grpc {
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        hyper::Response::builder()
            .header("content-type", "application/grpc")
            .body(frames(vec![
                Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])),
                Frame::trailers(trailers),
            ]))
    } else {
        hyper::Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(frames(vec![]))
    };
    Ok(response.unwrap())
}

fn any(value: Option<&AnyValue>) -> Value {
    match value {
        Some(AnyValue::StringValue(s)) => json!(s),
        Some(AnyValue::BoolValue(b)) => json!(b),
        Some(AnyValue::IntValue(i)) => json!(i),
        Some(AnyValue::DoubleValue(d)) => json!(d),
        Some(AnyValue::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| any(v.value.as_ref())).collect()),
        _ => Value::Null,
    }
}

/// The diglot binary with `profile` and `env`, logging JSON to a pipe, with its
/// profile and store in a directory of its own.
struct Diglot {
    binary: Binary,
    base: String,
    _dir: tempfile::TempDir,
}

impl Diglot {
    async fn start(profile: &str, env: &[(&str, String)]) -> Self {
        let dir = temp_dir();
        let path = dir.path().join("profile.toml");
        std::fs::write(&path, profile).unwrap();
        let mut command = diglot_command();
        command
            .args(["--profile", path.to_str().unwrap()])
            .env("DIGLOT_STORE__DATA_DIR", dir.path().join("data"))
            // Export every 100 ms instead of every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        for (name, value) in env {
            command.env(name, value);
        }
        let binary = Binary::start(command).await;
        let base = binary.base.clone();
        Self {
            binary,
            base,
            _dir: dir,
        }
    }

    /// Stops it (SIGTERM: spans still queued are exported) and returns its log.
    fn stop(self) -> String {
        self.binary.stop().1
    }
}

/// Two channels serving `m`: `flaky` (OpenAI-compatible, tried first) and `steady`
/// (Ollama).
fn two_channels(flaky: &FakeUpstream, steady: &FakeUpstream) -> String {
    format!(
        r#"
[[channels]]
name = "flaky"
kind = "openai"
url = "{}"
api_key = "sk-never-logged-31337"
models = []
priority = 1
aliases = {{ m = "oai-text" }}

[[channels]]
name = "steady"
kind = "ollama"
url = "{}"
models = []
aliases = {{ m = "chat-text" }}
"#,
        flaky.url(),
        steady.url()
    )
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A streamed chat that fails over from `flaky` (500) to `steady`, traced from a client
/// that sent a `traceparent`, exported over `protocol`.
async fn failover_is_traced(protocol: &str) {
    let collector = Collector::start().await;
    let (flaky, steady) = (FakeUpstream::start().await, FakeUpstream::start().await);
    flaky.fail_next(1, 500, None);
    let diglot = Diglot::start(
        &two_channels(&flaky, &steady),
        &[
            ("DIGLOT_TELEMETRY__OTLP_ENDPOINT", collector.url()),
            ("DIGLOT_TELEMETRY__OTLP_PROTOCOL", protocol.to_owned()),
            ("DIGLOT_TELEMETRY__SERVICE_NAME", "diglot-under-test".into()),
        ],
    )
    .await;

    let res = client()
        .post(format!("{}/v1/chat/completions", diglot.base))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&json!({
            "model": "m",
            "stream": true,
            "temperature": 0.25,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let chunks = sse_chunks(&res.text().await.unwrap());
    assert!(chunks.len() > 2, "{chunks:?}");

    let spans = collector
        .wait_for(|spans| spans.iter().filter(|s| s.trace_id == TRACE_ID).count() >= 3)
        .await;
    let log = diglot.stop();
    let ours: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    assert_eq!(ours.len(), 3, "a server span and two attempts: {spans:#?}");
    assert!(
        ours.iter()
            .all(|s| s.transport == if protocol == "grpc" { "grpc" } else { "http" })
    );
    assert!(ours.iter().all(|s| s.service == "diglot-under-test"));

    // The server span continues the client's trace.
    let server = ours.iter().find(|s| s.kind == SERVER).expect("a server span");
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(server.parent_span_id, CLIENT_SPAN);
    assert_eq!(server.attr("http.request.method"), "POST");
    assert_eq!(server.attr("http.route"), "/v1/chat/completions");
    assert_eq!(server.attr("http.response.status_code"), 200);

    // One client span per attempt, children of the server span, in order.
    let mut attempts: Vec<&ReceivedSpan> = ours.iter().copied().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| s.attr("diglot.attempt").as_i64());
    assert!(attempts.iter().all(|s| s.parent_span_id == server.span_id));
    let (failed, answered) = (attempts[0], attempts[1]);

    assert_eq!(failed.name, "chat oai-text");
    assert_eq!(failed.attr("diglot.attempt"), 1);
    assert_eq!(failed.attr("diglot.channel"), "flaky");
    assert_eq!(failed.attr("gen_ai.provider.name"), "openai");
    assert_eq!(failed.attr("error.type"), "500");
    assert_eq!(failed.status, 2, "the failed attempt has an error status");

    assert_eq!(answered.name, "chat chat-text");
    assert_eq!(answered.attr("diglot.attempt"), 2);
    assert_eq!(answered.attr("diglot.channel"), "steady");
    assert_eq!(answered.attr("diglot.model"), "m");
    assert_eq!(answered.attr("gen_ai.operation.name"), "chat");
    assert_eq!(answered.attr("gen_ai.provider.name"), "ollama");
    assert_eq!(answered.attr("gen_ai.request.model"), "chat-text");
    assert_eq!(answered.attr("gen_ai.response.model"), "chat-text");
    assert_eq!(answered.attr("gen_ai.request.stream"), true);
    assert_eq!(answered.attr("gen_ai.request.temperature"), 0.25);
    assert_eq!(answered.attr("gen_ai.request.max_tokens"), 64);
    assert_eq!(answered.attr("gen_ai.response.finish_reasons"), &json!(["stop"]));
    assert_eq!(answered.attr("server.address"), "127.0.0.1");
    assert_eq!(answered.attr("server.port"), steady.addr.port() as i64);
    assert!(answered.attr("gen_ai.usage.input_tokens").as_i64().unwrap() > 0);
    assert!(answered.attr("gen_ai.usage.output_tokens").as_i64().unwrap() > 0);
    assert!(answered.attr("gen_ai.response.time_to_first_chunk").as_f64().unwrap() > 0.0);
    assert_ne!(answered.status, 2);
    // Content stays out unless asked for.
    assert_eq!(answered.attr("gen_ai.input.messages"), &Value::Null);
    assert!(!format!("{spans:?}").contains("sky blue"));

    // Each upstream saw the traceparent of its own attempt's span.
    let seen = |fake: &FakeUpstream, path: &str| {
        fake.requests(path)[0]
            .header("traceparent")
            .map(str::to_owned)
            .expect("a traceparent upstream")
    };
    assert_eq!(
        seen(&flaky, "/v1/chat/completions"),
        format!("00-{TRACE_ID}-{}-01", failed.span_id)
    );
    assert_eq!(
        seen(&steady, "/api/chat"),
        format!("00-{TRACE_ID}-{}-01", answered.span_id)
    );

    // One access line, with the trace id, model, channel, status, tokens; no secret.
    let access: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "diglot::access" && l["fields"]["path"] == "/v1/chat/completions")
        .collect();
    assert_eq!(access.len(), 1, "{log}");
    let line = &access[0]["fields"];
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["model"], "m");
    assert_eq!(line["channel"], "steady");
    assert_eq!(line["status"], 200);
    assert!(line["completion_tokens"].as_u64().unwrap() > 0);
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(!log.contains("sk-never-logged-31337"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_is_traced_over_grpc() {
    failover_is_traced("grpc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_is_traced_over_http() {
    failover_is_traced("http/protobuf").await;
}

/// Prompts and answers go on spans only when the profile says so. The exporter is set
/// up by the standard OpenTelemetry variables alone.
#[tokio::test(flavor = "multi_thread")]
async fn content_is_recorded_only_when_opted_in() {
    let collector = Collector::start().await;
    let fake = FakeUpstream::start().await;
    let diglot = Diglot::start(
        &format!(
            "[upstream]\nurl = \"{}\"\n[telemetry]\ncapture_content = true\n",
            fake.url()
        ),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_SERVICE_NAME", "named-by-env".into()),
        ],
    )
    .await;
    let res = client()
        .post(format!("{}/api/chat", diglot.base))
        .json(&json!({"model": "chat-text", "stream": false, "messages": [{"role": "user", "content": "Why is the sky blue?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    // The server span ends after the answer is sent: it may come in a later export.
    let spans = collector
        .wait_for(|spans| {
            spans.iter().any(|s| s.kind == CLIENT)
                && spans.iter().any(|s| s.kind == SERVER && s.name == "POST /api/chat")
        })
        .await;
    drop(diglot);
    let attempt = spans.iter().find(|s| s.kind == CLIENT).expect("an attempt span");
    assert_eq!(attempt.name, "chat chat-text");
    assert_eq!((attempt.transport, attempt.service.as_str()), ("http", "named-by-env"));
    let input: Value = serde_json::from_str(attempt.attr("gen_ai.input.messages").as_str().unwrap()).unwrap();
    assert_eq!(
        input,
        json!([{"role": "user", "parts": [{"type": "text", "content": "Why is the sky blue?"}]}])
    );
    let output: Value = serde_json::from_str(attempt.attr("gen_ai.output.messages").as_str().unwrap()).unwrap();
    assert_eq!(output[0]["parts"][0]["content"], answer["message"]["content"]);
    let server = spans
        .iter()
        .find(|s| s.kind == SERVER && s.name == "POST /api/chat")
        .unwrap();
    assert_eq!(server.span_id, attempt.parent_span_id);
    // No traceparent from the client: a new trace, rooted at the server span.
    assert_eq!(server.parent_span_id, "");
}

/// A collector that accepts connections and never answers, or none at all: requests do
/// not wait for it. With a hanging collector, every request is answered while an export
/// still hangs there (before the exporter's 5 s timeout could free anything waiting on it).
#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_collector_adds_no_latency() {
    use tokio::io::AsyncReadExt;
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}", hanging.local_addr().unwrap());
    // When bytes of an export arrived, each time some did; nothing is ever answered.
    // (Every read counts, not only a connection's first: gRPC sends every export over one
    // HTTP/2 connection, which the probe of `/` may already have opened.)
    let exports: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = exports.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = hanging.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        // Held until the exporter gives up: nothing is answered.
                        std::future::pending::<()>().await;
                    }
                    seen.lock().unwrap().push(Instant::now());
                }
            });
        }
    });
    let fake = FakeUpstream::start().await;
    let profile = format!("[upstream]\nurl = \"{}\"\n", fake.url());
    let chat = |base: &str| {
        let request = client()
            .post(format!("{base}/api/chat"))
            .json(&json!({"model": "chat-text", "stream": false, "messages": [{"role": "user", "content": "hi"}]}));
        async move {
            let res = request.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap();
        }
    };

    // Hanging over both protocols, and a port where nobody listens.
    let refused_url = format!("http://127.0.0.1:{}", free_port());
    for (collector, protocol) in [
        (&hanging_url, "grpc"),
        (&hanging_url, "http/protobuf"),
        (&refused_url, "grpc"),
    ] {
        let traced = Diglot::start(
            &profile,
            &[
                ("DIGLOT_TELEMETRY__OTLP_ENDPOINT", collector.clone()),
                ("DIGLOT_TELEMETRY__OTLP_PROTOCOL", protocol.to_owned()),
            ],
        )
        .await;
        let before = exports.lock().unwrap().len();
        chat(&traced.base).await;
        if collector == &hanging_url {
            // A span went to the exporter, which is now stuck on the collector.
            eventually("an export to reach the collector", || {
                exports.lock().unwrap().len() > before
            })
            .await;
            let stuck_since = exports.lock().unwrap()[before];
            for _ in 0..10 {
                chat(&traced.base).await;
            }
            assert!(
                stuck_since.elapsed() < Duration::from_secs(5),
                "{protocol}: every request was answered while the export hung ({:?})",
                stuck_since.elapsed()
            );
        } else {
            for _ in 0..10 {
                chat(&traced.base).await;
            }
        }
        let stopping = Instant::now();
        traced.stop();
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "shutdown waits for the collector at most its timeout"
        );
    }
    assert!(
        !exports.lock().unwrap().is_empty(),
        "the exporter did try the collector"
    );
}

/// The log file: JSON lines, the access line included, named for its rotation period.
#[tokio::test(flavor = "multi_thread")]
async fn access_lines_go_to_the_rotated_log_file() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir();
    let token = "dg-logged-by-prefix-only-00000000000000000";
    let diglot = Diglot::start(
        &format!("[upstream]\nurl = \"{}\"\n", fake.url()),
        &[
            (
                "DIGLOT_LOG__FILE",
                dir.path().join("diglot.log").to_string_lossy().into_owned(),
            ),
            ("DIGLOT_LOG__ROTATION", "hourly".into()),
            ("API_TOKEN", token.into()),
        ],
    )
    .await;
    let res = client()
        .post(format!("{}/v1/chat/completions", diglot.base))
        .bearer_auth(token)
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "chat-text", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    diglot.stop();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("diglot.log."))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // Hourly files end in YYYY-MM-DD-HH.
    assert_eq!(files[0].len(), "diglot.log.".len() + 13, "{files:?}");
    let text = std::fs::read_to_string(dir.path().join(&files[0])).unwrap();
    let access: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["target"] == "diglot::access" && l["fields"]["path"] == "/v1/chat/completions")
        .collect();
    assert_eq!(access.len(), 1, "{text}");
    // Without an exporter, the trace id still comes from the client's traceparent.
    assert_eq!(access[0]["fields"]["trace_id"], TRACE_ID);
    assert_eq!(access[0]["fields"]["model"], "chat-text");
    assert_eq!(access[0]["fields"]["channel"], "default");
    assert_eq!(
        access[0]["fields"]["token"],
        diglot::store::secrets::display_prefix(token)
    );
    assert!(!text.contains(token), "the token itself is never logged");
    assert!(access[0]["fields"]["prompt_tokens"].as_u64().unwrap() > 0);
}

/// The value of the sample `name{labels}` (labels exactly as given, in the exposition's
/// order), or None when there is no such sample.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted = if labels.is_empty() {
        name.to_owned()
    } else {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", pairs.join(","))
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&wanted)?.strip_prefix(' ')?.parse().ok())
}

/// Known traffic in, the right counts and labels out.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_known_traffic() {
    use diglot::config::UpstreamKind;
    let (flaky, steady) = (FakeUpstream::start().await, FakeUpstream::start().await);
    flaky.fail_next(1, 500, None);
    let mut first = channel("flaky", &flaky, UpstreamKind::Openai);
    first.priority = 1;
    first.models = Vec::new();
    first.aliases = [("m".to_owned(), "oai-text".to_owned())].into();
    let mut second = channel("steady", &steady, UpstreamKind::Ollama);
    second.models = Vec::new();
    second.aliases = [
        ("m".to_owned(), "chat-text".to_owned()),
        ("e".to_owned(), "embed-minilm".to_owned()),
    ]
    .into();
    let base = diglot_channels(vec![first, second], |c| c.limits.rpm = 4).await;
    // The status of a call, once its whole answer was read.
    let call = |path: &str, body: Value| {
        let request = client().post(format!("{base}{path}")).json(&body);
        async move {
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            res.bytes().await.unwrap();
            status
        }
    };
    let messages = json!([{"role": "user", "content": "hi"}]);
    let chat = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": messages});

    // 1. Streamed, fails over from flaky (500) to steady.
    assert_eq!(call("/v1/chat/completions", chat("m", true)).await, 200);
    // 2. Whole, answered by flaky (one failure does not open its circuit).
    assert_eq!(call("/v1/chat/completions", chat("m", false)).await, 200);
    // 3. Ollama's API, answered by flaky.
    assert_eq!(call("/api/chat", chat("m", false)).await, 200);
    // 4. An unknown model: its made-up name is no label.
    assert_eq!(call("/v1/chat/completions", chat("made-up-9f3a", false)).await, 404);
    // 5. Embeddings (a cache miss), through Ollama's API.
    assert_eq!(call("/api/embed", json!({"model": "e", "input": ["hi"]})).await, 200);
    // 6. Over the 4-per-minute limit.
    assert_eq!(call("/v1/chat/completions", chat("m", false)).await, 429);

    // Streams are counted when they end, which is just after the client read the end.
    let mut text;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let res = client().get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
            "{:?}",
            res.headers()
        );
        text = res.text().await.unwrap();
        if sample(&text, "diglot_open_streams", &[]) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "a stream stayed open:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = |frontend, backend, model, channel, class| {
        sample(
            &text,
            "diglot_requests_total",
            &[
                ("frontend", frontend),
                ("backend", backend),
                ("model", model),
                ("channel", channel),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests("openai", "ollama", "m", "steady", "2xx"), Some(1.0), "{text}");
    assert_eq!(requests("openai", "openai", "m", "flaky", "2xx"), Some(1.0), "{text}");
    assert_eq!(requests("ollama", "openai", "m", "flaky", "2xx"), Some(1.0), "{text}");
    assert_eq!(requests("openai", "", "", "", "4xx"), Some(1.0), "{text}");
    assert_eq!(requests("openai", "", "m", "", "4xx"), Some(1.0), "{text}");
    assert!(!text.contains("made-up-9f3a"), "{text}");
    assert!(!text.contains("127.0.0.1"), "no addresses: {text}");

    let openai_m = [("frontend", "openai"), ("model", "m")];
    assert_eq!(
        sample(&text, "diglot_request_duration_seconds_count", &openai_m),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "diglot_time_to_first_token_seconds_count", &openai_m),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "diglot_overhead_seconds_count", &[("frontend", "openai")]),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, "diglot_overhead_seconds_count", &[("frontend", "ollama")]),
        Some(2.0)
    );
    assert_eq!(requests("ollama", "ollama", "e", "steady", "2xx"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "diglot_cache_total",
            &[("kind", "embeddings"), ("result", "miss")]
        ),
        Some(1.0)
    );
    // The overhead histogram is recorded, and is a part of the requests' time (their
    // duration minus the upstreams' share).
    let overhead = sample(&text, "diglot_overhead_seconds_sum", &[("frontend", "openai")]).unwrap();
    let total = sample(&text, "diglot_request_duration_seconds_sum", &openai_m).unwrap()
        + sample(
            &text,
            "diglot_request_duration_seconds_sum",
            &[("frontend", "openai"), ("model", "")],
        )
        .unwrap();
    assert!(overhead > 0.0 && overhead <= total, "overhead {overhead} of {total}");

    let tokens = |channel, kind| {
        sample(
            &text,
            "diglot_tokens_total",
            &[("model", "m"), ("channel", channel), ("type", kind)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        tokens("steady", "input") > 0.0 && tokens("steady", "output") > 0.0,
        "{text}"
    );
    assert!(
        tokens("flaky", "input") > 0.0 && tokens("flaky", "output") > 0.0,
        "{text}"
    );

    let flaky_label = [("channel", "flaky")];
    assert_eq!(
        sample(
            &text,
            "diglot_upstream_errors_total",
            &[("channel", "flaky"), ("kind", "status_5xx")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "diglot_retries_total", &flaky_label), Some(1.0));
    assert_eq!(sample(&text, "diglot_failovers_total", &flaky_label), Some(1.0));
    assert_eq!(
        sample(&text, "diglot_rate_limited_total", &[("scope", "global")]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "diglot_channel_state", &flaky_label), Some(0.0));
    assert_eq!(sample(&text, "diglot_channel_up", &[("channel", "steady")]), Some(1.0));
    assert_eq!(sample(&text, "diglot_open_streams", &[]), Some(0.0));
    // The scrape itself is the one request in progress.
    assert_eq!(sample(&text, "diglot_active_requests", &[]), Some(1.0));
    let http = |route, class| {
        sample(
            &text,
            "diglot_http_requests_total",
            &[("frontend", "openai"), ("route", route), ("status_class", class)],
        )
    };
    assert_eq!(http("/v1/chat/completions", "2xx"), Some(2.0), "{text}");
    assert_eq!(http("/v1/chat/completions", "4xx"), Some(2.0), "{text}");
    assert!(sample(&text, "diglot_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(sample(&text, "diglot_uptime_seconds", &[]).unwrap() > 0.0);

    // Every metric the shipped Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/observability/grafana/dashboards/diglot.json"
    ))
    .unwrap();
    let mut queried: Vec<&str> = dashboard
        .match_indices("diglot_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            &rest[..rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())]
        })
        .collect();
    queried.sort();
    queried.dedup();
    assert!(queried.len() > 10, "{queried:?}");
    for name in queried {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics does not have:\n{text}"
        );
    }
}

/// `/metrics` is open while authentication is off, takes its own token when one is set,
/// and is for admins when tokens are required.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_protected_as_configured() {
    use diglot::store::{Role, TokenRecord};
    let fake = FakeUpstream::start().await;
    let status = |base: String, token: Option<&'static str>| async move {
        let mut request = client().get(format!("{base}/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().status().as_u16()
    };
    let open = diglot(&fake.url(), |_| {}).await;
    assert_eq!(status(open, None).await, 200);

    let scrape = "scrape-secret-7d1e";
    let with_token = diglot(&fake.url(), |c| c.metrics.token = scrape.into()).await;
    assert_eq!(status(with_token.clone(), None).await, 401);
    assert_eq!(status(with_token.clone(), Some("wrong")).await, 401);
    assert_eq!(status(with_token, Some(scrape)).await, 200);

    let (user, admin) = (
        "dg-user-0000000000000000000000000000000000000",
        "dg-admin-000000000000000000000000000000000000",
    );
    let tokens = diglot(&fake.url(), |c| {
        c.tokens = vec![
            TokenRecord::for_secret("user", user, Role::User),
            TokenRecord::for_secret("admin", admin, Role::Admin),
        ]
    })
    .await;
    assert_eq!(status(tokens.clone(), None).await, 401);
    assert_eq!(status(tokens.clone(), Some(user)).await, 401);
    assert_eq!(status(tokens.clone(), Some(admin)).await, 200);

    // Tokens required and a metrics token: scrapers need no API token.
    let both = diglot(&fake.url(), |c| {
        c.metrics.token = scrape.into();
        c.tokens = vec![TokenRecord::for_secret("user", user, Role::User)];
    })
    .await;
    assert_eq!(status(both.clone(), None).await, 401);
    assert_eq!(status(both.clone(), Some(user)).await, 401);
    assert_eq!(status(both, Some(scrape)).await, 200);

    let off = diglot(&fake.url(), |c| c.metrics.enabled = false).await;
    assert_eq!(status(off, None).await, 404);
}

/// With no model list to check names against, a glob takes any name; such names are not
/// metric labels (a client making names up cannot grow /metrics).
#[tokio::test(flavor = "multi_thread")]
async fn made_up_names_are_no_metric_labels() {
    let fake = FakeUpstream::start().await;
    // A server without a model list (404), which still answers.
    fake.fail_listing(Some(404));
    let base = diglot(&fake.url(), |_| {}).await;
    for name in ["made-up-1", "made-up-2"] {
        let res = client()
            .post(format!("{base}/api/chat"))
            .json(&json!({"model": name, "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "the upstream's own answer");
    }
    let text = get_text(&format!("{base}/metrics")).await;
    assert!(!text.contains("made-up"), "{text}");
    assert_eq!(
        sample(
            &text,
            "diglot_requests_total",
            &[
                ("frontend", "ollama"),
                ("backend", ""),
                ("model", ""),
                ("channel", ""),
                ("status_class", "4xx")
            ]
        ),
        Some(2.0),
        "{text}"
    );
}
