//! `[upstream]` and `[[channels]]`: upstream servers, their keys, timeouts and models;
//! and `[images]`, how image URLs are fetched for them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::routing::secs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, salvo::oapi::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Ollama,
    Openai,
    /// Anthropic's Messages API (Anthropic, or any server that speaks it).
    Anthropic,
}

impl UpstreamKind {
    /// As `gen_ai.provider.name` and metric labels say it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Ollama => "ollama",
            UpstreamKind::Openai => "openai",
            UpstreamKind::Anthropic => "anthropic",
        }
    }
}

/// A channel: one upstream server (or several sharing a kind, models and limits, when
/// keys carry their own URLs), the models it serves and how much of the traffic it gets.
#[derive(Clone, PartialEq, Serialize, Deserialize, salvo::oapi::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Shown in logs, `/health` and metrics; unique among channels.
    pub name: String,
    /// Route requests to it; false keeps it configured but out of service.
    pub enabled: bool,
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
    #[salvo(schema(value_type = Option<String>))]
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
    /// Largest frame of a streamed answer, in bytes: an NDJSON line from Ollama, an SSE
    /// event from an OpenAI-compatible server.
    pub max_line_bytes: usize,
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
    /// Anthropic-compatible upstreams: `max_tokens` sent when the client set none (the
    /// Messages API requires one).
    pub default_max_tokens: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            enabled: true,
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
            max_line_bytes: 16 * 1024 * 1024,
            models_cache_secs: 10,
            max_tokens_field: "max_tokens".into(),
            pass_options: ["top_k", "min_p", "typical_p", "repeat_penalty"]
                .map(String::from)
                .to_vec(),
            think_tags: false,
            reasoning_history: None,
            default_max_tokens: 4096,
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
        shown.url = redact_password(&shown.url);
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

    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
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
        if self.default_max_tokens == 0 {
            return invalid("default_max_tokens must be at least 1".into());
        }
        if self.max_line_bytes == 0 {
            return invalid("max_line_bytes must be more than 0".into());
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
pub struct KeyLine {
    pub url: Option<String>,
    pub key: String,
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
pub fn parse_key_line(line: &str) -> Option<Result<KeyLine, String>> {
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

/// `url` with the password of its user part, if it has one, shown as `<redacted>`
/// (`http://user:<redacted>@host/`); anything else exactly as written.
pub fn redact_password(url: &str) -> String {
    let has_password = url::Url::parse(url).is_ok_and(|u| u.password().is_some());
    let Some((scheme, rest)) = url.split_once("://").filter(|_| has_password) else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
    format!("{scheme}://{user}:<redacted>@{host}{tail}")
}

#[cfg(test)]
mod redact_tests {
    use super::redact_password;

    #[test]
    fn only_the_password_is_hidden() {
        assert_eq!(
            redact_password("https://bob:s3cr%40t@gpu.lan:8443/v1?x=1"),
            "https://bob:<redacted>@gpu.lan:8443/v1?x=1"
        );
        assert_eq!(redact_password("http://:pw@h"), "http://:<redacted>@h");
        assert_eq!(redact_password("http://bob@h/v1"), "http://bob@h/v1");
        assert_eq!(redact_password("http://h:11434"), "http://h:11434");
        assert_eq!(redact_password("not a url"), "not a url");
    }
}
