//! A channel's health: circuit breakers fed by request outcomes (passive), and the
//! result of the last model-list check (active). Two levels, so one failing model never
//! takes its channel down: the channel's own circuit counts transport failures (connect
//! errors, resets, timeouts before headers) and opens for 5xx only when every model
//! failing lately is open and none answered; each upstream model's circuit counts that
//! model's failures (5xx, a broken answer). Failures the request caused count nowhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::circuit::{Breaker, Circuit, unix};
use crate::config::RoutingConfig;
use crate::ir::{Error, ErrorKind};

#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Transport failures and every answer, whatever the model.
    channel: Breaker,
    /// Upstream models that failed lately, each with its own circuit. An entry goes
    /// once its circuit is closed and its window holds no failure, so the map stays as
    /// small as the set of models failing now.
    models: HashMap<String, Breaker>,
    /// The last active check could not reach the upstream.
    down: bool,
    /// Smoothed time to the first event of successful requests.
    latency: Option<Duration>,
    /// The last check: when, and how long it took.
    checked: Option<(SystemTime, Duration)>,
}

/// Most upstream models tracked at once; past it, a new model's failures count only
/// for the channel (a client making up names cannot grow the map).
const MAX_MODELS: usize = 1024;

/// Where a failure counts.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Scope {
    /// The upstream could not be reached or did not answer: the whole channel.
    Channel,
    /// The upstream answered, but this model failed: its own circuit.
    Model,
}

/// Which circuit a half-open probe request settles.
#[derive(Clone, PartialEq, Debug)]
pub enum Probe {
    Channel,
    Model(String),
}

/// A change of a channel's state, or of one of its models' circuits, worth one line in
/// the log.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a change is logged by the caller, who knows the channel's name"]
pub enum Change {
    /// The model-list check could not reach it: it takes no requests until it answers.
    Down(String),
    /// The check reaches it again.
    Up,
    /// Too many requests failed (for `model` only, when named): out for the cooldown.
    CircuitOpened {
        model: Option<String>,
        failures: usize,
        requests: usize,
        cooldown: Duration,
    },
    /// Every model failing lately is out and none answered: the channel is out too.
    EveryModelFailing { models: usize, cooldown: Duration },
    /// An answer after the cooldown closed the circuit (of `model` only, when named).
    Recovered { model: Option<String> },
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
                model: None,
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
            Change::CircuitOpened {
                model: Some(model),
                failures,
                requests,
                cooldown,
            } => tracing::warn!(
                channel,
                model,
                failures,
                requests,
                cooldown_secs = cooldown.as_secs_f64(),
                "model circuit opened: too many requests for this model failed on this channel; they go elsewhere until the cooldown ends and a probe succeeds"
            ),
            Change::EveryModelFailing { models, cooldown } => tracing::warn!(
                channel,
                models,
                cooldown_secs = cooldown.as_secs_f64(),
                "channel circuit opened: every model failing lately is out and none answered; it is out until the cooldown ends and a probe succeeds"
            ),
            Change::Recovered { model: None } => {
                tracing::info!(channel, "channel recovered: it answers again after the cooldown")
            }
            Change::Recovered { model: Some(model) } => {
                tracing::info!(channel, model, "model recovered: it answers again after the cooldown")
            }
        }
    }
}

/// Whether a channel may take a request for a model now.
#[derive(Clone, PartialEq, Debug)]
pub enum Admission {
    Yes,
    /// Only as the probe of a half-open circuit.
    Probe(Probe),
    No,
}

impl Health {
    /// Whether a request for upstream `model` may go to this channel now. `alone`: the
    /// channel is the request's only candidate, so a model's circuit refuses nothing
    /// (there is nowhere else to go, and the upstream's own answer says more than a 503).
    pub fn admission(&self, model: &str, alone: bool, now: Instant) -> Admission {
        let mut state = self.state.lock().expect("health lock");
        if state.down {
            return Admission::No;
        }
        match state.channel.admission(now, || Probe::Channel) {
            Admission::Yes if alone => Admission::Yes,
            Admission::Yes => match state.models.get_mut(model) {
                Some(breaker) => breaker.admission(now, || Probe::Model(model.to_owned())),
                None => Admission::Yes,
            },
            refused_or_probe => refused_or_probe,
        }
    }

    /// Takes a half-open circuit's one probe; false if another request has it.
    pub fn claim_probe(&self, probe: &Probe) -> bool {
        let mut state = self.state.lock().expect("health lock");
        match probe {
            Probe::Channel => state.channel.claim_probe(),
            Probe::Model(model) => state.models.get_mut(model).is_some_and(Breaker::claim_probe),
        }
    }

