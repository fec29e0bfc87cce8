//! spice-gtk's certificate subject matching (`--spice-host-subject`).
//!
//! A host subject is written `C=XX,O=Example,CN=h1`: comma-separated
//! `key=value` pairs, `\,` and `\\` escape a comma or a backslash, spaces
//! before a key are skipped, and neither key nor value may be empty. A
//! certificate matches when its subject has the same number of entries and
//! equals the given name entry by entry, in order, compared the way OpenSSL's
//! `X509_NAME_cmp` compares canonical names: attribute types by OID, string
//! values with surrounding whitespace removed, inner whitespace runs
//! collapsed to one space and ASCII case folded (spice-common
//! `common/ssl_verify.c` `subject_to_x509_name`, `verify_subject`).

use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A host subject that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// A backslash followed by something other than `\` or `,`.
    #[error("invalid escape in subject {0:?}")]
    BadEscape(String),
    /// A pair without `=`, or with an empty key or value.
    #[error("subject {0:?} must be KEY=VALUE pairs separated by commas")]
    BadPair(String),
    /// An attribute name spicetap does not know.
    #[error("unknown attribute {0:?} in subject (known: C, ST, L, O, OU, CN, DC, emailAddress)")]
    UnknownAttribute(String),
}

/// A parsed host subject: (attribute OID as dotted text, value) in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSubject {
    entries: Vec<(String, String)>,
}

/// Short names OpenSSL accepts in `X509_NAME_add_entry_by_txt`, for the
/// attributes certificates use in practice.
fn attribute_oid(key: &str) -> Option<&'static str> {
    Some(match key {
        "C" | "countryName" => "2.5.4.6",
        "ST" | "stateOrProvinceName" => "2.5.4.8",
        "L" | "localityName" => "2.5.4.7",
        "O" | "organizationName" => "2.5.4.10",
        "OU" | "organizationalUnitName" => "2.5.4.11",
        "CN" | "commonName" => "2.5.4.3",
        "DC" | "domainComponent" => "0.9.2342.19200300.100.1.25",
        "emailAddress" => "1.2.840.113549.1.9.1",
        "serialNumber" => "2.5.4.5",
        "street" => "2.5.4.9",
        "title" => "2.5.4.12",
        "GN" | "givenName" => "2.5.4.42",
        "SN" | "surname" => "2.5.4.4",
        _ => return None,
    })
}

/// OpenSSL's canonical form of a string value, for comparison.
fn canonical(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase()
}

impl HostSubject {
    /// Parses `C=XX,O=Example,CN=h1`.
    ///
    /// # Errors
    /// [`SubjectError`] for bad escapes, empty keys or values, missing `=`,
    /// and unknown attribute names.
    pub fn parse(text: &str) -> Result<Self, SubjectError> {
        let mut entries = Vec::new();
        let (mut key, mut value) = (String::new(), String::new());
        let mut in_value = false;
        let mut chars = text.chars();
        loop {
            let (c, escaped) = match chars.next() {
                Some('\\') => match chars.next() {
                    Some(e @ ('\\' | ',')) => (Some(e), true),
                    _ => return Err(SubjectError::BadEscape(text.to_string())),
                },
                other => (other, false),
            };
            let end_of_pair = c.is_none() || (c == Some(',') && !escaped);
            if !in_value {
                match c {
                    None if key.is_empty() => break,
                    Some(' ') if key.is_empty() && !escaped => {}
                    Some('=') if !escaped => in_value = true,
                    _ if end_of_pair => return Err(SubjectError::BadPair(text.to_string())),
                    Some(ch) => key.push(ch),
                    None => return Err(SubjectError::BadPair(text.to_string())),
                }
                continue;
            }
            if end_of_pair {
                if value.is_empty() {
                    return Err(SubjectError::BadPair(text.to_string()));
                }
                let oid = attribute_oid(&key).ok_or_else(|| SubjectError::UnknownAttribute(key.clone()))?;
                entries.push((oid.to_string(), canonical(&value)));
                key.clear();
                value.clear();
                in_value = false;
                if c.is_none() {
                    break;
                }
            } else if let Some(ch) = c {
                value.push(ch);
            }
        }
        if entries.is_empty() {
            return Err(SubjectError::BadPair(text.to_string()));
        }
        Ok(Self { entries })
    }

    /// Whether the certificate (DER) has exactly this subject.
    pub fn matches(&self, cert_der: &[u8]) -> bool {
        let Ok((_, cert)) = X509Certificate::from_der(cert_der) else { return false };
        let mut theirs = Vec::new();
        for attr in cert.subject().iter_attributes() {
            let Ok(value) = attr.as_str() else { return false };
            theirs.push((attr.attr_type().to_id_string(), canonical(value)));
        }
        theirs == self.entries
    }
}

/// The subject of a certificate (DER) as OpenSSL-style text (`CN=..., O=...`),
/// for logs and `session.json`.
pub fn subject_text(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    Some(cert.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_escapes_and_spaces() {
        let s = HostSubject::parse("C=XX, O=Ex\\,ample,CN=h1").unwrap();
        assert_eq!(
            s.entries,
            [
                ("2.5.4.6".to_string(), "xx".to_string()),
                ("2.5.4.10".to_string(), "ex,ample".to_string()),
                ("2.5.4.3".to_string(), "h1".to_string()),
            ]
        );
    }

    #[test]
    fn refuses_malformed_subjects() {
        for bad in ["", "CN", "CN=", "=x", "CN=a,,O=b", "CN=a\\x", "XX=1", ",CN=a"] {
            assert!(HostSubject::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matches_a_certificate_subject_in_order() {
        let mut params = rcgen::CertificateParams::new(vec!["h1".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CountryName, "XX");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example  Org");
        params.distinguished_name.push(rcgen::DnType::CommonName, "h1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        assert!(HostSubject::parse("C=XX,O=example org,CN=h1").unwrap().matches(&der));
        assert!(!HostSubject::parse("O=Example Org,C=XX,CN=h1").unwrap().matches(&der), "order matters");
        assert!(!HostSubject::parse("C=XX,CN=h1").unwrap().matches(&der), "entry count matters");
        assert!(!HostSubject::parse("C=XX,O=Example Org,CN=h2").unwrap().matches(&der));
        assert_eq!(subject_text(&der).unwrap(), "C=XX, O=Example  Org, CN=h1");
    }
}
