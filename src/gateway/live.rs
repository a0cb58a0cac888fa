//! The live configuration: one immutable `Snapshot` of everything a profile sets, built
//! and validated whole, then swapped in. A request keeps the snapshot it started with;
//! what must outlive a reload (a channel's health, circuit, in-flight count and key
//! benches; limit windows and quota counts; the cache when its settings stay) is carried
//! over or lives outside the snapshot.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Gateway;
use super::auth::Auth;
use super::cache::ResponseCache;
use super::channel::Channel;
use super::fleet::Fleet;
use super::overlay;
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
        fleet: Option<&Arc<Fleet>>,
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
            router: Router::new(channels, config.routing.clone(), metrics.clone(), fleet.cloned()),
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
        Self::build(Arc::new(config.clone()), Default::default(), None, None, &metrics, None).map(|_| ())
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

/// Changing the live configuration: a profile reload, an admin API change.
impl Gateway {
    /// Builds a snapshot of `config` on top of the running one and swaps it in. Settings
    /// that cannot change while running keep their running values and are named in the
    /// answer; an invalid `config` changes nothing.
    pub async fn apply(&self, mut config: Config) -> Result<Vec<&'static str>, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let running = self.live.load_full();
        let kept = config.keep_restart_only(&running.profile);
        let profile = Arc::new(sealed(config));
        self.swap_in(&running, profile, running.overlay.clone()).await?;
        Ok(kept)
    }

    /// Changes what the admin API keeps in the store: `edit` changes a copy of the
    /// overlay; the result must build a working snapshot, else nothing is written. Then
    /// the store is written and the snapshot swapped in, so the next request sees it.
    pub async fn change(&self, edit: impl FnOnce(&mut Overlay) -> Result<(), String>) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Err("there is no store (store.data_dir is empty), so nothing can be kept".into());
        };
        let _one_at_a_time = self.reloading.lock().await;
        let running = self.live.load_full();
        let mut overlay = Overlay::clone(&running.overlay);
        edit(&mut overlay)?;
        // Checked whole before anything is written.
        overlay.apply(&running.profile).map_err(|e| e.to_string())?;
        overlay::write(store.as_ref(), &running.overlay, &overlay).await?;
        self.swap_in(&running, running.profile.clone(), Arc::new(overlay)).await
    }

    /// Builds a snapshot on top of `running` and swaps it in.
    pub(super) async fn swap_in(
        &self,
        running: &Snapshot,
        profile: Arc<Config>,
        overlay: Arc<Overlay>,
    ) -> Result<(), String> {
        let snapshot = Snapshot::build(
            profile,
            overlay,
            Some(running),
            self.store.clone(),
            &self.metrics,
            self.fleet.as_ref(),
        )?;
        // The store's tokens are in before the snapshot takes any request.
        snapshot.auth.reload().await;
        snapshot.auth.start_reloading();
        self.live.store(Arc::new(snapshot));
        Ok(())
    }

    /// The store's tokens changed here: the next request sees them (other processes'
    /// changes are seen within `auth::RELOAD_EVERY`).
    pub async fn tokens_changed(&self) {
        self.snapshot().auth.reload().await;
    }
}

/// `config` with an admin password given in clear replaced by its argon2id hash, so the
/// clear one is never kept.
pub(super) fn sealed(mut config: Config) -> Config {
    let password = std::mem::take(&mut config.admin.password);
    if !password.is_empty() {
        config.admin.password_hash = crate::store::secrets::hash_password(&password);
    }
    config
}
