//! diglot: a bilingual LLM gateway. The OpenAI API and the Ollama API in front, Ollama
//! and OpenAI-compatible servers behind, one normalized model in between.
//!
//! A request flows one way: a frontend (`protocol::*::server`) decodes it into the IR
//! (`ir`), the `gateway` routes it, a backend (`protocol::*::client`) sends it upstream
//! and decodes the answer into IR events, and the same frontend encodes those.

pub mod cli;
pub mod config;
pub mod gateway;
pub mod ir;
pub mod protocol;
pub mod server;
pub mod store;
pub mod telemetry;
