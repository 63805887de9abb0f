//! Device keys: the identity key pair, signed and one-time prekeys, their public bundle messages
//! for the key directory, verification of fetched bundles, and [`DeviceKeys`], the persisted
//! secret state of one device.
//!
//! Secret keys are generated from 32 bytes of OS randomness ([`primitives::random_array`]):
//! the X25519 secrets as `StaticSecret::from(bytes)` (clamped at use, RFC 7748) and the Ed25519
//! key as `SigningKey::from_bytes(&seed)` (RFC 8032 seed). The temporary buffers are wiped, and
//! every secret type wipes itself on drop (x25519-dalek's `StaticSecret` and ed25519-dalek's
//! `SigningKey` are `ZeroizeOnDrop`). `Debug` output never shows secret bytes.

use std::collections::BTreeMap;
use std::fmt;

use caremesh_proto::messaging::v1 as proto;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::ids::{check_user_id, check_uuid_v7, new_id};
use crate::primitives::{self, random_array};
use crate::signing::{identity_binding_message, signed_prekey_message};

/// Most one-time prekeys one upload may carry (the key directory's limit).
pub const MAX_ONE_TIME_PREKEYS_PER_UPLOAD: usize = 100;

/// Format version of [`DeviceKeys`]' serialized form.
pub const DEVICE_KEYS_FORMAT: u32 = 1;

fn x25519_public(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

fn new_x25519_secret() -> Result<StaticSecret, CryptoError> {
    let bytes = random_array::<32>()?;
    Ok(StaticSecret::from(*bytes))
}

pub(crate) fn key32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], CryptoError> {
    bytes.try_into().map_err(|_| CryptoError::InvalidKey {
        what,
        reason: "must be 32 bytes",
    })
}

fn ed25519_public(bytes: &[u8], what: &'static str) -> Result<[u8; 32], CryptoError> {
    let key = key32(bytes, what)?;
    let decoded = VerifyingKey::from_bytes(&key).map_err(|_| CryptoError::InvalidKey {
        what,
        reason: "not a valid Ed25519 point encoding",
    })?;
    if decoded.is_weak() {
        return Err(CryptoError::InvalidKey {
            what,
            reason: "a low-order Ed25519 point",
        });
    }
    Ok(key)
}

// ---------------------------------------------------------------------------------------------
// Identity

/// A device's long-term identity: an Ed25519 signing key and an X25519 key agreement key, named
/// by a key id (a UUIDv7 chosen at creation; a new identity gets a new id).
///
/// The secrets live in their own heap allocations (as in every key type here), so moving the
/// struct, or a map of them rebalancing, moves only pointers and leaves no stale copy behind;
/// they are wiped when dropped.
pub struct IdentityKeyPair {
    key_id: String,
    signing: Box<SigningKey>,
    dh: Box<StaticSecret>,
    dh_public: [u8; 32],
}

impl IdentityKeyPair {
    /// A new identity from OS randomness, with a fresh key id.
    pub fn generate() -> Result<Self, CryptoError> {
        let seed = random_array::<32>()?;
        let dh = new_x25519_secret()?;
        Ok(Self::from_parts(new_id(), SigningKey::from_bytes(&seed), dh))
    }

    /// The identity of an Ed25519 seed and an X25519 secret, e.g. as a linked device receives it
    /// (protocol v2 §8) or a known-answer test gives it.
    pub fn from_secrets(key_id: &str, signing_seed: &[u8; 32], dh_secret: &[u8; 32]) -> Result<Self, CryptoError> {
        check_uuid_v7(key_id, "identity key id")?;
        Ok(Self::from_parts(
            key_id.to_owned(),
            SigningKey::from_bytes(signing_seed),
            StaticSecret::from(*dh_secret),
        ))
    }

    /// A second copy of the identity, for the provisioning message that hands it to a newly
    /// linked device of the same user (protocol v2 §8); dropped (and wiped) once sealed.
    pub fn duplicate(&self) -> Self {
        Self::from_parts(
            self.key_id.clone(),
            SigningKey::from_bytes(self.signing.as_bytes()),
            StaticSecret::from(*Zeroizing::new(self.dh.to_bytes())),
        )
    }

    /// The Ed25519 seed (for sealing a provisioning message only).
    pub(crate) fn signing_seed(&self) -> &[u8; 32] {
        self.signing.as_bytes()
    }

