//! An Ollama upstream's NDJSON answer, through the same framing and chunk decoding a
//! streamed chat or generate uses, cut into chunks at fuzzer-chosen sizes and with a
//! fuzzer-chosen line size limit.
#![no_main]

use diglot::protocol::framing::Format;
use diglot::protocol::ollama::client::events;
use libfuzzer_sys::fuzz_target;

#[path = "../stream_input.rs"]
mod stream_input;

fuzz_target!(|data: &[u8]| {
    let Some(input) = stream_input::Input::read(data) else { return };
    stream_input::drain(|| events(input.frames(Format::Ndjson), input.flag));
});
