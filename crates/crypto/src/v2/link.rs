//! Linking a new device (§8): the new device's code and commitment, the provisioning message that
//! carries the account identity and history keys to it, sealed to its ephemeral key and the link
//! secret the server never sees.

use std::fmt;

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::{Encoder, Reader};
use crate::ids::{check_user_id, check_uuid_v7, new_id};
use crate::keys::IdentityKeyPair;
use crate::primitives::{self, AES_KEY_LEN, NONCE_LEN, random_array, x25519_agree};
use crate::v2::archive::{HistoryKey, HistoryKeyRing};
use crate::v2::device::ct_eq;

/// Label of the commitment.
pub const COMMITMENT_LABEL: &str = "caremesh-link-v1/commitment";
/// Label of the sealing key derivation.
pub const SEAL_LABEL: &str = "caremesh-link-v1/seal";
/// Label of the provisioning message's associated data.
pub const LINK_AAD_LABEL: &str = "caremesh-link-v1/aad";
/// Label of the provisioning plaintext.
pub const PROVISIONING_LABEL: &str = "caremesh-provisioning-v1";
/// Length of the link secret in bytes (80 bits).
pub const LINK_SECRET_LEN: usize = 10;
/// Prefix of the QR code's text.
pub const LINK_URI_PREFIX: &str = "caremesh-link:";

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The link secret as `XXXX-XXXX-XXXX-XXXX` (Crockford base32, most significant bits first).
fn encode_code(secret: &[u8; LINK_SECRET_LEN]) -> String {
    let value = secret.iter().fold(0u128, |acc, byte| (acc << 8) | u128::from(*byte));
    let mut code = String::with_capacity(19);
    for index in 0..16u32 {
        if index > 0 && index % 4 == 0 {
            code.push('-');
        }
        let digit = (value >> (5 * (15 - index))) & 0x1F;
        code.push(char::from(CROCKFORD.get(digit as usize).copied().unwrap_or(b'0')));
    }
    code
}

/// Reads a typed code: case-insensitive, hyphens and spaces ignored, `O` read as 0 and `I`, `L`
/// as 1 (Crockford).
fn decode_code(code: &str) -> Result<Zeroizing<[u8; LINK_SECRET_LEN]>, CryptoError> {
    let bad = CryptoError::LinkCodeMismatch;
    let mut value = 0u128;
    let mut digits = 0;
    for c in code.chars().filter(|c| !matches!(c, '-' | ' ')) {
        let c = match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        };
        let digit = CROCKFORD.iter().position(|d| char::from(*d) == c).ok_or(bad.clone())?;
        value = (value << 5) | digit as u128;
        digits += 1;
    }
    if digits != 16 {
        return Err(bad);
    }
    let mut secret = Zeroizing::new([0u8; LINK_SECRET_LEN]);
    for (index, byte) in secret.iter_mut().enumerate() {
        *byte = (value >> (8 * (LINK_SECRET_LEN - 1 - index))) as u8;
    }
    Ok(secret)
}

fn commitment(
    user_id: &str,
    device_id: &str,
    ephemeral_public: &[u8; 32],
    secret: &[u8],
) -> Result<[u8; 32], CryptoError> {
    let mut encoder = Encoder::new(COMMITMENT_LABEL)?;
    encoder
        .field(user_id.as_bytes())?
        .field(device_id.as_bytes())?
        .field(ephemeral_public)?
        .field(secret)?;
    Ok(primitives::sha256(&encoder.finish()))
}

/// The new device's side of a link: its device id, ephemeral key `E` and link secret `s`.
pub struct LinkRequest {
    user_id: String,
    device_id: String,
    ephemeral: Box<StaticSecret>,
    ephemeral_public: [u8; 32],
    secret: Zeroizing<[u8; LINK_SECRET_LEN]>,
}

