//! The snapshot file format (docs/CLI.md, "Snapshot file format"): newline-delimited JSON, one
//! [`Header`] line, one line per live key ([`Entry`]) or system record, then one end line
//! carrying the record count and the SHA-256 of every byte before it.
//!
//! ```text
//! {"format":"micronode-snapshot","version":1,"revision":42,"created_unix":1700000000}
//! {"bucket":"app","key":"cfg/a","content_type":"text/plain","etag":"\"41\"","value":"aGk=","expires_at":1700000600}
//! {"end":true,"count":1,"sha256":"<64 lowercase hex digits>"}
//! ```
//!
//! - [`Writer`] produces the lines incrementally (hash and count kept as it goes), so the
//!   server can stream a snapshot in bounded memory and the tests can build files;
//! - [`Reader`] reads them back one record at a time, checking every line's shape, and the
//!   count and hash when it reaches the end line; [`verify`] runs a whole file through it.
//!
//! `count` counts the record lines (keys and system records), not the header or end line.
//! A line with a `"system"` field is a system record (tenant usage, revocations): readers
//! accept and count it; what it means belongs to whoever restores it.
//!
//! This module knows nothing of HTTP or engines: it is bytes in, bytes out.

use std::io::BufRead;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` of the header line.
pub const FORMAT: &str = "micronode-snapshot";
/// The only format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The media type a snapshot is served with.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The store revision the snapshot is consistent at.
    pub revision: u64,
    /// Unix seconds when the snapshot was started.
    pub created_unix: u64,
}

impl Header {
    /// A version-1 header.
    pub fn new(revision: u64, created_unix: u64) -> Header {
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            revision,
            created_unix,
        }
    }
}

/// One live key, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub bucket: String,
    pub key: String,
    pub content_type: String,
    /// The key's `ETag` when the snapshot was taken (informational: a restore gives every key
    /// a fresh revision).
    pub etag: String,
    pub value: Vec<u8>,
    /// Unix seconds after which the key is gone.
    pub expires_at: Option<u64>,
    /// The tenant the key counts for; `None` = `default`.
    pub tenant: Option<String>,
}

impl Entry {
    pub fn borrowed(&self) -> EntryRef<'_> {
        EntryRef {
            bucket: &self.bucket,
            key: &self.key,
            content_type: &self.content_type,
            etag: &self.etag,
            value: &self.value,
            expires_at: self.expires_at,
            tenant: self.tenant.as_deref(),
        }
    }
}

/// One live key, as handed to the [`Writer`] (borrowed, so a server streams records without
/// copying them).
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    pub etag: &'a str,
    pub value: &'a [u8],
    pub expires_at: Option<u64>,
    /// `None` = `default`.
    pub tenant: Option<&'a str>,
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub end: bool,
    /// Record lines between the header and this line.
    pub count: u64,
    /// Lowercase hex SHA-256 of every byte before this line (each line with its `\n`).
    pub sha256: String,
}

/// The entry line as it is on the wire (value in standard base64 with padding).
#[derive(Serialize)]
struct EntryLine<'a> {
    bucket: &'a str,
    key: &'a str,
    content_type: &'a str,
    etag: &'a str,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
}

#[derive(Deserialize)]
struct EntryIn {
    bucket: String,
    key: String,
    content_type: String,
    etag: String,
    value: String,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    tenant: Option<String>,
}

/// Writes a snapshot line by line. Created with the header (so it always comes first) and
/// consumed by [`Writer::end`] (so nothing follows the end line). Each call appends whole
/// lines to `out`; the caller decides when a buffer is big enough to send or write.
#[derive(Debug)]
pub struct Writer {
    hasher: Sha256,
    count: u64,
    bytes: u64,
}

impl Writer {
    /// Starts a snapshot: appends the header line to `out`.
    pub fn new(header: &Header, out: &mut Vec<u8>) -> Writer {
        let mut w = Writer {
            hasher: Sha256::new(),
            count: 0,
            bytes: 0,
        };
        w.line(header, out);
        w
    }

    /// Appends one key's line.
    pub fn entry(&mut self, e: EntryRef<'_>, out: &mut Vec<u8>) {
        let line = EntryLine {
            bucket: e.bucket,
            key: e.key,
            content_type: e.content_type,
            etag: e.etag,
            value: BASE64.encode(e.value),
            expires_at: e.expires_at,
            tenant: e.tenant,
        };
        self.line(&line, out);
        self.count += 1;
    }

    /// Appends one system record: a JSON object with a `"system"` field naming its kind.
    /// Anything else is refused (it would not read back as a system record).
    pub fn system(
        &mut self,
        record: &serde_json::Map<String, serde_json::Value>,
        out: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        if !record.contains_key("system") {
            return Err("a system record needs a \"system\" field");
        }
        if record.contains_key("end") {
            return Err("a system record must not have an \"end\" field");
        }
        self.line(record, out);
        self.count += 1;
        Ok(())
    }

    /// Record lines written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends the end line; returns what it says and the total size of the snapshot.
    pub fn end(self, out: &mut Vec<u8>) -> (End, u64) {
        let end = End {
            end: true,
            count: self.count,
            sha256: hex(&self.hasher.finalize()),
        };
        let before = out.len();
        serde_json::to_writer(&mut *out, &end).expect("an End serializes to JSON");
        out.push(b'\n');
        let total = self.bytes + (out.len() - before) as u64;
        (end, total)
    }

    fn line(&mut self, value: &impl Serialize, out: &mut Vec<u8>) {
        let start = out.len();
        // Plain structs of strings and integers, and JSON maps: serializing cannot fail.
        serde_json::to_writer(&mut *out, value).expect("a snapshot line serializes to JSON");
        out.push(b'\n');
        self.hasher.update(&out[start..]);
        self.bytes += (out.len() - start) as u64;
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Why a snapshot was refused: the 1-based line at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SnapshotError {
    pub line: u64,
    pub message: String,
}

/// One record line of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Entry(Entry),
    /// A system record, kept as read (its `"system"` field names the kind).
    System(serde_json::Map<String, serde_json::Value>),
}

/// What a whole, valid snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub revision: u64,
    pub created_unix: u64,
    /// Record lines (keys + system records), as the end line says.
    pub count: u64,
    pub keys: u64,
    pub system: u64,
    /// Size of the file in bytes, end line included.
    pub bytes: u64,
    pub sha256: String,
}

/// Reads a snapshot record by record, checking as it goes: the header first, every line's
/// shape, then at the end line the count and the hash; nothing may follow the end line.
/// Records come out before the end line is checked, so a consumer that must not act on a
/// bad file runs [`verify`] first.
#[derive(Debug)]
pub struct Reader<R> {
    input: R,
    header: Header,
    hasher: Sha256,
    line_no: u64,
    count: u64,
    keys: u64,
    system: u64,
    bytes: u64,
    summary: Option<Summary>,
    buf: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header line.
    pub fn new(mut input: R) -> Result<Reader<R>, SnapshotError> {
        let mut buf = Vec::new();
        let bad = |message: String| SnapshotError { line: 1, message };
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        if n == 0 {
            return Err(bad("empty file: no header line".to_owned()));
        }
        if buf.last() != Some(&b'\n') {
            return Err(bad("the header line is the only line".to_owned()));
        }
        let header: Header = serde_json::from_slice(&buf[..n - 1])
            .map_err(|e| bad(format!("not a snapshot header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!(
                "format is {:?}, not {FORMAT:?}",
                header.format
            )));
        }
        if header.version != VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this build reads {VERSION})",
                header.version
            )));
        }
        let mut hasher = Sha256::new();
        hasher.update(&buf);
        Ok(Reader {
            input,
            header,
            hasher,
            line_no: 1,
            count: 0,
            keys: 0,
            system: 0,
            bytes: n as u64,
            summary: None,
            buf,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The 1-based number of the line read last (the header is line 1).
    pub fn line(&self) -> u64 {
        self.line_no
    }

    /// The next record; `Ok(None)` once the end line has been read and checked (then
    /// [`Reader::summary`] is set).
    pub fn next_record(&mut self) -> Result<Option<Record>, SnapshotError> {
        if self.summary.is_some() {
            return Ok(None);
        }
        self.buf.clear();
        self.line_no += 1;
        let line_no = self.line_no;
        let bad = |message: String| SnapshotError {
            line: line_no,
            message,
        };
        let n = self
            .input
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        if n == 0 {
            return Err(bad("file ends without an end line (truncated?)".to_owned()));
        }
        let newline = self.buf.last() == Some(&b'\n');
        let text = if newline {
            &self.buf[..n - 1]
        } else {
            &self.buf[..]
        };
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(text).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        if obj.contains_key("end") {
            let end: End = serde_json::from_value(serde_json::Value::Object(obj))
                .map_err(|e| bad(format!("malformed end line: {e}")))?;
            self.finish(end, n as u64).map_err(bad)?;
            return Ok(None);
        }
        if !newline {
            return Err(bad(
                "file ends inside a record line, without an end line (truncated?)".to_owned(),
            ));
        }
        self.hasher.update(&self.buf);
        self.bytes += n as u64;
        self.count += 1;
        if obj.contains_key("system") {
            self.system += 1;
            return Ok(Some(Record::System(obj)));
        }
        let e: EntryIn = serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| bad(format!("malformed key record: {e}")))?;
        let value = BASE64
            .decode(e.value.as_bytes())
            .map_err(|e| bad(format!("value is not standard base64: {e}")))?;
        if e.bucket.is_empty() || e.key.is_empty() {
            return Err(bad("bucket and key must not be empty".to_owned()));
        }
        if let Some(t) = &e.tenant
            && !crate::config::valid_tenant(t)
        {
            return Err(bad(format!(
                "tenant {t:?} is not 1-63 characters of [a-z0-9._-]"
            )));
        }
        self.keys += 1;
        Ok(Some(Record::Entry(Entry {
            bucket: e.bucket,
            key: e.key,
            content_type: e.content_type,
            etag: e.etag,
            value,
            expires_at: e.expires_at,
            tenant: e.tenant,
        })))
    }

    /// Checks the end line against what was read, then that nothing follows it.
    fn finish(&mut self, end: End, end_len: u64) -> Result<(), String> {
        if !end.end {
            return Err("end line with \"end\": false".to_owned());
        }
        if end.count != self.count {
            return Err(format!(
                "end line counts {} records, the file has {}",
                end.count, self.count
            ));
        }
        let actual = hex(&self.hasher.clone().finalize());
        if end.sha256 != actual {
            return Err(format!(
                "sha256 mismatch: end line says {}, the lines before it hash to {actual}",
                end.sha256
            ));
        }
        let mut rest = Vec::new();
        self.input
            .read_until(b'\n', &mut rest)
            .map_err(|e| format!("cannot read: {e}"))?;
        if !rest.is_empty() {
            self.line_no += 1;
            return Err(format!(
                "data after the end line (line {} has {} bytes)",
                self.line_no,
                rest.len()
            ));
        }
        self.summary = Some(Summary {
            revision: self.header.revision,
            created_unix: self.header.created_unix,
            count: self.count,
            keys: self.keys,
            system: self.system,
            bytes: self.bytes + end_len,
            sha256: actual,
        });
        Ok(())
    }

    /// What the file held, once the end line has been read and checked.
    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }
}

/// Reads a whole snapshot and checks it; the summary, or the first bad line.
pub fn verify(input: impl BufRead) -> Result<Summary, SnapshotError> {
    let mut r = Reader::new(input)?;
    while r.next_record()?.is_some() {}
    r.summary.ok_or_else(|| SnapshotError {
        line: r.line_no,
        message: "no end line".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &[u8], expires_at: Option<u64>) -> Entry {
        Entry {
            bucket: "app".to_owned(),
            key: key.to_owned(),
            content_type: "text/plain".to_owned(),
            etag: "\"12\"".to_owned(),
            value: value.to_vec(),
            expires_at,
            tenant: None,
        }
    }

    /// A snapshot of `entries` plus one system record.
    fn build(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&Header::new(42, 1_700_000_000), &mut out);
        for e in entries {
            w.entry(e.borrowed(), &mut out);
        }
        let mut sys = serde_json::Map::new();
        sys.insert("system".into(), "revocation".into());
        sys.insert("id".into(), "abc".into());
        w.system(&sys, &mut out).expect("a system record");
        let (end, total) = w.end(&mut out);
        assert_eq!(end.count, entries.len() as u64 + 1);
        assert_eq!(total, out.len() as u64);
        out
    }

    fn sample() -> Vec<Entry> {
        vec![
            entry("a", b"hello", None),
            entry("b/c", &[0, 0xff, 0xfe, b'\n', b'"'], Some(1_800_000_000)),
            entry("empty", b"", None),
        ]
    }

    /// Write → read gives back every record, and the summary matches the end line.
    #[test]
    fn write_then_verify_round_trips() {
        let entries = sample();
        let bytes = build(&entries);
        let text = String::from_utf8(bytes.clone()).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"format":"micronode-snapshot","version":1,"revision":42,"created_unix":1700000000}"#
        );
        assert_eq!(
            lines[1],
            r#"{"bucket":"app","key":"a","content_type":"text/plain","etag":"\"12\"","value":"aGVsbG8="}"#
        );
        assert!(
            lines[2].ends_with(r#","expires_at":1800000000}"#),
            "{}",
            lines[2]
        );
        let mut r = Reader::new(&bytes[..]).expect("header");
        assert_eq!(r.header().revision, 42);
        let mut got = Vec::new();
        let mut systems = 0;
        while let Some(rec) = r.next_record().expect("valid") {
            match rec {
                Record::Entry(e) => got.push(e),
                Record::System(s) => {
                    assert_eq!(s["system"], "revocation");
                    systems += 1;
                }
            }
        }
        assert_eq!(got, entries);
        assert_eq!(systems, 1);
        let s = verify(&bytes[..]).expect("valid");
        assert_eq!((s.count, s.keys, s.system), (4, 3, 1));
        assert_eq!(s.bytes, bytes.len() as u64);
        let expected = hex(&Sha256::digest(&bytes[..bytes.len() - lines[5].len() - 1]));
        assert_eq!(s.sha256, expected);
        assert!(lines[5].contains(&expected));
    }

    /// A byte flipped so that a line is no longer JSON: verify names that line.
    #[test]
    fn a_broken_line_is_named() {
        let mut bytes = build(&sample());
        // Line 3 (the second key): break its opening brace.
        let start = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .map(|(i, _)| i + 1)
            .expect("three lines");
        bytes[start] = b'[';
        let e = verify(&bytes[..]).expect_err("broken line");
        assert_eq!(e.line, 3, "{e}");
    }

    /// A byte flipped inside a value (still valid JSON and base64): the hash check on the end
    /// line catches it.
    #[test]
    fn a_changed_value_fails_the_hash() {
        let bytes = build(&sample());
        let text = String::from_utf8(bytes).expect("UTF-8");
        let changed = text.replacen("aGVsbG8=", "aGVtbG8=", 1);
        assert_ne!(changed, text);
        let e = verify(changed.as_bytes()).expect_err("hash mismatch");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("sha256"), "{e}");
    }

    /// A file cut before its end line is refused, naming the line after the last one.
    #[test]
    fn a_missing_end_line_fails() {
        let bytes = build(&sample());
        let text = String::from_utf8(bytes).expect("UTF-8");
        let cut: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        let e = verify(cut.as_bytes()).expect_err("no end line");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("end line"), "{e}");
        // Cut inside a line too.
        let e = verify(&cut.as_bytes()[..cut.len() - 3]).expect_err("cut mid-line");
        assert_eq!(e.line, 5, "{e}");
    }

    /// An end line whose count disagrees with the file fails, even with a matching hash.
    #[test]
    fn a_wrong_count_fails() {
        let bytes = build(&sample());
        let text = String::from_utf8(bytes).expect("UTF-8");
        let wrong = text.replace("\"count\":4", "\"count\":3");
        let e = verify(wrong.as_bytes()).expect_err("wrong count");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("counts 3"), "{e}");
    }

    /// The header must come first and name the format and a known version; nothing may
    /// follow the end line.
    #[test]
    fn header_and_trailer_rules() {
        assert_eq!(verify(&b""[..]).expect_err("empty").line, 1);
        let e = verify(&b"{\"bucket\":\"a\"}\n"[..]).expect_err("no header");
        assert_eq!(e.line, 1);
        let v2 = br#"{"format":"micronode-snapshot","version":2,"revision":1,"created_unix":1}
"#;
        assert!(
            verify(&v2[..])
                .expect_err("v2")
                .message
                .contains("version 2")
        );
        let mut bytes = build(&[]);
        assert_eq!(verify(&bytes[..]).expect("empty snapshot").keys, 0);
        bytes.extend_from_slice(b"{}\n");
        let e = verify(&bytes[..]).expect_err("trailing data");
        assert!(e.message.contains("after the end line"), "{e}");
    }

    /// Wrong-shaped records are refused: bad base64, a missing field.
    #[test]
    fn record_shapes_are_checked() {
        let mut out = Vec::new();
        let _ = Writer::new(&Header::new(1, 1), &mut out);
        let header = out.clone();
        for (bad, what) in [
            (
                r#"{"bucket":"a","key":"k","content_type":"","etag":"","value":"!!"}"#,
                "base64",
            ),
            (r#"{"bucket":"a","key":"k","value":""}"#, "malformed"),
            (r#""just a string""#, "JSON object"),
        ] {
            let mut bytes = header.clone();
            bytes.extend_from_slice(bad.as_bytes());
            bytes.push(b'\n');
            let e = verify(&bytes[..]).expect_err(bad);
            assert_eq!(e.line, 2, "{e}");
            assert!(e.message.contains(what), "{what}: {e}");
        }
    }
}
