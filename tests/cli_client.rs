//! The client commands (`kv`, `txn`, `snapshot`) run as the real binary against a real
//! server on loopback; `snapshot restore` runs offline into a fresh data directory that a
//! server then opens.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use micronode::snapshot::{EntryRef, Header, Writer};
use serde_json::Value;
use support::{TestServer, binary, run_binary, run_binary_with};

/// The server's URL as `--url` takes it.
fn url(s: &TestServer) -> String {
    format!("http://{}", s.addr)
}

/// Runs a client command against `s` (through `MICRONODE_URL`), with optional stdin.
fn cli(s: &TestServer, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    let u = url(s);
    run_binary_with(args, &[("MICRONODE_URL", u.as_str())], s.dir(), stdin)
}

/// The one JSON line a command printed.
fn json_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// `kv put` from stdin, from `--file` and from the argument, then `kv get` prints exactly the
/// stored bytes, also when they are not UTF-8.
#[test]
fn put_from_stdin_file_and_argument_then_get_prints_raw_bytes() {
    let s = TestServer::start(&[]);
    let (code, out, err) = cli(
        &s,
        &[
            "kv",
            "put",
            "app",
            "greeting",
            "--content-type",
            "text/plain",
        ],
        Some(b"hello\n"),
    );
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["status"], 201, "{v}");
    let etag = v["etag"].as_str().expect("etag").to_owned();
    let stored = s.get("/v1/kv/app/greeting");
    assert_eq!(stored.body, b"hello\n");
    assert_eq!(stored.header("content-type"), Some("text/plain"));
    assert_eq!(stored.header("etag"), Some(etag.as_str()));

    let binary_value: &[u8] = &[0xff, 0x00, 0xfe, b'\n', 0x80];
    let file = s.dir().join("value.bin");
    std::fs::write(&file, binary_value).expect("write value file");
    let path = file.to_str().expect("UTF-8 path");
    let (code, out, err) = cli(&s, &["kv", "put", "app", "dir/a b", "--file", path], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["status"], 201);
    let (code, out, err) = cli(&s, &["kv", "get", "app", "dir/a b"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, binary_value,
        "get prints the raw bytes and nothing else"
    );

    let (code, out, err) = cli(&s, &["kv", "put", "app", "greeting", "replaced"], None);
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["status"], 204, "{v}");
    assert_ne!(v["etag"], etag.as_str());
    let (code, out, _) = cli(&s, &["kv", "get", "app", "greeting"], None);
    assert_eq!((code, out.as_slice()), (0, &b"replaced"[..]));
}

/// A failed precondition is exit 1 with the envelope's message on stderr and nothing on
/// stdout; the current ETag passes.
#[test]
fn a_412_exits_1_with_the_message_on_stderr() {
    let s = TestServer::start(&[]);
    let (code, out, err) = cli(&s, &["kv", "put", "app", "k", "v1"], None);
    assert_eq!(code, 0, "{err}");
    let etag = json_line(&out)["etag"].as_str().expect("etag").to_owned();

    let (code, out, err) = cli(
        &s,
        &["kv", "put", "app", "k", "v2", "--if-none-match", "*"],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        err.trim(),
        "micronode: precondition failed (precondition_failed)"
    );

    let (code, _, err) = cli(
        &s,
        &["kv", "delete", "app", "k", "--if-match", "\"1\""],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("(precondition_failed)"), "{err}");

    let (code, out, err) = cli(
        &s,
        &["kv", "put", "app", "k", "v3", "--if-match", &etag],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["status"], 204);
}

/// `kv delete` prints its status; a second delete is a 404: exit 1 naming `not_found`, and
/// so is a `get` of the deleted key.
#[test]
fn delete_then_get_is_not_found() {
    let s = TestServer::start(&[]);
    assert_eq!(cli(&s, &["kv", "put", "app", "k", "v"], None).0, 0);
    let (code, out, err) = cli(&s, &["kv", "delete", "app", "k"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out), serde_json::json!({"status": 204}));
    let (code, out, err) = cli(&s, &["kv", "delete", "app", "k"], None);
    assert_eq!((code, out.is_empty()), (1, true), "{err}");
    assert!(err.contains("(not_found)"), "{err}");
    let (code, _, err) = cli(&s, &["kv", "get", "app", "k"], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("micronode: ") && err.contains("(not_found)"),
        "{err}"
    );
}

