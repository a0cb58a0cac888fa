//! The live configuration: one immutable `Snapshot` of everything a profile sets, built
//! and validated whole, then swapped in. A request keeps the snapshot it started with;
//! what must outlive a reload (a channel's health, circuit, in-flight count and key
//! benches; limit windows and quota counts; the cache when its settings stay) is carried
//! over or lives outside the snapshot.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::auth::Auth;
use super::cache::ResponseCache;
use super::channel::Channel;
use super::policy::Policies;
use super::routing::Router;
use crate::config::{Config, Overlay, UpstreamConfig, UpstreamKind};
use crate::protocol::Backend;
use crate::protocol::images::ImageFetcher;
use crate::protocol::upstream::Upstream;
use crate::store::Store;
use crate::telemetry::Metrics;

pub struct Snapshot {
    /// The configuration in force: the profile with the store's overlay, validated.
    pub config: Config,
    /// The configuration as the profile (and environment, and flags) gave it.
    pub profile: Arc<Config>,
    /// What the admin API keeps in the store on top of it.
    pub overlay: Arc<Overlay>,
    pub auth: Arc<Auth>,
    pub(super) router: Router,
    pub(super) policies: Policies,
    pub(super) cache: Arc<ResponseCache>,
    /// Where Ollama model management goes: `ollama.fallback_url`, else the first channel
    /// that is an Ollama.
    pub(super) model_manager: Option<Backend>,
    /// When the catalog was last refreshed because a name was not in it.
    pub(super) refreshed_for_miss: Mutex<Option<Instant>>,
}

impl Snapshot {
    /// Builds every part `config` describes, reusing what `previous` has that did not
    /// change and carrying over the runtime state of channels that still exist. Fails,
    /// naming the setting, when something cannot be built; nothing is started.
    pub fn build(
        profile: Arc<Config>,
        overlay: Arc<Overlay>,
        previous: Option<&Snapshot>,
        store: Option<Arc<dyn Store>>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let config = overlay.apply(&profile).map_err(|e| e.to_string())?;
        let images_same = previous.is_some_and(|p| p.config.images == config.images);
        let channels = config
            .channels()
            .iter()
            .filter(|wanted| wanted.enabled)
            .map(|wanted| {
                let before = previous.and_then(|p| p.channel(&wanted.name));
                match before {
                    Some(channel) if images_same && channel.config == *wanted => Ok(channel.clone()),
                    before => Channel::new(wanted, &config.images, before.map(|c| c.as_ref())).map(Arc::new),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let policies = Policies::new(&config.models)?;
        let auth = Arc::new(Auth::new(&config, store, previous.map(|p| p.auth.required()))?);
        let cache = match previous {
            Some(p) if p.config.cache == config.cache => p.cache.clone(),
            _ => Arc::new(ResponseCache::new(&config.cache)),
        };
        let model_manager = model_manager(&config, &channels)?;
        Ok(Self {
            router: Router::new(channels, config.routing.clone(), metrics.clone()),
            policies,
            auth,
            cache,
            model_manager,
            refreshed_for_miss: Mutex::new(None),
            config,
            profile,
            overlay,
        })
    }

    /// Whether `config` would make a working gateway, without a store (`check-config`).
    pub fn check(config: &Config) -> Result<(), String> {
        let metrics = Arc::new(Metrics::new(false));
        Self::build(Arc::new(config.clone()), Default::default(), None, None, &metrics).map(|_| ())
    }

    fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.router.channels.iter().find(|c| c.name == name)
    }

    pub fn channels(&self) -> &[Arc<Channel>] {
        &self.router.channels
    }
}

/// The Ollama that model management is forwarded to.
fn model_manager(config: &Config, channels: &[Arc<Channel>]) -> Result<Option<Backend>, String> {
    let Some(url) = config.ollama.fallback_url.as_deref().filter(|u| !u.is_empty()) else {
        let first_ollama = channels.iter().find(|c| c.kind == UpstreamKind::Ollama);
        return Ok(first_ollama.map(|c| c.any_backend().clone()));
    };
    let fallback = UpstreamConfig {
        name: "ollama.fallback_url".into(),
        kind: UpstreamKind::Ollama,
        url: url.to_owned(),
        ..UpstreamConfig::default()
    };
    let endpoint = fallback
        .endpoints()
        .map_err(|e| format!("ollama.fallback_url: {e}"))?
        .into_iter()
        .next()
        .ok_or("ollama.fallback_url: no URL")?;
    let upstream = Upstream::new(&fallback, Upstream::client(&fallback), &endpoint);
    Ok(Some(Backend::new(
        &fallback,
        upstream,
        ImageFetcher::new(&config.images),
    )))
}
