//! The limiter of one process: windows, quotas and concurrency slots in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::rules::{Rule, WINDOW, month_start_ms, over_quota, too_many_at_once};
use super::{Ask, Limiter, Reservation};
use crate::config::LimitsConfig;
use crate::gateway::auth::Caller;
use crate::ir::Error;
use crate::telemetry::Metrics;

/// Counts kept in this process: limits hold per replica, and restart from the store's
/// usage records (quotas) or from zero (windows).
pub struct MemoryLimiter(Arc<Counters>);

struct Counters {
    metrics: Arc<Metrics>,
    windows: Mutex<foldhash::HashMap<String, Window>>,
    quotas: Mutex<foldhash::HashMap<String, Quota>>,
    /// Per token digest: its `max_concurrent` and the slots for it (new ones when the
    /// token's limit changes, in the store or by a reload).
    concurrency: Mutex<foldhash::HashMap<String, (u32, Arc<Semaphore>)>>,
    /// Tokens each token digest used this month before the process started.
    used_before: Mutex<Option<(i64, HashMap<String, u64>)>>,
}

/// A fixed one-minute window, starting at its first use.
struct Window {
    started: Instant,
    requests: u64,
    tokens: u64,
}

struct Quota {
    /// Start of the month (unix ms) the counts are for.
    month: i64,
    used: u64,
    reserved: u64,
}

/// What a request holds until it is settled: its reservations and its concurrency slot.
/// Dropping it unsettled gives the reserved tokens back.
struct Ticket {
    limits: Arc<Counters>,
    windows: Vec<String>,
    quota: Option<String>,
    estimate: u64,
    settled: bool,
    _slot: Option<OwnedSemaphorePermit>,
}

impl MemoryLimiter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(Counters {
            metrics,
            windows: Mutex::default(),
            quotas: Mutex::default(),
            concurrency: Mutex::default(),
            used_before: Mutex::new(None),
        }))
    }

    /// Counts quotas again from `used` (each token's use this month), forgetting what
    /// this process counted itself: a shared limiter's local share starts from it.
    pub fn restart_quotas(&self, month: i64, used: HashMap<String, u64>) {
        self.set_used_before(month, used);
        self.0.quotas.lock().expect("limits lock").clear();
    }

    /// What the store says each token used this month (read once per month).
    pub fn set_used_before(&self, month: i64, used: HashMap<String, u64>) {
        *self.0.used_before.lock().expect("limits lock") = Some((month, used));
    }
}

impl Counters {
    fn refused(&self, scope: &'static str) {
        self.metrics.rate_limited(scope);
    }