/// `kv list` prints one server page; `--all` follows `next` over more keys than `--limit`
/// and prints them all, in order, in one object.
#[test]
fn list_all_follows_next_across_pages() {
    let s = TestServer::start(&[]);
    let mut want = Vec::new();
    for i in 0..12 {
        let key = format!("p/{i:02}");
        assert_eq!(
            s.request("PUT", &format!("/v1/kv/app/{key}"), &[], Some(b"v"))
                .status,
            201
        );
        want.push(key);
    }
    assert_eq!(
        s.request("PUT", "/v1/kv/app/other", &[], Some(b"v")).status,
        201
    );

    let (code, out, err) = cli(
        &s,
        &["kv", "list", "app", "--prefix", "p/", "--limit", "5"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let page = json_line(&out);
    assert_eq!(page["keys"].as_array().map(Vec::len), Some(5), "{page}");
    assert_eq!(page["next"], "p/04", "{page}");

    let (code, out, err) = cli(
        &s,
        &[
            "kv", "list", "app", "--prefix", "p/", "--limit", "5", "--all",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let all = json_line(&out);
    assert_eq!(all["keys"], serde_json::json!(want), "{all}");
    assert_eq!(all["next"], Value::Null);

    let (code, out, _) = cli(&s, &["kv", "list", "app", "--after", "p/10", "--all"], None);
    assert_eq!(code, 0);
    assert_eq!(json_line(&out)["keys"], serde_json::json!(["p/11"]));
}

/// `--url` and `MICRONODE_URL` both pick the server; the flag wins over the variable.
#[test]
fn url_flag_and_env_both_work() {
    let s = TestServer::start(&[]);
    let u = url(&s);
    let (code, _, err) = run_binary(&["kv", "put", "app", "k", "v", "--url", &u], &[], s.dir());
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_binary(
        &["kv", "get", "app", "k"],
        &[("MICRONODE_URL", &u)],
        s.dir(),
    );
    assert_eq!((code, out.as_str()), (0, "v"), "{err}");
    let (code, out, err) = run_binary(
        &["kv", "get", "app", "k", "--url", &u],
        &[("MICRONODE_URL", "http://127.0.0.1:9")],
        s.dir(),
    );
    assert_eq!((code, out.as_str()), (0, "v"), "{err}");
}

/// A malformed URL, an unreachable server and an https URL without `--cacert` are each exit 1
/// with one line on stderr; a token is never printed.
#[test]
fn bad_urls_exit_1_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A port nobody listens on: bind one, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let unreachable = format!("http://{free}");
    for (url, says) in [
        ("not a url", "invalid --url"),
        ("ftp://127.0.0.1:1", "invalid --url"),
        (unreachable.as_str(), "cannot reach"),
        ("https://localhost:1", "--cacert"),
    ] {
        let (code, out, err) = run_binary(
            &[
                "kv",
                "get",
                "app",
                "k",
                "--url",
                url,
                "--token",
                "s3cret-token",
            ],
            &[],
            dir.path(),
        );
        assert_eq!(code, 1, "{url}: {err}");
        assert!(out.is_empty(), "{url}: {out}");
        assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
        assert!(
            err.starts_with("micronode: ") && err.contains(says),
            "{url}: {err}"
        );
        assert!(!err.contains("s3cret"), "the token leaked: {err}");
    }
    // A command-line error is clap's exit 2.
    let (code, _, _) = run_binary(&["kv", "put", "app"], &[], dir.path());
    assert_eq!(code, 2);
}

/// One key record for [`write_snapshot`] (its old ETag is always `"5"`).
fn row<'a>(
    bucket: &'a str,
    key: &'a str,
    content_type: &'a str,
    value: &'a [u8],
    expires_at: Option<u64>,
) -> EntryRef<'a> {
    EntryRef {
        bucket,
        key,
        content_type,
        etag: "\"5\"",
        value,
        expires_at,
        tenant: None,
    }
}

/// Writes a snapshot file of `entries` plus one system record, with the library's writer.
fn write_snapshot(path: &Path, entries: &[EntryRef<'_>]) {
    let mut out = Vec::new();
    let mut w = Writer::new(&Header::new(7, 1_700_000_000), &mut out);
    for e in entries {
        w.entry(*e, &mut out);
    }
    let mut sys = serde_json::Map::new();
    sys.insert("system".into(), "tenant_usage".into());
    w.system(&sys, &mut out).expect("system record");
    w.end(&mut out);
    std::fs::write(path, out).expect("write snapshot");
}

/// `snapshot restore` loads every live key into a fresh data directory (skipping expired
/// ones and system records), a server on that directory serves them, and a second restore
/// into the now non-empty directory is refused.
#[test]
fn restore_into_an_empty_dir_then_serve_it_and_refuse_a_second_restore() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("snap.ndjson");
    let far = 4_000_000_000;
    let mut entries: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| (format!("many/{i:03}"), format!("value {i}").into_bytes()))
        .collect();
    entries.push(("bin".to_owned(), vec![0xff, 0, 0xfe]));
    let mut rows: Vec<EntryRef<'_>> = entries
        .iter()
        .map(|(k, v)| row("app", k, "text/plain", v, None))
        .collect();
    rows.push(row("other", "leased", "application/json", b"{}", Some(far)));
    rows.push(row("app", "gone", "text/plain", b"old", Some(1_000)));
    write_snapshot(&file, &rows);
    let file = file.to_str().expect("UTF-8 path");

    let (code, out, err) = run_binary(&["snapshot", "verify", file], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON summary");
    assert_eq!(
        (v["count"].as_u64(), v["keys"].as_u64()),
        (Some(154), Some(153)),
        "{v}"
    );

    let data = dir.path().join("data");
    let data_s = data.to_str().expect("UTF-8 path");
    let env = [("MICRONODE_STORAGE_PATH", data_s)];
    let (code, out, err) = run_binary(&["snapshot", "restore", file], &env, dir.path());
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON answer");
    assert_eq!(v["restored"], 152, "{v}");
    assert!(v["revision"].as_u64().is_some(), "{v}");
    assert!(err.contains("1 keys already expired"), "{err}");
    assert!(err.contains("1 system records"), "{err}");

    {
        let s = TestServer::start(&env);
        for (k, value) in &entries {
            let r = s.get(&format!("/v1/kv/app/{k}"));
            assert_eq!(r.status, 200, "{k}");
            assert_eq!(&r.body, value, "{k}");
            assert_eq!(r.header("content-type"), Some("text/plain"));
            assert_ne!(
                r.header("etag"),
                Some("\"5\""),
                "restored keys get fresh revisions"
            );
        }
        let r = s.get("/v1/kv/other/leased");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let far_text = far.to_string();
        assert_eq!(
            r.header("micronode-expires-at"),
            Some(far_text.as_str()),
            "the expiry is restored"
        );
        assert_eq!(
            s.get("/v1/kv/app/gone").status,
            404,
            "expired keys are skipped"
        );
    }

    let (code, out, err) = run_binary(&["snapshot", "restore", file], &env, dir.path());
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("not empty"), "{err}");
}

