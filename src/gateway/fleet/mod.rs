//! Several replicas as one fleet, through Redis: limits, quotas and concurrency slots
//! counted once for all of them (`limits::RedisLimiter`, `slots`), and what one replica
//! learns about an upstream (an open circuit, a benched key) told to the others
//! (`events`). Every check is one script: one atomic round trip.
//!
//! Redis is never waited on past `[redis] timeout_ms`: a failed or slow call marks it
//! down for a second, and callers apply `[redis] on_error` meanwhile, so an outage costs
//! no request more than one timeout.

mod events;
mod slots;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script, ScriptInvocation};

pub use events::{Event, What};
pub use slots::SlotGuard;

use crate::config::{RedisConfig, RedisFallback};
use crate::telemetry::Metrics;

/// How long a slot or a quota reservation lives unless renewed; held ones are renewed
/// every third of it, so one replica's death frees them within this.
pub const LEASE: Duration = Duration::from_secs(30);

/// After a failed call, how long Redis counts as down before it is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

pub(crate) static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("admit.lua")));
pub(crate) static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("settle.lua")));
pub(crate) static SEED: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("seed.lua")));
static SLOT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("slot.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("renew.lua")));

/// Redis could not be asked (down, slow, or refusing): apply `[redis] on_error`.
#[derive(Debug, Clone, Copy)]
pub struct Down;

pub struct Fleet {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    pub on_error: RedisFallback,
    pub replicas_hint: u32,
    /// This process, in request names and events (so it ignores its own).
    pub replica: String,
    metrics: Arc<Metrics>,
    /// Until when Redis counts as down (a call failed); `None`: up.
    down_until: Mutex<Option<Instant>>,
    /// Set when Redis answers again after being down; taken by whoever must catch up.
    recovered: AtomicBool,
    next_request: AtomicU64,
    /// Leases this process holds, by request number: (sorted set, member), renewed.
    held: Mutex<HashMap<u64, Vec<(String, String)>>>,
}

impl Fleet {
    /// Connects lazily (a Redis that is down at start is an outage like any other) and
    /// starts renewing leases.
    pub fn start(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let shown = crate::config::redact_password(&config.url);
        let client = if config.tls_ca_file.is_empty() {
            redis::Client::open(config.url.as_str())
        } else {
            let authorities = std::fs::read(&config.tls_ca_file)
                .map_err(|e| format!("redis.tls_ca_file {}: {e}", config.tls_ca_file))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(authorities),
            };
            redis::Client::build_with_tls(config.url.as_str(), certificates)
        }
        .map_err(|e| format!("redis.url '{shown}': {e}"))?;
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout()))
            .set_response_timeout(Some(config.timeout()))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), settings)
            .map_err(|e| format!("redis.url '{shown}': {e}"))?;
        let replica = hex::encode(rand::random::<[u8; 6]>());
        metrics.redis_up(true);
        let fleet = Arc::new(Self {
            client,
            connection,
            prefix: config.prefix.clone(),
            timeout: config.timeout(),
            on_error: config.on_error,
            replicas_hint: config.replicas_hint.max(1),
            replica,
            metrics,
            down_until: Mutex::new(None),
            recovered: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            held: Mutex::new(HashMap::new()),
        });
        tokio::spawn(renew_leases(Arc::downgrade(&fleet)));
        Ok(fleet)
    }

    /// A key of this fleet: `prefix:part:part...`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// A new request's number, and its name among the fleet's (`replica:number`).
    pub fn request(&self) -> (u64, String) {
        let number = self.next_request.fetch_add(1, Ordering::Relaxed);
        (number, format!("{}:{number}", self.replica))
    }

    /// Whether Redis answered its last call (or has not been asked since it failed).
    pub fn is_up(&self) -> bool {
        self.down_until.lock().expect("fleet lock").is_none()
    }

    /// Whether Redis answers a `PING` now (for `/health/ready`).
    pub async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut connection)).await;
        let up = matches!(answer, Ok(Ok(_)));
        self.note(up, "PING failed");
        up
    }

    /// Runs a script, or says Redis is down (at once while it is known to be).
    pub async fn run<T: FromRedisValue>(&self, script: &mut ScriptInvocation<'_>) -> Result<T, Down> {
        self.call(|mut connection| async move { script.invoke_async(&mut connection).await })
            .await
    }

    /// Runs one command, or says Redis is down.
    pub async fn command<T: FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, Down> {
        self.call(|mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Runs a pipeline (one round trip), or says Redis is down.
    pub async fn command_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Down> {
        self.call(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await
    }

    async fn call<T, F>(&self, call: impl FnOnce(ConnectionManager) -> F) -> Result<T, Down>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if let Some(until) = *self.down_until.lock().expect("fleet lock")
            && Instant::now() < until
        {
            return Err(Down);
        }
        match tokio::time::timeout(self.timeout, call(self.connection.clone())).await {
            Ok(Ok(value)) => {
                self.note(true, "");
                Ok(value)
            }
            Ok(Err(error)) => {
                self.note(false, &error.to_string());
                Err(Down)
            }
            Err(_) => {
                self.note(false, &format!("no answer within {} ms", self.timeout.as_millis()));
                Err(Down)
            }
        }
    }

    /// Records whether a call worked, logging (and metering) each change once.
    fn note(&self, up: bool, error: &str) {
        let mut down_until = self.down_until.lock().expect("fleet lock");
        match (up, down_until.is_some()) {
            (true, true) => {
                *down_until = None;
                self.recovered.store(true, Ordering::Relaxed);
                self.metrics.redis_up(true);
                tracing::info!("Redis answers again: limits, slots and circuit state are shared by the fleet again");
            }
            (false, was_down) => {
                *down_until = Some(Instant::now() + RETRY_AFTER_FAILURE);
                if !was_down {
                    self.metrics.redis_up(false);
                    let mode = match self.on_error {
                        RedisFallback::Local => format!(
                            "each replica now enforces its share of every limit (1/{})",
                            self.replicas_hint
                        ),
                        RedisFallback::Reject => "requests are refused with 503 until it is back".to_owned(),
                    };
                    tracing::warn!(error, "Redis cannot be reached: {mode} ([redis] on_error)");
                }
            }
            (true, false) => {}
        }
    }

    /// Whether Redis came back since the last time this was asked.
    pub fn take_recovered(&self) -> bool {
        self.recovered.swap(false, Ordering::Relaxed)
    }

    /// A check made without Redis, as `[redis] on_error` says, for the metrics.
    pub fn fell_back(&self) {
        self.metrics.redis_fallback(match self.on_error {
            RedisFallback::Local => "local",
            RedisFallback::Reject => "reject",
        });
    }

    /// Remembers leases to renew for request `number`.
    pub fn hold(&self, number: u64, leases: Vec<(String, String)>) {
        if !leases.is_empty() {
            self.held.lock().expect("fleet lock").insert(number, leases);
        }
    }

    /// Stops renewing request `number`'s leases.
    pub fn release(&self, number: u64) {
        self.held.lock().expect("fleet lock").remove(&number);
    }
}

/// Renews every held lease a third of the way through it, while the fleet lives.
async fn renew_leases(fleet: Weak<Fleet>) {
    let mut tick = tokio::time::interval(LEASE / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(fleet) = fleet.upgrade() else { return };
        let leases: Vec<(String, String)> = fleet
            .held
            .lock()
            .expect("fleet lock")
            .values()
            .flatten()
            .cloned()
            .collect();
        if leases.is_empty() {
            continue;
        }
        let mut renew = RENEW.prepare_invoke();
        renew.arg(LEASE.as_millis() as u64);
        for (key, member) in &leases {
            renew.key(key).arg(member);
        }
        let _ = fleet.run::<i64>(&mut renew).await;
    }
}
