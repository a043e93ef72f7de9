//! SIGHUP reload of the configuration file, and CORS. Real child processes and real signals;
//! readiness and effects are polled, never slept for.

mod support;

use std::path::Path;

use support::{ChildServer, Conn, poll};

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("micronode.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

fn boot_with_config(dir: &Path, text: &str) -> ChildServer {
    let cfg = write_config(dir, text);
    ChildServer::start(
        &[
            ("MICRONODE_CONFIG", cfg.as_str()),
            ("MICRONODE_STORAGE_ENGINE", "mem"),
            ("MICRONODE_DEV_ROUTES", "1"),
        ],
        dir,
    )
}

/// Statuses of `n` GETs of `/v1/ping` on one kept-alive connection.
fn pings(c: &mut Conn, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| c.request("GET", "/v1/ping", &[], None).status)
        .collect()
}

#[test]
fn a_reloaded_rate_limit_takes_effect_on_open_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = boot_with_config(dir.path(), "[rate_limit]\nrps = 0\n");
    let mut c = Conn::open(s.addr);
    assert!(
        pings(&mut c, 20).iter().all(|&st| st == 200),
        "no limit yet"
    );
    write_config(dir.path(), "[rate_limit]\nrps = 1\nburst = 2\n");
    s.signal("HUP");
    poll("the reload to be counted", || {
        (s.metric("micronode_config_reloads_total{result=\"ok\"}") >= 1.0).then_some(())
    });
    // The same connection, never dropped: now at most 2 of 20 pass in well under a second
    // (no timing is asserted: a slow machine only lets fewer through).
    let statuses = pings(&mut c, 20);
    let ok = statuses.iter().filter(|&&st| st == 200).count();
    assert!(ok <= 3, "the new limit applies: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Back off again: the limit goes away.
    write_config(dir.path(), "[rate_limit]\nrps = 0\n");
    s.signal("HUP");
    poll("the second reload", || {
        (s.metric("micronode_config_reloads_total{result=\"ok\"}") >= 2.0).then_some(())
    });
    assert!(pings(&mut c, 20).iter().all(|&st| st == 200));
}

#[test]
fn a_bad_config_changes_nothing_and_is_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = boot_with_config(dir.path(), "[limits]\nmax_body_bytes = 16\n");
    let put = |body: &[u8]| {
        let mut c = Conn::open(s.addr);
        c.request("PUT", "/v1/kv/b/k", &[], Some(body)).status
    };
    assert_eq!(put(&[b'x'; 32]), 413);
    for bad in [
        "[limits]\nmax_body_bytes = \"lots\"\n",
        "[nope]\nx = 1\n",
        "not toml at all [",
    ] {
        let before = s.metric("micronode_config_reloads_total{result=\"error\"}");
        write_config(dir.path(), bad);
        s.signal("HUP");
        poll("the failed reload to be counted", || {
            (s.metric("micronode_config_reloads_total{result=\"error\"}") > before).then_some(())
        });
        assert_eq!(put(&[b'x'; 32]), 413, "the old limit stays after {bad:?}");
    }
    assert_eq!(
        s.metric("micronode_config_reloads_total{result=\"ok\"}"),
        0.0
    );
    // A good file then applies.
    write_config(dir.path(), "[limits]\nmax_body_bytes = 64\n");
    s.signal("HUP");
    poll("the good reload", || {
        (s.metric("micronode_config_reloads_total{result=\"ok\"}") >= 1.0).then_some(())
    });
    assert_eq!(put(&[b'x'; 32]), 201);
}

