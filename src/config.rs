//! Configuration, in layers: built-in defaults < `profiles/NAME.toml` < `DIGLOT_*`
//! environment variables (`__` nests: `DIGLOT_UPSTREAM__URL`) < command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything diglot can be told. `profiles/default.toml` documents each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. `:11434` means every interface.
    pub listen: String,
    /// A prefix every route is also served under, e.g. `/ollama`.
    pub base_path: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Log every request, upstream payload and chunk (secrets redacted).
    pub debug: bool,
    /// The one upstream of a simple set-up: shorthand for a single channel.
    pub upstream: UpstreamConfig,
    /// Several upstreams with priorities, weights and failover; replaces `upstream`.
    pub channels: Vec<UpstreamConfig>,
    pub routing: RoutingConfig,
    pub auth: AuthConfig,
    /// API tokens declared here, as digests (`diglot token create` keeps them in the store).
    pub tokens: Vec<crate::store::TokenRecord>,
    pub limits: LimitsConfig,
    pub store: StoreConfig,
    pub images: ImageConfig,
    pub openai: OpenAiConfig,
    pub ollama: OllamaConfig,
    /// What diglot should say about a model that its upstream cannot tell, keyed by the
    /// upstream's model id.
    pub models: BTreeMap<String, ModelSettings>,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".into(),
            base_path: String::new(),
            max_body_bytes: 32 * 1024 * 1024,
            debug: false,
            upstream: UpstreamConfig::default(),
            channels: Vec::new(),
            routing: RoutingConfig::default(),
            auth: AuthConfig::default(),
            tokens: Vec::new(),
            limits: LimitsConfig::default(),
            store: StoreConfig::default(),
            images: ImageConfig::default(),
            openai: OpenAiConfig::default(),
            ollama: OllamaConfig::default(),
            models: BTreeMap::new(),
            cache: CacheConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Ollama,
    Openai,
}

impl UpstreamKind {
    /// As `gen_ai.provider.name` and metric labels say it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Ollama => "ollama",
            UpstreamKind::Openai => "openai",
        }
    }
}

/// A channel: one upstream server (or several sharing a kind, models and limits, when
/// keys carry their own URLs), the models it serves and how much of the traffic it gets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Shown in logs, `/health` and metrics; unique among channels.
    pub name: String,
    pub kind: UpstreamKind,
    #[serde(alias = "base_url")]
    pub url: String,
    /// Sent as `Authorization: Bearer`. Never logged.
    pub api_key: Option<String>,
    /// An environment variable holding the key, so profiles can be shared without it.
    pub api_key_env: Option<String>,
    /// More keys, rotated per request, as lines: `sk-...`, `URL|KEY`, `KEY|URL`,
    /// `URL#KEY` or `URL/KEY` (a key with its own base URL). Never logged.
    pub keys: Vec<String>,
    /// A file of such lines (`#` starts a comment), read at start.
    pub keys_file: Option<PathBuf>,
    /// Models served: exact names, globs (`llama*`), or `*` for all the upstream lists.
    pub models: Vec<String>,
    /// Names clients may use for this channel's models: `"gpt-4o" = "llama3.2:70b"`.
    pub aliases: BTreeMap<String, String>,
    /// Higher tiers are tried first; lower ones take over when a tier has nobody healthy.
    pub priority: i32,
    /// Share of the traffic within a priority tier.
    pub weight: u32,
    /// Requests in flight at once, 0 for no limit (and per key).
    pub max_concurrency: usize,
    pub max_concurrency_per_key: usize,
    /// Extra headers sent with every upstream request.
    pub headers: BTreeMap<String, String>,
    pub connect_timeout_secs: f64,
    /// Longest wait for the upstream's response headers (model loading included).
    pub first_byte_timeout_secs: f64,
    /// Longest silence between two chunks of a streamed answer.
    pub idle_timeout_secs: f64,
    /// Longest a whole request may take; 0 means no limit.
    pub total_timeout_secs: f64,
    /// How long the upstream's model list and model details are cached.
    pub models_cache_secs: u64,
    /// OpenAI-compatible upstreams: the field that carries the token limit,
    /// `max_tokens` (most servers) or `max_completion_tokens` (OpenAI's newer models).
    pub max_tokens_field: String,
    /// OpenAI-compatible upstreams: Ollama options sent as extra body fields when a client
    /// sets them (vLLM, llama.cpp and OpenRouter take these; OpenAI itself does not).
    pub pass_options: Vec<String>,
    /// OpenAI-compatible upstreams: move `<think>…</think>` at the start of the content
    /// into reasoning, for servers that leave it there.
    pub think_tags: bool,
    /// OpenAI-compatible upstreams: send earlier assistant reasoning back in this message
    /// field (`reasoning_content` or `reasoning`); unset drops it.
    pub reasoning_history: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: UpstreamKind::Ollama,
            url: "http://127.0.0.1:11434".into(),
            api_key: None,
            api_key_env: None,
            keys: Vec::new(),
            keys_file: None,
            models: vec!["*".into()],
            aliases: BTreeMap::new(),
            priority: 0,
            weight: 1,
            max_concurrency: 0,
            max_concurrency_per_key: 0,
            headers: BTreeMap::new(),
            connect_timeout_secs: 5.0,
            first_byte_timeout_secs: 300.0,
            idle_timeout_secs: 120.0,
            total_timeout_secs: 0.0,
            models_cache_secs: 10,
            max_tokens_field: "max_tokens".into(),
            pass_options: ["top_k", "min_p", "typical_p", "repeat_penalty"]
                .map(String::from)
                .to_vec(),
            think_tags: false,
            reasoning_history: None,
        }
    }
}

