//! The fleet's limiter: windows, quotas and per-token concurrency counted in Redis, each
//! admission one script (`fleet/admit.lua`), each settlement another. While Redis cannot
//! be reached, `[redis] on_error` decides: this process's own share of every limit (an
//! in-memory limiter, limits divided by `replicas_hint`), or 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::memory::MemoryLimiter;
use super::rules::{Rule, month_start_ms, over_quota, too_many_at_once};
use super::{Ask, Held, Limiter, Reservation};
use crate::config::{LimitsConfig, RedisFallback, TokenRecord};
use crate::gateway::auth::Caller;
use crate::gateway::fleet::{ADMIT, Down, Fleet, LEASE, SEED, SETTLE};
use crate::ir::{Error, ErrorKind};
use crate::store::Store;
use crate::telemetry::Metrics;

pub struct RedisLimiter {
    fleet: Arc<Fleet>,
    store: Option<Arc<dyn Store>>,
    metrics: Arc<Metrics>,
    /// For outages: this process's share of the limits.
    local: MemoryLimiter,
    /// Each token's settled quota use as Redis last said, so the local share during an
    /// outage starts from it.
    known_used: Mutex<HashMap<String, u64>>,
    /// The local share is counting (an outage began and Redis has not answered since).
    in_outage: AtomicBool,
}

/// What one admitted request holds in Redis.
struct Ticket {
    fleet: Arc<Fleet>,
    number: u64,
    request: String,
    windows: Vec<String>,
    used_key: String,
    slots_key: String,
    held_key: String,
    quota: bool,
    estimate: u64,
    settled: bool,
}

impl RedisLimiter {
    pub fn new(fleet: Arc<Fleet>, store: Option<Arc<dyn Store>>, metrics: Arc<Metrics>) -> Self {
        Self {
            local: MemoryLimiter::new(metrics.clone()),
            fleet,
            store,
            metrics,
            known_used: Mutex::new(HashMap::new()),
            in_outage: AtomicBool::new(false),
        }
    }

    /// The keys of a token's quota this month: its use, the seeded marker, its
    /// reservations.
    fn quota_keys(&self, digest: &str, month: i64) -> (String, String, String) {
        let month = month.to_string();
        (
            self.fleet.key(&["quota", "used", &month, digest]),
            self.fleet.key(&["quota", "seeded", &month]),
            self.fleet.key(&["quota", "held", &month, digest]),
        )
    }

    /// Rebuilds this month's quota counts in Redis from the store's usage records;
    /// `Ok(false)` when Redis went away meanwhile.
    async fn seed(&self, month: i64) -> Result<bool, Error> {
        let used = match &self.store {
            Some(store) => store
                .tokens_used_since(month)
                .await
                .map_err(|e| Error::internal(format!("cannot read this month's usage to rebuild the quotas: {e}")))?,
            None => Vec::new(),
        };
        let mut seed = SEED.key(self.quota_keys("", month).1);
        for (digest, tokens) in &used {
            seed.key(self.quota_keys(digest, month).0).arg(tokens);
        }
        Ok(self.fleet.run::<i64>(&mut seed).await.is_ok())
    }

    fn down(&self) -> Error {
        Error {
            retry_after: Some(Duration::from_secs(1)),
            ..Error::new(
                ErrorKind::Unavailable,
                "the gateway's shared limits (Redis) cannot be reached; try again shortly",
            )
        }
    }

    /// Admits without Redis, as `[redis] on_error` says.
    async fn fallback(&self, config: &LimitsConfig, caller: &Caller, ask: Ask) -> Result<Reservation, Error> {
        self.fleet.fell_back();
        if self.fleet.on_error == RedisFallback::Reject {
            return Err(self.down());
        }
        let share = |limit: u64| match limit {
            0 => 0,
            limit => (limit / u64::from(self.fleet.replicas_hint)).max(1),
        };
        let config = LimitsConfig {
            rpm: share(config.rpm),
            tpm: share(config.tpm),
            ip_rpm: share(config.ip_rpm),
            ip_tpm: share(config.ip_tpm),
            ..config.clone()
        };
        if !self.in_outage.swap(true, Ordering::Relaxed) {
            // The local counts start from what Redis last said.
            let known = self.known_used.lock().expect("limiter lock").clone();
            self.local.restart_quotas(month_start_ms(), known);
        }
        let mut caller = caller.clone();
        if let Some(token) = &caller.token {
            let known = self
                .known_used
                .lock()
                .expect("limiter lock")
                .get(&token.digest)
                .copied();
            caller.token = Some(Arc::new(TokenRecord {
                rpm: token.rpm.map(share),
                tpm: token.tpm.map(share),
                max_concurrent: token.max_concurrent.map(|m| share(m.into()) as u32),
                // What was left when Redis went away, shared out.
                monthly_quota: token.monthly_quota.map(|quota| {
                    let known = known.unwrap_or(0);
                    known + share(quota.saturating_sub(known))
                }),
                ..(**token).clone()
            }));
        }
        self.local.admit(&config, &caller, ask).await
    }

