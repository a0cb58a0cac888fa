//! `[auth]`, `[[tokens]]`, `[limits]` and `[store]`: who may call, how much, and where
//! tokens and usage records are kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::database::{DatabaseUrl, redact_database_url};

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
    /// Limits for tokens that set none of their own (0: none): requests and tokens per
    /// minute, tokens per calendar month, requests at once.
    pub token_rpm: u64,
    pub token_tpm: u64,
    pub token_monthly_quota: u64,
    pub token_max_concurrent: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            rpm: 0,
            tpm: 0,
            ip_rpm: 0,
            ip_tpm: 0,
            default_max_tokens: 1024,
            token_rpm: 0,
            token_tpm: 0,
            token_monthly_quota: 0,
            token_max_concurrent: 0,
        }
    }
}

/// Where tokens and usage records live.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The directory of `diglot.db` (SQLite), created if missing; empty: no store.
    pub data_dir: PathBuf,
    /// Another store than `diglot.db` under `data_dir`: `sqlite:PATH` (a file), or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, shared by several replicas.
    pub url: String,
    /// Connections to PostgreSQL per process.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            url: String::new(),
            pool_size: 16,
        }
    }
}

/// The URL's password never shows, wherever the configuration is printed.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("url", &redact_database_url(&self.url))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Which store `[store]` names.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreLocation {
    /// No store: tokens only from the profile, no usage records.
    None,
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(DatabaseUrl),
}

impl StoreConfig {
    /// The store these settings name, or what is wrong with them (never showing the
    /// URL's password).
    pub fn location(&self) -> Result<StoreLocation, String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Ok(if self.data_dir.as_os_str().is_empty() {
                StoreLocation::None
            } else {
                StoreLocation::Sqlite(self.data_dir.join("diglot.db"))
            });
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() || path.ends_with('/') {
                return Err(format!(
                    "store.url: '{url}' names no file: write sqlite:/path/to/diglot.db"
                ));
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        let shown = redact_database_url(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "store.url: '{shown}' is neither sqlite:PATH nor postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ));
        }
        let url = DatabaseUrl(url.to_owned());
        url.connection()?;
        if !(1..=1000).contains(&self.pool_size) {
            return Err(format!("store.pool_size: {} is not between 1 and 1000", self.pool_size));
        }
        Ok(StoreLocation::Postgres(url))
    }

    /// Where the store is, for the log and the CLI (without a password).
    pub fn describe(&self) -> String {
        match self.location() {
            Ok(StoreLocation::None) => "none".into(),
            Ok(StoreLocation::Sqlite(path)) => path.display().to_string(),
            Ok(StoreLocation::Postgres(url)) => url.to_string(),
            Err(e) => e,
        }
    }

    /// These settings as `check-config` shows them.
    pub fn redacted(&self) -> Self {
        Self {
            url: redact_database_url(&self.url),
            ..self.clone()
        }
    }
}

/// The user's data directory for diglot, whatever the working directory, so the server
/// and `diglot token` always find the same store: `$XDG_DATA_HOME/diglot` or
/// `~/.local/share/diglot` on Linux (the platform's equivalent elsewhere); for a user
/// without a home directory, `/var/lib/diglot`.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "diglot").map_or_else(
        || PathBuf::from("/var/lib/diglot"),
        |dirs| dirs.data_dir().to_path_buf(),
    )
}

/// Who may call: kept as a digest, never the token itself. Also the shape of
/// `[[tokens]]` in a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The store's id; none for tokens declared in a profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub name: String,
    /// SHA-256 of the whole token, lowercase hex.
    pub digest: String,
    /// The start of the token, for display (`dg-AbC1…`).
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub role: Role,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub created_at: i64,
    /// Unix seconds; none: never.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Names and globs (`llama*`) it may use; empty: every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Addresses and CIDRs it may call from; empty: anywhere.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Tokens (prompt + completion) per calendar month, UTC.
    #[serde(default)]
    pub monthly_quota: Option<u64>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
}

impl TokenRecord {
    /// The token with `[limits]`' defaults for the limits it does not set itself.
    pub fn with_default_limits(mut self, limits: &LimitsConfig) -> Self {
        let or = |own: Option<u64>, default: u64| own.or((default > 0).then_some(default));
        self.rpm = or(self.rpm, limits.token_rpm);
        self.tpm = or(self.tpm, limits.token_tpm);
        self.monthly_quota = or(self.monthly_quota, limits.token_monthly_quota);
        self.max_concurrent = self
            .max_concurrent
            .or((limits.token_max_concurrent > 0).then_some(limits.token_max_concurrent));
        self
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, salvo::oapi::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    #[default]
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;

    fn at(url: &str) -> Result<StoreLocation, String> {
        StoreConfig {
            url: url.into(),
            ..Default::default()
        }
        .location()
    }

    #[test]
    fn the_url_picks_the_engine_and_bad_ones_say_why_without_the_password() {
        assert!(matches!(at(""), Ok(StoreLocation::Sqlite(path)) if path.ends_with("diglot.db")));
        let none = StoreConfig {
            data_dir: PathBuf::new(),
            ..Default::default()
        };
        assert_eq!(none.location(), Ok(StoreLocation::None));
        assert_eq!(at("sqlite:/srv/x.db"), Ok(StoreLocation::Sqlite("/srv/x.db".into())));
        assert_eq!(at("sqlite:///srv/x.db"), Ok(StoreLocation::Sqlite("/srv/x.db".into())));
        assert!(at("sqlite:").unwrap_err().contains("names no file"));
        let Ok(StoreLocation::Postgres(url)) = at("postgresql://u:hush@db:5433/d") else {
            panic!("a PostgreSQL URL")
        };
        assert_eq!(url.to_string(), "postgresql://u:<redacted>@db:5433/d");
        assert_eq!(format!("{url:?}"), "DatabaseUrl(postgresql://u:<redacted>@db:5433/d)");
        assert_eq!(url.secret(), "postgresql://u:hush@db:5433/d");
        for bad in ["mysql://u:hush@db/d", "postgres://u:hush@db:notaport/d"] {
            let error = at(bad).unwrap_err();
            assert!(error.starts_with("store.url: ") && !error.contains("hush"), "{error}");
        }
        let too_many = StoreConfig {
            url: "postgres://db/d".into(),
            pool_size: 0,
            ..Default::default()
        };
        assert!(too_many.location().unwrap_err().contains("pool_size"));
    }

    #[test]
    fn passwords_in_the_user_part_and_in_options_are_hidden() {
        assert_eq!(
            redact_database_url("postgres://u:p@h/d?sslmode=disable&password=p2&PASSWORD=p3"),
            "postgres://u:<redacted>@h/d?sslmode=disable&password=<redacted>&PASSWORD=<redacted>"
        );
        assert_eq!(redact_database_url("postgres://h/d"), "postgres://h/d");
        let config = StoreConfig {
            url: "postgres://u:hush@h/d".into(),
            ..Default::default()
        };
        for shown in [format!("{config:?}"), config.describe(), config.redacted().url] {
            assert!(!shown.contains("hush"), "{shown}");
        }
    }
}