    pub(crate) fn from_parts(key_id: String, signing: SigningKey, dh: StaticSecret) -> Self {
        let dh_public = x25519_public(&dh);
        Self {
            key_id,
            signing: Box::new(signing),
            dh: Box::new(dh),
            dh_public,
        }
    }

    /// The identity key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The Ed25519 identity signing public key.
    pub fn signing_public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The X25519 identity public key.
    pub fn dh_public_key(&self) -> [u8; 32] {
        self.dh_public
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublicKey {
        IdentityPublicKey {
            key_id: self.key_id.clone(),
            signing_public_key: self.signing_public_key(),
            dh_public_key: self.dh_public,
        }
    }

    /// The `IdentityKey` message to publish for `user_id`, with the binding signature over
    /// (user id, key id, Ed25519 key, X25519 key). `create_time` is left for the server.
    pub fn to_proto(&self, user_id: &str) -> Result<proto::IdentityKey, CryptoError> {
        check_user_id(user_id, "user id")?;
        let signing_public_key = self.signing_public_key();
        let message = identity_binding_message(user_id, &self.key_id, &signing_public_key, &self.dh_public)?;
        Ok(proto::IdentityKey {
            key_id: self.key_id.clone(),
            signing_public_key: signing_public_key.to_vec(),
            dh_public_key: self.dh_public.to_vec(),
            dh_public_key_signature: self.sign_raw(&message).to_vec(),
            create_time: None,
        })
    }

    /// Ed25519 over exactly `message`: only for the crate's own domain-separated encodings.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    pub(crate) fn dh_secret(&self) -> &StaticSecret {
        &self.dh
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("key_id", &self.key_id)
            .field("signing_public_key", &hex::encode(self.signing_public_key()))
            .field("dh_public_key", &hex::encode(self.dh_public))
            .field("secrets", &"<redacted>")
            .finish()
    }
}

/// The public half of an identity: what a contact's keys are pinned to and what safety numbers
/// are computed from. Obtained from [`IdentityKeyPair::public`], from [`verify_identity`] (which
/// checks the binding signature) or from a [`crate::TrustStore`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IdentityPublicKeyRepr", into = "IdentityPublicKeyRepr")]
pub struct IdentityPublicKey {
    key_id: String,
    signing_public_key: [u8; 32],
    dh_public_key: [u8; 32],
}

impl IdentityPublicKey {
    /// The identity key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The Ed25519 identity signing public key (verifies [`crate::sign_detached`] signatures).
    pub fn signing_public_key(&self) -> &[u8; 32] {
        &self.signing_public_key
    }

    /// The X25519 identity public key.
    pub fn dh_public_key(&self) -> &[u8; 32] {
        &self.dh_public_key
    }

