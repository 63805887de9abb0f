//! Device keys and their signatures (§3.2), the signed device list (§4), a device's secret
//! prekeys ([`DeviceSecrets`]) and bundle verification (§5.1).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::ids::{check_user_id, check_uuid_v7, new_id};
use crate::keys::{IdentityKeyPair, IdentityPublicKey, key32};
use crate::primitives::{self, KEM_PUBLIC_KEY_LEN, KEM_SEED_LEN, KemSecretKey, random_array};

/// Most devices a user may have.
pub const MAX_DEVICES: usize = 10;
/// Label of device key signatures.
pub const DEVICE_KEY_LABEL: &str = "caremesh-device-key-v1";
/// Label of the device list encoding.
pub const DEVICE_LIST_LABEL: &str = "caremesh-device-list-v1";
/// Format version of [`DeviceSecrets`]' serialized form.
pub const DEVICE_SECRETS_FORMAT: u32 = 1;

/// The three kinds of signed device key (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKeyKind {
    /// The X25519 signed prekey.
    SignedPrekey,
    /// The ML-KEM-768 last-resort prekey.
    KemLastResort,
    /// An ML-KEM-768 one-time prekey.
    KemOneTime,
}

impl DeviceKeyKind {
    /// The kind label bound into the signature.
    pub fn label(self) -> &'static str {
        match self {
            Self::SignedPrekey => "x25519-signed-prekey",
            Self::KemLastResort => "ml-kem-768-last-resort-prekey",
            Self::KemOneTime => "ml-kem-768-one-time-prekey",
        }
    }

    /// The ML-KEM prekey kind code of the preamble (§6.3): 1 last-resort, 2 one-time.
    pub fn kem_code(self) -> Option<u32> {
        match self {
            Self::SignedPrekey => None,
            Self::KemLastResort => Some(1),
            Self::KemOneTime => Some(2),
        }
    }

    /// The ML-KEM kind of a preamble code.
    pub fn from_kem_code(code: u32) -> Result<Self, CryptoError> {
        match code {
            1 => Ok(Self::KemLastResort),
            2 => Ok(Self::KemOneTime),
            _ => Err(CryptoError::MalformedEnvelope("unknown ML-KEM prekey kind")),
        }
    }

    fn check_public_key(self, public_key: &[u8]) -> Result<(), CryptoError> {
        match self {
            Self::SignedPrekey => key32(public_key, "X25519 signed prekey").map(|_| ()),
            Self::KemLastResort | Self::KemOneTime => primitives::kem_check_public_key(public_key),
        }
    }
}

/// The bytes `IKsig` signs for a device key (§3.2).
pub fn device_key_message(
    kind: DeviceKeyKind,
    user_id: &str,
    identity_key_id: &str,
    device_id: &str,
    key_id: &str,
    public_key: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    check_user_id(user_id, "user id")?;
    check_uuid_v7(device_id, "device id")?;
    check_uuid_v7(key_id, "device key id")?;
    let mut encoder = Encoder::new(DEVICE_KEY_LABEL)?;
    encoder
        .field(kind.label().as_bytes())?
        .field(user_id.as_bytes())?
        .field(identity_key_id.as_bytes())?
        .field(device_id.as_bytes())?
        .field(key_id.as_bytes())?
        .field(public_key)?;
    Ok(encoder.finish())
}

/// Signs a device key with the account identity.
pub fn sign_device_key(
    identity: &IdentityKeyPair,
    kind: DeviceKeyKind,
    user_id: &str,
    device_id: &str,
    key_id: &str,
    public_key: &[u8],
) -> Result<[u8; 64], CryptoError> {
    kind.check_public_key(public_key)?;
    let message = device_key_message(kind, user_id, identity.key_id(), device_id, key_id, public_key)?;
    Ok(identity.sign_raw(&message))
}

