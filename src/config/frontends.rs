//! `[openai]` and `[ollama]`: what each frontend says of itself.

use serde::{Deserialize, Serialize};

/// The OpenAI-facing side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Which delta/message fields carry reasoning text: `reasoning_content` (DeepSeek, vLLM),
    /// `reasoning` (Ollama, OpenRouter), or both.
    pub reasoning_fields: Vec<String>,
    pub system_fingerprint: String,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            reasoning_fields: vec!["reasoning_content".into(), "reasoning".into()],
            system_fingerprint: "fp_diglot".into(),
        }
    }
}

/// The Ollama-facing side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OllamaConfig {
    /// What `/api/version` answers: plain dotted integers, recent enough for Codex (0.13.4)
    /// and Copilot (0.6.4).
    pub version: String,
    /// Appended to model names without a tag in `/api/tags` (Open WebUI needs a colon);
    /// accepted with or without it on input.
    pub tag_suffix: String,
    /// An Ollama server that model management (`pull` of unknown models, `push`, `create`,
    /// `copy`, `delete`, `blobs`) is forwarded to. Unset: the upstream itself when it is an
    /// Ollama, else those calls get a clear error.
    pub fallback_url: Option<String>,
}

impl Default for OllamaConfig {
    fn default() -> Self {
        Self {
            version: "0.13.5".into(),
            tag_suffix: ":latest".into(),
            fallback_url: None,
        }
    }
}
