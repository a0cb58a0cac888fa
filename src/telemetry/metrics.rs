//! The Prometheus metrics of one gateway, served at `GET /metrics`.
//!
//! Labels stay low in cardinality: frontends, backends, channel names, route patterns,
//! status classes, and model names only once the catalog knew them (an unknown name a
//! client made up is counted as `model=""`). Never token values, never IPs.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The OpenTelemetry GenAI advisory buckets for operation durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// The GenAI buckets for time to first token, in seconds.
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// The gateway's own time: tens of microseconds normally, more when queued.
const OVERHEAD_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub frontend: &'static str,
    pub backend: &'static str,
    pub model: String,
    pub channel: String,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub frontend: &'static str,
    pub route: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub frontend: &'static str,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontendLabels {
    pub frontend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub channel: String,
    /// `input` or `output`, as `gen_ai.token.type`.
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub channel: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `chat` or `embeddings`.
    pub kind: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// Which rule refused: `global`, `ip`, `token`, `quota`, `concurrency`.
    pub scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// What `[redis] on_error` did: `local` or `reject`.
    pub mode: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Each thread's handles to the metrics it has recorded, by label set. A family's own
/// lookup hashes the label set with SipHash, copies its strings and takes the family's
/// lock: seven times per model request. Keyed by the `Metrics` too, as tests run several
/// gateways in one process.
#[derive(Default)]
struct Handles {
    models: hashbrown::HashMap<ModelKey, ModelHandles>,
    http: hashbrown::HashMap<(u64, HttpLabels), Counter>,
}

/// Label sets a thread keeps handles for before it starts over (models are labels only
/// when a channel knows them, so this is reached only by a catalog that large).
const MAX_HANDLES: usize = 4096;

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::default();
}

#[derive(Hash, PartialEq, Eq)]
struct ModelKey {
    metrics: u64,
    frontend: &'static str,
    backend: &'static str,
    status_class: &'static str,
    model: String,
    channel: String,
}

/// A `ModelKey` looked up without copying its strings (hashed alike: `&str` and `String`
/// hash the same).
#[derive(Hash)]
struct ModelKeyRef<'a> {
    metrics: u64,
    frontend: &'static str,
    backend: &'static str,
    status_class: &'static str,
    model: &'a str,
    channel: &'a str,
}

impl hashbrown::Equivalent<ModelKey> for ModelKeyRef<'_> {
    fn equivalent(&self, key: &ModelKey) -> bool {
        self.metrics == key.metrics
            && self.frontend == key.frontend
            && self.backend == key.backend
            && self.status_class == key.status_class
            && self.model == key.model
            && self.channel == key.channel
    }
}

/// What a finished model request records to. The time-to-first-token and token series are
/// made on their first value, so a label set shows in `/metrics` only once it has one.
struct ModelHandles {
    requests: Counter,
    duration: Histogram,
    overhead: Histogram,
    ttft: Option<Histogram>,
    input_tokens: Option<Counter>,
    output_tokens: Option<Counter>,
}