/// Verifies a device key's signature by the account identity, and the key's encoding. The server
/// runs this on upload; clients on every bundle.
pub fn verify_device_key(
    identity: &IdentityPublicKey,
    kind: DeviceKeyKind,
    user_id: &str,
    device_id: &str,
    key_id: &str,
    public_key: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    kind.check_public_key(public_key)?;
    let message = device_key_message(kind, user_id, identity.key_id(), device_id, key_id, public_key)?;
    primitives::ed25519_verify(identity.signing_public_key(), &message, signature, kind.label())
}

// ---------------------------------------------------------------------------------------------
// Device list

/// A user's device list (§4): 1 to [`MAX_DEVICES`] distinct device ids, kept in ascending byte
/// order, at a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    user_id: String,
    identity_key_id: String,
    version: u64,
    device_ids: Vec<String>,
}

impl DeviceList {
    /// A list of `device_ids` (any order; duplicates, none or more than ten are refused).
    pub fn new(
        user_id: &str,
        identity_key_id: &str,
        version: u64,
        device_ids: impl IntoIterator<Item = String>,
    ) -> Result<Self, CryptoError> {
        check_user_id(user_id, "user id")?;
        check_uuid_v7(identity_key_id, "identity key id")?;
        if version == 0 {
            return Err(CryptoError::InvalidDeviceList("versions start at 1"));
        }
        let mut device_ids: Vec<String> = device_ids.into_iter().collect();
        if device_ids.is_empty() {
            return Err(CryptoError::InvalidDeviceList("no devices"));
        }
        if device_ids.len() > MAX_DEVICES {
            return Err(CryptoError::InvalidDeviceList("too many devices (at most 10)"));
        }
        for id in &device_ids {
            check_uuid_v7(id, "device id")?;
        }
        device_ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if device_ids.windows(2).any(|pair| pair.first() == pair.get(1)) {
            return Err(CryptoError::InvalidDeviceList("a device is listed twice"));
        }
        Ok(Self {
            user_id: user_id.to_owned(),
            identity_key_id: identity_key_id.to_owned(),
            version,
            device_ids,
        })
    }

    /// The owner.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The identity that signs the list.
    pub fn identity_key_id(&self) -> &str {
        &self.identity_key_id
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The device ids, ascending.
    pub fn device_ids(&self) -> &[String] {
        &self.device_ids
    }

    /// Whether `device_id` is listed.
    pub fn contains(&self, device_id: &str) -> bool {
        self.device_ids.iter().any(|id| id == device_id)
    }

    /// The next version with `device_id` added.
    pub fn with_device(&self, device_id: &str) -> Result<Self, CryptoError> {
        let ids = self.device_ids.iter().cloned().chain([device_id.to_owned()]);
        Self::new(&self.user_id, &self.identity_key_id, self.next_version()?, ids)
    }

    /// The next version without `device_id` (which must be listed, and not the last device).
    pub fn without_device(&self, device_id: &str) -> Result<Self, CryptoError> {
        if !self.contains(device_id) {
            return Err(CryptoError::UnknownDevice(device_id.to_owned()));
        }
        let ids = self.device_ids.iter().filter(|id| *id != device_id).cloned();
        Self::new(&self.user_id, &self.identity_key_id, self.next_version()?, ids)
    }

    fn next_version(&self) -> Result<u64, CryptoError> {
        self.version
            .checked_add(1)
            .ok_or(CryptoError::InvalidDeviceList("version overflow"))
    }

    /// The signed encoding (§4).
    pub fn encoding(&self) -> Result<Vec<u8>, CryptoError> {
        let mut encoder = Encoder::new(DEVICE_LIST_LABEL)?;
        encoder
            .field(self.user_id.as_bytes())?
            .field(self.identity_key_id.as_bytes())?
            .raw(&self.version.to_be_bytes());
        let count = u32::try_from(self.device_ids.len()).map_err(|_| CryptoError::Encoding("device count"))?;
        encoder.u32(count);
        for id in &self.device_ids {
            encoder.field(id.as_bytes())?;
        }
        Ok(encoder.finish())
    }

    /// Signs the list with the account identity (which must be the one named in the list).
    pub fn sign(&self, identity: &IdentityKeyPair) -> Result<[u8; 64], CryptoError> {
        if identity.key_id() != self.identity_key_id {
            return Err(CryptoError::KeyMismatch("the device list names another identity"));
        }
        Ok(identity.sign_raw(&self.encoding()?))
    }

    /// Verifies a signed list of `user_id` with the user's (verified) identity.
    pub fn verify(
        user_id: &str,
        identity: &IdentityPublicKey,
        version: u64,
        device_ids: impl IntoIterator<Item = String>,
        signature: &[u8],
    ) -> Result<Self, CryptoError> {
        let list = Self::new(user_id, identity.key_id(), version, device_ids)?;
        primitives::ed25519_verify(
            identity.signing_public_key(),
            &list.encoding()?,
            signature,
            "device list",
        )?;
        Ok(list)
    }
}

/// What changed in a user's device list since the client last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceListChange {
    /// Devices listed now and not before.
    pub added: Vec<String>,
    /// Devices listed before and not now.
    pub removed: Vec<String>,
}

