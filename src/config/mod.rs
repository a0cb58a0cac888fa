//! Configuration, in layers: built-in defaults < `profiles/NAME.toml` < `DIGLOT_*`
//! environment variables (`__` nests: `DIGLOT_UPSTREAM__URL`) < command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod access;
mod admin;
mod cors;
mod database;
mod env;
mod frontends;
mod models;
mod observability;
mod overlay;
mod redis;
mod reload;
mod responses;
mod routing;
mod server;
mod upstream;

pub use access::*;
pub use admin::*;
pub use cors::*;
pub use database::*;
pub use env::unknown_variables;
pub use frontends::*;
pub use models::*;
pub use observability::*;
pub use overlay::*;
pub use redis::*;
pub use reload::*;
pub use responses::*;
pub use routing::*;
pub use server::*;
pub use upstream::*;

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
    /// The listener's bounds and timeouts, and the drain on stop.
    pub server: ServerConfig,
    /// Log every request, upstream payload and chunk (secrets redacted).
    pub debug: bool,
    pub cors: CorsConfig,
    /// The one upstream of a simple set-up: shorthand for a single channel.
    pub upstream: UpstreamConfig,
    /// Several upstreams with priorities, weights and failover; replaces `upstream`.
    pub channels: Vec<UpstreamConfig>,
    pub routing: RoutingConfig,
    pub auth: AuthConfig,
    /// API tokens declared here, as digests (`diglot token create` keeps them in the store).
    pub tokens: Vec<TokenRecord>,
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
    pub reload: ReloadConfig,
    pub responses: ResponsesConfig,
    pub admin: AdminConfig,
    /// Shared limits and state for several replicas.
    pub redis: RedisConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".into(),
            base_path: String::new(),
            max_body_bytes: 32 * 1024 * 1024,
            server: ServerConfig::default(),
            debug: false,
            cors: CorsConfig::default(),
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
            reload: ReloadConfig::default(),
            responses: ResponsesConfig::default(),
            admin: AdminConfig::default(),
            redis: RedisConfig::default(),
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

/// Where the configuration comes from, kept to read it again on a reload.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// A profile name (`profiles/NAME.toml`) or a path to a TOML file.
    pub profile: Option<String>,
    pub overrides: Overrides,
}

impl Source {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.profile.as_deref(), &self.overrides)
    }

    /// The profile file, when there is one (to watch; a built-in profile never changes).
    pub fn file(&self) -> Option<PathBuf> {
        match locate(self.profile.as_deref()) {
            Ok(Some(Profile::File(path))) => Some(path),
            _ => None,
        }
    }

    /// Which profile the configuration is read from, for the start-up log.
    pub fn describe(&self) -> String {
        match locate(self.profile.as_deref()) {
            Ok(Some(profile)) => profile.to_string(),
            _ => "the built-in defaults".into(),
        }
    }
}

/// The profiles shipped with diglot, compiled in so `--profile NAME` works from any
/// directory; a `profiles/NAME.toml` in the working directory wins over them.
pub const BUILT_IN_PROFILES: &[(&str, &str)] = &[
    ("default", include_str!("../../profiles/default.toml")),
    ("kerlig", include_str!("../../profiles/kerlig.toml")),
    ("gateway", include_str!("../../profiles/gateway.toml")),
];

/// Where a profile is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    File(PathBuf),
    BuiltIn(&'static str),
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Profile::File(path) => write!(f, "the file {}", path.display()),
            Profile::BuiltIn(name) => write!(f, "the built-in profile '{name}'"),
        }
    }
}

