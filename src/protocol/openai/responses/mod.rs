//! The Responses API (`/v1/responses`) as a frontend: its wire types, decoding of a
//! request (and of the stored turns it continues) into an IR chat, and encoding of the
//! IR answer as typed `response.*` events or one response object.

pub mod decode;
pub mod encode;
pub mod wire;
