//! TLS to the database: which connections use it, and what they trust.
//!
//! The URL's `sslmode` decides, and the server is verified whenever TLS is on:
//!
//! | `sslmode` | TLS | the server's certificate must |
//! |---|---|---|
//! | `require`, `verify-full` | yes | chain to `MICRONODE_PG_CA_FILE` (or the system's roots) and name the host |
//! | `verify-ca` | yes | chain to `MICRONODE_PG_CA_FILE` (or the system's roots) |
//! | `prefer` (the default), `disable` | no | — |
//!
//! libpq's `require` checks nothing; here it is `verify-full`. tokio-postgres knows only
//! `disable`, `prefer` and `require`, so the URL is handed to it with `verify-*` spelled
//! `require`. `prefer` is plain TCP: trying TLS first would fail against a server whose
//! self-signed certificate nobody configured us to trust, where libpq would have connected.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
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
    let (url, verify_ca) = spell_verify_as_require(&cfg.url);
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        let hint = if url.contains("sslrootcert") {
            format!(" (give the CA file as {CA_KNOB} instead)")
        } else {
            String::new()
        };
        format!(
            "MICRONODE_PG_URL is not a PostgreSQL URL: {}{hint}",
            chain(&e)
        )
    })?;
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let mut client = if pg.get_ssl_mode() == SslMode::Require {
        let roots = roots(&cfg.ca_file)?;
        if verify_ca {
            let algs = provider().signature_verification_algorithms;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly {
                    roots: Arc::new(roots),
                    algs,
                }))
                .with_no_client_auth()
        } else {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    } else {
        if !cfg.ca_file.as_os_str().is_empty() {
            return Err(format!(
                "{CA_KNOB} is set but MICRONODE_PG_URL does not ask for TLS: \
                 add sslmode=verify-full to the URL"
            ));
        }
        pg.ssl_mode(SslMode::Disable);
        // Never used (TLS is off), but the connector's type is the same either way.
        builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    };
    // What libpq 17 sends; PostgreSQL 17 requires it for `sslnegotiation=direct`.
    client.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok((pg, PgTls(MakeRustlsConnect::new(client))))
}

/// `url` with an `sslmode` of `verify-full` or `verify-ca` spelled `require`, and whether it
/// was `verify-ca`. Only a parameter named `sslmode` is touched: after the start, `?`, `&` or
/// whitespace, in a URL (`?sslmode=verify-ca`) or a key=value string (`sslmode = 'verify-ca'`).
fn spell_verify_as_require(url: &str) -> (String, bool) {
    let mut out = String::with_capacity(url.len());
    let mut verify_ca = false;
    let mut rest = url;
    while let Some(at) = rest.find("sslmode") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c == '?' || c == '&' || c.is_whitespace());
        let after = &rest[at + "sslmode".len()..];
        let value = after.trim_start().strip_prefix('=').map(str::trim_start);
        let (quote, value) = match value {
            Some(v) => match v.strip_prefix('\'') {
                Some(v) => ("'", Some(v)),
                None => ("", Some(v)),
            },
            None => ("", None),
        };
        let mode = value.and_then(|v| {
            [
                "verify-full",
                "verify-ca",
                "verify%2Dfull",
                "verify%2Dca",
                "verify%2dfull",
                "verify%2dca",
            ]
            .into_iter()
            .find(|m| v.starts_with(m))
            .map(|m| (m, v))
        });
        match (boundary, mode) {
            (true, Some((m, v))) => {
                verify_ca |= m.ends_with("ca");
                out.push_str(&rest[..at]);
                out.push_str("sslmode=");
                out.push_str(quote);
                out.push_str("require");
                rest = &v[m.len()..];
            }
            _ => {
                out.push_str(&rest[..at + "sslmode".len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out, verify_ca)
}

/// ": cause: its cause: …" of a tokio-postgres error, whose own text names only its kind.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
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

/// `verify-ca`: the certificate must chain to a trusted root (validity dates, signatures, key
/// usage), but need not name the host — libpq's meaning, for providers whose certificates
/// name an instance, not the address clients dial. Handshake signatures are checked as usual.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
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
            err.contains(CA_KNOB) && err.contains("sslmode=verify-full"),
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
    fn only_the_sslmode_parameter_is_respelled() {
        let cases = [
            (
                "postgres://u@h/d?sslmode=verify-full",
                "postgres://u@h/d?sslmode=require",
                false,
            ),
            (
                "postgres://u@h/d?a=1&sslmode=verify-ca&b=2",
                "postgres://u@h/d?a=1&sslmode=require&b=2",
                true,
            ),
            (
                "postgres://u@h/d?sslmode=verify%2Dca",
                "postgres://u@h/d?sslmode=require",
                true,
            ),
            (
                "host=h sslmode = 'verify-full' user=u",
                "host=h sslmode='require' user=u",
                false,
            ),
            ("sslmode=verify-ca host=h", "sslmode=require host=h", true),
            // Not a parameter: a password, a value of another one.
            (
                "postgres://u:xsslmode=verify-ca@h/d",
                "postgres://u:xsslmode=verify-ca@h/d",
                false,
            ),
            (
                "postgres://u@h/d?application_name=sslmode=verify-ca",
                "postgres://u@h/d?application_name=sslmode=verify-ca",
                false,
            ),
            (
                "postgres://u@h/d?sslmode=require",
                "postgres://u@h/d?sslmode=require",
                false,
            ),
        ];
        for (url, want, ca) in cases {
            assert_eq!(spell_verify_as_require(url), (want.to_owned(), ca), "{url}");
        }
    }

    #[test]
    fn a_url_that_does_not_parse_says_why() {
        let err = config(&cfg("postgres://u@h/d?sslmode=allow", "")).expect_err("allow");
        assert!(err.contains("sslmode"), "{err}");
    }

    #[test]
    fn sslrootcert_in_the_url_points_at_the_ca_knob() {
        let url = "postgres://u@db.example/d?sslmode=verify-full&sslrootcert=/etc/ca.pem";
        let err = config(&cfg(url, "")).expect_err("tokio-postgres has no sslrootcert");
        assert!(err.contains(CA_KNOB), "{err}");
    }
}
