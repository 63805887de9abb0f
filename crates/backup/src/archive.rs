//! The archive envelope: compressed, encrypted and signed.
//!
//! ```text
//! MAGIC (16) || header length (u32, big endian) || header (JSON) || ciphertext || signature (64)
//! ```
//!
//! - The plaintext is the deflate-compressed snapshot (JSON lines).
//! - The ciphertext is AES-256-GCM under `HKDF-SHA256(ikm = KEK, salt = header.salt,
//!   info = "caremesh/backup/v1/encrypt")`, with the magic, length and header as associated data.
//! - The signature is Ed25519 over everything before it, by the key whose seed is
//!   `HKDF-SHA256(ikm = KEK, info = "caremesh/backup/v1/sign")`; its public key is in the header,
//!   so an operator can tell "another KEK" from "damaged file".
//!
//! Opening checks the signature first and decrypts only a signed archive, so a corrupted or
//! truncated file is refused before anything is decoded.

use std::io::{Read, Write};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The first bytes of every archive.
pub const MAGIC: &[u8; 16] = b"CAREMESH-BACKUP\n";
/// HKDF purpose of the archive keys.
pub const PURPOSE: &str = "caremesh/backup/v1";
const FORMAT: u32 = 1;
const SIGNATURE_LEN: usize = 64;
const NONCE_LEN: usize = 12;
const SALT_LEN: usize = 32;
/// A decompressed snapshot larger than this is refused (a guard against decompression bombs).
const MAX_PLAINTEXT: u64 = 16 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("this is not a caremesh backup (it does not start with the caremesh backup header)")]
    NotABackup,
    #[error("the backup is truncated: it ends before its header and signature")]
    Truncated,
    #[error("the backup's header is malformed: {0}")]
    Header(String),
    #[error("the backup uses format {0}, which this caremesh cannot read")]
    Format(u32),
    #[error(
        "the backup was signed with another key: it was made under a different key-encryption key \
         (use the KEK of the mesh that wrote it), or its header was altered"
    )]
    OtherKey,
    #[error("the backup's signature does not verify: the file is corrupted or truncated; nothing was restored")]
    BadSignature,
    #[error("the backup does not decrypt under this key-encryption key")]
    Decrypt,
    #[error("the backup's contents are malformed: {0}")]
    Contents(String),
    #[error("cannot gather randomness: {0}")]
    Random(String),
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    created_at: String,
    /// Hex: the HKDF salt of the encryption key.
    salt: String,
    /// Hex: the AES-GCM nonce.
    nonce: String,
    /// Hex: the Ed25519 public key that signed the archive.
    signing_key: String,
}

fn derive(kek: &[u8; 32], salt: Option<&[u8]>, what: &str) -> Result<Zeroizing<[u8; 32]>, ArchiveError> {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(salt, kek)
        .expand(format!("{PURPOSE}/{what}").as_bytes(), okm.as_mut())
        .map_err(|_| ArchiveError::Header("key derivation failed".to_owned()))?;
    Ok(okm)
}

/// The backup signing key of a KEK.
pub fn signing_key(kek: &[u8; 32]) -> Result<SigningKey, ArchiveError> {
    let seed = derive(kek, None, "sign")?;
    Ok(SigningKey::from_bytes(&seed))
}

fn random<const N: usize>() -> Result<[u8; N], ArchiveError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| ArchiveError::Random(error.to_string()))?;
    Ok(bytes)
}

/// Compresses, encrypts and signs `plaintext`.
pub fn seal(kek: &[u8; 32], plaintext: &[u8], created_at: &str) -> Result<Vec<u8>, ArchiveError> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(plaintext)
        .map_err(|error| ArchiveError::Contents(error.to_string()))?;
    let compressed = Zeroizing::new(
        encoder
            .finish()
            .map_err(|error| ArchiveError::Contents(error.to_string()))?,
    );

    let salt: [u8; SALT_LEN] = random()?;
    let nonce: [u8; NONCE_LEN] = random()?;
    let signer = signing_key(kek)?;
    let header = serde_json::to_vec(&Header {
        format: FORMAT,
        created_at: created_at.to_owned(),
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        signing_key: hex::encode(signer.verifying_key().to_bytes()),
    })
    .map_err(|error| ArchiveError::Header(error.to_string()))?;
    let header_len = u32::try_from(header.len()).map_err(|_| ArchiveError::Header("too long".to_owned()))?;

    let mut out = Vec::with_capacity(compressed.len() + header.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    let key = derive(kek, Some(&salt), "encrypt")?;
    let ciphertext = Aes256Gcm::new(&(*key).into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &compressed,
                aad: &out,
            },
        )
        .map_err(|_| ArchiveError::Decrypt)?;
    out.extend_from_slice(&ciphertext);
    let signature = signer.sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

