//! The normalized internal model: what every frontend decodes into and every backend
//! encodes from. Plain types, no wire quirks; each concept lives in one place.

mod chat;
mod embed;
mod error;
mod ids;
mod models;

pub use chat::*;
pub use embed::*;
pub use error::*;
pub use ids::*;
pub use models::*;
