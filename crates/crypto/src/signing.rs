//! Domain-separated Ed25519 signatures.
//!
//! Every byte string this crate signs starts with a length-prefixed label naming its purpose (see
//! [`crate::encoding`](crate#encodings)), so a signature made for one purpose never verifies as
//! another:
//!
//! | purpose | signed bytes |
//! |---|---|
//! | identity binding | `lp("caremesh-key-signature-v1") lp("identity-key") lp(user_id) lp(identity_key_id) lp(ed25519_public) lp(x25519_public)` |
//! | signed prekey | `lp("caremesh-key-signature-v1") lp("signed-prekey") lp(user_id) lp(identity_key_id) lp(prekey_id) lp(x25519_public)` |
//! | [`sign_detached`] | `lp("caremesh-detached-signature-v1") lp(domain) message` |
//!
//! `lp(x)` is `x`'s length as 4 bytes big-endian followed by `x`. The detached message comes last
//! and is not length-prefixed (everything before it is, so the split is unambiguous). Signing is
//! Ed25519 (RFC 8032, deterministic); verification is strict (see
//! [`primitives::ed25519_verify`]).

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::keys::IdentityKeyPair;
use crate::primitives;

/// Label of the identity-binding and signed-prekey signatures.
pub(crate) const KEY_SIGNATURE_LABEL: &str = "caremesh-key-signature-v1";
/// Label of [`sign_detached`] signatures.
pub(crate) const DETACHED_SIGNATURE_LABEL: &str = "caremesh-detached-signature-v1";

/// Longest signing domain accepted, in bytes.
pub const MAX_DOMAIN_LEN: usize = 128;

/// The bytes the identity signing key signs to bind the X25519 identity key and the key id to
/// itself and to its owner (`IdentityKey.dh_public_key_signature`).
pub(crate) fn identity_binding_message(
    user_id: &str,
    identity_key_id: &str,
    signing_public_key: &[u8; 32],
    dh_public_key: &[u8; 32],
) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(KEY_SIGNATURE_LABEL)?;
    encoder
        .field(b"identity-key")?
        .field(user_id.as_bytes())?
        .field(identity_key_id.as_bytes())?
        .field(signing_public_key)?
        .field(dh_public_key)?;
    Ok(encoder.finish())
}

/// The bytes the identity signing key signs for a signed prekey (`SignedPrekey.signature`).
pub(crate) fn signed_prekey_message(
    user_id: &str,
    identity_key_id: &str,
    prekey_id: &str,
    prekey_public: &[u8; 32],
) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(KEY_SIGNATURE_LABEL)?;
    encoder
        .field(b"signed-prekey")?
        .field(user_id.as_bytes())?
        .field(identity_key_id.as_bytes())?
        .field(prekey_id.as_bytes())?
        .field(prekey_public)?;
    Ok(encoder.finish())
}

fn check_domain(domain: &str) -> Result<(), CryptoError> {
    if domain.is_empty() {
        return Err(CryptoError::InvalidDomain("empty"));
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return Err(CryptoError::InvalidDomain("longer than 128 bytes"));
    }
    if !domain.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CryptoError::InvalidDomain(
            "only printable ASCII without spaces is allowed",
        ));
    }
    Ok(())
}

fn detached_message(domain: &str, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
    check_domain(domain)?;
    let mut encoder = Encoder::new(DETACHED_SIGNATURE_LABEL)?;
    encoder.field(domain.as_bytes())?;
    Ok(encoder.finish_with_raw(message))
}

/// Signs `message` with the identity signing key under `domain`, a short label naming what is
/// signed and its format version (e.g. `caremesh-record-envelope-v1`; 1 to 128 printable ASCII
/// characters, no spaces). A signature verifies only under the same domain.
pub fn sign_detached(identity: &IdentityKeyPair, domain: &str, message: &[u8]) -> Result<[u8; 64], CryptoError> {
    let signed = detached_message(domain, message)?;
    Ok(identity.sign_raw(&signed))
}

/// Verifies a [`sign_detached`] signature: `public` is the signer's 32-byte Ed25519 identity
/// signing key (e.g. [`crate::IdentityPublicKey::signing_public_key`]), `signature` 64 bytes.
/// Verification is strict (see [`primitives::ed25519_verify`]).
pub fn verify_detached(public: &[u8], domain: &str, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
    let signed = detached_message(domain, message)?;
    primitives::ed25519_verify(public, &signed, signature, "detached")
}
