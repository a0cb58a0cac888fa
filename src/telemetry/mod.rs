//! What operators see of diglot: logs (stderr and an optional rotated file, with one
//! access line per request), OpenTelemetry traces exported over OTLP, and Prometheus
//! metrics.
//!
//! Spans exist only when traces are exported: they are created under the target
//! `diglot::otel`, which only the OpenTelemetry layer listens to, so without a collector
//! their call sites are disabled and cost nothing.

pub mod exchange;
pub mod metrics;
pub mod spans;
pub mod tail;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogConfig, LogFormat, LogRotation, TelemetryConfig};

pub use exchange::Exchange;
pub use metrics::Metrics;

/// Where spans go: set once traces are exported.
static TRACES: AtomicBool = AtomicBool::new(false);

/// Whether spans are recorded and exported.
pub fn tracing_on() -> bool {
    TRACES.load(Ordering::Relaxed)
}

/// Whether prompts and answers go on spans (`telemetry.capture_content`).
static CAPTURE_CONTENT: AtomicBool = AtomicBool::new(false);

pub fn capture_content() -> bool {
    CAPTURE_CONTENT.load(Ordering::Relaxed)
}

/// Keeps the exporters alive; `shutdown` sends what is still queued.
pub struct Guard {
    provider: Option<SdkTracerProvider>,
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Guard {
    /// Exports the spans still queued (waits for the collector at most its timeout).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Logs only, for the commands that do not serve (no runtime, no exporter).
pub fn init_logs(log: &LogConfig, debug: bool) -> Guard {
    let (layers, file) = log_layers(log, debug);
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Guard {
        provider: None,
        _file: file,
    }
}

/// Logs, and traces when a collector is configured (in the profile or the standard
/// `OTEL_EXPORTER_OTLP_*` variables). Call inside the Tokio runtime: the gRPC exporter
/// needs it. Export runs on its own thread in batches, so a slow or missing collector
/// never holds up a request; what does not fit the queue is dropped.
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig, debug: bool) -> Result<Guard, String> {
    let (layers, file) = log_layers(log, debug);
    let provider = match exporter(telemetry)? {
        Some(exporter) => {
            let ratio = telemetry.sampling_ratio;
            let service = std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| telemetry.service_name.clone());
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let tracer = provider.tracer("diglot");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("diglot", tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(layers)
        .with(otel)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    TRACES.store(provider.is_some(), Ordering::Relaxed);
    CAPTURE_CONTENT.store(telemetry.capture_content, Ordering::Relaxed);
    Ok(Guard { provider, _file: file })
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// stderr (human-readable on a terminal unless told otherwise, else JSON lines), and
/// the optional rotated JSON file, both filtered by `RUST_LOG` or `log.level`.
fn log_layers(log: &LogConfig, debug: bool) -> (Vec<BoxedLayer>, Option<tracing_appender::non_blocking::WorkerGuard>) {
    use std::io::IsTerminal;
    let filter = || {
        let level = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| log.level.clone());
        let mut filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
        if debug {
            filter = filter.add_directive("diglot=debug".parse().expect("a static directive parses"));
        }
        // Spans are for the trace exporter; the access line carries their ids.
        filter.add_directive("diglot::otel=off".parse().expect("a static directive parses"))
    };
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let stderr: BoxedLayer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let mut layers = vec![stderr];
    let mut guard = None;
    if !log.file.as_os_str().is_empty() {
        let directory = log.file.parent().filter(|p| !p.as_os_str().is_empty());
        let name = log.file.file_name().map(|n| n.to_string_lossy().into_owned());
        let appender = tracing_appender::rolling::RollingFileAppender::builder()
            .rotation(match log.rotation {
                LogRotation::Minutely => tracing_appender::rolling::Rotation::MINUTELY,
                LogRotation::Hourly => tracing_appender::rolling::Rotation::HOURLY,
                LogRotation::Daily => tracing_appender::rolling::Rotation::DAILY,
                LogRotation::Never => tracing_appender::rolling::Rotation::NEVER,
            })
            .filename_prefix(name.unwrap_or_else(|| "diglot.log".into()))
            // 0 keeps every file.
            .max_log_files(log.max_files);
        match appender.build(directory.unwrap_or(std::path::Path::new("."))) {
            Ok(appender) => {
                let (writer, flush) = tracing_appender::non_blocking(appender);
                layers.push(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_ansi(false)
                        .with_writer(writer)
                        .with_filter(filter())
                        .boxed(),
                );
                guard = Some(flush);
            }
            Err(e) => eprintln!("diglot: cannot write the log file {}: {e}", log.file.display()),
        }
    }
    (layers, guard)
}

/// The OTLP span exporter the configuration asks for, if any.
fn exporter(config: &TelemetryConfig) -> Result<Option<opentelemetry_otlp::SpanExporter>, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if config.otlp_endpoint.is_empty() && !from_env {
        return Ok(None);
    }
    let protocol = Some(config.otlp_protocol.clone())
        .filter(|p| !p.is_empty())
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "grpc".into());
    let timeout = Duration::from_secs(5);
    let built = match protocol.as_str() {
        "grpc" => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(timeout);
            if !config.otlp_endpoint.is_empty() {
                builder = builder.with_endpoint(&config.otlp_endpoint);
            }
            if !config.otlp_headers.is_empty() {
                let headers = header_map(&config.otlp_headers)?;
                builder = builder.with_metadata(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
                    headers,
                ));
            }
            builder.build()
        }
        "http/protobuf" => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(timeout);
            if !config.otlp_endpoint.is_empty() {
                // Given in code the URL is used as it is; the signal path is ours to add.
                let base = config.otlp_endpoint.trim_end_matches('/');
                let url = if base.ends_with("/v1/traces") {
                    base.to_owned()
                } else {
                    format!("{base}/v1/traces")
                };
                builder = builder.with_endpoint(url);
            }
            if !config.otlp_headers.is_empty() {
                builder = builder.with_headers(config.otlp_headers.clone().into_iter().collect());
            }
            builder.build()
        }
        other => {
            return Err(format!(
                "OTLP protocol '{other}' is neither \"grpc\" nor \"http/protobuf\""
            ));
        }
    };
    built
        .map(Some)
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))
}

/// Configured export headers as HTTP headers, refusing names or values HTTP cannot carry.
fn header_map(headers: &std::collections::BTreeMap<String, String>) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("telemetry.otlp_headers: '{name}' is not a header name"))?;
        let mut value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("telemetry.otlp_headers: the value of '{name}' is not a header value"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}
