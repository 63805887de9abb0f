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

/// HMAC-SHA256 of `data` under `key` (RFC 2104), the Double Ratchet's chain-key function.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    use hmac::{KeyInit as _, Mac as _};
    // HMAC takes keys of any length; the error exists only for fixed-length MACs.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).map_err(|_| CryptoError::Encoding("HMAC key"))?;
    mac.update(data);
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    Sha256::digest(data).into()
}

/// ML-KEM-768 encapsulation key length in bytes (FIPS 203).
pub const KEM_PUBLIC_KEY_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length in bytes.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// ML-KEM decapsulation key seed length in bytes (`d || z`).
pub const KEM_SEED_LEN: usize = 64;

/// An ML-KEM-768 decapsulation key, kept as its 64-byte seed `d || z` (the form FIPS 203 and the
/// protocol store) and the expanded key derived from it. Both are wiped when dropped.
pub struct KemSecretKey {
    seed: Zeroizing<[u8; KEM_SEED_LEN]>,
    key: Box<ml_kem::ml_kem_768::DecapsulationKey>,
}

impl KemSecretKey {
    /// The key pair of a seed `d || z` (`ML-KEM.KeyGen_internal(d, z)`).
    pub fn from_seed(seed: &[u8; KEM_SEED_LEN]) -> Self {
        let key = ml_kem::ml_kem_768::DecapsulationKey::from_seed(ml_kem::Seed::from(*seed));
        Self {
            seed: Zeroizing::new(*seed),
            key: Box::new(key),
        }
    }

    /// A new key pair from OS randomness.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_seed(&*random_array::<KEM_SEED_LEN>()?))
    }

    /// The seed `d || z`.
    pub fn seed(&self) -> &[u8; KEM_SEED_LEN] {
        &self.seed
    }

    /// The encapsulation key (1184 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        use ml_kem::KeyExport as _;
        self.key.encapsulation_key().to_bytes().to_vec()
    }

    /// `ML-KEM.Decaps`: the shared secret of `ciphertext`. A ciphertext of the right length always
    /// yields a secret (FIPS 203 implicit rejection: a forged one yields an unrelated secret, so
    /// the AEAD that uses it fails); a wrong length is [`CryptoError::MalformedEnvelope`].
    pub fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        use ml_kem::Decapsulate as _;
        let ciphertext = ml_kem::ml_kem_768::Ciphertext::try_from(ciphertext)
            .map_err(|_| CryptoError::MalformedEnvelope("the ML-KEM ciphertext must be 1088 bytes"))?;
        let shared = self.key.decapsulate(&ciphertext);
        Ok(Zeroizing::new(shared.into()))
    }
}

impl std::fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KemSecretKey(<redacted>)")
    }
}

/// Decodes an ML-KEM-768 encapsulation key, with FIPS 203's input check (every coefficient
/// below the modulus), which the ml-kem crate performs on decoding.
fn kem_public_key(public_key: &[u8]) -> Result<ml_kem::ml_kem_768::EncapsulationKey, CryptoError> {
    let bad = |reason| CryptoError::InvalidKey {
        what: "ML-KEM-768 public key",
        reason,
    };
    let bytes = ml_kem::Key::<ml_kem::ml_kem_768::EncapsulationKey>::try_from(public_key)
        .map_err(|_| bad("must be 1184 bytes"))?;
    ml_kem::ml_kem_768::EncapsulationKey::new(&bytes).map_err(|_| bad("fails the FIPS 203 modulus check"))
}

/// Checks that `public_key` is a valid ML-KEM-768 encapsulation key.
pub fn kem_check_public_key(public_key: &[u8]) -> Result<(), CryptoError> {
    kem_public_key(public_key).map(|_| ())
}

/// `ML-KEM.Encaps_internal(public_key, m)`: the ciphertext and shared secret for the randomness
/// `m`. The protocol draws `m` from the OS ([`kem_encapsulate`]); the known-answer tests give it.
pub fn kem_encapsulate_with(public_key: &[u8], m: &[u8; 32]) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), CryptoError> {
    let key = kem_public_key(public_key)?;
    let (ciphertext, shared) = key.encapsulate_deterministic(&ml_kem::B32::from(*m));
    Ok((ciphertext.to_vec(), Zeroizing::new(shared.into())))
}

/// `ML-KEM.Encaps` with fresh randomness from the OS.
pub fn kem_encapsulate(public_key: &[u8]) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), CryptoError> {
    kem_encapsulate_with(public_key, &*random_array::<32>()?)
}
