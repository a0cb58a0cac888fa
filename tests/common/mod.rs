//! Test support, one set for every suite: a fake upstream that serves the recorded
//! fixtures and records what it receives; diglot started in-process in front of it, or as
//! the real binary; request helpers; and waits that poll for a condition with a generous
//! deadline instead of sleeping for a guessed time.
#![allow(dead_code)]

pub mod services;
#[allow(unused_imports)]
pub use services::*;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diglot::config::Config;
use salvo::conn::Acceptor;
use salvo::prelude::*;
use serde_json::Value;

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
}

/// The text of `fixtures/openai/PATH`'s stream: every chunk's first choice's delta
/// (or, for legacy completions, the choice itself), concatenating the first of `fields`
/// each has.
pub fn sse_text(path: &str, fields: &[&str]) -> String {
    let text = std::fs::read_to_string(fixture(&format!("openai/{path}"))).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|chunk| {
            let choice = chunk["choices"].get(0)?.clone();
            let delta = if choice["delta"].is_object() {
                choice["delta"].clone()
            } else {
                choice
            };
            fields.iter().find_map(|f| delta[*f].as_str().map(str::to_owned))
        })
        .collect()
}

/// A request the fake upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

struct State {
    received: Mutex<Vec<Received>>,
    line_delay_ms: AtomicU64,
    /// Set when a streamed answer was dropped before its last line was sent.
    cancelled: AtomicBool,
    completed_streams: AtomicU64,
    /// Which `fixtures/openai/models/*.json` answers `/v1/models`.
    models: Mutex<String>,
    faults: Mutex<Faults>,
    /// While true, completion and embedding calls wait (recorded, unanswered).
    held: tokio::sync::watch::Sender<bool>,
    /// Streams stop after this many lines, minus one (0: never), until `paused` is false.
    pause_after: AtomicU64,
    paused: tokio::sync::watch::Sender<bool>,
    /// Stream lines (or events) sent, over all streams.
    lines_sent: AtomicU64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            received: Mutex::default(),
            line_delay_ms: AtomicU64::default(),
            cancelled: AtomicBool::default(),
            completed_streams: AtomicU64::default(),
            models: Mutex::default(),
            faults: Mutex::default(),
            held: tokio::sync::watch::Sender::new(false),
            pause_after: AtomicU64::default(),
            paused: tokio::sync::watch::Sender::new(false),
            lines_sent: AtomicU64::default(),
        }
    }
}

/// Failures the fake answers with instead of its fixtures.
#[derive(Default, Clone)]
struct Faults {
    /// The next N completion/embedding calls get this status (and `Retry-After`).
    next: u32,
    status: u16,
    retry_after: Option<u64>,
    /// Calls carrying `Authorization: Bearer KEY` get 401.
    rejected_key: Option<String>,
    /// `/api/tags` and `/v1/models` get this status.
    listing_status: Option<u16>,
    /// Calls for this model get this status, every time (as Ollama answers 500 for a
    /// model that does not fit in memory while its other models work).
    failing_model: Option<(String, u16)>,
}

/// A fake upstream that speaks both protocols from the recorded fixtures, picked by the
/// request's model name:
/// - Ollama: `/api/chat` and `/api/generate` stream `fixtures/ollama/{chat,generate}/MODEL.ndjson`
///   line by line (or answer whole for `stream: false`), `/api/embed` and `/api/show`
///   answer `embed/MODEL.json` and `show/MODEL.json`, `/api/tags` answers `tags.json`
///   plus one entry per fixture model; an unknown model gets Ollama's 404.
///   `/api/pull` and `/api/delete` answer as Ollama does (for fallback forwarding).
/// - OpenAI: `/v1/chat/completions` and `/v1/completions` stream
///   `fixtures/openai/{chat,completions}/MODEL.sse` event by event, `/v1/embeddings`
///   answers `embeddings/MODEL.json`, `/v1/models` a `models/*.json` list plus one entry
///   per fixture model; an unknown model gets OpenAI's 404. llama-server's own
///   `/apply-template` and `/tokenize` answer as it does (see `llama_tokenize`).
/// - Anthropic: `/v1/messages` streams `fixtures/anthropic/messages/MODEL.sse` event by
///   event (or folds it into one `message`), `/v1/messages/count_tokens` answers the
///   documentation's `{"input_tokens": 14}`; an unknown model gets Anthropic's 404.
/// - `GET /red.png` serves a tiny PNG for image-URL tests, `GET /big.png` a PNG of
///   `?bytes=N` bytes, `GET /slow.png` the tiny PNG after `?ms=N` milliseconds, and
///   `GET /redirect?to=URL` a 302 to `URL`.
#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let router = Router::new()
            .hoop(affix_state::inject(state.clone()))
            .hoop(inject_faults)
            .push(Router::with_path("api/chat").post(stream_fixture))
            .push(Router::with_path("api/generate").post(stream_fixture))
            .push(Router::with_path("api/embed").post(json_fixture))
            .push(Router::with_path("api/show").post(json_fixture))
            .push(Router::with_path("api/tags").get(ollama_tags))
            .push(Router::with_path("api/pull").post(ollama_management))
            .push(Router::with_path("api/delete").delete(ollama_management))
            .push(Router::with_path("api/blobs/{digest}").post(blob_upload))
            .push(Router::with_path("v1/chat/completions").post(openai_stream))
            .push(Router::with_path("v1/completions").post(openai_stream))
            .push(Router::with_path("v1/embeddings").post(openai_json))
            .push(Router::with_path("v1/models").get(openai_models))
            .push(Router::with_path("v1/messages").post(anthropic_stream))
            .push(Router::with_path("v1/messages/count_tokens").post(anthropic_count))
            .push(Router::with_path("apply-template").post(llama_apply_template))
            .push(Router::with_path("tokenize").post(llama_tokenize))
            .push(Router::with_path("red.png").get(red_png))
            .push(Router::with_path("big.png").get(big_png))
            .push(Router::with_path("slow.png").get(slow_png))
            .push(Router::with_path("redirect").get(redirect));
        // With TCP_NODELAY, as real servers set it: else each small write waits for an ACK.
        let acceptor = diglot::http::bind_one("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = acceptor.holdings()[0].local_addr.clone().into_std().unwrap();
        tokio::spawn(Server::new(acceptor).serve(router));
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `fixtures/openai/models/NAME.json` on `/v1/models`.
    pub fn set_models(&self, name: &str) {
        *self.state.models.lock().unwrap() = name.to_owned();
    }

    /// The requests to `path`.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    pub fn set_line_delay(&self, delay: Duration) {
        self.state
            .line_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The bodies of requests to `path`.
    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.body)
            .collect()
    }

    /// Answers the next `n` completion and embedding calls with `status` (in the
    /// protocol's error shape), with a `Retry-After` of `retry_after` seconds if given.
    pub fn fail_next(&self, n: u32, status: u16, retry_after: Option<u64>) {
        let mut faults = self.state.faults.lock().unwrap();
        (faults.next, faults.status, faults.retry_after) = (n, status, retry_after);
    }

    /// Answers every call for `model` with `status` (None: serve it again), whatever
    /// the other models do.
    pub fn fail_model(&self, model: &str, status: Option<u16>) {
        self.state.faults.lock().unwrap().failing_model = status.map(|s| (model.to_owned(), s));
    }

    /// Answers calls made with this bearer key with 401, as a server does for a revoked key.
    pub fn reject_key(&self, key: &str) {
        self.state.faults.lock().unwrap().rejected_key = Some(key.to_owned());
    }

    /// Answers `/api/tags` and `/v1/models` with `status` (None: normally).
    pub fn fail_listing(&self, status: Option<u16>) {
        self.state.faults.lock().unwrap().listing_status = status;
    }

    /// How many completion and embedding calls arrived (failed ones included).
    pub fn calls(&self) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == "POST" && is_call(&r.path))
            .count()
    }

    pub fn cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// Holds every completion and embedding call that arrives from now on: it is recorded
    /// (so `calls` and `wait_for_calls` see it) and gets no answer until `release`. A test
    /// orders two requests with it: the first holds its slot while the second is answered.
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// Lets held calls (and later ones) be answered.
    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Streams started from now on stop after their first `lines` lines (or SSE events)
    /// until `resume_streams`: what the client saw by then was written before the
    /// upstream sent the rest. Whole answers wait with their headers sent and no body.
    pub fn pause_streams_after(&self, lines: u64) {
        self.state.paused.send_replace(true);
        self.state.pause_after.store(lines + 1, Ordering::SeqCst);
    }

    pub fn resume_streams(&self) {
        self.state.paused.send_replace(false);
    }

    /// Stream lines (or SSE events) sent so far, over all streams.
    pub fn lines_sent(&self) -> u64 {
        self.state.lines_sent.load(Ordering::SeqCst)
    }

    /// Waits until `n` completion and embedding calls have arrived.
    pub async fn wait_for_calls(&self, n: usize) {
        eventually(&format!("{n} upstream calls"), || self.calls() >= n).await;
    }

    /// Waits until a streamed answer was dropped before its end (its reader hung up).
    pub async fn wait_for_cancel(&self) {
        eventually("the upstream call to be dropped", || self.cancelled()).await;
    }

    pub fn completed_streams(&self) -> u64 {
        self.state.completed_streams.load(Ordering::SeqCst)
    }

    /// Posts `body` to `url` (a diglot in front of this fake, whose line delay makes the
    /// answer slow) with a client that gives up after 500 ms, then checks that the upstream
    /// call was dropped too, before its answer was sent.
    pub async fn assert_giving_up_cancels_the_call(&self, url: &str, body: Value) {
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let result = impatient.post(url).json(&body).send().await;
        assert!(result.is_err(), "the client gave up");
        // The upstream call must stop when nobody waits for the answer.
        self.wait_for_cancel().await;
        assert_eq!(self.completed_streams(), 0);
    }
}

