//! `[redis]`: the shared state of several replicas (limits, quotas, concurrency slots,
//! circuit state), so every limit holds for the fleet rather than per process.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS (the server's
    /// certificate verified); empty: each process keeps its own counts in memory.
    pub url: String,
    /// With `rediss://`: a PEM file of the certificate authorities to trust (a private
    /// CA, a provider's bundle); empty: the system's.
    pub tls_ca_file: String,
    /// What a replica does while Redis cannot be reached.
    pub on_error: RedisFallback,
    /// How many replicas share the limits: while Redis is down, each one enforces its
    /// share (every limit divided by this), so the fleet stays near its total.
    pub replicas_hint: u32,
    /// The longest a request waits on Redis before the fallback applies.
    pub timeout_ms: u64,
    /// Prefix of every key and channel diglot uses, so fleets can share one Redis.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            tls_ca_file: String::new(),
            on_error: RedisFallback::Local,
            replicas_hint: 1,
            timeout_ms: 250,
            prefix: "diglot".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFallback {
    /// Limits of this process alone (divided by `replicas_hint`); logged and metered.
    #[default]
    Local,
    /// Refuse requests with 503 until Redis answers again.
    Reject,
}

impl RedisConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.max(1))
    }

    /// Checks the keys, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled() && !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err("redis.url must start with redis:// or rediss://".into());
        }
        if !self.tls_ca_file.is_empty() && !self.url.starts_with("rediss://") {
            return Err("redis.tls_ca_file is for TLS: the url must start with rediss://".into());
        }
        if self.replicas_hint == 0 {
            return Err("redis.replicas_hint must be at least 1".into());
        }
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err("redis.prefix must be a word without spaces".into());
        }
        Ok(())
    }

    /// For `check-config`: the URL's password hidden.
    pub fn redacted(&self) -> Self {
        Self {
            url: super::redact_password(&self.url),
            ..self.clone()
        }
    }
}
