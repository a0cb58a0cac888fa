//! Who is calling: API tokens (kept as SHA-256 digests, compared in constant time), the
//! simpler modes (none, one legacy `API_TOKEN`, a keys file), and the IP rules.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tracing::{info, warn};
use wildmatch::WildMatch;

use crate::config::{AuthMode, Config};
use crate::ir::{Error, ErrorKind};
use crate::protocol::Frontend;
use crate::store::secrets::{digest, same};
use crate::store::{Role, Store, TokenRecord};

/// How often tokens are re-read from the store and the keys file.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// An unknown token triggers a re-read at most this often (so a token made a moment
/// ago works, and unknown tokens cannot hammer the store).
const RELOAD_ON_MISS: Duration = Duration::from_millis(200);

/// Who is calling, as the gateway needs to know it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Private, so its text below cannot go stale: `with_ip` sets both.
    ip: IpAddr,
    /// Which API the request came in on.
    pub frontend: Frontend,
    /// None when authentication is off.
    pub token: Option<Arc<TokenRecord>>,
    /// No token although tokens are required (only public paths get this far).
    pub restricted: bool,
    /// The HTTP request this call belongs to (its span, access line and metrics).
    pub exchange: Option<Arc<crate::telemetry::Exchange>>,
    /// What the request's `Cache-Control` asks of the response cache.
    pub cache: super::cache::CacheControl,
    /// `ip` as text, written once however many parts of the request need it.
    ip_text: std::sync::OnceLock<String>,
}

impl Caller {
    pub fn new(ip: IpAddr, frontend: Frontend, token: Option<Arc<TokenRecord>>) -> Self {
        Self {
            ip,
            frontend,
            token,
            restricted: false,
            exchange: None,
            cache: Default::default(),
            ip_text: Default::default(),
        }
    }

    /// A caller with no token (authentication off), e.g. for tests and tools.
    pub fn anonymous(frontend: Frontend) -> Self {
        Self::new(IpAddr::from([127, 0, 0, 1]), frontend, None)
    }

    /// The caller's address as text (the usage record's and the per-address limit's).
    pub fn ip_text(&self) -> &str {
        self.ip_text.get_or_init(|| self.ip.to_string())
    }

    /// Whether the token may use `model`: exact names and globs; no list means all. A
    /// name matches with or without Ollama's default `:latest` tag.
    pub fn may_use(&self, model: &str) -> bool {
        let Some(token) = &self.token else { return true };
        if token.models.is_empty() {
            return true;
        }
        let bare = model.strip_suffix(":latest").unwrap_or(model);
        let tagged = format!("{bare}:latest");
        token.models.iter().any(|allowed| {
            let glob = WildMatch::new(allowed);
            [model, bare, tagged.as_str()]
                .iter()
                .any(|name| allowed == name || glob.matches(name))
        })
    }

    /// 403 for a model the token may not use, saying so.
    pub fn check_model(&self, model: &str) -> Result<(), Error> {
        if self.may_use(model) {
            return Ok(());
        }
        let name = self.token.as_ref().map_or("", |t| t.name.as_str());
        Err(Error {
            param: Some("model".into()),
            ..Error::new(
                ErrorKind::Forbidden,
                format!("the API token '{name}' may not use model '{model}'"),
            )
        })
    }

    pub fn with_ip(self, ip: IpAddr) -> Self {
        Self {
            ip,
            ip_text: Default::default(),
            ..self
        }
    }

    /// The caller with what the request's `Cache-Control` asks of the response cache.
    pub fn with_cache(self, cache: super::cache::CacheControl) -> Self {
        Self { cache, ..self }
    }

    /// Ties the call to its HTTP request, and names the token there.
    pub fn with_exchange(self, exchange: Option<Arc<crate::telemetry::Exchange>>) -> Self {
        if let Some(exchange) = &exchange {
            exchange.client_ip(self.ip);
        }
        if let (Some(exchange), Some(token)) = (&exchange, &self.token) {
            exchange.token(&token.prefix);
        }
        Self { exchange, ..self }
    }

    /// A caller let through only to a public path while tokens are required.
    pub fn not_admin(self) -> Self {
        Self {
            restricted: true,
            ..self
        }
    }

    /// Admins see everything: callers with an admin token, or everyone when
    /// authentication is off.
    pub fn is_admin(&self) -> bool {
        !self.restricted && self.token.as_ref().is_none_or(|t| t.role == Role::Admin)
    }
}

