//! `[log]`, `[metrics]` and `[telemetry]`: logs, the Prometheus endpoint and OTLP traces.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Log output: level, format, an optional rotated file, and the per-request access line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter (`info`, `diglot=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
    /// Also write the log to this file (JSON lines), rotated; empty: stderr only.
    pub file: PathBuf,
    pub rotation: LogRotation,
    /// Rotated files kept (0: all).
    pub max_files: usize,
    /// One line per request: trace id, token prefix, model, channel, status, latency, tokens.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
            file: PathBuf::new(),
            rotation: LogRotation::Daily,
            max_files: 7,
            access: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRotation {
    Minutely,
    Hourly,
    Daily,
    Never,
}

/// `GET /metrics` in the Prometheus text format.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// A bearer token scrapers present. Unset: open when authentication is off, else
    /// admins only. Never logged.
    pub token: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: String::new(),
        }
    }
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("token", &if self.token.is_empty() { "" } else { "<redacted>" })
            .finish()
    }
}

impl MetricsConfig {
    pub fn redacted(&self) -> Self {
        Self {
            token: if self.token.is_empty() {
                String::new()
            } else {
                "<redacted>".into()
            },
            ..self.clone()
        }
    }
}

/// OpenTelemetry traces exported over OTLP (to Jaeger, Tempo, a collector).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector, e.g. `http://localhost:4317` (gRPC) or `http://localhost:4318`
    /// (HTTP; `/v1/traces` is added). Empty: `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, else
    /// no traces.
    pub otlp_endpoint: String,
    /// `grpc` or `http/protobuf`; empty: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`.
    pub otlp_protocol: String,
    /// Sent with every export (e.g. an `authorization` header); `OTEL_EXPORTER_OTLP_HEADERS`
    /// works too. Never logged.
    pub otlp_headers: BTreeMap<String, String>,
    /// `OTEL_SERVICE_NAME` wins when set.
    pub service_name: String,
    /// Share of new traces recorded (0.0–1.0); a client's sampled `traceparent` is followed.
    pub sampling_ratio: f64,
    /// Record prompts and answers on spans (`gen_ai.input.messages`/`output.messages`).
    /// Off by default: they are personal data.
    pub capture_content: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            otlp_protocol: String::new(),
            otlp_headers: BTreeMap::new(),
            service_name: "diglot".into(),
            sampling_ratio: 1.0,
            capture_content: false,
        }
    }
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("otlp_protocol", &self.otlp_protocol)
            .field("otlp_headers", &self.otlp_headers.keys().collect::<Vec<_>>())
            .field("service_name", &self.service_name)
            .field("sampling_ratio", &self.sampling_ratio)
            .field("capture_content", &self.capture_content)
            .finish()
    }
}

impl TelemetryConfig {
    pub fn redacted(&self) -> Self {
        Self {
            otlp_endpoint: super::redact_password(&self.otlp_endpoint),
            otlp_headers: self
                .otlp_headers
                .keys()
                .map(|k| (k.clone(), "<redacted>".to_owned()))
                .collect(),
            ..self.clone()
        }
    }
}
