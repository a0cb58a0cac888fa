//! The `token`, `admin`, `usage`, `migrate` and `store` commands: manage API tokens and the admin password in
//! the store, and read usage. A new token is printed once; the store keeps only its
//! digest, and of the password only its argon2id hash.

mod store;

use clap::{Args, Subcommand};

use crate::config::{AuthMode, Config};
use crate::gateway::tokens::{self, TokenFields};
use crate::store::{Role, Store, TokenRecord};
pub use store::{StoreCommand, migrated, run as store};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (once: only its digest is kept).
    Create {
        /// A name for it, unique among the store's tokens (shown in logs and usage).
        #[arg(long)]
        name: String,
        /// "user" calls the APIs; "admin" also sees /health details and /metrics.
        #[arg(long, value_parser = parse_role, default_value = "user")]
        role: Role,
        #[command(flatten)]
        rules: Rules,
    },
    /// List tokens (never the tokens themselves).
    List {
        /// Print JSON rather than a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a token (by id, name or prefix); its usage records stay.
    Revoke {
        /// The token's id, name or prefix (`diglot token list` shows them).
        token: String,
    },
    /// Change a token's rules (by id, name or prefix).
    Update {
        /// The token's id, name or prefix (`diglot token list` shows them).
        token: String,
        /// A new name, unique among the store's tokens.
        #[arg(long)]
        name: Option<String>,
        /// A new role: "user" or "admin".
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Let it be used again.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Refuse it until enabled again (it is kept, unlike revoke).
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        rules: Rules,
    },
}

/// Limits and permissions; on `update`, only those given change (0 or "" clears).
#[derive(Args, Default)]
pub struct Rules {
    /// Models it may use, comma-separated names and globs ("llama*,gpt-4o"); empty: all.
    #[arg(long)]
    models: Option<String>,
    /// Addresses and CIDRs it may call from, comma-separated; empty: any.
    #[arg(long)]
    ips: Option<String>,
    /// Days until it expires (0: never).
    #[arg(long)]
    expires_in_days: Option<u32>,
    /// Tokens per calendar month (0: no quota).
    #[arg(long)]
    quota: Option<u64>,
    /// Requests per minute (0: no limit).
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens per minute (0: no limit).
    #[arg(long)]
    tpm: Option<u64>,
    /// Requests at once (0: no limit).
    #[arg(long)]
    max_concurrent: Option<u32>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        other => Err(format!("'{other}' is neither admin nor user")),
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// 0 or "" given on the command line clears a limit.
fn nonzero<T: PartialEq + Default>(value: Option<T>) -> Option<Option<T>> {
    value.map(|v| (v != T::default()).then_some(v))
}

impl Rules {
    /// These rules as the fields the shared token implementation sets.
    fn fields(&self) -> TokenFields {
        TokenFields {
            models: self.models.as_deref().map(list),
            ips: self.ips.as_deref().map(list),
            expires_at: nonzero(self.expires_in_days)
                .map(|days| days.map(|d| chrono::Utc::now().timestamp() + i64::from(d) * 86_400)),
            monthly_quota: nonzero(self.quota),
            rpm: nonzero(self.rpm),
            tpm: nonzero(self.tpm),
            max_concurrent: nonzero(self.max_concurrent),
            ..TokenFields::default()
        }
    }
}

/// Runs a token command on `store` (the store of `config`, whose other token sources
/// and address say what a change means for the server); what it prints goes to stdout.
pub async fn token(store: &dyn Store, config: &Config, command: TokenCommand) -> Result<String, String> {
    match command {
        TokenCommand::Create { name, role, rules } => {
            let fields = TokenFields {
                name: Some(name),
                role: Some(role),
                ..rules.fields()
            };
            let (secret, token) = tokens::create(store, &fields).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "{secret}\n\nToken '{}' (id {}, {}) created. This is the only time it is shown: \
                 store it now.\nDigest (for a profile's [[tokens]]): {}\n",
                token.name,
                token.id.unwrap_or_default(),
                token.role.as_str(),
                token.digest
            ))
        }
        TokenCommand::List { json } => {
            let tokens = store.tokens().await.map_err(|e| e.to_string())?;
            if json {
                return serde_json::to_string_pretty(&tokens).map_err(|e| e.to_string());
            }
            let mut out = format!(
                "{:<4} {:<20} {:<9} {:<6} {:<8} {:<10} {:<24} {}\n",
                "id", "name", "prefix", "role", "enabled", "expires", "models", "limits"
            );
            for t in tokens {
                let expires = t
                    .expires_at
                    .and_then(|at| chrono::DateTime::from_timestamp(at, 0))
                    .map_or("never".into(), |d| d.format("%Y-%m-%d").to_string());
                let limits: Vec<String> = [
                    t.monthly_quota.map(|q| format!("quota {q}/month")),
                    t.rpm.map(|n| format!("{n} rpm")),
                    t.tpm.map(|n| format!("{n} tpm")),
                    t.max_concurrent.map(|n| format!("{n} at once")),
                    (!t.ips.is_empty()).then(|| format!("from {}", t.ips.join(","))),
                ]
                .into_iter()
                .flatten()
                .collect();
                out.push_str(&format!(
                    "{:<4} {:<20} {:<9} {:<6} {:<8} {:<10} {:<24} {}\n",
                    t.id.unwrap_or_default(),
                    t.name,
                    t.prefix,
                    t.role.as_str(),
                    t.enabled,
                    expires,
                    if t.models.is_empty() {
                        "all".into()
                    } else {
                        t.models.join(",")
                    },
                    limits.join(", ")
                ));
            }
            Ok(out)
        }
        TokenCommand::Revoke { token } => {
            let found = find(store, &token).await?;
            tokens::revoke(store, found.id.unwrap_or_default())
                .await
                .map_err(|e| e.to_string())?;
            let mut out = format!("Token '{}' ({}) revoked.\n", found.name, found.prefix);
            if store.tokens().await.map_err(|e| e.to_string())?.is_empty() {
                out.push_str(&after_last_token(config));
            }
            Ok(out)
        }
        TokenCommand::Update {
            token,
            name,
            role,
            enable,
            disable,
            rules,
        } => {
            let found = find(store, &token).await?;
            let fields = TokenFields {
                name,
                role,
                enabled: (enable || disable).then_some(enable),
                ..rules.fields()
            };
            let (_, updated) = tokens::update(store, found.id.unwrap_or_default(), &fields)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("Token '{}' ({}) updated.\n", updated.name, updated.prefix))
        }
    }
}