async fn record(req: &mut Request, depot: &Depot) -> (Arc<State>, Value) {
    let state = depot.get_typed::<Arc<State>>().unwrap().clone();
    let body: Value = req
        .payload()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    state.received.lock().unwrap().push(Received {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        body: body.clone(),
        headers,
    });
    if is_call(req.uri().path()) {
        let mut held = state.held.subscribe();
        let _ = held.wait_for(|held| !held).await;
    }
    (state, body)
}

fn model_file(body: &Value, dir: &str, ext: &str) -> Option<(String, PathBuf)> {
    let model = body["model"]
        .as_str()
        .or(body["name"].as_str())?
        .trim_end_matches(":latest")
        .to_owned();
    let path = fixture(&format!("ollama/{dir}/{model}.{ext}"));
    Some((model, path))
}

fn not_found(res: &mut Response, body: &Value) {
    res.status_code(StatusCode::NOT_FOUND);
    let model = body["model"].as_str().unwrap_or_default();
    res.render(Json(serde_json::json!({"error": format!("model '{model}' not found")})));
}

#[handler]
async fn stream_fixture(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (state, body) = record(req, depot).await;
    let dir = if req.uri().path().ends_with("chat") {
        "chat"
    } else {
        "generate"
    };
    let Some((_, path)) = model_file(&body, dir, "ndjson").filter(|(_, p)| p.is_file()) else {
        return not_found(res, &body);
    };
    let text = std::fs::read_to_string(path).unwrap();
    if body["stream"] == false {
        // A whole answer recorded as the server sends it is served as it is.
        if let Some((model, _)) = model_file(&body, dir, "json")
            && let Ok(whole) = std::fs::read(fixture(&format!("ollama/{dir}-whole/{model}.json")))
        {
            let pieces = text.lines().count();
            return send_bytes(res, state, pieces, whole, "application/json; charset=utf-8");
        }
        return ollama_whole_answer(res, state, &text);
    }
    let lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
    res.add_header("content-type", "application/x-ndjson", true).unwrap();
    drip(res, state, lines);
}

/// What Ollama answers to `stream: false` when no whole answer was recorded
/// (`fixtures/ollama/chat-whole/MODEL.json` is served as it is when there is one)
/// (server/routes.go, ChatHandler and
/// GenerateHandler): the stream's last line with the content, thinking, tool calls and
/// logprobs of every line folded in; an error line becomes a 500 with that error. It is
/// sent when the whole stream would have been (the line delay times the lines).
fn ollama_whole_answer(res: &mut Response, state: Arc<State>, ndjson: &str) {
    let lines: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    if let Some(error) = lines.iter().find(|l| l.get("error").is_some()) {
        res.status_code(StatusCode::INTERNAL_SERVER_ERROR);
        return res.render(Json(error.clone()));
    }
    let mut answer = lines.last().cloned().unwrap_or_default();
    let concat = |pick: &dyn Fn(&Value) -> &Value| -> Option<Value> {
        let parts: Vec<&str> = lines.iter().filter_map(|l| pick(l).as_str()).collect();
        (!parts.is_empty()).then(|| Value::String(parts.concat()))
    };
    let all = |pick: &dyn Fn(&Value) -> &Value| -> Vec<Value> {
        lines
            .iter()
            .filter_map(|l| pick(l).as_array())
            .flatten()
            .cloned()
            .collect()
    };
    if answer.get("message").is_some() {
        for field in ["content", "thinking"] {
            if let Some(text) = concat(&|l| &l["message"][field]) {
                answer["message"][field] = text;
            }
        }
        let calls = all(&|l| &l["message"]["tool_calls"]);
        if !calls.is_empty() {
            answer["message"]["tool_calls"] = Value::Array(calls);
        }
    } else {
        for field in ["response", "thinking"] {
            if let Some(text) = concat(&|l| &l[field]) {
                answer[field] = text;
            }
        }
    }
    let logprobs = all(&|l| &l["logprobs"]);
    if !logprobs.is_empty() {
        answer["logprobs"] = Value::Array(logprobs);
    }
    send_whole(res, state, lines.len(), answer);
}

