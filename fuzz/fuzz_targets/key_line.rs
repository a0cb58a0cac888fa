//! Key-import lines (`keys`, `keys_file`, `diglot` key imports), one per line, in every
//! format the seed gateways accept.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some(Ok(parsed)) = diglot::config::parse_key_line(line) {
            assert!(!parsed.key.is_empty() && !parsed.key.contains(char::is_whitespace));
        }
    }
});
