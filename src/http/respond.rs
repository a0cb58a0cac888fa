//! Writing answers: JSON bodies, streamed bodies (a burst of frames in one write), and
//! errors in the caller's protocol with their status and headers.

use std::convert::Infallible;

use bytes::Bytes;
use futures::Stream;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde::Serialize;

use super::frames::Coalesce;
use crate::ir::Error;
use crate::protocol::Frontend;

pub fn write_json(res: &mut Response, status: u16, body: &impl Serialize) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    write_bytes(res, status, "application/json", bytes);
}

pub fn write_bytes(res: &mut Response, status: u16, content_type: &'static str, body: impl Into<Bytes>) {
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    let _ = res.add_header("content-type", content_type, true);
    res.body(body.into());
}

/// An error in `frontend`'s shape (`model`: the model asked for, which Ollama's "not
/// found" message names), with its status and headers.
pub fn write_error(res: &mut Response, frontend: Frontend, error: &Error, model: &str) {
    error_headers(res, error);
    write_bytes(
        res,
        frontend.status(error),
        "application/json",
        frontend.error_body(error, model),
    );
}

/// OpenAI's `{"error":{"message","type","param","code"}}`.
pub fn write_openai_error(res: &mut Response, error: &Error) {
    write_error(res, Frontend::OpenAi, error, "");
}

/// Ollama's `{"error":"..."}`; an unknown model says `model 'NAME' not found`, which
/// CLIs and apps match on to offer a pull.
pub fn write_ollama_error(res: &mut Response, error: &Error, model: &str) {
    write_error(res, Frontend::Ollama, error, model);
}

/// `Retry-After` in whole seconds (rounded up) when the error says when to come back,
/// and any other headers it carries (`x-ratelimit-*`).
fn error_headers(res: &mut Response, error: &Error) {
    if let Some(after) = error.retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        let _ = res.add_header("retry-after", secs.max(1).to_string(), true);
    }
    for (name, value) in &error.headers {
        if let Ok(name) = salvo::http::HeaderName::try_from(name.as_str()) {
            let _ = res.add_header(name, value.clone(), true);
        }
    }
}

/// Sends each item as soon as it exists; dropping the response (a client hang-up) drops
/// the stream and with it the upstream call. Frames that are ready together (the events
/// translated from one upstream read) leave in one write instead of one syscall each.
pub fn write_stream<S>(res: &mut Response, content_type: &'static str, stream: S)
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    res.status_code(StatusCode::OK);
    let _ = res.add_header("content-type", content_type, true);
    let _ = res.add_header("cache-control", "no-cache", true);
    let _ = res.add_header("x-accel-buffering", "no", true);
    res.stream(Coalesce::new(Box::pin(stream)));
}
