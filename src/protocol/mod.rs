//! One folder per protocol, each with `wire.rs` (its JSON), `server.rs` (the frontend)
//! and `client.rs` (the backend); plus what the protocols share.

pub mod frames;
pub mod http;
pub mod images;
pub mod ollama;
pub mod openai;

use crate::config::{UpstreamConfig, UpstreamKind};
use http::Upstream;

use crate::ir::{ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ModelCard};

/// A backend: the client of one upstream, whatever protocol it speaks.
#[derive(Clone)]
pub enum Backend {
    Ollama(ollama::client::OllamaClient),
    OpenAi(openai::client::OpenAiClient),
}

impl Backend {
    pub fn new(config: &UpstreamConfig, upstream: Upstream, images: images::ImageFetcher) -> Self {
        match config.kind {
            UpstreamKind::Ollama => Backend::Ollama(ollama::client::OllamaClient::new(config, upstream, images)),
            UpstreamKind::Openai => Backend::OpenAi(openai::client::OpenAiClient::new(config, upstream)),
        }
    }

    /// The upstream's base URL (credentials never are in it: keys go in headers).
    pub fn base(&self) -> &str {
        match self {
            Backend::Ollama(c) => c.upstream().base(),
            Backend::OpenAi(c) => c.upstream().base(),
        }
    }

    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        match self {
            Backend::Ollama(c) => c.chat(request).await,
            Backend::OpenAi(c) => c.chat(request).await,
        }
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        match self {
            Backend::Ollama(c) => c.embed(request).await,
            Backend::OpenAi(c) => c.embed(request).await,
        }
    }

    pub async fn models(&self) -> Result<Vec<ModelCard>, Error> {
        match self {
            Backend::Ollama(c) => c.models().await,
            Backend::OpenAi(c) => c.models().await,
        }
    }

    /// An Ollama upstream's own `/api/show` answer, passed through as it is; `None` for
    /// upstreams that have no such thing.
    pub async fn ollama_show(&self, model: &str) -> Option<Result<std::sync::Arc<serde_json::Value>, Error>> {
        match self {
            Backend::Ollama(c) => Some(c.show(model).await),
            Backend::OpenAi(_) => None,
        }
    }
}
