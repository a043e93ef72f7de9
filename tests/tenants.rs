//! Tenants and their quotas, end to end: a tenant's request rate (429 `quota` with
//! `Retry-After`), its open watch streams (429 `quota`), its stored keys and bytes (507
//! `quota_storage`, nothing stored), and usage that is exact after overwrites, deletes,
//! transactions, TTL expiry and a `kill -9`, as `whoami` and `/metrics` report it. Real
//! servers over TCP, tokens minted with the library.

mod support;

use std::path::{Path, PathBuf};

use micronode::auth::{KeyRing, keyring, mint, now_unix};
use support::{ChildServer, Response, Sse, TestServer, poll, request};

/// A key ring and a config file with tenant sections, in a temp dir.
struct Setup {
    dir: tempfile::TempDir,
    keys: KeyRing,
    keys_path: String,
    config_path: String,
}

fn setup(tenants_toml: &str) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_file: PathBuf = dir.path().join("keys.toml");
    let keys = keyring::init(&keys_file, now_unix()).expect("key ring");
    let config_file = dir.path().join("micronode.toml");
    std::fs::write(&config_file, tenants_toml).expect("config");
    Setup {
        keys_path: keys_file.display().to_string(),
        config_path: config_file.display().to_string(),
        dir,
        keys,
    }
}

impl Setup {
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("MICRONODE_AUTH", "on"),
            ("MICRONODE_AUTH_KEYS_FILE", self.keys_path.as_str()),
            ("MICRONODE_CONFIG", self.config_path.as_str()),
            ("MICRONODE_AUTH_OPEN_METRICS", "1"),
        ]
    }

    fn token(&self, tenant: &str) -> String {
        mint(self.keys.newest(), tenant, &[]).expect("mint")
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }
}