/// Tells one `Metrics` from another in the threads' handles.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    duration: Histograms<ModelLabels>,
    ttft: Histograms<ModelLabels>,
    overhead: Histograms<FrontendLabels>,
    tokens: Family<TokenLabels, Counter>,
    active_requests: Gauge,
    open_streams: Gauge,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    retries: Family<ChannelLabels, Counter>,
    failovers: Family<ChannelLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    redis_up: Gauge,
    redis_fallbacks: Family<FallbackLabels, Counter>,
    channel_state: Family<ChannelLabels, Gauge>,
    channel_up: Family<ChannelLabels, Gauge>,
    resident_memory: Gauge,
    uptime: Gauge<f64, AtomicU64>,
    started: Instant,
    /// Off (`metrics.enabled = false`): nothing is recorded, so nothing is paid.
    on: bool,
    /// This one's key in the threads' handles.
    id: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Metrics {
    /// `on = false` records nothing (for `metrics.enabled = false`).
    pub fn new(on: bool) -> Self {
        let mut registry = Registry::with_prefix("diglot");
        let requests = Family::default();
        let http_requests = Family::default();
        let duration: Histograms<ModelLabels> = Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let ttft: Histograms<ModelLabels> = Family::new_with_constructor(|| Histogram::new(TTFT_BUCKETS));
        let overhead: Histograms<FrontendLabels> = Family::new_with_constructor(|| Histogram::new(OVERHEAD_BUCKETS));
        let tokens = Family::default();
        let active_requests = Gauge::default();
        let open_streams = Gauge::default();
        let upstream_errors = Family::default();
        let retries = Family::default();
        let failovers = Family::default();
        let cache = Family::default();
        let rate_limited = Family::default();
        let redis_up = Gauge::default();
        let redis_fallbacks = Family::default();
        let channel_state = Family::default();
        let channel_up = Family::default();
        let resident_memory = Gauge::default();
        let uptime = Gauge::<f64, AtomicU64>::default();

        registry.register(
            "requests",
            "Model requests (chat, completions, embeddings) by frontend, backend, model, channel and status class",
            requests.clone(),
        );
        registry.register(
            "http_requests",
            "Every HTTP request by frontend, route pattern and status class",
            http_requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Model request duration, from arrival to the last byte of the answer",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "time_to_first_token",
            "Time from arrival to the first event of the answer",
            Unit::Seconds,
            ttft.clone(),
        );
        registry.register_with_unit(
            "overhead",
            "diglot's own time per model request: the duration minus the time spent waiting on upstreams (and backing off after their failures)",
            Unit::Seconds,
            overhead.clone(),
        );
        registry.register(
            "tokens",
            "Tokens in (prompt) and out (completion), as upstreams reported them or estimated",
            tokens.clone(),
        );
        registry.register(
            "active_requests",
            "HTTP requests in progress, streams included",
            active_requests.clone(),
        );
        registry.register("open_streams", "Streamed answers in progress", open_streams.clone());
        registry.register(
            "upstream_errors",
            "Failed upstream attempts by channel and kind (connect, timeout, status_5xx, rate_limited, unauthorized, rejected, stream)",
            upstream_errors.clone(),
        );
        registry.register(
            "retries",
            "Attempts made after a failed one, by the channel that failed",
            retries.clone(),
        );
        registry.register(
            "failovers",
            "Requests answered by another channel after a channel failed, by the channel that failed",
            failovers.clone(),
        );
        registry.register(
            "cache",
            "Response cache lookups by kind and result (hit, miss)",
            cache.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a limit, by scope",
            rate_limited.clone(),
        );
        registry.register(
            "redis_up",
            "1 while Redis (the fleet's shared limits and state) answers; 0 while it does not",
            redis_up.clone(),
        );
        registry.register(
            "redis_fallbacks",
            "Limit checks made without Redis, by what [redis] on_error did (local, reject)",
            redis_fallbacks.clone(),
        );
        registry.register(
            "channel_state",
            "Channel health: 0 healthy, 1 half-open (probing), 2 open (taken out), 3 down (failed its check)",
            channel_state.clone(),
        );
        registry.register("channel_up", "1 when the channel can take requests", channel_up.clone());
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the diglot process",
            Unit::Bytes,
            resident_memory.clone(),
        );
        registry.register_with_unit(
            "uptime",
            "Time since the gateway started",
            Unit::Seconds,
            uptime.clone(),
        );
        Self {
            registry,
            requests,
            http_requests,
            duration,
            ttft,
            overhead,
            tokens,
            active_requests,
            open_streams,
            upstream_errors,
            retries,
            failovers,
            cache,
            rate_limited,
            redis_up,
            redis_fallbacks,
            channel_state,
            channel_up,
            resident_memory,
            uptime,
            started: Instant::now(),
            on,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The text exposition, with the gauges read at scrape time brought up to date first.
    /// `channels`: each channel's name, state (as `/health` names it) and usability.
    pub fn render<'a>(&self, channels: impl IntoIterator<Item = (&'a str, &'a str, bool)>) -> String {
        for (name, state, usable) in channels {
            let labels = ChannelLabels {
                channel: name.to_owned(),
            };
            let code = match state {
                "healthy" => 0,
                "half_open" => 1,
                "open" => 2,
                _ => 3,
            };
            self.channel_state.get_or_create(&labels).set(code);
            self.channel_up.get_or_create(&labels).set(i64::from(usable));
        }
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes as i64);
        }
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// A model request ended: its count, duration, time to first token, the gateway's own
    /// share of the time, and its tokens.
    pub fn model_request(&self, done: &Finished<'_>) {
        if !self.on {
            return;
        }
        let key = ModelKeyRef {
            metrics: self.id,
            frontend: done.frontend,
            backend: done.backend,
            status_class: status_class(done.status),
            model: if done.known_model { done.model } else { "" },
            channel: done.channel,
        };
        HANDLES.with_borrow_mut(|cache| {
            if cache.models.len() >= MAX_HANDLES && cache.models.get(&key).is_none() {
                cache.models.clear();
            }
            let (_, handles) = cache
                .models
                .raw_entry_mut()
                .from_key(&key)
                .or_insert_with(|| self.model_handles(&key));
            handles.requests.inc();
            handles.duration.observe(done.duration.as_secs_f64());
            if let Some(ttft) = done.ttft {
                let histogram = handles.ttft.get_or_insert_with(|| {
                    let labels = ModelLabels {
                        frontend: key.frontend,
                        model: key.model.to_owned(),
                    };
                    self.ttft.get_or_create(&labels).clone()
                });
                histogram.observe(ttft.as_secs_f64());
            }
            handles
                .overhead
                .observe(done.duration.saturating_sub(done.upstream_wait).as_secs_f64());
            for (kind, count, counter) in [
                ("input", done.input_tokens, &mut handles.input_tokens),
                ("output", done.output_tokens, &mut handles.output_tokens),
            ] {
                if count > 0 {
                    let counter = counter.get_or_insert_with(|| {
                        let labels = TokenLabels {
                            model: key.model.to_owned(),
                            channel: key.channel.to_owned(),
                            r#type: kind,
                        };
                        self.tokens.get_or_create(&labels).clone()
                    });
                    counter.inc_by(count);
                }
            }
        });
    }

    /// The handles of a label set this thread has not recorded to yet.
    fn model_handles(&self, key: &ModelKeyRef<'_>) -> (ModelKey, ModelHandles) {
        let requests = self
            .requests
            .get_or_create(&RequestLabels {
                frontend: key.frontend,
                backend: key.backend,
                model: key.model.to_owned(),
                channel: key.channel.to_owned(),
                status_class: key.status_class,
            })
            .clone();
        let labels = ModelLabels {
            frontend: key.frontend,
            model: key.model.to_owned(),
        };
        let handles = ModelHandles {
            requests,
            duration: self.duration.get_or_create(&labels).clone(),
            overhead: self
                .overhead
                .get_or_create(&FrontendLabels { frontend: key.frontend })
                .clone(),
            ttft: None,
            input_tokens: None,
            output_tokens: None,
        };
        let key = ModelKey {
            metrics: key.metrics,
            frontend: key.frontend,
            backend: key.backend,
            status_class: key.status_class,
            model: key.model.to_owned(),
            channel: key.channel.to_owned(),
        };
        (key, handles)
    }

    pub fn upstream_error(&self, channel: &str, kind: &'static str) {
        if !self.on {
            return;
        }
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                channel: channel.to_owned(),
                kind,
            })
            .inc();
    }

    /// An attempt after a failed one on `channel`.
    pub fn retry(&self, channel: &str) {
        if self.on {
            let channel = channel.to_owned();
            self.retries.get_or_create(&ChannelLabels { channel }).inc();
        }
    }

    /// A request answered by another channel after `channel` failed.
    pub fn failover(&self, channel: &str) {
        if self.on {
            let channel = channel.to_owned();
            self.failovers.get_or_create(&ChannelLabels { channel }).inc();
        }
    }

    /// A request a limit refused (`global`, `ip`, `token`, `quota`, `concurrency`).
    pub fn rate_limited(&self, scope: &'static str) {
        if self.on {
            self.rate_limited.get_or_create(&LimitLabels { scope }).inc();
        }
    }

    /// Whether Redis answers now.
    pub fn redis_up(&self, up: bool) {
        if self.on {
            self.redis_up.set(i64::from(up));
        }
    }

    /// A limit check made without Redis: `local` or `reject`.
    pub fn redis_fallback(&self, mode: &'static str) {
        if self.on {
            self.redis_fallbacks.get_or_create(&FallbackLabels { mode }).inc();
        }
    }

    /// An HTTP request arrived.
    pub fn request_started(&self) {
        if self.on {
            self.active_requests.inc();
        }
    }

    /// Its answer is a stream.
    pub fn stream_opened(&self) {
        if self.on {
            self.open_streams.inc();
        }
    }

    /// It ended (its stream too) with `status`.
    pub fn request_ended(&self, labels: HttpLabels, streamed: bool) {
        if !self.on {
            return;
        }
        self.active_requests.dec();
        if streamed {
            self.open_streams.dec();
        }
        HANDLES.with_borrow_mut(|cache| {
            if cache.http.len() >= MAX_HANDLES {
                cache.http.clear();
            }
            cache
                .http
                .entry((self.id, labels))
                .or_insert_with_key(|(_, labels)| self.http_requests.get_or_create(labels).clone())
                .inc();
        });
    }

    pub fn cache_lookup(&self, kind: &'static str, hit: bool) {
        if !self.on {
            return;
        }
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&CacheLabels { kind, result }).inc();
    }
}

