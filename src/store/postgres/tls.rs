//! TLS to the database: which connections use it, and what they trust.
//!
//! `sslmode=require` in `MICRONODE_PG_URL` connects over TLS and, unlike libpq's `require`,
//! verifies the server: its certificate must chain to `MICRONODE_PG_CA_FILE` (or the system's
//! trusted roots) and name the host. libpq's `verify-ca` and `verify-full` mean the same here
//! (tokio-postgres does not know their names). `prefer`, the default, is plain TCP: trying TLS
//! first would fail against a server whose self-signed certificate nobody configured us to
//! trust, where libpq would have connected.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PostgresCfg;

const CA_KNOB: &str = "MICRONODE_PG_CA_FILE";

/// The TLS connector of every connection, named in `Debug` output without its configuration.
#[derive(Clone)]
pub(super) struct PgTls(pub(super) MakeRustlsConnect);

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTls")
    }
}

/// The connection settings from `MICRONODE_PG_URL`, and the TLS connector every connection
/// uses (never, when the URL does not ask for TLS). The error names the knob at fault.
pub(super) fn config(cfg: &PostgresCfg) -> Result<(tokio_postgres::Config, PgTls), String> {
    let url = cfg
        .url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
        let hint = if url.contains("sslrootcert") {
            format!(" (give the CA file as {CA_KNOB} instead)")
        } else {
            String::new()
        };
        format!("MICRONODE_PG_URL is not a PostgreSQL URL: {e}{hint}")
    })?;
    let roots = if pg.get_ssl_mode() == SslMode::Require {
        roots(&cfg.ca_file)?
    } else {
        if !cfg.ca_file.as_os_str().is_empty() {
            return Err(format!(
                "{CA_KNOB} is set but MICRONODE_PG_URL does not ask for TLS: \
                 add sslmode=require to the URL"
            ));
        }
        pg.ssl_mode(SslMode::Disable);
        // Never used (TLS is off), but the connector's type is the same either way.
        RootCertStore::empty()
    };
    let client = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((pg, PgTls(MakeRustlsConnect::new(client))))
}

/// aws-lc-rs with the post-quantum hybrid key exchange offered first.
fn provider() -> CryptoProvider {
    let mut p = default_provider();
    p.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ];
    p
}

/// The certificates of `ca` (PEM), or the system's trusted roots when `ca` is empty.
fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if ca.as_os_str().is_empty() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none found".to_owned(), ToString::to_string);
            return Err(format!(
                "no trusted root certificates on this system ({why}): set {CA_KNOB}"
            ));
        }
        return Ok(roots);
    }
    let err = |e: &dyn std::fmt::Display| format!("{CA_KNOB} {}: {e}", ca.display());
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    if certs.is_empty() {
        return Err(err(&"no CERTIFICATE block"));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| err(&e))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str, ca: &str) -> PostgresCfg {
        PostgresCfg {
            url: url.to_owned(),
            ca_file: ca.into(),
            ..Default::default()
        }
    }

    fn ca_file(dir: &Path) -> String {
        let ca = rcgen::generate_simple_self_signed(vec!["db.example".to_owned()]).expect("cert");
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).expect("write");
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn tls_is_used_only_when_the_url_requires_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca_file(dir.path());
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u@db.example/d?sslmode={mode}");
            let (pg, _) = config(&cfg(&url, &ca)).expect(mode);
            assert_eq!(pg.get_ssl_mode(), SslMode::Require, "{mode}");
        }
        for url in [
            "postgres://u@db.example/d",
            "postgres://u@db.example/d?sslmode=prefer",
        ] {
            let (pg, _) = config(&cfg(url, "")).expect(url);
            assert_eq!(pg.get_ssl_mode(), SslMode::Disable, "{url}");
        }
    }

    #[test]
    fn a_ca_file_that_would_go_unused_or_cannot_be_read_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca_file(dir.path());
        let err = config(&cfg("postgres://u@db.example/d", &ca)).expect_err("no TLS asked");
        assert!(
            err.contains(CA_KNOB) && err.contains("sslmode=require"),
            "{err}"
        );

        let url = "postgres://u@db.example/d?sslmode=require";
        let missing = dir.path().join("missing.pem");
        let err = config(&cfg(url, &missing.to_string_lossy())).expect_err("missing file");
        assert!(
            err.contains(CA_KNOB) && err.contains("missing.pem"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let err = config(&cfg(url, &empty.to_string_lossy())).expect_err("no certificate");
        assert!(err.contains("no CERTIFICATE block"), "{err}");
    }

    #[test]
    fn sslrootcert_in_the_url_points_at_the_ca_knob() {
        let url = "postgres://u@db.example/d?sslmode=verify-full&sslrootcert=/etc/ca.pem";
        let err = config(&cfg(url, "")).expect_err("tokio-postgres has no sslrootcert");
        assert!(err.contains(CA_KNOB), "{err}");
    }
}