/// Checks callers against the configured tokens and IP rules.
pub struct Auth {
    mode: AuthMode,
    /// Whether callers need a token now (`auto` follows whether any token exists).
    required: std::sync::atomic::AtomicBool,
    /// Digest → token, from every source; swapped whole on reload. The keys are SHA-256
    /// digests, which no caller can steer into collisions, so a fast hasher is safe.
    tokens: RwLock<Arc<foldhash::HashMap<String, Arc<TokenRecord>>>>,
    declared: Vec<TokenRecord>,
    legacy: Option<TokenRecord>,
    keys_file: Option<PathBuf>,
    store: Option<Arc<dyn Store>>,
    /// The store's tokens as last read (kept when a read fails).
    store_tokens: Mutex<Vec<TokenRecord>>,
    last_reload: Mutex<Option<Instant>>,
    keys_file_seen: Mutex<Option<SystemTime>>,
    keys_file_tokens: Mutex<Vec<TokenRecord>>,
    /// `[limits]`, whose `token_*` defaults apply to tokens without limits of their own.
    limits: crate::config::LimitsConfig,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trust_proxy: Vec<IpNet>,
    /// Where diglot listens: `auto` may let callers in without a token only on loopback.
    listen: String,
    loopback: bool,
    /// Whether tokens were required when last said in the log (none before the first
    /// read of the store); a change is logged.
    reported: Mutex<Option<bool>>,
}

/// Parses `10.0.0.0/8` or a bare address (as a /32 or /128).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{text}' is neither an IP address nor a CIDR range"))
}

