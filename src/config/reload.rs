//! `[reload]`: how a running gateway takes up an edited profile.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the profile file and reload it when it changes (as `kill -HUP` does).
    pub watch: bool,
    /// How long the file must stay unchanged before it is read (editors write in steps).
    pub debounce_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce_ms: 300,
        }
    }
}
