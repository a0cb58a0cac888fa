//! Which channel and key serve a request, and what happens when they fail: priority
//! tiers, weighted choice inside a tier, failover that never goes back to a channel or
//! key that already failed, backoff, and the concurrency slots.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{info, warn};

use super::channel::{Channel, Lease, NoSlot};
use super::fleet::{Down, Fleet, What};
use super::health::{Admission, Change, Scope};
use crate::config::{RedisFallback, RoutingConfig};
use crate::ir::{Error, ErrorKind};
use crate::telemetry::Metrics;

/// A channel that serves the asked model, and the name it knows it by.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub channel: usize,
    pub model: String,
    /// The channel names the model (exactly, by an alias, or in a model list it could
    /// fetch), rather than a glob taking any name because no list was to be had.
    pub verified: bool,
}

pub struct Router {
    pub channels: Vec<Arc<Channel>>,
    pub config: RoutingConfig,
    rng: Mutex<StdRng>,
    metrics: Arc<Metrics>,
    /// The other replicas, when they share slots and circuit state.
    fleet: Option<Arc<Fleet>>,
}

/// One request's way through the channels: each `next` leases a channel and key not yet
/// failed for it (after a backoff from the second on), and `failed` says whether to go on.
pub struct Attempts<'a> {
    router: &'a Router,
    model: &'a str,
    candidates: &'a [Candidate],
    tried_channels: Vec<usize>,
    tried_keys: Vec<(usize, usize)>,
    last_error: Option<Error>,
    /// The channel of the first failed attempt, for the failover count.
    first_failed: Option<Arc<Channel>>,
    /// The channel of the latest failed attempt, for the retry count.
    last_failed: Option<Arc<Channel>>,
    /// Backoff slept and not yet reported (`take_backoff`).
    backed_off: Duration,
    attempt: u32,
    started: Instant,
}

