//! A channel: one configured upstream with its keys, concurrency slots and health. What
//! it learns at run time (health, circuit, in-flight count, key benches, slots) is shared
//! with the channel of the same name in the next snapshot, so a reload keeps it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wildmatch::WildMatch;

use super::health::{Health, Probe};
use crate::config::{Endpoint, ImageConfig, UpstreamConfig, UpstreamKind};
use crate::ir::{Error, ModelCard};
use crate::protocol::Backend;
use crate::protocol::images::ImageFetcher;
use crate::protocol::upstream::Upstream;

pub struct Channel {
    /// What it was built from: an unchanged channel is kept whole across a reload.
    pub config: UpstreamConfig,
    pub name: String,
    pub kind: UpstreamKind,
    /// The configured base URL, for `/health` (keys with URLs of their own not shown).
    pub url: String,
    pub priority: i32,
    pub weight: u32,
    /// Exact model names, served whatever the upstream lists.
    exact: Vec<String>,
    /// Globs, matched against what the upstream lists.
    globs: Vec<WildMatch>,
    /// Client name → this channel's model name.
    pub aliases: Vec<(String, String)>,
    keys: Vec<Key>,
    next_key: AtomicUsize,
    slots: Option<Arc<Semaphore>>,
    /// Requests waiting for a slot, bounded by `routing.max_queue`.
    pub waiting: Arc<AtomicUsize>,
    /// Requests holding a lease now.
    in_flight: Arc<AtomicUsize>,
    pub health: Arc<Health>,
    /// The upstream's model list (one entry), kept for `models_cache_secs`; a failure
    /// for at most `FAILED_LISTING_TTL`, so an upstream that is back is seen soon.
    listing: Cache<(), Listing>,
}

type Listing = Result<Arc<Vec<ModelCard>>, Error>;

const FAILED_LISTING_TTL: Duration = Duration::from_secs(2);

struct ListingExpiry {
    ttl: Duration,
}

impl moka::Expiry<(), Listing> for ListingExpiry {
    fn expire_after_create(&self, _: &(), value: &Listing, _: std::time::Instant) -> Option<Duration> {
        Some(match value {
            Ok(_) => self.ttl,
            Err(_) => self.ttl.min(FAILED_LISTING_TTL),
        })
    }
}

/// One key of a channel (or the channel itself when it has no key).
struct Key {
    endpoint: Endpoint,
    backend: Backend,
    /// Left out until then: it got 401/403, or 429 with a `Retry-After`.
    benched_until: Arc<Mutex<Option<Instant>>>,
    slots: Option<Arc<Semaphore>>,
}

/// A request's hold on a channel and key: the concurrency slots it took, given back when
/// the request (or its stream) ends or the client hangs up.
pub struct Lease {
    pub channel: Arc<Channel>,
    pub key: usize,
    /// The upstream's name of the model asked for: its health is counted by it.
    pub model: String,
    /// This request is the probe of a half-open circuit, the channel's or the model's.
    pub probe: Option<Probe>,
    _slots: (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>),
    /// The channel's slot among the fleet's, when replicas share `max_concurrency`.
    pub fleet_slot: Option<crate::gateway::fleet::SlotGuard>,
}

impl Lease {
    pub fn backend(&self) -> &Backend {
        &self.channel.keys[self.key].backend
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.channel.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(probe) = &self.probe {
            // No verdict came (the client left first): let another request probe.
            self.channel.health.probe_abandoned(probe);
        }
    }
}

/// Why a channel could not give a slot now.
pub enum NoSlot {
    /// Every usable key is at its limit, or the channel is: worth waiting for.
    Full,
    /// No usable key at all (all benched or already tried by this request).
    NoKey,
}

