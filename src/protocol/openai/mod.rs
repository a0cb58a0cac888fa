//! The OpenAI API (`/v1/...`).

pub mod server;
pub mod wire;
