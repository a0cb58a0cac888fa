//! `[routing]`: how requests spread over channels, fail over and are retried, and when
//! a channel counts as unhealthy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How requests are spread over channels and retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Further attempts after the first, each on a channel or key not yet tried.
    pub max_retries: u32,
    /// Backoff before attempt n: min(base × 2^(n-1), max), ±20 % jitter; an upstream's
    /// `Retry-After` (up to `backoff_max_ms`) wins.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a request waits for a slot when every channel is at `max_concurrency`
    /// (0: answer 429 at once), and how many may wait per channel.
    pub queue_timeout_secs: f64,
    pub max_queue: usize,
    /// A key that got 401/403 is left out for this long.
    pub bad_key_secs: f64,
    /// Passive health: a channel with at least `min_requests` outcomes in the last
    /// `window_secs`, `failure_ratio` or more of them failures, is taken out for
    /// `cooldown_secs`, then lets one probe request through.
    pub window_secs: f64,
    pub min_requests: usize,
    pub failure_ratio: f64,
    pub cooldown_secs: f64,
    /// Active health: every channel's model list (`/api/tags` or `/v1/models`, never a
    /// completion) is fetched this often, which also refreshes the catalog; 0 turns it off.
    pub check_interval_secs: f64,
    /// Seeds the weighted choice, for reproducible tests; unset is random.
    pub seed: Option<u64>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            backoff_base_ms: 50,
            backoff_max_ms: 2000,
            queue_timeout_secs: 10.0,
            max_queue: 64,
            bad_key_secs: 300.0,
            window_secs: 60.0,
            min_requests: 5,
            failure_ratio: 0.8,
            cooldown_secs: 30.0,
            check_interval_secs: 30.0,
            seed: None,
        }
    }
}

impl RoutingConfig {
    pub fn queue_timeout(&self) -> Duration {
        secs(self.queue_timeout_secs)
    }
    pub fn bad_key(&self) -> Duration {
        secs(self.bad_key_secs)
    }
    pub fn window(&self) -> Duration {
        secs(self.window_secs)
    }
    pub fn cooldown(&self) -> Duration {
        secs(self.cooldown_secs)
    }
    pub fn check_interval(&self) -> Option<Duration> {
        (self.check_interval_secs > 0.0).then(|| secs(self.check_interval_secs))
    }
}

pub(super) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
