//! Ollama request bodies as the frontend reads them: JSON into the wire types, then
//! decode into the IR. The first byte picks the route: chat, generate, embed, the legacy
//! embeddings, or a body naming a model (show, pull, delete...).
#![no_main]

use diglot::protocol::ollama::{decode, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    match route % 5 {
        0 => {
            if let Ok(w) = serde_json::from_slice::<wire::ChatRequest>(body) {
                let _ = decode::decode_chat(w);
            }
        }
        1 => {
            if let Ok(w) = serde_json::from_slice::<wire::GenerateRequest>(body) {
                let _ = decode::decode_generate(w);
            }
        }
        2 => {
            if let Ok(w) = serde_json::from_slice::<wire::EmbedRequest>(body) {
                let _ = decode::decode_embed(w);
            }
        }
        3 => {
            if let Ok(w) = serde_json::from_slice::<wire::LegacyEmbeddingRequest>(body) {
                let _ = decode::decode_legacy_embedding(w);
            }
        }
        _ => {
            if let Ok(w) = serde_json::from_slice::<wire::ModelName>(body) {
                let _ = decode::model_name(w);
            }
        }
    }
});