/// Never shows the API key or header values, wherever a config gets printed.
impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("keys", &self.keys.len())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl UpstreamConfig {
    /// A copy safe to show: the API key and header values replaced.
    pub fn redacted(&self) -> Self {
        let mut shown = self.clone();
        if shown.api_key.is_some() {
            shown.api_key = Some("<redacted>".into());
        }
        shown.keys.iter_mut().for_each(|k| *k = "<redacted>".into());
        shown.headers.values_mut().for_each(|v| *v = "<redacted>".into());
        shown
    }

    pub fn connect_timeout(&self) -> Duration {
        secs(self.connect_timeout_secs)
    }
    pub fn first_byte_timeout(&self) -> Duration {
        secs(self.first_byte_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        secs(self.idle_timeout_secs)
    }
    pub fn total_timeout(&self) -> Option<Duration> {
        (self.total_timeout_secs > 0.0).then(|| secs(self.total_timeout_secs))
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(format!("{at}: {why}")));
        for endpoint in self.endpoints()? {
            let url = match reqwest::Url::parse(&endpoint.url) {
                Ok(url) => url,
                Err(e) => return invalid(format!("url '{}' is not a URL: {e}", endpoint.url)),
            };
            if !matches!(url.scheme(), "http" | "https") {
                return invalid(format!("url '{url}' must start with http:// or https://"));
            }
        }
        if !matches!(self.max_tokens_field.as_str(), "max_tokens" | "max_completion_tokens") {
            return invalid(format!(
                "max_tokens_field '{}' is neither \"max_tokens\" nor \"max_completion_tokens\"",
                self.max_tokens_field
            ));
        }
        if let Some(field) = &self.reasoning_history
            && field != "reasoning_content"
            && field != "reasoning"
        {
            return invalid(format!(
                "reasoning_history '{field}' is neither \"reasoning_content\" nor \"reasoning\""
            ));
        }
        if self.models.is_empty() && self.aliases.is_empty() {
            return invalid("serves no model: set models (\"*\" for all the upstream lists) or aliases".into());
        }
        if let Some((alias, _)) = self.aliases.iter().find(|(a, t)| a.is_empty() || t.is_empty()) {
            return invalid(format!("alias '{alias}' needs a name and a target model"));
        }
        Ok(())
    }

    /// Every key with the base URL it goes to: `api_key`, `keys`, then `keys_file`. One
    /// entry without a key when there are none.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, ConfigError> {
        let invalid = |line: usize, source: &str, why: String| {
            ConfigError::Invalid(format!("channel '{}': {source} entry {line}: {why}", self.name))
        };
        let mut endpoints = Vec::new();
        if let Some(key) = self.api_key.as_deref().filter(|k| !k.is_empty()) {
            endpoints.push(Endpoint {
                url: self.url.clone(),
                key: Some(key.to_owned()),
            });
        }
        if let Some(name) = &self.api_key_env {
            let key = std::env::var(name).map_err(|_| {
                ConfigError::Invalid(format!(
                    "channel '{}': api_key_env names {name}, which is not set",
                    self.name
                ))
            })?;
            endpoints.push(Endpoint {
                url: self.url.clone(),
                key: Some(key),
            });
        }
        for (i, line) in self.keys.iter().enumerate() {
            if let Some(parsed) = parse_key_line(line) {
                endpoints.push(parsed.map_err(|why| invalid(i + 1, "keys", why))?.or_url(&self.url));
            }
        }
        if let Some(path) = &self.keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!("channel '{}': keys_file {}: {e}", self.name, path.display()))
            })?;
            for (i, line) in text.lines().enumerate() {
                if let Some(parsed) = parse_key_line(line) {
                    endpoints.push(
                        parsed
                            .map_err(|why| invalid(i + 1, &path.display().to_string(), why))?
                            .or_url(&self.url),
                    );
                }
            }
        }
        if endpoints.is_empty() {
            endpoints.push(Endpoint {
                url: self.url.clone(),
                key: None,
            });
        }
        Ok(endpoints)
    }
}

