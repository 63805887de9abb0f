//! Attachments (`docs/protocol.md` §13): a file encrypted on the client under a fresh 256-bit
//! key, in chunks, so that it can be streamed both ways in bounded memory.
//!
//! ```text
//! K        = 32 random bytes (the attachment key; travels only inside an end-to-end message
//!            or an ABE-sealed record envelope)
//! id       = the attachment id (UUIDv7, 16 bytes)
//! CK       = HKDF-SHA256(salt = id, IKM = K, info = "caremesh-attachment-v1", length 32)
//! chunk i  = plaintext bytes [i·65536, (i+1)·65536): every chunk is full but the last, which
//!            holds 0 to 65536 bytes (an empty file is one empty last chunk)
//! last_i   = 0x01 for the last chunk, 0x00 otherwise
//! nonce_i  = u64be(i) || 0x00 0x00 0x00 || last_i
//! AAD_i    = "caremesh-attachment-v1" || id || u64be(i) || last_i
//! sealed_i = AES-256-GCM(CK, nonce_i, AAD_i, chunk i) || 16-byte tag
//! blob     = sealed_0 || sealed_1 || ... || sealed_n
//! digest   = SHA-256(blob)
//! ```
//!
//! The index in the nonce and AAD stops reordering, the attachment id in the key and AAD stops
//! mixing chunks of two files, and the last flag stops truncation at a chunk boundary (the new
//! final chunk was sealed as not last). The digest, carried with the key, names the exact blob.
//! A fresh key per file, and a nonce per chunk index, mean that no nonce repeats under a key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::primitives::{hkdf_sha256, random_array};

/// The label of the key derivation, the AAD and the format.
pub const LABEL: &[u8] = b"caremesh-attachment-v1";
/// Plaintext bytes per chunk (every chunk but the last is exactly this long).
pub const CHUNK_LEN: usize = 64 * 1024;
/// The AES-GCM tag after each chunk.
pub const TAG_LEN: usize = 16;
/// A full chunk as stored.
pub const SEALED_CHUNK_LEN: usize = CHUNK_LEN + TAG_LEN;
/// Attachment ids are UUIDs: 16 bytes.
pub const ID_LEN: usize = 16;

/// The 16 bytes of an attachment id given in canonical UUIDv7 form (as the services and the
/// message content carry it).
pub fn id_bytes(attachment_id: &str) -> Result<[u8; ID_LEN], CryptoError> {
    crate::ids::check_uuid_v7(attachment_id, "attachment id")?;
    uuid::Uuid::try_parse(attachment_id)
        .map(|id| *id.as_bytes())
        .map_err(|_| CryptoError::InvalidId {
            what: "attachment id",
            reason: "it must be a UUIDv7",
        })
}

/// The attachment key `K`. Wiped on drop; `Debug` does not show it.
pub struct AttachmentKey(Zeroizing<[u8; 32]>);

impl AttachmentKey {
    /// A fresh key from the OS random generator.
    pub fn generate() -> Result<Self, CryptoError> {
        random_array::<32>().map(Self)
    }

    /// A key received in a message or envelope: exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::InvalidKey {
            what: "attachment key",
            reason: "it must be 32 bytes",
        })?;
        Ok(Self(Zeroizing::new(array)))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey([redacted])")
    }
}

/// What sealing a whole file produced, besides the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// SHA-256 of the blob.
    pub digest: [u8; 32],
    /// The file's length.
    pub plaintext_len: u64,
    /// The blob's length.
    pub blob_len: u64,
}

/// The blob length of a file of `plaintext_len` bytes.
pub fn blob_len(plaintext_len: u64) -> u64 {
    let chunk = CHUNK_LEN as u64;
    let chunks = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(chunk)
    };
    plaintext_len + chunks * TAG_LEN as u64
}

struct ChunkCipher {
    cipher: Aes256Gcm,
    id: [u8; ID_LEN],
}

impl ChunkCipher {
    fn new(key: &AttachmentKey, attachment_id: &[u8; ID_LEN]) -> Result<Self, CryptoError> {
        let mut chunk_key = Zeroizing::new([0u8; 32]);
        hkdf_sha256(attachment_id, key.as_bytes(), LABEL, chunk_key.as_mut())?;
        Ok(Self {
            cipher: Aes256Gcm::new((&*chunk_key).into()),
            id: *attachment_id,
        })
    }

    fn nonce(index: u64, last: bool) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        for (slot, byte) in nonce.iter_mut().zip(index.to_be_bytes()) {
            *slot = byte;
        }
        if let Some(flag) = nonce.last_mut() {
            *flag = u8::from(last);
        }
        nonce
    }

    fn aad(&self, index: u64, last: bool) -> Vec<u8> {
        let mut aad = Vec::with_capacity(LABEL.len() + ID_LEN + 9);
        aad.extend_from_slice(LABEL);
        aad.extend_from_slice(&self.id);
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(last));
        aad
    }

    fn seal(&self, index: u64, last: bool, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let aad = self.aad(index, last);
        self.cipher
            .encrypt(
                &Nonce::from(Self::nonce(index, last)),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encoding("AES-GCM plaintext too long"))
    }

    fn open(&self, index: u64, last: bool, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let aad = self.aad(index, last);
        self.cipher
            .decrypt(
                &Nonce::from(Self::nonce(index, last)),
                Payload { msg: sealed, aad: &aad },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::AttachmentDamaged)
    }
}