/// A corrupt file is refused before anything is written (the directory is not even
/// created), naming the bad line; the mem engine is refused with a clear message.
#[test]
fn restore_refuses_a_bad_file_and_the_mem_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("snap.ndjson");
    write_snapshot(
        &file,
        &[
            row("app", "a", "text/plain", b"1", None),
            row("app", "b", "", b"2", None),
        ],
    );
    let text = std::fs::read_to_string(&file).expect("read");
    let broken = text.replacen("\"key\":\"b\"", "\"key\":\"b\",", 1);
    std::fs::write(&file, broken).expect("write");
    let file = file.to_str().expect("UTF-8 path");

    let (code, _, err) = run_binary(&["snapshot", "verify", file], &[], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 3:"), "{err}");

    let data = dir.path().join("data");
    let data_s = data.to_str().expect("UTF-8 path");
    let (code, _, err) = run_binary(
        &["snapshot", "restore", file],
        &[("MICRONODE_STORAGE_PATH", data_s)],
        dir.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 3:"), "{err}");
    assert!(!data.exists(), "nothing written for a bad file");

    let (code, _, err) = run_binary(
        &["snapshot", "restore", file],
        &[("MICRONODE_STORAGE_ENGINE", "mem")],
        dir.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("mem engine"), "{err}");
}

// ---- Routes the server of this branch does not have yet ----

/// `txn FILE` posts the file and prints the server's JSON answer; `-` reads stdin.
#[test]
fn txn_posts_the_file_and_prints_the_answer() {
    let s = TestServer::start(&[]);
    let txn = br#"{"if":[{"bucket":"app","key":"t","exists":false}],
                   "then":[{"op":"put","bucket":"app","key":"t","value":"aGk="}],
                   "else":[]}"#;
    let file = s.dir().join("txn.json");
    std::fs::write(&file, txn).expect("write txn");
    let (code, out, err) = cli(&s, &["txn", file.to_str().expect("UTF-8 path")], None);
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["succeeded"], true, "{v}");
    assert_eq!(s.get("/v1/kv/app/t").body, b"hi");
    let (code, out, err) = cli(&s, &["txn", "-"], Some(txn));
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["succeeded"], false);
    let (code, _, err) = cli(&s, &["txn", "-"], Some(b"not json"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not JSON"), "{err}");
}

/// `kv watch` prints one JSON line per event as it happens and exits 0 when the server ends
/// the stream (shutdown).
#[test]
fn watch_prints_one_line_per_event_and_exits_0_at_the_end() {
    let s = TestServer::start(&[]);
    let mut child = Command::new(binary())
        .args(["kv", "watch", "app", "--url", &url(&s)])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The watch starts from the current revision, and may not be connected yet: write until
    // an event shows up.
    let first = support::poll("the first watch event", || {
        assert_eq!(
            s.request("PUT", "/v1/kv/app/w", &[], Some(b"v")).status / 100,
            2
        );
        rx.recv_timeout(std::time::Duration::from_millis(100)).ok()
    });
    let v: Value = serde_json::from_str(&first).expect("JSON line");
    assert_eq!(v["event"], "put", "{v}");
    assert_eq!(v["data"]["key"], "w", "{v}");
    assert!(v["id"].as_u64().is_some(), "{v}");
    drop(s);
    let status = child.wait().expect("watch exits");
    assert_eq!(status.code(), Some(0));
}

/// `snapshot save` writes a file that verifies and restores into a fresh directory.
#[test]
fn snapshot_save_then_verify_and_restore() {
    let s = TestServer::start(&[]);
    for i in 0..70 {
        let path = format!("/v1/kv/app/k{i}");
        assert_eq!(
            s.request("PUT", &path, &[], Some(format!("v{i}").as_bytes()))
                .status,
            201
        );
    }
    let file = s.dir().join("saved.ndjson");
    let file_s = file.to_str().expect("UTF-8 path");
    let (code, out, err) = cli(&s, &["snapshot", "save", file_s], None);
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["count"], 70, "{v}");
    assert_eq!(
        v["bytes"].as_u64(),
        std::fs::metadata(&file).ok().map(|m| m.len())
    );
    let (code, _, err) = run_binary(&["snapshot", "verify", file_s], &[], s.dir());
    assert_eq!(code, 0, "{err}");

    let data = s.dir().join("restored");
    let data_s = data.to_str().expect("UTF-8 path");
    let env = [("MICRONODE_STORAGE_PATH", data_s)];
    let (code, out, err) = run_binary(&["snapshot", "restore", file_s], &env, s.dir());
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(out.as_bytes())["restored"], 70);
    let r = TestServer::start(&env);
    assert_eq!(r.get("/v1/kv/app/k69").body, b"v69");
}

