//! Body cap: the declared length is judged on the head (411 / 413 without reading a byte), and
//! the body is then read with the cap enforced while streaming, a stall bound between chunks
//! (408), and — when allowed — gzip decoded on the fly under the decoded-size cap.

use std::io::Write;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http_body_util::BodyExt;

use super::BodyPlan;
use crate::error::ApiError;
use crate::wire::{RequestBody, Verb};

/// The body-cap head check. Returns the declared length.
pub fn check_length(verb: Verb, headers: &HeaderMap, max: u64) -> Result<u64, ApiError> {
    if verb.needs_length() && headers.contains_key(TRANSFER_ENCODING) {
        // Chunked (or any other transfer coding) has no length to judge up front.
        return Err(ApiError::LengthRequired);
    }
    let declared = match headers.get(CONTENT_LENGTH) {
        None if verb.needs_length() => return Err(ApiError::LengthRequired),
        None => 0,
        Some(v) => {
            parse_length(v.as_bytes()).ok_or(ApiError::BadRequest("invalid Content-Length"))?
        }
    };
    if declared > max {
        return Err(ApiError::BodyCap {
            limit: max,
            decoded: false,
        });
    }
    Ok(declared)
}

/// Strict decimal digits only (no sign, no spaces inside, no hex), no overflow.
fn parse_length(raw: &[u8]) -> Option<u64> {
    let raw = raw.trim_ascii();
    if raw.is_empty() || raw.len() > 20 {
        return None;
    }
    raw.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Limits applied while the body streams in.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_body_bytes: u64,
    pub decode_abs_cap_bytes: u64,
    /// Longest wait for the next chunk.
    pub stall: Duration,
}

/// Reads the whole body under `limits`, decoding gzip when the plan says so.
pub async fn read(
    mut body: RequestBody,
    plan: BodyPlan,
    limits: BodyLimits,
) -> Result<Bytes, ApiError> {
    let mut sink = if plan.gzip {
        Sink::Gzip(Box::new(flate2::write::GzDecoder::new(CappedVec {
            buf: Vec::new(),
            cap: limits.decode_abs_cap_bytes,
        })))
    } else {
        Sink::Plain {
            first: None,
            rest: None,
        }
    };
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(limits.stall, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ApiError::BadRequest("request body was incomplete")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we store
        };
        total += data.len() as u64;
        if total > limits.max_body_bytes || (plan.declared > 0 && total > plan.declared) {
            return Err(ApiError::BodyCap {
                limit: limits.max_body_bytes,
                decoded: false,
            });
        }
        sink.push(data, plan.declared)?;
    }
    sink.finish(limits.decode_abs_cap_bytes)
}

/// Where body bytes go: kept as-is (zero-copy for a one-frame body) or through a decoder.
enum Sink {
    Plain {
        first: Option<Bytes>,
        rest: Option<BytesMut>,
    },
    Gzip(Box<flate2::write::GzDecoder<CappedVec>>),
}

impl Sink {
    fn push(&mut self, data: Bytes, declared: u64) -> Result<(), ApiError> {
        match self {
            Sink::Plain { first, rest } => match (first.as_ref(), rest.as_mut()) {
                (None, _) => *first = Some(data),
                (Some(f), None) => {
                    let cap = usize::try_from(declared)
                        .unwrap_or(0)
                        .max(f.len() + data.len());
                    let mut buf = BytesMut::with_capacity(cap);
                    buf.extend_from_slice(f);
                    buf.extend_from_slice(&data);
                    *rest = Some(buf);
                }
                (Some(_), Some(buf)) => buf.extend_from_slice(&data),
            },
            Sink::Gzip(dec) => dec.write_all(&data).map_err(decode_error)?,
        }
        Ok(())
    }

    fn finish(self, decode_cap: u64) -> Result<Bytes, ApiError> {
        match self {
            Sink::Plain {
                rest: Some(buf), ..
            } => Ok(buf.freeze()),
            Sink::Plain { first, .. } => Ok(first.unwrap_or_default()),
            Sink::Gzip(dec) => {
                let out = dec.finish().map_err(decode_error)?;
                debug_assert!(out.buf.len() as u64 <= decode_cap);
                Ok(Bytes::from(out.buf))
            }
        }
    }
}

