//! TLS on the listener (docs/SECURITY.md): the post-quantum modes over HTTP/1.1 and HTTP/2,
//! hostile and broken handshakes, mutual TLS, certificate reload on SIGHUP, `tls dev-cert`,
//! and the KV and slow-client cases over TLS. Real servers on 127.0.0.1:0, a rustls client
//! with chosen groups, certificates made by rcgen in temp dirs.

#[path = "tls/support.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::Version;
use rustls::NamedGroup;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use support::*;

/// What a mode does with a client offering `offer`: the group agreed, or a refusal.
fn expected(mode: &str, offer: Offer) -> Option<NamedGroup> {
    match (mode, offer) {
        ("off", Offer::HybridOnly) => None,
        ("off", _) => Some(NamedGroup::X25519),
        ("preferred", Offer::X25519Only) => Some(NamedGroup::X25519),
        ("preferred", _) => Some(NamedGroup::X25519MLKEM768),
        ("required", Offer::X25519Only) => None,
        ("required", _) => Some(NamedGroup::X25519MLKEM768),
        _ => unreachable!("modes are off, preferred, required"),
    }
}

fn label(g: NamedGroup) -> &'static str {
    match g {
        NamedGroup::X25519MLKEM768 => "X25519MLKEM768",
        NamedGroup::X25519 => "X25519",
        _ => unreachable!("tests offer only these"),
    }
}

/// Every client offer against one mode, over HTTP/1.1 and HTTP/2 (ALPN): the agreed group or
/// the refusal, the protocol of the answer, and the handshake counters.
async fn mode_matrix(mode: &str) {
    let s = TlsServer::start(&[("MICRONODE_TLS_PQ", mode)], None);
    let mut refused = 0;
    for offer in Offer::ALL {
        for alpn in [Alpn::H1, Alpn::H2] {
            let cfg = s.client(alpn).offer(offer).config();
            let got = Http::open(s.addr, cfg).await;
            match (expected(mode, offer), got) {
                (Some(group), Ok(mut c)) => {
                    assert_eq!(c.group, Some(group), "{mode} {offer:?} {alpn:?}");
                    assert_eq!(c.version, Some(rustls::ProtocolVersion::TLSv1_3));
                    let (status, body, version) = c.get("/healthz").await;
                    assert_eq!(status, 200, "{mode} {offer:?} {alpn:?}: {body:?}");
                    let want = match alpn {
                        Alpn::H1 => Version::HTTP_11,
                        Alpn::H2 => Version::HTTP_2,
                    };
                    assert_eq!(version, want, "{mode} {offer:?} {alpn:?}");
                }
                (None, Err(_)) => refused += 1,
                (want, got) => panic!(
                    "{mode} {offer:?} {alpn:?}: wanted {want:?}, got {:?}",
                    got.map(|c| c.group)
                ),
            }
        }
    }
    s.await_failures(refused).await;
    for g in [NamedGroup::X25519MLKEM768, NamedGroup::X25519] {
        let want = Offer::ALL
            .iter()
            .filter(|&&o| expected(mode, o) == Some(g))
            .count() as u64
            * 2;
        assert_eq!(
            s.handshakes(true, "TLSv1_3", label(g)),
            want,
            "{mode} {g:?}"
        );
    }
    s.still_serves().await;
}

/// `off`: classical groups only; a hybrid-only client is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pq_off_agrees_x25519_and_refuses_hybrid_only_clients() {
    mode_matrix("off").await;
}

/// `preferred`: the hybrid whenever the client offers it, X25519 otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pq_preferred_agrees_the_hybrid_when_offered_else_x25519() {
    mode_matrix("preferred").await;
}

/// `required`: the hybrid only; an X25519-only client is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pq_required_agrees_only_the_hybrid() {
    mode_matrix("required").await;
}

/// A client offering only TLS 1.2 is refused by `required` and served by `preferred`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_client_is_refused_by_required_and_served_by_preferred() {
    let s = TlsServer::start(&[("MICRONODE_TLS_PQ", "required")], None);
    let cfg = s.client(Alpn::H1).tls12_only().config();
    assert!(Http::open(s.addr, cfg).await.is_err());
    s.await_failures(1).await;
    s.still_serves().await;

    let s = TlsServer::start(&[("MICRONODE_TLS_PQ", "preferred")], None);
    let mut c = Http::open(s.addr, s.client(Alpn::H1).tls12_only().config())
        .await
        .expect("TLS 1.2 is served");
    assert_eq!(c.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(c.group, Some(NamedGroup::X25519));
    assert_eq!(c.get("/healthz").await.0, 200);
    assert_eq!(s.handshakes(true, "TLSv1_2", "X25519"), 1);
}

