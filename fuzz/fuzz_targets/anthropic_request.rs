//! Anthropic Messages request bodies as the frontend reads them: JSON into the wire
//! types, then decode into the IR. The first byte picks the route: messages or
//! count_tokens.
#![no_main]

use diglot::protocol::anthropic::{decode, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    let Ok(request) = serde_json::from_slice::<wire::MessagesRequest>(body) else { return };
    let _ = match route % 2 {
        0 => decode::decode_messages(request),
        _ => decode::decode_count_tokens(request),
    };
});
