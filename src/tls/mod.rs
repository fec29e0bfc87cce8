//! TLS on both legs of a channel connection (rustls, ring provider).
//!
//! - [`certs`]: the proxy's identity for the client-facing leg (user PEM
//!   files, or a generated CA and server certificate).
//! - [`subject`]: spice-gtk's host-subject matching for the upstream leg.
//! - [`server_config`] / [`client_config`]: rustls configurations; the
//!   upstream verifier checks the chain against `--upstream-ca` and then the
//!   host name (default), the host subject, or nothing (`--upstream-insecure`,
//!   tests only), as spice-gtk does (spice-common `common/ssl_verify.c`).
//!
//! The relay, framing and capture see only the decrypted byte stream.

pub mod certs;
pub mod subject;

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use thiserror::Error;

use certs::Identity;
use subject::HostSubject;

/// A failure setting up TLS.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificates could not be loaded or generated.
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    /// rustls refused the configuration (e.g. a key that does not match
    /// the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A CA file held no usable certificate.
    #[error("{path}: no usable CA certificate ({detail})")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}

/// What one TLS leg negotiated, for logs and `session.json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version (`TLSv1_3`, ...).
    pub version: String,
    /// Cipher suite (`TLS13_AES_256_GCM_SHA384`, ...).
    pub cipher_suite: String,
    /// Subject of the peer's certificate, when it sent one.
    pub peer_subject: Option<String>,
}

impl TlsInfo {
    /// Reads the negotiated parameters of a finished handshake.
    pub fn of(conn: &rustls::CommonState) -> Self {
        Self {
            version: conn.protocol_version().map_or_else(|| "unknown".into(), |v| format!("{v:?}")),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "unknown".into(), |c| format!("{:?}", c.suite())),
            peer_subject: conn.peer_certificates().and_then(|c| c.first()).and_then(|c| subject::subject_text(c)),
        }
    }
}

/// The *ring* provider. rustls 0.23.48 deprecates it because it lacks
/// post-quantum key exchange; aws-lc-rs has it but needs a C toolchain and
/// CMake to build, and SPICE's peers (spice-gtk and spice-server, both on
/// OpenSSL) offer the classical groups *ring* has (X25519, P-256, P-384).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client-facing TLS configuration for `identity`.
///
/// # Errors
/// [`TlsError::Config`] when the key does not match the certificate or is
/// not usable.
pub fn server_config(identity: Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    Ok(Arc::new(config))
}

/// How the upstream server's certificate is checked after its chain.
#[derive(Debug, Clone)]
pub enum UpstreamVerify {
    /// The certificate must name the host spicetap connects to (spice-gtk's
    /// default).
    Hostname,
    /// The certificate's subject must equal this one (`--upstream-host-subject`).
    Subject(HostSubject),
    /// Nothing is checked (`--upstream-insecure`, tests only).
    Insecure,
}

/// Reads every certificate of a PEM file into a root store.
///
/// # Errors
/// [`TlsError::Ca`] when the file is unreadable or holds no certificate.
pub fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let ca_err = |detail: String| TlsError::Ca { path: path.display().to_string(), detail };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// Reads every certificate of PEM text into a root store (`name` only
/// names it in errors).
///
/// # Errors
/// [`TlsError::Ca`] when the text holds no usable certificate.
pub fn root_store_pem(pem: &str, name: &str) -> Result<RootCertStore, TlsError> {
    let ca_err = |detail: String| TlsError::Ca { path: name.to_string(), detail };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// The upstream TLS configuration: trust `ca` (or the system bundle
/// `/etc/ssl/certs/ca-certificates.crt` without one) and check as `verify`
/// says.
///
/// # Errors
/// [`TlsError`] when the CA file is unusable.
pub fn client_config(ca: Option<&Path>, verify: UpstreamVerify) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = ca.unwrap_or_else(|| Path::new("/etc/ssl/certs/ca-certificates.crt"));
    client_config_with(verify, || Ok((root_store(ca)?, ca.display().to_string())))
}

/// As [`client_config`], the CA given as PEM text (a target of the fleet
/// database); the system bundle without one.
///
/// # Errors
/// [`TlsError`] when the CA is unusable.
pub fn client_config_pem(ca_pem: Option<&str>, verify: UpstreamVerify) -> Result<Arc<ClientConfig>, TlsError> {
    match ca_pem {
        None => client_config(None, verify),
        Some(pem) => client_config_with(verify, || Ok((root_store_pem(pem, "target CA")?, "target CA".into()))),
    }
}

fn client_config_with(
    verify: UpstreamVerify,
    roots: impl FnOnce() -> Result<(RootCertStore, String), TlsError>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        UpstreamVerify::Insecure => Arc::new(AcceptAny { algorithms }),
        verify => {
            let (roots, name) = roots()?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Ca { path: name, detail: e.to_string() })?;
            match verify {
                UpstreamVerify::Subject(subject) => Arc::new(SubjectVerifier { webpki, subject }),
                _ => webpki,
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Chain checked by webpki, then the subject instead of the host name.
#[derive(Debug)]
struct SubjectVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    subject: HostSubject,
}

impl ServerCertVerifier for SubjectVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if self.subject.matches(end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            let found = subject::subject_text(end_entity).unwrap_or_default();
            Err(rustls::Error::General(format!("certificate subject {found:?} does not match --upstream-host-subject")))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts any certificate; still checks handshake signatures.
#[derive(Debug)]
struct AcceptAny {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
