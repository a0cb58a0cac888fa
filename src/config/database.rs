//! A PostgreSQL URL: never shown with its password, and read as libpq reads it, TLS
//! parameters included (tokio-postgres alone knows only some of them).

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::SslMode;

/// The longest a new connection may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle time before TCP keepalives probe the database, unless the URL says
/// (`keepalives_idle`; the system's default is two hours).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// A PostgreSQL URL, which may hold a password: shown (`Debug`, `Display`) without it.
#[derive(Clone, PartialEq)]
pub struct DatabaseUrl(pub(super) String);

/// How a connection to the database is secured. The server's certificate is verified
/// in every mode that uses TLS, host name included: `require` is `verify-full` here,
/// so a man in the middle never sees the password or the tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseTls {
    /// From `sslmode`: `disable` (the default, as before TLS was offered) and `allow`
    /// connect in the clear; `prefer` uses TLS when the server offers it; `require`,
    /// `verify-ca` and `verify-full` insist on it.
    pub mode: SslMode,
    /// From `sslrootcert`: a PEM file of the certificate authorities to trust (a
    /// provider's bundle, a private CA); the system's roots otherwise.
    pub root_cert: Option<PathBuf>,
}

impl DatabaseUrl {
    /// The URL with its password, to connect with; never to be shown.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// What tokio-postgres connects with, and the TLS the URL asks for; or what is
    /// wrong with the URL (without its password). A database that stops answering must
    /// not hold requests or usage writes for ever: connects are bounded and dead peers
    /// found by keepalives, unless the URL sets its own.
    pub fn connection(&self) -> Result<(tokio_postgres::Config, DatabaseTls), String> {
        let (base, query) = self.0.split_once('?').unwrap_or((&self.0, ""));
        let mut tls = DatabaseTls {
            mode: SslMode::Disable,
            root_cert: None,
        };
        let mut rest = Vec::new();
        let mut keepalives_idle_set = false;
        for option in query.split('&').filter(|o| !o.is_empty()) {
            let (name, value) = option.split_once('=').unwrap_or((option, ""));
            let value = decode(value);
            match name {
                "sslmode" => {
                    tls.mode = match value.as_str() {
                        "disable" | "allow" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" | "verify-ca" | "verify-full" => SslMode::Require,
                        other => {
                            return Err(format!(
                                "store.url: sslmode={other} is none of disable, allow, prefer, require, \
                                 verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => tls.root_cert = Some(PathBuf::from(value)),
                _ => {
                    keepalives_idle_set |= name == "keepalives_idle";
                    rest.push(option);
                }
            }
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("store.url: '{self}' is not a PostgreSQL URL: {e}"))?;
        config.ssl_mode(tls.mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if !keepalives_idle_set {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        Ok((config, tls))
    }
}

/// A query value, percent-decoded (paths may be written `%2Fetc%2F...`).
fn decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_database_url(&self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `url` with the password of its user part and any `password=` option hidden, even
/// when the rest of it is malformed (it is shown in the error that says so).
pub fn redact_database_url(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((user_info, host)) if user_info.contains(':') => {
                    let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
                    format!("{scheme}://{user}:<redacted>@{host}{tail}")
                }
                _ => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if query.is_empty() {
        return base;
    }
    let options: Vec<String> = query
        .split('&')
        .map(|option| match option.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=<redacted>"),
            _ => option.to_owned(),
        })
        .collect();
    format!("{base}?{}", options.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_taken_out_and_the_rest_left_to_tokio_postgres() {
        let url =
            DatabaseUrl("postgres://u:p@h/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3".into());
        let (config, tls) = url.connection().unwrap();
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));

        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);

        // No sslmode: in the clear, as before TLS was offered; diglot's bounds.
        let (config, tls) = DatabaseUrl("postgres://h/d".into()).connection().unwrap();
        assert_eq!((config.get_ssl_mode(), tls.root_cert), (SslMode::Disable, None));
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let (config, _) = DatabaseUrl("postgres://h/d?keepalives_idle=7".into())
            .connection()
            .unwrap();
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(7));

        let wrong = DatabaseUrl("postgres://u:hush@h/d?sslmode=maybe".into()).connection();
        assert!(wrong.unwrap_err().contains("sslmode=maybe is none of"));
        let malformed = DatabaseUrl("postgres://u:hush@h:port/d".into()).connection();
        assert!(!malformed.unwrap_err().contains("hush"));
    }
}
