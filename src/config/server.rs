//! `[server]`: the `Host` names accepted on loopback, the listener's bounds (connections,
//! header and body limits, timeouts) and how long a stopping server drains. Read at start:
//! a reload keeps the running values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Extra names a client may put in `Host` while diglot listens on loopback (the
    /// defense against DNS rebinding lets only this machine's names in otherwise): exact
    /// names or globs (`*.example.lan`), without the port.
    pub allowed_hosts: Vec<String>,
    /// Threads serving requests, each running its own connections from end to end (as
    /// nginx's workers). 0: one per core.
    pub workers: usize,
    /// Most client connections served at once; past it a request gets 503. 0: as many
    /// as the open-file limit allows (two descriptors per proxied request).
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers.
    pub header_timeout_secs: f64,
    /// Largest request head (request line and headers), in bytes; hyper answers 431
    /// past it. At least 8192.
    pub max_header_bytes: usize,
    /// Most headers in one request; hyper answers 431 past it.
    pub max_headers: usize,
    /// A request body must arrive within this many seconds, plus one second for each
    /// `body_min_bytes_per_sec` bytes received (Apache's mod_reqtimeout), or get 408.
    pub body_timeout_secs: f64,
    pub body_min_bytes_per_sec: u64,
    /// A connection with nothing read or written for this long is closed (keep-alive
    /// connections left open, a non-streamed answer longer than this). 0: never.
    pub idle_timeout_secs: f64,
    /// After SIGTERM or SIGINT, how long open requests may finish; streams still open
    /// then end with an error event in their protocol.
    pub drain_secs: f64,
    /// Most messages in one chat request; past it the answer is 400.
    pub max_messages: usize,
    /// Most images in one chat request, over all its messages; past it the answer is 400.
    pub max_images: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            workers: 0,
            max_connections: 0,
            header_timeout_secs: 10.0,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            body_timeout_secs: 30.0,
            body_min_bytes_per_sec: 16 * 1024,
            idle_timeout_secs: 900.0,
            drain_secs: 30.0,
            max_messages: 10_000,
            max_images: 100,
        }
    }
}

impl ServerConfig {
    /// How many threads serve: `workers`, or one per core.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    pub fn header_timeout(&self) -> Duration {
        secs(self.header_timeout_secs)
    }

    pub fn body_timeout(&self) -> Duration {
        secs(self.body_timeout_secs)
    }

    /// `None` when connections may stay idle for ever.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0.0).then(|| secs(self.idle_timeout_secs))
    }

    pub fn drain(&self) -> Duration {
        secs(self.drain_secs)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
        ] {
            if !(value > 0.0 && value <= 86_400.0) {
                return Err(format!("server.{key}: {value} is not between 0 and 86400 seconds"));
            }
        }
        for (key, value) in [
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("drain_secs", self.drain_secs),
        ] {
            if !(0.0..=86_400.0).contains(&value) {
                return Err(format!("server.{key}: {value} is not between 0 and 86400 seconds"));
            }
        }
        if self.workers > 1024 {
            return Err(format!("server.workers: {} is more than 1024 threads", self.workers));
        }
        if self.max_header_bytes < 8192 {
            return Err(format!(
                "server.max_header_bytes: {} is below 8192, the least hyper can read a request head with",
                self.max_header_bytes
            ));
        }
        if self.max_headers == 0 {
            return Err("server.max_headers: a request needs at least one header (Host)".into());
        }
        if self.body_min_bytes_per_sec == 0 {
            return Err("server.body_min_bytes_per_sec: 0 would let a body trickle in for ever".into());
        }
        Ok(())
    }
}

fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}
