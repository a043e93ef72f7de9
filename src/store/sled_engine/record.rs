//! The on-disk layout of the `sled` engine: one tree holding user records, value chunks and
//! engine metadata, told apart by their first key byte (docs/STORAGE.md, "On-disk format").
//!
//! - `bucket/key` (first byte `[a-z0-9]`): a record.
//! - `0x00 name`: engine metadata (the revision reservation, the record format).
//! - `0x01 revision(u64 BE) slot(u16 BE) index(u32 BE)`: chunk `index` of the value written at
//!   `revision` by op `slot` of its write step.
//! - `0x02 expires_at(u64 BE) bucket/key`: the expiry index (empty value), one entry per
//!   record with a TTL, so the sweeper finds what expired without a full scan.
//!
//! Records, v1 (before the format tag; first byte 0x00 since versions stay below 2^56):
//! `version u64 | ct_len u16 | ct | bytes`.
//! Records, v2: `0x01 | flags u8 | revision u64 | [expires_at u64] | [owner_len u8 | owner] |
//! ct_len u16 | ct | body`, where the body is the value (inline) or, with `CHUNKED`,
//! `slot u16 | count u32 | len u64`. The owner (flag `OWNER`) is the tenant the record counts
//! for; a record without one belongs to `default` (every record written before tenants).
//! All integers big-endian.

use std::ops::Range;

use super::super::StoreError;

/// First byte of a v2 record.
pub(super) const TAG_V2: u8 = 0x01;
const FLAG_EXPIRES: u8 = 0x01;
const FLAG_CHUNKED: u8 = 0x02;
const FLAG_OWNER: u8 = 0x04;

pub(super) const CHUNK_PREFIX: u8 = 0x01;
pub(super) const TTL_PREFIX: u8 = 0x02;
/// The first byte any record key may have (records start with `[a-z0-9]`).
pub(super) const RECORDS_START: &[u8] = b"0";
/// A revision no lower than any handed out; made durable before it is passed.
pub(super) const META_RESERVED: &[u8] = b"\x00reserved";
/// The record format of the tree: absent = v1 records may need rewriting, 2 = done.
pub(super) const META_FORMAT: &[u8] = b"\x00format";
pub(super) const FORMAT_V2: u8 = 2;

pub(super) const CHUNK_KEY_LEN: usize = 1 + 8 + 2 + 4;

/// Where the value of a record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Body {
    /// In the record, at this range.
    Inline(Range<usize>),
    /// In `count` chunks under `chunk_prefix(revision, slot)`, `len` bytes in all.
    Chunked { slot: u16, count: u32, len: u64 },
}

/// A decoded record head; the bytes stay in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub revision: u64,
    pub expires_at: Option<u64>,
    /// The owner's bytes; `None` = `default`.
    pub owner: Option<Range<usize>>,
    pub content_type: Range<usize>,
    pub body: Body,
}

impl Head {
    /// The tenant the record counts for.
    pub(super) fn owner<'r>(&self, rec: &'r [u8]) -> &'r str {
        match &self.owner {
            None => crate::config::DEFAULT_TENANT,
            Some(r) => rec
                .get(r.clone())
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(crate::config::DEFAULT_TENANT),
        }
    }

    /// The value's length in bytes.
    pub(super) fn value_len(&self) -> u64 {
        match &self.body {
            Body::Inline(r) => r.len() as u64,
            Body::Chunked { len, .. } => *len,
        }
    }
}

fn corrupt() -> StoreError {
    StoreError::internal("corrupt value record")
}

fn u16_at(rec: &[u8], at: usize) -> Result<u16, StoreError> {
    rec.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or_else(corrupt)
}

fn u32_at(rec: &[u8], at: usize) -> Result<u32, StoreError> {
    rec.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(corrupt)
}

pub(super) fn u64_at(rec: &[u8], at: usize) -> Result<u64, StoreError> {
    rec.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(corrupt)
}

