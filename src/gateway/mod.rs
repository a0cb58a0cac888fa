//! Between a frontend and a backend: what applies to every request whatever its
//! protocols: who may call (auth, limits, quotas), the model catalog, per-model policy
//! (option overrides, display names), the response cache, routing over channels with
//! failover and health, and usage records and metrics; and the live configuration
//! snapshot they all read.

pub mod auth;
pub mod cache;
mod catalog;
pub mod channel;
mod circuit;
pub mod fleet;
pub mod health;
pub mod limits;
mod live;
mod overlay;
pub mod policy;
mod recent;
mod replicas;
pub mod responses;
pub mod routing;
mod status;
pub mod tokens;
pub mod usage;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{StreamExt, stream};
use serde_json::Value;

use crate::config::{Config, Overlay};
use crate::ir::{ChatEvent, ChatRequest, ChatStream, EmbedRequest, EmbedResponse, Error, ErrorKind, estimate_tokens};
use crate::protocol::upstream::{Forward, PassThrough};
use crate::store::Store;
use crate::telemetry::{Metrics, spans};
use auth::Caller;
use channel::Channel;
use fleet::Fleet;
use limits::{Ask, Limiter};
use tracing_futures::Instrument;
use usage::{Meter, UsageLog};

pub use live::Snapshot;
pub use recent::RECENT_USE;
use recent::RecentModels;

pub struct Gateway {
    /// What the profile says now; a request keeps the snapshot it started with.
    live: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    limiter: Arc<dyn Limiter>,
    pub usage: Arc<UsageLog>,
    pub store: Option<Arc<dyn Store>>,
    /// The other replicas (through Redis), when `[redis] url` is set.
    pub fleet: Option<Arc<Fleet>>,
    recent: RecentModels,
    /// Reloads one at a time, so each builds on the snapshot before it.
    reloading: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// Opens the store, builds the first snapshot, and starts the usage writer, the token
    /// reloads and the health checks: call inside a Tokio runtime.
    pub async fn new(config: Config) -> Result<Arc<Self>, String> {
        let store = match config.store.location()? {
            crate::config::StoreLocation::None => None,
            _ => Some(crate::store::open(&config.store).await.map_err(|e| e.to_string())?),
        };
        let metrics = Arc::new(Metrics::new(config.metrics.enabled));
        let fleet = match config.redis.enabled() {
            true => Some(Fleet::start(&config.redis, metrics.clone())?),
            false => None,
        };
        let limiter = limits::start(fleet.as_ref(), store.as_ref(), &metrics).await?;
        let overlay = match &store {
            Some(store) => overlay::read(store.as_ref()).await?,
            None => Overlay::default(),
        };
        let snapshot = Snapshot::build(
            Arc::new(live::sealed(config)),
            Arc::new(overlay),
            None,
            store.clone(),
            &metrics,
            fleet.as_ref(),
        )
        .map_err(|e| format!("{e} (in the profile, or in what the admin API keeps in the store)"))?;
        snapshot.auth.reload().await;
        snapshot.auth.start_reloading();
        let gateway = Arc::new(Self {
            live: ArcSwap::from_pointee(snapshot),
            limiter,
            usage: Arc::new(UsageLog::start(store.clone())),
            store,
            fleet,
            metrics,
            recent: RecentModels::default(),
            reloading: tokio::sync::Mutex::new(()),
        });
        gateway.start_checks();
        gateway.follow_the_fleet();
        gateway.follow_the_store();
        Ok(gateway)
    }

    /// Asks every channel for its model list once and says in the log, one line each,
    /// whether it answered: a wrong URL or key shows at start, not at the first request.
    /// Only said: an upstream still starting is not marked down for it.
    pub async fn check_channels_at_start(self: Arc<Self>) {
        let channels = self.snapshot().router.channels.clone();
        futures::future::join_all(channels.iter().map(|channel| async move {
            let started = std::time::Instant::now();
            match channel.any_backend().models().await {
                Ok(models) => tracing::info!(
                    channel = %channel.name,
                    models = models.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "channel answered"
                ),
                Err(error) => tracing::warn!(
                    channel = %channel.name,
                    error = %error.message,
                    "channel did not answer its model list; requests to it may fail"
                ),
            }
        }))
        .await;
    }