/// Sends a whole answer when its stream of `pieces` would have ended (the line delay
/// times the pieces), as a server that generates before it answers, noting whether the
/// reader hung up.
fn send_whole(res: &mut Response, state: Arc<State>, pieces: usize, answer: Value) {
    let bytes = answer.to_string().into_bytes();
    send_bytes(res, state, pieces, bytes, "application/json; charset=utf-8");
}

/// `send_whole` for a body given as bytes, sent as they are.
fn send_bytes(res: &mut Response, state: Arc<State>, pieces: usize, answer: Vec<u8>, content_type: &str) {
    let delay = Duration::from_millis(state.line_delay_ms.load(Ordering::SeqCst)) * pieces as u32;
    res.add_header("content-type", content_type, true).unwrap();
    let paused = state.pause_after.load(Ordering::SeqCst) > 0;
    res.stream(async_stream::stream! {
        let mut guard = CancelGuard { state: state.clone(), finished: false };
        tokio::time::sleep(delay).await;
        if paused {
            let _ = state.paused.subscribe().wait_for(|paused| !paused).await;
        }
        yield Ok::<_, std::io::Error>(Bytes::from(answer));
        guard.finished = true;
        state.completed_streams.fetch_add(1, Ordering::SeqCst);
    });
}

/// Sends `pieces` one by one, `line_delay` apart, noting whether the reader hung up.
fn drip(res: &mut Response, state: Arc<State>, pieces: Vec<String>) {
    let delay = Duration::from_millis(state.line_delay_ms.load(Ordering::SeqCst));
    let pause_after = (state.pause_after.load(Ordering::SeqCst) as usize).checked_sub(1);
    let lines = pieces;
    res.stream(async_stream::stream! {
        let mut guard = CancelGuard { state: state.clone(), finished: false };
        for (i, line) in lines.into_iter().enumerate() {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if pause_after == Some(i) {
                let mut paused = state.paused.subscribe();
                let _ = paused.wait_for(|paused| !paused).await;
            }
            state.lines_sent.fetch_add(1, Ordering::SeqCst);
            yield Ok::<_, std::io::Error>(Bytes::from(line));
        }
        guard.finished = true;
        state.completed_streams.fetch_add(1, Ordering::SeqCst);
    });
}

struct CancelGuard {
    state: Arc<State>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.cancelled.store(true, Ordering::SeqCst);
        }
    }
}

#[handler]
async fn json_fixture(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (_, body) = record(req, depot).await;
    let path = match req.uri().path() {
        "/api/tags" => fixture("ollama/tags.json"),
        "/api/embed" => match model_file(&body, "embed", "json") {
            Some((_, p)) => p,
            None => return not_found(res, &body),
        },
        _ => match model_file(&body, "show", "json") {
            Some((_, p)) => p,
            None => return not_found(res, &body),
        },
    };
    match std::fs::read(&path) {
        // A real server answers one vector per input: keep that many of the fixture's.
        Ok(bytes) if req.uri().path() == "/api/embed" => {
            let mut answer: Value = serde_json::from_slice(&bytes).unwrap();
            answer["embeddings"].as_array_mut().unwrap().truncate(inputs(&body));
            res.render(Json(answer));
        }
        Ok(bytes) => {
            res.add_header("content-type", "application/json; charset=utf-8", true)
                .unwrap();
            res.body(bytes);
        }
        Err(_) => not_found(res, &body),
    }
}

fn inputs(body: &Value) -> usize {
    body["input"].as_array().map_or(1, Vec::len)
}

/// A 1×1 red PNG.
pub const RED_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53, 0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49,
    0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8, 0xCF, 0xC0, 0x00, 0x00, 0x03, 0x01, 0x01, 0x00, 0x18, 0xDD, 0x8D, 0xB0,
    0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

#[handler]
async fn ollama_management(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (_, body) = record(req, depot).await;
    if req.uri().path() == "/api/pull" {
        res.add_header("content-type", "application/x-ndjson", true).unwrap();
        let model = body["model"].as_str().unwrap_or_default();
        res.body(format!(
            "{{\"status\":\"pulling manifest\"}}\n{{\"status\":\"pulling {model}\"}}\n{{\"status\":\"success\"}}\n"
        ));
    }
}

/// Records an upload's size as `{"bytes": N}` and answers 201, as Ollama does.
#[handler]
async fn blob_upload(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let state = depot.get_typed::<Arc<State>>().unwrap().clone();
    let size = req.payload_with_max_size(1 << 30).await.map(|b| b.len()).unwrap_or(0);
    state.received.lock().unwrap().push(Received {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        body: serde_json::json!({"bytes": size}),
        headers: Vec::new(),
    });
    res.status_code(StatusCode::CREATED);
}

fn openai_not_found(res: &mut Response, body: &Value) {
    res.status_code(StatusCode::NOT_FOUND);
    let model = body["model"].as_str().unwrap_or_default();
    res.render(Json(serde_json::json!({"error": {
        "message": format!("The model `{model}` does not exist or you do not have access to it."),
        "type": "invalid_request_error", "param": null, "code": "model_not_found"}})));
}

fn openai_file(body: &Value, dir: &str, ext: &str) -> Option<PathBuf> {
    let path = fixture(&format!("openai/{dir}/{}.{ext}", body["model"].as_str()?));
    path.is_file().then_some(path)
}

#[handler]
async fn openai_stream(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (state, body) = record(req, depot).await;
    let dir = if req.uri().path().ends_with("chat/completions") {
        "chat"
    } else {
        "completions"
    };
    let Some(path) = openai_file(&body, dir, "sse") else {
        return openai_not_found(res, &body);
    };
    let text = std::fs::read_to_string(path).unwrap();
    let events: Vec<String> = text.split_inclusive("\n\n").map(str::to_owned).collect();
    if body["stream"] != true {
        // A whole answer recorded as the server sends it is served as it is.
        if let Some(whole) = openai_file(&body, &format!("{dir}-whole"), "json") {
            let bytes = std::fs::read(whole).unwrap();
            return send_bytes(res, state, events.len(), bytes, "application/json");
        }
        return whole_answer(res, state, &events, dir == "chat");
    }
    res.add_header("content-type", "text/event-stream", true).unwrap();
    drip(res, state, events);
}

