//! What every backend needs from HTTP: pooled clients per upstream, timeouts, and
//! upstream failures turned into IR errors that say which upstream and why.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Level, debug, enabled};

use super::framing::{self, Format};
use super::transport::{self, Answer, Clients, SendError};
use crate::config::{Endpoint, UpstreamConfig, UpstreamKind};
use crate::ir::{Error, ErrorKind};

/// A streamed answer's frames (NDJSON lines or SSE events' data), behind one pointer: the
/// decoders above are generators that keep what they take both as captured and as pinned,
/// so a framer held inline was kept twice, ~2 KB more in every open stream.
pub type Frames = std::pin::Pin<Box<dyn Stream<Item = Result<String, Error>> + Send>>;

/// The longest whole body accepted from an upstream (embeddings of long batches can be
/// big); streamed frames have their own limit, `max_line_bytes`.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A request to pass through untranslated.
pub struct Forward<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub content_type: Option<&'a str>,
    pub body: transport::Body,
}

/// An upstream's answer passed through untranslated.
pub struct PassThrough {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: futures::stream::BoxStream<'static, Result<Bytes, Error>>,
}

/// One upstream server with one key: base URL, credentials, timeouts, and the pooled
/// clients it shares with the other keys of its channel.
#[derive(Clone)]
pub struct Upstream {
    http: Arc<Clients>,
    /// Straight through hyper (plain HTTP, no proxy), or through reqwest.
    direct: bool,
    /// For logs and spans: the URL as configured without credentials, query or
    /// trailing slash.
    base: String,
    /// For messages to clients: "the upstream 'NAME'" (its channel's name), never the
    /// internal URL, which stays in logs and in `/health` for admins.
    shown: String,
    /// The configured URL in parts, parsed once: a request's URI is these with its
    /// path appended (and its query joined to the URL's own, Azure's `api-version`).
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    base_query: Option<String>,
    /// `Authorization: Bearer KEY` (`x-api-key: KEY` for Anthropic), marked sensitive so
    /// it never shows in debug output.
    auth: Option<(HeaderName, HeaderValue)>,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    /// How long a whole call (its answer read to the end) may take, if limited.
    total_timeout: Option<Duration>,
    max_line_bytes: usize,
}

/// When an upstream call must have ended (`total_timeout_secs`), carried by its answer.
#[derive(Clone, Copy)]
struct Deadline(tokio::time::Instant);

impl Upstream {
    /// The pooled clients of a channel's keys.
    pub fn client(config: &UpstreamConfig) -> Arc<Clients> {
        Arc::new(Clients::new(config))
    }

    pub fn new(config: &UpstreamConfig, http: Arc<Clients>, endpoint: &Endpoint) -> Self {
        let (header, scheme) = match config.kind {
            UpstreamKind::Anthropic => (HeaderName::from_static("x-api-key"), ""),
            UpstreamKind::Ollama | UpstreamKind::Openai => (AUTHORIZATION, "Bearer "),
        };
        let auth = endpoint
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .and_then(|key| HeaderValue::try_from(format!("{scheme}{key}")).ok())
            .map(|mut value| {
                value.set_sensitive(true);
                (header, value)
            });
        let base = endpoint.url.trim_end_matches('/');
        let url = url::Url::parse(base).expect("the upstream URL was validated with the configuration");
        let uri: http::Uri = base.parse().expect("a valid URL is a valid URI");
        let parts = uri.clone().into_parts();
        // Credentials in the URL become a basic `Authorization`, which reqwest does.
        let direct = url.username().is_empty() && url.password().is_none() && Clients::is_direct(&uri);
        Self {
            http,
            direct,
            base: shown_url(base),
            shown: format!("the upstream '{}'", config.name),
            scheme: parts.scheme.unwrap_or(Scheme::HTTP),
            authority: parts.authority.expect("an upstream URL has a host"),
            base_path: url.path().trim_end_matches('/').to_owned(),
            base_query: url.query().map(str::to_owned),
            auth,
            first_byte_timeout: config.first_byte_timeout(),
            idle_timeout: config.idle_timeout(),
            total_timeout: config.total_timeout(),
            max_line_bytes: config.max_line_bytes,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// How client-facing messages name this upstream: by its channel, not its URL.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// A streamed answer cut into NDJSON lines or SSE events, within the channel's
    /// frame size, idle timeout and total timeout.
    pub fn frames(&self, answer: Answer, format: Format) -> Frames {
        let deadline = answer.extensions().get::<Deadline>().copied();
        let frames = Box::pin(framing::frames(
            transport::chunks(answer),
            format,
            self.max_line_bytes,
            self.idle_timeout,
            self.shown.clone(),
        ));
        match (deadline, self.total_timeout) {
            (Some(Deadline(at)), Some(total)) => {
                let late = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{} did not finish its answer within {} s (the channel's total_timeout_secs)",
                        self.shown,
                        total.as_secs_f64()
                    ),
                );
                Box::pin(until(at, frames, late))
            }
            _ => frames,
        }
    }

    /// The URI of `path` (which may carry a query) under the configured URL.
    fn uri(&self, path: &str, beside_v1: bool) -> Result<http::Uri, Error> {
        let root = match beside_v1 {
            true => self.base_path.strip_suffix("/v1").unwrap_or(&self.base_path),
            false => &self.base_path,
        };
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let path_and_query = match (self.base_query.as_deref(), query) {
            (None, None) => format!("{root}{path}"),
            (Some(q), None) | (None, Some(q)) => format!("{root}{path}?{q}"),
            (Some(a), Some(b)) => format!("{root}{path}?{a}&{b}"),
        };
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| Error::internal(format!("the upstream path '{path}' is not a valid URI: {e}")))
    }