/// The decoder's output; refuses to grow past the decoded-size cap, so a decompression bomb
/// costs at most `cap` bytes of memory.
struct CappedVec {
    buf: Vec<u8>,
    cap: u64,
}

/// Marker payload for "decoded output passed the cap".
#[derive(Debug)]
struct OverCap(u64);

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decoded body over {} bytes", self.0)
    }
}

impl std::error::Error for OverCap {}

impl Write for CappedVec {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if (self.buf.len() + data.len()) as u64 > self.cap {
            return Err(std::io::Error::other(OverCap(self.cap)));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decode_error(e: std::io::Error) -> ApiError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<OverCap>())
    {
        Some(OverCap(limit)) => ApiError::BodyCap {
            limit: *limit,
            decoded: true,
        },
        None => ApiError::BadRequest("invalid gzip body"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(cl: Option<&'static str>, te: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = cl {
            h.insert(CONTENT_LENGTH, HeaderValue::from_static(v));
        }
        if te {
            h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        h
    }

    #[test]
    fn length_rules() {
        assert_eq!(
            check_length(Verb::Put, &with(Some("10"), false), 10),
            Ok(10)
        );
        assert_eq!(
            check_length(Verb::Put, &with(Some("11"), false), 10),
            Err(ApiError::BodyCap {
                limit: 10,
                decoded: false
            })
        );
        assert_eq!(check_length(Verb::Put, &with(Some("0"), false), 10), Ok(0));
        assert_eq!(
            check_length(Verb::Post, &with(None, false), 10),
            Err(ApiError::LengthRequired)
        );
        assert_eq!(
            check_length(Verb::Patch, &with(None, true), 10),
            Err(ApiError::LengthRequired)
        );
        assert_eq!(check_length(Verb::Get, &with(None, false), 10), Ok(0));
        assert_eq!(
            check_length(Verb::Get, &with(Some("11"), false), 10),
            Err(ApiError::BodyCap {
                limit: 10,
                decoded: false
            })
        );
    }

    #[test]
    fn length_parsing_is_strict() {
        for bad in [
            "+5",
            "-1",
            "0x10",
            "5,6",
            "",
            "99999999999999999999999",
            "1 2",
        ] {
            assert_eq!(parse_length(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_length(b" 42 "), Some(42));
    }

    fn gz(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).expect("writing to a Vec cannot fail");
        Bytes::from(e.finish().expect("finishing a Vec encoder cannot fail"))
    }

    fn limits(max: u64, cap: u64) -> BodyLimits {
        BodyLimits {
            max_body_bytes: max,
            decode_abs_cap_bytes: cap,
            stall: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn gzip_is_decoded_under_the_cap_and_a_bomb_is_refused() {
        let small = gz(b"hello hello hello");
        let plan = BodyPlan {
            declared: small.len() as u64,
            gzip: true,
        };
        let out = read(small.into(), plan, limits(1 << 20, 1 << 20)).await;
        assert_eq!(out, Ok(Bytes::from_static(b"hello hello hello")));

        let bomb = gz(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 * 1024, "bomb is small: {}", bomb.len());
        let plan = BodyPlan {
            declared: bomb.len() as u64,
            gzip: true,
        };
        let out = read(bomb.into(), plan, limits(1 << 20, 1 << 20)).await;
        assert_eq!(
            out,
            Err(ApiError::BodyCap {
                limit: 1 << 20,
                decoded: true
            })
        );
    }

    #[tokio::test]
    async fn garbage_gzip_is_a_bad_request() {
        let plan = BodyPlan {
            declared: 5,
            gzip: true,
        };
        let out = read(Bytes::from_static(b"nope!").into(), plan, limits(100, 100)).await;
        assert_eq!(out, Err(ApiError::BadRequest("invalid gzip body")));
    }
}