/// Verifies the signature, then decrypts and decompresses. Returns the creation time and the
/// plaintext.
pub fn open(kek: &[u8; 32], archive: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), ArchiveError> {
    let Some(rest) = archive.strip_prefix(MAGIC.as_slice()) else {
        return Err(if MAGIC.starts_with(archive) && !archive.is_empty() {
            ArchiveError::Truncated
        } else {
            ArchiveError::NotABackup
        });
    };
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(ArchiveError::Truncated)?;
    let header_len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| ArchiveError::Truncated)?;
    if rest.len() < header_len.saturating_add(SIGNATURE_LEN) {
        return Err(ArchiveError::Truncated);
    }
    let (header_bytes, rest) = rest.split_at(header_len);
    let header: Header =
        serde_json::from_slice(header_bytes).map_err(|error| ArchiveError::Header(error.to_string()))?;
    if header.format != FORMAT {
        return Err(ArchiveError::Format(header.format));
    }
    let (signed, signature) = archive.split_at(archive.len().saturating_sub(SIGNATURE_LEN));
    let signature: [u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| ArchiveError::Truncated)?;
    let signer = signing_key(kek)?.verifying_key();
    if hex::encode(signer.to_bytes()) != header.signing_key {
        // The header names another key: a different KEK (or a tampered header). Check that the
        // archive is at least intact under the key it names, to say which.
        let named = hex_array::<32>(&header.signing_key)
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
            .ok_or(ArchiveError::BadSignature)?;
        return Err(match named.verify_strict(signed, &Signature::from_bytes(&signature)) {
            Ok(()) => ArchiveError::OtherKey,
            Err(_) => ArchiveError::BadSignature,
        });
    }
    signer
        .verify_strict(signed, &Signature::from_bytes(&signature))
        .map_err(|_| ArchiveError::BadSignature)?;

    let ciphertext = rest
        .get(..rest.len().saturating_sub(SIGNATURE_LEN))
        .ok_or(ArchiveError::Truncated)?;
    let aad = signed
        .get(..MAGIC.len() + 4 + header_len)
        .ok_or(ArchiveError::Truncated)?;
    let salt = hex_array::<SALT_LEN>(&header.salt).ok_or_else(|| ArchiveError::Header("bad salt".to_owned()))?;
    let nonce = hex_array::<NONCE_LEN>(&header.nonce).ok_or_else(|| ArchiveError::Header("bad nonce".to_owned()))?;
    let key = derive(kek, Some(&salt), "encrypt")?;
    let compressed = Zeroizing::new(
        Aes256Gcm::new(&(*key).into())
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| ArchiveError::Decrypt)?,
    );
    let mut plaintext = Zeroizing::new(Vec::new());
    flate2::read::DeflateDecoder::new(compressed.as_slice())
        .take(MAX_PLAINTEXT)
        .read_to_end(&mut plaintext)
        .map_err(|error| ArchiveError::Contents(format!("cannot decompress: {error}")))?;
    Ok((header.created_at, plaintext))
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn round_trip_and_every_kind_of_damage_is_refused() {
        let kek = [7u8; 32];
        let archive = seal(&kek, b"hello snapshot", "2026-01-01T00:00:00Z").unwrap();
        let (created, plaintext) = open(&kek, &archive).unwrap();
        assert_eq!(created, "2026-01-01T00:00:00Z");
        assert_eq!(plaintext.as_slice(), b"hello snapshot");

        for cut in [0, 5, 16, 19, 40, archive.len() / 2, archive.len() - 1] {
            assert!(open(&kek, &archive[..cut]).is_err(), "truncated at {cut}");
        }
        for i in (0..archive.len()).step_by(7) {
            let mut damaged = archive.clone();
            damaged[i] ^= 0x40;
            assert!(open(&kek, &damaged).is_err(), "flipped byte {i}");
        }
        assert!(matches!(open(&[8u8; 32], &archive), Err(ArchiveError::OtherKey)));
        assert!(matches!(
            open(&kek, b"PK\x03\x04 a zip file"),
            Err(ArchiveError::NotABackup)
        ));
    }
}
