//! An OpenAI-compatible upstream's SSE answer, through the same framing and chunk
//! decoding a streamed chat uses, cut into chunks at fuzzer-chosen sizes and with a
//! fuzzer-chosen event size limit.
#![no_main]

use diglot::protocol::framing::Format;
use diglot::protocol::openai::stream::{SseDecoder, events};
use libfuzzer_sys::fuzz_target;

#[path = "../stream_input.rs"]
mod stream_input;

fuzz_target!(|data: &[u8]| {
    let Some(input) = stream_input::Input::read(data) else { return };
    stream_input::drain(|| events(input.frames(Format::Sse), SseDecoder::new(input.flag)));
});
