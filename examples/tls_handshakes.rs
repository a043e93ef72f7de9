//! A load client for full TLS handshakes with a chosen key-exchange group, used by
//! scripts/bench_tls.sh to compare X25519 with the X25519MLKEM768 hybrid (docs/PERFORMANCE.md):
//! OpenSSL 3.0's command-line tools cannot offer the hybrid.
//!
//! Each connection does a full TLS 1.3 handshake (no resumption), one `GET PATH` with
//! `connection: close`, and reads the answer to the end. Bounded by COUNT connections.
//!
//! ```text
//! tls_handshakes ADDR CA_PEM GROUP COUNT [CONCURRENCY] [PATH]
//!   GROUP: x25519 | hybrid | secp256r1
//! ```
//! Prints `handshakes=N errors=E secs=S rate=R`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rustls::crypto::aws_lc_rs::{self as provider, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn usage() -> ! {
    eprintln!(
        "usage: tls_handshakes ADDR CA_PEM x25519|hybrid|secp256r1 COUNT [CONCURRENCY] [PATH]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let addr: SocketAddr = args[0].parse().unwrap_or_else(|_| usage());
    let group = match args[2].as_str() {
        "x25519" => kx_group::X25519,
        "hybrid" => kx_group::X25519MLKEM768,
        "secp256r1" => kx_group::SECP256R1,
        _ => usage(),
    };
    let count: u64 = args[3].parse().unwrap_or_else(|_| usage());
    let concurrency: u64 = args
        .get(4)
        .map_or(Ok(4), |c| c.parse())
        .unwrap_or_else(|_| usage());
    let path = args
        .get(5)
        .cloned()
        .unwrap_or_else(|| "/healthz".to_owned());

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args[1]).unwrap_or_else(|e| {
        eprintln!("{}: {e}", args[1]);
        std::process::exit(2)
    }) {
        match cert {
            Ok(c) => roots.add(c).unwrap_or_else(|e| {
                eprintln!("{}: {e}", args[1]);
                std::process::exit(2)
            }),
            Err(e) => {
                eprintln!("{}: {e}", args[1]);
                std::process::exit(2)
            }
        }
    }
    let mut p = provider::default_provider();
    p.kx_groups = vec![group];
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is supported")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let request = Arc::new(format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    ));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (connector, next, errors, request) = (
                connector.clone(),
                Arc::clone(&next),
                Arc::clone(&errors),
                Arc::clone(&request),
            );
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let one = async {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        tcp.set_nodelay(true)?;
                        let name = ServerName::try_from("localhost").expect("valid name");
                        let mut tls = connector.connect(name, tcp).await?;
                        tls.write_all(request.as_bytes()).await?;
                        let (mut got, mut ok) = (0, false);
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) => break,
                                Ok(n) => {
                                    if got == 0 {
                                        ok = buf[..n].starts_with(b"HTTP/1.1 200");
                                    }
                                    got += n;
                                }
                                // Servers that close without close_notify.
                                Err(e)
                                    if got > 0 && e.kind() == std::io::ErrorKind::UnexpectedEof =>
                                {
                                    break;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        if ok {
                            Ok(())
                        } else {
                            Err(std::io::Error::other("not a 200"))
                        }
                    };
                    if one.await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "handshakes={count} errors={errors} secs={secs:.3} rate={:.0}",
        (count - errors.min(count)) as f64 / secs
    );
}
