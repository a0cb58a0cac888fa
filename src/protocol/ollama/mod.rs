//! Ollama's native API (`/api/...`).

pub mod client;
pub mod decode;
pub mod server;
pub mod wire;
