//! caremesh's client-side cryptography for end-to-end encrypted direct messages (DESIGN.md §4).
//!
//! [`v2`] is messaging protocol v2 (`docs/protocol.md`: devices, PQXDH, the Double Ratchet,
//! history, linking), which new sends use. The rest of this page documents version 1:
//! device identity and prekeys, sealing in the X3DH pattern, safety numbers and identity pinning,
//! and domain-separated Ed25519 signatures for other envelope formats.
//!
//! The wire types are the protobuf messages of `caremesh.messaging.v1` ([`Envelope`] and the key
//! directory's `IdentityKey`, `SignedPrekey`, `OneTimePrekey`, `KeyBundle`), used as they are.
//!
//! # Keys
//!
//! Each device has ([`DeviceKeys`]):
//! - an identity ([`IdentityKeyPair`]): an Ed25519 signing key and an X25519 key, named by a
//!   UUIDv7 key id. Its published form carries a *binding signature* by the Ed25519 key over
//!   (user id, key id, Ed25519 key, X25519 key), so neither key can be paired with another, nor the
//!   identity published under another user;
//! - a signed prekey ([`SignedPrekey`], X25519), signed by the identity over (user id, identity key
//!   id, prekey id, public key); the previous one is kept after a rotation;
//! - one-time prekeys ([`OneTimePrekey`], X25519), each deleted once a message sealed to it opened.
//!
//! Secret keys are 32 bytes from the OS random generator (`getrandom`): X25519 secrets are
//! `StaticSecret::from(bytes)` (clamped when used, RFC 7748) and the Ed25519 key is
//! `SigningKey::from_bytes(&seed)` (RFC 8032). The per-envelope ephemeral key is made the same way
//! and dropped after sealing (x25519-dalek's `EphemeralSecret` can only be drawn from a
//! rand_core 0.10 RNG; `StaticSecret` from our own random bytes is equivalent). Secrets wipe
//! themselves on drop and never appear in `Debug` output. Every signature is verified strictly
//! (ed25519-dalek `verify_strict`: canonical `S`, no small-order `R` or public key).
//!
//! A fetched bundle is only usable after [`verify_bundle`] (binding and prekey signatures, the
//! owner is the user asked for); compare its identity with the pinned one ([`TrustStore`]) before
//! sealing.
//!
//! # Sealing (`caremesh-x3dh-v1`)
//!
//! [`seal`] with the sender's identity `IK_A`, a fresh ephemeral key `EK_A`, and the recipient's
//! identity `IK_B`, signed prekey `SPK_B` and optional one-time prekey `OPK_B`:
//!
//! ```text
//! DH1 = X25519(IK_A, SPK_B)   DH2 = X25519(EK_A, IK_B)   DH3 = X25519(EK_A, SPK_B)
//! DH4 = X25519(EK_A, OPK_B)   (only when a one-time prekey is used)
//! key = HKDF-SHA256(salt = 32 zero bytes,
//!                   IKM  = 0xFF×32 || DH1 || DH2 || DH3 [|| DH4],
//!                   info = "caremesh-x3dh-v1", length 32)
//! envelope.ciphertext = AES-256-GCM(key, nonce = 12 random bytes, AAD, plaintext) || 16-byte tag
//! ```
//!
//! Every X25519 output is checked to be contributory (not all zero, i.e. the peer's point does not
//! have small order); otherwise sealing or opening fails with [`CryptoError::NonContributory`].
//! The key is used for exactly one message, so the random nonce never repeats under a key.
//!
//! The associated data (AAD) binds every header field, the identities and the message's ids.
//! `lp(x)` is the length of `x` as 4 bytes big-endian followed by `x`; `u32be` is 4 bytes
//! big-endian:
//!
//! ```text
//! lp("caremesh-x3dh-v1/aad")
//! u32be(envelope.version)                      -- 1
//! lp(sender_user_id)                           -- from MessageContext
//! lp(recipient_user_id)                        -- from MessageContext (the conversation's recipient,
//!                                                 also in the sender's own copy)
//! lp(message_id)                               -- from MessageContext (canonical UUIDv7)
//! lp(envelope.sender_identity_key_id)
//! lp(sender Ed25519 identity public key)       -- 32 bytes
//! lp(sender X25519 identity public key)        -- 32 bytes
//! lp(envelope.recipient_identity_key_id)
//! lp(recipient Ed25519 identity public key)    -- 32 bytes
//! lp(recipient X25519 identity public key)     -- 32 bytes
//! lp(envelope.recipient_signed_prekey_id)
//! lp(envelope.recipient_one_time_prekey_id)    -- empty when none was used
//! lp(envelope.ephemeral_public_key)            -- 32 bytes
//! ```
//!
//! The nonce is the AEAD nonce and the ciphertext carries the tag, so every byte of the envelope
//! is authenticated. Ids are strings compared and bound byte for byte; key and message ids must be
//! canonical UUIDv7 (lowercase, hyphenated).
//!
//! [`seal_to_self`] seals the sender's own copy with the same [`MessageContext`] to the sender's
//! own identity and current signed prekey (no one-time prekey). [`open`] takes the ids the caller
//! expects and the sender's verified identity, finds its identity, signed prekey (current or
//! previous) and one-time prekey by the envelope's ids, recomputes the key and decrypts; the
//! one-time prekey secret is deleted only after the envelope authenticated.
//!
//! Plaintexts are at most [`MAX_PLAINTEXT_LEN`] bytes (256 KiB minus the tag), so ciphertexts stay
//! within the messaging service's 256 KiB limit.
//!
//! **Opening is once for envelopes that used a one-time prekey**, and only while the signed prekey
//! is the current or previous one: that is the forward secrecy the prekeys buy. The SDK must keep
//! what it opened (plaintext, encrypted at rest) if history should stay readable.
//!
//! # Other signatures
//!
//! [`sign_detached`] / [`verify_detached`] sign `lp("caremesh-detached-signature-v1") ||
//! lp(domain) || message` with the identity key, for record and group envelopes (see
//! [`signing`] for every signed encoding).
//!
//! # Encodings
//!
//! Everything signed, authenticated or hashed is a sequence of length-prefixed fields starting with
//! a label that names its purpose and version, so no two purposes can share a byte string.
//!
//! # Safety numbers
//!
//! [`safety_number`] / [`Fingerprint`]: 60 digits from 5200 iterations of SHA-512 over each
//! party's user id and identity keys (see [`safety`]); [`TrustStore`] pins contacts'
//! identities on first use and reports changes.

pub mod attachment;
mod encoding;
mod envelope;
mod error;
mod ids;
#[cfg(test)]
mod kat;
mod keys;
pub mod policy_envelope;
pub mod primitives;
pub mod safety;
pub mod signing;
pub mod v2;

pub use caremesh_proto::messaging::v1::Envelope;
pub use envelope::{
    AAD_LABEL, ENVELOPE_VERSION, MAX_CIPHERTEXT_LEN, MAX_PLAINTEXT_LEN, MessageContext, X3DH_INFO, open, seal,
    seal_to_self,
};
pub use error::CryptoError;
pub use ids::{MAX_USER_ID_LEN, new_id};
pub use keys::{
    DEVICE_KEYS_FORMAT, DeviceKeys, IdentityKeyPair, IdentityPublicKey, MAX_ONE_TIME_PREKEYS_PER_UPLOAD, OneTimePrekey,
    PublicPrekey, SignedPrekey, VerifiedBundle, check_one_time_prekey, verify_bundle, verify_identity,
    verify_signed_prekey,
};
pub use safety::{Fingerprint, TrustCheck, TrustStore, safety_number};
pub use signing::{sign_detached, verify_detached};