    /// The probe ended without a verdict (the client left, or no slot): let another
    /// request probe.
    pub fn probe_abandoned(&self, probe: &Probe) {
        let mut state = self.state.lock().expect("health lock");
        match probe {
            Probe::Channel => state.channel.release_probe(),
            Probe::Model(model) => {
                if let Some(breaker) = state.models.get_mut(model) {
                    breaker.release_probe();
                }
            }
        }
    }

    /// A request for upstream `model` got an answer (or was refused for its own fault:
    /// the upstream did its job). Returns the circuits it closed, for the caller to log.
    #[must_use = "changes are logged by the caller, who knows the channel's name"]
    pub fn answered(
        &self,
        model: &str,
        latency: Duration,
        probe: Option<&Probe>,
        config: &RoutingConfig,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let now = Instant::now();
        let mut state = self.state.lock().expect("health lock");
        state.latency = Some(match state.latency {
            Some(smoothed) => smoothed.mul_f64(0.8) + latency.mul_f64(0.2),
            None => latency,
        });
        let turn = state.channel.note(true, probe == Some(&Probe::Channel), now, config);
        changes.extend(turn.map(|t| t.change(None, config)));
        if let Some(breaker) = state.models.get_mut(model) {
            let turn = breaker.note(true, matches!(probe, Some(Probe::Model(m)) if m == model), now, config);
            changes.extend(turn.map(|t| t.change(Some(model), config)));
            if breaker.is_clean() {
                state.models.remove(model);
            }
        }
        changes
    }

    /// A request for upstream `model` failed with `error`, which counts in `scope`.
    /// Returns the circuits it opened or closed, for the caller to log.
    #[must_use = "changes are logged by the caller, who knows the channel's name"]
    pub fn failed(
        &self,
        model: &str,
        error: &Error,
        scope: Scope,
        probe: Option<&Probe>,
        config: &RoutingConfig,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let now = Instant::now();
        let mut state = self.state.lock().expect("health lock");
        let state = &mut *state;
        match scope {
            Scope::Channel => {
                let turn = state.channel.failed(error, probe == Some(&Probe::Channel), now, config);
                changes.extend(turn.map(|t| t.change(None, config)));
                // The model is not at fault: its probe gives way to another request.
                if let Some(Probe::Model(m)) = probe
                    && let Some(breaker) = state.models.get_mut(m)
                {
                    breaker.release_probe();
                }
            }
            Scope::Model => {
                // The upstream answered, so its transport works: a channel probe passed
                // (the window counts answers only, for `every_model_failing`).
                if probe == Some(&Probe::Channel) && state.channel.is_open() {
                    state.channel.close();
                    changes.push(Change::Recovered { model: None });
                }
                if !state.models.contains_key(model) && state.models.len() >= MAX_MODELS {
                    state.models.retain(|_, b| !b.is_clean());
                }
                if state.models.len() < MAX_MODELS || state.models.contains_key(model) {
                    let probing = matches!(probe, Some(Probe::Model(m)) if m == model);
                    let breaker = state.models.entry(model.to_owned()).or_default();
                    let turn = breaker.failed(error, probing, now, config);
                    changes.extend(turn.map(|t| t.change(Some(model), config)));
                }
                state.channel.last_error = Some((error.message.clone(), SystemTime::now()));
                changes.extend(every_model_failing(state, now, config));
            }
        }
        changes
    }

