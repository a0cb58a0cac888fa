//! The one error type: a kind each frontend renders in its own shape and status.

use std::fmt;
use std::time::Duration;

/// What went wrong, in terms both protocols can render with their own shape and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client sent something invalid (bad JSON, a wrong field, an unsupported value).
    BadRequest,
    Unauthorized,
    Forbidden,
    /// The model (or route) does not exist.
    NotFound,
    /// The route exists, but not for this HTTP method.
    MethodNotAllowed,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The request head has more or larger headers than the configured limits.
    HeadersTooLarge,
    /// The body's content type is not one the endpoint reads (JSON).
    UnsupportedMediaType,
    /// The client did not send its request body in time.
    RequestTimeout,
    RateLimited,
    /// The upstream could not be reached at all.
    UpstreamUnavailable,
    /// The upstream answered with an error; `status` is what it answered.
    UpstreamError {
        status: u16,
    },
    /// The upstream did not answer in time.
    Timeout,
    /// No upstream can take the request now (every channel for the model is down).
    Unavailable,
    /// diglot cannot do this with the upstreams it has (model management without an
    /// Ollama to forward it to).
    NotImplemented,
    /// A bug or an impossible state inside diglot.
    Internal,
}

/// An error every frontend can render in its own protocol's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when there is one (OpenAI's `param`).
    pub param: Option<String>,
    /// When to try again: an upstream's `Retry-After`, or diglot's own for its limits.
    pub retry_after: Option<Duration>,
    /// A more precise machine-readable reason than the kind's (`insufficient_quota`).
    pub code: Option<&'static str>,
    /// Extra response headers (`x-ratelimit-*`).
    pub headers: Vec<(String, String)>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
            code: None,
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// A bad request caused by one field, named so the client can fix it.
    pub fn invalid_field(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::bad_request(message)
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            ..Self::new(ErrorKind::NotFound, format!("model '{model}' not found"))
        }
    }

    pub fn upstream(status: u16, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UpstreamError { status }, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The HTTP status both frontends answer with.
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::RateLimited => 429,
            ErrorKind::UpstreamUnavailable => 502,
            // Whatever the upstream said, it is not the client's fault (a bad upstream key included).
            ErrorKind::UpstreamError { .. } => 502,
            ErrorKind::Timeout => 504,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
            ErrorKind::NotImplemented => 501,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