impl Attempts<'_> {
    /// A lease for the next attempt and the model name to ask for, or the error to
    /// answer with when there is nobody left to try.
    pub async fn next(&mut self) -> Result<(Lease, String), Error> {
        let router = self.router;
        if self.attempt > router.config.max_retries {
            return Err(self.give_up());
        }
        if self.attempt > 0 {
            let pause = router.backoff(self.attempt);
            tokio::time::sleep(pause).await;
            self.backed_off += pause;
        }
        self.attempt += 1;
        match router
            .lease(self.model, self.candidates, &self.tried_channels, &self.tried_keys)
            .await
        {
            Ok((lease, candidate)) => {
                self.started = Instant::now();
                if let Some(failed) = self.last_failed.take() {
                    router.metrics.retry(&failed.name);
                }
                Ok((lease, candidate.model.clone()))
            }
            Err(e) => Err(self.last_error.take().unwrap_or(e)),
        }
    }

    /// The current attempt: 1 for the first.
    pub fn number(&self) -> u32 {
        self.attempt
    }

    /// The backoff slept before attempts since the last call: time spent on an upstream's
    /// failure, not diglot's own work.
    pub fn take_backoff(&mut self) -> Duration {
        std::mem::take(&mut self.backed_off)
    }

    /// How long the current attempt has taken so far.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn give_up(&mut self) -> Error {
        self.last_error
            .take()
            .unwrap_or_else(|| Error::internal("no attempt was made"))
    }

    /// The attempt on `lease` answered.
    pub fn succeeded(&self, lease: &Lease) {
        let channel = &lease.channel;
        for change in channel.health.answered(
            &lease.model,
            self.started.elapsed(),
            lease.probe.as_ref(),
            &self.router.config,
        ) {
            self.router.tell(channel, change);
        }
        if let Some(failed) = self.first_failed.as_ref().filter(|f| !Arc::ptr_eq(f, channel)) {
            self.router.metrics.failover(&failed.name);
        }
        if self.attempt > 1 {
            info!(model = self.model, channel = %channel.name, key = lease.key, attempt = self.attempt, "answered after failover");
        }
    }

    /// The attempt on `lease` failed with `error`: `Err` hands it back when it is the
    /// answer (the request was at fault); `Ok` when another attempt may follow.
    pub fn failed(&mut self, lease: Lease, error: Error) -> Result<(), Error> {
        let channel = &lease.channel;
        let index = self
            .router
            .channels
            .iter()
            .position(|c| Arc::ptr_eq(c, channel))
            .expect("a lease is on one of the router's channels");
        let failure = classify(&error);
        let took = self.started.elapsed();
        self.router.metrics.upstream_error(&channel.name, error_kind(&error));
        if !matches!(failure, Failure::Final) {
            self.first_failed.get_or_insert_with(|| channel.clone());
            self.last_failed = Some(channel.clone());
        }
        warn!(
            model = self.model,
            channel = %channel.name,
            key = lease.key,
            attempt = self.attempt,
            status = error.status(),
            url = lease.backend().base(),
            error = %error.message,
            took_ms = took.as_millis() as u64,
            next = ?failure,
            "upstream attempt failed"
        );
        let config = &self.router.config;
        match failure {
            Failure::Final => {
                // The upstream did its job: the request was at fault.
                for change in channel
                    .health
                    .answered(&lease.model, took, lease.probe.as_ref(), config)
                {
                    self.router.tell(channel, change);
                }
                return Err(error);
            }
            Failure::BadKey => {
                self.router.bench(channel, lease.key, config.bad_key());
                self.tried_keys.push((index, lease.key));
            }
            Failure::Throttled => {
                if let Some(after) = error.retry_after {
                    self.router.bench(channel, lease.key, after);
                }
                self.tried_keys.push((index, lease.key));
            }
            Failure::Failed(scope) => {
                for change in channel
                    .health
                    .failed(&lease.model, &error, scope, lease.probe.as_ref(), config)
                {
                    self.router.tell(channel, change);
                }
                self.tried_channels.push(index);
            }
        }
        self.last_error = Some(error);
        Ok(())
    }
}

/// What a failed attempt means for the next one.
#[derive(Debug, PartialEq)]
enum Failure {
    /// The client's request is at fault, or the model is missing: answer now.
    Final,
    /// The key was refused (401/403): leave it out for a while, try another.
    BadKey,
    /// Rate-limited (429): leave that key out (until `Retry-After`), try another.
    Throttled,
    /// The upstream failed: try another channel. `Scope::Channel` for the transport
    /// (connect error, reset, timeout before headers), `Scope::Model` for a 5xx.
    Failed(Scope),
}

/// How an attempt failed, for `diglot_upstream_errors_total{kind}`.
pub fn error_kind(error: &Error) -> &'static str {
    match error.kind {
        ErrorKind::Timeout => "timeout",
        ErrorKind::UpstreamUnavailable => "connect",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::UpstreamError { status: 401 | 403 } => "unauthorized",
        ErrorKind::UpstreamError { status } if status >= 500 => "status_5xx",
        _ => "rejected",
    }
}

/// A failure before the first event. What the upstream refused as the request's fault
/// (400, 404, 413, 422: their own kinds), and every error of diglot's own (such as an
/// image the client gave that cannot be fetched), is `Final` and counts nowhere. Other
/// 4xx answers (405, 415...) say the upstream is not what the channel expects.
fn classify(error: &Error) -> Failure {
    match error.kind {
        ErrorKind::UpstreamError { status: 401 | 403 } => Failure::BadKey,
        ErrorKind::RateLimited => Failure::Throttled,
        ErrorKind::UpstreamUnavailable | ErrorKind::Timeout => Failure::Failed(Scope::Channel),
        ErrorKind::UpstreamError { status: 500.. } => Failure::Failed(Scope::Model),
        ErrorKind::UpstreamError { .. } => Failure::Failed(Scope::Channel),
        _ => Failure::Final,
    }
}

