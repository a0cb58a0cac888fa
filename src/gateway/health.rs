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
    /// Outcomes inside the window, counted in `BUCKETS` slices of it so memory stays
    /// flat whatever the request rate.
    outcomes: VecDeque<Bucket>,
    circuit: Circuit,
    /// The last active check could not reach the upstream.
    down: bool,
    last_error: Option<(String, SystemTime)>,
    /// Smoothed time to the first event of successful requests.
    latency: Option<Duration>,
    /// The last check: when, and how long it took.
    checked: Option<(SystemTime, Duration)>,
}

const BUCKETS: u32 = 20;

struct Bucket {
    since: Instant,
    ok: usize,
    failed: usize,
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

impl State {
    /// Outcomes and failures in the window.
    fn counts(&self) -> (usize, usize) {
        self.outcomes
            .iter()
            .fold((0, 0), |(all, failed), b| (all + b.ok + b.failed, failed + b.failed))
    }
}

/// A change of a channel's state worth one line in the log.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a change is logged by the caller, who knows the channel's name"]
pub enum Change {
    /// The model-list check could not reach it: it takes no requests until it answers.
    Down(String),
    /// The check reaches it again.
    Up,
    /// Too many requests failed: out for the cooldown.
    CircuitOpened {
        failures: usize,
        requests: usize,
        cooldown: Duration,
    },
    /// The probe after the cooldown succeeded.
    Recovered,
}

impl Change {
    /// Logs the change for `channel`: going out as WARN, coming back as INFO.
    pub fn log(&self, channel: &str) {
        match self {
            Change::Down(error) => {
                tracing::warn!(channel, error = %error, "channel is down: its model list cannot be fetched; it takes no requests until it answers")
            }
            Change::Up => tracing::info!(channel, "channel is up again: it answers its model-list check"),
            Change::CircuitOpened {
                failures,
                requests,
                cooldown,
            } => tracing::warn!(
                channel,
                failures,
                requests,
                cooldown_secs = cooldown.as_secs_f64(),
                "channel circuit opened: too many requests failed; it is out until the cooldown ends and a probe succeeds"
            ),
            Change::Recovered => tracing::info!(channel, "channel recovered: the probe after the cooldown succeeded"),
        }
    }
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
    pub fn record(&self, outcome: Result<Duration, &Error>, probe: bool, config: &RoutingConfig) -> Option<Change> {
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
            // A failed probe keeps the circuit open: already said when it opened.
            return ok.then_some(Change::Recovered);
        }
        let window = config.window();
        let width = window / BUCKETS;
        match state.outcomes.back_mut() {
            Some(bucket) if now.duration_since(bucket.since) < width => {
                if ok {
                    bucket.ok += 1
                } else {
                    bucket.failed += 1
                }
            }
            _ => state.outcomes.push_back(Bucket {
                since: now,
                ok: usize::from(ok),
                failed: usize::from(!ok),
            }),
        }
        while state
            .outcomes
            .front()
            .is_some_and(|b| now.duration_since(b.since) > window)
        {
            state.outcomes.pop_front();
        }
        let (total, failures) = state.counts();
        if state.circuit == Circuit::Closed
            && total >= config.min_requests.max(1)
            && failures as f64 >= config.failure_ratio * total as f64
        {
            state.outcomes.clear();
            state.circuit = Circuit::Open {
                until: now + config.cooldown(),
            };
            return Some(Change::CircuitOpened {
                failures,
                requests: total,
                cooldown: config.cooldown(),
            });
        }
        None
    }

    /// Notes a model-list check. Only an upstream that cannot be reached (or fails with
    /// 5xx) is down: a server without a model list still serves completions.
    /// The first check's result is not a change (the start-up line says it).
    pub fn checked(&self, took: Duration, error: Option<&Error>) -> Option<Change> {
        let mut state = self.state.lock().expect("health lock");
        let first = state.checked.is_none();
        let was_down = state.down;
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
        match (first, was_down, state.down) {
            (false, false, true) => Some(Change::Down(error.map(|e| e.message.clone()).unwrap_or_default())),
            (false, true, false) => Some(Change::Up),
            _ => None,
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
        let (requests, failures) = state.counts();
        json!({
            "state": name,
            "usable": admission != Admission::No,
            "reopens_in_ms": match state.circuit {
                Circuit::Open { until } => Some(until.saturating_duration_since(now).as_millis() as u64),
                _ => None,
            },
            "window": {"requests": requests, "failures": failures},
            "latency_ms": state.latency.map(|d| d.as_secs_f64() * 1000.0),
            "last_check": state.checked.map(|(at, took)| json!({"at": unix(at), "took_ms": took.as_secs_f64() * 1000.0})),
            "last_error": state.last_error.as_ref().map(|(message, at)| json!({"message": message, "at": unix(*at)})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_stays_small_and_opens_on_the_failure_ratio() {
        let health = Health::default();
        let config = RoutingConfig {
            min_requests: 10,
            failure_ratio: 0.5,
            ..Default::default()
        };
        for _ in 0..100_000 {
            assert_eq!(health.record(Ok(Duration::from_millis(1)), false, &config), None);
        }
        assert!(health.state.lock().unwrap().outcomes.len() <= BUCKETS as usize + 1);
        assert_eq!(health.admission(Instant::now()), Admission::Yes);
        let failure = Error::upstream(500, "boom");
        for _ in 0..99_999 {
            assert_eq!(health.record(Err(&failure), false, &config), None);
        }
        assert_eq!(health.admission(Instant::now()), Admission::Yes, "49.99 % failures");
        assert!(matches!(
            health.record(Err(&failure), false, &config),
            Some(Change::CircuitOpened {
                failures: 100_000,
                requests: 200_000,
                ..
            })
        ));
        assert_eq!(health.admission(Instant::now()), Admission::No, "50 %");
        assert_eq!(health.report()["state"], "open");
        assert_eq!(health.last_error().as_deref(), Some("boom"));
    }
}
