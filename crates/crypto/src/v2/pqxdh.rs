//! PQXDH session establishment (§5): X25519 and ML-KEM-768 after Signal's PQXDH, giving the
//! ratchet's first root key `SK`, the session's associated data `AD`, and the preamble that the
//! initiator attaches to its messages until the responder answers.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::ids::{check_user_id, check_uuid_v7};
use crate::keys::{IdentityKeyPair, IdentityPublicKey};
use crate::primitives::{self, KEM_CIPHERTEXT_LEN, random_array, x25519_agree};
use crate::v2::device::{DeviceKeyKind, DeviceSecrets, VerifiedDeviceBundle};

/// The HKDF info string of `SK` (§5.2).
pub const PQXDH_INFO: &str = "caremesh-pqxdh-v1_CURVE25519_SHA-256_ML-KEM-768";
/// Label of the session's associated data.
pub const PQXDH_AD_LABEL: &str = "caremesh-pqxdh-v1/ad";

/// What the initiator attaches to its messages until it has decrypted one from the responder
/// (§6.3): everything the responder needs to run its half of PQXDH.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preamble {
    /// The initiator's account identity key id.
    pub sender_identity_key_id: String,
    /// `EK_A`'s public key (32 bytes).
    #[serde(with = "crate::v2::hex_serde")]
    pub ephemeral_public: Vec<u8>,
    /// The responder's signed prekey used.
    pub signed_prekey_id: String,
    /// The responder's one-time X25519 prekey used; empty when none.
    pub one_time_prekey_id: String,
    /// The responder's ML-KEM prekey used.
    pub kem_prekey_id: String,
    /// Its kind: 1 last-resort, 2 one-time.
    pub kem_kind: u32,
    /// The ML-KEM ciphertext `CT` (1088 bytes).
    #[serde(with = "crate::v2::hex_serde")]
    pub kem_ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Preamble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preamble")
            .field("sender_identity_key_id", &self.sender_identity_key_id)
            .field("ephemeral_public", &hex::encode(&self.ephemeral_public))
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("one_time_prekey_id", &self.one_time_prekey_id)
            .field("kem_prekey_id", &self.kem_prekey_id)
            .field("kem_kind", &self.kem_kind)
            .finish()
    }
}

impl Preamble {
    /// Checks every field's form (ids, lengths, kind) before any key is looked up.
    pub(crate) fn check(&self) -> Result<([u8; 32], DeviceKeyKind), CryptoError> {
        check_uuid_v7(&self.sender_identity_key_id, "sender identity key id")?;
        check_uuid_v7(&self.signed_prekey_id, "signed prekey id")?;
        if !self.one_time_prekey_id.is_empty() {
            check_uuid_v7(&self.one_time_prekey_id, "one-time prekey id")?;
        }
        check_uuid_v7(&self.kem_prekey_id, "ML-KEM prekey id")?;
        let kind = DeviceKeyKind::from_kem_code(self.kem_kind)?;
        if self.kem_ciphertext.len() != KEM_CIPHERTEXT_LEN {
            return Err(CryptoError::MalformedEnvelope(
                "the ML-KEM ciphertext must be 1088 bytes",
            ));
        }
        let ephemeral = self
            .ephemeral_public
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::MalformedEnvelope("the ephemeral key must be 32 bytes"))?;
        Ok((ephemeral, kind))
    }
}

/// The result of PQXDH on either side.
pub struct Handshake {
    /// The shared secret `SK`, the ratchet's first root key.
    pub sk: Zeroizing<[u8; 32]>,
    /// The session's associated data `AD`.
    pub ad: Vec<u8>,
    /// The preamble (the initiator sends it; the responder received it).
    pub preamble: Preamble,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("preamble", &self.preamble)
            .field("sk", &"<redacted>")
            .finish()
    }
}

/// One side of a session: a device of a user with the user's account identity.
#[derive(Clone, Copy, Debug)]
pub struct Party<'a> {
    /// The user.
    pub user_id: &'a str,
    /// The device.
    pub device_id: &'a str,
    /// The user's account identity.
    pub identity: &'a IdentityPublicKey,
}

/// `AD = lp(label) lp(user_a) lp(device_A) Encode(IK_A) lp(user_b) lp(device_B) Encode(IK_B)`,
/// A being the initiator.
pub fn session_ad(initiator: Party<'_>, responder: Party<'_>) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(PQXDH_AD_LABEL)?;
    for party in [initiator, responder] {
        check_user_id(party.user_id, "user id")?;
        check_uuid_v7(party.device_id, "device id")?;
        encoder
            .field(party.user_id.as_bytes())?
            .field(party.device_id.as_bytes())?
            .field(party.identity.key_id().as_bytes())?
            .field(party.identity.signing_public_key())?
            .field(party.identity.dh_public_key())?;
    }
    Ok(encoder.finish())
}