fn call(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Response {
    let auth = format!("Bearer {token}");
    request(addr, method, path, &[("authorization", &auth)], body)
}

/// `whoami`'s usage: (keys, bytes).
fn usage(addr: std::net::SocketAddr, token: &str) -> (u64, u64) {
    let r = call(addr, token, "GET", "/v1/auth/whoami", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let u = &r.json()["usage"];
    assert_eq!(u["tracked"], true, "{u}");
    (
        u["keys"].as_u64().expect("keys"),
        u["bytes"].as_u64().expect("bytes"),
    )
}

#[test]
fn a_tenant_over_its_rate_gets_429_quota_and_others_are_not_slowed() {
    let s = setup("[tenants.acme]\nrps = 1\n");
    let server = TestServer::start(&s.env());
    let (acme, beta) = (s.token("acme"), s.token("beta"));
    let r = call(server.addr, &acme, "GET", "/v1/auth/whoami", None);
    assert_eq!(r.json()["usage"]["limits"]["rps"], 1, "{}", r.text());
    let r = call(server.addr, &acme, "GET", "/v1/kv/b/k", None);
    r.assert_error(429, "quota", true);
    assert_eq!(r.header("retry-after"), Some("1"));
    // A refused request touches nothing: a write is refused the same way.
    let r = call(server.addr, &acme, "PUT", "/v1/kv/b/k", Some(b"v"));
    r.assert_error(429, "quota", true);
    for _ in 0..5 {
        assert_eq!(
            call(server.addr, &beta, "GET", "/v1/kv/b/k", None).status,
            404
        );
    }
    // The open routes are not counted.
    assert_eq!(
        request(server.addr, "GET", "/healthz", &[], None).status,
        200
    );
    let m = server.scrape();
    assert_eq!(
        m.value(r#"micronode_tenant_requests_total{tenant="acme",result="quota"}"#),
        2.0
    );
    assert_eq!(
        m.value(r#"micronode_tenant_requests_total{tenant="acme",result="admitted"}"#),
        1.0
    );
    // beta has no section of its own: counted under _other.
    assert_eq!(
        m.value(r#"micronode_tenant_requests_total{tenant="_other",result="admitted"}"#),
        5.0
    );
    assert_eq!(
        m.value(r#"micronode_rejections_total{reason="quota"}"#),
        2.0
    );
}

#[test]
fn storage_quotas_refuse_with_507_and_store_nothing_and_usage_stays_exact() {
    // bytes = bucket + key + value.
    let s = setup("[tenants.default]\nmax_keys = 3\nmax_bytes = 100\n");
    let server = TestServer::start(&s.env());
    let addr = server.addr;
    let acme = s.token("acme");
    let put = |key: &str, len: usize| {
        call(
            addr,
            &acme,
            "PUT",
            &format!("/v1/kv/b/{key}"),
            Some(&vec![b'x'; len]),
        )
    };
    assert_eq!(put("k1", 20).status, 201); // 1 + 2 + 20 = 23
    assert_eq!(put("k2", 20).status, 201);
    assert_eq!(usage(addr, &acme), (2, 46));
    // Over the bytes: 46 - 23 + 83 = 106 > 100.
    let r = put("k1", 80);
    r.assert_error(507, "quota_storage", false);
    let r = call(addr, &acme, "GET", "/v1/kv/b/k1", None);
    assert_eq!(r.body.len(), 20, "the refused write stored nothing");
    assert_eq!(usage(addr, &acme), (2, 46));
    // An overwrite within the limit: 46 - 23 + 73 = 96.
    assert_eq!(put("k1", 70).status, 204);
    assert_eq!(usage(addr, &acme), (2, 96));
    assert_eq!(put("k1", 10).status, 204);
    assert_eq!(usage(addr, &acme), (2, 36));
    assert_eq!(put("k3", 0).status, 201);
    // Over the keys with a fourth key.
    put("k4", 0).assert_error(507, "quota_storage", false);
    assert_eq!(call(addr, &acme, "GET", "/v1/kv/b/k4", None).status, 404);
    // A delete gives the room back.
    assert_eq!(call(addr, &acme, "DELETE", "/v1/kv/b/k3", None).status, 204);
    assert_eq!(usage(addr, &acme), (2, 36));
    // A transaction is judged whole: two new keys would make 4.
    let txn = br#"{"if":[],"then":[
        {"op":"put","bucket":"b","key":"t1","value":"AA=="},
        {"op":"put","bucket":"b","key":"t2","value":"AA=="}]}"#;
    let r = call(addr, &acme, "POST", "/v1/txn", Some(txn));
    r.assert_error(507, "quota_storage", false);
    assert_eq!(call(addr, &acme, "GET", "/v1/kv/b/t1", None).status, 404);
    assert_eq!(usage(addr, &acme), (2, 36));
    // Each tenant has its own room under the same default limits.
    let beta = s.token("beta");
    let r = call(addr, &beta, "PUT", "/v1/kv/b/k4", Some(b"12345"));
    assert_eq!(r.status, 201);
    assert_eq!(usage(addr, &beta), (1, 1 + 2 + 5));
    // A record written with a TTL counts until the sweeper removes it.
    let r = call(addr, &acme, "PUT", "/v1/kv/b/short?ttl=1", Some(b"12"));
    assert_eq!(r.status, 201);
    assert_eq!(usage(addr, &acme), (3, 36 + 1 + 5 + 2));
    poll("the sweeper to give the room back", || {
        (usage(addr, &acme) == (2, 36)).then_some(())
    });
    let m = server.scrape();
    assert_eq!(
        m.value(r#"micronode_tenant_requests_total{tenant="_other",result="quota_storage"}"#),
        3.0
    );
    assert_eq!(m.value(r#"micronode_tenant_keys{tenant="_other"}"#), 3.0);
}

#[test]
fn a_tenant_past_its_watchers_gets_429_quota_until_one_closes() {
    let s = setup("[tenants.acme]\nmax_watchers = 1\n");
    let server = TestServer::start(&s.env());
    let auth = format!("Bearer {}", s.token("acme"));
    let headers = [("authorization", auth.as_str())];
    let first = Sse::open(server.addr, "/v1/watch/b", &headers).expect("first stream");
    let refused = Sse::open(server.addr, "/v1/watch/b", &headers).err();
    let refused = refused.expect("the second stream is refused");
    refused.assert_error(429, "quota", true);
    let other = format!("Bearer {}", s.token("beta"));
    let _beta = Sse::open(
        server.addr,
        "/v1/watch/b",
        &[("authorization", other.as_str())],
    )
    .expect("another tenant is not limited");
    drop(first);
    // The server notices the closed stream at its next send (a keep-alive or an event).
    let admin = s.token("acme");
    poll("the slot to come back", || {
        let _ = call(server.addr, &admin, "PUT", "/v1/kv/b/nudge", Some(b"x"));
        Sse::open(server.addr, "/v1/watch/b", &headers).ok()
    });
}

#[test]
fn usage_is_exact_after_kill_9_and_restart() {
    let s = setup("[tenants.default]\nmax_keys = 1000\n");
    let cwd = s.data().join("node");
    std::fs::create_dir(&cwd).expect("node dir");
    let mut node = ChildServer::start(&s.env(), &cwd);
    let (acme, beta) = (s.token("acme"), s.token("beta"));
    for i in 0..20 {
        let key = format!("/v1/kv/b/k{i:02}");
        let who = if i % 3 == 0 { &beta } else { &acme };
        assert!(call(node.addr, who, "PUT", &key, Some(&vec![7; i * 100])).status < 300);
    }
    // beta takes one of acme's keys over; acme deletes one of its own.
    assert_eq!(
        call(node.addr, &beta, "PUT", "/v1/kv/b/k01", Some(b"b")).status,
        204
    );
    assert_eq!(
        call(node.addr, &acme, "DELETE", "/v1/kv/b/k02", None).status,
        204
    );
    let before = (usage(node.addr, &acme), usage(node.addr, &beta));
    assert_eq!(before.0.0 + before.1.0, 19);
    node.signal("KILL");
    node.wait_exit();
    let node = ChildServer::start(&s.env(), &cwd);
    let after = (usage(node.addr, &acme), usage(node.addr, &beta));
    assert_eq!(after, before, "usage is rebuilt from what is stored");
}

#[test]
fn a_snapshot_carries_owners_so_a_restore_keeps_every_tenants_usage() {
    let s = setup("[tenants.default]\nmax_keys = 1000\n");
    let server = TestServer::start(&s.env());
    let (acme, beta, admin) = (s.token("acme"), s.token("beta"), s.token("ops"));
    for (i, who) in [&acme, &acme, &beta].iter().enumerate() {
        let r = call(
            server.addr,
            who,
            "PUT",
            &format!("/v1/kv/b/k{i}"),
            Some(b"12345"),
        );
        assert_eq!(r.status, 201);
    }
    let gone = s.token("gone");
    let body = serde_json::json!({ "token": gone }).to_string();
    let r = call(
        server.addr,
        &admin,
        "POST",
        "/v1/auth/revoke",
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let before = (usage(server.addr, &acme), usage(server.addr, &beta));
    let default_before = usage(server.addr, &s.token("default"));
    let file = s.data().join("snap.ndjson").display().to_string();
    let url = format!("http://{}", server.addr);
    let (code, out, err) = support::run_binary(
        &["snapshot", "save", &file, "--url", &url, "--token", &admin],
        &[],
        s.data(),
    );
    assert_eq!(code, 0, "save: {out} {err}");
    let text = std::fs::read_to_string(&file).expect("snapshot");
    assert!(text.contains("\"tenant\":\"acme\""), "{text}");
    let restored = s.data().join("restored").display().to_string();
    // A restore is not refused by quotas lower than what the snapshot holds.
    let strict = s.data().join("strict.toml");
    std::fs::write(&strict, "[tenants.default]\nmax_keys = 1\nmax_bytes = 1\n").expect("config");
    let strict = strict.display().to_string();
    let (code, out, err) = support::run_binary(
        &["snapshot", "restore", &file],
        &[
            ("MICRONODE_STORAGE_PATH", restored.as_str()),
            ("MICRONODE_CONFIG", strict.as_str()),
        ],
        s.data(),
    );
    assert_eq!(code, 0, "restore: {out} {err}");
    let mut env = s.env();
    env.push(("MICRONODE_STORAGE_PATH", restored.as_str()));
    let again = TestServer::start(&env);
    assert_eq!((usage(again.addr, &acme), usage(again.addr, &beta)), before);
    // The revocation came back too, and counts for no tenant.
    assert_eq!(usage(again.addr, &s.token("default")), default_before);
    call(again.addr, &gone, "GET", "/v1/kv/b/k0", None).assert_error(401, "auth", false);
}
