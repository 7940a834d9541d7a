//! Field encryption, blind indexes and client-secret hashing.
//!
//! Field keys are derived from `security.encryption_key` with HKDF-SHA256. Every ciphertext starts
//! with a version byte and the 4-byte id of the key that sealed it, so older keys listed in
//! `security.previous_encryption_keys` keep decrypting after a rotation while new values use the
//! active key. The column name is bound in as associated data, so a value cannot be moved to
//! another column and still decrypt. Blind indexes (HMAC-SHA256) come from their own key, which
//! stays fixed across rotations (`security.blind_index_key`, defaulting to the encryption key).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const SALT: &[u8] = b"kyc-service/field-keys/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext is too short or has an unknown version")]
    Malformed,
    #[error("no configured key has id {0}")]
    UnknownKey(String),
    #[error("ciphertext failed authentication")]
    Tampered,
}

struct FieldKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl FieldKey {
    fn derive(secret: &SecretString) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret.expose_secret().as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"aes-256-gcm field encryption", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        let mut id = [0u8; KEY_ID_LEN];
        hk.expand(b"field key id", &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 length");
        let cipher = Aes256Gcm::new_from_slice(&key).expect("AES-256 takes a 32-byte key");
        Self { id, cipher }
    }
}

/// The service's field keys: one active key that seals, older ones that only open.
pub struct KeyRing {
    active: FieldKey,
    previous: Vec<FieldKey>,
    blind: [u8; 32],
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("active_key_id", &self.active_key_id())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    #[must_use]
    pub fn new(
        active: &SecretString,
        previous: &[SecretString],
        blind_index: Option<&SecretString>,
    ) -> Self {
        let hk = Hkdf::<Sha256>::new(
            Some(SALT),
            blind_index.unwrap_or(active).expose_secret().as_bytes(),
        );
        let mut blind = [0u8; 32];
        hk.expand(b"hmac-sha256 blind index", &mut blind)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Self {
            active: FieldKey::derive(active),
            previous: previous.iter().map(FieldKey::derive).collect(),
            blind,
        }
    }

    #[must_use]
    pub fn active_key_id(&self) -> String {
        hex::encode(self.active.id)
    }

    /// Seals `plaintext` for the column `field`, bound to its row: `field` should name both
    /// (for example `kyc_requests.name_enc:<id>`), so a value moved to another column or row no
    /// longer opens.
    #[must_use]
    pub fn encrypt(&self, field: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .active
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: field.as_bytes(),
                },
            )
            .expect("AES-GCM encryption cannot fail for inputs under 64 GiB");
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&self.active.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed by the active key or any previous key.
    ///
    /// # Errors
    /// When the value is malformed, names a key that is not configured, or fails authentication.
    pub fn decrypt(&self, field: &str, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < HEADER_LEN + 16 || blob[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let id = &blob[1..=KEY_ID_LEN];
        let key = std::iter::once(&self.active)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(hex::encode(id)))?;
        key.cipher
            .decrypt(
                &Nonce::from(
                    <[u8; NONCE_LEN]>::try_from(&blob[1 + KEY_ID_LEN..HEADER_LEN])
                        .map_err(|_| CryptoError::Malformed)?,
                ),
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Tampered)
    }

    /// A keyed, deterministic index of a normalised value, for equality look-ups.
    #[must_use]
    pub fn blind_index(&self, field: &str, normalised: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.blind).expect("HMAC takes any key length");
        mac.update(field.as_bytes());
        mac.update(&[0]);
        mac.update(normalised.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// SHA-256, for values that are secret but high-entropy (refresh tokens), where a slow hash buys nothing.
#[must_use]
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Hashes a client secret with argon2id and a random salt, as a PHC string.
///
/// # Errors
/// Only if argon2 rejects its own default parameters.
pub fn hash_secret(secret: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)?
        .to_string())
}

/// Checks a client secret against its PHC string. A malformed hash never verifies.
#[must_use]
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// A PHC string for a secret nobody knows: verifying against it costs what a real check costs, so an
/// unknown client id takes as long to refuse as a wrong secret.
pub static DUMMY_SECRET_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut random = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut random);
    hash_secret(&hex::encode(random)).expect("argon2 default parameters are valid")
});

/// A random token of `bytes` bytes, hex-encoded.
#[must_use]
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn a_value_round_trips_and_the_ciphertext_hides_it() {
        let ring = KeyRing::new(&key("your-encryption-key-here-32-bytes"), &[], None);
        let blob = ring.encrypt("kyc_requests.name_enc", "张三".as_bytes());
        assert!(!blob.windows(6).any(|w| w == "张三".as_bytes()));
        assert_eq!(
            ring.decrypt("kyc_requests.name_enc", &blob).expect("opens"),
            "张三".as_bytes()
        );
        assert_ne!(
            blob,
            ring.encrypt("kyc_requests.name_enc", "张三".as_bytes()),
            "nonces differ"
        );
    }

    #[test]
    fn a_value_moved_to_another_column_does_not_open() {
        let ring = KeyRing::new(&key("k".repeat(32).as_str()), &[], None);
        let blob = ring.encrypt("kyc_requests.name_enc", b"x");
        assert_eq!(
            ring.decrypt("kyc_requests.phone_enc", &blob),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn rotated_keys_still_open_old_values_and_new_values_use_the_new_key() {
        let old = KeyRing::new(&key(&"a".repeat(32)), &[], None);
        let blob = old.encrypt("f", b"13800138000");
        let new = KeyRing::new(&key(&"b".repeat(32)), &[key(&"a".repeat(32))], None);
        assert_eq!(
            new.decrypt("f", &blob).expect("old key still opens"),
            b"13800138000"
        );
        let fresh = new.encrypt("f", b"13800138000");
        assert_eq!(
            &fresh[1..5],
            hex::decode(new.active_key_id()).expect("hex").as_slice()
        );
        assert_ne!(new.active_key_id(), old.active_key_id());
        let forgotten = KeyRing::new(&key(&"c".repeat(32)), &[], None);
        assert!(matches!(
            forgotten.decrypt("f", &blob),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let ring = KeyRing::new(&key(&"a".repeat(32)), &[], None);
        let mut blob = ring.encrypt("f", b"secret");
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert_eq!(ring.decrypt("f", &blob), Err(CryptoError::Tampered));
        assert_eq!(ring.decrypt("f", &blob[..10]), Err(CryptoError::Malformed));
    }

    #[test]
    fn the_blind_index_is_stable_across_rotation_when_pinned() {
        let pin = key(&"p".repeat(32));
        let a = KeyRing::new(&key(&"a".repeat(32)), &[], Some(&pin));
        let b = KeyRing::new(&key(&"b".repeat(32)), &[], Some(&pin));
        assert_eq!(
            a.blind_index("id", "11010519491231002X"),
            b.blind_index("id", "11010519491231002X")
        );
        assert_ne!(
            a.blind_index("id", "11010519491231002X"),
            a.blind_index("phone", "11010519491231002X")
        );
    }

    #[test]
    fn secrets_verify_only_with_the_right_value() {
        let phc = hash_secret("kyc-client-secret").expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_secret("kyc-client-secret", &phc));
        assert!(!verify_secret("kyc-client-secret2", &phc));
        assert!(!verify_secret("anything", "not a phc string"));
    }
}
