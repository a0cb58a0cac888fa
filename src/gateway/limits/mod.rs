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
    /// Admits a request as `ask` says, or says which limit it hit (a 429 with
    /// `Retry-After` and `x-ratelimit-*` headers). One check: with a shared limiter, one
    /// round trip.
    async fn admit(&self, config: &LimitsConfig, caller: &Caller, ask: Ask) -> Result<Reservation, Error>;
}

/// What a request asks to be admitted at, in tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// Its prompt plus the longest answer it may get.
    pub estimate: u64,
    /// When the caller set no answer length: the least it may be admitted at, so a quota
    /// nearly used up caps the answer to what is left rather than refusing the request.
    /// None: refused when `estimate` does not fit.
    pub at_least: Option<u64>,
}

impl Ask {
    /// Exactly `estimate`, never less.
    pub fn exactly(estimate: u64) -> Self {
        Self {
            estimate,
            at_least: None,
        }
    }

    /// The estimate admitted with `left` tokens of quota left: all of it, or what is left
    /// when the answer may be cut down to it; None when it does not fit.
    pub fn fits(self, left: u64) -> Option<u64> {
        if self.estimate <= left {
            Some(self.estimate)
        } else {
            self.at_least.filter(|&least| least <= left).map(|_| left)
        }
    }
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
pub struct Reservation {
    held: Option<Box<dyn Held>>,
    /// The estimate admitted, when the quota cut it below what was asked.
    cut_to: Option<u64>,
}

impl Reservation {
    /// `held`, admitted at `admitted` tokens of the `ask`.
    pub fn new(held: Box<dyn Held>, ask: Ask, admitted: u64) -> Self {
        Self {
            held: Some(held),
            cut_to: (admitted < ask.estimate).then_some(admitted),
        }
    }

    /// Holds nothing: no limit applied to the request.
    pub fn none() -> Self {
        Self {
            held: None,
            cut_to: None,
        }
    }

    /// The tokens admitted when the quota left less than was asked (the answer must be
    /// capped to fit).
    pub fn cut_to(&self) -> Option<u64> {
        self.cut_to
    }

    /// Settles with `used` tokens without making the caller wait: a settlement that
    /// completes at once (the in-memory limiter's) runs here, one that waits on a server
    /// goes on in a task of its own.
    pub fn settle(mut self, used: u64) {
        let Some(held) = self.held.take() else { return };
        let mut settling = held.settle(used);
        let mut context = Context::from_waker(futures::task::noop_waker_ref());
        if Pin::new(&mut settling).poll(&mut context).is_pending() {
            tokio::spawn(settling);
        }
    }
}