/// Seals a file chunk by chunk: [`Sealer::seal_chunk`] for each chunk in order, the last one
/// flagged, then [`Sealer::finish`].
pub struct Sealer {
    cipher: ChunkCipher,
    next: u64,
    digest: Sha256,
    plaintext_len: u64,
    blob_len: u64,
    sealed_last: bool,
}

impl Sealer {
    pub fn new(key: &AttachmentKey, attachment_id: &[u8; ID_LEN]) -> Result<Self, CryptoError> {
        Ok(Self {
            cipher: ChunkCipher::new(key, attachment_id)?,
            next: 0,
            digest: Sha256::new(),
            plaintext_len: 0,
            blob_len: 0,
            sealed_last: false,
        })
    }

    /// Seals the next chunk: exactly [`CHUNK_LEN`] bytes, or, when `last`, 0 to [`CHUNK_LEN`].
    pub fn seal_chunk(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        if self.sealed_last {
            return Err(CryptoError::Encoding(
                "the last chunk of this attachment is already sealed",
            ));
        }
        let fits = if last {
            plaintext.len() <= CHUNK_LEN
        } else {
            plaintext.len() == CHUNK_LEN
        };
        if !fits {
            return Err(CryptoError::Encoding(
                "an attachment chunk is 65536 bytes, only the last one may be shorter",
            ));
        }
        let sealed = self.cipher.seal(self.next, last, plaintext)?;
        self.digest.update(&sealed);
        self.next += 1;
        self.plaintext_len += plaintext.len() as u64;
        self.blob_len += sealed.len() as u64;
        self.sealed_last = last;
        Ok(sealed)
    }

    /// The digest and lengths, once the last chunk is sealed.
    pub fn finish(self) -> Result<Sealed, CryptoError> {
        if !self.sealed_last {
            return Err(CryptoError::Encoding("the attachment's last chunk was not sealed"));
        }
        Ok(Sealed {
            digest: self.digest.finalize().into(),
            plaintext_len: self.plaintext_len,
            blob_len: self.blob_len,
        })
    }
}

/// Opens a blob fed in pieces of any size. Each full chunk opens as soon as a byte of the next one
/// has arrived (so that it is known not to be the last); [`Opener::finish`] checks the digest and
/// opens the last chunk.
///
/// Every chunk [`Opener::update`] returns is authentic (its tag verified under this file's key,
/// index and id), but the file is complete and the one the digest names only once `finish`
/// succeeds: write the pieces somewhere temporary, and keep the file only then.
pub struct Opener {
    cipher: ChunkCipher,
    expected_digest: [u8; 32],
    next: u64,
    pending: Vec<u8>,
    digest: Sha256,
}

impl Opener {
    pub fn new(
        key: &AttachmentKey,
        attachment_id: &[u8; ID_LEN],
        expected_digest: &[u8; 32],
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            cipher: ChunkCipher::new(key, attachment_id)?,
            expected_digest: *expected_digest,
            next: 0,
            pending: Vec::with_capacity(SEALED_CHUNK_LEN),
            digest: Sha256::new(),
        })
    }

    /// Takes the next bytes of the blob; returns the plaintext of the chunks they completed
    /// (bounded: at most `sealed.len() + SEALED_CHUNK_LEN` bytes are held at once).
    pub fn update(&mut self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.digest.update(sealed);
        let mut out = Zeroizing::new(Vec::new());
        let mut input = sealed;
        while !input.is_empty() {
            let room = SEALED_CHUNK_LEN.saturating_sub(self.pending.len());
            if room == 0 {
                // A full chunk is pending and more bytes follow: it is not the last.
                let plaintext = self.cipher.open(self.next, false, &self.pending)?;
                out.extend_from_slice(&plaintext);
                self.pending.clear();
                self.next += 1;
                continue;
            }
            let (take, rest) = input.split_at(room.min(input.len()));
            self.pending.extend_from_slice(take);
            input = rest;
        }
        Ok(out)
    }

    /// Checks the digest of everything fed, then opens the last chunk.
    pub fn finish(self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let digest: [u8; 32] = self.digest.finalize().into();
        if !bool::from(digest.ct_eq(&self.expected_digest)) {
            return Err(CryptoError::AttachmentDigestMismatch);
        }
        if self.pending.len() < TAG_LEN {
            return Err(CryptoError::AttachmentDamaged);
        }
        self.cipher.open(self.next, true, &self.pending)
    }
}