    /// Whether both keys and the key id are the same (constant time in the key bytes).
    pub fn same_keys(&self, other: &Self) -> bool {
        let keys =
            self.signing_public_key.ct_eq(&other.signing_public_key) & self.dh_public_key.ct_eq(&other.dh_public_key);
        bool::from(keys) && self.key_id == other.key_id
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityPublicKey")
            .field("key_id", &self.key_id)
            .field("signing_public_key", &hex::encode(self.signing_public_key))
            .field("dh_public_key", &hex::encode(self.dh_public_key))
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityPublicKeyRepr {
    key_id: String,
    signing_public_key: String,
    dh_public_key: String,
}

impl From<IdentityPublicKey> for IdentityPublicKeyRepr {
    fn from(key: IdentityPublicKey) -> Self {
        Self {
            key_id: key.key_id,
            signing_public_key: hex::encode(key.signing_public_key),
            dh_public_key: hex::encode(key.dh_public_key),
        }
    }
}

impl TryFrom<IdentityPublicKeyRepr> for IdentityPublicKey {
    type Error = CryptoError;

    fn try_from(repr: IdentityPublicKeyRepr) -> Result<Self, Self::Error> {
        check_uuid_v7(&repr.key_id, "identity key id")?;
        let bad = |what| CryptoError::InvalidKey {
            what,
            reason: "not 32 bytes of hex",
        };
        let signing = hex::decode(&repr.signing_public_key).map_err(|_| bad("Ed25519 identity key"))?;
        let dh = hex::decode(&repr.dh_public_key).map_err(|_| bad("X25519 identity key"))?;
        Ok(Self {
            key_id: repr.key_id,
            signing_public_key: ed25519_public(&signing, "Ed25519 identity key")?,
            dh_public_key: key32(&dh, "X25519 identity key")?,
        })
    }
}

/// Verifies a published `IdentityKey` of `user_id`: well-formed key id and keys, and the binding
/// signature by its Ed25519 key over (user id, key id, Ed25519 key, X25519 key). The server runs
/// this on upload with the caller's user id; clients run it on every fetched identity.
pub fn verify_identity(identity: &proto::IdentityKey, user_id: &str) -> Result<IdentityPublicKey, CryptoError> {
    check_user_id(user_id, "user id")?;
    check_uuid_v7(&identity.key_id, "identity key id")?;
    let signing_public_key = ed25519_public(&identity.signing_public_key, "Ed25519 identity key")?;
    let dh_public_key = key32(&identity.dh_public_key, "X25519 identity key")?;
    let message = identity_binding_message(user_id, &identity.key_id, &signing_public_key, &dh_public_key)?;
    primitives::ed25519_verify(
        &signing_public_key,
        &message,
        &identity.dh_public_key_signature,
        "identity key binding",
    )?;
    Ok(IdentityPublicKey {
        key_id: identity.key_id.clone(),
        signing_public_key,
        dh_public_key,
    })
}

// ---------------------------------------------------------------------------------------------
// Prekeys

/// The public part of a prekey, as verified from a bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicPrekey {
    key_id: String,
    public_key: [u8; 32],
}

impl PublicPrekey {
    /// The prekey id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }
}

impl fmt::Debug for PublicPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicPrekey")
            .field("key_id", &self.key_id)
            .field("public_key", &hex::encode(self.public_key))
            .finish()
    }
}

/// A medium-term X25519 prekey, signed by the identity signing key.
pub struct SignedPrekey {
    key_id: String,
    secret: Box<StaticSecret>,
    public: [u8; 32],
    signature: [u8; 64],
}

impl SignedPrekey {
    /// A new signed prekey for `user_id`'s `identity`, with a fresh key id.
    pub fn generate(identity: &IdentityKeyPair, user_id: &str) -> Result<Self, CryptoError> {
        Self::from_secret(identity, user_id, new_id(), new_x25519_secret()?)
    }

    pub(crate) fn from_secret(
        identity: &IdentityKeyPair,
        user_id: &str,
        key_id: String,
        secret: StaticSecret,
    ) -> Result<Self, CryptoError> {
        check_user_id(user_id, "user id")?;
        let public = x25519_public(&secret);
        let message = signed_prekey_message(user_id, identity.key_id(), &key_id, &public)?;
        let signature = identity.sign_raw(&message);
        Ok(Self {
            key_id,
            secret: Box::new(secret),
            public,
            signature,
        })
    }

    /// The prekey id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The identity signature over (user id, identity key id, prekey id, public key).
    pub fn signature(&self) -> [u8; 64] {
        self.signature
    }