    fn quota_entry<'a>(&self, quotas: &'a mut foldhash::HashMap<String, Quota>, digest: &str) -> &'a mut Quota {
        let month = month_start_ms();
        let before = || {
            let used = self.used_before.lock().expect("limits lock");
            match &*used {
                Some((m, map)) if *m == month => map.get(digest).copied().unwrap_or(0),
                _ => 0,
            }
        };
        let entry = quotas.entry(digest.to_owned()).or_insert_with(|| Quota {
            month,
            used: before(),
            reserved: 0,
        });
        if entry.month != month {
            *entry = Quota {
                month,
                used: 0,
                reserved: 0,
            };
        }
        entry
    }

    fn reserve(self: &Arc<Self>, config: &LimitsConfig, caller: &Caller, ask: Ask) -> Result<Ticket, Error> {
        let slot = match caller.token.as_ref().and_then(|t| Some((t, t.max_concurrent?))) {
            Some((token, max)) => {
                let semaphore = {
                    let mut slots = self.concurrency.lock().expect("limits lock");
                    let fresh = || (max, Arc::new(Semaphore::new(max as usize)));
                    let entry = slots.entry(token.digest.clone()).or_insert_with(fresh);
                    if entry.0 != max {
                        *entry = fresh();
                    }
                    entry.1.clone()
                };
                Some(semaphore.try_acquire_owned().map_err(|_| {
                    self.refused("concurrency");
                    too_many_at_once(max)
                })?)
            }
            None => None,
        };
        let rules = Rule::all(config, caller);
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("limits lock");
        // The quota first, as it may cut the estimate down; checked and reserved under
        // the windows' lock, so a request that fails either leaves no trace.
        let mut estimate = ask.estimate;
        let quota = caller.token.as_ref().and_then(|t| Some((t, t.monthly_quota?)));
        if let Some((token, quota)) = quota {
            let mut quotas = self.quotas.lock().expect("limits lock");
            let entry = self.quota_entry(&mut quotas, &token.digest);
            let left = quota.saturating_sub(entry.used + entry.reserved);
            estimate = ask.fits(left).ok_or_else(|| {
                self.refused("quota");
                over_quota(&token.name, quota, left, ask.estimate)
            })?;
        }
        for rule in &rules {
            let window = windows.entry(rule.key.clone()).or_insert(Window {
                started: now,
                requests: 0,
                tokens: 0,
            });
            if now.duration_since(window.started) >= WINDOW {
                *window = Window {
                    started: now,
                    requests: 0,
                    tokens: 0,
                };
            }
            let reset = WINDOW.saturating_sub(now.duration_since(window.started));
            if let Some(refusal) = rule.refusal(window.requests, window.tokens, estimate, reset) {
                self.refused(rule.scope);
                return Err(refusal);
            }
        }
        let quota_key = quota.map(|(token, _)| {
            let mut quotas = self.quotas.lock().expect("limits lock");
            self.quota_entry(&mut quotas, &token.digest).reserved += estimate;
            token.digest.clone()
        });
        for rule in &rules {
            let window = windows.get_mut(&rule.key).expect("inserted above");
            window.requests += 1;
            window.tokens += estimate;
        }
        drop(windows);
        Ok(Ticket {
            limits: self.clone(),
            windows: rules.into_iter().map(|r| r.key).collect(),
            quota: quota_key,
            estimate,
            settled: false,
            _slot: slot,
        })
    }
}

#[async_trait::async_trait]
impl Limiter for MemoryLimiter {
    async fn admit(&self, config: &LimitsConfig, caller: &Caller, ask: Ask) -> Result<Reservation, Error> {
        let ticket = self.0.reserve(config, caller, ask)?;
        let admitted = ticket.estimate;
        Ok(Reservation::new(Box::new(ticket), ask, admitted))
    }
}

#[async_trait::async_trait]
impl super::Held for Ticket {
    async fn settle(mut self: Box<Self>, used: u64) {
        self.apply(used);
    }
}

impl Ticket {
    fn apply(&mut self, used: u64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        {
            let mut windows = self.limits.windows.lock().expect("limits lock");
            for key in &self.windows {
                if let Some(window) = windows.get_mut(key) {
                    window.tokens = (window.tokens + used).saturating_sub(self.estimate);
                }
            }
        }
        if let Some(digest) = &self.quota {
            let mut quotas = self.limits.quotas.lock().expect("limits lock");
            if let Some(entry) = quotas.get_mut(digest) {
                entry.reserved = entry.reserved.saturating_sub(self.estimate);
                entry.used += used;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.apply(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{Role, TokenRecord};
    use crate::ir::ErrorKind;
    use crate::protocol::Frontend;

    fn caller(max_concurrent: u32) -> Caller {
        let token = TokenRecord {
            max_concurrent: Some(max_concurrent),
            ..TokenRecord::for_secret("t", "dg-limits-test-token-000000000000", Role::User)
        };
        let mut caller = Caller::anonymous(Frontend::OpenAi);
        caller.token = Some(Arc::new(token));
        caller
    }

    #[tokio::test]
    async fn a_tokens_new_concurrency_limit_applies_at_once() {
        let limiter = MemoryLimiter::new(Arc::new(Metrics::new(false)));
        let config = LimitsConfig::default();
        let first = limiter.admit(&config, &caller(1), Ask::exactly(1)).await.unwrap();
        let Err(refused) = limiter.admit(&config, &caller(1), Ask::exactly(1)).await else {
            panic!("a second request at a limit of one gets in");
        };
        assert_eq!(refused.kind, ErrorKind::RateLimited, "{refused:?}");
        // The limit is raised (by a reload or in the store): the next request gets in,
        // while the first still holds its slot.
        let _second = limiter.admit(&config, &caller(2), Ask::exactly(1)).await.unwrap();
        drop(first);
    }
}
