//! A data directory written by Micronode before the versioned record format (the fixture in
//! `tests/fixtures/store_v1.tar.gz`, made by `tests/fixtures/make_store_v1.py` with the binary
//! of that time) opens with the code of today: every key, value, content type and ETag intact,
//! including the large values that the old code left in sled blob files.

mod support;

use std::path::Path;

use support::{Conn, TestServer};

/// The fixture's value generator (the same as the script's).
fn value(seed: u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u64 % 251 + seed + i as u64 / 4096) % 256) as u8)
        .collect()
}

fn unpack(into: &Path) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store_v1.tar.gz");
    let gz = std::fs::File::open(&here).expect("fixture present");
    tar::Archive::new(flate2::read::GzDecoder::new(gz))
        .unpack(into)
        .expect("fixture unpacks");
}

fn manifest() -> serde_json::Value {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store_v1.json");
    serde_json::from_slice(&std::fs::read(here).expect("manifest")).expect("manifest is JSON")
}

fn path_of(bucket: &str, key: &str) -> String {
    let mut p = format!("/v1/kv/{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._".contains(&b) {
            p.push(b as char);
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p
}

fn check_every_key(addr: std::net::SocketAddr, m: &serde_json::Value) {
    let mut c = Conn::open(addr);
    let items = m["items"].as_array().expect("items");
    assert!(items.len() >= 40);
    for item in items {
        let (bucket, key) = (
            item["bucket"].as_str().expect("b"),
            item["key"].as_str().expect("k"),
        );
        let want = value(
            item["seed"].as_u64().expect("seed"),
            item["len"].as_u64().expect("len") as usize,
        );
        let r = c.request("GET", &path_of(bucket, key), &[], None);
        assert_eq!(r.status, 200, "{bucket}/{key}");
        assert!(
            r.body == want,
            "{bucket}/{key}: value differs ({} bytes read)",
            r.body.len()
        );
        assert_eq!(
            r.header("content-type"),
            item["content_type"].as_str(),
            "{bucket}/{key}"
        );
        // v1 wrote ETags as hex revisions; v2 writes the same revision in decimal.
        let old_tag = item["etag"].as_str().expect("etag");
        let revision = u64::from_str_radix(old_tag.trim_matches('"'), 16).expect("hex v1 tag");
        let etag = format!("\"{revision}\"");
        assert_eq!(
            r.header("etag"),
            Some(etag.as_str()),
            "{bucket}/{key}: the revision behind the ETag changed"
        );
        let r = c.request(
            "GET",
            &path_of(bucket, key),
            &[("if-none-match", &etag)],
            None,
        );
        assert_eq!(r.status, 304, "{bucket}/{key}: the ETag validates");
        // A v1 (hex) tag names no revision we mint now (unless both spellings agree, below
        // ten): the client just gets the value.
        if old_tag == etag {
            continue;
        }
        let r = c.request(
            "GET",
            &path_of(bucket, key),
            &[("if-none-match", old_tag)],
            None,
        );
        assert_eq!(
            r.status, 200,
            "{bucket}/{key}: a v1 tag is not taken for another"
        );
    }
    for gone in m["absent"].as_array().expect("absent") {
        let r = c.request(
            "GET",
            &path_of(
                gone["bucket"].as_str().expect("b"),
                gone["key"].as_str().expect("k"),
            ),
            &[],
            None,
        );
        assert_eq!(r.status, 404);
    }
}

/// Unpack, open through a real server, check everything; write, reopen, check again.
#[test]
fn a_v1_data_directory_opens_with_every_key_value_content_type_and_etag() {
    let m = manifest();
    let files: Vec<&str> = m["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("blobs/")),
        "the fixture has v1 blob files"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    unpack(dir.path());
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let env = [("MICRONODE_STORAGE_PATH", data_s.as_str())];
    {
        let s = TestServer::start(&env);
        check_every_key(s.addr, &m);
        // A new write after the upgrade gets a new, higher ETag; old keys are unchanged.
        let r = support::request(s.addr, "PUT", "/v1/kv/fx/after-upgrade", &[], Some(b"new"));
        assert_eq!(r.status, 201);
        assert!(s.app().store.health());
    }
    let s = TestServer::start(&env);
    check_every_key(s.addr, &m);
    assert_eq!(s.get("/v1/kv/fx/after-upgrade").body, b"new");
}