/// Where one key of a channel goes.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    pub url: String,
    pub key: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A key line with an optional URL of its own.
struct KeyLine {
    url: Option<String>,
    key: String,
}

impl KeyLine {
    fn or_url(self, url: &str) -> Endpoint {
        Endpoint {
            url: self.url.unwrap_or_else(|| url.to_owned()),
            key: Some(self.key),
        }
    }
}

/// One line of a keys list, in the formats the seed gateways accept: `sk-...`, `URL|KEY`,
/// `KEY|URL`, `URL#KEY`, `URL/KEY` (the last path segment is the key). `None` for blank
/// lines and `#` comments. Errors never quote the key.
fn parse_key_line(line: &str) -> Option<Result<KeyLine, String>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    let checked = |url: &str, key: &str| -> Result<KeyLine, String> {
        let url = url.trim().trim_end_matches('/');
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err("the key is empty or contains spaces".into());
        }
        reqwest::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        Ok(KeyLine {
            url: Some(url.to_owned()),
            key: key.to_owned(),
        })
    };
    Some(if let Some((left, right)) = line.split_once('|') {
        match (is_url(left.trim()), is_url(right.trim())) {
            (true, false) => checked(left, right),
            (false, true) => checked(right, left),
            _ => Err("expected URL|KEY or KEY|URL".into()),
        }
    } else if is_url(line) {
        if let Some((url, key)) = line.split_once('#') {
            checked(url, key)
        } else {
            match line.trim_end_matches('/').rsplit_once('/') {
                Some((url, key)) if url.contains("://") && !url.ends_with('/') => checked(url, key),
                _ => Err("a URL without a key (expected URL#KEY, URL|KEY or URL/KEY)".into()),
            }
        }
    } else if line.contains(char::is_whitespace) {
        Err("a key cannot contain spaces".into())
    } else {
        Ok(KeyLine {
            url: None,
            key: line.to_owned(),
        })
    })
}

