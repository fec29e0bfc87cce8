//! Secrets at rest in the fleet database: tokens as keyed hashes, VM
//! passwords sealed.
//!
//! - A token is stored only as HMAC-SHA-256(token key, token) (RFC 2104):
//!   32 bytes. A node hashes the ticket a client sent and looks the hash
//!   up; the database alone never reveals a token, and without the key a
//!   guessed token cannot be checked against it.
//! - A VM password is stored as AES-256-GCM (NIST SP 800-38D) under the
//!   password key: `nonce (12 bytes) || ciphertext || tag (16 bytes)`, the
//!   target's name as associated data, so a sealed password moved to
//!   another target's row does not open.
//!
//! Each key is a file of 64 hexadecimal digits (32 bytes) and a newline,
//! written by `spicetap db keygen` with mode 0600, given to every node and
//! never stored in the database or logged. A key file others may read is
//! warned about.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use thiserror::Error;

/// Bytes of the GCM nonce at the front of a sealed password.
const NONCE_BYTES: usize = 12;
/// Bytes of the GCM tag at the end of a sealed password.
const TAG_BYTES: usize = 16;

/// A key file that cannot be used, or a sealed value that does not open.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hexadecimal digits.
    #[error("key file {path}: not 64 hexadecimal digits (32 bytes)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// `keygen` refuses to replace a key: tokens and passwords made with it
    /// would stop working.
    #[error("key file {path} exists; not replaced")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A sealed password is shorter than a nonce and a tag, or its tag does
    /// not verify (another key, another target, or altered).
    #[error("sealed password does not open with this key for this target")]
    Unseal,
}

/// A 32-byte key read from a key file. Its `Debug` output hides it.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Reads a key file (64 hexadecimal digits, surrounding whitespace
    /// ignored) and warns when its mode lets group or others read it.
    ///
    /// # Errors
    /// [`SecretsError::Io`] or [`SecretsError::Format`].
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let io = |source| SecretsError::Io { path: path.into(), source };
        let text = std::fs::read_to_string(path).map_err(io)?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "key file may be read by others (chmod 600)");
            }
        }
        let hex = text.trim().as_bytes();
        if hex.len() != 64 {
            return Err(SecretsError::Format { path: path.into() });
        }
        let mut key = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digit = |c: u8| char::from(c).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                // Two hex digits: at most 255.
                (Some(h), Some(l)) => key[i] = (h * 16 + l) as u8,
                _ => return Err(SecretsError::Format { path: path.into() }),
            }
        }
        Ok(Self(key))
    }

    /// Writes a fresh random key to `path` with mode 0600; never replaces
    /// an existing file.
    ///
    /// # Errors
    /// [`SecretsError::Exists`] or [`SecretsError::Io`].
    pub fn generate(path: &Path) -> Result<(), SecretsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    SecretsError::Exists { path: path.into() }
                } else {
                    SecretsError::Io { path: path.into(), source }
                }
            })?;
        writeln!(file, "{}", hex(&key)).map_err(|source| SecretsError::Io { path: path.into(), source })
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// The two keys of a fleet: for token hashes and for VM passwords.
#[derive(Debug, Clone)]
pub struct Keys {
    /// HMAC-SHA-256 key of token hashes.
    pub token: Key,
    /// AES-256-GCM key of VM passwords.
    pub password: Key,
}

impl Keys {
    /// HMAC-SHA-256(token key, `token`): what the `tokens` table holds.
    pub fn token_hash(&self, token: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.token.0).unwrap_or_else(|_| unreachable!());
        mac.update(token);
        mac.finalize().into_bytes().into()
    }

    /// Seals `password` for target `name`: nonce || ciphertext || tag.
    pub fn seal(&self, name: &str, password: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new((&self.password.0).into());
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: password, aad: name.as_bytes() })
            // AES-GCM fails only past 2^36 bytes; a password is <= 60.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a password sealed by [`Keys::seal`] for target `name`.
    ///
    /// # Errors
    /// [`SecretsError::Unseal`] for a short value, another key or target,
    /// or altered bytes.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return Err(SecretsError::Unseal);
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        Aes256Gcm::new((&self.password.0).into())
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: name.as_bytes() })
            .map_err(|_| SecretsError::Unseal)
    }
}

/// A fresh token: 32 lowercase hexadecimal digits (128 random bits), short
/// enough for a SPICE password (at most 60 bytes) and typeable.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys { token: Key::from_bytes([1; 32]), password: Key::from_bytes([2; 32]) }
    }

    #[test]
    fn token_hash_is_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        // HMAC pads a short key with zeros to the block size: the same key.
        let keys = Keys { token: Key::from_bytes(k), password: Key::from_bytes([0; 32]) };
        assert_eq!(
            hex(&keys.token_hash(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(keys.token_hash(b"a"), keys.token_hash(b"b"));
    }

    #[test]
    fn sealed_passwords_open_only_for_their_target_and_key() {
        let k = keys();
        let sealed = k.seal("vm1", b"secret-pw");
        assert_eq!(sealed.len(), NONCE_BYTES + 9 + TAG_BYTES);
        assert!(!sealed.windows(9).any(|w| w == b"secret-pw"));
        assert_eq!(k.open("vm1", &sealed).unwrap(), b"secret-pw");
        assert!(matches!(k.open("vm2", &sealed), Err(SecretsError::Unseal)));
        let other = Keys { password: Key::from_bytes([3; 32]), ..keys() };
        assert!(other.open("vm1", &sealed).is_err());
        let mut altered = sealed.clone();
        altered[NONCE_BYTES] ^= 1;
        assert!(k.open("vm1", &altered).is_err());
        assert!(k.open("vm1", &sealed[..NONCE_BYTES + TAG_BYTES - 1]).is_err());
        assert!(k.open("vm1", &[]).is_err());
        assert_ne!(k.seal("vm1", b"x"), k.seal("vm1", b"x"), "fresh nonce per seal");
    }

    #[test]
    fn key_files_round_trip_and_refuse_bad_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token.key");
        Key::generate(&p).unwrap();
        assert!(matches!(Key::generate(&p), Err(SecretsError::Exists { .. })));
        let k = Key::load(&p).unwrap();
        assert_eq!(format!("{k:?}"), "Key(..)");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(66)] {
            std::fs::write(dir.path().join("bad"), bad).unwrap();
            assert!(matches!(Key::load(&dir.path().join("bad")), Err(SecretsError::Format { .. })), "{bad:?}");
        }
        assert!(matches!(Key::load(&dir.path().join("none")), Err(SecretsError::Io { .. })));
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
