//! `[admin]`: the admin API under `/admin` — who may sign in, and from where.

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve `/admin` at all. Without a password (and without an admin token) it answers
    /// 503 saying how to set one: there is no default password.
    pub enabled: bool,
    /// The admin password in clear, meant for `DIGLOT_ADMIN__PASSWORD`: it is replaced by
    /// its argon2id hash as soon as it is read, and never kept or shown.
    pub password: String,
    /// The password as an argon2id PHC string (`$argon2id$v=19$...`). `diglot admin
    /// set-password` keeps it in the store instead; this one wins when set.
    pub password_hash: String,
    /// Mark the session cookie `Secure` (HTTPS only). Requests that came over HTTPS
    /// through a trusted proxy (`X-Forwarded-Proto: https`) get it anyway.
    pub secure_cookies: bool,
    /// Addresses and CIDRs that may reach `/admin` at all; empty: any that may call.
    pub allow_ips: Vec<String>,
    /// How long a sign-in lasts, in hours.
    pub session_hours: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            password: String::new(),
            password_hash: String::new(),
            secure_cookies: false,
            allow_ips: Vec::new(),
            session_hours: 12,
        }
    }
}

/// Never shows the password or its hash.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field(
                "password_set",
                &(!self.password.is_empty() || !self.password_hash.is_empty()),
            )
            .field("secure_cookies", &self.secure_cookies)
            .field("allow_ips", &self.allow_ips)
            .field("session_hours", &self.session_hours)
            .finish()
    }
}

impl AdminConfig {
    /// A copy safe to show.
    pub fn redacted(&self) -> Self {
        let hide = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                "<redacted>".into()
            }
        };
        Self {
            password: hide(&self.password),
            password_hash: hide(&self.password_hash),
            ..self.clone()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.password_hash.is_empty() && !self.password_hash.starts_with("$argon2id$") {
            return Err(
                "admin.password_hash: not an argon2id hash ($argon2id$...); make one with \
                        `diglot admin hash-password`"
                    .into(),
            );
        }
        for net in &self.allow_ips {
            let ok = net.parse::<ipnet::IpNet>().is_ok() || net.parse::<std::net::IpAddr>().is_ok();
            if !ok {
                return Err(format!(
                    "admin.allow_ips: '{net}' is neither an IP address nor a CIDR range"
                ));
            }
        }
        if !(1..=24 * 365).contains(&self.session_hours) {
            return Err(format!(
                "admin.session_hours: {} is not between 1 and 8760 (a year)",
                self.session_hours
            ));
        }
        Ok(())
    }
}
