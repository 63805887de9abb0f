//! The Double Ratchet (§6), after Signal's specification: HKDF-SHA256 root chain, HMAC-SHA256
//! chains, AES-256-GCM with the header and the session's identities in the associated data, a
//! bounded store of skipped message keys, and decryption on a copy of the state so that a
//! message that does not authenticate changes nothing.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::ids::check_uuid_v7;
use crate::primitives::{self, AES_KEY_LEN, NONCE_LEN, random_array, x25519_agree};
use crate::v2::pqxdh::Preamble;

/// Most message keys one message may skip in a chain (§6.5).
pub const MAX_SKIP: u32 = 1000;
/// Most skipped message keys a session holds; the oldest are deleted beyond it.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// How many earlier receiving ratchet keys a session remembers, to name replays as such.
pub const REMEMBERED_RECEIVING_KEYS: usize = 8;

/// Label of the root KDF.
pub const ROOT_INFO: &str = "caremesh-ratchet-v1/root";
/// Label of the message-key expansion.
pub const MESSAGE_KEYS_INFO: &str = "caremesh-ratchet-v1/message-keys";
/// Label of the header encoding.
pub const HEADER_LABEL: &str = "caremesh-ratchet-v1/header";
/// Label of a message's associated data.
pub const AAD_LABEL: &str = "caremesh-ratchet-v1/aad";

/// Where new ratchet key pairs come from: the OS in use ([`OsRatchetKeys`]), a fixed list in the
/// known-answer tests.
pub trait RatchetKeys {
    /// A new X25519 secret.
    fn next_secret(&mut self) -> Result<StaticSecret, CryptoError>;
}

/// Ratchet keys from the operating system's random generator.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRatchetKeys;

impl RatchetKeys for OsRatchetKeys {
    fn next_secret(&mut self) -> Result<StaticSecret, CryptoError> {
        Ok(StaticSecret::from(*random_array::<32>()?))
    }
}

/// A 32-byte secret that is wiped when dropped.
type Key32 = Zeroizing<[u8; 32]>;

/// `KDF_RK(rk, dh_out)`: the next root key and a chain key.
fn kdf_rk(rk: &[u8; 32], dh_out: &[u8; 32]) -> Result<(Key32, Key32), CryptoError> {
    let mut okm = Zeroizing::new([0u8; 64]);
    primitives::hkdf_sha256(rk, dh_out, ROOT_INFO.as_bytes(), okm.as_mut_slice())?;
    let (root, chain) = okm.split_at(32);
    Ok((to_key(root)?, to_key(chain)?))
}

/// `KDF_CK(ck)`: the next chain key and a message key.
fn kdf_ck(ck: &[u8; 32]) -> Result<(Key32, Key32), CryptoError> {
    Ok((
        primitives::hmac_sha256(ck, &[0x02])?,
        primitives::hmac_sha256(ck, &[0x01])?,
    ))
}

/// `MESSAGE_KEYS(mk)`: the AES-256-GCM key and nonce of one message.
fn message_keys(mk: &[u8; 32]) -> Result<(Zeroizing<[u8; AES_KEY_LEN]>, [u8; NONCE_LEN]), CryptoError> {
    let mut okm = Zeroizing::new([0u8; AES_KEY_LEN + NONCE_LEN]);
    primitives::hkdf_sha256(&[0u8; 32], mk, MESSAGE_KEYS_INFO.as_bytes(), okm.as_mut_slice())?;
    let (key, nonce) = okm.split_at(AES_KEY_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Encoding("message nonce"))?;
    Ok((to_key(key)?, nonce))
}

fn to_key(bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Encoding("a 32-byte key"))?;
    Ok(Zeroizing::new(key))
}

fn public_of(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

/// A message's header (§6.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatchetHeader {
    /// The sending device.
    pub sender_device_id: String,
    /// The receiving device.
    pub recipient_device_id: String,
    /// The sender's current ratchet public key.
    #[serde(with = "crate::v2::hex_serde")]
    pub dh: [u8; 32],
    /// Messages in the sender's previous sending chain.
    pub pn: u32,
    /// This message's number in its chain.
    pub n: u32,
    /// The PQXDH preamble, until the responder answered.
    pub preamble: Option<Preamble>,
}