/// How requests are spread over channels and retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Further attempts after the first, each on a channel or key not yet tried.
    pub max_retries: u32,
    /// Backoff before attempt n: min(base × 2^(n-1), max), ±20 % jitter; an upstream's
    /// `Retry-After` (up to `backoff_max_ms`) wins.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a request waits for a slot when every channel is at `max_concurrency`
    /// (0: answer 429 at once), and how many may wait per channel.
    pub queue_timeout_secs: f64,
    pub max_queue: usize,
    /// A key that got 401/403 is left out for this long.
    pub bad_key_secs: f64,
    /// Passive health: a channel with at least `min_requests` outcomes in the last
    /// `window_secs`, `failure_ratio` or more of them failures, is taken out for
    /// `cooldown_secs`, then lets one probe request through.
    pub window_secs: f64,
    pub min_requests: usize,
    pub failure_ratio: f64,
    pub cooldown_secs: f64,
    /// Active health: every channel's model list (`/api/tags` or `/v1/models`, never a
    /// completion) is fetched this often, which also refreshes the catalog; 0 turns it off.
    pub check_interval_secs: f64,
    /// Seeds the weighted choice, for reproducible tests; unset is random.
    pub seed: Option<u64>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            backoff_base_ms: 50,
            backoff_max_ms: 2000,
            queue_timeout_secs: 10.0,
            max_queue: 64,
            bad_key_secs: 300.0,
            window_secs: 60.0,
            min_requests: 5,
            failure_ratio: 0.8,
            cooldown_secs: 30.0,
            check_interval_secs: 30.0,
            seed: None,
        }
    }
}

impl RoutingConfig {
    pub fn queue_timeout(&self) -> Duration {
        secs(self.queue_timeout_secs)
    }
    pub fn bad_key(&self) -> Duration {
        secs(self.bad_key_secs)
    }
    pub fn window(&self) -> Duration {
        secs(self.window_secs)
    }
    pub fn cooldown(&self) -> Duration {
        secs(self.cooldown_secs)
    }
    pub fn check_interval(&self) -> Option<Duration> {
        (self.check_interval_secs > 0.0).then(|| secs(self.check_interval_secs))
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Who may call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// A file with one key per line (`#` comments), re-read when it changes.
    pub keys_file: Option<PathBuf>,
    /// Addresses and CIDRs that may call at all (empty: any) and that may not.
    pub allow_ips: Vec<String>,
    pub deny_ips: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    pub trust_proxy: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Tokens are required as soon as any exist (profile, store, `API_TOKEN`, keys file).
    #[default]
    Auto,
    /// Nobody needs a token (diglot warns when not listening on loopback).
    None,
    /// A token is always required.
    Tokens,
}

/// Rate limits for everyone and per client address (per-token ones are on the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests and tokens per minute for the whole gateway; 0: no limit.
    pub rpm: u64,
    pub tpm: u64,
    /// The same per client IP address.
    pub ip_rpm: u64,
    pub ip_tpm: u64,
    /// The completion size reserved against token limits and quotas when a request sets
    /// no `max_tokens`.
    pub default_max_tokens: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            rpm: 0,
            tpm: 0,
            ip_rpm: 0,
            ip_tpm: 0,
            default_max_tokens: 1024,
        }
    }
}

/// Where tokens and usage records live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The directory of `diglot.db` (SQLite), created if missing.
    pub data_dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

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
            otlp_headers: self
                .otlp_headers
                .keys()
                .map(|k| (k.clone(), "<redacted>".to_owned()))
                .collect(),
            ..self.clone()
        }
    }
}

/// Fetching images that clients give as http(s) URLs, for upstreams that need bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Allow URLs that resolve to loopback, private or link-local addresses. Off by
    /// default so the gateway cannot be used to reach internal hosts.
    pub allow_private: bool,
    pub max_bytes: usize,
    pub timeout_secs: f64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            max_bytes: 20 * 1024 * 1024,
            timeout_secs: 10.0,
        }
    }
}