/// What `Metrics::model_request` records of a finished model request.
pub struct Finished<'a> {
    pub frontend: &'static str,
    pub backend: &'static str,
    pub model: &'a str,
    /// Whether the catalog knew `model` (else it is not used as a label).
    pub known_model: bool,
    pub channel: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub ttft: Option<Duration>,
    pub upstream_wait: Duration,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=498 => "4xx",
        // A client that hung up (nginx's 499) is neither the client's error nor ours.
        499 => "499",
        _ => "5xx",
    }
}

/// The resident set size from `/proc/self/status` (Linux); `None` elsewhere.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(model: &str, ttft: Option<Duration>, output_tokens: u64) -> Finished<'_> {
        Finished {
            frontend: "openai",
            backend: "ollama",
            model,
            known_model: true,
            channel: "local",
            status: 200,
            duration: Duration::from_millis(30),
            ttft,
            upstream_wait: Duration::from_millis(29),
            input_tokens: 4,
            output_tokens,
        }
    }

    /// The value of the sample that starts with `prefix` in `text`.
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn requests_recorded_through_a_threads_handles_add_up_in_their_own_gateway() {
        let (one, other) = (Metrics::new(true), Metrics::new(true));
        one.model_request(&finished("llama3.2", None, 0));
        one.model_request(&finished("llama3.2", Some(Duration::from_millis(5)), 7));
        one.model_request(&finished("qwen3", None, 2));
        other.model_request(&finished("llama3.2", None, 1));
        let (one, other) = (one.render([]), other.render([]));

        let requests = r#"diglot_requests_total{frontend="openai",backend="ollama",model="llama3.2",channel="local",status_class="2xx"}"#;
        assert_eq!(sample(&one, requests), Some(2.0), "{one}");
        assert_eq!(sample(&other, requests), Some(1.0), "{other}");
        let output = r#"diglot_tokens_total{model="llama3.2",channel="local",type="output"}"#;
        assert_eq!(sample(&one, output), Some(7.0));
        assert_eq!(sample(&other, output), Some(1.0));
        let input = r#"diglot_tokens_total{model="llama3.2",channel="local",type="input"}"#;
        assert_eq!(sample(&one, input), Some(8.0));
        // A series shows once it has a value: llama3.2's first answer came, qwen3's never.
        let ttft = r#"diglot_time_to_first_token_seconds_count{frontend="openai",model="#;
        assert_eq!(sample(&one, &format!(r#"{ttft}"llama3.2"}}"#)), Some(1.0));
        assert_eq!(sample(&one, &format!(r#"{ttft}"qwen3"}}"#)), None);
        assert_eq!(sample(&other, &format!(r#"{ttft}"llama3.2"}}"#)), None);
        let overhead = r#"diglot_overhead_seconds_count{frontend="openai"}"#;
        assert_eq!(sample(&one, overhead), Some(3.0));
    }

    #[test]
    fn http_requests_are_counted_per_gateway() {
        let (one, other) = (Metrics::new(true), Metrics::new(true));
        let labels = || HttpLabels {
            frontend: "ollama",
            route: "/api/chat",
            status_class: "2xx",
        };
        for _ in 0..3 {
            one.request_started();
            one.request_ended(labels(), false);
        }
        other.request_started();
        other.request_ended(labels(), false);
        let series = r#"diglot_http_requests_total{frontend="ollama",route="/api/chat",status_class="2xx"}"#;
        assert_eq!(sample(&one.render([]), series), Some(3.0));
        assert_eq!(sample(&other.render([]), series), Some(1.0));
    }
}