    pub async fn post<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> Result<Answer, Error> {
        let uri = self.uri(path, false)?;
        if enabled!(target: "diglot::wire", Level::DEBUG) {
            debug!(target: "diglot::wire", %uri, payload = %serde_json::to_string(body).unwrap_or_default(), "upstream request");
        }
        self.post_json(uri, body).await
    }

    /// Posts to one of the server's own endpoints, which live beside its `/v1` API
    /// (llama-server's `/tokenize`) whether or not the configured URL ends with `/v1`.
    pub async fn post_beside_v1<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> Result<Answer, Error> {
        self.post_json(self.uri(path, true)?, body).await
    }

    /// Sends `body` as JSON, serialized into one buffer sized for a typical chat.
    async fn post_json<T: Serialize + ?Sized>(&self, uri: http::Uri, body: &T) -> Result<Answer, Error> {
        let mut json = Vec::with_capacity(1024);
        serde_json::to_writer(&mut json, body)
            .map_err(|e| Error::internal(format!("the upstream request could not be written as JSON: {e}")))?;
        let mut request = http::Request::post(uri)
            .body(transport::whole(json))
            .expect("a request of valid parts");
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> Result<Answer, Error> {
        let request = http::Request::get(self.uri(path, false)?)
            .body(transport::whole(Bytes::new()))
            .expect("a request of valid parts");
        self.send(request).await
    }

    /// Sends a request through as it is and streams the answer back whatever its status
    /// (Ollama model management: pulls and blob uploads can be gigabytes and minutes
    /// long, so neither body is read whole).
    pub async fn pass_through(&self, call: Forward<'_>) -> Result<PassThrough, Error> {
        let method = http::Method::from_bytes(call.method.as_bytes()).unwrap_or(http::Method::POST);
        let mut request = http::Request::builder()
            .method(method)
            .uri(self.uri(call.path_and_query, false)?)
            .body(call.body)
            .expect("a request of valid parts");
        if let Some(content_type) = call.content_type.and_then(|v| HeaderValue::from_str(v).ok()) {
            request.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        self.authorize(request.headers_mut());
        let answer = self
            .http
            .send(self.direct, request)
            .await
            .map_err(|e| self.transport_error(&e))?;
        let content_type = answer
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = answer.status().as_u16();
        let shown = self.shown.clone();
        Ok(PassThrough {
            status,
            content_type,
            body: Box::pin(transport::chunks(answer).map(move |chunk| {
                chunk.map_err(|e| {
                    Error::new(
                        ErrorKind::UpstreamUnavailable,
                        format!("{shown} broke off: {}", root_cause(&e)),
                    )
                })
            })),
        })
    }

    fn authorize(&self, headers: &mut HeaderMap) {
        if let Some((name, value)) = &self.auth {
            headers.insert(name, value.clone());
        }
    }

    /// Sends and waits for the response headers; a non-2xx answer becomes an error.
    async fn send(&self, mut request: http::Request<transport::Body>) -> Result<Answer, Error> {
        self.authorize(request.headers_mut());
        if crate::telemetry::tracing_on() {
            // The attempt's span continues upstream (`traceparent`).
            crate::telemetry::spans::inject(request.headers_mut());
        }
        // The head must come within the first-byte timeout and the total one.
        let wait = self
            .total_timeout
            .map_or(self.first_byte_timeout, |total| total.min(self.first_byte_timeout));
        let deadline = self
            .total_timeout
            .map(|total| Deadline(tokio::time::Instant::now() + total));
        let mut answer = match tokio::time::timeout(wait, self.http.send(self.direct, request)).await {
            Err(_) => return Err(self.timed_out(wait)),
            Ok(Err(e)) => return Err(self.transport_error(&e)),
            Ok(Ok(answer)) => answer,
        };
        if answer.status().is_success() {
            if let Some(deadline) = deadline {
                answer.extensions_mut().insert(deadline);
            }
            return Ok(answer);
        }
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = read_limited(answer, 64 * 1024).await.unwrap_or_default();
        Err(Error {
            retry_after,
            ..upstream_status_error(status, &body, &self.shown)
        })
    }

    /// Reads a whole answer (embeddings of long batches, model lists).
    pub async fn body(&self, answer: Answer) -> Result<Bytes, Error> {
        self.read_within(answer, MAX_BODY_BYTES, "").await
    }

    /// Reads a whole chat answer: one frame, so within the channel's `max_line_bytes`.
    pub async fn chat_body(&self, answer: Answer) -> Result<Bytes, Error> {
        let setting = " (the limit is the channel's max_line_bytes; raise it in the profile to accept larger ones)";
        self.read_within(answer, self.max_line_bytes, setting).await
    }

    /// Reads a whole body of at most `limit` bytes (`setting` says how to raise it),
    /// within the idle timeout and what is left of the total one.
    async fn read_within(&self, answer: Answer, limit: usize, setting: &str) -> Result<Bytes, Error> {
        let wait = match answer.extensions().get::<Deadline>() {
            Some(Deadline(at)) => self
                .idle_timeout
                .min(at.saturating_duration_since(tokio::time::Instant::now())),
            None => self.idle_timeout,
        };
        let late = match self.total_timeout {
            Some(total) if wait < self.idle_timeout => total,
            _ => self.idle_timeout,
        };
        let read = async {
            // An answer in one read (most are) is kept as it came, not copied.
            let (mut first, mut more) = (Bytes::new(), None::<bytes::BytesMut>);
            let chunks = transport::chunks(answer);
            futures::pin_mut!(chunks);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                let held = more.as_ref().map_or(first.len(), |m| m.len());
                if held + chunk.len() > limit {
                    return Ok(None);
                }
                match &mut more {
                    None if first.is_empty() => first = chunk,
                    None => {
                        let mut joined = bytes::BytesMut::with_capacity(2 * (held + chunk.len()));
                        joined.extend_from_slice(&first);
                        joined.extend_from_slice(&chunk);
                        more = Some(joined);
                    }
                    Some(joined) => joined.extend_from_slice(&chunk),
                }
            }
            Ok::<_, transport::BodyError>(Some(more.map_or(first, bytes::BytesMut::freeze)))
        };
        let body = match tokio::time::timeout(wait, read).await {
            Err(_) => return Err(self.timed_out(late)),
            Ok(Err(e)) => {
                return Err(Error::new(
                    ErrorKind::UpstreamUnavailable,
                    format!("cannot reach {}: {}", self.shown, root_cause(&e)),
                ));
            }
            Ok(Ok(None)) => {
                return Err(Error::upstream(
                    502,
                    format!("{} sent an answer larger than {limit} bytes{setting}", self.shown),
                ));
            }
            Ok(Ok(Some(body))) => body,
        };
        debug!(target: "diglot::wire", answer = %String::from_utf8_lossy(&body), "upstream answer");
        Ok(body)
    }

    /// Reads a whole JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, answer: Answer) -> Result<T, Error> {
        let body = self.body(answer).await?;
        self.parse(&body)
    }

