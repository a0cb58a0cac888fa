//! An Anthropic upstream's SSE answer, through the same framing and event decoding a
//! streamed Messages call uses, cut into chunks at fuzzer-chosen sizes and with a
//! fuzzer-chosen event size limit.
#![no_main]

use diglot::protocol::anthropic::client::events;
use diglot::protocol::framing::Format;
use libfuzzer_sys::fuzz_target;

#[path = "../stream_input.rs"]
mod stream_input;

fuzz_target!(|data: &[u8]| {
    let Some(input) = stream_input::Input::read(data) else { return };
    stream_input::drain(|| events(input.frames(Format::Sse)));
});
