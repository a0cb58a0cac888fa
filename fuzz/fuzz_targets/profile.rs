//! A profile's text as the loader reads it: TOML over the defaults, then validation
//! (which also reads each channel's keys).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = diglot::config::Config::from_toml(text)
    {
        let _ = config.listen_addr();
        let _ = config.base_path();
        for channel in config.channels() {
            let _ = channel.endpoints();
        }
    }
});
