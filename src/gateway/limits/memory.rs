//! The limiter of one process: windows, quotas and concurrency slots in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Limiter, Reservation};
use crate::config::LimitsConfig;
use crate::gateway::auth::Caller;
use crate::ir::{Error, ErrorKind};
use crate::telemetry::Metrics;

const WINDOW: Duration = Duration::from_secs(60);

/// Counts kept in this process: limits hold per replica, and restart from the store's
/// usage records (quotas) or from zero (windows).
pub struct MemoryLimiter(Arc<Counters>);

struct Counters {
    metrics: Arc<Metrics>,
    windows: Mutex<HashMap<String, Window>>,
    quotas: Mutex<HashMap<String, Quota>>,
    /// Per token digest: its `max_concurrent` and the slots for it (new ones when the
    /// token's limit changes, in the store or by a reload).
    concurrency: Mutex<HashMap<String, (u32, Arc<Semaphore>)>>,
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

/// One limit that applies to a request.
struct Rule {
    key: String,
    /// `global`, `ip` or `token`, for the metrics.
    scope: &'static str,
    what: &'static str,
    rpm: u64,
    tpm: u64,
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

/// The first instant of the current month (UTC), in unix milliseconds.
pub fn month_start_ms() -> i64 {
    let now = Utc::now();
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis())
}

impl MemoryLimiter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(Counters {
            metrics,
            windows: Mutex::new(HashMap::new()),
            quotas: Mutex::new(HashMap::new()),
            concurrency: Mutex::new(HashMap::new()),
            used_before: Mutex::new(None),
        }))
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

    /// The limits that apply to `caller` (none allocated when none are set).
    fn rules(config: &LimitsConfig, caller: &Caller) -> Vec<Rule> {
        let mut rules = Vec::new();
        if config.rpm > 0 || config.tpm > 0 {
            rules.push(Rule {
                key: "global".into(),
                scope: "global",
                what: "the gateway",
                rpm: config.rpm,
                tpm: config.tpm,
            });
        }
        if config.ip_rpm > 0 || config.ip_tpm > 0 {
            rules.push(Rule {
                key: format!("ip:{}", caller.ip),
                scope: "ip",
                what: "your address",
                rpm: config.ip_rpm,
                tpm: config.ip_tpm,
            });
        }
        if let Some(token) = &caller.token
            && (token.rpm.is_some() || token.tpm.is_some())
        {
            rules.push(Rule {
                key: format!("token:{}", token.digest),
                scope: "token",
                what: "your API token",
                rpm: token.rpm.unwrap_or(0),
                tpm: token.tpm.unwrap_or(0),
            });
        }
        rules
    }

    fn left(&self, caller: &Caller) -> Option<u64> {
        let token = caller.token.as_ref()?;
        let quota = token.monthly_quota?;
        let mut quotas = self.quotas.lock().expect("limits lock");
        let entry = self.quota_entry(&mut quotas, &token.digest);
        Some(quota.saturating_sub(entry.used + entry.reserved))
    }

    fn quota_entry<'a>(&self, quotas: &'a mut HashMap<String, Quota>, digest: &str) -> &'a mut Quota {
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

    fn reserve(self: &Arc<Self>, config: &LimitsConfig, caller: &Caller, estimate: u64) -> Result<Ticket, Error> {
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
                    limited(
                        format!("your API token allows {max} requests at a time; wait for one to finish"),
                        Duration::from_secs(1),
                        Vec::new(),
                    )
                })?)
            }
            None => None,
        };
        let rules = Self::rules(config, caller);
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("limits lock");
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
            if rule.rpm > 0 && window.requests + 1 > rule.rpm {
                self.refused(rule.scope);
                return Err(limited(
                    format!("rate limit reached: {} requests per minute for {}", rule.rpm, rule.what),
                    reset,
                    rate_headers(rule, window, reset),
                ));
            }
            if rule.tpm > 0 && window.tokens + estimate > rule.tpm {
                self.refused(rule.scope);
                return Err(limited(
                    format!(
                        "rate limit reached: {} tokens per minute for {} (this request may use {estimate})",
                        rule.tpm, rule.what
                    ),
                    reset,
                    rate_headers(rule, window, reset),
                ));
            }
        }
        // The quota is checked and reserved under the windows' lock, so a request that
        // fails it leaves no trace in them.
        let mut quota_key = None;
        if let Some(token) = &caller.token
            && let Some(quota) = token.monthly_quota
        {
            let mut quotas = self.quotas.lock().expect("limits lock");
            let entry = self.quota_entry(&mut quotas, &token.digest);
            let left = quota.saturating_sub(entry.used + entry.reserved);
            if estimate > left {
                self.refused("quota");
                return Err(Error {
                    code: Some("insufficient_quota"),
                    ..limited(
                        quota_message(&token.name, quota, left, estimate),
                        until_next_month(),
                        Vec::new(),
                    )
                });
            }
            entry.reserved += estimate;
            quota_key = Some(token.digest.clone());
        }
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
    async fn admit(&self, config: &LimitsConfig, caller: &Caller, estimate: u64) -> Result<Reservation, Error> {
        let ticket = self.0.reserve(config, caller, estimate)?;
        Ok(Reservation::new(Box::new(ticket)))
    }

    async fn quota_left(&self, caller: &Caller) -> Option<u64> {
        self.0.left(caller)
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

fn rate_headers(rule: &Rule, window: &Window, reset: Duration) -> Vec<(String, String)> {
    let reset = format!("{}s", reset.as_secs().max(1));
    let mut headers = Vec::new();
    if rule.rpm > 0 {
        headers.push(("x-ratelimit-limit-requests".into(), rule.rpm.to_string()));
        headers.push((
            "x-ratelimit-remaining-requests".into(),
            rule.rpm.saturating_sub(window.requests).to_string(),
        ));
        headers.push(("x-ratelimit-reset-requests".into(), reset.clone()));
    }
    if rule.tpm > 0 {
        headers.push(("x-ratelimit-limit-tokens".into(), rule.tpm.to_string()));
        headers.push((
            "x-ratelimit-remaining-tokens".into(),
            rule.tpm.saturating_sub(window.tokens).to_string(),
        ));
        headers.push(("x-ratelimit-reset-tokens".into(), reset));
    }
    headers
}

fn limited(message: String, retry_after: Duration, headers: Vec<(String, String)>) -> Error {
    Error {
        retry_after: Some(retry_after),
        headers,
        ..Error::new(ErrorKind::RateLimited, message)
    }
}

/// Why a request does not fit the token's monthly quota, and what to do about it.
fn quota_message(token: &str, quota: u64, left: u64, estimate: u64) -> String {
    let renews = "the quota renews on the 1st of next month (UTC)";
    if left == 0 {
        format!("the API token '{token}' has used all of its monthly quota of {quota} tokens; {renews}")
    } else {
        format!(
            "the API token '{token}' has {left} of its monthly {quota} tokens left, but this request may use {estimate} (its prompt plus max_tokens): ask for fewer tokens, or wait until {renews}"
        )
    }
}

fn until_next_month() -> Duration {
    let now = Utc::now();
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map_or(Duration::from_secs(3600), |next| {
            (next - now).to_std().unwrap_or(Duration::from_secs(3600))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_message_says_what_is_left_and_what_to_do() {
        let partly = quota_message("t", 600, 540, 900);
        assert_eq!(
            partly,
            "the API token 't' has 540 of its monthly 600 tokens left, but this request may use 900 (its prompt plus max_tokens): ask for fewer tokens, or wait until the quota renews on the 1st of next month (UTC)"
        );
        let spent = quota_message("t", 600, 0, 10);
        assert_eq!(
            spent,
            "the API token 't' has used all of its monthly quota of 600 tokens; the quota renews on the 1st of next month (UTC)"
        );
    }
    use crate::config::{Role, TokenRecord};
    use crate::protocol::Frontend;

    fn caller(max_concurrent: u32) -> Caller {
        let token = TokenRecord {
            max_concurrent: Some(max_concurrent),
            ..TokenRecord::for_secret("t", "dg-limits-test-token-000000000000", Role::User)
        };
        Caller {
            token: Some(Arc::new(token)),
            ..Caller::anonymous(Frontend::OpenAi)
        }
    }

    #[tokio::test]
    async fn a_tokens_new_concurrency_limit_applies_at_once() {
        let limiter = MemoryLimiter::new(Arc::new(Metrics::new(false)));
        let config = LimitsConfig::default();
        let first = limiter.admit(&config, &caller(1), 1).await.unwrap();
        let Err(refused) = limiter.admit(&config, &caller(1), 1).await else {
            panic!("a second request at a limit of one gets in");
        };
        assert_eq!(refused.kind, ErrorKind::RateLimited, "{refused:?}");
        // The limit is raised (by a reload or in the store): the next request gets in,
        // while the first still holds its slot.
        let _second = limiter.admit(&config, &caller(2), 1).await.unwrap();
        drop(first);
    }
}
