//! Rate limits (requests and tokens per minute: global, per IP, per token), monthly
//! token quotas and per-token concurrency, behind the `Limiter` trait so a shared
//! limiter (Redis, for several replicas) can stand in for the in-memory one. Token counts
//! are reserved from an estimate before a call and settled with the real usage after it,
//! so concurrent requests cannot overrun a limit by each seeing the same headroom.
//!
//! The limits themselves come with each call (`LimitsConfig` from the live snapshot, the
//! caller's token): a reload changes them at once and never resets a count.

mod memory;
mod redis;
mod rules;

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;
pub use rules::month_start_ms;

use std::sync::Arc;

use super::auth::Caller;
use super::fleet::Fleet;
use crate::config::LimitsConfig;
use crate::ir::Error;
use crate::store::Store;
use crate::telemetry::Metrics;

/// The limiter a gateway runs with: the fleet's (Redis) when there is one, else this
/// process's own, its quotas counted on from the store's usage this month.
pub async fn start(
    fleet: Option<&Arc<Fleet>>,
    store: Option<&Arc<dyn Store>>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Limiter>, String> {
    if let Some(fleet) = fleet {
        return Ok(Arc::new(RedisLimiter::new(
            fleet.clone(),
            store.cloned(),
            metrics.clone(),
        )));
    }
    let limiter = MemoryLimiter::new(metrics.clone());
    if let Some(store) = store {
        let month = month_start_ms();
        let used = store.tokens_used_since(month).await.map_err(|e| e.to_string())?;
        limiter.set_used_before(month, used.into_iter().collect());
    }
    Ok(Arc::new(limiter))
}

#[async_trait::async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Admits a request estimated at `estimate` tokens, or says which limit it hit (a 429
    /// with `Retry-After` and `x-ratelimit-*` headers).
    async fn admit(&self, config: &LimitsConfig, caller: &Caller, estimate: u64) -> Result<Reservation, Error>;

    /// How many tokens the caller's monthly quota has left, if it has one.
    async fn quota_left(&self, caller: &Caller) -> Option<u64>;
}

/// A limiter's hold on what one request reserved.
#[async_trait::async_trait]
pub trait Held: Send + Sync {
    /// Replaces the estimate with what the request really used. Dropping a hold
    /// unsettled gives the reservation back.
    async fn settle(self: Box<Self>, used: u64);
}

/// What a request holds until it ends: settled with the real usage, or released (the
/// hold's own `Drop`) when the request ends without an answer.
pub struct Reservation(Option<Box<dyn Held>>);

impl Reservation {
    pub fn new(held: Box<dyn Held>) -> Self {
        Self(Some(held))
    }

    /// Holds nothing: no limit applied to the request.
    pub fn none() -> Self {
        Self(None)
    }

    /// Settles with `used` tokens without making the caller wait: a settlement that
    /// completes at once (the in-memory limiter's) runs here, one that waits on a server
    /// goes on in a task of its own.
    pub fn settle(mut self, used: u64) {
        let Some(held) = self.0.take() else { return };
        let mut settling = held.settle(used);
        let mut context = Context::from_waker(futures::task::noop_waker_ref());
        if Pin::new(&mut settling).poll(&mut context).is_pending() {
            tokio::spawn(settling);
        }
    }
}
