//! Tokens at the edge: 401 for missing, invalid, expired and revoked tokens, 403 for what a
//! token's caveats do not allow — a caveat matrix over every route, each denial checked to have
//! written nothing — and the open routes. Real servers over TCP; tokens minted with the
//! library, the way `micronode auth mint` does.

mod support;

use std::path::PathBuf;

use micronode::auth::{Caveat, KeyRing, Ops, attenuate, keyring, mint, now_unix};
use support::{Response, TestServer, request};

struct Node {
    server: TestServer,
    keys: KeyRing,
    _dir: tempfile::TempDir,
}

fn node(extra: &[(&str, &str)]) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("keys.toml");
    let keys = keyring::init(&path, now_unix()).expect("key ring");
    let path = path.display().to_string();
    let mut env = vec![
        ("MICRONODE_AUTH", "on"),
        ("MICRONODE_AUTH_KEYS_FILE", path.as_str()),
    ];
    env.extend_from_slice(extra);
    Node {
        server: TestServer::start(&env),
        keys,
        _dir: dir,
    }
}

impl Node {
    fn token(&self, caveats: &[Caveat]) -> String {
        mint(self.keys.newest(), "acme", caveats).expect("mint")
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        request(self.server.addr, method, path, &headers, body)
    }

    fn admin(&self) -> String {
        self.token(&[])
    }

    /// The value of a key as an all-powerful token sees it.
    fn value(&self, path: &str) -> Option<Vec<u8>> {
        let r = self.call("GET", path, Some(&self.admin()), None);
        (r.status == 200).then_some(r.body)
    }
}

fn ops(list: &str) -> Caveat {
    Caveat::Ops(Ops::parse_list(list).expect("ops"))
}

#[test]
fn open_routes_need_no_token_and_the_rest_answer_401_with_the_reason() {
    let n = node(&[]);
    assert_eq!(n.call("GET", "/healthz", None, None).status, 200);
    assert_eq!(n.call("GET", "/readyz", None, None).status, 200);
    let r = n.call("GET", "/v1/kv/b/k", None, None);
    r.assert_error(401, "auth", false);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"micronode\"")
    );
    for bad in ["mn1_junk", "not-a-token", ""] {
        let r = n.call("GET", "/v1/kv/b/k", Some(bad), None);
        r.assert_error(401, "auth", false);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"micronode\", error=\"invalid_token\"")
        );
    }
    // A flipped character anywhere in a real token is invalid, never a panic.
    let good = n.admin();
    for i in 4..good.len() {
        let mut t = good.clone().into_bytes();
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(t).expect("ascii");
        if t != good {
            assert_eq!(
                n.call("GET", "/v1/kv/b/k", Some(&t), None).status,
                401,
                "byte {i}"
            );
        }
    }
    // Expired, and not yet valid.
    let past = n.token(&[Caveat::NotAfter(now_unix() - 10)]);
    let future = n.token(&[Caveat::NotBefore(now_unix() + 3600)]);
    for t in [past, future] {
        let r = n.call("GET", "/v1/kv/b/k", Some(&t), None);
        r.assert_error(401, "auth", false);
        assert!(r.text().contains("expired"), "{}", r.text());
    }
    // Operator routes need a token too; /metrics needs admin.
    assert_eq!(n.call("GET", "/metrics", None, None).status, 401);
    let reader = n.token(&[ops("get")]);
    assert_eq!(n.call("GET", "/metrics", Some(&reader), None).status, 403);
    assert_eq!(n.call("GET", "/version", Some(&reader), None).status, 200);
    assert_eq!(
        n.call("GET", "/metrics", Some(&n.admin()), None).status,
        200
    );
    let m = n.call("GET", "/metrics", Some(&n.admin()), None).text();
    assert!(
        m.contains("micronode_auth_total{result=\"invalid\"}"),
        "{m}"
    );
}

#[test]
fn open_metrics_serves_operator_routes_without_a_token() {
    let n = node(&[("MICRONODE_AUTH_OPEN_METRICS", "1")]);
    assert_eq!(n.call("GET", "/metrics", None, None).status, 200);
    assert_eq!(n.call("GET", "/version", None, None).status, 200);
    assert_eq!(n.call("GET", "/v1/kv/b/k", None, None).status, 401);
}

