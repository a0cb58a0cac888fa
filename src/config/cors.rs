//! `[cors]`: which web pages may call diglot from a browser.

use serde::{Deserialize, Serialize};

/// Origins allowed in every case, as Ollama allows them: pages served from this machine
/// (any port) and the desktop and editor shells that embed web views.
pub const DEFAULT_ORIGINS: &[&str] = &[
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "http://[::1]",
    "https://[::1]",
    "http://[::1]:*",
    "https://[::1]:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
];

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed besides `DEFAULT_ORIGINS`: exact (`https://chat.example.com`),
    /// globs (`https://*.example.com`, `chrome-extension://*`), or `"*"` for any page.
    pub allow_origins: Vec<String>,
}

impl CorsConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        for origin in &self.allow_origins {
            let shape_ok = origin == "*"
                || origin
                    .split_once("://")
                    .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty() && !rest.contains('/'));
            if !shape_ok {
                return Err(format!(
                    "cors.allow_origins: '{origin}' is not an origin like \"https://chat.example.com\" \
                     (a scheme and a host, no path), a glob of one, or \"*\""
                ));
            }
        }
        Ok(())
    }
}