    /// Reads a whole JSON chat answer, within `max_line_bytes`.
    pub async fn chat_json<T: DeserializeOwned>(&self, answer: Answer) -> Result<T, Error> {
        let body = self.chat_body(answer).await?;
        self.parse(&body)
    }

    fn parse<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(body)
            .map_err(|e| Error::upstream(502, format!("{} sent an answer diglot cannot read: {e}", self.shown)))
    }

    fn timed_out(&self, after: Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!("{} did not answer within {} s", self.shown, after.as_secs_f64()),
        )
    }

    fn transport_error(&self, e: &SendError) -> Error {
        if e.is_timeout() {
            Error::new(ErrorKind::Timeout, format!("{} timed out", self.shown))
        } else {
            Error::new(
                ErrorKind::UpstreamUnavailable,
                format!("cannot reach {}: {}", self.shown, root_cause(e.as_error())),
            )
        }
    }
}

/// `frames` until `at`, then `late` as its last item.
fn until(
    at: tokio::time::Instant,
    mut frames: Frames,
    late: Error,
) -> impl Stream<Item = Result<String, Error>> + Send {
    async_stream::stream! {
        let timer = tokio::time::sleep_until(at);
        futures::pin_mut!(timer);
        loop {
            tokio::select! {
                biased;
                frame = frames.next() => match frame {
                    Some(frame) => yield frame,
                    None => return,
                },
                () = &mut timer => {
                    yield Err(late);
                    return;
                }
            }
        }
    }
}

async fn read_limited(answer: Answer, limit: usize) -> Result<Bytes, transport::BodyError> {
    let mut body = Vec::new();
    let chunks = transport::chunks(answer);
    futures::pin_mut!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]);
        if body.len() == limit {
            break;
        }
    }
    Ok(body.into())
}

/// An upstream's non-2xx answer, in either protocol's error shape or plain text.
pub fn upstream_status_error(status: u16, body: &[u8], shown: &str) -> Error {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match &v["error"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("message").and_then(|m| m.as_str()).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let message = if message.is_empty() {
        format!("{shown} answered HTTP {status}")
    } else {
        message
    };
    let kind = match status {
        400 | 422 => ErrorKind::BadRequest,
        404 => {
            return Error {
                param: Some("model".into()),
                ..Error::new(ErrorKind::NotFound, message)
            };
        }
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimited,
        _ => ErrorKind::UpstreamError { status },
    };
    Error::new(kind, message)
}

pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A URL without credentials or query in it, for showing.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => String::new(),
    }
}