/// What the server answers to `stream: false` when no whole answer was recorded
/// (`fixtures/openai/chat-whole/MODEL.json` is served as it is when there is one): its
/// stream's content in one body (content,
/// reasoning, tool calls by index, the last usage and llama-server's `timings`), or the
/// error it streamed, as a 500.
fn whole_answer(res: &mut Response, state: Arc<State>, events: &[String], chat: bool) {
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    if let Some(error) = chunks.iter().find(|c| c.get("error").is_some()) {
        res.status_code(StatusCode::INTERNAL_SERVER_ERROR);
        return res.render(Json(error.clone()));
    }
    let mut message = serde_json::Map::new();
    let mut text = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let (mut finish, mut usage, mut timings) = (Value::Null, Value::Null, None);
    for chunk in &chunks {
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
        if chunk["timings"].is_object() {
            timings = Some(chunk["timings"].clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        text.push_str(
            choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
                .unwrap_or_default(),
        );
        for field in ["reasoning", "reasoning_content"] {
            if let Some(piece) = choice["delta"][field].as_str() {
                let so_far = message
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                message.insert(field.into(), Value::String(so_far + piece));
            }
        }
        for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap_or(0) as usize;
            while calls.len() <= i {
                calls
                    .push(serde_json::json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}}));
            }
            if let Some(id) = call["id"].as_str().filter(|id| !id.is_empty()) {
                calls[i]["id"] = Value::from(id);
            }
            if let Some(name) = call["function"]["name"].as_str() {
                calls[i]["function"]["name"] = Value::from(name);
            }
            let arguments = calls[i]["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            calls[i]["function"]["arguments"] =
                Value::String(arguments + call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    let first = &chunks[0];
    let choice = if chat {
        message.insert("role".into(), "assistant".into());
        message.insert(
            "content".into(),
            if text.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            },
        );
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        serde_json::json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish})
    } else {
        serde_json::json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
    };
    let object = if chat { "chat.completion" } else { "text_completion" };
    let mut answer = serde_json::json!({"id": first["id"], "object": object, "created": first["created"],
        "model": first["model"], "choices": [choice], "usage": usage});
    if let Some(timings) = timings {
        answer["timings"] = timings;
    }
    send_whole(res, state, events.len(), answer);
}

#[handler]
async fn openai_json(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (_, body) = record(req, depot).await;
    let Some(path) = openai_file(&body, "embeddings", "json") else {
        return openai_not_found(res, &body);
    };
    let mut answer: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    answer["data"].as_array_mut().unwrap().truncate(inputs(&body));
    res.render(Json(answer));
}

#[handler]
async fn openai_models(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (state, _) = record(req, depot).await;
    if req.headers().contains_key("anthropic-version") {
        return anthropic_model_list(res);
    }
    let name = state.models.lock().unwrap().clone();
    let name = if name.is_empty() { "openai".to_owned() } else { name };
    let mut list: Value =
        serde_json::from_slice(&std::fs::read(fixture(&format!("openai/models/{name}.json"))).unwrap()).unwrap();
    let mut scenarios: Vec<String> = ["chat", "completions", "embeddings"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(fixture(&format!("openai/{dir}"))).unwrap())
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_str()?.to_owned();
            Some(name.strip_suffix(".sse").or(name.strip_suffix(".json"))?.to_owned())
        })
        .collect();
    scenarios.sort();
    let data = list["data"].as_array_mut().unwrap();
    for id in scenarios {
        data.push(serde_json::json!({"id": id, "object": "model", "created": 1_754_000_000, "owned_by": "fixtures"}));
    }
    res.render(Json(list));
}

/// Anthropic's `GET /v1/models` (a page of `ModelInfo`, as anthropic-sdk-python's
/// `types/model_info.py` and `pagination.py` read it): one entry per fixture model.
fn anthropic_model_list(res: &mut Response) {
    let ids = anthropic_models();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| serde_json::json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-05-14T00:00:00Z"}))
        .collect();
    res.render(Json(serde_json::json!({
        "data": data,
        "has_more": false,
        "first_id": ids.first(),
        "last_id": ids.last(),
    })));
}

/// `tags.json` (a real Ollama's list) plus one entry per fixture model, as a server that
/// has those models would list them.
fn is_call(path: &str) -> bool {
    [
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
    ]
    .contains(&path)
}

/// Answers with an injected failure (see `Faults`) before any handler runs.
#[handler]
async fn inject_faults(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let state = depot.get_typed::<Arc<State>>().unwrap().clone();
    let path = req.uri().path().to_owned();
    let failing_model = state.faults.lock().unwrap().failing_model.clone();
    let model_fails = match failing_model {
        Some((model, status)) if is_call(&path) => {
            let body: Value = req
                .payload()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (body["model"] == model.as_str()).then_some((status, None))
        }
        _ => None,
    };
    let status = {
        let mut faults = state.faults.lock().unwrap();
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let auth = header("authorization").or_else(|| header("x-api-key").map(|k| format!("Bearer {k}")));
        let auth = auth.as_deref();
        if path == "/api/tags" || path == "/v1/models" {
            faults.listing_status.map(|s| (s, None))
        } else if model_fails.is_some() {
            model_fails
        } else if !is_call(&path) {
            None
        } else if auth.is_some() && auth == faults.rejected_key.as_ref().map(|k| format!("Bearer {k}")).as_deref() {
            Some((401, None))
        } else if faults.next > 0 {
            faults.next -= 1;
            Some((faults.status, faults.retry_after))
        } else {
            None
        }
    };
    let Some((status, retry_after)) = status else {
        return;
    };
    record(req, depot).await;
    ctrl.skip_rest();
    res.status_code(StatusCode::from_u16(status).unwrap());
    if let Some(after) = retry_after {
        res.add_header("retry-after", after.to_string(), true).unwrap();
    }
    let message = format!("injected failure {status}");
    if path == "/v1/messages" {
        res.render(Json(anthropic_error(status, &message)));
    } else if path.starts_with("/api/") {
        // Ollama's shape (server/routes.go: gin.H{"error": ...}).
        res.render(Json(serde_json::json!({"error": message})));
    } else {
        // OpenAI's shape.
        res.render(Json(
            serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}),
        ));
    }
}

