//! The server-written audit trail (docs/SECURITY.md, "Audit trail"): real servers on loopback
//! writing real files. Every audited answer has its line (with the token's tenant, key id and
//! nonce, never the token), `micronode audit verify` accepts what the server wrote, a 2xx is
//! never sent before its line is on disk (a SIGKILLed server loses none), and a trail that
//! cannot be written turns writes into 503 `storage_unavailable`.

mod support;

use std::io::{BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use micronode::auth::{Caveat, keyring, mint, now_unix};
use serde_json::Value;
use support::{ChildServer, Conn, Response, Scrape, TestServer, build_request, poll, run_binary};

/// The audit file's lines, parsed.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read the audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

/// The one line of request `rid`.
fn line_of<'a>(lines: &'a [Value], rid: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == rid).collect();
    assert_eq!(found.len(), 1, "lines of {rid}: {found:?}");
    found[0]
}

fn verify(path: &Path) -> (i32, String, String) {
    let file = path.display().to_string();
    run_binary(
        &["audit", "verify", &file],
        &[],
        path.parent().expect("a dir"),
    )
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    rid: &str,
    body: Option<&[u8]>,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-request-id", rid)];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    support::request(addr, method, path, &headers, body)
}

/// PUT, DELETE, a transaction, a 401, a 403 (guard and transaction), a mint, a revoke and a
/// TTL expiry each leave the right line; the file verifies; no line holds a token.
#[test]
fn every_audited_answer_has_its_line_and_the_file_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_path = dir.path().join("keys.toml");
    let keys = keyring::init(&keys_path, now_unix()).expect("key ring");
    let audit = dir.path().join("audit.log");
    let (keys_file, audit_file) = (keys_path.display().to_string(), audit.display().to_string());
    let server = TestServer::start(&[
        ("MICRONODE_AUTH", "on"),
        ("MICRONODE_AUTH_KEYS_FILE", &keys_file),
        ("MICRONODE_AUDIT_PATH", &audit_file),
    ]);
    let addr = server.addr;
    let admin = mint(keys.newest(), "acme", &[]).expect("mint");
    let other = mint(keys.newest(), "acme", &[Caveat::Bucket("other".into())]).expect("mint");
    let who = call(addr, "GET", "/v1/auth/whoami", Some(&admin), "w", None).json();
    let (key_id, nonce) = (who["key_id"].clone(), who["nonce"].clone());
    assert_eq!(nonce.as_str().map(str::len), Some(32));

    let put = call(
        addr,
        "PUT",
        "/v1/kv/app/cfg/a",
        Some(&admin),
        "r-put",
        Some(b"v1"),
    );
    assert_eq!(put.status, 201);
    let put_rev: u64 = put
        .header("micronode-revision")
        .expect("rev")
        .parse()
        .expect("n");
    let del = call(
        addr,
        "DELETE",
        "/v1/kv/app/cfg/a",
        Some(&admin),
        "r-del",
        None,
    );
    assert_eq!(del.status, 204);
    let missing = call(
        addr,
        "DELETE",
        "/v1/kv/app/cfg/a",
        Some(&admin),
        "r-404",
        None,
    );
    assert_eq!(missing.status, 404);
    let txn = br#"{"then":[{"op":"put","bucket":"app","key":"t","value":"eA=="}]}"#;
    let t = call(addr, "POST", "/v1/txn", Some(&admin), "r-txn", Some(txn));
    assert_eq!(t.status, 200);
    let txn_rev = t.json()["revision"].as_u64().expect("revision");
    call(addr, "GET", "/v1/kv/app/t", None, "r-401", None).assert_error(401, "auth", false);
    call(
        addr,
        "PUT",
        "/v1/kv/app/x",
        Some(&other),
        "r-403",
        Some(b"v"),
    )
    .assert_error(403, "policy", false);
    call(addr, "POST", "/v1/txn", Some(&other), "r-403t", Some(txn))
        .assert_error(403, "policy", false);
    let minted = call(
        addr,
        "POST",
        "/v1/auth/tokens",
        Some(&admin),
        "r-mint",
        Some(br#"{"tenant":"beta"}"#),
    );
    assert_eq!(minted.status, 200);
    let new_token = minted.json()["token"].as_str().expect("token").to_owned();
    let body = format!("{{\"token\":\"{new_token}\"}}");
    let revoked = call(
        addr,
        "POST",
        "/v1/auth/revoke",
        Some(&admin),
        "r-rev",
        Some(body.as_bytes()),
    );
    assert_eq!(revoked.status, 200);
    let revoked_nonce = revoked.json()["revoked"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let ttl = call(
        addr,
        "PUT",
        "/v1/kv/app/tmp?ttl=1",
        Some(&admin),
        "r-ttl",
        Some(b"t"),
    );
    assert_eq!(ttl.status, 201);

    // The expiry is written by the sweeper, within about a second of the deadline.
    let all = poll("the expire line", || {
        let all = lines(&audit);
        all.iter()
            .any(|l| l["op"] == "expire" && l["key"] == "tmp")
            .then_some(all)
    });

    // Every answer above was sent after its line was synced: the file already holds them.
    let l = line_of(&all, "r-put");
    assert_eq!(
        (
            &l["op"],
            &l["bucket"],
            &l["key"],
            &l["status"],
            &l["revision"]
        ),
        (
            &"put".into(),
            &"app".into(),
            &"cfg/a".into(),
            &201.into(),
            &put_rev.into()
        )
    );
    assert_eq!(
        (&l["tenant"], &l["key_id"], &l["nonce"]),
        (&"acme".into(), &key_id, &nonce)
    );
    let l = line_of(&all, "r-del");
    assert_eq!((&l["op"], &l["status"]), (&"delete".into(), &204.into()));
    assert!(l["revision"].as_u64().expect("revision") > put_rev);
    let l = line_of(&all, "r-404");
    assert_eq!(
        (&l["op"], &l["status"], &l["revision"]),
        (&"delete".into(), &404.into(), &Value::Null)
    );
    let l = line_of(&all, "r-txn");
    assert_eq!(
        (&l["op"], &l["status"], &l["revision"], &l["key"]),
        (&"txn".into(), &200.into(), &txn_rev.into(), &Value::Null)
    );
    let l = line_of(&all, "r-401");
    assert_eq!(
        (&l["op"], &l["status"], &l["tenant"], &l["nonce"], &l["key"]),
        (
            &"get".into(),
            &401.into(),
            &Value::Null,
            &Value::Null,
            &"t".into()
        )
    );
    for (rid, op) in [("r-403", "put"), ("r-403t", "txn")] {
        let l = line_of(&all, rid);
        assert_eq!((&l["op"], &l["status"]), (&op.into(), &403.into()), "{rid}");
        assert_eq!(
            (&l["tenant"], &l["key_id"]),
            (&"acme".into(), &key_id),
            "{rid}"
        );
        assert!(
            l["nonce"].is_string() && l["nonce"] != nonce,
            "{rid}: its own token's nonce"
        );
    }
    let l = line_of(&all, "r-mint");
    assert_eq!((&l["op"], &l["status"]), (&"mint".into(), &200.into()));
    assert_eq!(l["key"], format!("minted/{revoked_nonce}").as_str());
    let l = line_of(&all, "r-rev");
    assert_eq!(
        (&l["op"], &l["bucket"], &l["key"]),
        (
            &"revoke".into(),
            &"_auth".into(),
            &format!("revoked/{revoked_nonce}").into()
        )
    );
    // Reads with a good token are not audited.
    assert!(all.iter().all(|l| l["request_id"] != "w"));

    let text = std::fs::read_to_string(&audit).expect("read");
    for token in [&admin, &other, &new_token] {
        assert!(
            !text.contains(token.as_str()),
            "a token is in the audit log"
        );
        assert!(
            !text.contains(&token[..24]),
            "a token prefix is in the audit log"
        );
    }
    let (code, stdout, stderr) = verify(&audit);
    assert_eq!(code, 0, "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).expect("JSON summary");
    assert!(summary["lines"].as_u64().expect("lines") >= all.len() as u64);

    let scrape = Scrape::new(call(addr, "GET", "/metrics", Some(&admin), "m", None).text());
    assert!(scrape.value("micronode_audit_records_total") >= all.len() as f64);
    assert_eq!(scrape.value("micronode_audit_errors_total"), 0.0);
}

/// One PUT on a fresh connection that may fail (the server may be dead): the status and the
/// revision, or `None`.
fn try_put(addr: SocketAddr, path: &str, rid: &str) -> Option<(u16, Option<u64>)> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(support::WAIT)).ok()?;
    let mut conn = Conn {
        reader: BufReader::new(stream),
    };
    let req = build_request("PUT", path, &[("x-request-id", rid)], Some(b"value"));
    conn.reader.get_mut().write_all(&req).ok()?;
    let resp = conn.read_response(false).ok()?;
    let rev = resp
        .header("micronode-revision")
        .and_then(|v| v.parse().ok());
    Some((resp.status, rev))
}