/// A configuration that cannot be used, said so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("profile '{name}' not found: looked for {path} (built-in profiles: default, kerlig, gateway)")]
    ProfileNotFound { name: String, path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads the layers for `profile` (a name under `profiles/`, or a path to a TOML file).
    pub fn load(profile: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match locate(profile)? {
            Some(Profile::File(path)) => figment = figment.merge(Toml::file_exact(path)),
            Some(Profile::BuiltIn(name)) => {
                let text = BUILT_IN_PROFILES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, t)| t);
                figment = figment.merge(Toml::string(text));
            }
            None => {}
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

    /// The configuration as `check-config` shows it: keys, headers, tokens and URL
    /// passwords replaced by `<redacted>`.
    pub fn redacted(&self) -> Config {
        let mut shown = Config {
            upstream: self.upstream.redacted(),
            channels: self.channels.iter().map(|c| c.redacted()).collect(),
            metrics: self.metrics.redacted(),
            telemetry: self.telemetry.redacted(),
            admin: self.admin.redacted(),
            redis: self.redis.redacted(),
            store: self.store.redacted(),
            ..self.clone()
        };
        shown.ollama.fallback_url = shown.ollama.fallback_url.as_deref().map(redact_password);
        shown
    }

    /// A profile's text over the built-in defaults, validated, as `load` reads a
    /// profile file (without the environment and flags).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The channels to route over: `channels`, or `upstream` as the only one (named
    /// "default" unless it has a name).
    /// `[models]` aliases join the aliases of every channel whose models cover the name.
    pub fn channels(&self) -> Vec<UpstreamConfig> {
        let mut channels = if self.channels.is_empty() {
            let mut only = self.upstream.clone();
            if only.name.is_empty() {
                only.name = "default".into();
            }
            vec![only]
        } else {
            self.channels.clone()
        };
        for (model, settings) in self.models.iter().filter(|(_, s)| !s.aliases.is_empty()) {
            for channel in &mut channels {
                let covers = channel
                    .models
                    .iter()
                    .any(|m| m == model || wildmatch::WildMatch::new(m).matches(model));
                if covers {
                    for alias in &settings.aliases {
                        channel.aliases.entry(alias.clone()).or_insert_with(|| model.clone());
                    }
                }
            }
        }
        channels
    }

    /// Settings read once at start (the listener, the store, logs, traces, the metrics
    /// route, the file watch): a reload keeps their running values and names the ones it
    /// could not apply.
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<&'static str> {
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($field:ident).+, $name:literal) => {
                if self.$($field).+ != running.$($field).+ {
                    self.$($field).+ = running.$($field).+.clone();
                    kept.push($name);
                }
            };
        }
        keep!(listen, "listen");
        keep!(base_path, "base_path");
        keep!(server, "server");
        keep!(debug, "debug");
        keep!(store, "store");
        keep!(log, "log");
        keep!(metrics.enabled, "metrics.enabled");
        keep!(telemetry, "telemetry");
        keep!(reload, "reload");
        keep!(redis, "redis");
        kept
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
        self.store.location().map_err(ConfigError::Invalid)?;
        self.server.validate().map_err(ConfigError::Invalid)?;
        self.cors.validate().map_err(ConfigError::Invalid)?;
        self.admin.validate().map_err(ConfigError::Invalid)?;
        self.redis.validate().map_err(ConfigError::Invalid)?;
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
        if let Some(url) = self.ollama.fallback_url.as_deref().filter(|u| !u.is_empty())
            && !(url.starts_with("http://") || url.starts_with("https://")) | reqwest::Url::parse(url).is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "ollama.fallback_url: '{url}' is not an http(s) URL"
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
            if !settings.aliases.is_empty() && pattern.contains(['*', '?']) {
                return Err(ConfigError::Invalid(format!(
                    "models.\"{pattern}\".aliases: only an exact model name can have aliases, not a glob"
                )));
            }
            for (which, options) in [("defaults", &settings.defaults), ("forced", &settings.forced)] {
                Options::parse(options)
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

/// The profile `profile` names: a path, `profiles/NAME.toml` under the working
/// directory, or a built-in profile; none when no profile was asked for and there is no
/// `profiles/default.toml` (the built-in defaults are the default profile).
fn locate(profile: Option<&str>) -> Result<Option<Profile>, ConfigError> {
    let name = profile.unwrap_or("default");
    let is_path = name.contains('/') || name.ends_with(".toml");
    let path = if is_path {
        PathBuf::from(name)
    } else {
        Path::new("profiles").join(format!("{name}.toml"))
    };
    if path.is_file() {
        return Ok(Some(Profile::File(path)));
    }
    if profile.is_none() {
        return Ok(None);
    }
    match BUILT_IN_PROFILES
        .iter()
        .find(|(built_in, _)| !is_path && *built_in == name)
    {
        Some((built_in, _)) => Ok(Some(Profile::BuiltIn(built_in))),
        None => Err(ConfigError::ProfileNotFound {
            name: name.to_owned(),
            path,
        }),
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
