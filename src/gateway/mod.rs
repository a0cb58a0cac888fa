//! Between a frontend and a backend: what applies to every request whatever its
//! protocols. Today that is the route to the one upstream and the model catalog;
//! auth, limits, overrides and cache will sit here too (see DESIGN.md).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use moka::future::Cache;

use crate::config::{Config, ModelSettings};
use crate::ir::{ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ModelCard};
use crate::protocol::Backend;

/// Context length reported for a model nobody knows the size of.
pub const DEFAULT_CONTEXT_LENGTH: u64 = 32768;
/// How long a model counts as "running" for `/api/ps` after its last use (Ollama's
/// default keep-alive).
pub const RECENT_USE: Duration = Duration::from_secs(300);

pub struct Gateway {
    pub backend: Backend,
    settings: BTreeMap<String, ModelSettings>,
    tag_suffix: String,
    /// The upstream's model list, cached briefly (one entry).
    models: Cache<(), Arc<Vec<ModelCard>>>,
    /// Models used lately (client name → unix time of last use), for `/api/ps`.
    recent: Cache<String, i64>,
}

impl Gateway {
    pub fn new(config: &Config) -> Result<Self, String> {
        let ttl = Duration::from_secs(config.upstream.models_cache_secs);
        Ok(Self {
            backend: Backend::from_config(config)?,
            settings: config.models.clone(),
            tag_suffix: config.ollama.tag_suffix.clone(),
            models: Cache::builder().time_to_live(ttl).build(),
            recent: Cache::builder().time_to_live(RECENT_USE).max_capacity(1024).build(),
        })
    }

    /// Starts a generation. Returns once the upstream produced its first event, so a
    /// failure before any output reaches the client as a proper error status.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        let request = match self.upstream_model(&request.model).await {
            Some(model) => Cow::Owned(ChatRequest {
                model,
                ..request.clone()
            }),
            None => Cow::Borrowed(request),
        };
        let mut events = self.backend.chat(&request).await?;
        let first = match events.next().await {
            Some(Err(e)) => return Err(e),
            Some(Ok(first)) => first,
            None => return Ok(events),
        };
        self.recent
            .insert(request.model.clone(), chrono::Utc::now().timestamp())
            .await;
        Ok(Box::pin(stream::once(async { Ok(first) }).chain(events)))
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        let request = match self.upstream_model(&request.model).await {
            Some(model) => Cow::Owned(EmbedRequest {
                model,
                ..request.clone()
            }),
            None => Cow::Borrowed(request),
        };
        let answer = self.backend.embed(&request).await?;
        self.recent
            .insert(request.model.clone(), chrono::Utc::now().timestamp())
            .await;
        Ok(answer)
    }

    /// The upstream's models, completed with the profile's model settings and defaults.
    pub async fn models(&self) -> Result<Arc<Vec<ModelCard>>, Error> {
        self.models
            .try_get_with((), async {
                let cards = self.backend.models().await?;
                Ok(Arc::new(cards.into_iter().map(|c| self.complete(c)).collect()))
            })
            .await
            .map_err(|e: Arc<Error>| (*e).clone())
    }

    fn complete(&self, mut card: ModelCard) -> ModelCard {
        let settings = self.settings.get(&card.id).cloned().unwrap_or_default();
        if let Some(capabilities) = settings.capabilities {
            card.capabilities = capabilities;
        } else if card.capabilities.is_empty() {
            card.capabilities = if card.id.to_lowercase().contains("embed") {
                vec!["embedding".into()]
            } else {
                vec!["completion".into(), "tools".into()]
            };
        }
        card.context_length = settings
            .context_length
            .or(card.context_length)
            .or(Some(DEFAULT_CONTEXT_LENGTH));
        card.family = settings.family.or(card.family);
        card.parameter_size = settings.parameter_size.or(card.parameter_size);
        card.quantization = settings.quantization.or(card.quantization);
        card
    }

    /// One model by the name a client used: exact, `name:latest`, or without the
    /// configured tag suffix.
    pub async fn model(&self, name: &str) -> Result<ModelCard, Error> {
        let models = self.models().await?;
        find(&models, name, &self.tag_suffix)
            .cloned()
            .ok_or_else(|| Error::model_not_found(name))
    }

    /// The name the upstream knows a client's model by, when it differs: Ollama clients
    /// add a tag (`gpt-4o:latest`) that an OpenAI-compatible upstream's ids lack.
    async fn upstream_model(&self, name: &str) -> Option<String> {
        name.strip_suffix(self.tag_suffix.as_str())?;
        let models = self.models().await.ok()?;
        let card = find(&models, name, &self.tag_suffix)?;
        (card.id != name).then(|| card.id.clone())
    }

    /// Models used lately, with the unix time of their last use.
    pub async fn recent(&self) -> Vec<(String, i64)> {
        self.recent.run_pending_tasks().await;
        self.recent.iter().map(|(name, at)| ((*name).clone(), at)).collect()
    }

    /// The tag suffix Ollama-facing names carry.
    pub fn tag_suffix(&self) -> &str {
        &self.tag_suffix
    }
}

fn find<'a>(models: &'a [ModelCard], name: &str, suffix: &str) -> Option<&'a ModelCard> {
    let latest = format!("{name}:latest");
    let stripped = name.strip_suffix(suffix).filter(|_| !suffix.is_empty());
    models
        .iter()
        .find(|m| m.id == name)
        .or_else(|| models.iter().find(|m| m.id == latest))
        .or_else(|| stripped.and_then(|s| models.iter().find(|m| m.id == s)))
}