/// What the store's last token going means for a server using this configuration.
fn after_last_token(config: &Config) -> String {
    let mut others = Vec::new();
    if !config.tokens.is_empty() {
        others.push("the profile's [[tokens]]");
    }
    if std::env::var("API_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
        others.push("API_TOKEN");
    }
    if config
        .auth
        .keys_file
        .as_ref()
        .is_some_and(|p| !p.as_os_str().is_empty())
    {
        others.push("[auth] keys_file");
    }
    let loopback = config.listen_addr().is_ok_and(|a| a.ip().is_loopback());
    let listen = &config.listen;
    let effect = match config.auth.mode {
        AuthMode::None => "authentication is off anyway ([auth] mode = \"none\").".to_owned(),
        _ if !others.is_empty() => format!("tokens from {} still apply.", others.join(" and ")),
        AuthMode::Tokens => {
            "a running diglot refuses every call (401) until a token is created ([auth] mode = \"tokens\").".to_owned()
        }
        AuthMode::Auto if loopback => format!(
            "a diglot running with this configuration (listen = {listen}: loopback, [auth] mode = \"auto\") \
             now lets every local caller in WITHOUT a token, within seconds. Create a token to require \
             one again."
        ),
        AuthMode::Auto => format!(
            "a diglot running with this configuration (listen = {listen}) refuses every call (401) until a \
             token is created: it listens on an address other machines can reach, where tokens are \
             always required."
        ),
    };
    format!("That was the store's last token: {effect}\n")
}

/// The one token an id, a name or a display prefix names.
async fn find(store: &dyn Store, which: &str) -> Result<TokenRecord, String> {
    let tokens = store.tokens().await.map_err(|e| e.to_string())?;
    let matches: Vec<TokenRecord> = tokens
        .into_iter()
        .filter(|t| t.id.map(|id| id.to_string()).as_deref() == Some(which) || t.name == which || t.prefix == which)
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one")),
        0 => Err(format!("no token has the id, name or prefix '{which}'")),
        n => Err(format!("{n} tokens match '{which}': use the id")),
    }
}

/// Usage per token per day over the last `days` days.
pub async fn usage(store: &dyn Store, days: u32, json: bool) -> Result<String, String> {
    let since = chrono::Utc::now().timestamp_millis() - i64::from(days) * 86_400_000;
    let rows = store.daily_usage(since).await.map_err(|e| e.to_string())?;
    if json {
        return serde_json::to_string_pretty(&rows).map_err(|e| e.to_string());
    }
    let mut out = format!(
        "{:<10} {:<9} {:>8} {:>12} {:>12} {:>7} {:>7}\n",
        "day", "token", "requests", "prompt", "completion", "errors", "cached"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<10} {:<9} {:>8} {:>12} {:>12} {:>7} {:>7}\n",
            r.day,
            r.token_prefix.as_deref().unwrap_or("-"),
            r.requests,
            r.prompt_tokens,
            r.completion_tokens,
            r.errors,
            r.cache_hits
        ));
    }
    Ok(out)
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Set the admin password (read from the terminal without echo, or from standard
    /// input): kept in the store as an argon2id hash; a running diglot uses it at the
    /// next sign-in. `[admin] password_hash` or DIGLOT_ADMIN__PASSWORD win over it.
    SetPassword,
    /// Print the argon2id hash of a password (read as for set-password), for a profile's
    /// `[admin] password_hash`.
    HashPassword,
}

/// The shortest admin password accepted.
const MIN_PASSWORD: usize = 12;

/// A new password from the terminal (asked twice, not echoed) or one line of stdin.
fn read_new_password() -> Result<String, String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New admin password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ; nothing changed".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "the password is shorter than {MIN_PASSWORD} characters; nothing changed"
        ));
    }
    Ok(password)
}

/// Runs an admin command; `store` is the profile's.
pub async fn admin(store: &dyn Store, config: &Config, command: AdminCommand) -> Result<String, String> {
    let password = read_new_password()?;
    let hash = tokio::task::spawn_blocking(move || crate::store::secrets::hash_password(&password))
        .await
        .map_err(|e| e.to_string())?;
    match command {
        AdminCommand::HashPassword => Ok(format!("{hash}\n")),
        AdminCommand::SetPassword => {
            let value = serde_json::to_string(&hash).map_err(|e| e.to_string())?;
            store
                .put_document(crate::admin::PASSWORD_KIND, crate::admin::PASSWORD_KEY, Some(&value))
                .await
                .map_err(|e| e.to_string())?;
            let mut out = "Admin password set (kept as an argon2id hash). Sign in at /admin.\n".to_owned();
            if !config.admin.password_hash.is_empty() {
                out.push_str(
                    "Note: this configuration sets [admin] password_hash (or DIGLOT_ADMIN__PASSWORD), which \
                     wins over the stored one.\n",
                );
            }
            Ok(out)
        }
    }
}
