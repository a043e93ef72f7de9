//! TLS on the listener (docs/SECURITY.md): rustls with the aws-lc-rs provider, the
//! post-quantum modes, mutual TLS, and certificate reload.
//!
//! [`Tls`] holds the files' paths and the current `rustls::ServerConfig`; [`TlsTransport`] is
//! the `server::Transport` whose handshake runs in each connection's own task (so under the
//! header read timeout and holding a slot of the connection budget). A reload builds a whole
//! new `ServerConfig` from the files and swaps it in only when every file was good: new
//! handshakes use it, connections already open keep the one they started with.
//!
//! The crypto provider is always passed explicitly (`builder_with_provider`), never taken
//! from a process-wide default, and its key-exchange groups are the mode's:
//!
//! | mode | groups (the client's order decides among them) | versions |
//! |---|---|---|
//! | `off` | X25519, secp256r1, secp384r1 | TLS 1.3, 1.2 |
//! | `preferred` | X25519MLKEM768, X25519, secp256r1, secp384r1 | TLS 1.3, 1.2 |
//! | `required` | X25519MLKEM768 | TLS 1.3 |

mod x509;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self as provider, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{NamedGroup, ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{PqMode, TlsCfg};
use crate::metrics::{Metrics, TlsGroup, TlsVersion};
use crate::server::Transport;
use crate::wire::{ClientIdentity, ConnInfo, TlsInfo};

/// ALPN protocols offered, in our order of preference: HTTP/2 over TLS is chosen by ALPN.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the TLS files could not be turned into a server configuration. Names the knob and
/// the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{knob} {path}: {cause}")]
    File {
        knob: &'static str,
        path: String,
        cause: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(knob: &'static str, path: &Path, cause: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        knob,
        path: path.display().to_string(),
        cause: cause.to_string(),
    }
}

const CERT_KNOB: &str = "tls.cert (MICRONODE_TLS_CERT)";
const KEY_KNOB: &str = "tls.key (MICRONODE_TLS_KEY)";
const CA_KNOB: &str = "tls.client_ca (MICRONODE_TLS_CLIENT_CA)";

/// The TLS state of one listener: where the files are, and the configuration in force.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    pq: PqMode,
    metrics: Arc<Metrics>,
    /// Read once per handshake (an uncontended read lock and an `Arc` clone); written only
    /// by a reload.
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the files named by `cfg` (which must have TLS on) and sets the certificate
    /// expiry gauge. Any bad file is an error naming its knob and path.
    pub fn load(cfg: &TlsCfg, metrics: Arc<Metrics>) -> Result<Arc<Tls>, TlsError> {
        let client_ca = (!cfg.client_ca.as_os_str().is_empty()).then(|| cfg.client_ca.clone());
        let (config, not_after) = build(&cfg.cert, &cfg.key, client_ca.as_deref(), cfg.pq)?;
        metrics.set_tls_cert_not_after(not_after);
        Ok(Arc::new(Tls {
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            client_ca,
            pq: cfg.pq,
            metrics,
            current: RwLock::new(config),
        }))
    }

    /// Re-reads certificate, key and client CA. On success new handshakes use them; on any
    /// error nothing changes. Blocking file IO: call it off the runtime's workers.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (config, not_after) = build(&self.cert, &self.key, self.client_ca.as_deref(), self.pq)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        self.metrics.set_tls_cert_not_after(not_after);
        Ok(())
    }

    /// The configuration new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The transport that serves a listener with this state.
    pub fn transport(self: &Arc<Self>) -> TlsTransport {
        TlsTransport(Arc::clone(self))
    }
}

/// The aws-lc-rs provider with the mode's key-exchange groups.
fn provider_for(pq: PqMode) -> CryptoProvider {
    let mut p = provider::default_provider();
    p.kx_groups = match pq {
        PqMode::Off => vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        PqMode::Preferred => vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ],
        PqMode::Required => vec![kx_group::X25519MLKEM768],
    };
    p
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS13_AND_12: [&SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions_for(pq: PqMode) -> &'static [&'static SupportedProtocolVersion] {
    match pq {
        // The hybrid exists only in TLS 1.3.
        PqMode::Required => &TLS13_ONLY,
        PqMode::Off | PqMode::Preferred => &TLS13_AND_12,
    }
}

