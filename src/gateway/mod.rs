//! Between a frontend and a backend: what applies to every request whatever its
//! protocols. Today: the model catalog, routing over channels with failover and health;
//! auth, limits, overrides and cache will sit here too (see DESIGN.md).

mod catalog;
pub mod channel;
pub mod health;
pub mod routing;

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::{StreamExt, stream};
use moka::future::Cache;
use serde_json::{Value, json};

use crate::config::{Config, ModelSettings, RoutingConfig};
use crate::ir::{ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error};
use channel::Channel;
use routing::Router;

pub use catalog::DEFAULT_CONTEXT_LENGTH;

/// How long a model counts as "running" for `/api/ps` after its last use (Ollama's
/// default keep-alive).
pub const RECENT_USE: Duration = Duration::from_secs(300);

pub struct Gateway {
    router: Router,
    settings: std::collections::BTreeMap<String, ModelSettings>,
    tag_suffix: String,
    /// Models used lately (client name → unix time of last use), for `/api/ps`.
    recent: Cache<String, i64>,
    /// When the catalog was last refreshed because a name was not in it.
    refreshed_for_miss: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Gateway {
    pub fn new(config: &Config) -> Result<Self, String> {
        let channels = config
            .channels()
            .iter()
            .map(|c| Channel::new(c, &config.images).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            router: Router::new(channels, config.routing.clone()),
            settings: config.models.clone(),
            tag_suffix: config.ollama.tag_suffix.clone(),
            recent: Cache::builder().time_to_live(RECENT_USE).max_capacity(1024).build(),
            refreshed_for_miss: std::sync::Mutex::new(None),
        })
    }

    /// Starts the active health checks (a model-list fetch per channel, which also keeps
    /// the catalog fresh). They stop when the gateway is dropped.
    pub fn start_checks(&self) {
        let Some(interval) = self.router.config.check_interval() else {
            return;
        };
        let channels: Vec<Weak<Channel>> = self.router.channels.iter().map(Arc::downgrade).collect();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let alive: Vec<Arc<Channel>> = channels.iter().filter_map(Weak::upgrade).collect();
                if alive.is_empty() {
                    return;
                }
                futures::future::join_all(alive.iter().map(|channel| async move {
                    channel.forget_listing();
                    let _ = channel.listing().await;
                }))
                .await;
            }
        });
    }

    /// Starts a generation. Returns once an upstream produced its first event, so a
    /// failure before any output fails over to another channel, or reaches the client
    /// as a proper error status; after it, an error ends the stream.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatStream, Error> {
        let candidates = self.route(&request.model).await?;
        let mut attempts = self.router.attempts(&request.model, &candidates);
        let (events, lease) = loop {
            let (lease, model) = attempts.next().await?;
            let renamed = (model != request.model).then(|| ChatRequest {
                model,
                ..request.clone()
            });
            let started = async {
                let mut events = lease.backend().chat(renamed.as_ref().unwrap_or(request)).await?;
                let first = events.next().await.transpose()?;
                Ok::<_, Error>(stream::iter(first.map(Ok)).chain(events))
            };
            match started.await {
                Ok(events) => {
                    attempts.succeeded(&lease);
                    break (events, lease);
                }
                Err(error) => attempts.failed(lease, error)?,
            }
        };
        self.recent
            .insert(request.model.clone(), chrono::Utc::now().timestamp())
            .await;
        let config = self.router.config.clone();
        // The lease (its concurrency slots) lives as long as the stream; an upstream
        // failure mid-stream counts against the channel's health.
        Ok(Box::pin(events.map(move |event| {
            if let Err(error) = &event {
                lease.channel.health.record(Err(error), false, &config);
            }
            event
        })))
    }

    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        let candidates = self.route(&request.model).await?;
        let mut attempts = self.router.attempts(&request.model, &candidates);
        let answer = loop {
            let (lease, model) = attempts.next().await?;
            let renamed = (model != request.model).then(|| EmbedRequest {
                model,
                ..request.clone()
            });
            match lease.backend().embed(renamed.as_ref().unwrap_or(request)).await {
                Ok(answer) => {
                    attempts.succeeded(&lease);
                    break answer;
                }
                Err(error) => attempts.failed(lease, error)?,
            }
        };
        self.recent
            .insert(request.model.clone(), chrono::Utc::now().timestamp())
            .await;
        Ok(answer)
    }

    /// An Ollama upstream's own `/api/show` answer for a model an Ollama channel serves,
    /// passed through as it is; `None` when no Ollama channel serves it.
    pub async fn ollama_show(&self, name: &str) -> Option<Result<Arc<Value>, Error>> {
        let candidates = match self.route(name).await {
            Ok(candidates) => candidates,
            Err(e) => return Some(Err(e)),
        };
        let candidate = candidates
            .iter()
            .find(|c| self.router.channels[c.channel].kind == crate::config::UpstreamKind::Ollama)?;
        self.router.channels[candidate.channel]
            .any_backend()
            .ollama_show(&candidate.model)
            .await
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

    /// `GET /health`: every channel's state; usable when at least one channel is.
    pub fn health(&self) -> (bool, Value) {
        let channels: Vec<Value> = self
            .router
            .channels
            .iter()
            .map(|c| {
                let mut report = c.health.report();
                report["name"] = json!(c.name);
                report["kind"] = json!(c.kind);
                report["url"] = json!(shown_url(&c.url));
                report["priority"] = json!(c.priority);
                report["weight"] = json!(c.weight);
                report["keys"] = json!(c.key_count());
                report["in_flight"] = json!(c.in_flight());
                report
            })
            .collect();
        let usable = channels.iter().any(|c| c["usable"] == true);
        let status = if usable { "ok" } else { "unavailable" };
        (usable, json!({"status": status, "channels": channels}))
    }

    pub fn routing(&self) -> &RoutingConfig {
        &self.router.config
    }
}

/// A URL without credentials in it, for showing.
fn shown_url(url: &str) -> String {
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