/// Decodes a v1 or v2 record head.
pub(super) fn decode(rec: &[u8]) -> Result<Head, StoreError> {
    match rec.first() {
        Some(0x00) => {
            let revision = u64_at(rec, 0)?;
            let ct_len = usize::from(u16_at(rec, 8)?);
            let ct = 10..10 + ct_len;
            if rec.len() < ct.end {
                return Err(corrupt());
            }
            Ok(Head {
                revision,
                expires_at: None,
                owner: None,
                body: Body::Inline(ct.end..rec.len()),
                content_type: ct,
            })
        }
        Some(&TAG_V2) => {
            let flags = *rec.get(1).ok_or_else(corrupt)?;
            let revision = u64_at(rec, 2)?;
            let mut at = 10;
            let expires_at = if flags & FLAG_EXPIRES != 0 {
                at += 8;
                Some(u64_at(rec, 10)?)
            } else {
                None
            };
            let owner = if flags & FLAG_OWNER != 0 {
                let len = usize::from(*rec.get(at).ok_or_else(corrupt)?);
                let r = at + 1..at + 1 + len;
                if rec.len() < r.end {
                    return Err(corrupt());
                }
                at = r.end;
                Some(r)
            } else {
                None
            };
            let ct_len = usize::from(u16_at(rec, at)?);
            let ct = at + 2..at + 2 + ct_len;
            if rec.len() < ct.end {
                return Err(corrupt());
            }
            let body = if flags & FLAG_CHUNKED != 0 {
                let at = ct.end;
                if rec.len() != at + 14 {
                    return Err(corrupt());
                }
                Body::Chunked {
                    slot: u16_at(rec, at)?,
                    count: u32_at(rec, at + 2)?,
                    len: u64_at(rec, at + 6)?,
                }
            } else {
                Body::Inline(ct.end..rec.len())
            };
            Ok(Head {
                revision,
                expires_at,
                owner,
                content_type: ct,
                body,
            })
        }
        _ => Err(corrupt()),
    }
}

/// Length of a v2 record head before its body.
pub(super) fn head_len(content_type: &[u8], expires_at: Option<u64>, owner: Option<&str>) -> usize {
    2 + 8
        + if expires_at.is_some() { 8 } else { 0 }
        + owner.map_or(0, |o| 1 + o.len())
        + 2
        + content_type.len()
}

/// How a record names its owner: nothing for `default`, else the name (at most 63 bytes, or
/// empty for system records).
pub(super) fn stored_owner(owner: &str) -> Option<&str> {
    (owner != crate::config::DEFAULT_TENANT).then_some(owner)
}

/// Encodes a v2 record. `chunked` = `(slot, count)`: the value is in chunks, not inline.
/// The content type must already be within the limit (checked by the caller).
pub(super) fn encode(
    revision: u64,
    content_type: &[u8],
    expires_at: Option<u64>,
    owner: Option<&str>,
    value: &[u8],
    chunked: Option<(u16, u32)>,
) -> Vec<u8> {
    let body_len = if chunked.is_some() { 14 } else { value.len() };
    let mut rec = Vec::with_capacity(head_len(content_type, expires_at, owner) + body_len);
    let mut flags = 0;
    // Tenant names are at most 63 bytes (checked where tokens are minted and parsed).
    let owner = owner.map(|o| &o.as_bytes()[..o.len().min(255)]);
    if owner.is_some() {
        flags |= FLAG_OWNER;
    }
    if expires_at.is_some() {
        flags |= FLAG_EXPIRES;
    }
    if chunked.is_some() {
        flags |= FLAG_CHUNKED;
    }
    rec.push(TAG_V2);
    rec.push(flags);
    rec.extend_from_slice(&revision.to_be_bytes());
    if let Some(t) = expires_at {
        rec.extend_from_slice(&t.to_be_bytes());
    }
    if let Some(o) = owner {
        rec.push(o.len() as u8);
        rec.extend_from_slice(o);
    }
    let ct_len = u16::try_from(content_type.len()).expect("content type length checked");
    rec.extend_from_slice(&ct_len.to_be_bytes());
    rec.extend_from_slice(content_type);
    match chunked {
        Some((slot, count)) => {
            rec.extend_from_slice(&slot.to_be_bytes());
            rec.extend_from_slice(&count.to_be_bytes());
            rec.extend_from_slice(&(value.len() as u64).to_be_bytes());
        }
        None => rec.extend_from_slice(value),
    }
    rec
}

/// The expiry index entry of a record: `0x02 expires_at(u64 BE) engine-key`, empty value.
/// Written and removed in the same atomic step as the record it points at.
pub(super) fn ttl_key(expires_at: u64, engine_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + engine_key.len());
    k.push(TTL_PREFIX);
    k.extend_from_slice(&expires_at.to_be_bytes());
    k.extend_from_slice(engine_key);
    k
}

/// The key prefix shared by every chunk of one value.
pub(super) fn chunk_prefix(revision: u64, slot: u16) -> [u8; 11] {
    let mut k = [0u8; 11];
    k[0] = CHUNK_PREFIX;
    k[1..9].copy_from_slice(&revision.to_be_bytes());
    k[9..11].copy_from_slice(&slot.to_be_bytes());
    k
}