impl RatchetHeader {
    /// The `HEADER` encoding.
    pub fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let mut encoder = Encoder::new(HEADER_LABEL)?;
        encoder
            .field(self.sender_device_id.as_bytes())?
            .field(self.recipient_device_id.as_bytes())?
            .field(&self.dh)?
            .u32(self.pn)
            .u32(self.n)
            .u32(u32::from(self.preamble.is_some()));
        if let Some(preamble) = &self.preamble {
            encoder
                .field(preamble.sender_identity_key_id.as_bytes())?
                .field(&preamble.ephemeral_public)?
                .field(preamble.signed_prekey_id.as_bytes())?
                .field(preamble.one_time_prekey_id.as_bytes())?
                .field(preamble.kem_prekey_id.as_bytes())?
                .u32(preamble.kem_kind)
                .field(&preamble.kem_ciphertext)?;
        }
        Ok(encoder.finish())
    }
}

/// `AAD = lp(label) lp(AD) lp(message_id) HEADER`.
pub fn message_aad(ad: &[u8], message_id: &str, header: &RatchetHeader) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(AAD_LABEL)?;
    encoder.field(ad)?.field(message_id.as_bytes())?;
    Ok(encoder.finish_with_raw(&header.encode()?))
}

/// One encrypted message for one device: the header in clear, the AES-256-GCM ciphertext with
/// its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RatchetMessage {
    /// The header.
    pub header: RatchetHeader,
    /// The ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

#[derive(Clone)]
struct SkippedKey {
    dh: [u8; 32],
    n: u32,
    mk: Zeroizing<[u8; 32]>,
}

/// A Double Ratchet session of this device with one peer device (§6.1). `Clone` exists for
/// decryption on a copy; secrets are wiped when dropped and never shown by `Debug`.
#[derive(Clone)]
pub struct Session {
    ad: Vec<u8>,
    local_device_id: String,
    peer_user_id: String,
    peer_device_id: String,
    peer_identity_key_id: String,
    base_key: [u8; 32],
    dhs: Box<StaticSecret>,
    dhs_public: [u8; 32],
    dhr: Option<[u8; 32]>,
    rk: Zeroizing<[u8; 32]>,
    cks: Option<Zeroizing<[u8; 32]>>,
    ckr: Option<Zeroizing<[u8; 32]>>,
    ns: u32,
    nr: u32,
    pn: u32,
    skipped: VecDeque<SkippedKey>,
    previous_receiving: VecDeque<[u8; 32]>,
    preamble: Option<Preamble>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer_user_id", &self.peer_user_id)
            .field("peer_device_id", &self.peer_device_id)
            .field("ns", &self.ns)
            .field("nr", &self.nr)
            .field("skipped", &self.skipped.len())
            .field("awaiting_reply", &self.preamble.is_some())
            .finish_non_exhaustive()
    }
}

/// Who the session is with, as the handshake established it.
#[derive(Clone, Debug)]
pub struct SessionPeer {
    /// This device.
    pub local_device_id: String,
    /// The peer's user.
    pub peer_user_id: String,
    /// The peer's device.
    pub peer_device_id: String,
    /// The peer's account identity key id.
    pub peer_identity_key_id: String,
}

impl Session {
    /// The initiator's session (§6.2): `DHr = SPK_B`, a first ratchet key from `keys`, and the
    /// preamble attached until a reply decrypts.
    pub fn initiator(
        peer: SessionPeer,
        sk: &[u8; 32],
        ad: Vec<u8>,
        responder_signed_prekey: &[u8; 32],
        preamble: Preamble,
        keys: &mut dyn RatchetKeys,
    ) -> Result<Self, CryptoError> {
        let (base_key, _) = preamble.check()?;
        let dhs = keys.next_secret()?;
        let dh_out = x25519_agree(&dhs, responder_signed_prekey, "the signed prekey")?;
        let (rk, cks) = kdf_rk(sk, &dh_out)?;
        Ok(Self {
            ad,
            local_device_id: peer.local_device_id,
            peer_user_id: peer.peer_user_id,
            peer_device_id: peer.peer_device_id,
            peer_identity_key_id: peer.peer_identity_key_id,
            base_key,
            dhs_public: public_of(&dhs),
            dhs: Box::new(dhs),
            dhr: Some(*responder_signed_prekey),
            rk,
            cks: Some(cks),
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_receiving: VecDeque::new(),
            preamble: Some(preamble),
        })
    }