impl DeviceListChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenList {
    version: u64,
    identity_key_id: String,
    device_ids: Vec<String>,
}

/// The newest verified device list seen per user, to refuse rollbacks and report changes (§4).
/// Serializable for the SDK to persist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceListTracker {
    seen: BTreeMap<String, SeenList>,
}

impl DeviceListTracker {
    /// Records a verified list: refuses an older version ([`CryptoError::DeviceListRollback`]) or
    /// other content at a version already seen ([`CryptoError::DeviceListMismatch`]), and returns
    /// the devices added and removed since the last list seen (all added on first sight).
    ///
    /// A list signed by another identity than the last one seen starts the user's history anew:
    /// whether that identity is trusted is the [`crate::TrustStore`]'s decision (a changed identity
    /// is refused until the user accepts it), and a new identity's lists start at version 1.
    pub fn observe(&mut self, list: &DeviceList) -> Result<DeviceListChange, CryptoError> {
        let previous = self
            .seen
            .get(list.user_id())
            .filter(|seen| seen.identity_key_id == list.identity_key_id());
        if let Some(seen) = previous {
            if list.version() < seen.version {
                return Err(CryptoError::DeviceListRollback {
                    offered: list.version(),
                    seen: seen.version,
                });
            }
            if list.version() == seen.version && seen.device_ids != list.device_ids() {
                return Err(CryptoError::DeviceListMismatch(list.version()));
            }
        }
        let before: &[String] = previous.map(|seen| seen.device_ids.as_slice()).unwrap_or_default();
        let change = DeviceListChange {
            added: list
                .device_ids()
                .iter()
                .filter(|id| !before.contains(id))
                .cloned()
                .collect(),
            removed: before.iter().filter(|id| !list.contains(id)).cloned().collect(),
        };
        self.seen.insert(
            list.user_id().to_owned(),
            SeenList {
                version: list.version(),
                identity_key_id: list.identity_key_id().to_owned(),
                device_ids: list.device_ids().to_vec(),
            },
        );
        Ok(change)
    }

    /// The newest version seen for `user_id`, if any.
    pub fn seen_version(&self, user_id: &str) -> Option<u64> {
        self.seen.get(user_id).map(|seen| seen.version)
    }

    /// Forgets a user's list (after the user accepted a new identity, whose lists start anew).
    pub fn forget(&mut self, user_id: &str) {
        self.seen.remove(user_id);
    }
}

// ---------------------------------------------------------------------------------------------
// A device's secret prekeys

/// An X25519 prekey of this device (signed or one-time).
#[derive(Clone)]
pub(crate) struct X25519Prekey {
    pub(crate) key_id: String,
    pub(crate) secret: Box<StaticSecret>,
    pub(crate) public: [u8; 32],
}

impl X25519Prekey {
    fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_secret(new_id(), *random_array::<32>()?))
    }

    fn from_secret(key_id: String, secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Self {
            key_id,
            secret: Box::new(secret),
            public,
        }
    }
}

