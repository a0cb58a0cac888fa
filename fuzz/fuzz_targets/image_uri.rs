//! Image references as clients give them: `data:` URIs (with their MIME type sniffed
//! from the base64 data) or http(s) URLs.
#![no_main]

use diglot::ir::Image;
use diglot::protocol::images::{parse_image_ref, sniff_base64_mime, sniff_mime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sniff_mime(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(Image::Data { base64, .. }) = parse_image_ref(text) {
        let _ = sniff_base64_mime(&base64);
    }
    let _ = sniff_base64_mime(text);
});
