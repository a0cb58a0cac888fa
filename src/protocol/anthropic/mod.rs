//! Anthropic Messages: its wire types, the frontend codec (decode, encode) and the
//! backend (client, which also reads its event stream).

pub mod client;
pub mod decode;
pub mod encode;
pub mod wire;