/// A client offering only secp384r1 gets it (the label set covers every classical group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nist_curves_are_agreed_and_counted_by_name() {
    let s = TlsServer::start(&[], None);
    for (group, label) in [
        (rustls::crypto::aws_lc_rs::kx_group::SECP256R1, "secp256r1"),
        (rustls::crypto::aws_lc_rs::kx_group::SECP384R1, "secp384r1"),
    ] {
        let cfg = s.client(Alpn::H1).groups(vec![group]).config();
        let mut c = Http::open(s.addr, cfg).await.expect("classical group");
        assert_eq!(c.group, Some(group.name()));
        // Answered, so the server has finished (and counted) its side of the handshake.
        assert_eq!(c.get("/healthz").await.0, 200);
        assert_eq!(s.handshakes(true, "TLSv1_3", label), 1);
    }
}

/// Plain HTTP sent to the TLS port gets no HTTP answer, is counted, and harms nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_is_refused_and_counted() {
    let s = TlsServer::start(&[], None);
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("send");
    let answer = read_to_close(&mut tcp).await;
    assert!(!answer.starts_with(b"HTTP/"), "got {answer:?}");
    s.await_failures(1).await;
    s.still_serves().await;
}

/// A ClientHello cut short, then the write side closed: refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_client_hello_is_refused_and_counted() {
    let s = TlsServer::start(&[], None);
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    // A handshake record announcing 512 bytes, a ClientHello header, and only 40 bytes.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0x42; 29]);
    tcp.write_all(&hello).await.expect("send");
    tcp.shutdown().await.expect("half-close");
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.len() <= 7, "at most an alert record: {answer:?}");
    s.await_failures(1).await;
    s.still_serves().await;
}

/// A client that opens TCP (or starts a ClientHello) and stalls is closed at the header
/// timeout, like a slowloris head, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_is_closed_at_the_header_timeout() {
    let s = TlsServer::start(&[("MICRONODE_HEADER_READ_TIMEOUT_MS", "300")], None);
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    let mut partial = TcpStream::connect(s.addr).await.expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("send");
    let (a, b) = tokio::join!(read_to_close(&mut silent), read_to_close(&mut partial));
    assert!(a.is_empty(), "nothing sent to a silent client: {a:?}");
    assert!(b.len() <= 7, "at most an alert: {b:?}");
    s.await_failures(2).await;
    s.still_serves().await;
}

/// mTLS: no client certificate and one from another CA are refused; a valid one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_missing_and_foreign_certificates_and_serves_a_valid_one() {
    let clients = Ca::new("client CA");
    let other = Ca::new("other CA");
    let s = TlsServer::start(&[], Some(&clients));

    // No certificate. In TLS 1.3 the client learns of the refusal on its first read.
    if let Ok(mut c) = Http::open(s.addr, s.client(Alpn::H1).config()).await {
        let r = c.try_request("GET", "/healthz", Bytes::new()).await;
        assert!(r.is_err(), "no client certificate must be refused: {r:?}");
    }
    s.await_failures(1).await;

    let foreign = other.client("intruder");
    let cfg = s.client(Alpn::H2).client_cert(&foreign).config();
    if let Ok(mut c) = Http::open(s.addr, cfg).await {
        let r = c.try_request("GET", "/healthz", Bytes::new()).await;
        assert!(r.is_err(), "a foreign certificate must be refused: {r:?}");
    }
    s.await_failures(2).await;

    let valid = clients.client("svc-a");
    for alpn in [Alpn::H1, Alpn::H2] {
        let mut c = Http::open(s.addr, s.client(alpn).client_cert(&valid).config())
            .await
            .expect("valid client certificate");
        assert_eq!(c.get("/healthz").await.0, 200);
    }
    assert_eq!(s.failures(), 2);
}

/// The KV round trip over TLS, on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_round_trip_over_tls() {
    let s = TlsServer::start(&[], None);
    for (alpn, key) in [(Alpn::H1, "k1"), (Alpn::H2, "k2")] {
        let mut c = Http::open(s.addr, s.client(alpn).config())
            .await
            .expect("connect");
        let path = format!("/v1/kv/b/{key}");
        let value = Bytes::from(format!("value of {key} over TLS"));
        let (status, _, _) = c.request("PUT", &path, value.clone()).await;
        assert!(matches!(status, 200 | 201 | 204), "PUT {status}");
        let (status, body, _) = c.get(&path).await;
        assert_eq!(status, 200);
        assert_eq!(body, value);
        let (status, _, _) = c.request("DELETE", &path, Bytes::new()).await;
        assert!(matches!(status, 200 | 204), "DELETE {status}");
        assert_eq!(c.get(&path).await.0, 404);
    }
}