// ---- The stream handling of watch and save, against canned answers ----

/// A one-connection server on loopback that reads one request head and answers `answer`
/// (then closes, which ends a body without a length). Returns its URL and the request head.
fn canned(answer: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let thread = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).map(|n| n == 1).unwrap_or(false)
        {
            head.push(byte[0]);
        }
        let _ = conn.write_all(&answer);
        String::from_utf8_lossy(&head).into_owned()
    });
    (format!("http://{addr}"), thread)
}

/// `kv watch` turns SSE into JSON lines (comments skipped), then on `overflow` exits 3 naming
/// the revision to resume from; the request carries the query and the bearer token.
#[test]
fn watch_prints_events_and_exits_3_on_overflow() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
        : keep-alive\n\n\
        id: 11\nevent: put\ndata: {\"bucket\":\"app\",\"key\":\"a b\",\"revision\":11}\n\n\
        id: 12\nevent: delete\ndata: {\"bucket\":\"app\",\"key\":\"c\",\"revision\":12}\n\n\
        event: overflow\ndata: {\"resume_from\":12}\n\n"
        .to_vec();
    let (u, server) = canned(answer);
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = run_binary(
        &[
            "kv", "watch", "app", "--prefix", "a b", "--since", "10", "--url", &u,
        ],
        &[("MICRONODE_TOKEN", "t0ken")],
        dir.path(),
    );
    let head = server.join().expect("server thread");
    assert!(
        head.starts_with("GET /v1/watch/app?prefix=a%20b&since=10 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("authorization: Bearer t0ken\r\n"), "{head}");
    assert_eq!(code, 3, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"id":11,"event":"put","data":{"bucket":"app","key":"a b","revision":11}}"#,
            r#"{"id":12,"event":"delete","data":{"bucket":"app","key":"c","revision":12}}"#,
            r#"{"id":null,"event":"overflow","data":{"resume_from":12}}"#,
        ]
    );
    assert!(err.contains("--since 12"), "{err}");
    assert!(!err.contains("t0ken"), "{err}");
}

