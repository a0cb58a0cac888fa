//! `[responses]`: how long the Responses API keeps what it answered.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponsesConfig {
    /// Days a response (`store: true`, the default) is kept for `previous_response_id`
    /// and `GET /v1/responses/{id}`; 0 keeps none.
    pub ttl_days: u32,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self { ttl_days: 30 }
    }
}