#[test]
fn a_knob_that_needs_a_restart_is_logged_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = boot_with_config(dir.path(), "[server]\nmax_connections = 100\n");
    write_config(dir.path(), "[server]\nmax_connections = 200\n");
    s.signal("HUP");
    poll("the restart warning", || {
        s.logs()
            .lines()
            .find(|l| l.contains("needs a restart") && l.contains("server.max_connections"))
            .map(drop)
    });
    assert_eq!(
        s.metric("micronode_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    s.still_serves();
}

const ORIGIN: &str = "http://localhost:3000";

fn cors_server(dir: &Path, origins: &str) -> ChildServer {
    boot_with_config(dir, &format!("[cors]\norigins = \"{origins}\"\n"))
}

#[test]
fn cors_answers_an_allowed_origin_and_ignores_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = cors_server(dir.path(), "http://localhost:3000, https://app.example");
    let mut c = Conn::open(s.addr);
    // A page on localhost:3000 writes with If-Match and reads the ETag back.
    let r = c.request("PUT", "/v1/kv/web/k", &[("origin", ORIGIN)], Some(b"v1"));
    assert_eq!(r.status, 201);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(r.header("vary"), Some("Origin"));
    let exposed = r.header("access-control-expose-headers").expect("exposed");
    for h in [
        "ETag",
        "Micronode-Revision",
        "Micronode-Expires-At",
        "Retry-After",
        "x-request-id",
    ] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    let etag = r.header("etag").expect("etag").to_owned();
    let r = c.request(
        "PUT",
        "/v1/kv/web/k",
        &[("origin", ORIGIN), ("if-match", &etag)],
        Some(b"v2"),
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    // Errors carry the headers too, so a script can read the envelope.
    let r = c.request("GET", "/v1/kv/web/none", &[("origin", ORIGIN)], None);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    // Another origin, or none: no CORS headers at all.
    for origin in [Some("http://evil.example"), None] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let r = c.request("GET", "/v1/kv/web/k", &headers, None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin:?}");
        assert_eq!(r.header("access-control-expose-headers"), None);
        // The answer differs by origin, so caches are told.
        assert_eq!(r.header("vary"), Some("Origin"), "{origin:?}");
    }
}

#[test]
fn cors_preflight_names_each_routes_methods_and_needs_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = cors_server(dir.path(), ORIGIN);
    let mut c = Conn::open(s.addr);
    for (path, method, allow) in [
        ("/v1/kv/web/k", "PUT", "GET, HEAD, PUT, DELETE"),
        ("/v1/kv/web/k", "DELETE", "GET, HEAD, PUT, DELETE"),
        ("/v1/kv/web", "GET", "GET, HEAD"),
        ("/v1/txn", "POST", "POST"),
        ("/v1/watch/web", "GET", "GET, HEAD"),
    ] {
        let r = c.request(
            "OPTIONS",
            path,
            &[
                ("origin", ORIGIN),
                ("access-control-request-method", method),
                ("access-control-request-headers", "if-match, content-type"),
            ],
            None,
        );
        assert_eq!(r.status, 204, "{path} {method}");
        assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some(allow),
            "{path}"
        );
        let headers = r.header("access-control-allow-headers").expect("allowed");
        for h in [
            "authorization",
            "content-type",
            "if-match",
            "if-none-match",
            "x-request-id",
            "last-event-id",
        ] {
            assert!(headers.contains(h), "{h} in {headers}");
        }
        assert_eq!(r.header("access-control-max-age"), Some("600"));
    }
    // A preflight from another origin, or to an unknown path, gets no CORS answer.
    let r = c.request(
        "OPTIONS",
        "/v1/kv/web/k",
        &[
            ("origin", "http://evil.example"),
            ("access-control-request-method", "PUT"),
        ],
        None,
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = c.request(
        "OPTIONS",
        "/nope",
        &[("origin", ORIGIN), ("access-control-request-method", "GET")],
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn without_cors_options_is_405() {
    let s = support::TestServer::start(&[("MICRONODE_STORAGE_ENGINE", "mem")]);
    let r = support::request(
        s.addr,
        "OPTIONS",
        "/v1/ping",
        &[("origin", ORIGIN), ("access-control-request-method", "GET")],
        None,
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn cors_origins_reload_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = cors_server(dir.path(), "https://old.example");
    let get = |origin: &str| {
        support::request(s.addr, "GET", "/v1/ping", &[("origin", origin)], None)
            .header("access-control-allow-origin")
            .map(str::to_owned)
    };
    assert_eq!(get(ORIGIN), None);
    write_config(dir.path(), &format!("[cors]\norigins = \"{ORIGIN}\"\n"));
    s.signal("HUP");
    poll("the new origin", || get(ORIGIN).map(drop));
    assert_eq!(get("https://old.example"), None);
}

#[test]
fn invalid_cors_origins_are_a_boot_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    for bad in ["localhost:3000", "http://a.example/path", "ftp://x"] {
        let (code, _, err) = support::run_binary(
            &["check-config"],
            &[("MICRONODE_CORS_ORIGINS", bad)],
            dir.path(),
        );
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("MICRONODE_CORS_ORIGINS"), "{err}");
    }
}