/// One cell: a token, a method, a path, a body, the status it must get.
type Cell<'a> = (&'a str, &'a str, &'a str, Option<&'a [u8]>, u16);

/// Every cell's token, request and status; a denied write must leave the key as it was.
#[test]
fn caveat_matrix() {
    let n = node(&[]);
    let admin = n.admin();
    for k in ["users/42/a", "users/7/a", "other"] {
        let r = n.call("PUT", &format!("/v1/kv/app/{k}"), Some(&admin), Some(b"v0"));
        assert_eq!(r.status, 201);
    }
    assert_eq!(
        n.call("PUT", "/v1/kv/secret/k", Some(&admin), Some(b"s0"))
            .status,
        201
    );
    let scoped = n.token(&[
        Caveat::Bucket("app".into()),
        Caveat::Prefix("users/42/".into()),
    ]);
    let read_only = n.token(&[Caveat::Bucket("app".into()), ops("get,list")]);
    // Attenuated: narrower than its parent (prefix then ops), never wider.
    let narrowed = attenuate(&scoped, &[ops("get")]).expect("attenuate");
    let widened_try = attenuate(&scoped, &[Caveat::Bucket("secret".into())]).expect("attenuate");
    // Two different bucket caveats: nothing at all.
    let nothing = n.token(&[
        Caveat::Bucket("app".into()),
        Caveat::Bucket("secret".into()),
    ]);
    let cells: &[Cell<'_>] = &[
        // token, method, path, body, status
        (&scoped, "GET", "/v1/kv/app/users/42/a", None, 200),
        (&scoped, "PUT", "/v1/kv/app/users/42/b", Some(b"x"), 201),
        (&scoped, "DELETE", "/v1/kv/app/users/42/b", None, 204),
        (&scoped, "GET", "/v1/kv/app/users/7/a", None, 403),
        (&scoped, "PUT", "/v1/kv/app/users/7/a", Some(b"x"), 403),
        (&scoped, "DELETE", "/v1/kv/app/other", None, 403),
        (&scoped, "GET", "/v1/kv/secret/k", None, 403),
        // `%2F` decodes to `/`: the same key, the same answer.
        (&scoped, "GET", "/v1/kv/app/users%2F42%2Fa", None, 200),
        (&scoped, "GET", "/v1/kv/app/users%2F7%2Fa", None, 403),
        // Listing: the prefix must be inside every prefix caveat; none = the whole bucket.
        (&scoped, "GET", "/v1/kv/app?prefix=users%2F42%2F", None, 200),
        (
            &scoped,
            "GET",
            "/v1/kv/app?prefix=users%2F42%2Fa",
            None,
            200,
        ),
        (&scoped, "GET", "/v1/kv/app", None, 403),
        (&scoped, "GET", "/v1/kv/app?prefix=users%2F", None, 403),
        // A cursor outside the prefix.
        (
            &scoped,
            "GET",
            "/v1/kv/app?prefix=users%2F42%2F&after=other",
            None,
            403,
        ),
        // Watch: the same rule (the watch-range escape class).
        (&scoped, "GET", "/v1/watch/app?prefix=users%2F", None, 403),
        (&scoped, "GET", "/v1/watch/app", None, 403),
        (
            &scoped,
            "GET",
            "/v1/watch/secret?prefix=users%2F42%2F",
            None,
            403,
        ),
        // Ops.
        (&read_only, "GET", "/v1/kv/app/other", None, 200),
        (&read_only, "GET", "/v1/kv/app", None, 200),
        (&read_only, "PUT", "/v1/kv/app/other", Some(b"x"), 403),
        (&read_only, "DELETE", "/v1/kv/app/other", None, 403),
        (&read_only, "GET", "/v1/watch/app", None, 403),
        (&narrowed, "GET", "/v1/kv/app/users/42/a", None, 200),
        (&narrowed, "PUT", "/v1/kv/app/users/42/a", Some(b"x"), 403),
        (&widened_try, "GET", "/v1/kv/secret/k", None, 403),
        (&widened_try, "GET", "/v1/kv/app/users/42/a", None, 403),
        (&nothing, "GET", "/v1/kv/app/other", None, 403),
        (&nothing, "GET", "/v1/kv/secret/k", None, 403),
        // Node-wide operations need admin without bucket or prefix caveats.
        (&scoped, "GET", "/v1/admin/snapshot", None, 403),
        (&read_only, "GET", "/v1/admin/snapshot", None, 403),
        (
            &scoped,
            "POST",
            "/v1/auth/tokens",
            Some(br#"{"tenant":"x"}"#),
            403,
        ),
        (
            &scoped,
            "POST",
            "/v1/auth/revoke",
            Some(br#"{"nonce":"00000000000000000000000000000000"}"#),
            403,
        ),
        (&scoped, "GET", "/v1/auth/whoami", None, 200),
    ];
    for (i, (token, method, path, body, status)) in cells.iter().enumerate() {
        let r = n.call(method, path, Some(token), *body);
        assert_eq!(r.status, *status, "cell {i}: {method} {path}: {}", r.text());
        if *status == 403 {
            r.assert_error(403, "policy", false);
        }
    }
    // Nothing a denied request asked for was written.
    assert_eq!(n.value("/v1/kv/app/users/7/a"), Some(b"v0".to_vec()));
    assert_eq!(n.value("/v1/kv/app/other"), Some(b"v0".to_vec()));
    assert_eq!(n.value("/v1/kv/app/users/42/a"), Some(b"v0".to_vec()));
    assert_eq!(n.value("/v1/kv/secret/k"), Some(b"s0".to_vec()));
}

/// A transaction is allowed only if every compare and every op of both branches is: one denied
/// op among allowed ones refuses the whole transaction, and nothing is applied.
#[test]
fn a_transaction_with_one_denied_op_applies_nothing() {
    let n = node(&[]);
    let scoped = n.token(&[Caveat::Bucket("app".into()), Caveat::Prefix("mine/".into())]);
    let body = |extra: &str| {
        format!(
            r#"{{"then":[{{"op":"put","bucket":"app","key":"mine/a","value":"MQ=="}}{extra}]}}"#
        )
    };
    let ok = n.call("POST", "/v1/txn", Some(&scoped), Some(body("").as_bytes()));
    assert_eq!(ok.status, 200, "{}", ok.text());
    for extra in [
        r#",{"op":"put","bucket":"app","key":"theirs/a","value":"Mg=="}"#,
        r#",{"op":"get","bucket":"secret","key":"k"}"#,
        r#",{"op":"delete","bucket":"app","key":"theirs/b"}"#,
    ] {
        let r = n.call(
            "POST",
            "/v1/txn",
            Some(&scoped),
            Some(body(extra).as_bytes()),
        );
        r.assert_error(403, "policy", false);
    }
    // Denied in the else branch or in a compare: refused too (nested bypass class).
    let sneaky = r#"{"if":[{"bucket":"secret","key":"k","exists":true}],
        "then":[{"op":"put","bucket":"app","key":"mine/a","value":"Mw=="}],
        "else":[{"op":"get","bucket":"secret","key":"k"}]}"#;
    n.call("POST", "/v1/txn", Some(&scoped), Some(sneaky.as_bytes()))
        .assert_error(403, "policy", false);
    assert_eq!(n.value("/v1/kv/app/mine/a"), Some(b"1".to_vec()));
    assert_eq!(n.value("/v1/kv/app/theirs/a"), None);
    let no_txn = n.token(&[ops("get,put")]);
    n.call("POST", "/v1/txn", Some(&no_txn), Some(body("").as_bytes()))
        .assert_error(403, "policy", false);
}

#[test]
fn revocation_kills_a_token_and_its_attenuations_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_path = dir.path().join("keys.toml");
    let keys = keyring::init(&keys_path, now_unix()).expect("key ring");
    let keys_env = keys_path.display().to_string();
    let data_env = dir.path().join("data").display().to_string();
    let env = [
        ("MICRONODE_AUTH", "on"),
        ("MICRONODE_AUTH_KEYS_FILE", keys_env.as_str()),
        ("MICRONODE_STORAGE_PATH", data_env.as_str()),
    ];
    let admin = mint(keys.newest(), "ops", &[]).expect("mint");
    let user = mint(keys.newest(), "acme", &[Caveat::Bucket("app".into())]).expect("mint");
    let child = attenuate(&user, &[ops("get")]).expect("attenuate");
    let get = |addr, t: &str| {
        let auth = format!("Bearer {t}");
        request(
            addr,
            "GET",
            "/v1/kv/app/k",
            &[("authorization", auth.as_str())],
            None,
        )
        .status
    };
    {
        let s = TestServer::start(&env);
        assert_eq!(get(s.addr, &user), 404);
        assert_eq!(get(s.addr, &child), 404);
        let auth = format!("Bearer {admin}");
        let body = serde_json::json!({ "token": user }).to_string();
        let r = request(
            s.addr,
            "POST",
            "/v1/auth/revoke",
            &[("authorization", auth.as_str())],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        for t in [&user, &child] {
            let r = request(
                s.addr,
                "GET",
                "/v1/kv/app/k",
                &[("authorization", format!("Bearer {t}").as_str())],
                None,
            );
            r.assert_error(401, "auth", false);
            assert!(r.text().contains("revoked"), "{}", r.text());
        }
        // The revocation is no key anyone can read or list.
        assert_eq!(get(s.addr, &admin), 404);
    }
    let s = TestServer::start(&env);
    assert_eq!(get(s.addr, &user), 401, "still revoked after a restart");
    assert_eq!(get(s.addr, &child), 401);
    assert_eq!(get(s.addr, &admin), 404);
}

#[test]
fn whoami_and_minting_over_http() {
    let n = node(&[]);
    let admin = n.admin();
    let body = br#"{"tenant":"acme","bucket":"app","prefix":"p/","ops":["get","list"],"ttl":60}"#;
    let r = n.call("POST", "/v1/auth/tokens", Some(&admin), Some(body));
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let me = n.call("GET", "/v1/auth/whoami", Some(&token), None).json();
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["caveats"]["bucket"], "app");
    assert_eq!(me["caveats"]["ops"], serde_json::json!(["get", "list"]));
    assert!(me["nonce"].as_str().is_some_and(|n| n.len() == 32));
    assert_eq!(
        n.call("GET", "/v1/kv/app/p/x", Some(&token), None).status,
        404
    );
    assert_eq!(
        n.call("PUT", "/v1/kv/app/p/x", Some(&token), Some(b"v"))
            .status,
        403
    );
    for bad in [
        &br#"{"tenant":"UPPER"}"#[..],
        br#"{"tenant":"a","ops":["fly"]}"#,
        b"[]",
    ] {
        let r = n.call("POST", "/v1/auth/tokens", Some(&admin), Some(bad));
        r.assert_error(400, "bad_request", false);
    }
}

