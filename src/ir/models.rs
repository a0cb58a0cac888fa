//! What diglot knows of a model, for every model list and `/api/show`.

/// One model as both `/v1/models` and Ollama's `/api/tags` / `/api/show` need to describe it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelCard {
    pub id: String,
    /// A name for people, from the profile; `id` is what clients send.
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub owned_by: String,
    /// Unix seconds.
    pub created: i64,
    pub family: Option<String>,
    pub parameter_size: Option<String>,
    pub quantization: Option<String>,
    pub context_length: Option<u64>,
    pub size_bytes: Option<u64>,
    pub digest: Option<String>,
    /// Ollama capability names: completion, tools, vision, thinking, embedding, insert.
    pub capabilities: Vec<String>,
}

impl ModelCard {
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }
}

/// Context length reported for a model nobody knows the size of.
pub const DEFAULT_CONTEXT_LENGTH: u64 = 32768;