impl ImageConfig {
    pub fn timeout(&self) -> Duration {
        secs(self.timeout_secs)
    }
}

/// The OpenAI-facing side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Which delta/message fields carry reasoning text: `reasoning_content` (DeepSeek, vLLM),
    /// `reasoning` (Ollama, OpenRouter), or both.
    pub reasoning_fields: Vec<String>,
    pub system_fingerprint: String,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            reasoning_fields: vec!["reasoning_content".into(), "reasoning".into()],
            system_fingerprint: "fp_diglot".into(),
        }
    }
}

/// The Ollama-facing side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OllamaConfig {
    /// What `/api/version` answers: plain dotted integers, recent enough for Codex (0.13.4)
    /// and Copilot (0.6.4).
    pub version: String,
    /// Appended to model names without a tag in `/api/tags` (Open WebUI needs a colon);
    /// accepted with or without it on input.
    pub tag_suffix: String,
    /// An Ollama server that model management (`pull` of unknown models, `push`, `create`,
    /// `copy`, `delete`, `blobs`) is forwarded to. Unset: the upstream itself when it is an
    /// Ollama, else those calls get a clear error.
    pub fallback_url: Option<String>,
}

impl Default for OllamaConfig {
    fn default() -> Self {
        Self {
            version: "0.13.5".into(),
            tag_suffix: ":latest".into(),
            fallback_url: None,
        }
    }
}

/// Policy and facts for the models a `[models."PATTERN"]` key matches: the name a client
/// uses (an alias included), or the upstream's name for it; exact, or a glob.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Shown by `/v1/models` (`name`), `/api/tags` (`display_name`) and `/api/show`
    /// (`general.basename`); the id clients send stays the same.
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// Options applied when the client sent none, under either API's name (`num_ctx`,
    /// `temperature`, `max_tokens`, `think`, `reasoning_effort`, `keep_alive`...).
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Options that replace whatever the client sent.
    pub forced: BTreeMap<String, serde_json::Value>,
    /// Of: completion, tools, vision, thinking, embedding, insert.
    pub capabilities: Option<Vec<String>>,
    pub context_length: Option<u64>,
    /// Architecture family, e.g. "llama" (`general.architecture` in `/api/show`).
    pub family: Option<String>,
    pub parameter_size: Option<String>,
    pub quantization: Option<String>,
}

/// The response cache (exact match, in memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache embeddings (deterministic: on by default).
    pub embeddings: bool,
    /// Cache chat and completion answers.
    pub chat: bool,
    /// Also cache chats that sample at random (neither `temperature` 0 nor a `seed`).
    pub chat_nondeterministic: bool,
    /// Bound on what the cache holds, in bytes (answers' text and vectors), for chats
    /// and for embeddings each.
    pub max_bytes: u64,
    /// How long an answer is served from the cache, in seconds.
    pub ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            embeddings: true,
            chat: false,
            chat_nondeterministic: false,
            max_bytes: 64 * 1024 * 1024,
            ttl_secs: 3600,
        }
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(skip_serializing_if = "UpstreamOverrides::is_empty")]
    pub upstream: UpstreamOverrides,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<UpstreamKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl UpstreamOverrides {
    fn is_empty(&self) -> bool {
        self.kind.is_none() && self.url.is_none() && self.api_key.is_none()
    }
}

