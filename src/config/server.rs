//! `[server]`: what the listener accepts beyond its address.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Extra names a client may put in `Host` while diglot listens on loopback (the
    /// defense against DNS rebinding lets only this machine's names in otherwise): exact
    /// names or globs (`*.example.lan`), without the port.
    pub allowed_hosts: Vec<String>,
}
