//! What every backend needs from HTTP: pooled clients per upstream, timeouts, and
//! upstream failures turned into IR errors that say which upstream and why.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Level, debug, enabled};

use super::framing::{self, Format};
use super::workers::PerWorker;
use crate::config::{Endpoint, UpstreamConfig, UpstreamKind};

/// The API version an Anthropic upstream is asked for, unless the channel's headers set one.
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
use crate::ir::{Error, ErrorKind};

/// The longest whole body accepted from an upstream (embeddings of long batches can be
/// big); streamed frames have their own limit, `max_line_bytes`.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A request to pass through untranslated.
pub struct Forward<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub content_type: Option<&'a str>,
    pub body: reqwest::Body,
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
    /// For logs and spans: the URL as configured without credentials, query or
    /// trailing slash.
    base: String,
    /// For messages to clients: "the upstream 'NAME'" (its channel's name), never the
    /// internal URL, which stays in logs and in `/health` for admins.
    shown: String,
    /// Parsed once: parsing the whole URL (host included) per request costs more than
    /// every other step of building the request.
    base_url: reqwest::Url,
    /// `Authorization: Bearer KEY` (`x-api-key: KEY` for Anthropic), marked sensitive so
    /// it never shows in debug output.
    auth: Option<(HeaderName, HeaderValue)>,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    max_line_bytes: usize,
}

/// How many idle connections to one upstream host are kept for reuse.
pub const MAX_IDLE_PER_HOST: usize = 32;

/// The pooled clients a channel's keys share, one per serving worker (each worker keeps
/// its own connections; see `workers`).
pub struct Clients {
    config: UpstreamConfig,
    per_worker: PerWorker<reqwest::Client>,
}

impl Clients {
    /// The calling worker's client.
    fn get(&self) -> &reqwest::Client {
        self.per_worker.get(|| Upstream::build_client(&self.config))
    }
}

impl Upstream {
    /// The pooled clients of a channel's keys.
    pub fn client(config: &UpstreamConfig) -> Arc<Clients> {
        Arc::new(Clients {
            config: config.clone(),
            per_worker: PerWorker::default(),
        })
    }

