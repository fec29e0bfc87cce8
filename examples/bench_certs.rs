//! `bench_certs` — throwaway TLS certificates for `scripts/bench`.
//!
//! ```text
//! cargo run --release --example bench_certs -- DIR
//! ```
//!
//! Writes into DIR (created if missing):
//!
//! * `ca.pem` — a self-signed CA certificate (X.509 v3, basicConstraints
//!   CA:TRUE, keyCertSign), the trust anchor clients and relays verify with;
//! * `server-cert.pem`, `server-key.pem` — a server certificate issued by that
//!   CA for `127.0.0.1` (subjectAltName IP:127.0.0.1, also CN=127.0.0.1 for
//!   verifiers that only look at the CN) and its PKCS#8 private key;
//! * `combined.pem` — server certificate, CA certificate and key in one file
//!   (haproxy's `bind ... ssl crt FILE`).
//!
//! All keys are ECDSA P-256 (rcgen's default). Nothing here is secret: the
//! files are generated per benchmark run and deleted with it.

use std::path::PathBuf;
use std::process::ExitCode;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = match (args.next(), args.next()) {
        (Some(d), None) => PathBuf::from(d),
        _ => return Err("usage: bench_certs DIR".into()),
    };
    std::fs::create_dir_all(&dir)?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "spicetap bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    // An IP string becomes an IP SAN (rcgen parses it).
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &ca_cert, &ca_key)?;

    let (ca_pem, cert_pem, key_pem) = (ca_cert.pem(), cert.pem(), key.serialize_pem());
    std::fs::write(dir.join("ca.pem"), &ca_pem)?;
    std::fs::write(dir.join("server-cert.pem"), &cert_pem)?;
    std::fs::write(dir.join("server-key.pem"), &key_pem)?;
    std::fs::write(dir.join("combined.pem"), format!("{cert_pem}{ca_pem}{key_pem}"))?;
    println!("{}", dir.display());
    Ok(())
}
