//! OpenAI Responses request bodies as the frontend reads them: JSON into the wire types,
//! then decode into the IR (with no stored history; references name nothing stored).
#![no_main]

use std::collections::HashMap;

use diglot::protocol::openai::responses::{decode, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<wire::CreateRequest>(data) else { return };
    let _ = decode::item_references(request.input.as_ref());
    let _ = decode::decode_response_request(request, Vec::new(), &HashMap::new());
});