fn nets(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter().map(|s| parse_net(s)).collect()
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (from dual-stack listeners) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Auth {
    /// `auto` requires tokens when any source of them exists (profile, store, `API_TOKEN`,
    /// keys file) or diglot listens on an address other machines can reach; on loopback
    /// with none it lets everyone in. `required_before` is what the running gateway
    /// required (on a reload), so only a change is logged. The store's tokens are not
    /// read yet: `reload` before use.
    pub fn new(config: &Config, store: Option<Arc<dyn Store>>, required_before: Option<bool>) -> Result<Self, String> {
        let auth_config = &config.auth;
        let declared = &config.tokens;
        let legacy = std::env::var("API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| TokenRecord::for_secret("API_TOKEN", t.trim(), Role::Admin));
        let keys_file = auth_config.keys_file.clone().filter(|p| !p.as_os_str().is_empty());
        let auth = Self {
            mode: auth_config.mode,
            required: std::sync::atomic::AtomicBool::new(auth_config.mode == AuthMode::Tokens),
            tokens: RwLock::default(),
            declared: declared.to_vec(),
            legacy,
            keys_file,
            store,
            store_tokens: Mutex::new(Vec::new()),
            last_reload: Mutex::new(None),
            keys_file_seen: Mutex::new(None),
            keys_file_tokens: Mutex::new(Vec::new()),
            limits: config.limits.clone(),
            allow: nets(&auth_config.allow_ips).map_err(|e| format!("auth.allow_ips: {e}"))?,
            deny: nets(&auth_config.deny_ips).map_err(|e| format!("auth.deny_ips: {e}"))?,
            trust_proxy: nets(&auth_config.trust_proxy).map_err(|e| format!("auth.trust_proxy: {e}"))?,
            listen: config.listen.clone(),
            loopback: config.listen_addr().is_ok_and(|a| a.ip().is_loopback()),
            reported: Mutex::new(required_before),
        };
        for token in declared {
            nets(&token.ips).map_err(|e| format!("tokens '{}': {e}", token.name))?;
        }
        auth.rebuild();
        Ok(auth)
    }

    pub fn required(&self) -> bool {
        self.required.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Re-reads the store's tokens and the keys file (when it changed).
    pub async fn reload(&self) {
        *self.last_reload.lock().expect("reload lock") = Some(Instant::now());
        if let Some(store) = &self.store {
            match store.tokens().await {
                Ok(tokens) => *self.store_tokens.lock().expect("tokens lock") = tokens,
                Err(e) => warn!(error = %e, "cannot read tokens from the store; keeping the ones known"),
            }
        }
        self.rebuild();
        self.report();
    }

    /// Why tokens are required even though none exists.
    fn why_required(&self) -> &'static str {
        if self.mode == AuthMode::Tokens {
            "[auth] mode = \"tokens\""
        } else if self.keys_file.is_some() {
            "[auth] keys_file is set"
        } else {
            "diglot listens on an address other machines can reach, where tokens are always required"
        }
    }

    /// Says in the log whether tokens are required: once at start, then on every change
    /// (the last token revoked, the first one created, a reload changing the mode).
    fn report(&self) {
        let required = self.required();
        let known = self.tokens.read().expect("tokens lock").len();
        let mut reported = self.reported.lock().expect("report lock");
        let before = reported.replace(required);
        match (before, required) {
            (Some(before), now) if before == now => {}
            (_, true) if known == 0 => warn!(
                listen = %self.listen,
                "API tokens are required ({}) but none exists: every call gets 401 until one is created \
                 with `diglot token create --name NAME`",
                self.why_required()
            ),
            (None, true) => info!(tokens = known, "API tokens are required"),
            (Some(_), true) => warn!(tokens = known, "authentication changed: API tokens are now required"),
            (_, false) if !self.loopback => warn!(
                listen = %self.listen,
                "AUTHENTICATION IS OFF on an address other machines can reach ([auth] mode = \"none\"): \
                 anyone there can use every upstream. Set [auth] mode = \"auto\" and create a token \
                 (`diglot token create --name NAME`), or listen on 127.0.0.1."
            ),
            (None, false) => info!(
                listen = %self.listen,
                "authentication is off: no API token exists and diglot listens on loopback, so local \
                 callers need none (`diglot token create --name NAME` turns it on)"
            ),
            (Some(_), false) => warn!(
                listen = %self.listen,
                "authentication changed: it is now OFF, every local caller may use diglot without a \
                 token (no API token exists any more, or [auth] mode is \"none\")"
            ),
        }
    }

    /// The token map from every source, as last read.
    fn rebuild(&self) {
        let mut all: Vec<TokenRecord> = self.declared.clone();
        all.extend(self.legacy.clone());
        all.extend(self.store_tokens.lock().expect("tokens lock").iter().cloned());
        all.extend(self.read_keys_file());
        let map = all
            .into_iter()
            .map(|t| (t.digest.clone(), Arc::new(t.with_default_limits(&self.limits))))
            .collect::<foldhash::HashMap<_, _>>();
        // A keys file counts as a source even while empty: its owner means to require keys.
        let required = match self.mode {
            AuthMode::None => false,
            AuthMode::Tokens => true,
            AuthMode::Auto => !self.loopback || !map.is_empty() || self.keys_file.is_some(),
        };
        self.required.store(required, std::sync::atomic::Ordering::Relaxed);
        *self.tokens.write().expect("tokens lock") = Arc::new(map);
    }

    fn read_keys_file(&self) -> Vec<TokenRecord> {
        let Some(path) = &self.keys_file else { return Vec::new() };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut seen = self.keys_file_seen.lock().expect("keys file lock");
        let mut cached = self.keys_file_tokens.lock().expect("keys file lock");
        if modified.is_some() && *seen == modified {
            return cached.clone();
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                *cached = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .enumerate()
                    .map(|(i, key)| TokenRecord::for_secret(&format!("keys-file:{}", i + 1), key, Role::User))
                    .collect();
                *seen = modified;
                info!(path = %path.display(), keys = cached.len(), "keys file loaded");
            }
            Err(e) => warn!(path = %path.display(), error = %e, "cannot read the keys file; keeping the keys known"),
        }
        cached.clone()
    }

    /// Reloads in the background every `RELOAD_EVERY`, while `alive` holds.
    pub fn start_reloading(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let Some(auth) = weak.upgrade() else { return };
                auth.reload().await;
            }
        });
    }

    /// Whether `peer` is a proxy whose forwarded headers are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        contains(&self.trust_proxy, canonical(peer))
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the
    /// nearest address in `X-Forwarded-For` that is not one.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !contains(&self.trust_proxy, peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else { return peer };
        let hops: Vec<IpAddr> = chain
            .split(',')
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !contains(&self.trust_proxy, **ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }

    /// Checks the global IP rules, then the token (when tokens are required).
    pub async fn authenticate(&self, ip: IpAddr, presented: Option<&str>, frontend: Frontend) -> Result<Caller, Error> {
        self.check_ip(ip)?;
        if !self.required() {
            return Ok(Caller::new(ip, frontend, None));
        }
        let Some(presented) = presented.map(str::trim).filter(|t| !t.is_empty()) else {
            if self.tokens.read().expect("tokens lock").is_empty() {
                return Err(self.none_exists());
            }
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "an API token is required: send it as `Authorization: Bearer TOKEN` (or `X-API-Key`)",
            ));
        };
        let token = self.identify(ip, presented).await?;
        Ok(Caller::new(ip, frontend, Some(token)))
    }

    /// The token `presented` is, if it may be used now from `ip`: known (re-reading the
    /// store for one made a moment ago), enabled, unexpired, and allowed from `ip`.
    /// Whether tokens are required does not matter here (the admin API asks this).
    pub async fn identify(&self, ip: IpAddr, presented: &str) -> Result<Arc<TokenRecord>, Error> {
        let wanted = digest(presented);
        let mut token = self.find(&wanted);
        if token.is_none() {
            // A token created a moment ago (by `diglot token create` in another process).
            let stale = self
                .last_reload
                .lock()
                .expect("reload lock")
                .is_none_or(|at| at.elapsed() > RELOAD_ON_MISS);
            if stale {
                self.reload().await;
                token = self.find(&wanted);
            }
        }
        if token.is_none() && self.tokens.read().expect("tokens lock").is_empty() && self.required() {
            return Err(self.none_exists());
        }
        let Some(token) = token else {
            return Err(Error::new(ErrorKind::Unauthorized, "the API token is not valid"));
        };
        self.usable(&token, ip)?;
        Ok(token)
    }

    fn none_exists(&self) -> Error {
        Error::new(
            ErrorKind::Unauthorized,
            format!(
                "an API token is required, and none exists yet ({}). Create one on the server with \
                 `diglot token create --name NAME` and send it as `Authorization: Bearer TOKEN`",
                self.why_required()
            ),
        )
    }

    /// The token with `digest` as known now, if it may be used from `ip` (a session
    /// signed in with a token asks on every call, so a revoked token ends it).
    pub fn by_digest(&self, wanted: &str, ip: IpAddr) -> Result<Arc<TokenRecord>, Error> {
        let token = self
            .find(wanted)
            .ok_or_else(|| Error::new(ErrorKind::Unauthorized, "the API token is not valid any more"))?;
        self.usable(&token, ip)?;
        Ok(token)
    }

    /// Enabled, unexpired, and allowed from `ip`.
    fn usable(&self, token: &TokenRecord, ip: IpAddr) -> Result<(), Error> {
        if !token.enabled {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!("the API token '{}' is disabled", token.name),
            ));
        }
        if let Some(expires) = token.expires_at
            && expires <= chrono::Utc::now().timestamp()
        {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!("the API token '{}' has expired", token.name),
            ));
        }
        if !token.ips.is_empty() && !contains(&nets(&token.ips).unwrap_or_default(), ip) {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!("the API token '{}' may not be used from {ip}", token.name),
            ));
        }
        Ok(())
    }

    /// The global address rules (`allow_ips`, `deny_ips`).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Error> {
        if contains(&self.deny, ip) || (!self.allow.is_empty() && !contains(&self.allow, ip)) {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!("requests from {ip} are not allowed here"),
            ));
        }
        Ok(())
    }

    /// The token with this digest, compared in constant time once found by the map.
    fn find(&self, wanted: &str) -> Option<Arc<TokenRecord>> {
        let tokens = self.tokens.read().expect("tokens lock").clone();
        let token = tokens.get(wanted)?;
        same(&token.digest, wanted).then(|| token.clone())
    }
}

