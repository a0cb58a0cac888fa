//! How a request reaches an upstream. A plain-HTTP upstream that no proxy applies to (a
//! local Ollama, vLLM or llama.cpp, where a hop's microseconds show) is called on hyper's
//! HTTP/1 connections directly, driven by the request's own task (see `connections`):
//! reqwest's layers around hyper's pooled client (a redirect policy that parses the URL
//! twice per request, a retry layer, boxed bodies) made a bare proxy's request cost
//! 100,800 instructions instead of 64,200. TLS upstreams, and those an environment proxy
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`) applies to, go through reqwest, which
//! verifies certificates against the system's and speaks through proxies.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::proxy::matcher::Matcher;

use super::connections::{DirectError, InlineBody, MAX_IDLE, MAX_IDLE_TIME, Pool};
use super::workers::PerWorker;
use crate::config::{UpstreamConfig, UpstreamKind};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body: whole (JSON), or streamed through (an Ollama blob upload).
pub type Body = Either<Full<Bytes>, BoxBody<Bytes, BoxError>>;

/// An upstream's answer, from whichever client called it.
pub type Answer = http::Response<Either<InlineBody, reqwest::Body>>;

/// A body sent in one piece.
pub fn whole(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

/// A body passed through as it arrives.
pub fn streamed<S, E>(chunks: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
    E: Into<BoxError> + 'static,
{
    Either::Right(BoxBody::new(StreamBody::new(
        chunks.map_ok(Frame::data).map_err(Into::into),
    )))
}

/// An answer's bytes as they arrive.
pub fn chunks(answer: Answer) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + use<> {
    answer.into_body().into_data_stream().map_err(BodyError)
}

/// A broken answer body (the connection reset, a malformed chunk).
#[derive(Debug)]
pub struct BodyError(BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    Direct(DirectError),
    Reqwest(reqwest::Error),
}

impl SendError {
    /// The connection could not be made in time (`connect_timeout_secs`).
    pub fn is_timeout(&self) -> bool {
        match self {
            SendError::Reqwest(e) => e.is_timeout(),
            SendError::Direct(e) => e.is_timeout(),
        }
    }

    pub fn as_error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            SendError::Direct(e) => e,
            SendError::Reqwest(e) => e,
        }
    }
}

/// The pooled clients a channel's keys share, one set per serving worker (each worker
/// keeps its own connections; see `workers`), each made on first use.
pub struct Clients {
    config: UpstreamConfig,
    /// What every request to the channel carries besides its own headers: the channel's
    /// `headers`, Anthropic's API version, `accept` (as reqwest sends it).
    headers: HeaderMap,
    direct: PerWorker<Arc<Pool>>,
    reqwest: PerWorker<reqwest::Client>,
}

impl Clients {
    pub fn new(config: &UpstreamConfig) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        if config.kind == UpstreamKind::Anthropic {
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static("2023-06-01"),
            );
        }
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(name, value);
            }
        }
        Self {
            config: config.clone(),
            headers,
            direct: PerWorker::default(),
            reqwest: PerWorker::default(),
        }
    }

    /// Whether requests to `uri` go straight through hyper: plain HTTP, and no proxy
    /// applies to it.
    pub fn is_direct(uri: &http::Uri) -> bool {
        uri.scheme() == Some(&http::uri::Scheme::HTTP) && Matcher::from_env().intercept(uri).is_none()
    }

    /// Sends `request` (with the channel's headers added) and waits for the answer's head.
    pub async fn send(&self, direct: bool, mut request: http::Request<Body>) -> Result<Answer, SendError> {
        for (name, value) in &self.headers {
            if !request.headers().contains_key(name) {
                request.headers_mut().insert(name, value.clone());
            }
        }
        if direct {
            let pool = self.direct.get(|| Pool::new(self.config.connect_timeout()));
            // Boxed: the connection's state is kilobytes, and every future awaiting this
            // one would hold it and copy it with each move.
            let answer = Box::pin(pool.send(request)).await.map_err(SendError::Direct)?;
            Ok(answer.map(Either::Left))
        } else {
            let (head, body) = request.into_parts();
            let answer = self
                .reqwest()
                .request(head.method, head.uri.to_string())
                .headers(head.headers)
                .body(reqwest::Body::wrap(body))
                .send()
                .await
                .map_err(SendError::Reqwest)?;
            Ok(http::Response::from(answer).map(Either::Right))
        }
    }

    /// The calling worker's reqwest client, without Nagle.
    fn reqwest(&self) -> &reqwest::Client {
        self.reqwest.get(|| {
            reqwest::Client::builder()
                .connect_timeout(self.config.connect_timeout())
                .pool_idle_timeout(MAX_IDLE_TIME)
                .pool_max_idle_per_host(MAX_IDLE)
                .tcp_nodelay(true)
                .build()
                .expect("the upstream HTTP client builds with static settings")
        })
    }
}