/// Anthropic's error body for `status` (its docs' "Errors" table).
fn anthropic_error(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[handler]
async fn anthropic_stream(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (state, body) = record(req, depot).await;
    let model = body["model"].as_str().unwrap_or_default();
    let path = fixture(&format!("anthropic/messages/{model}.sse"));
    if !path.is_file() {
        res.status_code(StatusCode::NOT_FOUND);
        return res.render(Json(anthropic_error(404, &format!("model: {model}"))));
    }
    let text = std::fs::read_to_string(path).unwrap();
    let events: Vec<String> = text.split_inclusive("\n\n").map(str::to_owned).collect();
    if body["stream"] != true {
        return anthropic_whole(res, state, &events);
    }
    res.add_header("content-type", "text/event-stream; charset=utf-8", true)
        .unwrap();
    drip(res, state, events);
}

/// What the API answers to `stream: false`: the stream folded into one `message` (its
/// blocks with their deltas applied, the stop reason and usage of `message_delta`), or
/// the error it streamed, with its status.
fn anthropic_whole(res: &mut Response, state: Arc<State>, events: &[String]) {
    let payloads: Vec<Value> = events
        .iter()
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut message = Value::Null;
    for event in &payloads {
        match event["type"].as_str().unwrap() {
            "message_start" => message = event["message"].clone(),
            "content_block_start" => message["content"]
                .as_array_mut()
                .unwrap()
                .push(event["content_block"].clone()),
            "content_block_delta" => {
                let block = &mut message["content"][event["index"].as_u64().unwrap() as usize];
                let delta = &event["delta"];
                let (field, piece) = match delta["type"].as_str().unwrap() {
                    "text_delta" => ("text", &delta["text"]),
                    "thinking_delta" => ("thinking", &delta["thinking"]),
                    "signature_delta" => ("signature", &delta["signature"]),
                    _ => ("partial_json", &delta["partial_json"]),
                };
                let so_far = block[field].as_str().unwrap_or_default().to_owned();
                block[field] = Value::String(so_far + piece.as_str().unwrap());
            }
            "message_delta" => {
                message["stop_reason"] = event["delta"]["stop_reason"].clone();
                message["stop_sequence"] = event["delta"]["stop_sequence"].clone();
                message["usage"]["output_tokens"] = event["usage"]["output_tokens"].clone();
            }
            "error" => {
                res.status_code(StatusCode::from_u16(529).unwrap());
                return res.render(Json(event.clone()));
            }
            _ => {}
        }
    }
    for block in message["content"].as_array_mut().unwrap() {
        if let Some(json) = block.as_object_mut().unwrap().remove("partial_json") {
            block["input"] = serde_json::from_str(json.as_str().unwrap()).unwrap();
        }
    }
    send_whole(res, state, events.len(), message);
}

#[handler]
async fn anthropic_count(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    record(req, depot).await;
    res.render(Json(serde_json::json!({"input_tokens": 14})));
}

/// llama-server's `/apply-template`: the chat rendered by the model's template, here
/// a ChatML rendering of each message's text.
#[handler]
async fn llama_apply_template(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (_, body) = record(req, depot).await;
    // Only llama-server has it: the other OpenAI-compatible fixtures' servers answer 404.
    if !body["model"].as_str().unwrap_or_default().starts_with("llamacpp") {
        res.status_code(StatusCode::NOT_FOUND);
        return res.render(Json(serde_json::json!({"error": {"message": "Not Found", "type": "invalid_request_error", "param": null, "code": null}})));
    }
    let prompt: String = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "<|im_start|>{}\n{}<|im_end|>\n",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap_or_default()
            )
        })
        .collect();
    res.render(Json(serde_json::json!({"prompt": prompt + "<|im_start|>assistant\n"})));
}

/// llama-server's `/tokenize` (`{"tokens": [ids]}`), here one token per
/// whitespace-separated piece, so a test can count what it expects.
#[handler]
async fn llama_tokenize(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let (_, body) = record(req, depot).await;
    let tokens: Vec<usize> = (0..body["content"].as_str().unwrap().split_whitespace().count()).collect();
    res.render(Json(serde_json::json!({"tokens": tokens})));
}

#[handler]
async fn ollama_tags(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    record(req, depot).await;
    let mut tags: Value = serde_json::from_slice(&std::fs::read(fixture("ollama/tags.json")).unwrap()).unwrap();
    let mut names: Vec<String> = ["chat", "generate", "embed"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(fixture(&format!("ollama/{dir}"))).unwrap())
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_str()?.to_owned();
            Some(name.strip_suffix(".ndjson").or(name.strip_suffix(".json"))?.to_owned())
        })
        .collect();
    names.sort();
    let models = tags["models"].as_array_mut().unwrap();
    for name in names {
        models.push(serde_json::json!({
            "name": name, "model": name, "modified_at": "2026-11-01T00:00:00Z", "size": 1_000_000,
            "digest": "0".repeat(64),
            "details": {"parent_model": "", "format": "gguf", "family": "fixture", "families": ["fixture"],
                        "parameter_size": "1B", "quantization_level": "Q4_0"}
        }));
    }
    res.render(Json(tags));
}

#[handler]
async fn red_png(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    record(req, depot).await;
    res.add_header("content-type", "image/png", true).unwrap();
    res.body(RED_PNG);
}

/// A "PNG" of `?bytes=N` bytes: the red PNG's bytes, then zeros.
#[handler]
async fn big_png(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    record(req, depot).await;
    let size: usize = req.query("bytes").unwrap_or(1 << 20);
    let mut bytes = RED_PNG.to_vec();
    bytes.resize(size.max(RED_PNG.len()), 0);
    res.add_header("content-type", "image/png", true).unwrap();
    res.body(bytes);
}

/// The red PNG after `?ms=N` milliseconds.
#[handler]
async fn slow_png(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    record(req, depot).await;
    let ms: u64 = req.query("ms").unwrap_or(5000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    res.add_header("content-type", "image/png", true).unwrap();
    res.body(RED_PNG);
}

/// A 302 to `?to=URL`.
#[handler]
async fn redirect(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    record(req, depot).await;
    let to: String = req.query("to").unwrap_or_default();
    res.status_code(StatusCode::FOUND);
    res.add_header("location", to, true).unwrap();
}

/// The defaults, on an ephemeral port, with no store (tests that need one set
/// `store.data_dir` to a `temp_dir()`'s path).
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        store: diglot::config::StoreConfig {
            data_dir: PathBuf::new(),
            ..Default::default()
        },
        ..Config::default()
    }
}

/// A port nobody listens on now, for a binary started with `--listen`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh, uniquely named directory, removed when the returned guard is dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("diglot-test-").tempdir().unwrap()
}

/// A URL where nothing listens (a port that was free a moment ago).
pub fn dead_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    url
}

/// One user message, as both APIs spell it.
pub fn user(text: &str) -> Value {
    serde_json::json!([{"role": "user", "content": text}])
}

/// How long a wait for something that must happen may take, on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `done` holds, checking every 10 ms; fails the test after `DEADLINE`.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    eventually_async(what, || std::future::ready(done())).await
}