    /// Another replica saw a circuit (the channel's, or `model`'s) open for `open_for`,
    /// or close (`None`): this one follows, so the fleet skips a dead upstream at once.
    pub fn adopt(&self, model: Option<&str>, open_for: Option<Duration>, error: Option<String>) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("health lock");
        let state = &mut *state;
        let breaker = match model {
            None => &mut state.channel,
            Some(model) if state.models.contains_key(model) || state.models.len() < MAX_MODELS => {
                state.models.entry(model.to_owned()).or_default()
            }
            Some(_) => return,
        };
        match open_for {
            Some(cooldown) => {
                breaker.outcomes.clear();
                breaker.circuit = Circuit::Open { until: now + cooldown };
                if let Some(error) = error {
                    breaker.last_error = Some((format!("{error} (seen by another replica)"), SystemTime::now()));
                }
            }
            None if breaker.circuit != Circuit::Closed => breaker.close(),
            None => {}
        }
        if model.is_some_and(|m| state.models.get(m).is_some_and(Breaker::is_clean)) {
            state.models.remove(model.unwrap_or_default());
        }
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
            state.channel.last_error = Some((error.message.clone(), SystemTime::now()));
        }
        match (first, was_down, state.down) {
            (false, false, true) => Some(Change::Down(error.map(|e| e.message.clone()).unwrap_or_default())),
            (false, true, false) => Some(Change::Up),
            _ => None,
        }
    }

    /// The last error seen for `model` on this channel, or the channel's own, for
    /// messages that explain why a channel is out.
    pub fn last_error(&self, model: &str) -> Option<String> {
        let state = self.state.lock().expect("health lock");
        let model_error = state
            .models
            .get(model)
            .filter(|b| b.is_open() && !state.channel.is_open())
            .and_then(|b| b.last_error.as_ref());
        model_error
            .or(state.channel.last_error.as_ref())
            .map(|(message, _)| message.clone())
    }

    /// How long until an open circuit lets a probe for `model` through.
    pub fn reopens_in(&self, model: &str, now: Instant) -> Option<Duration> {
        let state = self.state.lock().expect("health lock");
        let model = state.models.get(model).and_then(|b| b.reopens_in(now));
        state.channel.reopens_in(now).max(model)
    }

    /// For `/health`: the channel's state, latency and last error, and each model whose
    /// circuit failures are counting now.
    pub fn report(&self) -> Value {
        let now = Instant::now();
        let mut state = self.state.lock().expect("health lock");
        let usable = !state.down && state.channel.admission(now, || Probe::Channel) != Admission::No;
        let mut report = state.channel.report(now);
        if state.down {
            report.insert("state".into(), json!("down"));
        }
        report.insert("usable".into(), json!(usable));
        report.insert(
            "latency_ms".into(),
            json!(state.latency.map(|d| d.as_secs_f64() * 1000.0)),
        );
        report.insert(
            "last_check".into(),
            json!(
                state
                    .checked
                    .map(|(at, took)| json!({"at": unix(at), "took_ms": took.as_secs_f64() * 1000.0}))
            ),
        );
        let mut models: Vec<(&String, &mut Breaker)> = state.models.iter_mut().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        let models: Map<String, Value> = models
            .into_iter()
            .map(|(name, breaker)| {
                let mut model = breaker.report(now);
                let usable = breaker.admission(now, || Probe::Channel) != Admission::No;
                model.insert("usable".into(), json!(usable));
                (name.clone(), Value::Object(model))
            })
            .collect();
        report.insert("models".into(), Value::Object(models));
        Value::Object(report)
    }
}