/// A SIGHUP reload leaves its line. Then a server taking concurrent PUTs is SIGKILLed: every PUT that got a 2xx has its line (same
/// request id, key, status and revision) and the file verifies; then one edited line makes
/// `audit verify` fail, naming the line whose `prev` no longer matches (the one after it).
#[test]
fn a_sigkilled_server_loses_no_acknowledged_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.log");
    let audit_file = audit.display().to_string();
    let server: ChildServer = ChildServer::spawn(&[("MICRONODE_AUDIT_PATH", &audit_file)]);
    let addr = server.addr;
    // A SIGHUP reload is audited too (200: applied).
    server.signal("HUP");
    poll("the reload line", || {
        lines(&audit)
            .iter()
            .any(|l| l["op"] == "reload" && l["status"] == 200)
            .then_some(())
    });
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let rid = format!("c-{t}-{i}");
                    let path = format!("/v1/kv/crash/k{t}/{i}");
                    match try_put(addr, &path, &rid) {
                        Some((status, rev)) if (200..300).contains(&status) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            got.push((rid, format!("k{t}/{i}"), status, rev));
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                got
            })
        })
        .collect();
    poll("200 acknowledged PUTs", || {
        (acked.load(Ordering::Relaxed) >= 200).then_some(())
    });
    server.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    let got: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    drop(server);
    assert!(got.len() >= 200);

    let all = lines(&audit);
    for (rid, key, status, rev) in &got {
        let l = line_of(&all, rid);
        assert_eq!(
            (&l["op"], &l["bucket"], &l["key"], &l["status"]),
            (
                &"put".into(),
                &"crash".into(),
                &key.as_str().into(),
                &(*status).into()
            ),
            "{rid}"
        );
        assert_eq!(l["revision"].as_u64(), *rev, "{rid}");
    }
    let (code, _, stderr) = verify(&audit);
    assert_eq!(code, 0, "{stderr}");

    // Line 10 edited: its hash no longer is line 11's `prev`.
    let text = std::fs::read_to_string(&audit).expect("read");
    let mut edited: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(edited.len() > 11);
    edited[9] = edited[9].replacen("\"crash\"", "\"crasH\"", 1);
    std::fs::write(&audit, edited.join("\n") + "\n").expect("write");
    let (code, _, stderr) = verify(&audit);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{audit_file}:11: prev is not the SHA-256 of the line before"
        )),
        "{stderr}"
    );
}