    /// Catches up after an outage: quotas are rebuilt from the store, which has the
    /// usage of requests admitted locally meanwhile.
    async fn after_outage(&self) {
        self.in_outage.store(false, Ordering::Relaxed);
        let seeded = self.quota_keys("", month_start_ms()).1;
        let _ = self.fleet.command::<i64>(redis::cmd("DEL").arg(seeded)).await;
    }
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    async fn admit(&self, config: &LimitsConfig, caller: &Caller, ask: Ask) -> Result<Reservation, Error> {
        let rules = Rule::all(config, caller);
        let token = caller.token.as_deref();
        let quota = token.and_then(|t| t.monthly_quota);
        let max_at_once = token.and_then(|t| t.max_concurrent);
        if rules.is_empty() && quota.is_none() && max_at_once.is_none() {
            return Ok(Reservation::none());
        }
        if self.fleet.take_recovered() {
            self.after_outage().await;
        }
        let month = month_start_ms();
        let digest = token.map_or("", |t| t.digest.as_str());
        let (used_key, seeded_key, held_key) = self.quota_keys(digest, month);
        let slots_key = self.fleet.key(&["slots", "token", digest]);
        let windows: Vec<String> = rules.iter().map(|r| self.fleet.key(&["window", &r.key])).collect();
        let (number, request) = self.fleet.request();
        for _ in 0..2 {
            let mut admit = ADMIT.prepare_invoke();
            for window in &windows {
                admit.key(window);
            }
            admit.key(&used_key).key(&seeded_key).key(&slots_key).key(&held_key);
            admit
                .arg(windows.len())
                .arg(ask.estimate)
                .arg(ask.at_least.map_or(-1, |least| least as i64))
                .arg(quota.map_or(-1, |q| q as i64))
                .arg(max_at_once.map_or(-1, i64::from))
                .arg(&request)
                .arg(LEASE.as_millis() as u64);
            for rule in &rules {
                admit.arg(rule.rpm).arg(rule.tpm);
            }
            let answer: Vec<i64> = match self.fleet.run(&mut admit).await {
                Ok(answer) => answer,
                Err(Down) => return self.fallback(config, caller, ask).await,
            };
            let at = |i: usize| answer.get(i).copied().unwrap_or(0).max(0) as u64;
            match answer.first() {
                Some(0) => {
                    let estimate = at(2);
                    if quota.is_some() {
                        self.known_used
                            .lock()
                            .expect("limiter lock")
                            .insert(digest.to_owned(), at(1));
                    }
                    let mut leases = Vec::new();
                    if max_at_once.is_some() {
                        leases.push((slots_key.clone(), request.clone()));
                    }
                    if quota.is_some() {
                        leases.push((held_key.clone(), format!("{request}|{estimate}")));
                    }
                    self.fleet.hold(number, leases);
                    return Ok(Reservation::new(
                        Box::new(Ticket {
                            fleet: self.fleet.clone(),
                            number,
                            request,
                            windows,
                            used_key,
                            slots_key,
                            held_key,
                            quota: quota.is_some(),
                            estimate,
                            settled: false,
                        }),
                        ask,
                        estimate,
                    ));
                }
                Some(1) => {
                    self.metrics.rate_limited("concurrency");
                    return Err(too_many_at_once(max_at_once.unwrap_or(0)));
                }
                Some(2) => {
                    let rule = &rules[(at(1) as usize).clamp(1, rules.len()) - 1];
                    self.metrics.rate_limited(rule.scope);
                    let reset = Duration::from_millis(at(4));
                    return Err(rule
                        .refusal(at(2), at(3), ask.estimate, reset)
                        .unwrap_or_else(|| super::rules::limited("rate limit reached".into(), reset, Vec::new())));
                }
                Some(3) => {
                    self.metrics.rate_limited("quota");
                    let name = token.map_or("", |t| t.name.as_str());
                    return Err(over_quota(name, quota.unwrap_or(0), at(1), ask.estimate));
                }
                _ => {
                    if !self.seed(month).await? {
                        return self.fallback(config, caller, ask).await;
                    }
                }
            }
        }
        Err(Error::internal("the quota could not be rebuilt in Redis"))
    }
}

#[async_trait::async_trait]
impl Held for Ticket {
    async fn settle(mut self: Box<Self>, used: u64) {
        self.settled = true;
        self.send(used).await;
    }
}

impl Ticket {
    async fn send(&self, used: u64) {
        self.fleet.release(self.number);
        let mut settle = SETTLE.prepare_invoke();
        for window in &self.windows {
            settle.key(window);
        }
        settle.key(&self.used_key).key(&self.slots_key).key(&self.held_key);
        settle
            .arg(self.windows.len())
            .arg(self.estimate)
            .arg(used)
            .arg(&self.request)
            .arg(u8::from(self.quota));
        // Not settled (Redis down): the reservation and slot expire with their lease.
        let _ = self.fleet.run::<i64>(&mut settle).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Ended without an answer: give everything back.
        let ticket = Ticket {
            fleet: self.fleet.clone(),
            number: self.number,
            request: std::mem::take(&mut self.request),
            windows: std::mem::take(&mut self.windows),
            used_key: std::mem::take(&mut self.used_key),
            slots_key: std::mem::take(&mut self.slots_key),
            held_key: std::mem::take(&mut self.held_key),
            quota: self.quota,
            estimate: self.estimate,
            settled: true,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { ticket.send(0).await });
        }
    }
}