/// A configuration that cannot be used, said so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("profile '{name}' not found: looked for {path}")]
    ProfileNotFound { name: String, path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads the layers for `profile` (a name under `profiles/`, or a path to a TOML file).
    pub fn load(profile: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = profile_path(profile)? {
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only variables naming a setting: DIGLOT_PROFILE and the tooling's own
        // DIGLOT_*_HOME variables are not configuration.
        let settings: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let env = Env::prefixed("DIGLOT_").split("__").filter(move |key| {
            // The filter sees the raw name (`UPSTREAM__URL`): compare its first part.
            let first = key
                .as_str()
                .split("__")
                .next()
                .unwrap_or_default()
                .split('.')
                .next()
                .unwrap_or_default();
            settings.iter().any(|s| s.eq_ignore_ascii_case(first))
        });
        let mut config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        if !overrides.upstream.is_empty() {
            // An upstream given on the command line is the whole set-up.
            config.channels.clear();
        }
        config.validate()?;
        Ok(config)
    }

    /// The channels to route over: `channels`, or `upstream` as the only one (named
    /// "default" unless it has a name).
    pub fn channels(&self) -> Vec<UpstreamConfig> {
        if !self.channels.is_empty() {
            return self.channels.clone();
        }
        let mut only = self.upstream.clone();
        if only.name.is_empty() {
            only.name = "default".into();
        }
        vec![only]
    }

    /// The socket address to bind, reading Go-style `:PORT` as every interface.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let text = if self.listen.starts_with(':') {
            format!("0.0.0.0{}", self.listen)
        } else {
            self.listen.clone()
        };
        text.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen: '{}' is not an address like 127.0.0.1:3000 or :3000",
                self.listen
            ))
        })
    }

    /// The base path with one leading slash and none trailing ("" when unset).
    pub fn base_path(&self) -> String {
        let trimmed = self.base_path.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !self.channels.is_empty() && self.upstream != UpstreamConfig::default() {
            return Err(ConfigError::Invalid(
                "both [upstream] and [[channels]] are set: move the upstream into [[channels]]".into(),
            ));
        }
        let channels = self.channels();
        for (i, channel) in channels.iter().enumerate() {
            let at = if self.channels.is_empty() {
                "upstream".to_owned()
            } else if channel.name.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "channels[{i}]: every channel needs a name"
                )));
            } else {
                format!("channel '{}'", channel.name)
            };
            if channels[..i].iter().any(|c| c.name == channel.name) {
                return Err(ConfigError::Invalid(format!("{at}: the name is used twice")));
            }
            channel.validate(&at)?;
        }
        let version_ok = self.ollama.version.split('.').count() == 3
            && self
                .ollama
                .version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !version_ok {
            return Err(ConfigError::Invalid(format!(
                "ollama.version: '{}' must be plain dotted integers like 0.13.5 (clients parse it)",
                self.ollama.version
            )));
        }
        for field in &self.openai.reasoning_fields {
            if field != "reasoning_content" && field != "reasoning" {
                return Err(ConfigError::Invalid(format!(
                    "openai.reasoning_fields: '{field}' is neither \"reasoning_content\" nor \"reasoning\""
                )));
            }
        }
        for (pattern, settings) in &self.models {
            for (which, options) in [("defaults", &settings.defaults), ("forced", &settings.forced)] {
                crate::gateway::policy::Options::parse(options)
                    .map_err(|e| ConfigError::Invalid(format!("models.\"{pattern}\".{which}: {e}")))?;
            }
        }
        let telemetry = &self.telemetry;
        if !(0.0..=1.0).contains(&telemetry.sampling_ratio) {
            return Err(ConfigError::Invalid(format!(
                "telemetry.sampling_ratio: {} is not between 0.0 and 1.0",
                telemetry.sampling_ratio
            )));
        }
        if !matches!(telemetry.otlp_protocol.as_str(), "" | "grpc" | "http/protobuf") {
            return Err(ConfigError::Invalid(format!(
                "telemetry.otlp_protocol: '{}' is neither \"grpc\" nor \"http/protobuf\"",
                telemetry.otlp_protocol
            )));
        }
        if !telemetry.otlp_endpoint.is_empty()
            && !telemetry.otlp_endpoint.starts_with("http://")
            && !telemetry.otlp_endpoint.starts_with("https://")
        {
            return Err(ConfigError::Invalid(format!(
                "telemetry.otlp_endpoint: '{}' must start with http:// or https://",
                telemetry.otlp_endpoint
            )));
        }
        for (name, value) in &telemetry.otlp_headers {
            if reqwest::header::HeaderName::try_from(name.as_str()).is_err()
                || reqwest::header::HeaderValue::try_from(value.as_str()).is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "telemetry.otlp_headers: '{name}' is not a valid header name and value"
                )));
            }
        }
        // moka refuses lifetimes beyond 1000 years; a year is long enough for anything.
        if !(1..=366 * 86_400).contains(&self.cache.ttl_secs) {
            return Err(ConfigError::Invalid(format!(
                "cache.ttl_secs: {} is not between 1 and 31622400 (a year)",
                self.cache.ttl_secs
            )));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid(format!("log.level: '{}': {e}", self.log.level)));
        }
        Ok(())
    }
}