/// Slots for `limit` requests at a time (none: no limit), the ones `before` had when
/// its limit was the same, so requests holding them still count.
fn slots(limit: usize, before: Option<(usize, &Option<Arc<Semaphore>>)>) -> Option<Arc<Semaphore>> {
    match before {
        Some((was, slots)) if was == limit => slots.clone(),
        _ => (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
    }
}

impl Channel {
    /// Builds the channel `config` describes; `before` is the channel of the same name
    /// being replaced, whose runtime state it takes over.
    pub fn new(config: &UpstreamConfig, images: &ImageConfig, before: Option<&Channel>) -> Result<Self, String> {
        let http = Upstream::client(config);
        let fetcher = ImageFetcher::new(images);
        let per_key = config.max_concurrency_per_key;
        let keys = config
            .endpoints()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|endpoint| {
                let old = before.and_then(|b| b.keys.iter().find(|k| k.endpoint == endpoint));
                Key {
                    backend: Backend::new(config, Upstream::new(config, http.clone(), &endpoint), fetcher.clone()),
                    benched_until: old.map_or_else(Default::default, |k| k.benched_until.clone()),
                    slots: slots(
                        per_key,
                        old.zip(before)
                            .map(|(k, b)| (b.config.max_concurrency_per_key, &k.slots)),
                    ),
                    endpoint,
                }
            })
            .collect();
        let is_glob = |m: &String| m.contains(['*', '?']);
        Ok(Self {
            config: config.clone(),
            name: config.name.clone(),
            kind: config.kind,
            url: config.url.clone(),
            priority: config.priority,
            weight: config.weight,
            exact: config.models.iter().filter(|m| !is_glob(m)).cloned().collect(),
            globs: config
                .models
                .iter()
                .filter(|m| is_glob(m))
                .map(|m| WildMatch::new(m))
                .collect(),
            aliases: config.aliases.iter().map(|(a, t)| (a.clone(), t.clone())).collect(),
            keys,
            next_key: AtomicUsize::new(0),
            slots: slots(
                config.max_concurrency,
                before.map(|b| (b.config.max_concurrency, &b.slots)),
            ),
            waiting: before.map_or_else(Default::default, |b| b.waiting.clone()),
            in_flight: before.map_or_else(Default::default, |b| b.in_flight.clone()),
            health: before.map_or_else(Default::default, |b| b.health.clone()),
            listing: Cache::builder()
                .expire_after(ListingExpiry {
                    ttl: Duration::from_secs(config.models_cache_secs),
                })
                .build(),
        })
    }

    /// The name this channel knows `model` by, if it serves it; `listed` is what the
    /// upstream lists (`None` when that is unknown: globs then match any name).
    pub fn serves(&self, model: &str, listed: Option<&[ModelCard]>) -> Option<String> {
        if let Some((_, target)) = self.aliases.iter().find(|(alias, _)| alias == model) {
            return Some(target.clone());
        }
        if self.exact.iter().any(|m| m == model) {
            return Some(model.to_owned());
        }
        let glob = self.globs.iter().any(|g| g.matches(model));
        let listed = listed.is_none_or(|cards| cards.iter().any(|c| c.id == model));
        (glob && listed).then(|| model.to_owned())
    }

    /// Whether `model` is one of this channel's exact names or aliases.
    pub fn names(&self, model: &str) -> bool {
        self.exact.iter().any(|m| m == model) || self.aliases.iter().any(|(alias, _)| alias == model)
    }

    /// The names this channel serves: exact ones, listed ones its globs match, aliases.
    pub fn served_names(&self, listed: Option<&[ModelCard]>) -> Vec<String> {
        let mut names = self.exact.clone();
        for card in listed.unwrap_or_default() {
            if self.globs.iter().any(|g| g.matches(&card.id)) && !names.contains(&card.id) {
                names.push(card.id.clone());
            }
        }
        names.extend(self.aliases.iter().map(|(alias, _)| alias.clone()));
        names
    }

    /// The upstream's model list, cached; fetched with the first key not benched.
    pub async fn listing(&self) -> Listing {
        self.listing
            .get_with((), async {
                let started = Instant::now();
                let result = self.keys[self.listing_key()].backend.models().await;
                if let Some(change) = self.health.checked(started.elapsed(), result.as_ref().err()) {
                    change.log(&self.name);
                }
                result.map(Arc::new)
            })
            .await
    }

    /// Forgets the cached list, so the next `listing` asks the upstream again.
    pub fn forget_listing(&self) {
        self.listing.invalidate_all();
    }

    fn listing_key(&self) -> usize {
        let now = Instant::now();
        (0..self.keys.len()).find(|&k| !self.benched(k, now)).unwrap_or(0)
    }

    /// A backend to ask for things that are not completions (`/api/show`).
    pub fn any_backend(&self) -> &Backend {
        &self.keys[self.listing_key()].backend
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn benched(&self, key: usize, now: Instant) -> bool {
        let until = self.keys[key].benched_until.lock().expect("key lock");
        until.is_some_and(|t| t > now)
    }

    /// Leaves a key out until `until`.
    pub fn bench_key(&self, key: usize, until: Instant) {
        *self.keys[key].benched_until.lock().expect("key lock") = Some(until);
    }

    /// Names key `key` among replicas without saying it: a digest of its URL and key.
    pub fn key_fingerprint(&self, key: usize) -> String {
        let endpoint = &self.keys[key].endpoint;
        let text = format!("{}\n{}", endpoint.url, endpoint.key.as_deref().unwrap_or_default());
        crate::store::secrets::digest(&text)[..16].to_owned()
    }

    /// Leaves out the key another replica benched, found by its fingerprint.
    pub fn bench_fingerprint(&self, fingerprint: &str, until: Instant) {
        if let Some(key) = (0..self.keys.len()).find(|&k| self.key_fingerprint(k) == fingerprint) {
            self.bench_key(key, until);
        }
    }

    /// Takes a slot on the next key in rotation that is neither benched nor in `tried`,
    /// without waiting.
    pub fn try_lease(
        self: &Arc<Self>,
        tried: &[(usize, usize)],
        index: usize,
        model: &str,
        probe: Option<Probe>,
    ) -> Result<Lease, NoSlot> {
        let channel_slot = match &self.slots {
            Some(slots) => Some(slots.clone().try_acquire_owned().map_err(|_| NoSlot::Full)?),
            None => None,
        };
        self.lease_key(tried, index, model, probe, channel_slot)
    }

    /// Waits (bounded by `timeout`) for a slot on this channel.
    pub async fn wait_lease(
        self: &Arc<Self>,
        tried: &[(usize, usize)],
        index: usize,
        model: &str,
        timeout: Duration,
    ) -> Option<Lease> {
        let deadline = tokio::time::Instant::now() + timeout;
        let channel_slot = match &self.slots {
            Some(slots) => Some(
                tokio::time::timeout_at(deadline, slots.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?,
            ),
            None => None,
        };
        loop {
            match self.lease_key(tried, index, model, None, None) {
                Ok(mut lease) => {
                    lease._slots.0 = channel_slot;
                    return Some(lease);
                }
                Err(NoSlot::NoKey) => return None,
                Err(NoSlot::Full) if tokio::time::Instant::now() >= deadline => return None,
                // Per-key limits: poll, since any of the keys may free up first.
                Err(NoSlot::Full) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn lease_key(
        self: &Arc<Self>,
        tried: &[(usize, usize)],
        index: usize,
        model: &str,
        probe: Option<Probe>,
        channel_slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Lease, NoSlot> {
        let now = Instant::now();
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut any_usable = false;
        for offset in 0..self.keys.len() {
            let key = (start + offset) % self.keys.len();
            if tried.contains(&(index, key)) || self.benched(key, now) {
                continue;
            }
            any_usable = true;
            let key_slot = match &self.keys[key].slots {
                Some(slots) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => continue,
                },
                None => None,
            };
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            return Ok(Lease {
                channel: self.clone(),
                key,
                model: model.to_owned(),
                probe,
                _slots: (channel_slot, key_slot),
                fleet_slot: None,
            });
        }
        Err(if any_usable { NoSlot::Full } else { NoSlot::NoKey })
    }

    /// Whether any key could still serve a request that tried `tried`.
    pub fn has_key(&self, tried: &[(usize, usize)], index: usize) -> bool {
        let now = Instant::now();
        (0..self.keys.len()).any(|k| !tried.contains(&(index, k)) && !self.benched(k, now))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}
