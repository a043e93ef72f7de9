//! Token parsing and verification on arbitrary strings, against a fixed key ring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use micronode::auth::{AuthFailure, Key, KeyRing, Unverified, inspect};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let ring = KeyRing::new(vec![
        Key::new("k1", [7; 32], 1).expect("valid id"),
        Key::new("k2", [9; 32], 2).expect("valid id"),
    ])
    .expect("distinct ids");
    match Unverified::parse(s) {
        Ok(t) => {
            // Parsing is canonical: what parses re-encodes to the same string.
            assert_eq!(t.encode(), s);
            assert!(inspect(s).is_ok());
            // Verification never panics, and says only what it may say.
            if let Err(e) = t.verify(&ring, 1_767_225_600, 0) {
                assert!(matches!(e, AuthFailure::Invalid | AuthFailure::Expired));
            }
        }
        Err(_) => assert!(inspect(s).is_err()),
    }
});
