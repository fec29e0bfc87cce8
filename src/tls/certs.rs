//! The proxy's own TLS identity for the client-facing leg.
//!
//! Either the user's PEM files (`--cert`, `--key`), read with
//! `rustls-pki-types`' [`PemObject`], or a CA and a server certificate that
//! spicetap generates with `rcgen` into a certificate folder and reuses:
//!
//! ```text
//! <cert-dir>/ca-cert.pem      the CA a client trusts (remote-viewer --spice-ca-file)
//! <cert-dir>/ca-key.pem       its key (mode 0600)
//! <cert-dir>/server-cert.pem  the proxy's certificate, signed by the CA
//! <cert-dir>/server-key.pem   its key (mode 0600)
//! ```
//!
//! The server certificate carries a subject alternative name for every
//! `--cert-hostname` and every listen address; it is issued again (by the
//! same CA) when a name is missing, so clients keep trusting the same CA.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A failure loading or generating certificates.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A PEM file held no usable item of the expected kind.
    #[error("{path}: not a PEM {what}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// The parser's words.
        detail: String,
    },
    /// rcgen could not generate or sign.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Certificates and key the client-facing TLS leg presents.
#[derive(Debug)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The CA file clients should trust, when spicetap generated it.
    pub ca_path: Option<PathBuf>,
}

impl Identity {
    /// Reads a certificate chain and its key from PEM files.
    ///
    /// # Errors
    /// [`CertError::Io`] for a missing file, [`CertError::Pem`] for a file
    /// without a certificate or key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let read = |p: &Path| std::fs::read(p).map_err(|source| CertError::Io { path: p.to_path_buf(), source });
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<_, _>>().map_err(|e| CertError::Pem {
                path: cert.to_path_buf(),
                what: "certificate",
                detail: e.to_string(),
            })?;
        if chain.is_empty() {
            let detail = "no CERTIFICATE block".to_string();
            return Err(CertError::Pem { path: cert.to_path_buf(), what: "certificate", detail });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::Pem {
            path: key.to_path_buf(),
            what: "private key",
            detail: e.to_string(),
        })?;
        Ok(Self { chain, key, ca_path: None })
    }

    /// Loads the CA and server certificate from `dir`, generating what is
    /// missing: a CA on first use, and a server certificate whenever the
    /// existing one lacks a name of `hostnames` or `ips`.
    ///
    /// # Errors
    /// [`CertError`] when the folder cannot be written or the files are not
    /// valid PEM.
    pub fn generated_in(dir: &Path, hostnames: &[String], ips: &[IpAddr]) -> Result<Self, CertError> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.to_path_buf(), source })?;
        let ca_cert_path = dir.join("ca-cert.pem");
        let ca_key_path = dir.join("ca-key.pem");
        let cert_path = dir.join("server-cert.pem");
        let key_path = dir.join("server-key.pem");

        let (ca_cert, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
            let key = KeyPair::from_pem(&read_text(&ca_key_path)?)?;
            let params = CertificateParams::from_ca_cert_pem(&read_text(&ca_cert_path)?)?;
            // Re-signing the same parameters with the same key gives an issuer
            // equal to the stored CA for signing purposes (subject, key id).
            let cert = params.self_signed(&key)?;
            (cert, key)
        } else {
            tracing::info!(dir = %dir.display(), "generating a CA for the client-facing TLS leg");
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::OrganizationName, "spicetap");
            params.distinguished_name.push(DnType::CommonName, "spicetap CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
            params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
            let cert = params.self_signed(&key)?;
            write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
            write_file(&ca_cert_path, cert.pem().as_bytes(), false)?;
            let _ = std::fs::remove_file(&cert_path);
            (cert, key)
        };

        let mut wanted: BTreeSet<String> = hostnames.iter().cloned().collect();
        wanted.extend(ips.iter().filter(|ip| !ip.is_unspecified()).map(IpAddr::to_string));
        if wanted.is_empty() {
            wanted.insert("localhost".to_string());
        }
        let reusable = cert_path.exists()
            && key_path.exists()
            && names_of(
                &std::fs::read(&cert_path).map_err(|source| CertError::Io { path: cert_path.clone(), source })?,
            )
            .is_some_and(|have| wanted.is_subset(&have));
        if !reusable {
            tracing::info!(names = ?wanted, "issuing the proxy's server certificate");
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(wanted.iter().cloned().collect::<Vec<_>>())?;
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::OrganizationName, "spicetap");
            let cn = hostnames.first().cloned().unwrap_or_else(|| "spicetap".to_string());
            params.distinguished_name.push(DnType::CommonName, cn);
            params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
            params.not_after = OffsetDateTime::now_utc() + Duration::days(825);
            let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
            write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
            write_file(&cert_path, cert.pem().as_bytes(), false)?;
        }
        let mut identity = Self::from_pem_files(&cert_path, &key_path)?;
        identity.ca_path = Some(ca_cert_path);
        Ok(identity)
    }
}

/// DNS names and IP addresses in a PEM certificate's subject alternative
/// names, as text.
fn names_of(pem: &[u8]) -> Option<BTreeSet<String>> {
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut names = BTreeSet::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => {
                names.insert((*d).to_string());
            }
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                    _ => continue,
                };
                names.insert(ip.to_string());
            }
            _ => {}
        }
    }
    Some(names)
}

fn read_text(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io { path: path.to_path_buf(), source })
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| CertError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io_err)?;
    f.write_all(bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses_and_reissues_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = Identity::generated_in(dir.path(), &["proxy.example".into()], &[ip]).unwrap();
        let ca1 = std::fs::read(dir.path().join("ca-cert.pem")).unwrap();
        let b = Identity::generated_in(dir.path(), &["proxy.example".into()], &[ip]).unwrap();
        assert_eq!(a.chain, b.chain, "reused");
        let c = Identity::generated_in(dir.path(), &["other.example".into()], &[ip]).unwrap();
        assert_ne!(a.chain, c.chain, "reissued for a new name");
        assert_eq!(std::fs::read(dir.path().join("ca-cert.pem")).unwrap(), ca1, "same CA");
        let names = names_of(&std::fs::read(dir.path().join("server-cert.pem")).unwrap()).unwrap();
        assert!(names.contains("other.example") && names.contains("127.0.0.1"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("server-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "keys are private");
    }

    #[test]
    fn missing_and_malformed_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Identity::from_pem_files(&dir.path().join("nope.pem"), &dir.path().join("k.pem"));
        assert!(matches!(missing, Err(CertError::Io { .. })));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = Identity::from_pem_files(&junk, &junk).unwrap_err();
        assert!(e.to_string().contains("not a PEM certificate"), "{e}");
    }
}