/// `SK = HKDF(ZERO32, 0xFF×32 || DH1 || DH2 || DH3 [|| DH4] || SS, PQXDH_INFO, 32)`.
fn derive_sk(dhs: &[&[u8; 32]], kem_shared: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 6));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.as_slice());
    }
    ikm.extend_from_slice(kem_shared);
    let mut sk = Zeroizing::new([0u8; 32]);
    primitives::hkdf_sha256(&[0u8; 32], &ikm, PQXDH_INFO.as_bytes(), sk.as_mut_slice())?;
    Ok(sk)
}

/// The initiator's half (§5.2) with fresh `EK_A` and `m` from the OS.
pub fn initiate(
    me: &IdentityKeyPair,
    my_user_id: &str,
    my_device_id: &str,
    bundle: &VerifiedDeviceBundle,
) -> Result<Handshake, CryptoError> {
    let ephemeral = random_array::<32>()?;
    let m = random_array::<32>()?;
    initiate_with(me, my_user_id, my_device_id, bundle, &ephemeral, &m)
}

/// The initiator's half with the given ephemeral secret and ML-KEM randomness (known-answer
/// tests; the protocol uses [`initiate`]).
pub fn initiate_with(
    me: &IdentityKeyPair,
    my_user_id: &str,
    my_device_id: &str,
    bundle: &VerifiedDeviceBundle,
    ephemeral_secret: &[u8; 32],
    kem_m: &[u8; 32],
) -> Result<Handshake, CryptoError> {
    let ephemeral = StaticSecret::from(*ephemeral_secret);
    let identity = bundle.identity();
    let dh1 = x25519_agree(me.dh_secret(), &bundle.signed_prekey, "the signed prekey")?;
    let dh2 = x25519_agree(&ephemeral, identity.dh_public_key(), "the identity key")?;
    let dh3 = x25519_agree(&ephemeral, &bundle.signed_prekey, "the signed prekey")?;
    let dh4 = match &bundle.one_time_prekey {
        Some((_, key)) => Some(x25519_agree(&ephemeral, key, "the one-time prekey")?),
        None => None,
    };
    let (kem_ciphertext, kem_shared) = primitives::kem_encapsulate_with(&bundle.kem_public_key, kem_m)?;
    let mut dhs = vec![&*dh1, &*dh2, &*dh3];
    dhs.extend(dh4.as_deref());
    let sk = derive_sk(&dhs, &kem_shared)?;
    let me_public = me.public();
    let ad = session_ad(
        Party {
            user_id: my_user_id,
            device_id: my_device_id,
            identity: &me_public,
        },
        Party {
            user_id: &bundle.user_id,
            device_id: &bundle.device_id,
            identity,
        },
    )?;
    let kem_kind = bundle.kem_kind.kem_code().ok_or(CryptoError::MissingKemPrekey)?;
    Ok(Handshake {
        sk,
        ad,
        preamble: Preamble {
            sender_identity_key_id: me.key_id().to_owned(),
            ephemeral_public: PublicKey::from(&ephemeral).to_bytes().to_vec(),
            signed_prekey_id: bundle.signed_prekey_id.clone(),
            one_time_prekey_id: bundle
                .one_time_prekey
                .as_ref()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
            kem_prekey_id: bundle.kem_prekey_id.clone(),
            kem_kind,
            kem_ciphertext,
        },
    })
}

/// The responder's half (§5.3): recomputes `SK` and `AD` from the preamble with this device's
/// prekeys. Nothing is deleted here: the caller spends the one-time keys
/// ([`DeviceSecrets::spend`]) once the first message authenticated. `sender` must be the
/// initiator's verified identity, whose key id the preamble names.
pub fn respond(
    me: &IdentityKeyPair,
    me_party: Party<'_>,
    device: &DeviceSecrets,
    sender: Party<'_>,
    preamble: &Preamble,
) -> Result<Handshake, CryptoError> {
    let (ephemeral, kem_kind) = preamble.check()?;
    if preamble.sender_identity_key_id != sender.identity.key_id() {
        return Err(CryptoError::KeyMismatch(
            "the preamble names another identity than the sender's current one",
        ));
    }
    if me_party.device_id != device.device_id() {
        return Err(CryptoError::KeyMismatch("the message is for another device"));
    }
    let signed = device.signed_prekey_secret(&preamble.signed_prekey_id)?;
    let kem = device.kem_secret(kem_kind, &preamble.kem_prekey_id)?;
    let dh1 = x25519_agree(signed, sender.identity.dh_public_key(), "the sender's identity key")?;
    let dh2 = x25519_agree(me.dh_secret(), &ephemeral, "the ephemeral key")?;
    let dh3 = x25519_agree(signed, &ephemeral, "the ephemeral key")?;
    let dh4 = if preamble.one_time_prekey_id.is_empty() {
        None
    } else {
        let secret = device.one_time_secret(&preamble.one_time_prekey_id)?;
        Some(x25519_agree(secret, &ephemeral, "the ephemeral key")?)
    };
    let kem_shared = kem.decapsulate(&preamble.kem_ciphertext)?;
    let mut dhs = vec![&*dh1, &*dh2, &*dh3];
    dhs.extend(dh4.as_deref());
    Ok(Handshake {
        sk: derive_sk(&dhs, &kem_shared)?,
        ad: session_ad(sender, me_party)?,
        preamble: preamble.clone(),
    })
}