/// Waits until the future `done` makes says so; fails the test after `DEADLINE`.
pub async fn eventually_async<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !done().await {
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the store in `dir` holds `n` usage records (they are written in batches,
/// after the answer), and opens it.
pub async fn usage_records(dir: &Path, n: u64) -> Arc<dyn diglot::store::Store> {
    let store = diglot::store::open_data_dir(dir).unwrap();
    eventually_async(&format!("{n} usage records"), || async {
        store.usage_count().await.is_ok_and(|count| count >= n)
    })
    .await;
    assert_eq!(store.usage_count().await.unwrap(), n, "no more records than requests");
    store
}

/// diglot on an ephemeral port in front of `upstream`, with `tweak` applied to the config.
pub async fn diglot(upstream: &str, tweak: impl FnOnce(&mut Config)) -> String {
    let mut config = test_config();
    config.upstream.url = upstream.to_owned();
    tweak(&mut config);
    let addr = diglot::http::spawn(config).await.unwrap();
    format!("http://{addr}")
}

/// diglot on an ephemeral port routing over `channels`, with `tweak` applied.
pub async fn diglot_channels(channels: Vec<diglot::config::UpstreamConfig>, tweak: impl FnOnce(&mut Config)) -> String {
    let mut config = Config {
        channels,
        ..test_config()
    };
    tweak(&mut config);
    let addr = diglot::http::spawn(config).await.unwrap();
    format!("http://{addr}")
}

/// A channel named `name` in front of `fake`.
pub fn channel(name: &str, fake: &FakeUpstream, kind: diglot::config::UpstreamKind) -> diglot::config::UpstreamConfig {
    diglot::config::UpstreamConfig {
        name: name.into(),
        kind,
        url: fake.url(),
        ..Default::default()
    }
}

/// A fake upstream and a diglot in front of it, speaking OpenAI to it.
pub async fn setup_openai() -> (FakeUpstream, String) {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| c.upstream.kind = diglot::config::UpstreamKind::Openai).await;
    (fake, base)
}

/// A fake upstream and a diglot in front of it, speaking Ollama to it.
pub async fn setup_ollama() -> (FakeUpstream, String) {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |_| {}).await;
    (fake, base)
}

/// One client for every test: building one (its TLS roots) costs ~20 ms in a debug build.
/// No idle connections are kept, since each test has its own runtime.
pub fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap())
        .clone()
}

/// An answer as a test reads it: status, headers and the whole body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON (failing the test with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The status and the body as JSON.
    pub fn status_json(&self) -> (u16, Value) {
        (self.status, self.json())
    }

    /// The body as JSON; for a stream, its last line; else the text as a JSON string.
    pub fn last_json(&self) -> Value {
        serde_json::from_str(&self.text)
            .or_else(|_| serde_json::from_str(self.text.lines().last().unwrap_or("null")))
            .unwrap_or(Value::String(self.text.clone()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }
}

/// Sends `request` and reads its whole answer.
pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let res = request.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    Answer { status, headers, text }
}

/// `POST base+path` with a JSON body.
pub async fn post(base: &str, path: &str, body: Value) -> Answer {
    send(client().post(format!("{base}{path}")).json(&body)).await
}

/// `POST base+path` with a JSON body and, if given, a bearer token.
pub async fn call(base: &str, path: &str, token: Option<&str>, body: Value) -> Answer {
    let mut request = client().post(format!("{base}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// `GET url` as text.
pub async fn get_text(url: &str) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// `GET url` as JSON.
pub async fn get_json(url: &str) -> Value {
    client().get(url).send().await.unwrap().json().await.unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            frame
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("frame without data: {frame:?}"))
                .to_owned()
        })
        .collect()
}

/// The JSON chunks of an SSE body, checking it ends with `[DONE]`.
pub fn sse_chunks(body: &str) -> Vec<Value> {
    let mut data = sse_data(body);
    assert_eq!(
        data.pop().as_deref(),
        Some("[DONE]"),
        "stream must end with [DONE]: {body}"
    );
    data.iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

/// The real diglot binary, started by `Binary::start` and killed when dropped however
/// the test ends. Its stderr (the log) is read as it comes, so the pipe never fills.
pub struct Binary {
    child: Option<Child>,
    pub base: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A `diglot` command that ignores the environment's profile, tokens and telemetry, and
/// has no store unless the test gives it one (`DIGLOT_STORE__DATA_DIR`): never the
/// user's own data directory.
pub fn diglot_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_diglot"));
    command
        .env("RUST_LOG", "")
        .env("DIGLOT_STORE__DATA_DIR", "")
        .env_remove("DIGLOT_PROFILE")
        .env_remove("API_TOKEN")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME");
    command
}

impl Binary {
    /// Starts `command` (from `diglot_command`, without `--listen`) on a free port and
    /// waits until it answers.
    pub async fn start(command: Command) -> Self {
        Self::start_on(command, "127.0.0.1").await
    }

    /// `start`, listening on `ip` (e.g. "0.0.0.0", every interface) and reached through
    /// 127.0.0.1.
    pub async fn start_on(mut command: Command, ip: &str) -> Self {
        let port = free_port();
        command
            .args(["--listen", &format!("{ip}:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let binary = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            reader: Some(reader),
        };
        let root = format!("{}/", binary.base);
        let deadline = Instant::now() + DEADLINE;
        let mut binary = binary;
        loop {
            if client().get(&root).send().await.is_ok() {
                return binary;
            }
            if let Some(status) = binary.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("diglot exited ({status}) before answering:\n{}", binary.finish_log());
            }
            assert!(Instant::now() < deadline, "diglot did not start:\n{}", binary.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether it is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM (a graceful stop), waits for the exit and returns it with the log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let status = child.wait().unwrap();
        (status, self.finish_log())
    }

    /// Kills it and returns the log.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        self.finish_log()
    }

    fn finish_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log()
    }
}

/// Runs `command` to its end, which must come within `DEADLINE` (it is killed and the
/// test fails otherwise): for commands that are expected to exit, a server refusing to
/// start included.
pub fn run_to_end(mut command: Command) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events of an SSE stream of named events (Anthropic's Messages, OpenAI's Responses)
/// as `(event name, data)`, checking each event's name is its data's `type`.
pub fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let (name, data) = frame
                .split_once('\n')
                .unwrap_or_else(|| panic!("not an event: {frame:?}"));
            let name = name.strip_prefix("event: ").expect("an event: line").to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").expect("a data: line")).unwrap();
            assert_eq!(data["type"], name.as_str(), "{frame}");
            (name, data)
        })
        .collect()
}

/// A fake upstream and a diglot in front of it, speaking Anthropic's Messages to it with
/// the key `sk-ant-test`, serving the `fixtures/anthropic/messages` models.
pub async fn setup_anthropic() -> (FakeUpstream, String) {
    let fake = FakeUpstream::start().await;
    let base = diglot(&fake.url(), |c| {
        c.upstream.kind = diglot::config::UpstreamKind::Anthropic;
        c.upstream.api_key = Some("sk-ant-test".into());
        c.upstream.models = anthropic_models();
    })
    .await;
    (fake, base)
}

/// The model names of `fixtures/anthropic/messages`.
pub fn anthropic_models() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture("anthropic/messages"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_str()?.strip_suffix(".sse")?.to_owned()))
        .collect();
    names.sort();
    names
}

/// The events of a Responses API stream (named events, as Anthropic's), checking that
/// `sequence_number`s count up from 0.
pub fn response_events(body: &str) -> Vec<Value> {
    let events: Vec<Value> = named_events(body).into_iter().map(|(_, data)| data).collect();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], i, "{event}");
    }
    events
}

