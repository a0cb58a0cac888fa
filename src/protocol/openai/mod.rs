//! The OpenAI API (`/v1/...`).

pub mod client;
pub mod server;
pub mod wire;
