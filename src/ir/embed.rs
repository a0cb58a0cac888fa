//! Embeddings: the request (model, inputs, options) and the answer (vectors, usage).

/// A request for embedding vectors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<String>,
    /// Shorten every vector to this many dimensions (models that support it).
    pub dimensions: Option<u32>,
    /// Whether the upstream may truncate over-long inputs (Ollama's `truncate`).
    pub truncate: Option<bool>,
    /// Ollama's `keep_alive`, kept as sent (a number of seconds or a duration string).
    pub keep_alive: Option<serde_json::Value>,
    /// Ollama runtime options for the embedding model, as sent.
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// Embedding vectors in input order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbedResponse {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: Option<u64>,
    /// Upstream-reported total duration in nanoseconds, when known.
    pub total_duration_ns: Option<u64>,
}