/// Where a failure after the first event counts: a broken connection is the channel's;
/// a stall, an error event or a broken answer is the model's (the upstream was
/// answering); `None` for errors that are not the upstream's.
pub fn mid_stream_scope(error: &Error) -> Option<Scope> {
    match error.kind {
        ErrorKind::UpstreamUnavailable => Some(Scope::Channel),
        ErrorKind::Timeout | ErrorKind::UpstreamError { .. } => Some(Scope::Model),
        _ => None,
    }
}

impl Router {
    pub fn new(
        channels: Vec<Arc<Channel>>,
        config: RoutingConfig,
        metrics: Arc<Metrics>,
        fleet: Option<Arc<Fleet>>,
    ) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            channels,
            config,
            rng: Mutex::new(rng),
            metrics,
            fleet,
        }
    }

    /// The attempts of one request at `model`, over `candidates`.
    pub fn attempts<'a>(&'a self, model: &'a str, candidates: &'a [Candidate]) -> Attempts<'a> {
        Attempts {
            router: self,
            model,
            candidates,
            tried_channels: Vec::new(),
            tried_keys: Vec::new(),
            last_error: None,
            first_failed: None,
            last_failed: None,
            backed_off: Duration::ZERO,
            attempt: 0,
            started: Instant::now(),
        }
    }

    /// Backoff before attempt `n` (n ≥ 1): min(base × 2^(n-1), max), ±20 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.backoff_base_ms as f64 * 2f64.powi(attempt as i32 - 1);
        let capped = base.min(self.config.backoff_max_ms as f64);
        let jitter = self.rng.lock().expect("rng lock").random_range(0.8..=1.2);
        Duration::from_secs_f64(capped * jitter / 1000.0)
    }

    /// A lease on the best candidate that has a free slot: the highest priority tier
    /// with a usable channel, weighted random inside it. When every usable channel is
    /// full, waits in the first choice's queue.
    async fn lease<'c>(
        &self,
        model: &str,
        candidates: &'c [Candidate],
        tried_channels: &[usize],
        tried_keys: &[(usize, usize)],
    ) -> Result<(Lease, &'c Candidate), Error> {
        let now = Instant::now();
        // With one channel to go to, a model's circuit refuses nothing.
        let alone = candidates.iter().all(|c| c.channel == candidates[0].channel);
        let mut open: Vec<(&Candidate, Admission)> = candidates
            .iter()
            .filter(|c| !tried_channels.contains(&c.channel))
            .filter(|c| self.channels[c.channel].has_key(tried_keys, c.channel))
            .map(|c| (c, self.channels[c.channel].health.admission(&c.model, alone, now)))
            .filter(|(_, admission)| *admission != Admission::No)
            .collect();
        let mut full: Vec<&Candidate> = Vec::new();
        while !open.is_empty() {
            let top = open
                .iter()
                .map(|(c, _)| self.channels[c.channel].priority)
                .max()
                .expect("not empty");
            let tier: Vec<usize> = (0..open.len())
                .filter(|&i| self.channels[open[i].0.channel].priority == top)
                .collect();
            let picked = tier[self.pick(
                &tier
                    .iter()
                    .map(|&i| self.channels[open[i].0.channel].weight)
                    .collect::<Vec<_>>(),
            )];
            let (candidate, admission) = open.swap_remove(picked);
            let channel = &self.channels[candidate.channel];
            let probe = match admission {
                Admission::Probe(probe) => Some(probe),
                _ => None,
            };
            if let Some(probe) = &probe
                && !channel.health.claim_probe(probe)
            {
                continue;
            }
            match channel.try_lease(tried_keys, candidate.channel, &candidate.model, probe.clone()) {
                Ok(mut lease) => match self.fleet_slot(&mut lease).await? {
                    true => return Ok((lease, candidate)),
                    // Full across the fleet (dropping the lease gives its probe back).
                    false => full.push(candidate),
                },
                Err(no_slot) => {
                    if let Some(probe) = &probe {
                        channel.health.probe_abandoned(probe);
                    }
                    if matches!(no_slot, NoSlot::Full) {
                        full.push(candidate);
                    }
                }
            }
        }
        let Some(first) = full.first() else {
            return Err(self.unavailable(model, candidates, now));
        };
        let channel = &self.channels[first.channel];
        let busy = || Error {
            retry_after: Some(Duration::from_secs(1)),
            ..Error::new(
                ErrorKind::RateLimited,
                format!("every upstream serving model '{model}' is at its concurrency limit; try again shortly"),
            )
        };
        let timeout = self.config.queue_timeout();
        if timeout.is_zero() || channel.waiting.fetch_add(1, Ordering::SeqCst) >= self.config.max_queue {
            if !timeout.is_zero() {
                channel.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            return Err(busy());
        }
        let deadline = Instant::now() + timeout;
        let mut lease = channel
            .wait_lease(tried_keys, first.channel, &first.model, timeout)
            .await;
        let mut fleet_said = Ok(());
        while let Some(held) = &mut lease {
            match self.fleet_slot(held).await {
                Ok(true) => break,
                Ok(false) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(false) => lease = None,
                Err(error) => {
                    fleet_said = Err(error);
                    lease = None;
                }
            }
        }
        channel.waiting.fetch_sub(1, Ordering::SeqCst);
        fleet_said?;
        lease.map(|lease| (lease, *first)).ok_or_else(busy)
    }

    /// Takes the lease's channel slot among the fleet's, when replicas share
    /// `max_concurrency`: false when the fleet has none free. While Redis is down, this
    /// process keeps to its share (`[redis] on_error = "local"`) or refuses (`"reject"`).
    async fn fleet_slot(&self, lease: &mut Lease) -> Result<bool, Error> {
        let max = lease.channel.config.max_concurrency;
        let Some(fleet) = self.fleet.as_ref().filter(|_| max > 0 && lease.fleet_slot.is_none()) else {
            return Ok(true);
        };
        match fleet.take_slot(&lease.channel.name, max).await {
            Ok(slot) => {
                let taken = slot.is_some();
                lease.fleet_slot = slot;
                Ok(taken)
            }
            Err(Down) => {
                fleet.fell_back();
                match fleet.on_error {
                    RedisFallback::Reject => Err(Error {
                        retry_after: Some(Duration::from_secs(1)),
                        ..Error::new(
                            ErrorKind::Unavailable,
                            "the gateway's shared concurrency slots (Redis) cannot be reached; try again shortly",
                        )
                    }),
                    // This lease counts in `in_flight` already.
                    RedisFallback::Local => {
                        let share = (max / fleet.replicas_hint as usize).max(1);
                        Ok(lease.channel.in_flight() <= share)
                    }
                }
            }
        }
    }

    /// Logs a change of a channel's health and tells the other replicas about circuits.
    fn tell(&self, channel: &Channel, change: Change) {
        change.log(&channel.name);
        let Some(fleet) = &self.fleet else { return };
        let what = match change {
            Change::CircuitOpened { model, cooldown, .. } => What::Opened {
                error: channel.health.last_error(model.as_deref().unwrap_or_default()),
                model,
                for_ms: cooldown.as_millis() as u64,
            },
            Change::EveryModelFailing { cooldown, .. } => What::Opened {
                model: None,
                for_ms: cooldown.as_millis() as u64,
                error: channel.health.last_error(""),
            },
            Change::Recovered { model } => What::Closed { model },
            Change::Down(_) | Change::Up => return,
        };
        fleet.publish(&channel.name, what);
    }

    /// Leaves a channel's key out for `how_long`, on every replica.
    fn bench(&self, channel: &Channel, key: usize, how_long: Duration) {
        channel.bench_key(key, Instant::now() + how_long);
        if let Some(fleet) = &self.fleet {
            let what = What::Benched {
                key: channel.key_fingerprint(key),
                for_ms: how_long.as_millis() as u64,
            };
            fleet.publish(&channel.name, what);
        }
    }

    /// Why nobody can take the request: each channel's last error, and when the first
    /// circuit lets a probe through.
    fn unavailable(&self, model: &str, candidates: &[Candidate], now: Instant) -> Error {
        let reasons: Vec<String> = candidates
            .iter()
            .map(|c| {
                let channel = &self.channels[c.channel];
                match channel.health.last_error(&c.model) {
                    Some(error) => format!("{}: {error}", channel.name),
                    None => format!("{}: out of service", channel.name),
                }
            })
            .collect();
        let retry_after = candidates
            .iter()
            .filter_map(|c| self.channels[c.channel].health.reopens_in(&c.model, now))
            .min();
        Error {
            retry_after: retry_after.or(Some(Duration::from_secs(1))),
            ..Error::new(
                ErrorKind::Unavailable,
                format!(
                    "no healthy upstream can serve model '{model}' now ({})",
                    reasons.join("; ")
                ),
            )
        }
    }

    /// An index into `weights`, chosen with probability proportional to its weight. A
    /// weight of 0 still gets a trickle (1 % of the tier's total), so its health stays
    /// known; when all are 0 the choice is even.
    fn pick(&self, weights: &[u32]) -> usize {
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let trickle = if total > 0.0 { total / 100.0 } else { 1.0 };
        let effective: Vec<f64> = weights
            .iter()
            .map(|&w| if w == 0 { trickle } else { w as f64 })
            .collect();
        let sum: f64 = effective.iter().sum();
        let mut point = self.rng.lock().expect("rng lock").random_range(0.0..sum);
        for (i, w) in effective.iter().enumerate() {
            if point < *w {
                return i;
            }
            point -= w;
        }
        effective.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_they_mean_for_a_retry() {
        let upstream = |status| classify(&Error::upstream(status, "x"));
        assert_eq!(upstream(401), Failure::BadKey);
        assert_eq!(upstream(403), Failure::BadKey);
        assert_eq!(upstream(500), Failure::Failed(Scope::Model));
        assert_eq!(upstream(504), Failure::Failed(Scope::Model));
        assert_eq!(
            upstream(405),
            Failure::Failed(Scope::Channel),
            "not what the channel expects"
        );
        assert_eq!(classify(&Error::new(ErrorKind::RateLimited, "x")), Failure::Throttled);
        assert_eq!(
            classify(&Error::new(ErrorKind::Timeout, "x")),
            Failure::Failed(Scope::Channel)
        );
        assert_eq!(
            classify(&Error::new(ErrorKind::UpstreamUnavailable, "x")),
            Failure::Failed(Scope::Channel)
        );
        assert_eq!(classify(&Error::bad_request("x")), Failure::Final);
        assert_eq!(classify(&Error::model_not_found("m")), Failure::Final);
    }

    #[test]
    fn weighted_choice_follows_weights_and_zero_gets_a_trickle() {
        let router = Router::new(
            Vec::new(),
            RoutingConfig {
                seed: Some(7),
                ..Default::default()
            },
            Default::default(),
            None,
        );
        let mut counts = [0u32; 3];
        for _ in 0..20_000 {
            counts[router.pick(&[1, 3, 0])] += 1;
        }
        // Expected shares: 1/4.04, 3/4.04, 0.04/4.04.
        let share = |i: usize| counts[i] as f64 / 20_000.0;
        assert!((share(0) - 0.2475).abs() < 0.015, "{counts:?}");
        assert!((share(1) - 0.7426).abs() < 0.015, "{counts:?}");
        assert!(share(2) > 0.003 && share(2) < 0.02, "{counts:?}");
    }
}
