//! Between a frontend and a backend: what applies to every request whatever its
//! protocols: who may call (auth, limits, quotas), the model catalog, per-model policy
//! (option overrides, display names), the response cache, routing over channels with
//! failover and health, and usage records and metrics.

pub mod auth;
pub mod cache;
mod catalog;
pub mod channel;
pub mod health;
pub mod limits;
pub mod policy;
pub mod routing;
pub mod usage;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::{StreamExt, stream};
use serde_json::{Value, json};

use crate::config::{Config, RoutingConfig};
use crate::ir::{ChatEvent, ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, estimate_tokens};
use crate::store::Store;
use crate::telemetry::{Metrics, spans};
use auth::{Auth, Caller};
use cache::ResponseCache;
use channel::Channel;
use limits::Limits;
use policy::Policies;
use routing::Router;
use tracing_futures::Instrument;
use usage::{Meter, UsageLog};

pub use catalog::DEFAULT_CONTEXT_LENGTH;

/// How long a model counts as "running" for `/api/ps` after its last use (Ollama's
/// default keep-alive).
pub const RECENT_USE: Duration = Duration::from_secs(300);

/// Models used lately (client name → unix time of last use), for `/api/ps`. A map under
/// a lock: the use of a known model is one lookup, where a cache insert per request cost
/// about 2 % of a translated request's CPU.
#[derive(Default)]
struct RecentModels(Mutex<HashMap<String, i64>>);

impl RecentModels {
    const MAX_MODELS: usize = 1024;

    fn used(&self, model: &str) {
        let now = chrono::Utc::now().timestamp();
        let mut models = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = models.get_mut(model) {
            *at = now;
            return;
        }
        if models.len() >= Self::MAX_MODELS {
            Self::forget_stale(&mut models, now);
        }
        if models.len() < Self::MAX_MODELS {
            models.insert(model.to_owned(), now);
        }
    }

    fn list(&self) -> Vec<(String, i64)> {
        let now = chrono::Utc::now().timestamp();
        let mut models = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Self::forget_stale(&mut models, now);
        models.iter().map(|(name, at)| (name.clone(), *at)).collect()
    }

    fn forget_stale(models: &mut HashMap<String, i64>, now: i64) {
        models.retain(|_, at| now - *at < RECENT_USE.as_secs() as i64);
    }
}