fn profile_path(profile: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
    let name = profile.unwrap_or("default");
    let is_path = name.contains('/') || name.ends_with(".toml");
    let path = if is_path {
        PathBuf::from(name)
    } else {
        Path::new("profiles").join(format!("{name}.toml"))
    };
    if path.is_file() {
        Ok(Some(path))
    } else if profile.is_none() {
        // No profile asked for and none on disk: the built-in defaults are the default profile.
        Ok(None)
    } else {
        Err(ConfigError::ProfileNotFound {
            name: name.to_owned(),
            path,
        })
    }
}

/// figment names the key and the file; keep all of what it says.
fn describe(error: figment::Error) -> String {
    error.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_file_matches_built_in_defaults() {
        let file = Figment::new().merge(Toml::file_exact(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/default.toml"
        )));
        let from_file: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(file)
            .extract()
            .unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order_and_errors_name_file_and_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "p.toml",
                "listen = \"127.0.0.1:9000\"\n[upstream]\nurl = \"http://a:1\"\n",
            )?;
            jail.set_env("DIGLOT_UPSTREAM__URL", "http://b:2");
            jail.set_env("DIGLOT_CLIENTS_HOME", "/tmp/not-a-setting");
            let config = Config::load(Some("p.toml"), &Overrides::default()).unwrap();
            assert_eq!(config.listen, "127.0.0.1:9000");
            assert_eq!(config.upstream.url, "http://b:2");

            let flags = Overrides {
                listen: Some(":8080".into()),
                ..Default::default()
            };
            let config = Config::load(Some("p.toml"), &flags).unwrap();
            assert_eq!(config.listen_addr().unwrap().to_string(), "0.0.0.0:8080");

            jail.create_file("bad.toml", "max_body_bytes = \"lots\"\n")?;
            let err = Config::load(Some("bad.toml"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_body_bytes") && err.contains("bad.toml"), "{err}");

            jail.set_env("DIGLOT_UPSTREAM__URLL", "typo");
            let err = Config::load(Some("p.toml"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("urll"), "a misspelt nested key is an error: {err}");

            let err = Config::load(Some("missing"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("profiles/missing.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn key_lines_in_every_seed_format() {
        let parsed = |line: &str| parse_key_line(line).map(|r| r.map(|k| (k.url.unwrap_or_default(), k.key)));
        let with = |url: &str, key: &str| Some(Ok((url.to_owned(), key.to_owned())));
        assert_eq!(parsed("sk-abc123"), with("", "sk-abc123"));
        assert_eq!(parsed("  sk-abc123  "), with("", "sk-abc123"));
        assert_eq!(
            parsed("https://api.example.com/v1|sk-a"),
            with("https://api.example.com/v1", "sk-a")
        );
        assert_eq!(
            parsed("sk-b|https://api.example.com/v1/"),
            with("https://api.example.com/v1", "sk-b")
        );
        assert_eq!(parsed("http://gpu:8000/v1#sk-c"), with("http://gpu:8000/v1", "sk-c"));
        assert_eq!(
            parsed("https://openrouter.ai/api/v1/sk-or-d"),
            with("https://openrouter.ai/api/v1", "sk-or-d")
        );
        assert_eq!(parsed("https://host/sk-e"), with("https://host", "sk-e"));
        assert_eq!(parsed(""), None);
        assert_eq!(parsed("   "), None);
        assert_eq!(parsed("# a comment with sk-secret"), None);
        for bad in [
            "https://host",
            "a b",
            "sk-x|sk-y",
            "https://a|https://b",
            "https://host#",
            "ftp:/x|sk",
        ] {
            let error = parsed(bad).unwrap().unwrap_err();
            assert!(!error.contains("sk-"), "errors never quote keys: {error}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn channels_take_keys_from_everywhere_and_are_validated() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "keys.txt",
                "# team keys\nsk-file-1\n\nhttps://eu.example.com/v1|sk-file-2\n",
            )?;
            jail.create_file(
                "gw.toml",
                r#"
[[channels]]
name = "cloud"
kind = "openai"
base_url = "https://api.example.com/v1"
api_key = "sk-main"
keys = ["sk-extra"]
keys_file = "keys.txt"
models = ["gpt-*"]
aliases = { "fast" = "gpt-4o-mini" }

[[channels]]
name = "gpu"
url = "http://gpu:11434"
priority = 10
"#,
            )?;
            let config = Config::load(Some("gw.toml"), &Overrides::default()).unwrap();
            let channels = config.channels();
            assert_eq!(channels.len(), 2);
            let endpoints = channels[0].endpoints().unwrap();
            let shown: Vec<(&str, &str)> = endpoints
                .iter()
                .map(|e| (e.url.as_str(), e.key.as_deref().unwrap()))
                .collect();
            assert_eq!(
                shown,
                [
                    ("https://api.example.com/v1", "sk-main"),
                    ("https://api.example.com/v1", "sk-extra"),
                    ("https://api.example.com/v1", "sk-file-1"),
                    ("https://eu.example.com/v1", "sk-file-2"),
                ]
            );
            assert!(
                !format!("{:?} {:?}", channels[0], endpoints).contains("sk-"),
                "Debug never shows keys"
            );
            assert_eq!(channels[1].endpoints().unwrap()[0].key, None);

            // Flags name the one upstream: they replace the profile's channels.
            let flags = Overrides {
                upstream: UpstreamOverrides {
                    url: Some("http://other:11434".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let config = Config::load(Some("gw.toml"), &flags).unwrap();
            assert_eq!(config.channels().len(), 1);
            assert_eq!(config.channels()[0].url, "http://other:11434");

            for (body, wanted) in [
                ("[[channels]]\nurl = \"http://a:1\"\n", "needs a name"),
                ("[[channels]]\nname = \"a\"\n[[channels]]\nname = \"a\"\n", "used twice"),
                (
                    "[upstream]\nurl = \"http://b:1\"\n[[channels]]\nname = \"a\"\n",
                    "both [upstream] and [[channels]]",
                ),
                ("[[channels]]\nname = \"a\"\nkeys = [\"https://x\"]\n", "keys entry 1"),
                ("[[channels]]\nname = \"a\"\nmodels = []\n", "serves no model"),
                ("[[channels]]\nname = \"a\"\nkeys_file = \"nope.txt\"\n", "nope.txt"),
            ] {
                jail.create_file("bad.toml", body)?;
                let err = Config::load(Some("bad.toml"), &Overrides::default())
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(wanted), "{body}: {err}");
            }
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn shipped_profiles_load() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OPENROUTER_API_KEY", "sk-or-test");
            for name in ["default", "kerlig", "gateway"] {
                let path = format!("{}/profiles/{name}.toml", env!("CARGO_MANIFEST_DIR"));
                let config = Config::load(Some(&path), &Overrides::default());
                assert!(config.is_ok(), "{name}: {:?}", config.err());
                for channel in config.unwrap().channels() {
                    assert!(channel.endpoints().is_ok(), "{name}");
                }
            }
            Ok(())
        });
    }
}
