//! Ids diglot makes up for answers and tool calls.

use rand::Rng;
use rand::distr::Alphanumeric;

/// `prefix` followed by 24 random alphanumerics: unique enough to key on, unlike
/// Ollama's `chatcmpl-<0..998>`.
pub fn random_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    id.extend(rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from));
    id
}

/// A tool-call id for upstreams that send none.
pub fn new_call_id() -> String {
    random_id("call_")
}