pub struct Gateway {
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    limits: Arc<Limits>,
    pub usage: Arc<UsageLog>,
    pub store: Option<Arc<dyn Store>>,
    router: Router,
    policies: Policies,
    cache: Arc<ResponseCache>,
    tag_suffix: String,
    recent: RecentModels,
    /// When the catalog was last refreshed because a name was not in it.
    refreshed_for_miss: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Gateway {
    /// Opens the store, and starts the usage writer: call inside a Tokio runtime.
    pub fn new(config: &Config) -> Result<Self, String> {
        let channels = config
            .channels()
            .iter()
            .map(|c| Channel::new(c, &config.images).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let store = if config.store.data_dir.as_os_str().is_empty() {
            None
        } else {
            Some(crate::store::open(&config.store.data_dir).map_err(|e| e.to_string())?)
        };
        let metrics = Arc::new(Metrics::new(config.metrics.enabled));
        let limits = Limits::new(config.limits.clone(), metrics.clone());
        if let Some(store) = &store {
            let month = limits::month_start_ms();
            let used = store.tokens_used_since(month).map_err(|e| e.to_string())?;
            limits.set_used_before(month, used.into_iter().collect());
        }
        let auth = Arc::new(Auth::new(&config.auth, &config.tokens, store.clone())?);
        auth.start_reloading();
        Ok(Self {
            auth,
            limits: Arc::new(limits),
            usage: Arc::new(UsageLog::start(store.clone())),
            store,
            router: Router::new(channels, config.routing.clone(), metrics.clone()),
            metrics,
            policies: Policies::new(&config.models),
            cache: Arc::new(ResponseCache::new(&config.cache)),
            tag_suffix: config.ollama.tag_suffix.clone(),
            recent: RecentModels::default(),
            refreshed_for_miss: std::sync::Mutex::new(None),
        })
    }

    /// Starts the active health checks (a model-list fetch per channel, which also keeps
    /// the catalog fresh). They stop when the gateway is dropped.
    /// With one channel there is nothing to fail over to, so none run: a check would only
    /// add traffic (and single-stream servers such as llama-cpp-python's abort the
    /// generation in progress when any other request arrives).
    pub fn start_checks(&self) {
        let Some(interval) = self.router.config.check_interval() else {
            return;
        };
        if self.router.channels.len() < 2 {
            return;
        }
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
    /// as a proper error status; after it, an error ends the stream. Every request,
    /// answered or not, leaves a usage record. A cached answer replays as a stream.
    pub async fn chat(&self, request: &ChatRequest, caller: &Caller) -> Result<ChatStream, Error> {
        let mut meter = Meter::start(self.usage.clone(), self.metrics.clone(), caller, &request.model);
        let started = match self.start_chat(request, caller, &mut meter).await {
            Ok(started) => started,
            Err(error) => {
                meter.finish(error.status());
                return Err(error);
            }
        };
        let Started {
            events,
            lease,
            store_as,
        } = started;
        let config = self.router.config.clone();
        let cache = self.cache.clone();
        // A complete answer (up to its finish) is what gets cached.
        let mut recording = store_as.map(|key| (key, Vec::new()));
        let mut recorded_bytes = 0;
        // The lease (its concurrency slots) and the meter live as long as the stream; an
        // upstream failure mid-stream counts against the channel's health.
        Ok(Box::pin(events.map(move |event| {
            match &event {
                Err(error) => {
                    if let Some(lease) = &lease {
                        lease.channel.health.record(Err(error), false, &config);
                    }
                    recording = None;
                }
                Ok(event) => {
                    if let Some((_, events)) = &mut recording {
                        recorded_bytes += cache::event_bytes(event);
                        events.push(event.clone());
                    }
                    // An answer too big to keep is not held on to.
                    if !cache.fits(recorded_bytes) {
                        recording = None;
                    }
                    if matches!(event, ChatEvent::Finish(_))
                        && let Some((key, events)) = recording.take()
                    {
                        cache.store_chat(key, events);
                    }
                }
            }
            meter.saw(&event);
            event
        })))
    }

    /// Admits and routes a generation, then answers it from the cache or starts it
    /// upstream: its events from the first one on.
    async fn start_chat(&self, request: &ChatRequest, caller: &Caller, meter: &mut Meter) -> Result<Started, Error> {
        caller.check_model(&request.model)?;
        let candidates = self.route(&request.model).await?;
        // A name is a metric label only when a channel really knows it: with no model
        // list to check against, a glob takes any name a client makes up.
        if candidates.iter().any(|c| c.verified) {
            meter.known();
        }
        // Limits reserve the prompt plus `max_tokens` as upstreams will get it (overrides
        // applied; the most any candidate gets), `default_max_tokens` when unset. With a
        // quota nearly used up, an answer of unset length is capped to what is left, so it
        // cannot overrun; one that asks for more than is left is refused.
        let prompt = request.estimated_prompt_tokens();
        let default = self.limits.default_max_tokens();
        let cap = self
            .limits
            .quota_left(caller)
            .map(|left| left.saturating_sub(prompt).max(1))
            .filter(|&room| room < default);
        let asked = |model: &str| {
            let asked = self.policies.max_tokens(request, model).filter(|&n| n > 0);
            asked.map_or(cap.unwrap_or(default), |n| n as u64)
        };
        let max_tokens = candidates.iter().map(|c| asked(&c.model)).max().unwrap_or(default);
        meter.admitted(self.limits.admit(caller, prompt + max_tokens)?, prompt);
        // The request as each candidate's upstream gets it: renamed, overrides applied,
        // capped.
        let prepare = |model: &str| {
            let mut prepared = match self.policies.chat(request, model) {
                Some(prepared) => Cow::Owned(prepared),
                None => Cow::Borrowed(request),
            };
            if let Some(cap) = cap
                && prepared.sampling.max_tokens.filter(|&n| n > 0).is_none()
            {
                prepared.to_mut().sampling.max_tokens = Some(cap as i64);
            }
            prepared
        };
        let partition = partition(caller);
        // An answer cached for any candidate's upstream will do.
        let candidates_to_look_up = if self.cache.caches_chats() {
            &candidates[..]
        } else {
            &[]
        };
        for candidate in candidates_to_look_up {
            let Some(plan) = self
                .cache
                .chat_plan(&prepare(&candidate.model), partition, caller.cache)
            else {
                break;
            };
            if !plan.read {
                break;
            }
            if let Some(answer) = self.cache.chat(&plan.key) {
                self.note_cache(meter, "chat", "hit");
                meter.cached(&candidate.model);
                let replay = stream::iter((*answer).clone().into_iter().map(Ok));
                return Ok(Started {
                    events: Box::pin(replay),
                    lease: None,
                    store_as: None,
                });
            }
        }
        let mut attempts = self.router.attempts(&request.model, &candidates);
        let mut looked_up = false;
        let (events, lease, store_as) = loop {
            let (lease, model) = attempts.next().await?;
            meter.waited(attempts.take_backoff());
            let sent = prepare(&model);
            let plan = self.cache.chat_plan(&sent, partition, caller.cache);
            if let Some(plan) = &plan
                && !looked_up
            {
                looked_up = true;
                self.note_cache(meter, "chat", if plan.read { "miss" } else { "bypass" });
            }
            let operation = match sent.input {
                crate::ir::Input::Prompt(_) => "text_completion",
                crate::ir::Input::Messages(_) => "chat",
            };
            let attempt = self.attempt(&lease, operation, &model, &request.model, caller, attempts.number());
            let span = spans::attempt_span(&attempt, Some(&sent));
            let started = async {
                let mut events = lease.backend().chat(&sent).await?;
                let first = events.next().await.transpose()?;
                Ok::<_, Error>(stream::iter(first.map(Ok)).chain(events))
            };
            match started.instrument(span.clone()).await {
                Ok(events) => {
                    attempts.succeeded(&lease);
                    let kind = lease.channel.kind.as_str();
                    meter.routed(&lease.channel.name, kind, &model, attempts.elapsed(), span.clone());
                    // The stream runs inside its attempt's span (the backend notes the
                    // upstream's answer id on it).
                    break (events.instrument(span), lease, plan.filter(|p| p.store).map(|p| p.key));
                }
                Err(error) => {
                    meter.waited(attempts.elapsed());
                    spans::record_error(&span, &error_type(&error), &error.message);
                    attempts.failed(lease, error)?
                }
            }
        };
        self.recent.used(&request.model);
        Ok(Started {
            events: Box::pin(events),
            lease: Some(lease),
            store_as,
        })
    }

    pub async fn embed(&self, request: &EmbedRequest, caller: &Caller) -> Result<EmbedResponse, Error> {
        let mut meter = Meter::start(self.usage.clone(), self.metrics.clone(), caller, &request.model);
        let result = self.start_embed(request, caller, &mut meter).await;
        meter.finish(result.as_ref().map_or_else(Error::status, |_| 200));
        result
    }

    async fn start_embed(
        &self,
        request: &EmbedRequest,
        caller: &Caller,
        meter: &mut Meter,
    ) -> Result<EmbedResponse, Error> {
        caller.check_model(&request.model)?;
        let candidates = self.route(&request.model).await?;
        // A name is a metric label only when a channel really knows it: with no model
        // list to check against, a glob takes any name a client makes up.
        if candidates.iter().any(|c| c.verified) {
            meter.known();
        }
        let prompt: u64 = request.inputs.iter().map(|i| estimate_tokens(i.len())).sum();
        meter.admitted(self.limits.admit(caller, prompt)?, prompt);
        let prepare = |model: &str| match self.policies.embed(request, model) {
            Some(prepared) => Cow::Owned(prepared),
            None => Cow::Borrowed(request),
        };
        let partition = partition(caller);
        if let Some(candidate) = candidates.first()
            && let Some(plan) = self
                .cache
                .embed_plan(&prepare(&candidate.model), partition, caller.cache)
            && plan.read
            && let Some(answer) = self.cache.embedding(&plan.key)
        {
            self.note_cache(meter, "embeddings", "hit");
            meter.cached(&candidate.model);
            meter.counted(answer.prompt_tokens);
            return Ok((*answer).clone());
        }
        let mut attempts = self.router.attempts(&request.model, &candidates);
        let mut looked_up = false;
        let answer = loop {
            let (lease, model) = attempts.next().await?;
            meter.waited(attempts.take_backoff());
            let sent = prepare(&model);
            let plan = self.cache.embed_plan(&sent, partition, caller.cache);
            if let Some(plan) = &plan
                && !looked_up
            {
                looked_up = true;
                self.note_cache(meter, "embeddings", if plan.read { "miss" } else { "bypass" });
            }
            let attempt = self.attempt(&lease, "embeddings", &model, &request.model, caller, attempts.number());
            let span = spans::attempt_span(&attempt, None);
            match lease.backend().embed(&sent).instrument(span.clone()).await {
                Ok(answer) => {
                    attempts.succeeded(&lease);
                    let kind = lease.channel.kind.as_str();
                    meter.routed(&lease.channel.name, kind, &model, attempts.elapsed(), span);
                    if let Some(plan) = plan.filter(|p| p.store) {
                        self.cache.store_embedding(plan.key, Arc::new(answer.clone()));
                    }
                    break answer;
                }
                Err(error) => {
                    meter.waited(attempts.elapsed());
                    spans::record_error(&span, &error_type(&error), &error.message);
                    attempts.failed(lease, error)?
                }
            }
        };
        meter.counted(answer.prompt_tokens);
        self.recent.used(&request.model);
        Ok(answer)
    }

    /// Counts a cache lookup (`hit` or `miss`; a `no-cache` request is a `bypass`, no
    /// lookup) and shows the outcome in the answer's `x-diglot-cache` header.
    fn note_cache(&self, meter: &Meter, kind: &'static str, status: &'static str) {
        if status != "bypass" {
            self.metrics.cache_lookup(kind, status == "hit");
        }
        if let Some(exchange) = meter.exchange() {
            exchange.cache_status(status);
        }
    }

    /// What the span of an attempt on `lease` says of it.
    fn attempt<'a>(
        &self,
        lease: &'a channel::Lease,
        operation: &'static str,
        upstream_model: &'a str,
        client_model: &'a str,
        caller: &'a Caller,
        number: u32,
    ) -> spans::Attempt<'a> {
        spans::Attempt {
            operation,
            provider: lease.channel.kind.as_str(),
            upstream_model,
            client_model,
            channel: &lease.channel.name,
            url: lease.backend().base(),
            number,
            token_prefix: caller.token.as_ref().map(|t| t.prefix.as_str()),
        }
    }

    /// An Ollama upstream's own `/api/show` answer for a model an Ollama channel serves,
    /// passed through as it is; `None` when no Ollama channel serves it.
    pub async fn ollama_show(&self, name: &str, caller: &Caller) -> Option<Result<Arc<Value>, Error>> {
        if let Err(e) = caller.check_model(name) {
            return Some(Err(e));
        }
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
    pub fn recent(&self) -> Vec<(String, i64)> {
        self.recent.list()
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
                report["url"] = json!(crate::protocol::http::shown_url(&c.url));
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

    /// `GET /metrics`: the Prometheus text, with each channel's health read now.
    pub fn metrics_text(&self) -> String {
        let states: Vec<(String, String, bool)> = self
            .router
            .channels
            .iter()
            .map(|c| {
                let report = c.health.report();
                let state = report["state"].as_str().unwrap_or("down").to_owned();
                (c.name.clone(), state, report["usable"] == true)
            })
            .collect();
        self.metrics.render(
            states
                .iter()
                .map(|(name, state, usable)| (name.as_str(), state.as_str(), *usable)),
        )
    }

    pub fn routing(&self) -> &RoutingConfig {
        &self.router.config
    }
}

/// A generation as it starts: its events, the lease on the channel answering it (none
/// for a cached answer), and the cache key its complete answer is stored under.
struct Started {
    events: ChatStream,
    lease: Option<channel::Lease>,
    store_as: Option<cache::Key>,
}

/// Whose cache entries a caller sees: its token's (by digest), or the one shared space
/// when authentication is off.
fn partition(caller: &Caller) -> &str {
    caller.token.as_ref().map_or("", |t| t.digest.as_str())
}

/// `error.type` of a failed attempt: the upstream's status, or what went wrong.
fn error_type(error: &Error) -> String {
    match error.kind {
        crate::ir::ErrorKind::Timeout => "timeout".into(),
        crate::ir::ErrorKind::UpstreamUnavailable => "connection_error".into(),
        crate::ir::ErrorKind::UpstreamError { status } => status.to_string(),
        crate::ir::ErrorKind::RateLimited => "429".into(),
        _ => error.status().to_string(),
    }
}
