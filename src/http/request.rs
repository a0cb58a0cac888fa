//! Reading requests: bodies within their size limit, parsed with the field at fault
//! named, and the per-request context (`Call`) the hoops leave in the depot.

use std::sync::Arc;

use salvo::http::ParseError;
use salvo::prelude::*;
use serde::de::DeserializeOwned;

use super::App;
use crate::config::Config;
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
        }
    }

    pub fn config(&self) -> &Config {
        &self.live.config
    }

    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        self.gateway.chat(&self.live, request, &self.caller).await
    }

    /// Several answers of one request, started at once (the first failure cancels all).
    pub async fn chat_all<'r>(
        &self,
        requests: impl IntoIterator<Item = &'r ChatRequest>,
    ) -> Result<Vec<ChatStream>, Error> {
        self.gateway.chat_all(&self.live, requests, &self.caller).await
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

/// Reads and parses a JSON body within the size limit, naming the field at fault.
pub async fn read_json<T: DeserializeOwned>(req: &mut Request, limit: usize) -> Result<T, Error> {
    let body = req.payload_with_max_size(limit).await.map_err(|e| match e {
        ParseError::PayloadTooLarge => Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than the {limit}-byte limit (max_body_bytes)"),
        ),
        other => Error::bad_request(format!("could not read the request body: {other}")),
    })?;
    parse_json(body)
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
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
