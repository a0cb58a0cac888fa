//! Pure codecs, one folder per protocol: `wire.rs` (its JSON), `decode.rs` (a
//! frontend's wire → IR), `encode.rs` (IR → a frontend's wire) and `client.rs` (the
//! backend, which encodes the IR for its upstream and decodes the answer). Shared:
//! `upstream.rs` (the HTTP client), `transport.rs` and `connections.rs` (how its requests
//! travel), `framing.rs` (streamed bodies cut into lines or
//! events), `images.rs` and `options.rs` (Ollama's option fields,
//! which both frontends take), `workers.rs` (what each serving thread keeps for itself).
//! Nothing here knows of HTTP serving or the gateway.

pub mod anthropic;
mod connections;
pub mod framing;
pub mod images;
pub mod ollama;
pub mod openai;
pub mod options;
pub mod transport;
pub mod upstream;
pub mod workers;

use crate::config::{UpstreamConfig, UpstreamKind};
use upstream::{Forward, PassThrough, Upstream};

/// A frontend: the API a request came in on. Each renders errors in its own shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    OpenAi,
    Ollama,
    Anthropic,
}

impl Frontend {
    /// The name in usage records, metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Frontend::OpenAi => "openai",
            Frontend::Ollama => "ollama",
            Frontend::Anthropic => "anthropic",
        }
    }

    /// The status this frontend answers `error` with (Anthropic's 529 for "overloaded").
    pub fn status(self, error: &Error) -> u16 {
        match self {
            Frontend::Anthropic => anthropic::encode::error_kind(error).1,
            Frontend::OpenAi | Frontend::Ollama => error.status(),
        }
    }

    /// An error as this frontend's clients expect it (`model` names the model asked for,
    /// for Ollama's "model 'NAME' not found"): its status and JSON body.
    pub fn error_body(self, error: &Error, model: &str) -> Vec<u8> {
        let body = match self {
            Frontend::OpenAi => serde_json::to_vec(&openai::encode::error_body(error)),
            Frontend::Ollama => serde_json::to_vec(&ollama::encode::error_body(error, model)),
            Frontend::Anthropic => serde_json::to_vec(&anthropic::encode::error_body(error)),
        };
        body.unwrap_or_default()
    }
}

use crate::ir::{ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ModelCard};

/// A backend: the client of one upstream, whatever protocol it speaks.
#[derive(Clone)]
pub enum Backend {
    Ollama(ollama::client::OllamaClient),
    OpenAi(openai::client::OpenAiClient),
    Anthropic(anthropic::client::AnthropicClient),
}

impl Backend {
    pub fn new(config: &UpstreamConfig, upstream: Upstream, images: images::ImageFetcher) -> Self {
        match config.kind {
            UpstreamKind::Ollama => Backend::Ollama(ollama::client::OllamaClient::new(config, upstream, images)),
            UpstreamKind::Openai => Backend::OpenAi(openai::client::OpenAiClient::new(config, upstream)),
            UpstreamKind::Anthropic => Backend::Anthropic(anthropic::client::AnthropicClient::new(config, upstream)),
        }
    }

    /// The upstream's base URL (credentials never are in it: keys go in headers).
    pub fn base(&self) -> &str {
        match self {
            Backend::Ollama(c) => c.upstream().base(),
            Backend::OpenAi(c) => c.upstream().base(),
            Backend::Anthropic(c) => c.upstream().base(),
        }
    }

    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        match self {
            Backend::Ollama(c) => c.chat(request).await,
            Backend::OpenAi(c) => c.chat(request).await,
            Backend::Anthropic(c) => c.chat(request).await,
        }
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        match self {
            Backend::Ollama(c) => c.embed(request).await,
            Backend::OpenAi(c) => c.embed(request).await,
            Backend::Anthropic(c) => c.embed(request).await,
        }
    }

    pub async fn models(&self) -> Result<Vec<ModelCard>, Error> {
        match self {
            Backend::Ollama(c) => c.models().await,
            Backend::OpenAi(c) => c.models().await,
            Backend::Anthropic(c) => c.models().await,
        }
    }

    /// Passes a model-management call through to an Ollama upstream as it is; `None` for
    /// upstreams that have no such thing.
    pub async fn pass_through(&self, call: Forward<'_>) -> Option<Result<PassThrough, Error>> {
        match self {
            Backend::Ollama(c) => Some(c.upstream().pass_through(call).await),
            Backend::OpenAi(_) | Backend::Anthropic(_) => None,
        }
    }

    /// The upstream's own count of `request`'s prompt tokens: Ollama's prompt evaluation,
    /// llama-server's tokenizer, Anthropic's count_tokens; `None` where the upstream has no
    /// way to count.
    pub async fn count_tokens(&self, request: &ChatRequest) -> Result<Option<u64>, Error> {
        match self {
            Backend::Ollama(c) => c.count_tokens(request).await.map(Some),
            Backend::OpenAi(c) => Ok(c.count_tokens(request).await),
            Backend::Anthropic(c) => c.count_tokens(request).await.map(Some),
        }
    }

    /// An Ollama upstream's own `/api/show` answer, passed through as it is; `None` for
    /// upstreams that have no such thing.
    pub async fn ollama_show(&self, model: &str) -> Option<Result<std::sync::Arc<serde_json::Value>, Error>> {
        match self {
            Backend::Ollama(c) => Some(c.show(model).await),
            Backend::OpenAi(_) | Backend::Anthropic(_) => None,
        }
    }
}
