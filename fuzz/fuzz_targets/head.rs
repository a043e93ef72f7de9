//! Request-head guard evaluation (decode guard + body cap) on arbitrary header bytes.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use micronode::guards::{HeadLimits, check_head};
use micronode::wire::Verb;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let verb = Verb::ALL[usize::from(first) % Verb::ALL.len()];
    let limits = HeadLimits {
        max_body_bytes: u64::from(first) * 97,
        allow_compressed: first & 1 == 1,
    };
    // Lines of "name:value"; names cycle through the headers the guards read.
    let names = [
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "x-other",
    ];
    let mut headers = HeaderMap::new();
    for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(HeaderName::from_static(names[i % names.len()]), v);
        }
    }
    if let Ok(plan) = check_head(verb, &headers, limits) {
        assert!(plan.declared <= limits.max_body_bytes);
        assert!(!plan.gzip || limits.allow_compressed);
    }
});
