//! Decode guard: no transparent decompression, ever. Any `Content-Encoding` is refused (415)
//! unless compressed bodies are allowed, and then only a single `gzip`; stacked codings are
//! refused always.

use http::HeaderMap;
use http::header::CONTENT_ENCODING;

use crate::error::ApiError;

/// Returns whether the body is a single accepted `gzip` coding.
pub fn check(headers: &HeaderMap, allow_compressed: bool) -> Result<bool, ApiError> {
    let mut values = headers.get_all(CONTENT_ENCODING).iter();
    let Some(first) = values.next() else {
        return Ok(false);
    };
    if values.next().is_some() {
        return Err(ApiError::StackedEncoding);
    }
    let bytes = first.as_bytes();
    let mut codings = bytes
        .split(|&b| b == b',')
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty());
    let coding = codings.next();
    if codings.next().is_some() {
        return Err(ApiError::StackedEncoding);
    }
    match coding {
        Some(c) if allow_compressed && c.eq_ignore_ascii_case(b"gzip") => Ok(true),
        // `identity`, an empty value and every other coding: strict refusal.
        _ => Err(ApiError::UnsupportedEncoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_ENCODING, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn table() {
        let cases: &[(&[&'static str], bool, Result<bool, ApiError>)] = &[
            (&[], false, Ok(false)),
            (&["gzip"], false, Err(ApiError::UnsupportedEncoding)),
            (&["GZIP"], false, Err(ApiError::UnsupportedEncoding)),
            (&["identity"], false, Err(ApiError::UnsupportedEncoding)),
            (&["identity"], true, Err(ApiError::UnsupportedEncoding)),
            (&["gzip, br"], false, Err(ApiError::StackedEncoding)),
            (&["gzip, br"], true, Err(ApiError::StackedEncoding)),
            (&["gzip", "gzip"], true, Err(ApiError::StackedEncoding)),
            (&["gzip"], true, Ok(true)),
            (&[" GZip "], true, Ok(true)),
            (&["br"], true, Err(ApiError::UnsupportedEncoding)),
            (&[""], true, Err(ApiError::UnsupportedEncoding)),
        ];
        for (values, allow, want) in cases {
            assert_eq!(
                &check(&headers(values), *allow),
                want,
                "{values:?} allow={allow}"
            );
        }
    }
}