/// A watch stream the server ends cleanly is exit 0.
#[test]
fn watch_exits_0_when_the_stream_ends() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
        id: 5\nevent: expire\ndata: {\"key\":\"k\"}\n\n"
        .to_vec();
    let (u, server) = canned(answer);
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = run_binary(&["kv", "watch", "app", "--url", &u], &[], dir.path());
    server.join().expect("server thread");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "{\"id\":5,\"event\":\"expire\",\"data\":{\"key\":\"k\"}}\n"
    );
}

/// `snapshot save` writes a streamed snapshot that verifies, and refuses (leaving no file,
/// not even its temp file) one that does not.
#[test]
fn snapshot_save_keeps_only_verified_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.ndjson");
    write_snapshot(&good, &[row("app", "a", "text/plain", b"1", None)]);
    let body = std::fs::read(&good).expect("read");
    let answer = |body: &[u8]| {
        let mut a =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n"
                .to_vec();
        a.extend_from_slice(body);
        a
    };

    let (u, server) = canned(answer(&body));
    let saved = dir.path().join("saved.ndjson");
    let saved_s = saved.to_str().expect("UTF-8 path");
    let (code, out, err) = run_binary(&["snapshot", "save", saved_s, "--url", &u], &[], dir.path());
    let head = server.join().expect("server thread");
    assert!(
        head.starts_with("GET /v1/admin/snapshot HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("{{\"revision\":7,\"count\":2,\"bytes\":{}}}\n", body.len())
    );
    assert_eq!(std::fs::read(&saved).expect("saved file"), body);

    let (u, server) = canned(answer(&body[..body.len() - 10]));
    let cut = dir.path().join("cut.ndjson");
    let cut_s = cut.to_str().expect("UTF-8 path");
    let (code, _, err) = run_binary(&["snapshot", "save", cut_s, "--url", &u], &[], dir.path());
    server.join().expect("server thread");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("failed verification"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|n| n.contains("cut")), "{left:?}");
}