/// Reads the files and builds a server configuration; returns it with the leaf
/// certificate's notAfter (Unix seconds).
fn build(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    pq: PqMode,
) -> Result<(Arc<ServerConfig>, i64), TlsError> {
    let chain = read_certs(CERT_KNOB, cert)?;
    let leaf = chain.first().expect("read_certs refuses an empty file");
    let not_after = x509::not_after_unix(leaf)
        .ok_or_else(|| file_error(CERT_KNOB, cert, "unreadable leaf certificate"))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(KEY_KNOB, key, e))?;

    let provider = Arc::new(provider_for(pq));
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions_for(pq))
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(CA_KNOB, ca)? {
                roots.add(c).map_err(|e| file_error(CA_KNOB, ca, e))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| file_error(CA_KNOB, ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Also checks that the key is the certificate's.
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| file_error(KEY_KNOB, key, e))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), not_after))
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn read_certs(knob: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(knob, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(knob, path, e))?;
    if certs.is_empty() {
        return Err(file_error(knob, path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// TLS over an accepted TCP connection.
#[derive(Debug, Clone)]
pub struct TlsTransport(Arc<Tls>);

impl Transport for TlsTransport {
    type Io = TlsStream<TcpStream>;

    fn handshake(
        &self,
        tcp: TcpStream,
        conn: &mut ConnInfo,
    ) -> impl Future<Output = std::io::Result<Self::Io>> + Send {
        let acceptor = TlsAcceptor::from(self.0.server_config());
        async move {
            // Counts the handshake as failed unless it completes: also when the server drops
            // it at the header timeout or on shutdown.
            let mut outcome = Unfinished(Some(&self.0.metrics));
            let stream = acceptor.accept(tcp).await?;
            outcome.0 = None;
            let (_, session) = stream.get_ref();
            let version = match session.protocol_version() {
                Some(ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
                Some(ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
                _ => TlsVersion::None,
            };
            let group = match session.negotiated_key_exchange_group().map(|g| g.name()) {
                Some(NamedGroup::X25519MLKEM768) => TlsGroup::X25519Mlkem768,
                Some(NamedGroup::X25519) => TlsGroup::X25519,
                Some(NamedGroup::secp256r1) => TlsGroup::Secp256r1,
                Some(NamedGroup::secp384r1) => TlsGroup::Secp384r1,
                _ => TlsGroup::None,
            };
            self.0.metrics.tls_handshake(true, version, group);
            let client = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::new(identity(leaf)));
            tracing::debug!(
                peer = %conn.peer,
                version = version.label(),
                group = group.label(),
                alpn = session.alpn_protocol().map(String::from_utf8_lossy).as_deref(),
                client = client.as_ref().map(|c| c.subject.as_str()),
                "tls handshake"
            );
            conn.tls = Some(TlsInfo {
                version: version.label(),
                group: group.label(),
                client,
            });
            Ok(stream)
        }
    }
}

/// Counts a failed handshake when dropped while still armed.
struct Unfinished<'a>(Option<&'a Metrics>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            m.tls_handshake(false, TlsVersion::None, TlsGroup::None);
        }
    }
}

/// The identity a verified client certificate carries.
fn identity(leaf: &CertificateDer<'_>) -> ClientIdentity {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    let sha256 = digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        });
    ClientIdentity {
        subject: x509::subject(leaf).unwrap_or_default(),
        sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each mode offers exactly its groups and versions.
    #[test]
    fn modes_offer_their_groups_and_versions() {
        let names = |pq| -> Vec<NamedGroup> {
            provider_for(pq)
                .kx_groups
                .iter()
                .map(|g| g.name())
                .collect()
        };
        assert_eq!(
            names(PqMode::Off),
            [
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
        assert_eq!(names(PqMode::Preferred)[0], NamedGroup::X25519MLKEM768);
        assert_eq!(names(PqMode::Preferred).len(), 4);
        assert_eq!(names(PqMode::Required), [NamedGroup::X25519MLKEM768]);
        assert_eq!(versions_for(PqMode::Required).len(), 1);
        assert_eq!(
            versions_for(PqMode::Required)[0].version,
            ProtocolVersion::TLSv1_3
        );
    }

    /// A missing or empty file is an error naming the knob and the path.
    #[test]
    fn bad_files_name_their_knob() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let missing = dir.path().join("missing.pem");
        let err = build(&missing, &empty, None, PqMode::Preferred).expect_err("missing");
        assert!(err.to_string().contains("MICRONODE_TLS_CERT"), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = build(&empty, &empty, None, PqMode::Preferred).expect_err("empty");
        assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
    }

    /// The client identity is the subject and the SHA-256 of the DER.
    #[test]
    fn client_identity_has_subject_and_fingerprint() {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc-a");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("sign");
        let id = identity(cert.der());
        assert_eq!(id.subject, "CN=svc-a");
        assert_eq!(id.sha256.len(), 64);
        assert!(id.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
