//! The crate's single error type.

/// Everything that can go wrong in this crate. No variant carries secret material.
///
/// Opening an envelope reports *why* it failed where that is knowable before decryption (an
/// unknown key id, a malformed field, a non-contributory key agreement); once decryption is
/// attempted, every authentication failure is the one [`CryptoError::DecryptionFailed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator is unavailable")]
    RandomUnavailable,

    /// A key has the wrong length or is not a valid encoding.
    #[error("invalid {what}: {reason}")]
    InvalidKey { what: &'static str, reason: &'static str },

    /// An identifier (user, key or message id) is missing or not in the required form.
    #[error("invalid {what}: {reason}")]
    InvalidId { what: &'static str, reason: &'static str },

    /// A signature did not verify.
    #[error("the {what} signature is invalid")]
    BadSignature { what: &'static str },

    /// An X25519 key agreement produced the all-zero output: the other public key has low order
    /// (or is a non-canonical encoding of such a point), so the result would not depend on our
    /// secret key. caremesh refuses it.
    #[error("refused a non-contributory X25519 key agreement ({what} is a low-order point)")]
    NonContributory { what: &'static str },

    /// The plaintext is larger than [`crate::MAX_PLAINTEXT_LEN`].
    #[error("the message is {len} bytes; at most {max} bytes can be sealed")]
    PlaintextTooLarge { len: usize, max: usize },

    /// An envelope field is missing, has the wrong length or is out of bounds.
    #[error("malformed envelope: {0}")]
    MalformedEnvelope(&'static str),

    /// The envelope's format version is not one this code understands.
    #[error("unsupported envelope version {0} (this code reads version 1)")]
    UnsupportedVersion(u32),

    /// A key bundle or the key material at hand does not belong to who the caller said.
    #[error("key mismatch: {0}")]
    KeyMismatch(&'static str),

    /// The envelope names a key this device does not hold: sealed to another device or user, to a
    /// signed prekey rotated out, or to a one-time prekey already spent.
    #[error("this device holds no {what} with id {id}")]
    UnknownKey { what: &'static str, id: String },

    /// Authenticated decryption failed: the envelope was tampered with, was bound to other
    /// sender/recipient/message ids, or was not sealed to these keys.
    #[error("the envelope does not authenticate (tampered, or bound to other ids or keys)")]
    DecryptionFailed,

    /// The attribute-based encryption layer refused: the key does not satisfy the policy, or an
    /// ABE ciphertext, key or policy is malformed.
    #[error("attribute-based encryption: {0}")]
    Abe(#[from] caremesh_abe::AbeError),

    /// A signing domain is empty, too long or not printable ASCII.
    #[error("invalid signature domain: {0}")]
    InvalidDomain(&'static str),

    /// A request for more keys than one upload may carry, or another out-of-range count.
    #[error("{what}: {value} is out of range (at most {max})")]
    OutOfRange {
        what: &'static str,
        value: usize,
        max: usize,
    },

    /// A length does not fit the encoding (for example a field longer than 4 GiB), or a primitive
    /// was asked for an output it cannot produce (HKDF output longer than 255 blocks).
    #[error("cannot encode: {0}")]
    Encoding(&'static str),

    /// A key bundle has no ML-KEM prekey, or one without a valid signature: the handshake is
    /// refused rather than run with X25519 alone (protocol v2 §5.1, no downgrade).
    #[error("the key bundle has no signed ML-KEM prekey; refusing a handshake without post-quantum protection")]
    MissingKemPrekey,

    /// A bundle, header or list names a device that is not in the user's verified device list.
    #[error("device {0} is not in the user's verified device list")]
    UnknownDevice(String),

    /// A device list is older than one already seen for the user: the server replayed an old list.
    #[error("device list version {offered} is older than version {seen} already seen for this user")]
    DeviceListRollback { offered: u64, seen: u64 },

    /// A device list has the version of one already seen but other content.
    #[error("device list version {0} differs from the list already seen at that version")]
    DeviceListMismatch(u64),

    /// A device list is malformed: no devices, too many, or a device twice.
    #[error("invalid device list: {0}")]
    InvalidDeviceList(&'static str),

    /// A message without a handshake preamble arrived for a device with which no session exists.
    #[error("no session with device {0}: the message cannot be opened here (a new session will be started)")]
    NoSession(String),

    /// A message whose key was already used or deleted: a replay, or a message too old to open.
    #[error("the message was already received (replay) or its key has been deleted")]
    DuplicateMessage,

    /// A message further ahead in its chain than the skipped-key bound allows.
    #[error("the message is {skip} messages ahead of the last one received; at most {max} may be skipped")]
    TooManySkipped { skip: u64, max: u64 },

    /// No pending device link matches the code typed.
    #[error(
        "the code matches no pending device link: check the code on the new device (links expire after 10 minutes)"
    )]
    LinkCodeMismatch,

    /// A decrypted content kind that this sender may not send (a history key from another user).
    #[error("unexpected content: {0}")]
    UnexpectedContent(&'static str),

    /// Persisted device keys are inconsistent (for example a prekey signature that does not match
    /// the stored identity) or in an unknown format.
    #[error("invalid stored device keys: {0}")]
    InvalidStoredKeys(&'static str),

    /// An attachment chunk failed to open: the blob was changed, reordered, cut short, mixed with
    /// another file's, or the key is not this attachment's.
    #[error("the attachment is damaged or incomplete (a chunk failed its check): download it again")]
    AttachmentDamaged,

    /// The blob is not the one the message or record names (its SHA-256 differs).
    #[error("the attachment is not the file the message names (its digest differs): download it again")]
    AttachmentDigestMismatch,
}
