//! Reading requests: bodies within their size limit, parsed with the field at fault
//! named, and the per-request context (`Call`) the hoops leave in the depot.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use salvo::http::ParseError;
use salvo::http::body::{Body, Frame, ReqBody, SizeHint};
use salvo::prelude::*;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, Sleep};

use super::App;
use super::drain::Drain;
use crate::config::{Config, ServerConfig};
use crate::gateway::auth::Caller;
use crate::gateway::{Gateway, Snapshot};
use crate::ir::{ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ErrorKind, ModelCard};
use crate::protocol::Frontend;
use crate::protocol::upstream::{Forward, PassThrough};

/// One request's view of diglot: the gateway, the configuration snapshot it started
/// with (kept to its end, whatever reloads happen meanwhile), and who is calling.
pub struct Call {
    pub gateway: Arc<Gateway>,
    pub live: Arc<Snapshot>,
    pub caller: Caller,
    /// Ends the call's answer if a stop's drain time runs out first.
    drain: Drain,
}

impl Call {
    /// The call the hoops set up for this request.
    pub fn of(depot: &Depot) -> Self {
        let app = app(depot);
        Self {
            live: depot
                .get_typed::<Arc<Snapshot>>()
                .cloned()
                .unwrap_or_else(|_| app.gateway.snapshot()),
            caller: depot
                .get_typed::<Caller>()
                .cloned()
                .unwrap_or_else(|_| Caller::anonymous(Frontend::OpenAi)),
            gateway: app.gateway.clone(),
            drain: app.drain.clone(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.live.config
    }

    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        let stream = self.gateway.chat(&self.live, request, &self.caller).await?;
        Ok(self.drain.cut(stream))
    }

    /// The prompt's size in tokens, and whether the upstream counted it.
    pub async fn count_tokens(&self, request: &ChatRequest) -> Result<(u64, bool), Error> {
        self.gateway.count_tokens(&self.live, request, &self.caller).await
    }

    /// Several answers of one request, started at once (the first failure cancels all).
    pub async fn chat_all<'r>(
        &self,
        requests: impl IntoIterator<Item = &'r ChatRequest>,
    ) -> Result<Vec<ChatStream>, Error> {
        let streams = self.gateway.chat_all(&self.live, requests, &self.caller).await?;
        Ok(streams.into_iter().map(|s| self.drain.cut(s)).collect())
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        self.gateway.embed(&self.live, request, &self.caller).await
    }

    /// The models the caller may use.
    pub async fn models(&self) -> Result<Arc<Vec<ModelCard>>, Error> {
        self.live.models(&self.caller).await
    }

    /// One model by the name the client used.
    pub async fn model(&self, name: &str) -> Result<ModelCard, Error> {
        self.live.model(name, &self.caller).await
    }

    pub async fn ollama_show(&self, name: &str) -> Option<Result<Arc<serde_json::Value>, Error>> {
        self.gateway.ollama_show(&self.live, name, &self.caller).await
    }

    pub async fn ollama_manage(&self, what: &str, call: Forward<'_>) -> Result<PassThrough, Error> {
        self.gateway.ollama_manage(&self.live, &self.caller, what, call).await
    }
}

/// The app a handler runs in.
pub fn app(depot: &Depot) -> Arc<App> {
    depot
        .get_typed::<Arc<App>>()
        .expect("the app is injected by the root router")
        .clone()
}

/// Reads and parses a JSON body within the size limit, naming the field at fault. A
/// declared length over the limit is refused before any of the body is read (so a client
/// sending `Expect: 100-continue` is never told to go on).
pub async fn read_json<T: DeserializeOwned>(req: &mut Request, limit: usize) -> Result<T, Error> {
    let body = read_body(req, limit).await?;
    parse_json(&body)
}

/// The whole body within the size limit (see `read_json`).
pub async fn read_body(req: &mut Request, limit: usize) -> Result<Bytes, Error> {
    let too_large = || {
        Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than the {limit}-byte limit; raise max_body_bytes to accept it"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match req.payload_with_max_size(limit).await {
        Ok(body) => Ok(body.clone()),
        Err(ParseError::PayloadTooLarge) => Err(too_large()),
        Err(other) => Err(match too_slow(&other) {
            Some(slow) => Error::new(ErrorKind::RequestTimeout, slow.to_string()),
            None => Error::bad_request(format!("could not read the request body: {other}")),
        }),
    }
}

/// Gives a request body `server.body_timeout_secs` to arrive, plus a second for each
/// `server.body_min_bytes_per_sec` bytes received (Apache's mod_reqtimeout `MinRate`):
/// a client trickling its body in cannot hold a connection for ever.
pub fn pace_body(req: &mut Request, server: &ServerConfig) {
    if !req.body().is_hyper() {
        return;
    }
    let inner = req.take_body();
    let timeout = server.body_timeout();
    let paced = Paced {
        inner,
        started: Instant::now(),
        timeout,
        min_rate: server.body_min_bytes_per_sec,
        received: 0,
        deadline: Box::pin(tokio::time::sleep(timeout)),
    };
    req.replace_body(ReqBody::Boxed {
        inner: Box::pin(paced),
        fuse_config: None,
    });
}

struct Paced {
    inner: ReqBody,
    started: Instant,
    timeout: Duration,
    min_rate: u64,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let earned = Duration::from_secs_f64(this.received as f64 / this.min_rate as f64);
                    let deadline = this.started + this.timeout + earned;
                    this.deadline.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTooSlow {
                    received: this.received,
                    timeout: this.timeout,
                    min_rate: this.min_rate,
                })))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that did not arrive in its time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive in time: {received} bytes came, the limit being {}s plus one \
     second per {min_rate} bytes; raise server.body_timeout_secs or lower server.body_min_bytes_per_sec \
     for slow clients",
    timeout.as_secs_f64()
)]
struct BodyTooSlow {
    received: u64,
    timeout: Duration,
    min_rate: u64,
}

/// The `BodyTooSlow` somewhere in `error`'s chain (salvo and hyper wrap it in I/O errors).
fn too_slow<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTooSlow> {
    if let Some(slow) = error.downcast_ref::<BodyTooSlow>() {
        return Some(slow);
    }
    if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(|e| e.get_ref())
        && let Some(slow) = too_slow(inner)
    {
        return Some(slow);
    }
    if let Some(ParseError::Other(inner)) = error.downcast_ref::<ParseError>()
        && let Some(slow) = too_slow(inner.as_ref())
    {
        return Some(slow);
    }
    error.source().and_then(too_slow)
}

pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    // Tracking the path costs on every value; it is only needed to name the field at
    // fault, so a body that fails is parsed a second time with it.
    if let Ok(parsed) = serde_json::from_slice(body) {
        return Ok(parsed);
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::bad_request(format!("the request body is not valid JSON: {inner}"))
        } else if path == "." {
            Error::bad_request(format!("invalid request: {inner}"))
        } else {
            Error::invalid_field(&path, format!("invalid '{path}': {inner}"))
        }
    })
}