/// The audit log cannot be rotated (a directory holds the rotated file's name): the write whose
/// line fails is answered 503 `storage_unavailable`, and every later write is refused the same
/// way before anything is applied; the failures are counted.
#[test]
fn a_trail_that_cannot_be_written_fails_writes_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.log");
    let audit_file = audit.display().to_string();
    let server = TestServer::start(&[
        ("MICRONODE_AUDIT_PATH", &audit_file),
        ("MICRONODE_AUDIT_ROTATE_BYTES", "1"),
    ]);
    let put = |key: &str| server.request("PUT", &format!("/v1/kv/b/{key}"), &[], Some(b"v"));
    assert_eq!(put("first").status, 201);
    std::fs::create_dir(PathBuf::from(format!("{audit_file}.000001"))).expect("dir in the way");

    // This write was applied before its line failed: its outcome is unknown to the client.
    put("second").assert_error(503, "storage_unavailable", true);
    put("third").assert_error(503, "storage_unavailable", true);
    let del = server.request("DELETE", "/v1/kv/b/first", &[], None);
    del.assert_error(503, "storage_unavailable", true);
    assert_eq!(
        server.get("/v1/kv/b/third").status,
        404,
        "refused before the store"
    );
    assert_eq!(
        server.get("/v1/kv/b/first").status,
        200,
        "refused before the store"
    );
    assert!(server.metric("micronode_audit_errors_total") >= 3.0);
    assert_eq!(server.metric("micronode_audit_records_total"), 1.0);
    assert_eq!(lines(&audit).len(), 1);
    server.still_serves();
}

/// In `periodic` durability nobody waits for the trail: the committer syncs on the flush
/// period, and the lines get there by themselves.
#[test]
fn periodic_durability_syncs_the_trail_on_the_flush_period() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.log");
    let audit_file = audit.display().to_string();
    let server = TestServer::start(&[
        ("MICRONODE_AUDIT_PATH", &audit_file),
        ("MICRONODE_DURABILITY", "periodic"),
        ("MICRONODE_FLUSH_EVERY_MS", "20"),
    ]);
    for i in 0..5 {
        let r = server.request(
            "PUT",
            &format!("/v1/kv/p/k{i}"),
            &[("x-request-id", &format!("p-{i}"))],
            Some(b"v"),
        );
        assert_eq!(r.status, 201);
    }
    let all = poll("five lines on disk", || {
        let all = lines(&audit);
        (all.len() == 5).then_some(all)
    });
    for i in 0..5 {
        assert_eq!(line_of(&all, &format!("p-{i}"))["op"], "put");
    }
    let (code, _, stderr) = verify(&audit);
    assert_eq!(code, 0, "{stderr}");
}

/// An audit path that cannot be opened stops the boot with exit 2, naming the file.
#[test]
fn an_audit_log_that_cannot_be_opened_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("is-a-dir");
    std::fs::create_dir(&bad).expect("dir");
    let bad_file = bad.display().to_string();
    let (code, _, stderr) = run_binary(
        &["serve"],
        &[
            ("MICRONODE_BIND_ADDR", "127.0.0.1:0"),
            ("MICRONODE_AUDIT_PATH", &bad_file),
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("MICRONODE_AUDIT_PATH") && stderr.contains(&bad_file),
        "{stderr}"
    );
}