    /// The responder's session (§6.2): `DHs` is the signed prekey the preamble named.
    pub fn responder(
        peer: SessionPeer,
        sk: &[u8; 32],
        ad: Vec<u8>,
        signed_prekey: &StaticSecret,
        preamble: &Preamble,
    ) -> Result<Self, CryptoError> {
        let (base_key, _) = preamble.check()?;
        Ok(Self {
            ad,
            local_device_id: peer.local_device_id,
            peer_user_id: peer.peer_user_id,
            peer_device_id: peer.peer_device_id,
            peer_identity_key_id: peer.peer_identity_key_id,
            base_key,
            dhs_public: public_of(signed_prekey),
            dhs: Box::new(signed_prekey.clone()),
            dhr: None,
            rk: Zeroizing::new(*sk),
            cks: None,
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_receiving: VecDeque::new(),
            preamble: None,
        })
    }

    /// The peer's user.
    pub fn peer_user_id(&self) -> &str {
        &self.peer_user_id
    }

    /// The peer's device.
    pub fn peer_device_id(&self) -> &str {
        &self.peer_device_id
    }

    /// The peer's identity key id when the session was established.
    pub fn peer_identity_key_id(&self) -> &str {
        &self.peer_identity_key_id
    }

    /// `EK_A`'s public key: the handshake that established the session.
    pub fn base_key(&self) -> &[u8; 32] {
        &self.base_key
    }

    /// Whether the initiator still attaches its preamble (no reply decrypted yet).
    pub fn awaiting_reply(&self) -> bool {
        self.preamble.is_some()
    }

    /// Whether this side can send (a responder can once it decrypted the first message).
    pub fn can_send(&self) -> bool {
        self.cks.is_some()
    }

    /// Encrypts one message (§6.4). The caller must save the new state, with the ciphertext,
    /// before the ciphertext leaves the device.
    pub fn encrypt(&mut self, message_id: &str, plaintext: &[u8]) -> Result<RatchetMessage, CryptoError> {
        check_uuid_v7(message_id, "message id")?;
        let cks = self
            .cks
            .as_ref()
            .ok_or_else(|| CryptoError::NoSession(self.peer_device_id.clone()))?;
        let (next_ck, mk) = kdf_ck(cks)?;
        let header = RatchetHeader {
            sender_device_id: self.local_device_id.clone(),
            recipient_device_id: self.peer_device_id.clone(),
            dh: self.dhs_public,
            pn: self.pn,
            n: self.ns,
            preamble: self.preamble.clone(),
        };
        let ns = self
            .ns
            .checked_add(1)
            .ok_or(CryptoError::Encoding("the sending chain is exhausted"))?;
        let ciphertext = seal(&mk, &self.ad, message_id, &header, plaintext)?;
        self.cks = Some(next_ck);
        self.ns = ns;
        Ok(RatchetMessage { header, ciphertext })
    }

    /// Decrypts one message (§6.5). On any error the session is unchanged.
    pub fn decrypt(
        &mut self,
        message_id: &str,
        message: &RatchetMessage,
        keys: &mut dyn RatchetKeys,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        check_uuid_v7(message_id, "message id")?;
        let header = &message.header;
        if header.recipient_device_id != self.local_device_id || header.sender_device_id != self.peer_device_id {
            return Err(CryptoError::KeyMismatch("the message is of another pair of devices"));
        }
        let mut next = self.clone();
        let plaintext = next.decrypt_in_place(message_id, message, keys)?;
        next.preamble = None;
        *self = next;
        Ok(plaintext)
    }