/// The token a request carries: `Authorization: Bearer`, `X-API-Key` or `api-key`.
pub fn presented_token(authorization: Option<&str>, x_api_key: Option<&str>, api_key: Option<&str>) -> Option<String> {
    authorization
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_owned())
        })
        .or_else(|| x_api_key.map(|v| v.trim().to_owned()))
        .or_else(|| api_key.map(|v| v.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_only_when_its_digest_matches_byte_for_byte() {
        let config = Config {
            tokens: vec![TokenRecord::for_secret("a", "dg-a", Role::User)],
            ..Config::default()
        };
        let auth = Auth::new(&config, None, None).unwrap();
        assert!(auth.required(), "a declared token turns authentication on");
        assert!(auth.find(&digest("dg-a")).is_some());
        assert!(auth.find(&digest("dg-b")).is_none());
        // A map entry whose record disagrees with its key (never made by `reload`) is not
        // trusted: the constant-time comparison of the digests decides, not the lookup.
        let mut map = foldhash::HashMap::default();
        map.insert(
            digest("dg-b"),
            Arc::new(TokenRecord::for_secret("a", "dg-a", Role::User)),
        );
        *auth.tokens.write().unwrap() = Arc::new(map);
        assert!(auth.find(&digest("dg-b")).is_none());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut config = Config::default();
        config.auth.trust_proxy = vec!["10.0.0.0/8".into()];
        let auth = Auth::new(&config, None, None).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            auth.client_ip(ip("10.1.1.1"), Some("203.0.113.7, 10.2.2.2")),
            ip("203.0.113.7")
        );
        assert_eq!(
            auth.client_ip(ip("198.51.100.1"), Some("203.0.113.7")),
            ip("198.51.100.1")
        );
        assert_eq!(auth.client_ip(ip("10.1.1.1"), None), ip("10.1.1.1"));
        assert_eq!(
            auth.client_ip(ip("::ffff:10.1.1.1"), Some("203.0.113.9")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn presented_tokens_come_from_three_headers() {
        assert_eq!(
            presented_token(Some("Bearer dg-a"), None, None).as_deref(),
            Some("dg-a")
        );
        assert_eq!(
            presented_token(Some("bearer  dg-a "), None, None).as_deref(),
            Some("dg-a")
        );
        assert_eq!(presented_token(None, Some("dg-b"), None).as_deref(), Some("dg-b"));
        assert_eq!(presented_token(None, None, Some("dg-c")).as_deref(), Some("dg-c"));
        assert_eq!(presented_token(Some("Basic xyz"), None, None), None);
    }
}