/// How a `FaultyUpstream` answers the calls it gets. A stream's "first line" is its start
/// up to its first text: the first line of `fixtures/ollama/chat/chat-text.ndjson` on
/// `/api/...` paths, the first two events of `fixtures/openai/chat/oai-text.sse` on the
/// others.
#[derive(Clone, Debug)]
pub enum Misbehave {
    /// Reads the request, then resets the connection (RST) before sending anything.
    ResetBeforeHeaders,
    /// Sends the headers and the first line, then resets the connection.
    ResetAfterFirstLine,
    /// Reads the request and never answers.
    HangBeforeHeaders,
    /// Sends the headers and the first line, then nothing more.
    HangAfterFirstLine,
    /// Sends the headers, the first line, then these bytes, and closes.
    ThenBytes(&'static [u8]),
    /// Sends the headers, the first line, then one line that never ends, for as long as
    /// the reader reads.
    EndlessLine,
    /// Behaves: answers with the whole fixture (`content-length`) and keeps the connection
    /// for the next request, closing it after this long without one (as uvicorn does
    /// after 5 s).
    KeepAlive(Duration),
}

/// An upstream that misbehaves on command at the TCP level, speaking just enough HTTP/1.1
/// for both protocols. Model lists (`GET /api/tags`, `GET /v1/models`) are answered
/// properly and empty, so health checks see a live server. It counts the connections
/// still open, to check that diglot closes the ones it gives up on.
#[derive(Clone)]
pub struct FaultyUpstream {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Misbehave>>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyUpstream {
    pub async fn start(mode: Misbehave) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(mode)),
            open: Arc::default(),
            calls: Arc::default(),
            accepted: Arc::default(),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                server.accepted.fetch_add(1, Ordering::SeqCst);
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream).await });
            }
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Misbehave) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Connections that took a completion call and are not closed yet (pooled
    /// connections that only served model lists are not counted).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Completion calls received (model lists not counted).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Serves one connection: requests one after another until it misbehaves.
    async fn serve(&self, mut stream: tokio::net::TcpStream) {
        use tokio::io::AsyncWriteExt;
        loop {
            let idle = match *self.mode.lock().unwrap() {
                Misbehave::KeepAlive(idle) => idle,
                _ => Duration::from_secs(3600),
            };
            let Ok(Some((method, path))) = tokio::time::timeout(idle, read_request(&mut stream)).await else {
                return;
            };
            if method == "GET" {
                let body = if path.starts_with("/api/") {
                    r#"{"models":[]}"#
                } else {
                    r#"{"object":"list","data":[]}"#
                };
                if !write_whole(&mut stream, "application/json", body).await {
                    return;
                }
                continue;
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.open.fetch_add(1, Ordering::SeqCst);
            let _open = OpenCall(self.open.clone());
            let ollama = path.starts_with("/api/");
            let (content_type, first) = if ollama {
                let text = std::fs::read_to_string(fixture("ollama/chat/chat-text.ndjson")).unwrap();
                ("application/x-ndjson", format!("{}\n", text.lines().next().unwrap()))
            } else {
                let text = std::fs::read_to_string(fixture("openai/chat/oai-text.sse")).unwrap();
                // OpenAI's first event only names the role: the first text is in the second.
                let events: Vec<&str> = text.split("\n\n").take(2).collect();
                ("text/event-stream", format!("{}\n\n", events.join("\n\n")))
            };
            let mode = self.mode.lock().unwrap().clone();
            if let Misbehave::KeepAlive(_) = mode {
                let whole = if ollama {
                    "ollama/chat/chat-text.ndjson"
                } else {
                    "openai/chat/oai-text.sse"
                };
                let body = std::fs::read_to_string(fixture(whole)).unwrap();
                if !write_whole(&mut stream, content_type, &body).await {
                    return;
                }
                continue;
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n{first}");
            match mode {
                Misbehave::ResetBeforeHeaders => return reset(stream),
                Misbehave::HangBeforeHeaders => return wait_for_close(&mut stream).await,
                _ => {}
            }
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            match mode {
                Misbehave::ResetAfterFirstLine => {
                    let _ = stream.flush().await;
                    return reset(stream);
                }
                Misbehave::ThenBytes(bytes) => {
                    let _ = stream.write_all(bytes).await;
                    let _ = stream.shutdown().await;
                }
                Misbehave::EndlessLine => {
                    let prefix: &[u8] = if ollama { b"{\"message\":\"" } else { b"data: {\"x\":\"" };
                    let _ = stream.write_all(prefix).await;
                    let chunk = vec![b'x'; 64 * 1024];
                    while stream.write_all(&chunk).await.is_ok() {}
                    return;
                }
                _ => {}
            }
            return wait_for_close(&mut stream).await;
        }
    }
}

/// Writes a 200 answer of `body` whole (`content-length`, the connection kept); false when
/// the peer is gone.
async fn write_whole(stream: &mut tokio::net::TcpStream, content_type: &str, body: &str) -> bool {
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(format!("{head}{body}").as_bytes()).await.is_ok()
}

/// A connection serving a call, counted until it ends.
struct OpenCall(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads one request's head and body; its method and path, `None` once the peer closed.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buf[..n]);
    }
    let mut parts = head.split_whitespace();
    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
}

/// Closes with a reset (RST) rather than a clean end: SO_LINGER with a zero timeout.
fn reset(stream: tokio::net::TcpStream) {
    stream.set_zero_linger().unwrap();
    drop(stream);
}

/// Waits until the peer closes the connection (or resets it).
async fn wait_for_close(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// The resident memory of process `pid`, in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The diglot binary in front of `fake` (an OpenAI-compatible upstream), with `profile`
/// (TOML) as its profile and its store in `dir`.
pub async fn binary_with_profile(fake: &FakeUpstream, dir: &Path, profile: &str) -> Binary {
    let path = dir.join("profile.toml");
    std::fs::write(&path, profile).unwrap();
    let mut command = diglot_command();
    command
        .args(["--profile", path.to_str().unwrap(), "--target", &fake.url()])
        .env("DIGLOT_STORE__DATA_DIR", dir);
    Binary::start(command).await
}

/// A raw TCP connection to `base` (`http://HOST:PORT`), for requests no HTTP client
/// would send: partial heads, trickled bodies, lies about lengths.
pub async fn raw_connect(base: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything `stream` sends until it closes (or `limit` passes: the test fails).
pub async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        read.is_ok(),
        "the connection stayed open for {limit:?}; it sent: {answer}"
    );
    answer
}

/// The home of the client SDKs and tools the tests drive (`tests/clients/setup.sh`: a
/// Python venv and an npm folder, pinned), installed once per test process. Blocks for
/// as long as an install takes: call it off the async threads.
pub fn clients_home() -> &'static PathBuf {
    static HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/setup.sh");
        let out = Command::new("bash").arg(script).output().expect("bash runs");
        assert!(
            out.status.success(),
            "client setup failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
    })
}