/// `/readyz` is truthful over TLS and `/metrics` shows the certificate's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_certificate_expiry_over_tls() {
    let s = TlsServer::start(&[], None);
    let mut c = Http::open(s.addr, s.client(Alpn::H2).config())
        .await
        .expect("connect");
    assert_eq!(c.get("/readyz").await.0, 200);
    let (status, body, _) = c.get("/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(
        metric_value(&text, "micronode_tls_cert_not_after_seconds "),
        Some(jan1(2040) as f64)
    );
}

/// A head dribbled byte by byte after the handshake is closed at the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_over_tls_is_closed_at_the_header_timeout() {
    let s = TlsServer::start(&[("MICRONODE_HEADER_READ_TIMEOUT_MS", "300")], None);
    let tls = connect(s.addr, s.client(Alpn::H1).config())
        .await
        .expect("connect");
    let (mut rd, mut wr) = tokio::io::split(tls);
    let dribbler = tokio::spawn(async move {
        // One byte every 50 ms of a head that never ends; at most 400 bytes (20 s).
        let head = format!("GET /healthz HTTP/1.1\r\nx-slow: {}", "a".repeat(400));
        for b in head.bytes().take(400) {
            if wr.write_all(&[b]).await.is_err() || wr.flush().await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    let answer = read_to_close(&mut rd).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "dribbled head got {text:?}"
    );
    dribbler.abort();
    s.still_serves().await;
}

/// A body that stalls after the head gets 408 `body_timeout` over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_over_tls_gets_408() {
    let s = TlsServer::start(&[("MICRONODE_BODY_READ_TIMEOUT_MS", "300")], None);
    let mut tls = connect(s.addr, s.client(Alpn::H1).config())
        .await
        .expect("connect");
    tls.write_all(
        b"PUT /v1/kv/b/slow HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await
    .expect("send");
    tls.flush().await.expect("flush");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    drop(tls);
    s.still_serves().await;
}

/// SIGHUP: a new connection sees the new certificate, an open keep-alive connection keeps
/// working, and broken files (garbage, a key that is not the certificate's) change nothing
/// and are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_the_old_one_on_bad_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("reload CA");
    let first = ca.server("first", 2040);
    let (cert, key) = first.write(dir.path());
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let server = ChildServer::start(&[
        ("MICRONODE_TLS_CERT", &cert_s),
        ("MICRONODE_TLS_KEY", &key_s),
    ]);
    let opts = ClientOpts::new(ca.roots());
    let scrape = |series: &'static str| {
        let cfg = opts.clone().alpn(Alpn::H1).config();
        let addr = server.addr;
        async move {
            let mut c = Http::open(addr, cfg).await.expect("connect");
            let (_, body, _) = c.get("/metrics").await;
            metric_value(&String::from_utf8_lossy(&body), series)
        }
    };

    let mut h1 = Http::open(server.addr, opts.clone().alpn(Alpn::H1).config())
        .await
        .expect("connect h1");
    let mut h2 = Http::open(server.addr, opts.clone().alpn(Alpn::H2).config())
        .await
        .expect("connect h2");
    assert_eq!(h1.leaf, first.der);
    assert_eq!(h1.get("/healthz").await.0, 200);
    assert_eq!(h2.get("/healthz").await.0, 200);

    // A new certificate and key (another key pair, another expiry).
    let second = ca.server("second", 2041);
    second.write(dir.path());
    server.signal("HUP");
    let mut seen = None;
    for _ in 0..2000 {
        let c = Http::open(server.addr, opts.clone().config())
            .await
            .expect("connect");
        if c.leaf == second.der {
            seen = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.is_some(),
        "new connections never saw the new certificate"
    );
    assert_eq!(
        scrape("micronode_config_reloads_total{result=\"ok\"} ").await,
        Some(1.0)
    );
    assert_eq!(
        scrape("micronode_tls_cert_not_after_seconds ").await,
        Some(jan1(2041) as f64)
    );
    // The connections opened before the reload keep working.
    assert_eq!(h1.get("/healthz").await.0, 200);
    assert_eq!(h2.get("/healthz").await.0, 200);

    // Garbage in the certificate file, then a key that is not the certificate's.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    server.signal("HUP");
    poll_async_metric(
        &scrape,
        "micronode_config_reloads_total{result=\"error\"} ",
        1.0,
    )
    .await;
    std::fs::write(&cert, &second.cert_pem).expect("write");
    std::fs::write(&key, &first.key_pem).expect("write");
    server.signal("HUP");
    poll_async_metric(
        &scrape,
        "micronode_config_reloads_total{result=\"error\"} ",
        2.0,
    )
    .await;

    let c = Http::open(server.addr, opts.clone().config())
        .await
        .expect("the old configuration still serves");
    assert_eq!(c.leaf, second.der);
    assert_eq!(
        scrape("micronode_config_reloads_total{result=\"ok\"} ").await,
        Some(1.0)
    );
    assert_eq!(
        scrape("micronode_tls_cert_not_after_seconds ").await,
        Some(jan1(2041) as f64)
    );
    assert_eq!(h1.get("/healthz").await.0, 200);
    assert_eq!(h2.get("/healthz").await.0, 200);
    let logs = server.logs();
    assert!(logs.contains("reload failed"), "{logs}");
    assert!(
        logs.contains("MICRONODE_TLS_KEY"),
        "the key error names its knob: {logs}"
    );
}

