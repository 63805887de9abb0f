//! Protocol v2 (`docs/protocol.md`): several devices per user, PQXDH (X25519 + ML-KEM-768)
//! session establishment, Double Ratchet sessions, the signed device list, the history archive
//! and device linking. This module is the cryptographic layer only: byte encodings, derivations,
//! state machines and their persisted forms. Transport, storage and user interaction live in the
//! SDK; the wire messages are mapped there.
//!
//! Section numbers in the docs below (§n) refer to `docs/protocol.md`, which is the
//! specification; `docs/vectors/protocol-v2.json` holds the known-answer tests that an independent
//! implementation produced from it.
//!
//! Every function that needs randomness has a deterministic twin (`*_with`) taking the random
//! values as arguments: the public API draws them from the OS, the known-answer tests give them.

pub mod archive;
pub mod content;
pub mod device;
pub mod link;
pub mod pqxdh;
pub mod ratchet;
pub mod sessions;

pub use archive::{ArchiveCopy, HistoryKey, HistoryKeyRing};
pub use content::{AttachmentRef, Content, MAX_ATTACHMENT_LABEL_LEN, MAX_MESSAGE_BODY_LEN};
pub use device::{
    DeviceBundle, DeviceKeyKind, DeviceList, DeviceListChange, DeviceListTracker, DeviceSecrets, KemPrekeyPublic,
    MAX_DEVICES, PublishedKey, VerifiedDeviceBundle, sign_device_key, verify_device_bundle, verify_device_key,
};
pub use link::{LinkRequest, PendingLink, Provisioning, SealedProvisioning};
pub use pqxdh::{Handshake, Preamble};
pub use ratchet::{MAX_SKIP, MAX_SKIPPED_KEYS, OsRatchetKeys, RatchetHeader, RatchetKeys, RatchetMessage, Session};
pub use sessions::{PeerDevice, SessionStore};

/// Serde of public byte strings as lowercase hex (the `hex` crate's own module needs a feature
/// this workspace does not enable).
pub(crate) mod hex_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: hex::FromHex>(deserializer: D) -> Result<T, D::Error> {
        let text = String::deserialize(deserializer)?;
        T::from_hex(text).map_err(|_| serde::de::Error::custom("not hex of the expected length"))
    }
}
