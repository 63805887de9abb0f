//! The thin wrappers over the primitives. Every higher-level function in this crate reaches
//! X25519, HKDF-SHA256, AES-256-GCM, Ed25519 verification and the OS random generator only
//! through these functions; they are public so that the Wycheproof tests (and auditors) exercise
//! exactly the code the protocol runs. Applications should use the higher-level API.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::{Signature, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;

/// AES-256-GCM key length in bytes.
pub const AES_KEY_LEN: usize = 32;
/// AES-256-GCM nonce length in bytes (96 bits).
pub const NONCE_LEN: usize = 12;
/// AES-256-GCM tag length in bytes (128 bits).
pub const TAG_LEN: usize = 16;

/// Fills an array from the operating system's random number generator (`getrandom`). The array is
/// wiped when dropped.
pub fn random_array<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|_| CryptoError::RandomUnavailable)?;
    Ok(bytes)
}

/// X25519 (RFC 7748) of `secret` and `their_public`, refusing a non-contributory result.
///
/// The result is all zero exactly when `their_public` is a point of small order (or a
/// non-canonical encoding of one), because the clamped scalar is a multiple of the cofactor 8.
/// Such a result does not depend on our secret, so it is refused with
/// [`CryptoError::NonContributory`] (checked in constant time by x25519-dalek's
/// `SharedSecret::was_contributory`). `what` names the public key in the error.
pub fn x25519_agree(
    secret: &StaticSecret,
    their_public: &[u8; 32],
    what: &'static str,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*their_public));
    if !shared.was_contributory() {
        return Err(CryptoError::NonContributory { what });
    }
    // `shared` wipes itself on drop; the copy is wrapped so it is wiped too.
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` (an empty salt is the same as none: HMAC pads
/// its key with zeros) and expand `ikm` with `info` into `okm`. Fails only when `okm` is longer
/// than 255 × 32 bytes.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], okm: &mut [u8]) -> Result<(), CryptoError> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm)
        .map_err(|_| CryptoError::Encoding("HKDF-SHA256 output longer than 8160 bytes"))
}

/// AES-256-GCM encryption with a 96-bit nonce; returns `ciphertext || 16-byte tag`.
pub fn aes256gcm_seal(
    key: &[u8; AES_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .encrypt(&Nonce::from(*nonce), Payload { msg: plaintext, aad })
        .map_err(|_| CryptoError::Encoding("AES-GCM plaintext too long"))
}

/// AES-256-GCM decryption of `ciphertext || 16-byte tag` with a 96-bit nonce. Any
/// authentication failure is [`CryptoError::DecryptionFailed`]; nothing is returned unless the
/// tag verifies.
pub fn aes256gcm_open(
    key: &[u8; AES_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext_and_tag.len() < TAG_LEN {
        return Err(CryptoError::DecryptionFailed);
    }
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext_and_tag,
                aad,
            },
        )
        .map_err(|_| CryptoError::DecryptionFailed)
}

/// Ed25519 verification of `signature` over `message` exactly as given (no domain prefix),
/// strict: `public` and `signature` must have their exact lengths (32 and 64 bytes), the public
/// key must decode and not have small order, `R` must not have small order and `S` must be
/// canonical (ed25519-dalek `verify_strict`). [`crate::verify_detached`] and every key-signature
/// check go through this function.
pub fn ed25519_verify(public: &[u8], message: &[u8], signature: &[u8], what: &'static str) -> Result<(), CryptoError> {
    let public: &[u8; 32] = public.try_into().map_err(|_| CryptoError::InvalidKey {
        what: "Ed25519 public key",
        reason: "must be 32 bytes",
    })?;
    let key = VerifyingKey::from_bytes(public).map_err(|_| CryptoError::InvalidKey {
        what: "Ed25519 public key",
        reason: "not a valid point encoding",
    })?;
    let signature = Signature::from_slice(signature).map_err(|_| CryptoError::BadSignature { what })?;
    key.verify_strict(message, &signature)
        .map_err(|_| CryptoError::BadSignature { what })
}