async fn poll_async_metric<F, Fut>(scrape: &F, series: &'static str, want: f64)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Option<f64>>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if scrape(series).await == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bad TLS settings stop the boot with exit 2 and a line naming the knob.
#[test]
fn bad_tls_settings_stop_the_boot_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = Ca::new("boot CA").server("boot", 2040);
    let (cert, key) = pair.write(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let missing = dir.path().join("missing.pem").display().to_string();
    let base = [
        ("MICRONODE_BIND_ADDR", "127.0.0.1:0"),
        ("MICRONODE_STORAGE_ENGINE", "mem"),
    ];
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Env, &[&str])> = vec![
        (
            vec![("MICRONODE_TLS_CERT", &cert)],
            &["MICRONODE_TLS_CERT", "MICRONODE_TLS_KEY"],
        ),
        (
            vec![("MICRONODE_TLS_KEY", &key)],
            &["MICRONODE_TLS_CERT", "MICRONODE_TLS_KEY"],
        ),
        (
            vec![
                ("MICRONODE_TLS_CERT", &missing),
                ("MICRONODE_TLS_KEY", &key),
            ],
            &["MICRONODE_TLS_CERT", "missing.pem"],
        ),
        (
            vec![("MICRONODE_TLS_CERT", &cert), ("MICRONODE_TLS_KEY", &cert)],
            &["MICRONODE_TLS_KEY"],
        ),
        (
            vec![
                ("MICRONODE_TLS_CERT", &cert),
                ("MICRONODE_TLS_KEY", &key),
                ("MICRONODE_TLS_PQ", "sometimes"),
            ],
            &["MICRONODE_TLS_PQ"],
        ),
    ];
    for (env, names) in cases {
        let mut all = base.to_vec();
        all.extend(env.iter().copied());
        let (code, _, stderr) = run_binary(&[], &all);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        for n in names {
            assert!(stderr.contains(n), "{env:?}: {stderr} should name {n}");
        }
    }
}

/// `tls dev-cert` writes a pair a client can trust for localhost and 127.0.0.1, keeps the
/// key private, and will not overwrite without `--force`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cert_writes_a_usable_pair_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("certs");
    let out_s = out.display().to_string();
    let (code, stdout, stderr) = run_binary(&["tls", "dev-cert", "--out", &out_s], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("--cacert"), "{stdout}");
    let mode = std::fs::metadata(out.join("key.pem"))
        .expect("key written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (code, _, stderr) = run_binary(&["tls", "dev-cert", "--out", &out_s], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--force"), "{stderr}");
    std::fs::set_permissions(out.join("key.pem"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let (code, _, stderr) = run_binary(&["tls", "dev-cert", "--out", &out_s, "--force"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let mode = std::fs::metadata(out.join("key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "--force restores the key's mode");

    let cert = out.join("cert.pem").display().to_string();
    let key = out.join("key.pem").display().to_string();
    let server = ChildServer::start(&[("MICRONODE_TLS_CERT", &cert), ("MICRONODE_TLS_KEY", &key)]);
    let mut roots = rustls::RootCertStore::empty();
    for c in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_file_iter(
            &cert,
        )
        .expect("cert file")
    {
        roots.add(c.expect("cert")).expect("trust the dev cert");
    }
    let mut c = Http::open(server.addr, ClientOpts::new(roots).config())
        .await
        .expect("localhost verifies against the dev certificate");
    assert_eq!(c.get("/healthz").await.0, 200);
}
