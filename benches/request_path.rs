//! In-process benches of the full request path (route match → guards → handler → response),
//! no TCP. Names carry their parameters: `kv_put_4kib_sled_periodic` is a PUT of a 4 KiB value
//! on a sled store in `periodic` durability (a `sync` PUT would measure the disk's fsync).
//!
//!     cargo bench --bench request_path
//!     cargo bench --bench request_path -- kv_get     # a subset

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use micronode::config::Config;
use micronode::service::Service;
use micronode::wire::{ConnInfo, RequestBody};

const VALUE_128B: &[u8] = &[b'a'; 128];
const VALUE_4KIB: &[u8] = &[b'b'; 4096];

fn app(env: &[(&str, &str)]) -> Arc<Service> {
    let env: HashMap<&str, &str> = env.iter().copied().collect();
    let cfg = Config::load(None, |k| env.get(k).map(|v| v.to_string())).expect("valid config");
    Arc::new(Service::new(
        micronode::build_app(cfg).expect("store opens"),
    ))
}

fn req(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Request<RequestBody> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(RequestBody::from(Bytes::from_static(body)))
        .expect("valid request")
}

fn put(path: &str, body: &'static [u8]) -> Request<RequestBody> {
    let len = body.len().to_string();
    let mut r = req("PUT", path, &[], body);
    r.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_str(&len).expect("digits"),
    );
    r
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let sled_path = dir.path().join("data").display().to_string();
    let engines = [
        (
            "mem",
            app(&[
                ("MICRONODE_STORAGE_ENGINE", "mem"),
                ("MICRONODE_MAX_BODY_BYTES", "8192"),
            ]),
        ),
        (
            "sled_periodic",
            app(&[
                ("MICRONODE_STORAGE_ENGINE", "sled"),
                ("MICRONODE_STORAGE_PATH", &sled_path),
                ("MICRONODE_DURABILITY", "periodic"),
                ("MICRONODE_MAX_BODY_BYTES", "8192"),
            ]),
        ),
    ];

    let admin = &engines[0].1;
    let conn = Arc::new(ConnInfo {
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        tls: None,
    });
    let run =
        |svc: &Arc<Service>, r: Request<RequestBody>| rt.block_on(svc.handle(&conn, r)).status();
    c.bench_function("healthz", |b| {
        b.iter(|| run(admin, req("GET", "/healthz", &[], b"")))
    });
    c.bench_function("readyz", |b| {
        b.iter(|| run(admin, req("GET", "/readyz", &[], b"")))
    });
    c.bench_function("reject_415_content_encoding", |b| {
        b.iter(|| {
            run(
                admin,
                req("GET", "/v1/ping", &[("content-encoding", "gzip")], b""),
            )
        })
    });
    c.bench_function("reject_413_declared_length", |b| {
        b.iter(|| {
            run(
                admin,
                req("PUT", "/v1/kv/b/k", &[("content-length", "100000")], b""),
            )
        })
    });

    for (engine, app) in &engines {
        // The names the issue asks for: sled reads are named by engine alone.
        let read_name = engine.trim_end_matches("_periodic");
        assert_eq!(run(app, put("/v1/kv/b/k128", VALUE_128B)), 201);
        assert_eq!(run(app, req("GET", "/v1/kv/b/k128", &[], b"")), 200);
        c.bench_function(&format!("kv_get_hit_128b_{read_name}"), |b| {
            b.iter(|| run(app, req("GET", "/v1/kv/b/k128", &[], b"")))
        });
        c.bench_function(&format!("kv_get_miss_{read_name}"), |b| {
            b.iter(|| run(app, req("GET", "/v1/kv/b/missing", &[], b"")))
        });
        c.bench_function(&format!("kv_put_128b_{engine}"), |b| {
            b.iter(|| run(app, put("/v1/kv/b/p128", VALUE_128B)))
        });
        c.bench_function(&format!("kv_put_4kib_{engine}"), |b| {
            b.iter(|| run(app, put("/v1/kv/b/p4k", VALUE_4KIB)))
        });
    }

    // Auth on: the same GET with a token of three caveats (bucket, prefix, ops), against
    // `kv_get_hit_128b_mem` above; and the token check alone.
    let keys_path = dir.path().join("keys.toml");
    let keys =
        micronode::auth::keyring::init(&keys_path, micronode::auth::now_unix()).expect("key ring");
    let keys_env = keys_path.display().to_string();
    let authed = app(&[
        ("MICRONODE_STORAGE_ENGINE", "mem"),
        ("MICRONODE_AUTH", "on"),
        ("MICRONODE_AUTH_KEYS_FILE", &keys_env),
    ]);
    let caveats = [
        micronode::auth::Caveat::Bucket("b".into()),
        micronode::auth::Caveat::Prefix("k".into()),
        micronode::auth::Caveat::Ops(micronode::auth::Ops::parse_list("get,put").expect("ops")),
    ];
    let token = micronode::auth::mint(keys.newest(), "acme", &caveats).expect("mint");
    let bearer = format!("Bearer {token}");
    let with_token = |r: Request<RequestBody>| {
        let mut r = r;
        r.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&bearer).expect("ascii"),
        );
        r
    };
    assert_eq!(
        run(&authed, with_token(put("/v1/kv/b/k128", VALUE_128B))),
        201
    );
    c.bench_function("kv_get_hit_128b_mem_token", |b| {
        b.iter(|| run(&authed, with_token(req("GET", "/v1/kv/b/k128", &[], b""))))
    });
    c.bench_function("token_verify_3_caveats", |b| {
        b.iter(|| {
            micronode::auth::Unverified::parse(std::hint::black_box(&token))
                .map(|t| t.verify(&keys, micronode::auth::now_unix(), 0).is_ok())
                .unwrap_or(false)
        })
    });
}

criterion_group!(request_path, benches);
criterion_main!(request_path);
