//! OpenAI: its wire types, the frontend codec (decode, encode) and the backend (client,
//! stream).

pub mod client;
pub mod decode;
pub mod encode;
pub mod responses;
pub mod stream;
mod think;
pub mod wire;