/// An ML-KEM-768 prekey of this device (last-resort or one-time).
pub(crate) struct KemPrekey {
    pub(crate) key_id: String,
    pub(crate) secret: Box<KemSecretKey>,
}

impl KemPrekey {
    fn generate() -> Result<Self, CryptoError> {
        Ok(Self {
            key_id: new_id(),
            secret: Box::new(KemSecretKey::generate()?),
        })
    }
}

/// A public device key with its signature, ready to publish.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishedKey {
    /// The key id.
    pub key_id: String,
    /// The public key (32 bytes X25519, 1184 bytes ML-KEM-768).
    pub public_key: Vec<u8>,
    /// Ed25519 by the account identity (§3.2); empty for one-time X25519 prekeys.
    pub signature: Vec<u8>,
}

impl fmt::Debug for PublishedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishedKey")
            .field("key_id", &self.key_id)
            .field("public_key_len", &self.public_key.len())
            .finish()
    }
}

/// One device's secret prekeys (§3.2): the X25519 signed prekey and the ML-KEM-768 last-resort
/// prekey (each with the previous one after a rotation), and the one-time X25519 and ML-KEM-768
/// prekeys not yet spent. The account identity is held beside it, not in it (it is shared by
/// the user's devices). Secrets are wiped when dropped and never shown by `Debug`.
pub struct DeviceSecrets {
    device_id: String,
    signed_prekey: X25519Prekey,
    previous_signed_prekey: Option<X25519Prekey>,
    last_resort: KemPrekey,
    previous_last_resort: Option<KemPrekey>,
    one_time: BTreeMap<String, X25519Prekey>,
    kem_one_time: BTreeMap<String, KemPrekey>,
}

