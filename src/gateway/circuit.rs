//! One circuit breaker: request outcomes in a sliding window, opened past a failure
//! ratio, half-open after its cooldown for one probe. `health` keeps one per channel and
//! one per failing upstream model.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::health::{Admission, Change, Probe};
use crate::config::RoutingConfig;
use crate::ir::Error;

pub(super) const BUCKETS: u32 = 20;

/// One circuit: outcomes inside the window, counted in `BUCKETS` slices of it so memory
/// stays flat whatever the request rate.
#[derive(Default)]
pub(super) struct Breaker {
    pub(super) outcomes: VecDeque<Bucket>,
    pub(super) circuit: Circuit,
    pub(super) last_error: Option<(String, SystemTime)>,
}

pub(super) struct Bucket {
    since: Instant,
    ok: usize,
    failed: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Debug)]
pub(super) enum Circuit {
    #[default]
    Closed,
    /// Taken out until then.
    Open { until: Instant },
    /// Cooled down: one probe request decides.
    HalfOpen { probing: bool },
}

/// What a breaker's outcome did to its circuit.
pub(super) enum Turn {
    Opened { failures: usize, requests: usize },
    Closed,
}

impl Turn {
    pub(super) fn change(self, model: Option<&str>, config: &RoutingConfig) -> Change {
        let model = model.map(str::to_owned);
        match self {
            Turn::Opened { failures, requests } => Change::CircuitOpened {
                model,
                failures,
                requests,
                cooldown: config.cooldown(),
            },
            Turn::Closed => Change::Recovered { model },
        }
    }
}

impl Breaker {
    /// Outcomes and failures in the window.
    pub(super) fn counts(&self) -> (usize, usize) {
        self.outcomes
            .iter()
            .fold((0, 0), |(all, failed), b| (all + b.ok + b.failed, failed + b.failed))
    }

    /// What the circuit lets through now; an open one whose cooldown is over becomes
    /// half-open.
    pub(super) fn admission(&mut self, now: Instant, probe: impl FnOnce() -> Probe) -> Admission {
        if let Circuit::Open { until } = self.circuit
            && until <= now
        {
            self.circuit = Circuit::HalfOpen { probing: false };
        }
        match self.circuit {
            Circuit::Closed => Admission::Yes,
            Circuit::HalfOpen { probing: false } => Admission::Probe(probe()),
            Circuit::Open { .. } | Circuit::HalfOpen { probing: true } => Admission::No,
        }
    }

    pub(super) fn claim_probe(&mut self) -> bool {
        let free = self.circuit == (Circuit::HalfOpen { probing: false });
        if free {
            self.circuit = Circuit::HalfOpen { probing: true };
        }
        free
    }

    pub(super) fn release_probe(&mut self) {
        if self.circuit == (Circuit::HalfOpen { probing: true }) {
            self.circuit = Circuit::HalfOpen { probing: false };
        }
    }

    pub(super) fn open(&mut self, now: Instant, config: &RoutingConfig) {
        self.outcomes.clear();
        self.circuit = Circuit::Open {
            until: now + config.cooldown(),
        };
    }

    pub(super) fn close(&mut self) {
        self.outcomes.clear();
        self.circuit = Circuit::Closed;
    }

    /// Notes an outcome. A probe settles a half-open circuit; an answer closes any
    /// circuit (the upstream is answering); a closed circuit opens when the window holds
    /// enough failures. A failed probe turns nothing: the circuit stays out, as said
    /// when it opened.
    pub(super) fn note(&mut self, ok: bool, probe: bool, now: Instant, config: &RoutingConfig) -> Option<Turn> {
        if probe && matches!(self.circuit, Circuit::HalfOpen { .. }) {
            if ok {
                self.close();
                return Some(Turn::Closed);
            }
            self.open(now, config);
            return None;
        }
        let mut turn = None;
        if ok && self.circuit != Circuit::Closed {
            self.close();
            turn = Some(Turn::Closed);
        }
        let window = config.window();
        let width = window / BUCKETS;
        match self.outcomes.back_mut() {
            Some(bucket) if now.duration_since(bucket.since) < width => {
                if ok {
                    bucket.ok += 1
                } else {
                    bucket.failed += 1
                }
            }
            _ => self.outcomes.push_back(Bucket {
                since: now,
                ok: usize::from(ok),
                failed: usize::from(!ok),
            }),
        }
        self.expire(now, window);
        let (total, failures) = self.counts();
        if self.circuit == Circuit::Closed
            && total >= config.min_requests.max(1)
            && failures as f64 >= config.failure_ratio * total as f64
        {
            self.open(now, config);
            return Some(Turn::Opened {
                failures,
                requests: total,
            });
        }
        turn
    }

    pub(super) fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .outcomes
            .front()
            .is_some_and(|b| now.duration_since(b.since) > window)
        {
            self.outcomes.pop_front();
        }
    }

    pub(super) fn failed(&mut self, error: &Error, probe: bool, now: Instant, config: &RoutingConfig) -> Option<Turn> {
        self.last_error = Some((error.message.clone(), SystemTime::now()));
        self.note(false, probe, now, config)
    }

    /// Nothing to remember: closed, and no failure in the window.
    pub(super) fn is_clean(&self) -> bool {
        self.circuit == Circuit::Closed && self.counts().1 == 0
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.circuit, Circuit::Open { .. } | Circuit::HalfOpen { .. })
    }

    pub(super) fn reopens_in(&self, now: Instant) -> Option<Duration> {
        match self.circuit {
            Circuit::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }

    pub(super) fn state_name(&self) -> &'static str {
        match self.circuit {
            Circuit::Closed => "healthy",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen { .. } => "half_open",
        }
    }

    pub(super) fn report(&self, now: Instant) -> Map<String, Value> {
        let (requests, failures) = self.counts();
        let mut report = Map::new();
        report.insert("state".into(), json!(self.state_name()));
        report.insert(
            "reopens_in_ms".into(),
            json!(self.reopens_in(now).map(|d| d.as_millis() as u64)),
        );
        report.insert("window".into(), json!({"requests": requests, "failures": failures}));
        report.insert(
            "last_error".into(),
            json!(
                self.last_error
                    .as_ref()
                    .map(|(message, at)| json!({"message": message, "at": unix(*at)}))
            ),
        );
        report
    }
}

pub(super) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
