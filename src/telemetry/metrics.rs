//! The Prometheus metrics of one gateway, served at `GET /metrics`.
//!
//! Labels stay low in cardinality: frontends, backends, channel names, route patterns,
//! status classes, and model names only once the catalog knew them (an unknown name a
//! client made up is counted as `model=""`). Never token values, never IPs.

use std::sync::atomic::AtomicU64;
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
        let model = if done.known_model {
            done.model.to_owned()
        } else {
            String::new()
        };
        self.requests
            .get_or_create(&RequestLabels {
                frontend: done.frontend,
                backend: done.backend,
                model: model.clone(),
                channel: done.channel.to_owned(),
                status_class: status_class(done.status),
            })
            .inc();
        let labels = ModelLabels {
            frontend: done.frontend,
            model: model.clone(),
        };
        self.duration
            .get_or_create(&labels)
            .observe(done.duration.as_secs_f64());
        if let Some(ttft) = done.ttft {
            self.ttft.get_or_create(&labels).observe(ttft.as_secs_f64());
        }
        self.overhead
            .get_or_create(&FrontendLabels {
                frontend: done.frontend,
            })
            .observe(done.duration.saturating_sub(done.upstream_wait).as_secs_f64());
        for (kind, count) in [("input", done.input_tokens), ("output", done.output_tokens)] {
            if count > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: model.clone(),
                        channel: done.channel.to_owned(),
                        r#type: kind,
                    })
                    .inc_by(count);
            }
        }
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
        self.http_requests.get_or_create(&labels).inc();
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
