//! OpenAI request bodies as the frontend reads them: JSON into the wire types, then
//! decode into the IR. The first byte picks the route: chat, legacy completion, embeddings.
#![no_main]

use diglot::protocol::openai::{decode, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    match route % 3 {
        0 => {
            if let Ok(w) = serde_json::from_slice::<wire::ChatCompletionRequest>(body) {
                let _ = decode::decode_chat(w);
            }
        }
        1 => {
            if let Ok(w) = serde_json::from_slice::<wire::CompletionRequest>(body) {
                let _ = decode::decode_completion(w);
            }
        }
        _ => {
            if let Ok(w) = serde_json::from_slice::<wire::EmbeddingRequest>(body) {
                let _ = decode::wants_base64(w.encoding_format.as_deref());
                let _ = decode::decode_embedding(w);
            }
        }
    }
});
