//! History keys and archive copies (§7): what lets a newly linked device read a user's earlier
//! messages. The archive has no forward secrecy against the history key (see §7.2).

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::ids::{check_user_id, check_uuid_v7, new_id};
use crate::primitives::{self, NONCE_LEN, random_array};
use crate::v2::content::Content;

/// Label of the archive key derivation.
pub const ARCHIVE_KEY_LABEL: &str = "caremesh-history-v1/key";
/// Label of an archive copy's associated data.
pub const ARCHIVE_AAD_LABEL: &str = "caremesh-history-v1/aad";

/// A history key: 32 random bytes and its id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryKey {
    /// The key's id (UUIDv7).
    pub history_key_id: String,
    key: Zeroizing<String>,
}

impl fmt::Debug for HistoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HistoryKey({}, <redacted>)", self.history_key_id)
    }
}

impl HistoryKey {
    /// A new key from OS randomness.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_bytes(new_id(), &*random_array::<32>()?)
    }

    /// A key with the given id and bytes.
    pub fn from_bytes(history_key_id: String, key: &[u8; 32]) -> Result<Self, CryptoError> {
        check_uuid_v7(&history_key_id, "history key id")?;
        Ok(Self {
            history_key_id,
            key: Zeroizing::new(hex::encode(key)),
        })
    }

    /// The key bytes.
    pub fn bytes(&self) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(self.key.as_str(), key.as_mut_slice())
            .map_err(|_| CryptoError::InvalidStoredKeys("a history key is not 64 hex digits"))?;
        Ok(key)
    }

    /// The per-message archive key (§7.2).
    fn archive_key(&self, message_id: &str) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let mut info = Encoder::new(ARCHIVE_KEY_LABEL)?;
        info.field(self.history_key_id.as_bytes())?
            .field(message_id.as_bytes())?;
        let mut key = Zeroizing::new([0u8; 32]);
        primitives::hkdf_sha256(&[0u8; 32], self.bytes()?.as_slice(), &info.finish(), key.as_mut_slice())?;
        Ok(key)
    }
}

/// A user's history keys, newest first (§7.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryKeyRing {
    keys: Vec<HistoryKey>,
}

impl HistoryKeyRing {
    /// A ring of one new key (a user's first device).
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self {
            keys: vec![HistoryKey::generate()?],
        })
    }

    /// A ring of `keys`, newest first (as a provisioning message carries it).
    pub fn from_keys(keys: Vec<HistoryKey>) -> Result<Self, CryptoError> {
        if keys.is_empty() {
            return Err(CryptoError::InvalidStoredKeys("a history key ring needs a key"));
        }
        Ok(Self { keys })
    }

    /// The keys, newest first.
    pub fn keys(&self) -> &[HistoryKey] {
        &self.keys
    }

    /// The key new archive copies use.
    pub fn current(&self) -> Result<&HistoryKey, CryptoError> {
        self.keys
            .first()
            .ok_or(CryptoError::InvalidStoredKeys("the history key ring is empty"))
    }

    /// Adds a new current key (rotation, §7.3), or a key another device rotated to; a key already
    /// held is not added twice.
    pub fn push_current(&mut self, key: HistoryKey) {
        if !self.keys.iter().any(|held| held.history_key_id == key.history_key_id) {
            self.keys.insert(0, key);
        }
    }

    /// The key with this id.
    pub fn get(&self, history_key_id: &str) -> Result<&HistoryKey, CryptoError> {
        self.keys
            .iter()
            .find(|key| key.history_key_id == history_key_id)
            .ok_or_else(|| CryptoError::UnknownKey {
                what: "history key",
                id: history_key_id.to_owned(),
            })
    }
}

/// The ids an archive copy is bound to (§7.2).
#[derive(Clone, Copy, Debug)]
pub struct ArchiveContext<'a> {
    /// Whose archive.
    pub owner_user_id: &'a str,
    /// The message.
    pub message_id: &'a str,
    /// Who sent it.
    pub sender_user_id: &'a str,
    /// From which device.
    pub sender_device_id: &'a str,
    /// To whom.
    pub recipient_user_id: &'a str,
}

impl ArchiveContext<'_> {
    fn aad(&self, history_key_id: &str) -> Result<Vec<u8>, CryptoError> {
        check_user_id(self.owner_user_id, "owner user id")?;
        check_user_id(self.sender_user_id, "sender user id")?;
        check_user_id(self.recipient_user_id, "recipient user id")?;
        check_uuid_v7(self.message_id, "message id")?;
        check_uuid_v7(self.sender_device_id, "sender device id")?;
        let mut aad = Encoder::new(ARCHIVE_AAD_LABEL)?;
        aad.field(self.owner_user_id.as_bytes())?
            .field(history_key_id.as_bytes())?
            .field(self.message_id.as_bytes())?
            .field(self.sender_user_id.as_bytes())?
            .field(self.sender_device_id.as_bytes())?
            .field(self.recipient_user_id.as_bytes())?;
        Ok(aad.finish())
    }
}

/// An archive copy as stored: which history key, the nonce and the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveCopy {
    /// The history key used.
    pub history_key_id: String,
    /// The AES-256-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl ArchiveCopy {
    /// Seals `content` under the ring's current key with a random nonce.
    pub fn seal(ring: &HistoryKeyRing, context: &ArchiveContext<'_>, content: &Content) -> Result<Self, CryptoError> {
        Self::seal_with(ring.current()?, context, content, &*random_array::<NONCE_LEN>()?)
    }

    /// Seals with the given key and nonce (known-answer tests).
    pub fn seal_with(
        key: &HistoryKey,
        context: &ArchiveContext<'_>,
        content: &Content,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Self, CryptoError> {
        let aad = context.aad(&key.history_key_id)?;
        let ciphertext =
            primitives::aes256gcm_seal(&*key.archive_key(context.message_id)?, nonce, &aad, &content.encode()?)?;
        Ok(Self {
            history_key_id: key.history_key_id.clone(),
            nonce: *nonce,
            ciphertext,
        })
    }

    /// Opens a copy with the key of the ring it names.
    pub fn open(&self, ring: &HistoryKeyRing, context: &ArchiveContext<'_>) -> Result<Content, CryptoError> {
        let key = ring.get(&self.history_key_id)?;
        let aad = context.aad(&key.history_key_id)?;
        let plaintext = Zeroizing::new(primitives::aes256gcm_open(
            &*key.archive_key(context.message_id)?,
            &self.nonce,
            &aad,
            &self.ciphertext,
        )?);
        Content::decode(&plaintext)
    }
}