pub(super) fn chunk_key(revision: u64, slot: u16, index: u32) -> [u8; CHUNK_KEY_LEN] {
    let mut k = [0u8; CHUNK_KEY_LEN];
    k[..11].copy_from_slice(&chunk_prefix(revision, slot));
    k[11..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Sizes derived from sled's segment size so that sled never writes a page to a blob file.
///
/// sled stores a serialized page in a separate blob file when it is longer than
/// `segment_size / 4 - 20` bytes (less a 32-byte message header). A page is one tree node: a
/// leaf holds up to about 20 items before it splits. So every item — a record with its key, or
/// a chunk with its key — must stay under 1/32 of that threshold, a margin of 1.6× on the
/// largest leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// Largest tree item (key + value) we ever write.
    pub item_budget: usize,
    /// Bytes per chunk of a large value.
    pub chunk_bytes: usize,
}

/// Items per leaf we budget for (sled splits a leaf above 16 items).
const LEAF_ITEMS: usize = 32;
/// Per-item bytes of sled's own node encoding (lengths, offsets), generously.
const ITEM_OVERHEAD: usize = 64;

impl Sizing {
    pub fn for_segment(segment_size: usize) -> Sizing {
        let blob_threshold = segment_size / 4 - 20 - 32;
        let item_budget = blob_threshold / LEAF_ITEMS - ITEM_OVERHEAD;
        // Whole KiB, for tidy numbers; at least 1 KiB even for sled's smallest segment.
        let chunk_bytes = ((item_budget - CHUNK_KEY_LEN) / 1024 * 1024).max(1024);
        Sizing {
            item_budget,
            chunk_bytes,
        }
    }

    /// Whether a value is stored inside its record (else in chunks).
    pub fn inline(&self, engine_key_len: usize, head_len: usize, value_len: usize) -> bool {
        engine_key_len + head_len + value_len <= self.item_budget
    }

    /// Number of chunks of a value.
    pub fn chunks(&self, value_len: usize) -> usize {
        value_len.div_ceil(self.chunk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_records_round_trip_and_v1_records_still_decode() {
        let rec = encode(7, b"text/plain", None, None, &[0, 1, 255], None);
        assert_eq!(rec[0], TAG_V2);
        let h = decode(&rec).expect("decodes");
        assert_eq!(h.revision, 7);
        assert_eq!(&rec[h.content_type.clone()], b"text/plain");
        assert_eq!(h.body, Body::Inline(rec.len() - 3..rec.len()));
        assert!(decode(&rec[..9]).is_err());

        let rec = encode(
            8,
            b"",
            Some(1_800_000_000),
            Some("acme"),
            &[9; 5000],
            Some((3, 2)),
        );
        let h = decode(&rec).expect("decodes");
        assert_eq!(h.expires_at, Some(1_800_000_000));
        assert_eq!(h.owner(&rec), "acme");
        assert_eq!(h.value_len(), 5000);
        let system = encode(9, b"x", None, Some(""), b"v", None);
        let sh = decode(&system).expect("decodes");
        assert_eq!(
            (sh.owner(&system), &system[sh.content_type.clone()]),
            ("", &b"x"[..])
        );
        assert_eq!(
            h.body,
            Body::Chunked {
                slot: 3,
                count: 2,
                len: 5000
            }
        );

        let mut v1 = 0x1234u64.to_be_bytes().to_vec();
        v1.extend_from_slice(&4u16.to_be_bytes());
        v1.extend_from_slice(b"text");
        v1.extend_from_slice(b"hello");
        let h = decode(&v1).expect("v1 decodes");
        assert_eq!(h.revision, 0x1234);
        assert_eq!(&v1[h.content_type.clone()], b"text");
        assert_eq!(h.body, Body::Inline(v1.len() - 5..v1.len()));
        assert!(decode(&[0x02, 0, 0]).is_err(), "unknown tag");
    }

    #[test]
    fn every_item_stays_far_below_the_blob_threshold() {
        for shift in 19..=24 {
            let segment = 1usize << shift;
            let s = Sizing::for_segment(segment);
            let threshold = segment / 4 - 20 - 32;
            let longest_record_key = 63 + 1 + 1024;
            let longest_head = head_len(&[0; 1024], Some(0), Some(&"t".repeat(63))) + 14;
            assert!(s.chunk_bytes + CHUNK_KEY_LEN + ITEM_OVERHEAD <= s.item_budget + ITEM_OVERHEAD);
            assert!(
                longest_record_key + longest_head <= s.item_budget,
                "{segment}"
            );
            assert!(
                LEAF_ITEMS * (s.item_budget + ITEM_OVERHEAD) <= threshold,
                "{segment}"
            );
        }
        assert_eq!(Sizing::for_segment(512 * 1024).chunk_bytes, 3 * 1024);
        assert_eq!(Sizing::for_segment(2 << 20).chunk_bytes, 15 * 1024);
        assert_eq!(Sizing::for_segment(8 << 20).chunk_bytes, 63 * 1024);
    }
}