    /// The `SignedPrekey` message to publish (`create_time` is left for the server).
    pub fn to_proto(&self) -> proto::SignedPrekey {
        proto::SignedPrekey {
            key_id: self.key_id.clone(),
            public_key: self.public.to_vec(),
            signature: self.signature.to_vec(),
            create_time: None,
        }
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for SignedPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPrekey")
            .field("key_id", &self.key_id)
            .field("public_key", &hex::encode(self.public))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Verifies a published `SignedPrekey` of `user_id` against that user's identity: well-formed id
/// and key, and the identity's signature over (user id, identity key id, prekey id, public key).
/// The server runs this on upload; clients on every fetched bundle (via [`verify_bundle`]).
pub fn verify_signed_prekey(
    prekey: &proto::SignedPrekey,
    user_id: &str,
    identity: &IdentityPublicKey,
) -> Result<PublicPrekey, CryptoError> {
    check_user_id(user_id, "user id")?;
    check_uuid_v7(&prekey.key_id, "signed prekey id")?;
    let public_key = key32(&prekey.public_key, "X25519 signed prekey")?;
    let message = signed_prekey_message(user_id, &identity.key_id, &prekey.key_id, &public_key)?;
    primitives::ed25519_verify(
        &identity.signing_public_key,
        &message,
        &prekey.signature,
        "signed prekey",
    )?;
    Ok(PublicPrekey {
        key_id: prekey.key_id.clone(),
        public_key,
    })
}

/// A single-use X25519 prekey. Its secret is deleted once a message sealed to it has been opened.
pub struct OneTimePrekey {
    key_id: String,
    secret: Box<StaticSecret>,
    public: [u8; 32],
}

impl OneTimePrekey {
    /// A new one-time prekey with a fresh key id.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_secret(new_id(), new_x25519_secret()?))
    }

    pub(crate) fn from_secret(key_id: String, secret: StaticSecret) -> Self {
        let public = x25519_public(&secret);
        Self {
            key_id,
            secret: Box::new(secret),
            public,
        }
    }

    /// The prekey id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The `OneTimePrekey` message to publish.
    pub fn to_proto(&self) -> proto::OneTimePrekey {
        proto::OneTimePrekey {
            key_id: self.key_id.clone(),
            public_key: self.public.to_vec(),
        }
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for OneTimePrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePrekey")
            .field("key_id", &self.key_id)
            .field("public_key", &hex::encode(self.public))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Checks a published `OneTimePrekey`: a canonical UUIDv7 id and a 32-byte key. (One-time
/// prekeys are not signed; a substituted one can only make the key agreement fail, or be caught by
/// the contributory check.)
pub fn check_one_time_prekey(prekey: &proto::OneTimePrekey) -> Result<PublicPrekey, CryptoError> {
    check_uuid_v7(&prekey.key_id, "one-time prekey id")?;
    Ok(PublicPrekey {
        key_id: prekey.key_id.clone(),
        public_key: key32(&prekey.public_key, "X25519 one-time prekey")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Bundles

/// A recipient's key bundle whose identity binding and signed-prekey signature have been
/// verified: the only input [`crate::seal`] accepts. Made by [`verify_bundle`] (or
/// [`DeviceKeys::own_bundle`]).
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    user_id: String,
    identity: IdentityPublicKey,
    signed_prekey: PublicPrekey,
    one_time_prekey: Option<PublicPrekey>,
    /// The identity key and signed prekey exactly as verified (none for our own bundle).
    verified_as: Option<(proto::IdentityKey, proto::SignedPrekey)>,
}

impl VerifiedBundle {
    /// The bundle's owner.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The owner's identity (compare it with the pinned one before sealing: [`crate::TrustStore`]).
    pub fn identity(&self) -> &IdentityPublicKey {
        &self.identity
    }

    /// The signed prekey.
    pub fn signed_prekey(&self) -> &PublicPrekey {
        &self.signed_prekey
    }

    /// The one-time prekey, when the directory had one left.
    pub fn one_time_prekey(&self) -> Option<&PublicPrekey> {
        self.one_time_prekey.as_ref()
    }

    /// Verifies the same user's next fetched `bundle` as [`verify_bundle`] does, but when its
    /// identity key and signed prekey are exactly those verified here (the contact has not
    /// rotated since), their two signatures are not checked again: only the one-time prekey,
    /// which is never signed, is new.
    pub fn verify_next(
        &self,
        bundle: &proto::KeyBundle,
        expected_user_id: &str,
    ) -> Result<VerifiedBundle, CryptoError> {
        let unchanged = self.verified_as.as_ref().is_some_and(|(identity, signed_prekey)| {
            self.user_id == expected_user_id
                && bundle.user_id == expected_user_id
                && bundle.identity_key.as_ref() == Some(identity)
                && bundle.signed_prekey.as_ref() == Some(signed_prekey)
        });
        if !unchanged {
            return verify_bundle(bundle, expected_user_id);
        }
        Ok(VerifiedBundle {
            one_time_prekey: bundle.one_time_prekey.as_ref().map(check_one_time_prekey).transpose()?,
            ..self.clone()
        })
    }
}

/// Verifies a fetched `KeyBundle` of `expected_user_id` (the user the caller asked for, not the
/// one the bundle claims): the owner matches, the identity binding signature and the signed
/// prekey signature verify, every id and key is well formed.
pub fn verify_bundle(bundle: &proto::KeyBundle, expected_user_id: &str) -> Result<VerifiedBundle, CryptoError> {
    check_user_id(expected_user_id, "user id")?;
    if bundle.user_id != expected_user_id {
        return Err(CryptoError::KeyMismatch("the bundle belongs to another user"));
    }
    let identity_proto = bundle.identity_key.as_ref().ok_or(CryptoError::InvalidKey {
        what: "key bundle",
        reason: "has no identity key",
    })?;
    let identity = verify_identity(identity_proto, expected_user_id)?;
    let signed_prekey_proto = bundle.signed_prekey.as_ref().ok_or(CryptoError::InvalidKey {
        what: "key bundle",
        reason: "has no signed prekey",
    })?;
    let signed_prekey = verify_signed_prekey(signed_prekey_proto, expected_user_id, &identity)?;
    let one_time_prekey = bundle.one_time_prekey.as_ref().map(check_one_time_prekey).transpose()?;
    Ok(VerifiedBundle {
        user_id: expected_user_id.to_owned(),
        identity,
        signed_prekey,
        one_time_prekey,
        verified_as: Some((identity_proto.clone(), signed_prekey_proto.clone())),
    })
}

// ---------------------------------------------------------------------------------------------
// Device keys

/// All secret key material of one device: the identity, the current signed prekey, the previous
/// one (so messages sealed just before a rotation still open) and the unspent one-time prekeys.
///
/// Serializable with serde for the SDK to persist (encrypted at rest by the SDK); the serialized
/// form holds the secrets in hex, so the caller should keep it in a wiped buffer
/// (`zeroize::Zeroizing<String>`) until it is encrypted. Deserializing checks the format version, every id and that the
/// stored prekey signatures match the stored identity. Not `Clone`: there is one copy of a
/// device's secrets.
pub struct DeviceKeys {
    user_id: String,
    identity: IdentityKeyPair,
    signed_prekey: SignedPrekey,
    previous_signed_prekey: Option<SignedPrekey>,
    one_time_prekeys: BTreeMap<String, OneTimePrekey>,
}

impl DeviceKeys {
    /// New keys for `user_id`'s device: a fresh identity and signed prekey, no one-time prekeys
    /// yet (see [`DeviceKeys::publish_request`]).
    pub fn generate(user_id: &str) -> Result<Self, CryptoError> {
        check_user_id(user_id, "user id")?;
        let identity = IdentityKeyPair::generate()?;
        let signed_prekey = SignedPrekey::generate(&identity, user_id)?;
        Ok(Self {
            user_id: user_id.to_owned(),
            identity,
            signed_prekey,
            previous_signed_prekey: None,
            one_time_prekeys: BTreeMap::new(),
        })
    }

    /// Keys for a device linked to an account that has its identity already (protocol v2 §8):
    /// the received identity, and a signed prekey of its own that is never published (the v1
    /// bundle stays the first device's; v2 device keys live in [`crate::v2::DeviceSecrets`]).
    pub fn with_identity(user_id: &str, identity: IdentityKeyPair) -> Result<Self, CryptoError> {
        check_user_id(user_id, "user id")?;
        let signed_prekey = SignedPrekey::generate(&identity, user_id)?;
        Ok(Self {
            user_id: user_id.to_owned(),
            identity,
            signed_prekey,
            previous_signed_prekey: None,
            one_time_prekeys: BTreeMap::new(),
        })
    }

    /// Device keys from given parts (known-answer tests).
    #[cfg(test)]
    pub(crate) fn from_parts(
        user_id: &str,
        identity: IdentityKeyPair,
        signed_prekey: SignedPrekey,
        one_time_prekeys: Vec<OneTimePrekey>,
    ) -> Self {
        Self {
            user_id: user_id.to_owned(),
            identity,
            signed_prekey,
            previous_signed_prekey: None,
            one_time_prekeys: one_time_prekeys
                .into_iter()
                .map(|prekey| (prekey.key_id.clone(), prekey))
                .collect(),
        }
    }

    /// The owner.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The identity key pair.
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// The current signed prekey.
    pub fn signed_prekey(&self) -> &SignedPrekey {
        &self.signed_prekey
    }

    /// The signed prekey before the last rotation, until [`DeviceKeys::forget_previous_signed_prekey`].
    pub fn previous_signed_prekey(&self) -> Option<&SignedPrekey> {
        self.previous_signed_prekey.as_ref()
    }

    /// How many unspent one-time prekey secrets this device holds.
    pub fn one_time_prekey_count(&self) -> usize {
        self.one_time_prekeys.len()
    }

    /// The ids of the unspent one-time prekeys.
    pub fn one_time_prekey_ids(&self) -> impl Iterator<Item = &str> {
        self.one_time_prekeys.keys().map(String::as_str)
    }

    /// The identity's `IdentityKey` message.
    pub fn identity_proto(&self) -> Result<proto::IdentityKey, CryptoError> {
        self.identity.to_proto(&self.user_id)
    }

    /// A `PublishKeyBundleRequest` with the identity, the current signed prekey and
    /// `one_time_count` (at most 100) newly generated one-time prekeys, whose secrets are kept.
    pub fn publish_request(&mut self, one_time_count: usize) -> Result<proto::PublishKeyBundleRequest, CryptoError> {
        let identity_key = self.identity_proto()?;
        let one_time_prekeys = self.new_one_time_prekeys(one_time_count)?;
        Ok(proto::PublishKeyBundleRequest {
            identity_key: Some(identity_key),
            signed_prekey: Some(self.signed_prekey.to_proto()),
            one_time_prekeys,
        })
    }

    /// An `UploadOneTimePrekeysRequest` with `count` (1 to 100) newly generated one-time prekeys,
    /// whose secrets are kept.
    pub fn top_up_request(&mut self, count: usize) -> Result<proto::UploadOneTimePrekeysRequest, CryptoError> {
        if count == 0 {
            return Err(CryptoError::OutOfRange {
                what: "one-time prekeys per upload",
                value: 0,
                max: MAX_ONE_TIME_PREKEYS_PER_UPLOAD,
            });
        }
        Ok(proto::UploadOneTimePrekeysRequest {
            one_time_prekeys: self.new_one_time_prekeys(count)?,
        })
    }

    fn new_one_time_prekeys(&mut self, count: usize) -> Result<Vec<proto::OneTimePrekey>, CryptoError> {
        if count > MAX_ONE_TIME_PREKEYS_PER_UPLOAD {
            return Err(CryptoError::OutOfRange {
                what: "one-time prekeys per upload",
                value: count,
                max: MAX_ONE_TIME_PREKEYS_PER_UPLOAD,
            });
        }
        // Generate all first, so a randomness failure leaves the stored keys unchanged.
        let fresh = (0..count)
            .map(|_| OneTimePrekey::generate())
            .collect::<Result<Vec<_>, _>>()?;
        let protos = fresh.iter().map(OneTimePrekey::to_proto).collect();
        for prekey in fresh {
            self.one_time_prekeys.insert(prekey.key_id.clone(), prekey);
        }
        Ok(protos)
    }

    /// Rotates the signed prekey: a new one becomes current, the current one becomes the previous
    /// one, and the one before that is deleted. Returns the `RotateSignedPrekeyRequest` to send.
    pub fn rotate_signed_prekey(&mut self) -> Result<proto::RotateSignedPrekeyRequest, CryptoError> {
        let fresh = SignedPrekey::generate(&self.identity, &self.user_id)?;
        let request = proto::RotateSignedPrekeyRequest {
            signed_prekey: Some(fresh.to_proto()),
        };
        let old = std::mem::replace(&mut self.signed_prekey, fresh);
        self.previous_signed_prekey = Some(old);
        Ok(request)
    }

    /// Deletes the previous signed prekey (messages sealed to it can no longer be opened).
    pub fn forget_previous_signed_prekey(&mut self) {
        self.previous_signed_prekey = None;
    }

    /// Removes a one-time prekey's secret and returns it (it is wiped when dropped). [`crate::open`]
    /// calls this once a message sealed to the prekey has been opened; the SDK may also call it to
    /// drop prekeys the server no longer has.
    pub fn take_one_time_prekey(&mut self, key_id: &str) -> Option<OneTimePrekey> {
        self.one_time_prekeys.remove(key_id)
    }

    /// This device's own bundle (identity and current signed prekey, no one-time prekey), for
    /// [`crate::seal_to_self`].
    pub fn own_bundle(&self) -> VerifiedBundle {
        VerifiedBundle {
            user_id: self.user_id.clone(),
            identity: self.identity.public(),
            signed_prekey: PublicPrekey {
                key_id: self.signed_prekey.key_id.clone(),
                public_key: self.signed_prekey.public,
            },
            one_time_prekey: None,
            verified_as: None,
        }
    }

    /// The current or previous signed prekey with this id.
    pub(crate) fn signed_prekey_by_id(&self, key_id: &str) -> Option<&SignedPrekey> {
        std::iter::once(&self.signed_prekey)
            .chain(self.previous_signed_prekey.as_ref())
            .find(|prekey| prekey.key_id == key_id)
    }

    pub(crate) fn one_time_prekey(&self, key_id: &str) -> Option<&OneTimePrekey> {
        self.one_time_prekeys.get(key_id)
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("user_id", &self.user_id)
            .field("identity", &self.identity)
            .field("signed_prekey", &self.signed_prekey)
            .field("previous_signed_prekey", &self.previous_signed_prekey)
            .field("one_time_prekeys", &self.one_time_prekeys.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Serialization of secrets (hex strings; temporary buffers wiped)

/// Serializes a 32-byte secret as hex through a buffer that is wiped afterwards.
struct SecretHex<'a>(&'a [u8; 32]);

impl Serialize for SecretHex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = Zeroizing::new([0u8; 64]);
        hex::encode_to_slice(self.0, buffer.as_mut_slice()).map_err(serde::ser::Error::custom)?;
        let text = std::str::from_utf8(buffer.as_slice()).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// Deserializes a 32-byte hex secret; the decoded bytes and the text are wiped on drop.
struct SecretHexIn(Zeroizing<[u8; 32]>);

impl<'de> Deserialize<'de> for SecretHexIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.as_bytes(), bytes.as_mut_slice())
            .map_err(|_| D::Error::custom("a secret key must be 64 hex digits"))?;
        Ok(Self(bytes))
    }
}

#[derive(Serialize)]
struct IdentityKeyPairOut<'a> {
    key_id: &'a str,
    signing_key: SecretHex<'a>,
    dh_key: SecretHex<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityKeyPairIn {
    key_id: String,
    signing_key: SecretHexIn,
    dh_key: SecretHexIn,
}

impl Serialize for IdentityKeyPair {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        IdentityKeyPairOut {
            key_id: &self.key_id,
            signing_key: SecretHex(self.signing.as_bytes()),
            dh_key: SecretHex(self.dh.as_bytes()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IdentityKeyPair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = IdentityKeyPairIn::deserialize(deserializer)?;
        check_uuid_v7(&stored.key_id, "identity key id").map_err(D::Error::custom)?;
        let signing = SigningKey::from_bytes(&stored.signing_key.0);
        let dh = StaticSecret::from(*stored.dh_key.0);
        Ok(Self::from_parts(stored.key_id, signing, dh))
    }
}

#[derive(Serialize)]
struct PrekeyOut<'a> {
    key_id: &'a str,
    secret_key: SecretHex<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrekeyIn {
    key_id: String,
    secret_key: SecretHexIn,
    #[serde(default)]
    signature: Option<String>,
}

impl Serialize for SignedPrekey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PrekeyOut {
            key_id: &self.key_id,
            secret_key: SecretHex(self.secret.as_bytes()),
            signature: Some(hex::encode(self.signature)),
        }
        .serialize(serializer)
    }
}

impl Serialize for OneTimePrekey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PrekeyOut {
            key_id: &self.key_id,
            secret_key: SecretHex(self.secret.as_bytes()),
            signature: None,
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct DeviceKeysOut<'a> {
    format: u32,
    user_id: &'a str,
    identity: &'a IdentityKeyPair,
    signed_prekey: &'a SignedPrekey,
    previous_signed_prekey: Option<&'a SignedPrekey>,
    one_time_prekeys: Vec<&'a OneTimePrekey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceKeysIn {
    format: u32,
    user_id: String,
    identity: IdentityKeyPair,
    signed_prekey: PrekeyIn,
    previous_signed_prekey: Option<PrekeyIn>,
    one_time_prekeys: Vec<PrekeyIn>,
}

impl Serialize for DeviceKeys {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DeviceKeysOut {
            format: DEVICE_KEYS_FORMAT,
            user_id: &self.user_id,
            identity: &self.identity,
            signed_prekey: &self.signed_prekey,
            previous_signed_prekey: self.previous_signed_prekey.as_ref(),
            one_time_prekeys: self.one_time_prekeys.values().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DeviceKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = DeviceKeysIn::deserialize(deserializer)?;
        Self::try_from(stored).map_err(D::Error::custom)
    }
}

impl TryFrom<DeviceKeysIn> for DeviceKeys {
    type Error = CryptoError;

    fn try_from(stored: DeviceKeysIn) -> Result<Self, CryptoError> {
        if stored.format != DEVICE_KEYS_FORMAT {
            return Err(CryptoError::InvalidStoredKeys("unknown format version"));
        }
        check_user_id(&stored.user_id, "user id")?;
        let signed_prekey = restore_signed_prekey(stored.signed_prekey, &stored.identity, &stored.user_id)?;
        let previous_signed_prekey = stored
            .previous_signed_prekey
            .map(|prekey| restore_signed_prekey(prekey, &stored.identity, &stored.user_id))
            .transpose()?;
        if previous_signed_prekey
            .as_ref()
            .is_some_and(|previous| previous.key_id == signed_prekey.key_id)
        {
            return Err(CryptoError::InvalidStoredKeys(
                "the previous signed prekey has the current one's id",
            ));
        }
        let mut one_time_prekeys = BTreeMap::new();
        for prekey in stored.one_time_prekeys {
            check_uuid_v7(&prekey.key_id, "one-time prekey id")?;
            if prekey.signature.is_some() {
                return Err(CryptoError::InvalidStoredKeys("a one-time prekey has a signature"));
            }
            let restored = OneTimePrekey::from_secret(prekey.key_id, StaticSecret::from(*prekey.secret_key.0));
            if one_time_prekeys.insert(restored.key_id.clone(), restored).is_some() {
                return Err(CryptoError::InvalidStoredKeys("duplicate one-time prekey id"));
            }
        }
        Ok(Self {
            user_id: stored.user_id,
            identity: stored.identity,
            signed_prekey,
            previous_signed_prekey,
            one_time_prekeys,
        })
    }
}

/// Rebuilds a stored signed prekey and checks its stored signature against the stored identity
/// (so keys of another identity or user, or corrupted ones, are refused).
fn restore_signed_prekey(
    stored: PrekeyIn,
    identity: &IdentityKeyPair,
    user_id: &str,
) -> Result<SignedPrekey, CryptoError> {
    check_uuid_v7(&stored.key_id, "signed prekey id")?;
    let signature_hex = stored
        .signature
        .ok_or(CryptoError::InvalidStoredKeys("a signed prekey without signature"))?;
    let signature = hex::decode(signature_hex).map_err(|_| CryptoError::InvalidStoredKeys("signature is not hex"))?;
    let restored = SignedPrekey::from_secret(
        identity,
        user_id,
        stored.key_id,
        StaticSecret::from(*stored.secret_key.0),
    )?;
    // Ed25519 signing is deterministic (RFC 8032): re-signing with the stored identity must
    // reproduce the stored signature, else the prekey belongs to another identity or user.
    if !bool::from(restored.signature.as_slice().ct_eq(signature.as_slice())) {
        return Err(CryptoError::InvalidStoredKeys(
            "a signed prekey's signature does not match the identity",
        ));
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn secret_fields_wipe_themselves_on_drop() {
        // The secret-holding fields of every key type: dropping a key drops (and wipes) them.
        assert_zeroize_on_drop::<SigningKey>();
        assert_zeroize_on_drop::<StaticSecret>();
        assert_zeroize_on_drop::<Zeroizing<[u8; 32]>>();
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let keys = DeviceKeys::generate("alice").unwrap();
        let debug = format!("{keys:?}");
        let secret_hex = hex::encode(keys.identity.dh.as_bytes());
        let seed_hex = hex::encode(keys.identity.signing.as_bytes());
        let prekey_hex = hex::encode(keys.signed_prekey.secret.as_bytes());
        for secret in [secret_hex, seed_hex, prekey_hex] {
            assert!(!debug.contains(&secret));
        }
        assert!(debug.contains("<redacted>"));
    }
}