/// 5xx on every model is the channel failing: when two or more models are out, every
/// model failing lately is, and nothing answered in the window, the channel opens too.
fn every_model_failing(state: &mut State, now: Instant, config: &RoutingConfig) -> Option<Change> {
    let open = state.models.values().filter(|b| b.is_open()).count();
    let (answers, _) = state.channel.counts();
    if open >= 2 && open == state.models.len() && answers == 0 && state.channel.circuit == Circuit::Closed {
        state.channel.open(now, config);
        return Some(Change::EveryModelFailing {
            models: open,
            cooldown: config.cooldown(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::circuit::BUCKETS;

    fn config() -> RoutingConfig {
        RoutingConfig {
            min_requests: 10,
            failure_ratio: 0.5,
            ..Default::default()
        }
    }

    #[test]
    fn the_window_stays_small_and_opens_on_the_failure_ratio() {
        let (health, config) = (Health::default(), config());
        for _ in 0..100_000 {
            assert_eq!(health.answered("m", Duration::from_millis(1), None, &config), []);
        }
        assert!(health.state.lock().unwrap().channel.outcomes.len() <= BUCKETS as usize + 1);
        assert_eq!(health.admission("m", false, Instant::now()), Admission::Yes);
        let failure = Error::new(ErrorKind::UpstreamUnavailable, "refused");
        for _ in 0..99_999 {
            assert_eq!(health.failed("m", &failure, Scope::Channel, None, &config), []);
        }
        assert_eq!(
            health.admission("m", false, Instant::now()),
            Admission::Yes,
            "49.99 % failures"
        );
        assert_eq!(
            health.failed("m", &failure, Scope::Channel, None, &config),
            [Change::CircuitOpened {
                model: None,
                failures: 100_000,
                requests: 200_000,
                cooldown: config.cooldown(),
            }]
        );
        assert_eq!(health.admission("m", false, Instant::now()), Admission::No, "50 %");
        assert_eq!(health.report()["state"], "open");
        assert_eq!(health.last_error("m").as_deref(), Some("refused"));
    }

    #[test]
    fn a_check_reports_down_and_up_once_each_but_not_the_first() {
        let health = Health::default();
        let refused = Error::new(ErrorKind::UpstreamUnavailable, "connection refused");
        assert_eq!(health.checked(Duration::ZERO, Some(&refused)), None, "the first check");
        assert_eq!(health.checked(Duration::ZERO, None), Some(Change::Up));
        assert_eq!(health.checked(Duration::ZERO, None), None);
        assert_eq!(
            health.checked(Duration::ZERO, Some(&refused)),
            Some(Change::Down("connection refused".into()))
        );
        assert_eq!(health.checked(Duration::ZERO, Some(&refused)), None);
    }

    #[test]
    fn a_failing_model_opens_only_its_own_circuit() {
        let (health, config) = (Health::default(), config());
        let failure = Error::upstream(500, "model requires more system memory");
        for _ in 0..9 {
            assert_eq!(health.failed("big", &failure, Scope::Model, None, &config), []);
        }
        assert_eq!(
            health.failed("big", &failure, Scope::Model, None, &config),
            [Change::CircuitOpened {
                model: Some("big".into()),
                failures: 10,
                requests: 10,
                cooldown: config.cooldown(),
            }]
        );
        let now = Instant::now();
        assert_eq!(health.admission("big", false, now), Admission::No);
        assert_eq!(health.admission("small", false, now), Admission::Yes);
        // The only channel a request can go to refuses nothing for a model.
        assert_eq!(health.admission("big", true, now), Admission::Yes);
        let report = health.report();
        assert_eq!(
            (report["state"].clone(), report["usable"].clone()),
            (json!("healthy"), json!(true))
        );
        assert_eq!(report["models"]["big"]["state"], "open");
        assert_eq!(report["models"]["big"]["usable"], false);
        assert_eq!(
            report["models"]["big"]["last_error"]["message"],
            "model requires more system memory"
        );
        assert_eq!(
            health.last_error("big").as_deref(),
            Some("model requires more system memory")
        );
    }

    #[test]
    fn an_answer_closes_the_circuit_and_clean_models_are_forgotten() {
        let (health, config) = (Health::default(), config());
        let failure = Error::upstream(500, "boom");
        for _ in 0..10 {
            let _ = health.failed("m", &failure, Scope::Model, None, &config);
        }
        assert_eq!(health.admission("m", false, Instant::now()), Admission::No);
        // A request that started before the circuit opened answers: the model works.
        assert_eq!(
            health.answered("m", Duration::from_millis(5), None, &config),
            [Change::Recovered {
                model: Some("m".into())
            }]
        );
        assert_eq!(health.admission("m", false, Instant::now()), Admission::Yes);
        assert!(health.state.lock().unwrap().models.is_empty());
    }

    #[test]
    fn five_hundreds_on_every_model_open_the_channel() {
        let (health, config) = (Health::default(), config());
        let failure = Error::upstream(502, "bad gateway");
        for _ in 0..10 {
            let _ = health.failed("a", &failure, Scope::Model, None, &config);
        }
        for _ in 0..9 {
            let _ = health.failed("b", &failure, Scope::Model, None, &config);
        }
        assert_eq!(
            health.failed("b", &failure, Scope::Model, None, &config),
            [
                Change::CircuitOpened {
                    model: Some("b".into()),
                    failures: 10,
                    requests: 10,
                    cooldown: config.cooldown(),
                },
                Change::EveryModelFailing {
                    models: 2,
                    cooldown: config.cooldown(),
                }
            ]
        );
        let now = Instant::now();
        assert_eq!(health.admission("never-asked", false, now), Admission::No);
        assert_eq!(health.report()["state"], "open");

        // With an answer in the window, the channel stays up.
        let health = Health::default();
        let _ = health.answered("c", Duration::from_millis(1), None, &config);
        for model in ["a", "b"] {
            for _ in 0..10 {
                let _ = health.failed(model, &failure, Scope::Model, None, &config);
            }
        }
        assert_eq!(health.admission("c", false, Instant::now()), Admission::Yes);
    }

    #[test]
    fn a_half_open_model_lets_one_probe_through() {
        let config = RoutingConfig {
            cooldown_secs: 0.0,
            ..config()
        };
        let health = Health::default();
        let failure = Error::upstream(500, "boom");
        for _ in 0..10 {
            let _ = health.failed("m", &failure, Scope::Model, None, &config);
        }
        let probe = Probe::Model("m".into());
        assert_eq!(
            health.admission("m", false, Instant::now()),
            Admission::Probe(probe.clone())
        );
        assert!(health.claim_probe(&probe));
        assert!(!health.claim_probe(&probe), "one probe at a time");
        assert_eq!(health.admission("m", false, Instant::now()), Admission::No);
        // A transport failure is not the model's: another request may probe.
        let refused = Error::new(ErrorKind::UpstreamUnavailable, "reset");
        assert_eq!(health.failed("m", &refused, Scope::Channel, Some(&probe), &config), []);
        assert!(health.claim_probe(&probe));
        assert_eq!(
            health.answered("m", Duration::from_millis(1), Some(&probe), &config),
            [Change::Recovered {
                model: Some("m".into())
            }]
        );
        assert_eq!(health.admission("m", false, Instant::now()), Admission::Yes);
    }
}