#[test]
fn a_non_loopback_bind_needs_auth_and_tls_or_insecure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, err) = support::run_binary(
        &[],
        &[
            ("MICRONODE_BIND_ADDR", "0.0.0.0:0"),
            ("MICRONODE_STORAGE_ENGINE", "mem"),
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MICRONODE_INSECURE=1"), "{err}");
}

#[test]
fn the_revoke_command_revokes_through_the_server_by_token_or_nonce() {
    let n = node(&[]);
    let url = format!("http://{}", n.server.addr);
    let admin = n.admin();
    let (first, second) = (n.token(&[]), n.token(&[ops("get")]));
    let nonce = micronode::auth::inspect(&second).expect("inspect").nonce;
    let dir = n.server.dir();
    let (code, out, err) = support::run_binary(
        &["auth", "revoke", &first, "--url", &url, "--token", &admin],
        &[],
        dir,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"revoked\""), "{out}");
    assert!(
        !out.contains(&first) && !err.contains(&first),
        "no token printed"
    );
    let (code, out, err) = support::run_binary(
        &["auth", "revoke", "--nonce", &nonce, "--url", &url],
        &[("MICRONODE_TOKEN", admin.as_str())],
        dir,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&nonce), "{out}");
    for t in [&first, &second] {
        let r = n.call("GET", "/v1/kv/b/k", Some(t), None);
        r.assert_error(401, "auth", false);
    }
    // Without an admin token the server refuses, and the command says so.
    let (code, _, err) = support::run_binary(&["auth", "revoke", &admin, "--url", &url], &[], dir);
    assert_eq!(code, 1);
    assert!(err.contains("401") || err.contains("auth"), "{err}");
    assert_eq!(n.call("GET", "/v1/kv/b/k", Some(&admin), None).status, 404);
}
