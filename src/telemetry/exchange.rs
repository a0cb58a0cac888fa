//! One HTTP request from arrival to the last byte of its answer: its server span, the
//! HTTP metrics, and the access line. Shared (`Arc`) by the listener and whatever serves
//! the request; the last holder to let go ends it, which for a streamed answer is the
//! stream itself, so a stream is counted and logged when it really ends.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::Span;

use super::metrics::{HttpLabels, Metrics, status_class};

pub struct Exchange {
    pub started: Instant,
    span: Span,
    frontend: &'static str,
    method: String,
    route: &'static str,
    path: String,
    trace_id: Option<String>,
    /// The caller's `x-request-id`, or one made here; answered in `x-request-id`.
    request_id: String,
    metrics: Arc<Metrics>,
    access_log: bool,
    /// Where the access line goes besides the log, when someone watched as it started.
    tail: Option<super::tail::Tail>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    status: u16,
    streaming: bool,
    token_prefix: Option<String>,
    client_ip: Option<std::net::IpAddr>,
    outcome: Option<Outcome>,
    cache_status: Option<&'static str>,
}

/// What the gateway made of a model request, for the access line.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub model: String,
    pub channel: Option<String>,
    /// The final status: differs from the HTTP one when a stream failed or the client
    /// left (499) after the headers were sent.
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub estimated: bool,
    pub cached: bool,
    pub ttft_ms: Option<u64>,
}

/// Settings every exchange shares.
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    pub tail: super::tail::Tail,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// A request arrived. `headers` may carry the caller's `traceparent`.
    pub fn start(
        observer: &Observer,
        frontend: &'static str,
        method: &str,
        path: &str,
        route: &'static str,
        headers: &reqwest::header::HeaderMap,
    ) -> Arc<Self> {
        let span = super::spans::server_span(method, route, headers);
        // What only the access line needs is kept only when it is written.
        let tail = observer.tail.watched().then(|| observer.tail.clone());
        let access_log = observer.access_log;
        let line = access_log || tail.is_some();
        let trace_id = super::spans::trace_id(&span, headers);
        observer.metrics.request_started();
        Arc::new(Self {
            started: Instant::now(),
            span,
            frontend,
            method: if line { method.to_owned() } else { String::new() },
            route,
            path: if line { path.to_owned() } else { String::new() },
            trace_id,
            request_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map_or_else(new_request_id, |v| v.chars().take(128).collect()),
            metrics: observer.metrics.clone(),
            access_log,
            tail,
            state: Mutex::new(State::default()),
        })
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The trace this request belongs to (the caller's, or the one its span started).
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The caller's address, as the gateway believes it (through trusted proxies).
    pub fn client_ip(&self, ip: std::net::IpAddr) {
        self.state.lock().expect("exchange lock").client_ip = Some(ip);
    }

    /// The caller's token, by its shown prefix.
    pub fn token(&self, prefix: &str) {
        self.span.record("diglot.token_prefix", prefix);
        self.state.lock().expect("exchange lock").token_prefix = Some(prefix.to_owned());
    }

    /// The handler answered with `status`; `streaming` when the body is a stream.
    pub fn responded(&self, status: u16, streaming: bool) {
        let mut state = self.state.lock().expect("exchange lock");
        state.status = status;
        if streaming && !state.streaming {
            state.streaming = true;
            self.metrics.stream_opened();
        }
    }

    /// What the response cache did: `hit`, `miss` or `bypass` (the client said `no-cache`).
    pub fn cache_status(&self, status: &'static str) {
        self.span.record("diglot.cache_hit", status == "hit");
        self.state.lock().expect("exchange lock").cache_status = Some(status);
    }

    /// For the `x-diglot-cache` header.
    pub fn cache_status_shown(&self) -> Option<&'static str> {
        self.state.lock().expect("exchange lock").cache_status
    }

    /// The gateway's account of a model request.
    pub fn outcome(&self, outcome: Outcome) {
        self.state.lock().expect("exchange lock").outcome = Some(outcome);
    }
}

/// A request id for a request that came without one: `req_` and 16 hex digits.
fn new_request_id() -> String {
    format!("req_{:016x}", rand::random::<u64>())
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let state = std::mem::take(self.state.get_mut().expect("exchange lock"));
        // No status yet: the client left before the handler answered (nginx's 499).
        let http_status = if state.status == 0 { 499 } else { state.status };
        let status = state.outcome.as_ref().map_or(http_status, |o| o.status);
        let labels = HttpLabels {
            frontend: self.frontend,
            route: if self.route.is_empty() { "other" } else { self.route },
            status_class: status_class(status),
        };
        self.metrics.request_ended(labels, state.streaming);
        // Integers as i64: tracing-opentelemetry records u64 values as strings.
        self.span.record("http.response.status_code", i64::from(http_status));
        if status >= 500 && status != 499 {
            self.span.record("error.type", status.to_string());
            self.span.record("otel.status_code", "error");
        }
        if !self.access_log && self.tail.is_none() {
            return;
        }
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let outcome = state.outcome.unwrap_or_default();
        if let Some(tail) = &self.tail {
            let line = serde_json::json!({
                "at_ms": chrono::Utc::now().timestamp_millis(),
                "trace_id": self.trace_id,
                "request_id": self.request_id,
                "method": self.method,
                "path": self.path,
                "route": self.route,
                "status": status,
                "duration_ms": latency_ms.round() as u64,
                "client_ip": state.client_ip,
                "frontend": self.frontend,
                "token_prefix": state.token_prefix,
                "model": Some(&outcome.model).filter(|m| !m.is_empty()),
                "channel": outcome.channel,
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "estimated": outcome.estimated,
                "cached": outcome.cached,
                "ttft_ms": outcome.ttft_ms,
            });
            tail.send(line.to_string());
        }
        if !self.access_log {
            return;
        }
        tracing::info!(
            target: "diglot::access",
            trace_id = self.trace_id,
            request_id = self.request_id,
            method = self.method,
            path = self.path,
            status,
            latency_ms = (latency_ms * 1000.0).round() / 1000.0,
            frontend = self.frontend,
            token = state.token_prefix,
            model = Some(outcome.model).filter(|m| !m.is_empty()),
            channel = outcome.channel,
            prompt_tokens = outcome.prompt_tokens,
            completion_tokens = outcome.completion_tokens,
            estimated = outcome.estimated,
            cached = outcome.cached,
            ttft_ms = outcome.ttft_ms,
            "request"
        );
    }
}