    /// The configuration in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Starts the active health checks (a model-list fetch per channel, which also keeps
    /// the catalog fresh), on whatever channels the live snapshot has at each tick. They
    /// stop when the gateway is dropped.
    /// With one channel there is nothing to fail over to, so none run: a check would only
    /// add traffic (and single-stream servers such as llama-cpp-python's abort the
    /// generation in progress when any other request arrives).
    fn start_checks(self: &Arc<Self>) {
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(live) = gateway.upgrade().map(|g| g.snapshot()) else {
                    return;
                };
                let Some(interval) = live.router.config.check_interval() else {
                    // Checks are off; look again later, a reload may turn them on.
                    drop(live);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let channels: Vec<Arc<Channel>> = live.router.channels.clone();
                drop(live);
                if channels.len() >= 2 {
                    futures::future::join_all(channels.iter().map(|channel| async move {
                        channel.forget_listing();
                        let _ = channel.listing().await;
                    }))
                    .await;
                }
                drop(channels);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Starts a generation. Returns once an upstream produced its first event, so a
    /// failure before any output fails over to another channel, or reaches the client
    /// as a proper error status; after it, an error ends the stream. Every request,
    /// answered or not, leaves a usage record. A cached answer replays as a stream.
    pub async fn chat(&self, live: &Snapshot, request: &ChatRequest, caller: &Caller) -> Result<ChatStream, Error> {
        self.chat_in(live, request, caller, None).await
    }

    /// Starts several answers of one request at once (OpenAI's `n`, several prompts);
    /// the first failure cancels the others, and the request leaves one usage record for
    /// it rather than one per cancelled answer.
    pub async fn chat_all<'r>(
        &self,
        live: &Snapshot,
        requests: impl IntoIterator<Item = &'r ChatRequest>,
        caller: &Caller,
    ) -> Result<Vec<ChatStream>, Error> {
        let mut requests = requests.into_iter().peekable();
        let Some(first) = requests.next() else {
            return Ok(Vec::new());
        };
        if requests.peek().is_none() {
            // One answer (nearly every request): no batch, and no join to move it through.
            return Ok(vec![self.chat_in(live, first, caller, None).await?]);
        }
        let batch = usage::Batch::default();
        let starts = std::iter::once(first)
            .chain(requests)
            .map(|request| self.chat_in(live, request, caller, Some(batch.clone())));
        futures::future::try_join_all(starts).await
    }

    async fn chat_in(
        &self,
        live: &Snapshot,
        request: &ChatRequest,
        caller: &Caller,
        batch: Option<usage::Batch>,
    ) -> Result<ChatStream, Error> {
        let mut meter = Meter::start(self.usage.clone(), self.metrics.clone(), caller, &request.model);
        if let Some(batch) = batch {
            meter.in_batch(batch);
        }
        let started = match within_bounds(&live.config.server, request) {
            Ok(()) => self.start_chat(live, request, caller, &mut meter).await,
            Err(error) => Err(error),
        };
        let started = match started {
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
        let config = live.router.config.clone();
        let cache = live.cache.clone();
        // A complete answer (up to its finish) is what gets cached.
        let mut recording = store_as.map(|key| (key, Vec::new()));
        let mut recorded_bytes = 0;
        // The lease (its concurrency slots) and the meter live as long as the stream; an
        // upstream failure mid-stream counts against the channel's health.
        Ok(Box::pin(events.map(move |event| {
            match &event {
                Err(error) => {
                    if let Some(lease) = &lease
                        && let Some(scope) = routing::mid_stream_scope(error)
                    {
                        for change in lease.channel.health.failed(&lease.model, error, scope, None, &config) {
                            change.log(&lease.channel.name);
                        }
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
    async fn start_chat(
        &self,
        live: &Snapshot,
        request: &ChatRequest,
        caller: &Caller,
        meter: &mut Meter,
    ) -> Result<Started, Error> {
        caller.check_model(&request.model)?;
        let candidates = live.route(&request.model).await?;
        // A name is a metric label only when a channel really knows it: with no model
        // list to check against, a glob takes any name a client makes up.
        if candidates.iter().any(|c| c.verified) {
            meter.known();
        }
        // Limits reserve the prompt plus `max_tokens` as upstreams will get it (overrides
        // applied; the most any candidate gets), `default_max_tokens` when unset. With a
        // quota nearly used up, an answer of unset length is capped to what is left (the
        // limiter cuts the reservation down), so it cannot overrun; one that asks for more
        // than is left is refused.
        let prompt = request.estimated_prompt_tokens();
        let limits = &live.config.limits;
        let default = limits.default_max_tokens;
        // 0 asks for nothing (answered at once); below it means no limit.
        // One pass over the candidates: the most any asks for (unset counted as the
        // default), the most any sets, and whether any leaves it unset.
        let (most, longest_asked, any_unset) = candidates
            .iter()
            .map(|c| {
                live.policies
                    .max_tokens(request, &c.model)
                    .filter(|&n| n >= 0)
                    .map(|n| n as u64)
            })
            .fold((None, None, false), |(most, longest, unset), asked| {
                let counted = asked.unwrap_or(default);
                (
                    Some(most.map_or(counted, |m: u64| m.max(counted))),
                    longest.max(asked),
                    unset || asked.is_none(),
                )
            });
        let ask = Ask {
            estimate: prompt + most.unwrap_or(default),
            at_least: any_unset.then(|| prompt + longest_asked.unwrap_or(0).max(1)),
        };
        let reservation = self.limiter.admit(limits, caller, ask).await?;
        let cap = reservation
            .cut_to()
            .map(|admitted| admitted.saturating_sub(prompt).max(1));
        meter.admitted(reservation, prompt);
        // The request as each candidate's upstream gets it: renamed, overrides applied,
        // capped.
        let prepare = |model: &str| {
            let mut prepared = match live.policies.chat(request, model) {
                Some(prepared) => Cow::Owned(prepared),
                None => Cow::Borrowed(request),
            };
            if let Some(cap) = cap
                && prepared.sampling.max_tokens.filter(|&n| n >= 0).is_none()
            {
                prepared.to_mut().sampling.max_tokens = Some(cap as i64);
            }
            prepared
        };
        let partition = partition(caller);
        // An answer cached for any candidate's upstream will do.
        let candidates_to_look_up = if live.cache.caches_chats() {
            &candidates[..]
        } else {
            &[]
        };
        for candidate in candidates_to_look_up {
            let Some(plan) = live
                .cache
                .chat_plan(&prepare(&candidate.model), partition, caller.cache)
            else {
                break;
            };
            if !plan.read {
                break;
            }
            if let Some(answer) = live.cache.chat(&plan.key) {
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
        let mut attempts = live.router.attempts(&request.model, &candidates);
        let mut looked_up = false;
        let (events, lease, store_as) = loop {
            let (lease, model) = attempts.next().await?;
            meter.waited(attempts.take_backoff());
            let sent = prepare(&model);
            let plan = live.cache.chat_plan(&sent, partition, caller.cache);
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
                // Boxed: the backend's future is kilobytes, and every future above this one
                // would hold it inline, copied whole each time one is moved (memmove was
                // the largest user-space item of a plain request's profile).
                let mut events = Box::pin(lease.backend().chat(&sent)).await?;
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
                    meter.attempt_failed(attempts.elapsed());
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

    pub async fn embed(
        &self,
        live: &Snapshot,
        request: &EmbedRequest,
        caller: &Caller,
    ) -> Result<EmbedResponse, Error> {
        let mut meter = Meter::start(self.usage.clone(), self.metrics.clone(), caller, &request.model);
        let result = self.start_embed(live, request, caller, &mut meter).await;
        meter.finish(result.as_ref().map_or_else(Error::status, |_| 200));
        result
    }

    async fn start_embed(
        &self,
        live: &Snapshot,
        request: &EmbedRequest,
        caller: &Caller,
        meter: &mut Meter,
    ) -> Result<EmbedResponse, Error> {
        caller.check_model(&request.model)?;
        let candidates = live.route(&request.model).await?;
        // A name is a metric label only when a channel really knows it: with no model
        // list to check against, a glob takes any name a client makes up.
        if candidates.iter().any(|c| c.verified) {
            meter.known();
        }
        let prompt: u64 = request.inputs.iter().map(|i| estimate_tokens(i.len())).sum();
        let reservation = self
            .limiter
            .admit(&live.config.limits, caller, Ask::exactly(prompt))
            .await?;
        meter.admitted(reservation, prompt);
        let prepare = |model: &str| match live.policies.embed(request, model) {
            Some(prepared) => Cow::Owned(prepared),
            None => Cow::Borrowed(request),
        };
        let partition = partition(caller);
        if let Some(candidate) = candidates.first()
            && let Some(plan) = live
                .cache
                .embed_plan(&prepare(&candidate.model), partition, caller.cache)
            && plan.read
            && let Some(answer) = live.cache.embedding(&plan.key)
        {
            self.note_cache(meter, "embeddings", "hit");
            meter.cached(&candidate.model);
            meter.counted(answer.prompt_tokens);
            return Ok((*answer).clone());
        }
        let mut attempts = live.router.attempts(&request.model, &candidates);
        let mut looked_up = false;
        let answer = loop {
            let (lease, model) = attempts.next().await?;
            meter.waited(attempts.take_backoff());
            let sent = prepare(&model);
            let plan = live.cache.embed_plan(&sent, partition, caller.cache);
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
                        live.cache.store_embedding(plan.key, Arc::new(answer.clone()));
                    }
                    break answer;
                }
                Err(error) => {
                    meter.attempt_failed(attempts.elapsed());
                    spans::record_error(&span, &error_type(&error), &error.message);
                    attempts.failed(lease, error)?
                }
            }
        };
        meter.counted(answer.prompt_tokens);
        self.recent.used(&request.model);
        Ok(answer)
    }

    /// A prompt's size in tokens for Anthropic's count_tokens: as the upstream of the
    /// model's first channel counts it (`true`), or diglot's estimate (`false`) where that
    /// upstream has no way to count. It is a request like any other for the caller's
    /// models and request limits (one against requests per minute, a concurrency slot
    /// while it runs), but uses no tokens and leaves no usage record: nothing is generated.
    pub async fn count_tokens(
        &self,
        live: &Snapshot,
        request: &ChatRequest,
        caller: &Caller,
    ) -> Result<(u64, bool), Error> {
        caller.check_model(&request.model)?;
        let candidates = live.route(&request.model).await?;
        let reservation = self.limiter.admit(&live.config.limits, caller, Ask::exactly(0)).await?;
        let counted = self.count_on(live, request, &candidates).await;
        reservation.settle(0);
        counted
    }

    async fn count_on(
        &self,
        live: &Snapshot,
        request: &ChatRequest,
        candidates: &[routing::Candidate],
    ) -> Result<(u64, bool), Error> {
        let estimate = (request.estimated_prompt_tokens(), false);
        let Some(candidate) = candidates.first() else {
            return Ok(estimate);
        };
        let prepared = live.policies.chat(request, &candidate.model);
        let sent = prepared.as_ref().unwrap_or(request);
        let backend = live.router.channels[candidate.channel].any_backend();
        Ok(backend
            .count_tokens(sent)
            .await?
            .map_or(estimate, |count| (count, true)))
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
    pub async fn ollama_show(&self, live: &Snapshot, name: &str, caller: &Caller) -> Option<Result<Arc<Value>, Error>> {
        if let Err(e) = caller.check_model(name) {
            return Some(Err(e));
        }
        let candidates = match live.route(name).await {
            Ok(candidates) => candidates,
            Err(e) => return Some(Err(e)),
        };
        let channels = &live.router.channels;
        let candidate = candidates
            .iter()
            .find(|c| channels[c.channel].kind == crate::config::UpstreamKind::Ollama)?;
        channels[candidate.channel]
            .any_backend()
            .ollama_show(&candidate.model)
            .await
    }

    /// Forwards Ollama model management (`what`: pull, push, create, copy, delete, blobs)
    /// to `ollama.fallback_url` or the first Ollama channel. It changes the upstream for
    /// everyone: with tokens on, only admins may.
    pub async fn ollama_manage(
        &self,
        live: &Snapshot,
        caller: &Caller,
        what: &str,
        call: Forward<'_>,
    ) -> Result<PassThrough, Error> {
        if !caller.is_admin() {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "managing models (pull, push, create, copy, delete) needs an admin token",
            ));
        }
        let missing = || {
            let kind = if what == "pull" {
                ErrorKind::NotFound
            } else {
                ErrorKind::NotImplemented
            };
            Error::new(
                kind,
                format!(
                    "diglot cannot {what} models on its upstream; set ollama.fallback_url to forward model management to an Ollama server"
                ),
            )
        };
        let backend = live.model_manager.as_ref().ok_or_else(missing)?;
        backend.pass_through(call).await.ok_or_else(missing)?
    }

    /// Models used lately, with the unix time of their last use.
    pub fn recent(&self) -> Vec<(String, i64)> {
        self.recent.list()
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

/// A chat request within `[server]`'s bounds on messages and images, or the 400 naming
/// the bound and its key.
fn within_bounds(server: &crate::config::ServerConfig, request: &ChatRequest) -> Result<(), Error> {
    use crate::ir::Input;
    let (messages, images) = match &request.input {
        Input::Messages(messages) => (
            messages.len(),
            messages.iter().map(|m| m.images().count()).sum::<usize>(),
        ),
        Input::Prompt(prompt) => (1, prompt.images.len()),
    };
    if messages > server.max_messages {
        return Err(Error::invalid_field(
            "messages",
            format!(
                "the request has {messages} messages, more than the {} allowed; raise server.max_messages to accept it",
                server.max_messages
            ),
        ));
    }
    if images > server.max_images {
        return Err(Error::invalid_field(
            "messages",
            format!(
                "the request has {images} images, more than the {} allowed; raise server.max_images to accept it",
                server.max_images
            ),
        ));
    }
    Ok(())
}