impl fmt::Debug for LinkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkRequest")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl LinkRequest {
    /// A new link request for a new device of `user_id`.
    pub fn new(user_id: &str) -> Result<Self, CryptoError> {
        Self::with(
            user_id,
            new_id(),
            &*random_array::<32>()?,
            &*random_array::<LINK_SECRET_LEN>()?,
        )
    }

    /// A link request from given values (known-answer tests).
    pub fn with(
        user_id: &str,
        device_id: String,
        ephemeral_secret: &[u8; 32],
        secret: &[u8; LINK_SECRET_LEN],
    ) -> Result<Self, CryptoError> {
        check_user_id(user_id, "user id")?;
        check_uuid_v7(&device_id, "device id")?;
        let ephemeral = StaticSecret::from(*ephemeral_secret);
        Ok(Self {
            user_id: user_id.to_owned(),
            device_id,
            ephemeral_public: PublicKey::from(&ephemeral).to_bytes(),
            ephemeral: Box::new(ephemeral),
            secret: Zeroizing::new(*secret),
        })
    }

    /// The new device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// `E`'s public key, uploaded with the pending link.
    pub fn ephemeral_public(&self) -> [u8; 32] {
        self.ephemeral_public
    }

    /// The code to show: `XXXX-XXXX-XXXX-XXXX`.
    pub fn code(&self) -> String {
        encode_code(&self.secret)
    }

    /// The QR code's text for a pending link `link_id`.
    pub fn qr_text(&self, link_id: &str) -> String {
        format!("{LINK_URI_PREFIX}{link_id}:{}", self.code())
    }

    /// The commitment `C` uploaded with the pending link.
    pub fn commitment(&self) -> Result<[u8; 32], CryptoError> {
        commitment(
            &self.user_id,
            &self.device_id,
            &self.ephemeral_public,
            self.secret.as_slice(),
        )
    }

    /// Opens the provisioning message (step 4). The caller then checks the identity against the
    /// user's published one.
    pub fn open(&self, sealed: &SealedProvisioning) -> Result<Provisioning, CryptoError> {
        let (key, nonce) = seal_keys(
            &self.ephemeral,
            &sealed.approver_public,
            &self.user_id,
            &self.device_id,
            &self.ephemeral_public,
            &sealed.approver_public,
            self.secret.as_slice(),
        )?;
        let aad = link_aad(
            &self.user_id,
            &self.device_id,
            &self.ephemeral_public,
            &sealed.approver_public,
        )?;
        let plaintext = Zeroizing::new(primitives::aes256gcm_open(&key, &nonce, &aad, &sealed.sealed)?);
        Provisioning::decode(&plaintext)
    }
}

/// A pending link as the existing device receives it from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLink {
    /// The user (the caller's own).
    pub user_id: String,
    /// The new device's id.
    pub device_id: String,
    /// `E`'s public key.
    pub ephemeral_public: [u8; 32],
    /// The commitment `C`.
    pub commitment: [u8; 32],
}

impl PendingLink {
    /// Whether the typed `code` is this link's: its commitment, recomputed, matches
    /// (constant-time). A server that substituted `E` cannot make it match.
    pub fn matches(&self, code: &str) -> bool {
        let Ok(secret) = decode_code(code) else {
            return false;
        };
        commitment(
            &self.user_id,
            &self.device_id,
            &self.ephemeral_public,
            secret.as_slice(),
        )
        .map(|expected| ct_eq(&expected, &self.commitment))
        .unwrap_or(false)
    }

    /// Seals `provisioning` for this link after checking `code` against it (step 3), with a
    /// fresh `E2`.
    pub fn seal(&self, code: &str, provisioning: &Provisioning) -> Result<SealedProvisioning, CryptoError> {
        self.seal_with(code, provisioning, &*random_array::<32>()?)
    }

    /// [`Self::seal`] with a given `E2` secret (known-answer tests).
    pub fn seal_with(
        &self,
        code: &str,
        provisioning: &Provisioning,
        approver_secret: &[u8; 32],
    ) -> Result<SealedProvisioning, CryptoError> {
        if !self.matches(code) {
            return Err(CryptoError::LinkCodeMismatch);
        }
        let secret = decode_code(code)?;
        let approver = StaticSecret::from(*approver_secret);
        let approver_public = PublicKey::from(&approver).to_bytes();
        let (key, nonce) = seal_keys(
            &approver,
            &self.ephemeral_public,
            &self.user_id,
            &self.device_id,
            &self.ephemeral_public,
            &approver_public,
            secret.as_slice(),
        )?;
        let aad = link_aad(&self.user_id, &self.device_id, &self.ephemeral_public, &approver_public)?;
        let sealed = primitives::aes256gcm_seal(&key, &nonce, &aad, &provisioning.encode()?)?;
        Ok(SealedProvisioning {
            approver_public,
            sealed,
        })
    }
}

/// `E2`'s public key and the sealed provisioning message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedProvisioning {
    /// `E2`'s public key.
    pub approver_public: [u8; 32],
    /// The ciphertext and tag.
    pub sealed: Vec<u8>,
}

