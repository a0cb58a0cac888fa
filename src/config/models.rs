//! `[models."PATTERN"]` and `[cache]`: per-model policy and facts, and the response cache.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use serde_json::{Map, Value};

use crate::ir::{Reasoning, Sampling};

/// Policy and facts for the models a `[models."PATTERN"]` key matches: the name a client
/// uses (an alias included), or the upstream's name for it; exact, or a glob.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, salvo::oapi::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Shown by `/v1/models` (`name`), `/api/tags` (`display_name`) and `/api/show`
    /// (`general.basename`); the id clients send stays the same.
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// Other names clients may use for this model, on every channel that serves it (the
    /// key must then be an exact name, not a glob).
    pub aliases: Vec<String>,
    /// Options applied when the client sent none, under either API's name (`num_ctx`,
    /// `temperature`, `max_tokens`, `think`, `reasoning_effort`, `keep_alive`...).
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Options that replace whatever the client sent.
    pub forced: BTreeMap<String, serde_json::Value>,
    /// Of: completion, tools, vision, thinking, embedding, insert.
    pub capabilities: Option<Vec<String>>,
    pub context_length: Option<u64>,
    /// Architecture family, e.g. "llama" (`general.architecture` in `/api/show`).
    pub family: Option<String>,
    pub parameter_size: Option<String>,
    pub quantization: Option<String>,
}

/// The response cache (exact match, in memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache embeddings (deterministic: on by default).
    pub embeddings: bool,
    /// Cache chat and completion answers.
    pub chat: bool,
    /// Also cache chats that sample at random (neither `temperature` 0 nor a `seed`).
    pub chat_nondeterministic: bool,
    /// Bound on what the cache holds, in bytes (answers' text and vectors), for chats
    /// and for embeddings each.
    pub max_bytes: u64,
    /// How long an answer is served from the cache, in seconds.
    pub ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            embeddings: true,
            chat: false,
            chat_nondeterministic: false,
            max_bytes: 64 * 1024 * 1024,
            ttl_secs: 3600,
        }
    }
}

/// Options as the IR carries them, parsed once from a `defaults` or `forced` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub sampling: Sampling,
    pub reasoning: Option<Reasoning>,
    pub keep_alive: Option<Value>,
    pub truncate: Option<bool>,
    pub shift: Option<bool>,
}

impl Options {
    /// Reads options under either API's names. Unknown names and wrong types are errors.
    pub fn parse(table: &BTreeMap<String, Value>) -> Result<Self, String> {
        let mut options = Options::default();
        let mut sampling = Map::new();
        for (name, value) in table {
            let wrong = |what: &str| format!("'{name}' must be {what}, not {value}");
            match name.as_str() {
                "think" => {
                    options.reasoning = Some(match value {
                        Value::Bool(true) => Reasoning::On,
                        Value::Bool(false) => Reasoning::Off,
                        Value::String(level) => Reasoning::from_effort(level)
                            .flatten()
                            .ok_or_else(|| wrong("true, false, \"low\", \"medium\" or \"high\""))?,
                        _ => return Err(wrong("true, false, \"low\", \"medium\" or \"high\"")),
                    })
                }
                "reasoning_effort" => {
                    let level = value.as_str().ok_or_else(|| wrong("a string"))?;
                    options.reasoning = Some(
                        Reasoning::from_effort(level)
                            .flatten()
                            .ok_or_else(|| wrong("none, minimal, low, medium, high or max"))?,
                    );
                }
                "keep_alive" => {
                    if !(value.is_string() || value.is_number()) {
                        return Err(wrong("a duration (\"5m\") or a number of seconds"));
                    }
                    options.keep_alive = Some(value.clone());
                }
                "truncate" => options.truncate = Some(value.as_bool().ok_or_else(|| wrong("true or false"))?),
                "shift" => options.shift = Some(value.as_bool().ok_or_else(|| wrong("true or false"))?),
                "max_tokens" | "max_completion_tokens" => {
                    sampling.insert("num_predict".into(), value.clone());
                }
                _ => {
                    sampling.insert(name.clone(), value.clone());
                }
            }
        }
        let given: Vec<String> = sampling.keys().cloned().collect();
        options.sampling = serde_path_to_error::deserialize(Value::Object(sampling))
            .map_err(|e| format!("'{}': {}", e.path(), e.inner()))?;
        // An option the IR does not know is dropped by the round trip: name it.
        let known = match serde_json::to_value(&options.sampling) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        if let Some(unknown) = given.iter().find(|name| !known.contains_key(*name)) {
            return Err(format!(
                "unknown option '{unknown}' (Ollama option names such as num_ctx, temperature, top_k, \
                 num_predict, stop, seed; OpenAI's max_tokens, reasoning_effort; think, keep_alive)"
            ));
        }
        Ok(options)
    }
}
