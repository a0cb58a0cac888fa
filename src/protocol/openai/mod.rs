//! OpenAI: its wire types, the frontend codec (decode, encode) and the backend client.

pub mod client;
pub mod decode;
pub mod encode;
pub mod wire;
