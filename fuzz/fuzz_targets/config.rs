//! Config parsing and validation on arbitrary TOML text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use micronode::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::from_toml(text)
        && cfg.validate().is_ok()
    {
        // What validates renders back to itself.
        assert_eq!(Config::from_toml(&cfg.to_toml()), Ok(cfg));
    }
});