impl fmt::Debug for DeviceSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSecrets")
            .field("device_id", &self.device_id)
            .field("signed_prekey_id", &self.signed_prekey.key_id)
            .field("last_resort_id", &self.last_resort.key_id)
            .field("one_time", &self.one_time.len())
            .field("kem_one_time", &self.kem_one_time.len())
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl DeviceSecrets {
    /// A new device with a fresh device id, signed prekey and last-resort prekey.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::generate_for(new_id())
    }

    /// A new device with the given device id (a linking device chose its id first).
    pub fn generate_for(device_id: String) -> Result<Self, CryptoError> {
        check_uuid_v7(&device_id, "device id")?;
        Ok(Self {
            device_id,
            signed_prekey: X25519Prekey::generate()?,
            previous_signed_prekey: None,
            last_resort: KemPrekey::generate()?,
            previous_last_resort: None,
            one_time: BTreeMap::new(),
            kem_one_time: BTreeMap::new(),
        })
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The signed prekey, signed for publishing.
    pub fn signed_prekey(&self, identity: &IdentityKeyPair, user_id: &str) -> Result<PublishedKey, CryptoError> {
        let key = &self.signed_prekey;
        self.publish(
            identity,
            user_id,
            DeviceKeyKind::SignedPrekey,
            &key.key_id,
            key.public.to_vec(),
        )
    }

    /// The last-resort ML-KEM prekey, signed for publishing.
    pub fn last_resort_prekey(&self, identity: &IdentityKeyPair, user_id: &str) -> Result<PublishedKey, CryptoError> {
        let key = &self.last_resort;
        self.publish(
            identity,
            user_id,
            DeviceKeyKind::KemLastResort,
            &key.key_id,
            key.secret.public_key(),
        )
    }

    fn publish(
        &self,
        identity: &IdentityKeyPair,
        user_id: &str,
        kind: DeviceKeyKind,
        key_id: &str,
        public_key: Vec<u8>,
    ) -> Result<PublishedKey, CryptoError> {
        let signature = sign_device_key(identity, kind, user_id, &self.device_id, key_id, &public_key)?;
        Ok(PublishedKey {
            key_id: key_id.to_owned(),
            public_key,
            signature: signature.to_vec(),
        })
    }

    /// Makes `count` new one-time X25519 prekeys and `count` signed one-time ML-KEM prekeys, keeps
    /// their secrets, and returns the public halves to upload.
    pub fn new_one_time_prekeys(
        &mut self,
        identity: &IdentityKeyPair,
        user_id: &str,
        count: usize,
    ) -> Result<(Vec<PublishedKey>, Vec<PublishedKey>), CryptoError> {
        let max = crate::MAX_ONE_TIME_PREKEYS_PER_UPLOAD;
        if count > max {
            return Err(CryptoError::OutOfRange {
                what: "one-time prekeys per upload",
                value: count,
                max,
            });
        }
        let mut x25519 = Vec::with_capacity(count);
        let mut kem = Vec::with_capacity(count);
        for _ in 0..count {
            let key = X25519Prekey::generate()?;
            x25519.push(PublishedKey {
                key_id: key.key_id.clone(),
                public_key: key.public.to_vec(),
                signature: Vec::new(),
            });
            self.one_time.insert(key.key_id.clone(), key);
            let key = KemPrekey::generate()?;
            kem.push(self.publish(
                identity,
                user_id,
                DeviceKeyKind::KemOneTime,
                &key.key_id,
                key.secret.public_key(),
            )?);
            self.kem_one_time.insert(key.key_id.clone(), key);
        }
        Ok((x25519, kem))
    }

    /// Rotates the signed prekey and the last-resort prekey, keeping the previous ones (for
    /// messages in flight), and returns the new ones signed.
    pub fn rotate(
        &mut self,
        identity: &IdentityKeyPair,
        user_id: &str,
    ) -> Result<(PublishedKey, PublishedKey), CryptoError> {
        let signed = X25519Prekey::generate()?;
        let last_resort = KemPrekey::generate()?;
        self.previous_signed_prekey = Some(std::mem::replace(&mut self.signed_prekey, signed));
        self.previous_last_resort = Some(std::mem::replace(&mut self.last_resort, last_resort));
        Ok((
            self.signed_prekey(identity, user_id)?,
            self.last_resort_prekey(identity, user_id)?,
        ))
    }

    /// Deletes the previous signed and last-resort prekeys (30 days after a rotation).
    pub fn forget_previous(&mut self) {
        self.previous_signed_prekey = None;
        self.previous_last_resort = None;
    }

    /// How many one-time prekeys of each kind are held (X25519, ML-KEM).
    pub fn one_time_counts(&self) -> (usize, usize) {
        (self.one_time.len(), self.kem_one_time.len())
    }

    /// The signed prekey's secret by id (current or previous).
    pub(crate) fn signed_prekey_secret(&self, key_id: &str) -> Result<&StaticSecret, CryptoError> {
        [Some(&self.signed_prekey), self.previous_signed_prekey.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.key_id == key_id)
            .map(|key| key.secret.as_ref())
            .ok_or_else(|| unknown("signed prekey", key_id))
    }

    /// The ML-KEM prekey's secret by kind and id.
    pub(crate) fn kem_secret(&self, kind: DeviceKeyKind, key_id: &str) -> Result<&KemSecretKey, CryptoError> {
        let found = match kind {
            DeviceKeyKind::KemOneTime => self.kem_one_time.get(key_id),
            _ => [Some(&self.last_resort), self.previous_last_resort.as_ref()]
                .into_iter()
                .flatten()
                .find(|key| key.key_id == key_id),
        };
        found
            .map(|key| key.secret.as_ref())
            .ok_or_else(|| unknown("ML-KEM prekey", key_id))
    }

    /// The one-time X25519 prekey's secret by id.
    pub(crate) fn one_time_secret(&self, key_id: &str) -> Result<&StaticSecret, CryptoError> {
        self.one_time
            .get(key_id)
            .map(|key| key.secret.as_ref())
            .ok_or_else(|| unknown("one-time prekey", key_id))
    }

    /// Deletes the one-time secrets a handshake used, once its first message authenticated.
    pub(crate) fn spend(&mut self, one_time_id: &str, kem_kind: DeviceKeyKind, kem_id: &str) {
        if !one_time_id.is_empty() {
            self.one_time.remove(one_time_id);
        }
        if kem_kind == DeviceKeyKind::KemOneTime {
            self.kem_one_time.remove(kem_id);
        }
    }

    fn to_repr(&self) -> DeviceSecretsRepr {
        let x = |key: &X25519Prekey| KeyRepr {
            key_id: key.key_id.clone(),
            secret: Zeroizing::new(hex::encode(key.secret.to_bytes())),
        };
        let k = |key: &KemPrekey| KeyRepr {
            key_id: key.key_id.clone(),
            secret: Zeroizing::new(hex::encode(key.secret.seed())),
        };
        DeviceSecretsRepr {
            format: DEVICE_SECRETS_FORMAT,
            device_id: self.device_id.clone(),
            signed_prekey: x(&self.signed_prekey),
            previous_signed_prekey: self.previous_signed_prekey.as_ref().map(x),
            last_resort: k(&self.last_resort),
            previous_last_resort: self.previous_last_resort.as_ref().map(k),
            one_time: self.one_time.values().map(x).collect(),
            kem_one_time: self.kem_one_time.values().map(k).collect(),
        }
    }

    fn from_repr(repr: DeviceSecretsRepr) -> Result<Self, CryptoError> {
        if repr.format != DEVICE_SECRETS_FORMAT {
            return Err(CryptoError::InvalidStoredKeys("unknown device secrets format"));
        }
        check_uuid_v7(&repr.device_id, "device id")?;
        let x = |key: &KeyRepr| -> Result<X25519Prekey, CryptoError> {
            let bytes = Zeroizing::new(hex::decode(key.secret.as_str()).map_err(|_| stored())?);
            let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| stored())?;
            Ok(X25519Prekey::from_secret(key.key_id.clone(), secret))
        };
        let k = |key: &KeyRepr| -> Result<KemPrekey, CryptoError> {
            let bytes = Zeroizing::new(hex::decode(key.secret.as_str()).map_err(|_| stored())?);
            let seed: &[u8; KEM_SEED_LEN] = bytes.as_slice().try_into().map_err(|_| stored())?;
            Ok(KemPrekey {
                key_id: key.key_id.clone(),
                secret: Box::new(KemSecretKey::from_seed(seed)),
            })
        };
        Ok(Self {
            device_id: repr.device_id,
            signed_prekey: x(&repr.signed_prekey)?,
            previous_signed_prekey: repr.previous_signed_prekey.as_ref().map(x).transpose()?,
            last_resort: k(&repr.last_resort)?,
            previous_last_resort: repr.previous_last_resort.as_ref().map(k).transpose()?,
            one_time: repr
                .one_time
                .iter()
                .map(|key| x(key).map(|key| (key.key_id.clone(), key)))
                .collect::<Result<_, _>>()?,
            kem_one_time: repr
                .kem_one_time
                .iter()
                .map(|key| k(key).map(|key| (key.key_id.clone(), key)))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The persisted form (hex secrets, format version): the SDK must encrypt it at rest.
impl Serialize for DeviceSecrets {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_repr().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DeviceSecrets {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_repr(DeviceSecretsRepr::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

fn unknown(what: &'static str, id: &str) -> CryptoError {
    CryptoError::UnknownKey {
        what,
        id: id.to_owned(),
    }
}

fn stored() -> CryptoError {
    CryptoError::InvalidStoredKeys("a device secret is not valid hex of the right length")
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRepr {
    key_id: String,
    secret: Zeroizing<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSecretsRepr {
    format: u32,
    device_id: String,
    signed_prekey: KeyRepr,
    previous_signed_prekey: Option<KeyRepr>,
    last_resort: KeyRepr,
    previous_last_resort: Option<KeyRepr>,
    one_time: Vec<KeyRepr>,
    kem_one_time: Vec<KeyRepr>,
}

// ---------------------------------------------------------------------------------------------
// Bundles

/// The ML-KEM prekey of a bundle, as the directory served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KemPrekeyPublic {
    /// The key id.
    pub key_id: String,
    /// Last-resort or one-time (never [`DeviceKeyKind::SignedPrekey`]).
    pub kind: DeviceKeyKind,
    /// The encapsulation key (1184 bytes).
    pub public_key: Vec<u8>,
    /// The account identity's signature (§3.2).
    pub signature: Vec<u8>,
}

/// A device's bundle as the directory served it (§5.1), not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBundle {
    /// The bundle's owner.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// The signed prekey: id, public key, signature.
    pub signed_prekey: PublishedKey,
    /// The ML-KEM prekey; `None` is refused (no downgrade).
    pub kem_prekey: Option<KemPrekeyPublic>,
    /// A one-time X25519 prekey, when the device had one left.
    pub one_time_prekey: Option<PublishedKey>,
}

/// A bundle that passed [`verify_device_bundle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDeviceBundle {
    pub(crate) user_id: String,
    pub(crate) device_id: String,
    pub(crate) identity: IdentityPublicKey,
    pub(crate) signed_prekey_id: String,
    pub(crate) signed_prekey: [u8; 32],
    pub(crate) kem_prekey_id: String,
    pub(crate) kem_kind: DeviceKeyKind,
    pub(crate) kem_public_key: Vec<u8>,
    pub(crate) one_time_prekey: Option<(String, [u8; 32])>,
}

impl VerifiedDeviceBundle {
    /// The owner.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The device.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The owner's identity.
    pub fn identity(&self) -> &IdentityPublicKey {
        &self.identity
    }
}

/// Verifies a bundle (§5.1) against the owner's verified identity and verified device list:
/// the device is listed, the signed prekey and the ML-KEM prekey carry valid signatures for their
/// kinds, the ML-KEM key decodes, and an ML-KEM prekey is present at all
/// ([`CryptoError::MissingKemPrekey`]).
pub fn verify_device_bundle(
    bundle: &DeviceBundle,
    identity: &IdentityPublicKey,
    list: &DeviceList,
) -> Result<VerifiedDeviceBundle, CryptoError> {
    if list.user_id() != bundle.user_id || list.identity_key_id() != identity.key_id() {
        return Err(CryptoError::KeyMismatch(
            "the bundle, identity and device list are of different users",
        ));
    }
    if !list.contains(&bundle.device_id) {
        return Err(CryptoError::UnknownDevice(bundle.device_id.clone()));
    }
    let spk = &bundle.signed_prekey;
    verify_device_key(
        identity,
        DeviceKeyKind::SignedPrekey,
        &bundle.user_id,
        &bundle.device_id,
        &spk.key_id,
        &spk.public_key,
        &spk.signature,
    )?;
    let kem = bundle.kem_prekey.as_ref().ok_or(CryptoError::MissingKemPrekey)?;
    if kem.kind == DeviceKeyKind::SignedPrekey {
        return Err(CryptoError::MissingKemPrekey);
    }
    verify_device_key(
        identity,
        kem.kind,
        &bundle.user_id,
        &bundle.device_id,
        &kem.key_id,
        &kem.public_key,
        &kem.signature,
    )?;
    if kem.public_key.len() != KEM_PUBLIC_KEY_LEN {
        return Err(CryptoError::MissingKemPrekey);
    }
    let one_time_prekey = match &bundle.one_time_prekey {
        None => None,
        Some(key) => {
            check_uuid_v7(&key.key_id, "one-time prekey id")?;
            Some((key.key_id.clone(), key32(&key.public_key, "one-time prekey")?))
        }
    };
    Ok(VerifiedDeviceBundle {
        user_id: bundle.user_id.clone(),
        device_id: bundle.device_id.clone(),
        identity: identity.clone(),
        signed_prekey_id: spk.key_id.clone(),
        signed_prekey: key32(&spk.public_key, "X25519 signed prekey")?,
        kem_prekey_id: kem.key_id.clone(),
        kem_kind: kem.kind,
        kem_public_key: kem.public_key.clone(),
        one_time_prekey,
    })
}

/// Constant-time equality of two byte strings (equal lengths are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
