//! The SPICE ticket: an RSA-1024 key pair per link, and the password
//! encrypted with RSA-OAEP (SHA-1, MGF1-SHA-1, no label).
//!
//! ```text
//! SpiceLinkReply.pub_key   162 bytes: DER SubjectPublicKeyInfo of an RSA-1024 key, e = 65537
//! SpiceLinkEncryptedTicket 128 bytes: RSA-OAEP(SHA-1) of the password and a NUL byte
//! ```
//!
//! (spice-protocol `protocol.h` `SPICE_TICKET_PUBKEY_BYTES`; spice-server
//! `reds.c` decrypts with `RSA_PKCS1_OAEP_PADDING`; spice-gtk
//! `spice-channel.c` encrypts the password including its terminating NUL.)
//!
//! Generating an RSA key takes milliseconds to tens of milliseconds, so a
//! [`KeyPool`] thread keeps a few fresh keys ready; each key is used for one
//! link only.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use thiserror::Error;

use crate::protocol::{SPICE_TICKET_BYTES, SPICE_TICKET_PUBKEY_BYTES};

/// Longest password spice-server accepts (`SPICE_MAX_PASSWORD_LENGTH`).
pub const SPICE_MAX_PASSWORD_LENGTH: usize = 60;

/// A ticket that could not be made or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The server's public key is not an RSA SubjectPublicKeyInfo.
    #[error("server public key is not a DER RSA SubjectPublicKeyInfo")]
    BadPublicKey,
    /// The ticket did not decrypt (wrong key, or not OAEP-SHA-1).
    #[error("ticket does not decrypt")]
    Undecryptable,
    /// The password is longer than spice-server accepts.
    #[error("password longer than {SPICE_MAX_PASSWORD_LENGTH} bytes")]
    PasswordTooLong,
    /// RSA failed.
    #[error("RSA: {0}")]
    Rsa(String),
}

/// A fresh RSA-1024 key pair and its 162-byte public key as the link reply
/// carries it.
pub struct LinkKey {
    private: RsaPrivateKey,
    public_der: [u8; SPICE_TICKET_PUBKEY_BYTES],
}

impl LinkKey {
    /// Generates a key (e = 65537).
    ///
    /// # Errors
    /// [`TicketError::Rsa`] if generation fails.
    pub fn generate() -> Result<Self, TicketError> {
        let mut rng = rand::thread_rng();
        loop {
            let private = RsaPrivateKey::new(&mut rng, 1024).map_err(|e| TicketError::Rsa(e.to_string()))?;
            let der = private.to_public_key().to_public_key_der().map_err(|e| TicketError::Rsa(e.to_string()))?;
            // A 1024-bit modulus always encodes to 162 bytes; check anyway.
            if let Ok(public_der) = <[u8; SPICE_TICKET_PUBKEY_BYTES]>::try_from(der.as_bytes()) {
                return Ok(Self { private, public_der });
            }
        }
    }

    /// The DER SubjectPublicKeyInfo for `SpiceLinkReply.pub_key`.
    pub fn public_der(&self) -> &[u8; SPICE_TICKET_PUBKEY_BYTES] {
        &self.public_der
    }

    /// Decrypts a client's 128-byte ticket and returns the password without
    /// its trailing NUL bytes.
    ///
    /// # Errors
    /// [`TicketError::Undecryptable`] for anything that does not decrypt.
    pub fn decrypt(&self, ticket: &[u8]) -> Result<Secret, TicketError> {
        if ticket.len() != SPICE_TICKET_BYTES {
            return Err(TicketError::Undecryptable);
        }
        let mut plain = self.private.decrypt(Oaep::new::<Sha1>(), ticket).map_err(|_| TicketError::Undecryptable)?;
        while plain.last() == Some(&0) {
            plain.pop();
        }
        Ok(Secret(plain))
    }
}

/// Encrypts `password` (plus its NUL) for a server whose link reply carried
/// `public_der`, as spice-gtk does.
///
/// # Errors
/// [`TicketError::BadPublicKey`], [`TicketError::PasswordTooLong`].
pub fn encrypt_ticket(public_der: &[u8], password: &[u8]) -> Result<Vec<u8>, TicketError> {
    if password.len() > SPICE_MAX_PASSWORD_LENGTH {
        return Err(TicketError::PasswordTooLong);
    }
    let key = RsaPublicKey::from_public_key_der(public_der).map_err(|_| TicketError::BadPublicKey)?;
    let mut plain = Vec::with_capacity(password.len() + 1);
    plain.extend_from_slice(password);
    plain.push(0);
    key.encrypt(&mut rand::thread_rng(), Oaep::new::<Sha1>(), &plain).map_err(|e| TicketError::Rsa(e.to_string()))
}

/// Bytes that must never be logged: a decrypted ticket. `Debug` prints
/// nothing of it.
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Keeps a few RSA keys generated ahead on a thread of its own.
pub struct KeyPool {
    ready: Mutex<Receiver<LinkKey>>,
}

impl KeyPool {
    /// Starts the generator thread with room for `ahead` keys.
    ///
    /// # Errors
    /// The error of spawning the thread.
    pub fn start(ahead: usize) -> std::io::Result<Self> {
        let (tx, rx): (SyncSender<LinkKey>, _) = sync_channel(ahead.max(1));
        std::thread::Builder::new().name("rsa-keys".into()).spawn(move || {
            while let Ok(key) = LinkKey::generate() {
                if tx.send(key).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { ready: Mutex::new(rx) })
    }

    /// Takes a fresh key, waiting for the generator if none is ready (on a
    /// blocking thread, so the runtime is not stalled).
    ///
    /// # Errors
    /// [`TicketError::Rsa`] when the generator has stopped.
    pub async fn take(self: &std::sync::Arc<Self>) -> Result<LinkKey, TicketError> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let rx = pool.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rx.recv().map_err(|_| TicketError::Rsa("key generator stopped".into()))
        })
        .await
        .map_err(|e| TicketError::Rsa(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_round_trips_and_strips_the_nul() {
        let key = LinkKey::generate().unwrap();
        assert_eq!(key.public_der()[..4], [0x30, 0x81, 0x9f, 0x30]);
        let ticket = encrypt_ticket(key.public_der(), b"s3cret").unwrap();
        assert_eq!(ticket.len(), 128);
        assert_eq!(key.decrypt(&ticket).unwrap().0, b"s3cret");
        let empty = encrypt_ticket(key.public_der(), b"").unwrap();
        assert!(key.decrypt(&empty).unwrap().0.is_empty());
    }

    #[test]
    fn garbage_tickets_and_keys_are_errors() {
        let key = LinkKey::generate().unwrap();
        assert!(matches!(key.decrypt(&[0u8; 128]), Err(TicketError::Undecryptable)));
        assert!(matches!(key.decrypt(&[0u8; 12]), Err(TicketError::Undecryptable)));
        assert!(matches!(encrypt_ticket(&[1, 2, 3], b"x"), Err(TicketError::BadPublicKey)));
        assert!(matches!(encrypt_ticket(key.public_der(), &[b'a'; 61]), Err(TicketError::PasswordTooLong)));
        assert_eq!(format!("{:?}", Secret(b"pw".to_vec())), "Secret(..)");
    }
}