    fn decrypt_in_place(
        &mut self,
        message_id: &str,
        message: &RatchetMessage,
        keys: &mut dyn RatchetKeys,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let header = &message.header;
        if let Some(position) = self
            .skipped
            .iter()
            .position(|key| key.dh == header.dh && key.n == header.n)
        {
            let key = self.skipped.remove(position).ok_or(CryptoError::DuplicateMessage)?;
            return open(&key.mk, &self.ad, message_id, message);
        }
        if self.previous_receiving.contains(&header.dh) {
            return Err(CryptoError::DuplicateMessage);
        }
        if self.dhr != Some(header.dh) {
            self.skip_message_keys(header.pn)?;
            self.dh_ratchet(&header.dh, keys)?;
        }
        if header.n < self.nr {
            return Err(CryptoError::DuplicateMessage);
        }
        self.skip_message_keys(header.n)?;
        let ckr = self.ckr.as_ref().ok_or(CryptoError::DuplicateMessage)?;
        let (next_ck, mk) = kdf_ck(ckr)?;
        self.ckr = Some(next_ck);
        self.nr = self.nr.checked_add(1).ok_or(CryptoError::DuplicateMessage)?;
        open(&mk, &self.ad, message_id, message)
    }

    /// Stores the receiving chain's keys up to (not including) message number `until`.
    fn skip_message_keys(&mut self, until: u32) -> Result<(), CryptoError> {
        let (Some(dhr), Some(ckr)) = (self.dhr, self.ckr.as_ref()) else {
            return Ok(());
        };
        if until <= self.nr {
            return Ok(());
        }
        let skip = until - self.nr;
        if skip > MAX_SKIP {
            return Err(CryptoError::TooManySkipped {
                skip: u64::from(skip),
                max: u64::from(MAX_SKIP),
            });
        }
        let mut ck = ckr.clone();
        for n in self.nr..until {
            let (next_ck, mk) = kdf_ck(&ck)?;
            self.skipped.push_back(SkippedKey { dh: dhr, n, mk });
            if self.skipped.len() > MAX_SKIPPED_KEYS {
                self.skipped.pop_front();
            }
            ck = next_ck;
        }
        self.ckr = Some(ck);
        self.nr = until;
        Ok(())
    }

    fn dh_ratchet(&mut self, their_dh: &[u8; 32], keys: &mut dyn RatchetKeys) -> Result<(), CryptoError> {
        if let Some(old) = self.dhr {
            self.previous_receiving.push_back(old);
            if self.previous_receiving.len() > REMEMBERED_RECEIVING_KEYS {
                self.previous_receiving.pop_front();
            }
        }
        self.pn = self.ns;
        self.ns = 0;
        self.nr = 0;
        self.dhr = Some(*their_dh);
        let dh_out = x25519_agree(&self.dhs, their_dh, "the peer's ratchet key")?;
        let (rk, ckr) = kdf_rk(&self.rk, &dh_out)?;
        let dhs = keys.next_secret()?;
        let dh_out = x25519_agree(&dhs, their_dh, "the peer's ratchet key")?;
        let (rk, cks) = kdf_rk(&rk, &dh_out)?;
        self.rk = rk;
        self.ckr = Some(ckr);
        self.cks = Some(cks);
        self.dhs_public = public_of(&dhs);
        *self.dhs = dhs;
        Ok(())
    }
}

fn seal(
    mk: &[u8; 32],
    ad: &[u8],
    message_id: &str,
    header: &RatchetHeader,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (key, nonce) = message_keys(mk)?;
    primitives::aes256gcm_seal(&key, &nonce, &message_aad(ad, message_id, header)?, plaintext)
}

fn open(
    mk: &[u8; 32],
    ad: &[u8],
    message_id: &str,
    message: &RatchetMessage,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (key, nonce) = message_keys(mk)?;
    let aad = message_aad(ad, message_id, &message.header)?;
    primitives::aes256gcm_open(&key, &nonce, &aad, &message.ciphertext).map(Zeroizing::new)
}

