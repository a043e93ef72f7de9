//! In-process benches of the full request path (route match → guards → handler → response),
//! no TCP. Names carry their parameters.
//!
//!     cargo bench --bench request_path

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use micronode::app::App;
use micronode::config::Config;
use micronode::guards::body::RequestBody;
use micronode::service::handle;

fn app() -> Arc<App> {
    let env: HashMap<&str, &str> = [
        ("MICRONODE_STORAGE_ENGINE", "mem"),
        ("MICRONODE_MAX_BODY_BYTES", "1024"),
    ]
    .into_iter()
    .collect();
    let cfg = Config::load(None, |k| env.get(k).map(|v| v.to_string())).expect("valid config");
    micronode::build_app(cfg).expect("mem store opens")
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

fn benches(c: &mut Criterion) {
    let app = app();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let run = |r: Request<RequestBody>| rt.block_on(handle(&app, r)).status();
    assert_eq!(
        run(req(
            "PUT",
            "/v1/kv/b/k",
            &[("content-length", "128")],
            &[b'a'; 128]
        )),
        201
    );

    c.bench_function("healthz", |b| {
        b.iter(|| run(req("GET", "/healthz", &[], b"")))
    });
    c.bench_function("readyz", |b| {
        b.iter(|| run(req("GET", "/readyz", &[], b"")))
    });
    c.bench_function("reject_415_content_encoding", |b| {
        b.iter(|| run(req("GET", "/v1/ping", &[("content-encoding", "gzip")], b"")))
    });
    c.bench_function("reject_413_declared_length", |b| {
        b.iter(|| run(req("PUT", "/v1/kv/b/k", &[("content-length", "4096")], b"")))
    });
    c.bench_function("kv_get_hit_128b_mem", |b| {
        b.iter(|| run(req("GET", "/v1/kv/b/k", &[], b"")))
    });
    c.bench_function("kv_get_miss_mem", |b| {
        b.iter(|| run(req("GET", "/v1/kv/b/missing", &[], b"")))
    });
}

criterion_group!(request_path, benches);
criterion_main!(request_path);