    /// A pooled client with the channel's extra headers and timeouts, without Nagle.
    fn build_client(config: &UpstreamConfig) -> reqwest::Client {
        let mut headers = HeaderMap::new();
        if config.kind == UpstreamKind::Anthropic {
            headers.insert(ANTHROPIC_VERSION, HeaderValue::from_static("2023-06-01"));
        }
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(name, value);
            }
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout())
            .pool_idle_timeout(Duration::from_secs(90))
            // Idle connections kept per upstream host: after a burst of 2,000 streams an
            // unbounded pool held 2,000 idle connections (their buffers and descriptors) for
            // 90 s. Connections past this many close when their answer ends.
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .tcp_nodelay(true);
        if let Some(total) = config.total_timeout() {
            builder = builder.timeout(total);
        }
        builder
            .build()
            .expect("the upstream HTTP client builds with static settings")
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
        Self {
            http,
            base: shown_url(base),
            shown: format!("the upstream '{}'", config.name),
            base_url: reqwest::Url::parse(base).expect("the upstream URL was validated with the configuration"),
            auth,
            first_byte_timeout: config.first_byte_timeout(),
            idle_timeout: config.idle_timeout(),
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
    /// frame size and idle timeout.
    pub fn frames(
        &self,
        response: reqwest::Response,
        format: Format,
    ) -> impl Stream<Item = Result<String, Error>> + Send + use<> {
        framing::frames(
            response.bytes_stream(),
            format,
            self.max_line_bytes,
            self.idle_timeout,
            self.shown.clone(),
        )
    }

    /// The base URL with `path` appended to its path.
    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base_url.clone();
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    pub async fn post<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> Result<reqwest::Response, Error> {
        let url = self.url(path);
        if enabled!(target: "diglot::wire", Level::DEBUG) {
            debug!(target: "diglot::wire", %url, payload = %serde_json::to_string(body).unwrap_or_default(), "upstream request");
        }
        self.post_json(url, body).await
    }

    /// Posts to one of the server's own endpoints, which live beside its `/v1` API
    /// (llama-server's `/tokenize`) whether or not the configured URL ends with `/v1`.
    pub async fn post_beside_v1<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, Error> {
        let mut url = self.base_url.clone();
        let root = url.path().trim_end_matches('/');
        let joined = format!("{}{path}", root.strip_suffix("/v1").unwrap_or(root));
        url.set_path(&joined);
        self.post_json(url, body).await
    }

    /// Sends `body` as JSON, serialized into one buffer sized for a typical chat (what
    /// `RequestBuilder::json` does, less its reallocations).
    async fn post_json<T: Serialize + ?Sized>(&self, url: reqwest::Url, body: &T) -> Result<reqwest::Response, Error> {
        let mut json = Vec::with_capacity(1024);
        serde_json::to_writer(&mut json, body)
            .map_err(|e| Error::internal(format!("the upstream request could not be written as JSON: {e}")))?;
        let request = self.http.get().post(url);
        self.send(
            request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(json),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Result<reqwest::Response, Error> {
        self.send(self.http.get().get(self.url(path))).await
    }

    /// Sends a request through as it is and streams the answer back whatever its status
    /// (Ollama model management: pulls and blob uploads can be gigabytes and minutes
    /// long, so neither body is read whole).
    pub async fn pass_through(&self, call: Forward<'_>) -> Result<PassThrough, Error> {
        let url = format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            call.path_and_query
        );
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut request = self.http.get().request(method, url).body(call.body);
        if let Some(content_type) = call.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let shown = self.shown.clone();
        Ok(PassThrough {
            status: response.status().as_u16(),
            content_type,
            body: Box::pin(response.bytes_stream().map(move |chunk| {
                chunk.map_err(|e| {
                    Error::new(
                        ErrorKind::UpstreamUnavailable,
                        format!("{shown} broke off: {}", root_cause(&e)),
                    )
                })
            })),
        })
    }

    /// Sends and waits for the response headers; a non-2xx answer becomes an error.
    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        if crate::telemetry::tracing_on() {
            // The attempt's span continues upstream (`traceparent`).
            let mut trace = HeaderMap::new();
            crate::telemetry::spans::inject(&mut trace);
            request = request.headers(trace);
        }
        let response = match tokio::time::timeout(self.first_byte_timeout, request.send()).await {
            Err(_) => return Err(self.timed_out(self.first_byte_timeout)),
            Ok(Err(e)) => return Err(self.transport_error(&e)),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
        Err(Error {
            retry_after,
            ..upstream_status_error(status, &body, &self.shown)
        })
    }

    /// Reads a whole answer (embeddings of long batches, model lists).
    pub async fn body(&self, response: reqwest::Response) -> Result<Bytes, Error> {
        self.read_within(response, MAX_BODY_BYTES, "").await
    }

    /// Reads a whole chat answer: one frame, so within the channel's `max_line_bytes`.
    pub async fn chat_body(&self, response: reqwest::Response) -> Result<Bytes, Error> {
        let setting = " (the limit is the channel's max_line_bytes; raise it in the profile to accept larger ones)";
        self.read_within(response, self.max_line_bytes, setting).await
    }

    /// Reads a whole body of at most `limit` bytes (`setting` says how to raise it).
    async fn read_within(&self, response: reqwest::Response, limit: usize, setting: &str) -> Result<Bytes, Error> {
        let read = async {
            // An answer in one read (most are) is kept as it came, not copied.
            let (mut first, mut more) = (Bytes::new(), None::<bytes::BytesMut>);
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
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
            Ok::<_, reqwest::Error>(Some(more.map_or(first, bytes::BytesMut::freeze)))
        };
        let body = match tokio::time::timeout(self.idle_timeout, read).await {
            Err(_) => return Err(self.timed_out(self.idle_timeout)),
            Ok(Err(e)) => return Err(self.transport_error(&e)),
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
    pub async fn json<T: DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, Error> {
        let body = self.body(response).await?;
        self.parse(&body)
    }

    /// Reads a whole JSON chat answer, within `max_line_bytes`.
    pub async fn chat_json<T: DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, Error> {
        let body = self.chat_body(response).await?;
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

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::new(ErrorKind::Timeout, format!("{} timed out", self.shown))
        } else {
            Error::new(
                ErrorKind::UpstreamUnavailable,
                format!("cannot reach {}: {}", self.shown, root_cause(e)),
            )
        }
    }
}

async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
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