fn seal_keys(
    own: &StaticSecret,
    their_public: &[u8; 32],
    user_id: &str,
    device_id: &str,
    ephemeral_public: &[u8; 32],
    approver_public: &[u8; 32],
    secret: &[u8],
) -> Result<(Zeroizing<[u8; AES_KEY_LEN]>, [u8; NONCE_LEN]), CryptoError> {
    let dh = x25519_agree(own, their_public, "the link key")?;
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 + LINK_SECRET_LEN));
    ikm.extend_from_slice(dh.as_slice());
    ikm.extend_from_slice(secret);
    let mut info = Encoder::new(SEAL_LABEL)?;
    info.field(user_id.as_bytes())?
        .field(device_id.as_bytes())?
        .field(ephemeral_public)?
        .field(approver_public)?;
    let mut okm = Zeroizing::new([0u8; AES_KEY_LEN + NONCE_LEN]);
    primitives::hkdf_sha256(&[0u8; 32], &ikm, &info.finish(), okm.as_mut_slice())?;
    let (key, nonce) = okm.split_at(AES_KEY_LEN);
    let key: [u8; AES_KEY_LEN] = key.try_into().map_err(|_| CryptoError::Encoding("link key"))?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Encoding("link nonce"))?;
    Ok((Zeroizing::new(key), nonce))
}

fn link_aad(
    user_id: &str,
    device_id: &str,
    ephemeral_public: &[u8; 32],
    approver_public: &[u8; 32],
) -> Result<Vec<u8>, CryptoError> {
    let mut aad = Encoder::new(LINK_AAD_LABEL)?;
    aad.field(user_id.as_bytes())?
        .field(device_id.as_bytes())?
        .field(ephemeral_public)?
        .field(approver_public)?;
    Ok(aad.finish())
}

/// What a provisioning message carries: the account identity, the history key ring and the
/// approving device.
pub struct Provisioning {
    /// The account identity.
    pub identity: IdentityKeyPair,
    /// The history keys, newest first.
    pub history: HistoryKeyRing,
    /// The device that approved the link.
    pub approver_device_id: String,
}

impl fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioning")
            .field("identity", &self.identity)
            .field("history_keys", &self.history.keys().len())
            .field("approver_device_id", &self.approver_device_id)
            .finish()
    }
}

impl Provisioning {
    /// The `PROVISIONING` encoding (§8).
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut encoder = Encoder::new(PROVISIONING_LABEL)?;
        encoder
            .field(self.identity.key_id().as_bytes())?
            .field(self.identity.signing_seed())?
            .field(self.identity.dh_secret().as_bytes())?;
        let keys = self.history.keys();
        encoder.u32(u32::try_from(keys.len()).map_err(|_| CryptoError::Encoding("history key count"))?);
        for key in keys {
            encoder
                .field(key.history_key_id.as_bytes())?
                .field(key.bytes()?.as_slice())?;
        }
        encoder.field(self.approver_device_id.as_bytes())?;
        Ok(Zeroizing::new(encoder.finish()))
    }

    fn decode(plaintext: &[u8]) -> Result<Self, CryptoError> {
        let bad =
            || CryptoError::MalformedEnvelope("the provisioning message is not a caremesh-provisioning-v1 encoding");
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| bad());
        let key32 = |bytes: &[u8]| -> Result<Zeroizing<[u8; 32]>, CryptoError> {
            let key: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
            Ok(Zeroizing::new(key))
        };
        let mut reader = Reader::new(plaintext);
        if reader.field().ok_or_else(bad)? != PROVISIONING_LABEL.as_bytes() {
            return Err(bad());
        }
        let key_id = text(reader.field().ok_or_else(bad)?)?;
        let seed = key32(reader.field().ok_or_else(bad)?)?;
        let dh = key32(reader.field().ok_or_else(bad)?)?;
        let identity = IdentityKeyPair::from_secrets(&key_id, &seed, &dh)?;
        let count = reader.u32().ok_or_else(bad)?;
        if count == 0 || count > 10_000 {
            return Err(bad());
        }
        let mut keys = Vec::new();
        for _ in 0..count {
            let id = text(reader.field().ok_or_else(bad)?)?;
            let key = key32(reader.field().ok_or_else(bad)?)?;
            keys.push(HistoryKey::from_bytes(id, &key)?);
        }
        let approver_device_id = text(reader.field().ok_or_else(bad)?)?;
        check_uuid_v7(&approver_device_id, "approver device id")?;
        if !reader.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            identity,
            history: HistoryKeyRing::from_keys(keys)?,
            approver_device_id,
        })
    }
}
