//! The KEM's key derivation, and `seal`/`open`: KEM + AES-256-GCM.
//!
//! **Data key.** `HKDF-SHA256(salt = "caremesh-abe-v1/kem", ikm = encode(M),
//! info = "caremesh-abe-v1/data-key" || SHA-256(ciphertext bytes))`, 32 bytes, where `M` is
//! FAME's G_T mask `T1^{s1} T2^{s2}` and `encode` its canonical uncompressed encoding: the twelve
//! Fp coordinates `c0.c0.c0, c0.c0.c1, c0.c1.c0, …, c1.c2.c1` as 48-byte little-endian integers
//! (576 bytes). Binding the whole
//! serialized ABE ciphertext (policy included) into the derivation means any change to the
//! ciphertext gives an unrelated key, so AES-GCM rejects it.
//!
//! **Sealed envelope.** `version || 0x05 || len (u32) || ciphertext || nonce (12) ||
//! AES-256-GCM(data key, nonce, plaintext, aad = caller's associated data)` (tag appended).
//! The data key is fresh for every envelope; the nonce is random anyway.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::encoding::{Reader, TYPE_SEALED, Writer};
use crate::error::{AbeError, Malformed, Object};
use crate::fame::{Ciphertext, PublicParams, UserKey, decapsulate, encapsulate};
use crate::fp12::UNCOMPRESSED_LEN;
use crate::policy::Policy;

const KDF_SALT: &[u8] = b"caremesh-abe-v1/kem";
const KDF_INFO: &[u8] = b"caremesh-abe-v1/data-key";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A 256-bit symmetric key produced by the KEM. Zeroized on drop; `Debug` redacts it;
/// equality is constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// The key bytes (use as an AES-256-GCM key).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for DataKey {}

/// Derives the data key from the canonical uncompressed encoding of the G_T mask and the
/// ciphertext; `None` for the identity mask (which an honest encryption never produces).
pub(crate) fn derive_data_key(mask: &[u8; UNCOMPRESSED_LEN], ciphertext: &Ciphertext) -> Option<DataKey> {
    if *mask == identity_encoding() {
        return None;
    }
    let transcript = Sha256::digest(ciphertext.to_bytes());
    let hkdf = Hkdf::<Sha256>::new(Some(KDF_SALT), mask);
    let mut okm = [0u8; 32];
    hkdf.expand_multi_info(&[KDF_INFO, transcript.as_slice()], &mut okm)
        .ok()?;
    Some(DataKey(okm))
}

/// The uncompressed encoding of the G_T identity (the Fp12 one).
fn identity_encoding() -> [u8; UNCOMPRESSED_LEN] {
    let mut out = [0u8; UNCOMPRESSED_LEN];
    if let Some(first) = out.first_mut() {
        *first = 1;
    }
    out
}

/// Encrypts `plaintext` for everyone whose attributes satisfy `policy`: a fresh data key is
/// encapsulated under the policy and seals the plaintext with AES-256-GCM, authenticating
/// `associated_data` as well.
pub fn seal<R: RngCore + CryptoRng>(
    pp: &PublicParams,
    policy: &Policy,
    plaintext: &[u8],
    associated_data: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, AbeError> {
    let (key, ciphertext) = encapsulate(pp, policy, rng)?;
    let ct_bytes = ciphertext.to_bytes();
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new_from_slice(key.as_bytes()).map_err(|_| AbeError::DecryptionFailed)?;
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: associated_data,
            },
        )
        .map_err(|_| AbeError::DecryptionFailed)?;
    let mut w = Writer::new(TYPE_SEALED, 4 + ct_bytes.len() + NONCE_LEN + sealed.len());
    w.u32(u32::try_from(ct_bytes.len()).map_err(|_| AbeError::Malformed {
        object: Object::SealedEnvelope,
        reason: Malformed::InvalidLength,
    })?);
    w.bytes(&ct_bytes);
    w.bytes(&nonce);
    w.bytes(&sealed);
    Ok(w.0)
}

/// The ABE ciphertext inside a sealed envelope (to read its policy without a key).
pub fn sealed_ciphertext(sealed: &[u8]) -> Result<Ciphertext, AbeError> {
    Ok(split_sealed(sealed)?.0)
}

fn split_sealed(sealed: &[u8]) -> Result<(Ciphertext, [u8; NONCE_LEN], &[u8]), AbeError> {
    let mut r = Reader::new(sealed, Object::SealedEnvelope, TYPE_SEALED)?;
    let ct_len = usize::try_from(r.u32()?).map_err(|_| r.malformed(Malformed::InvalidLength))?;
    let ciphertext = Ciphertext::from_bytes(r.take(ct_len)?)?;
    let nonce = r.array::<NONCE_LEN>()?;
    if r.remaining() < TAG_LEN {
        return Err(r.malformed(Malformed::Truncated));
    }
    let body = r.take(r.remaining())?;
    r.finish()?;
    Ok((ciphertext, nonce, body))
}

/// Opens a sealed envelope with a user key: [`AbeError::PolicyNotSatisfied`] if the key's
/// attributes do not satisfy the policy, [`AbeError::DecryptionFailed`] if authentication fails.
pub fn open(key: &UserKey, sealed: &[u8], associated_data: &[u8]) -> Result<Zeroizing<Vec<u8>>, AbeError> {
    let (ciphertext, nonce, body) = split_sealed(sealed)?;
    let data_key = decapsulate(key, &ciphertext)?;
    let cipher = Aes256Gcm::new_from_slice(data_key.as_bytes()).map_err(|_| AbeError::DecryptionFailed)?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: body,
                aad: associated_data,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| AbeError::DecryptionFailed)
}