/// Seals a whole file in memory (tests, vectors and small files): the blob and its [`Sealed`].
pub fn seal_all(
    key: &AttachmentKey,
    attachment_id: &[u8; ID_LEN],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Sealed), CryptoError> {
    let mut sealer = Sealer::new(key, attachment_id)?;
    let mut blob = Vec::with_capacity(usize::try_from(blob_len(plaintext.len() as u64)).unwrap_or(0));
    let mut chunks = plaintext.chunks(CHUNK_LEN).peekable();
    if chunks.peek().is_none() {
        blob.extend(sealer.seal_chunk(&[], true)?);
    }
    while let Some(chunk) = chunks.next() {
        // A file of whole chunks ends with its last full chunk flagged last.
        blob.extend(sealer.seal_chunk(chunk, chunks.peek().is_none())?);
    }
    let sealed = sealer.finish()?;
    Ok((blob, sealed))
}

/// Opens a whole blob in memory.
pub fn open_all(
    key: &AttachmentKey,
    attachment_id: &[u8; ID_LEN],
    expected_digest: &[u8; 32],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut opener = Opener::new(key, attachment_id, expected_digest)?;
    let mut plaintext = opener.update(blob)?;
    plaintext.extend_from_slice(&opener.finish()?);
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 16] = [7u8; 16];

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_boundary_in_any_feed_size() {
        let key = AttachmentKey::generate().unwrap();
        for len in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            3 * CHUNK_LEN,
            3 * CHUNK_LEN + 17,
        ] {
            let plaintext = file(len);
            let (blob, sealed) = seal_all(&key, &ID, &plaintext).unwrap();
            assert_eq!(sealed.blob_len, blob.len() as u64);
            assert_eq!(blob_len(len as u64), blob.len() as u64, "{len}");
            for feed in [1usize, 1000, SEALED_CHUNK_LEN, SEALED_CHUNK_LEN + 1, 1 << 20] {
                let mut opener = Opener::new(&key, &ID, &sealed.digest).unwrap();
                let mut out = Vec::new();
                for piece in blob.chunks(feed) {
                    out.extend_from_slice(&opener.update(piece).unwrap());
                }
                out.extend_from_slice(&opener.finish().unwrap());
                assert_eq!(out, plaintext, "len {len}, feed {feed}");
            }
        }
    }

    #[test]
    fn reordered_truncated_flipped_and_mixed_blobs_are_refused() {
        let key = AttachmentKey::generate().unwrap();
        let plaintext = file(3 * CHUNK_LEN + 5);
        let (blob, sealed) = seal_all(&key, &ID, &plaintext).unwrap();
        let chunk = |i: usize| &blob[i * SEALED_CHUNK_LEN..((i + 1) * SEALED_CHUNK_LEN).min(blob.len())];
        let open = |blob: &[u8]| {
            // With the digest of the tampered blob, so that the chunk checks alone must refuse it.
            let digest: [u8; 32] = Sha256::digest(blob).into();
            open_all(&key, &ID, &digest, blob).map(|_| ())
        };

        let reordered = [chunk(1), chunk(0), chunk(2), chunk(3)].concat();
        assert!(matches!(open(&reordered), Err(CryptoError::AttachmentDamaged)));
        let truncated = [chunk(0), chunk(1), chunk(2)].concat();
        assert!(matches!(open(&truncated), Err(CryptoError::AttachmentDamaged)));
        let mut flipped = blob.clone();
        flipped[SEALED_CHUNK_LEN + 3] ^= 0x01;
        assert!(matches!(open(&flipped), Err(CryptoError::AttachmentDamaged)));
        let (other, _) = seal_all(&key, &[8u8; 16], &plaintext).unwrap();
        let mixed = [
            chunk(0),
            &other[SEALED_CHUNK_LEN..2 * SEALED_CHUNK_LEN],
            chunk(2),
            chunk(3),
        ]
        .concat();
        assert!(matches!(open(&mixed), Err(CryptoError::AttachmentDamaged)));

        // The original blob against another digest.
        let mut wrong = sealed.digest;
        wrong[0] ^= 1;
        assert!(matches!(
            open_all(&key, &ID, &wrong, &blob),
            Err(CryptoError::AttachmentDigestMismatch)
        ));
        // Another key.
        let other_key = AttachmentKey::generate().unwrap();
        assert!(matches!(
            open_all(&other_key, &ID, &sealed.digest, &blob),
            Err(CryptoError::AttachmentDamaged)
        ));
    }

    #[test]
    fn the_sealer_enforces_chunk_sizes_and_one_last_chunk() {
        let key = AttachmentKey::generate().unwrap();
        let mut sealer = Sealer::new(&key, &ID).unwrap();
        assert!(
            sealer.seal_chunk(&[0; 10], false).is_err(),
            "a short chunk that is not last"
        );
        assert!(sealer.seal_chunk(&[0; CHUNK_LEN + 1], true).is_err());
        sealer.seal_chunk(&[0; 10], true).unwrap();
        assert!(sealer.seal_chunk(&[], true).is_err(), "nothing after the last chunk");
        assert!(Sealer::new(&key, &ID).unwrap().finish().is_err(), "no last chunk yet");
        assert!(AttachmentKey::from_bytes(&[0; 31]).is_err());
        assert_eq!(
            format!("{:?}", AttachmentKey::from_bytes(&[9; 32]).unwrap()),
            "AttachmentKey([redacted])"
        );
    }
}