/// The Python of the clients' venv (with the pinned SDKs and tools of `setup.sh`).
pub fn venv_python() -> PathBuf {
    clients_home().join("venv/bin/python")
}

// The admin API (`/admin/api`): a gateway with a store and a password, and a caller
// that signs in as a browser does (session cookie + CSRF header) or sends a token.

/// The password the admin tests set (`[admin] password`, hashed when diglot starts).
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// diglot with its store in a temp dir, the admin password set and one profile channel,
/// "main", in front of `fake` (an Ollama upstream).
pub struct AdminGateway {
    pub base: String,
    pub fake: FakeUpstream,
    pub dir: tempfile::TempDir,
    /// What it was started with, to start another on the same store.
    pub config: Config,
}

impl AdminGateway {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let fake = FakeUpstream::start().await;
        let dir = temp_dir();
        let mut config = Config {
            channels: vec![channel("main", &fake, diglot::config::UpstreamKind::Ollama)],
            ..test_config()
        };
        config.store.data_dir = dir.path().to_owned();
        config.admin.password = ADMIN_PASSWORD.into();
        tweak(&mut config);
        let addr = diglot::http::spawn(config.clone()).await.unwrap();
        Self {
            base: format!("http://{addr}"),
            fake,
            dir,
            config,
        }
    }

    /// Another diglot with the same profile and the same store, as after a restart.
    pub async fn restart(&self) -> String {
        let addr = diglot::http::spawn(self.config.clone()).await.unwrap();
        format!("http://{addr}")
    }

    /// A password session (one login attempt).
    pub async fn admin(&self) -> Admin {
        Admin::login(&self.base, ADMIN_PASSWORD).await
    }

    /// The store, opened beside the running gateway.
    pub fn store(&self) -> Arc<dyn diglot::store::Store> {
        diglot::store::open_data_dir(self.dir.path()).unwrap()
    }
}

/// A caller of the admin API: a session (its cookie, sent back as a browser does, and
/// its CSRF token, sent with every state change) or a bearer token.
#[derive(Clone)]
pub struct Admin {
    pub base: String,
    /// `diglot_session=...`, as the `Cookie` header carries it.
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
}

impl Admin {
    /// Signs in with the password, which must succeed.
    pub async fn login(base: &str, password: &str) -> Self {
        Self::sign_in(base, serde_json::json!({"password": password})).await
    }

    /// Signs in with an API token, which must succeed.
    pub async fn login_token(base: &str, token: &str) -> Self {
        Self::sign_in(base, serde_json::json!({"token": token})).await
    }

    async fn sign_in(base: &str, body: Value) -> Self {
        let a = post(base, "/admin/api/login", body).await;
        assert_eq!(a.status, 200, "signing in should succeed: {}", a.text);
        let set_cookie = session_cookie(&a)
            .unwrap_or_else(|| panic!("a login sets the diglot_session cookie; headers: {:?}", a.headers));
        let pair = set_cookie.split(';').next().unwrap().trim().to_owned();
        let csrf = a.json()["csrf_token"]
            .as_str()
            .unwrap_or_else(|| panic!("a login answers its csrf_token: {}", a.text))
            .to_owned();
        Self {
            base: base.to_owned(),
            cookie: Some(pair),
            csrf: Some(csrf),
            bearer: None,
        }
    }

    /// A caller that sends `Authorization: Bearer TOKEN` and nothing else.
    pub fn bearer(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            cookie: None,
            csrf: None,
            bearer: Some(token.to_owned()),
        }
    }

    /// This session without its CSRF token (as a forged cross-site request would be).
    pub fn without_csrf(&self) -> Self {
        Self {
            csrf: None,
            ..self.clone()
        }
    }

    /// The same credentials sent to another diglot (a replica of the same fleet).
    pub fn at(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    /// `METHOD base+path` with this caller's credentials; anything but a GET carries the
    /// CSRF token when there is one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let unsafe_method = method != reqwest::Method::GET;
        let mut request = client().request(method, format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        if let Some(csrf) = self.csrf.as_ref().filter(|_| unsafe_method) {
            request = request.header("x-csrf-token", csrf);
        }
        request
    }

    pub async fn get(&self, path: &str) -> Answer {
        send(self.request(reqwest::Method::GET, path)).await
    }

    /// `GET path`, which must answer 200: its JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        let a = self.get(path).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.text);
        a.json()
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Makes a token with `fields` (201 expected): its record and its secret.
    pub async fn create_token(&self, fields: Value) -> (Value, String) {
        let a = self.post("/admin/api/tokens", fields.clone()).await;
        assert_eq!(a.status, 201, "POST /admin/api/tokens {fields}: {}", a.text);
        let answer = a.json();
        let secret = answer["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("the create answer holds the secret: {answer}"))
            .to_owned();
        (answer["token"].clone(), secret)
    }
}

/// An id as a path segment or query value (the API may spell ids as numbers or strings).
pub fn id_of(record: &Value) -> String {
    match &record["id"] {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        other => panic!("a record with an id, not {other}: {record}"),
    }
}

/// The `Set-Cookie` header that sets `diglot_session`, whole (with its attributes).
pub fn session_cookie(a: &Answer) -> Option<String> {
    a.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().starts_with("diglot_session="))
        .map(str::to_owned)
}

/// Whether a `Set-Cookie` header has `attribute` (`HttpOnly`, `Path=/admin`...), ignoring
/// case and spaces.
pub fn cookie_has(set_cookie: &str, attribute: &str) -> bool {
    set_cookie
        .split(';')
        .skip(1)
        .any(|a| a.trim().replace(' ', "").eq_ignore_ascii_case(attribute))
}

/// Checks `a` is an admin API error (`{"error": {"message", "field"}}`) with `status`
/// and, when `field` is given, naming that field; returns its message.
pub fn admin_error(a: &Answer, status: u16, field: Option<&str>, what: &str) -> String {
    assert_eq!(
        a.status, status,
        "{what}: expected status {status} (field {field:?}), got {}: {}",
        a.status, a.text
    );
    let body: Value = serde_json::from_str(&a.text).unwrap_or_else(|e| {
        panic!(
            "{what}: an error body in JSON ({{\"error\": {{...}}}}), not {e}: {}",
            a.text
        )
    });
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: error.message is a string: {body}"));
    assert!(!message.is_empty(), "{what}: the error says what is wrong: {body}");
    if let Some(field) = field {
        assert_eq!(
            body["error"]["field"], field,
            "{what}: error.field names the field: {body}"
        );
    }
    message.to_owned()
}

/// The entries of a `{"data": [...]}` answer.
pub fn data(list: &Value) -> Vec<Value> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a {{\"data\": [...]}} list: {list}"))
        .clone()
}

/// Milliseconds since the epoch, as the usage records count time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