// ---------------------------------------------------------------------------------------------
// Persisted form

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkippedRepr {
    #[serde(with = "crate::v2::hex_serde")]
    dh: [u8; 32],
    n: u32,
    mk: Zeroizing<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRepr {
    format: u32,
    #[serde(with = "crate::v2::hex_serde")]
    ad: Vec<u8>,
    local_device_id: String,
    peer_user_id: String,
    peer_device_id: String,
    peer_identity_key_id: String,
    #[serde(with = "crate::v2::hex_serde")]
    base_key: [u8; 32],
    dhs: Zeroizing<String>,
    dhr: Option<String>,
    rk: Zeroizing<String>,
    cks: Option<Zeroizing<String>>,
    ckr: Option<Zeroizing<String>>,
    ns: u32,
    nr: u32,
    pn: u32,
    skipped: Vec<SkippedRepr>,
    previous_receiving: Vec<String>,
    preamble: Option<Preamble>,
}

/// Format version of a session's persisted form.
pub const SESSION_FORMAT: u32 = 1;

fn secret_hex(key: &[u8; 32]) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(key))
}

fn secret_from_hex(text: &str) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, key.as_mut_slice())
        .map_err(|_| CryptoError::InvalidStoredKeys("a session key is not 64 hex digits"))?;
    Ok(key)
}

impl Serialize for Session {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SessionRepr {
            format: SESSION_FORMAT,
            ad: self.ad.clone(),
            local_device_id: self.local_device_id.clone(),
            peer_user_id: self.peer_user_id.clone(),
            peer_device_id: self.peer_device_id.clone(),
            peer_identity_key_id: self.peer_identity_key_id.clone(),
            base_key: self.base_key,
            dhs: secret_hex(&self.dhs.to_bytes()),
            dhr: self.dhr.map(hex::encode),
            rk: secret_hex(&self.rk),
            cks: self.cks.as_deref().map(secret_hex),
            ckr: self.ckr.as_deref().map(secret_hex),
            ns: self.ns,
            nr: self.nr,
            pn: self.pn,
            skipped: self
                .skipped
                .iter()
                .map(|key| SkippedRepr {
                    dh: key.dh,
                    n: key.n,
                    mk: secret_hex(&key.mk),
                })
                .collect(),
            previous_receiving: self.previous_receiving.iter().map(hex::encode).collect(),
            preamble: self.preamble.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Session {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = SessionRepr::deserialize(deserializer)?;
        Self::from_repr(repr).map_err(serde::de::Error::custom)
    }
}

impl Session {
    fn from_repr(repr: SessionRepr) -> Result<Self, CryptoError> {
        if repr.format != SESSION_FORMAT {
            return Err(CryptoError::InvalidStoredKeys("unknown session format"));
        }
        if repr.skipped.len() > MAX_SKIPPED_KEYS || repr.previous_receiving.len() > REMEMBERED_RECEIVING_KEYS {
            return Err(CryptoError::InvalidStoredKeys("a session holds more keys than allowed"));
        }
        let public = |text: &str| -> Result<[u8; 32], CryptoError> {
            let mut key = [0u8; 32];
            hex::decode_to_slice(text, &mut key)
                .map_err(|_| CryptoError::InvalidStoredKeys("a session public key is not 64 hex digits"))?;
            Ok(key)
        };
        let dhs = StaticSecret::from(*secret_from_hex(&repr.dhs)?);
        Ok(Self {
            ad: repr.ad,
            local_device_id: repr.local_device_id,
            peer_user_id: repr.peer_user_id,
            peer_device_id: repr.peer_device_id,
            peer_identity_key_id: repr.peer_identity_key_id,
            base_key: repr.base_key,
            dhs_public: public_of(&dhs),
            dhs: Box::new(dhs),
            dhr: repr.dhr.as_deref().map(public).transpose()?,
            rk: secret_from_hex(&repr.rk)?,
            cks: repr.cks.as_deref().map(|text| secret_from_hex(text)).transpose()?,
            ckr: repr.ckr.as_deref().map(|text| secret_from_hex(text)).transpose()?,
            ns: repr.ns,
            nr: repr.nr,
            pn: repr.pn,
            skipped: repr
                .skipped
                .iter()
                .map(|key| {
                    Ok(SkippedKey {
                        dh: key.dh,
                        n: key.n,
                        mk: secret_from_hex(&key.mk)?,
                    })
                })
                .collect::<Result<_, CryptoError>>()?,
            previous_receiving: repr
                .previous_receiving
                .iter()
                .map(|text| public(text))
                .collect::<Result<_, _>>()?,
            preamble: repr.preamble,
        })
    }
}
