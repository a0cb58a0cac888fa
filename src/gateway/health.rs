//! A channel's health: a circuit breaker fed by request outcomes (passive), and the
//! result of the last model-list check (active).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::config::RoutingConfig;
use crate::ir::{Error, ErrorKind};

#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Outcomes inside the window: when, and whether the upstream did its job.
    outcomes: VecDeque<(Instant, bool)>,
    circuit: Circuit,
    /// The last active check could not reach the upstream.
    down: bool,
    last_error: Option<(String, SystemTime)>,
    /// Smoothed time to the first event of successful requests.
    latency: Option<Duration>,
    /// The last check: when, and how long it took.
    checked: Option<(SystemTime, Duration)>,
}

#[derive(Default, Clone, Copy, PartialEq, Debug)]
enum Circuit {
    #[default]
    Closed,
    /// Taken out until then.
    Open { until: Instant },
    /// Cooled down: one probe request decides.
    HalfOpen { probing: bool },
}

/// Whether a channel may take a request now.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Admission {
    Yes,
    /// Only as the probe of a half-open circuit.
    Probe,
    No,
}

impl Health {
    pub fn admission(&self, now: Instant) -> Admission {
        let mut state = self.state.lock().expect("health lock");
        if state.down {
            return Admission::No;
        }
        if let Circuit::Open { until } = state.circuit
            && until <= now
        {
            state.circuit = Circuit::HalfOpen { probing: false };
        }
        match state.circuit {
            Circuit::Closed => Admission::Yes,
            Circuit::HalfOpen { probing: false } => Admission::Probe,
            Circuit::Open { .. } | Circuit::HalfOpen { probing: true } => Admission::No,
        }
    }

    /// Takes the half-open circuit's one probe; false if another request has it.
    pub fn claim_probe(&self) -> bool {
        let mut state = self.state.lock().expect("health lock");
        if state.circuit == (Circuit::HalfOpen { probing: false }) {
            state.circuit = Circuit::HalfOpen { probing: true };
            true
        } else {
            false
        }
    }

    pub fn probe_abandoned(&self) {
        let mut state = self.state.lock().expect("health lock");
        if state.circuit == (Circuit::HalfOpen { probing: true }) {
            state.circuit = Circuit::HalfOpen { probing: false };
        }
    }

    /// Notes how a request went. `probe` requests settle a half-open circuit; a closed
    /// one opens when the window holds enough failures.
    pub fn record(&self, outcome: Result<Duration, &Error>, probe: bool, config: &RoutingConfig) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("health lock");
        let ok = outcome.is_ok();
        match outcome {
            Ok(latency) => {
                state.latency = Some(match state.latency {
                    Some(smoothed) => smoothed.mul_f64(0.8) + latency.mul_f64(0.2),
                    None => latency,
                });
            }
            Err(error) => state.last_error = Some((error.message.clone(), SystemTime::now())),
        }
        if probe && matches!(state.circuit, Circuit::HalfOpen { .. }) {
            state.outcomes.clear();
            state.circuit = if ok {
                Circuit::Closed
            } else {
                Circuit::Open {
                    until: now + config.cooldown(),
                }
            };
            return;
        }
        state.outcomes.push_back((now, ok));
        let window = config.window();
        while state
            .outcomes
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            state.outcomes.pop_front();
        }
        let total = state.outcomes.len();
        let failures = state.outcomes.iter().filter(|(_, ok)| !ok).count();
        if state.circuit == Circuit::Closed
            && total >= config.min_requests.max(1)
            && failures as f64 >= config.failure_ratio * total as f64
        {
            state.outcomes.clear();
            state.circuit = Circuit::Open {
                until: now + config.cooldown(),
            };
        }
    }

    /// Notes a model-list check. Only an upstream that cannot be reached (or fails with
    /// 5xx) is down: a server without a model list still serves completions.
    pub fn checked(&self, took: Duration, error: Option<&Error>) {
        let mut state = self.state.lock().expect("health lock");
        state.checked = Some((SystemTime::now(), took));
        state.down = error.is_some_and(|e| {
            matches!(
                e.kind,
                ErrorKind::UpstreamUnavailable | ErrorKind::Timeout | ErrorKind::UpstreamError { status: 500.. }
            )
        });
        if let Some(error) = error {
            state.last_error = Some((error.message.clone(), SystemTime::now()));
        }
    }

    /// The last error seen, for messages that explain why a channel is out.
    pub fn last_error(&self) -> Option<String> {
        let state = self.state.lock().expect("health lock");
        state.last_error.as_ref().map(|(message, _)| message.clone())
    }

    /// How long until an open circuit lets a probe through.
    pub fn reopens_in(&self, now: Instant) -> Option<Duration> {
        match self.state.lock().expect("health lock").circuit {
            Circuit::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// For `/health`: state, latency, last error.
    pub fn report(&self) -> Value {
        let now = Instant::now();
        let admission = self.admission(now);
        let state = self.state.lock().expect("health lock");
        let name = match (state.down, state.circuit) {
            (true, _) => "down",
            (false, Circuit::Closed) => "healthy",
            (false, Circuit::Open { .. }) => "open",
            (false, Circuit::HalfOpen { .. }) => "half_open",
        };
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let failures = state.outcomes.iter().filter(|(_, ok)| !ok).count();
        json!({
            "state": name,
            "usable": admission != Admission::No,
            "reopens_in_ms": match state.circuit {
                Circuit::Open { until } => Some(until.saturating_duration_since(now).as_millis() as u64),
                _ => None,
            },
            "window": {"requests": state.outcomes.len(), "failures": failures},
            "latency_ms": state.latency.map(|d| d.as_secs_f64() * 1000.0),
            "last_check": state.checked.map(|(at, took)| json!({"at": unix(at), "took_ms": took.as_secs_f64() * 1000.0})),
            "last_error": state.last_error.as_ref().map(|(message, at)| json!({"message": message, "at": unix(*at)})),
        })
    }
}
