//! Bucket, key and listing-query decoding on arbitrary strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use micronode::handlers::kv::{MAX_KEY_BYTES, decode_key, list_query, valid_bucket};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if valid_bucket(s) {
        assert!(!s.contains('/'));
    }
    if let Ok(key) = decode_key(s) {
        assert!(!key.is_empty() && key.len() <= MAX_KEY_BYTES);
        assert!(!key.chars().any(char::is_control));
        assert!(key.split('/').all(|seg| !matches!(seg, "" | "." | "..")));
    }
    let _ = list_query(Some(s));
});
