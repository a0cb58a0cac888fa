//! diglot: a bilingual LLM gateway. The OpenAI API and the Ollama API in front, Ollama
//! and OpenAI-compatible servers behind, one normalized model in between.
//!
//! A request flows one way: `http` reads it and a protocol's decoder
//! (`protocol::*::decode`) turns it into the IR (`ir`); the `gateway` admits and routes
//! it; a backend (`protocol::*::client`) sends it upstream and decodes the answer into IR
//! events; the first protocol's encoder (`protocol::*::encode`) writes them back.
//!
//! Layers, each importing only those below it: `cli` and `http`; `admin`; `gateway`; `protocol`;
//! `telemetry`; `store`; `config`; `ir`.

pub mod admin;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod http;
pub mod ir;
pub mod protocol;
pub mod store;
pub mod telemetry;
