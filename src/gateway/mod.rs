//! Between a frontend and a backend: what applies to every request whatever its
//! protocols. Today that is the route to the one upstream and the model catalog;
//! auth, limits, overrides and cache will sit here too (see DESIGN.md).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use moka::future::Cache;

use crate::config::Config;
use crate::ir::{ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ModelCard};
use crate::protocol::Backend;

pub struct Gateway {
    backend: Backend,
    /// The upstream's model list, cached briefly (one entry).
    models: Cache<(), Arc<Vec<ModelCard>>>,
}

impl Gateway {
    pub fn new(config: &Config) -> Result<Self, String> {
        let ttl = Duration::from_secs(config.upstream.models_cache_secs);
        Ok(Self {
            backend: Backend::from_config(config)?,
            models: Cache::builder().time_to_live(ttl).build(),
        })
    }

    /// Starts a generation. Returns once the upstream produced its first event, so a
    /// failure before any output reaches the client as a proper error status.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        let mut events = self.backend.chat(request).await?;
        match events.next().await {
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(Box::pin(stream::once(async { Ok(first) }).chain(events))),
            None => Ok(events),
        }
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        self.backend.embed(request).await
    }

    pub async fn models(&self) -> Result<Arc<Vec<ModelCard>>, Error> {
        self.models
            .try_get_with((), async { self.backend.models().await.map(Arc::new) })
            .await
            .map_err(|e: Arc<Error>| (*e).clone())
    }

    /// One model by id; `name` also finds `name:latest`.
    pub async fn model(&self, id: &str) -> Result<ModelCard, Error> {
        let models = self.models().await?;
        let latest = format!("{id}:latest");
        models
            .iter()
            .find(|m| m.id == id)
            .or_else(|| models.iter().find(|m| m.id == latest))
            .cloned()
            .ok_or_else(|| Error::model_not_found(id))
    }
}
