//! What the admin API keeps in the store on top of the profile: channels, per-model
//! settings and a few settings. The running configuration is the profile with this
//! overlay applied; every value can say where it comes from.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Config, ConfigError, ModelSettings, UpstreamConfig};

/// The settings the admin API may change, with what each means (the profile documents
/// them at length). Dotted paths into the configuration.
pub const SETTINGS: &[(&str, &str)] = &[
    ("limits.rpm", "Requests per minute for the whole gateway; 0: no limit."),
    ("limits.tpm", "Tokens per minute for the whole gateway; 0: no limit."),
    ("limits.ip_rpm", "Requests per minute per client address; 0: no limit."),
    ("limits.ip_tpm", "Tokens per minute per client address; 0: no limit."),
    (
        "limits.default_max_tokens",
        "Completion size reserved against token limits when a request sets none.",
    ),
    (
        "limits.token_rpm",
        "Requests per minute for tokens that set none; 0: none.",
    ),
    (
        "limits.token_tpm",
        "Tokens per minute for tokens that set none; 0: none.",
    ),
    (
        "limits.token_monthly_quota",
        "Tokens per calendar month for tokens that set no quota; 0: none.",
    ),
    (
        "limits.token_max_concurrent",
        "Requests at once for tokens that set none; 0: no limit.",
    ),
    (
        "auth.allow_ips",
        "Addresses and CIDRs that may call at all; empty: any.",
    ),
    ("auth.deny_ips", "Addresses and CIDRs that may not call."),
    (
        "auth.trust_proxy",
        "Proxies whose X-Forwarded-For (and X-Forwarded-Proto) is believed.",
    ),
    ("cache.embeddings", "Cache embeddings."),
    ("cache.chat", "Cache chat and completion answers."),
    (
        "cache.chat_nondeterministic",
        "Also cache chats that sample at random (no temperature 0, no seed).",
    ),
    (
        "cache.max_bytes",
        "What the cache holds at most, in bytes, for chats and for embeddings each.",
    ),
    (
        "cache.ttl_secs",
        "How long an answer is served from the cache, in seconds.",
    ),
];

/// The store's part of the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Channels added through the admin API, after the profile's.
    pub channels: Vec<UpstreamConfig>,
    /// Per-model settings; a pattern here replaces the profile's for that pattern.
    pub models: BTreeMap<String, ModelSettings>,
    /// Values for keys of `SETTINGS`.
    pub settings: BTreeMap<String, Value>,
}

/// Where a value in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Default,
    Profile,
    Store,
}

impl Overlay {
    /// `profile` with this overlay applied, validated as a whole.
    pub fn apply(&self, profile: &Config) -> Result<Config, ConfigError> {
        let mut tree = serde_json::to_value(profile).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (key, value) in &self.settings {
            if !SETTINGS.iter().any(|(k, _)| k == key) {
                return Err(ConfigError::Invalid(format!(
                    "{key}: not a setting the admin API may change"
                )));
            }
            let slot = key
                .split('.')
                .try_fold(&mut tree, |node, part| node.get_mut(part))
                .ok_or_else(|| ConfigError::Invalid(format!("{key}: no such setting")))?;
            *slot = value.clone();
        }
        let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid(format!("{path}: {}", e.into_inner()))
        })?;
        if !self.channels.is_empty() {
            let mut channels = profile.channels();
            for channel in &self.channels {
                if channels.iter().any(|c| c.name == channel.name) {
                    return Err(ConfigError::Invalid(format!(
                        "channel '{}': the profile has a channel of that name",
                        channel.name
                    )));
                }
                channels.push(channel.clone());
            }
            config.channels = channels;
            config.upstream = UpstreamConfig::default();
        }
        config
            .models
            .extend(self.models.iter().map(|(k, v)| (k.clone(), v.clone())));
        config.validate()?;
        Ok(config)
    }

    /// Each setting of `SETTINGS`: its value in force and where it comes from.
    pub fn settings_in_force(&self, profile: &Config) -> Vec<(&'static str, Value, Origin)> {
        let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
        let profile = serde_json::to_value(profile).unwrap_or_default();
        let at = |tree: &Value, key: &str| {
            key.split('.')
                .try_fold(tree, |node, part| node.get(part))
                .cloned()
                .unwrap_or(Value::Null)
        };
        SETTINGS
            .iter()
            .map(|(key, _)| match self.settings.get(*key) {
                Some(value) => (*key, value.clone(), Origin::Store),
                None => {
                    let value = at(&profile, key);
                    let origin = if value == at(&defaults, key) {
                        Origin::Default
                    } else {
                        Origin::Profile
                    };
                    (*key, value, origin)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_channels_and_models_apply_and_say_where_they_come_from() {
        let profile = Config::from_toml("[limits]\nrpm = 10\n[upstream]\nurl = \"http://a:1\"\n").unwrap();
        let mut overlay = Overlay::default();
        overlay.settings.insert("limits.tpm".into(), Value::from(500));
        overlay
            .settings
            .insert("auth.deny_ips".into(), serde_json::json!(["10.0.0.0/8"]));
        overlay.channels.push(UpstreamConfig {
            name: "extra".into(),
            url: "http://b:1".into(),
            ..UpstreamConfig::default()
        });
        overlay.models.insert(
            "llama3".into(),
            ModelSettings {
                aliases: vec!["fast".into()],
                ..ModelSettings::default()
            },
        );
        let config = overlay.apply(&profile).unwrap();
        assert_eq!((config.limits.rpm, config.limits.tpm), (10, 500));
        assert_eq!(config.auth.deny_ips, ["10.0.0.0/8"]);
        let names: Vec<String> = config.channels().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["default", "extra"]);
        assert!(
            config
                .channels()
                .iter()
                .all(|c| c.aliases.get("fast").map(String::as_str) == Some("llama3"))
        );

        let origins: BTreeMap<&str, Origin> = overlay
            .settings_in_force(&profile)
            .into_iter()
            .map(|(k, _, o)| (k, o))
            .collect();
        assert_eq!(origins["limits.rpm"], Origin::Profile);
        assert_eq!(origins["limits.tpm"], Origin::Store);
        assert_eq!(origins["limits.ip_rpm"], Origin::Default);

        overlay.settings.insert("limits.rpm".into(), Value::from("many"));
        let error = overlay.apply(&profile).unwrap_err().to_string();
        assert!(error.starts_with("limits.rpm"), "{error}");
        overlay.settings.clear();
        overlay.channels[0].name = "default".into();
        let error = overlay.apply(&profile).unwrap_err().to_string();
        assert!(error.contains("the profile has a channel"), "{error}");
    }
}
