//! A device's sessions with other devices (§5.3, §6.5): which session sends to a peer device,
//! which one a received message belongs to, the responder's handshake on a preamble, and the
//! bounds on how many sessions and handshakes are remembered.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::keys::{IdentityKeyPair, IdentityPublicKey};
use crate::v2::device::{DeviceKeyKind, DeviceSecrets, VerifiedDeviceBundle};
use crate::v2::pqxdh::{self, Party};
use crate::v2::ratchet::{RatchetKeys, RatchetMessage, Session, SessionPeer};

/// Most sessions kept per peer device (the newest).
pub const MAX_SESSIONS_PER_DEVICE: usize = 5;
/// Most handshakes (`EK_A` public keys) remembered, to refuse a replayed preamble whose session
/// was already dropped.
pub const MAX_REMEMBERED_HANDSHAKES: usize = 2000;

/// A peer device: a user and one of their devices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerDevice {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
}

/// All sessions of this device, newest first per peer device. The first session of a peer is the
/// one this device sends with; a message that decrypts in another session makes that one first.
#[derive(Clone, Debug, Default)]
pub struct SessionStore {
    sessions: BTreeMap<PeerDevice, Vec<Session>>,
    handshakes: VecDeque<[u8; 32]>,
}

impl SessionStore {
    /// Whether a session to this peer device can send now.
    pub fn can_send_to(&self, peer: &PeerDevice) -> bool {
        self.sessions
            .get(peer)
            .and_then(|sessions| sessions.first())
            .is_some_and(Session::can_send)
    }

    /// The peer devices with at least one session.
    pub fn peers(&self) -> impl Iterator<Item = &PeerDevice> {
        self.sessions.keys()
    }

    /// Starts a session with a verified bundle (PQXDH as initiator) and makes it the one used to
    /// send to that device.
    pub fn start(
        &mut self,
        me: &IdentityKeyPair,
        my_user_id: &str,
        my_device_id: &str,
        bundle: &VerifiedDeviceBundle,
        keys: &mut dyn RatchetKeys,
    ) -> Result<(), CryptoError> {
        let handshake = pqxdh::initiate(me, my_user_id, my_device_id, bundle)?;
        let session = Session::initiator(
            SessionPeer {
                local_device_id: my_device_id.to_owned(),
                peer_user_id: bundle.user_id.clone(),
                peer_device_id: bundle.device_id.clone(),
                peer_identity_key_id: bundle.identity.key_id().to_owned(),
            },
            &handshake.sk,
            handshake.ad,
            &bundle.signed_prekey,
            handshake.preamble,
            keys,
        )?;
        self.remember_handshake(*session.base_key());
        self.insert_first(
            PeerDevice {
                user_id: bundle.user_id.clone(),
                device_id: bundle.device_id.clone(),
            },
            session,
        );
        Ok(())
    }

    /// Encrypts for a peer device with its current session.
    pub fn encrypt(
        &mut self,
        peer: &PeerDevice,
        message_id: &str,
        plaintext: &[u8],
    ) -> Result<RatchetMessage, CryptoError> {
        self.sessions
            .get_mut(peer)
            .and_then(|sessions| sessions.first_mut())
            .ok_or_else(|| CryptoError::NoSession(peer.device_id.clone()))?
            .encrypt(message_id, plaintext)
    }

    /// Decrypts a message from `sender_user_id`'s device named in its header, whose verified
    /// identity is `sender_identity`. A preamble selects the session it established, or runs the
    /// responder's handshake with this device's prekeys (spending its one-time keys once the
    /// message authenticated). Without a preamble, the peer's sessions are tried newest first.
    /// On any error nothing changes.
    #[allow(clippy::too_many_arguments)]
    pub fn decrypt(
        &mut self,
        me: &IdentityKeyPair,
        my_user_id: &str,
        device: &mut DeviceSecrets,
        sender_user_id: &str,
        sender_identity: &IdentityPublicKey,
        message_id: &str,
        message: &RatchetMessage,
        keys: &mut dyn RatchetKeys,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let header = &message.header;
        if header.recipient_device_id != device.device_id() {
            return Err(CryptoError::KeyMismatch("the message is for another device"));
        }
        let peer = PeerDevice {
            user_id: sender_user_id.to_owned(),
            device_id: header.sender_device_id.clone(),
        };
        let sessions = self.sessions.get_mut(&peer).map(std::mem::take).unwrap_or_default();
        let result = self.decrypt_from(
            me,
            my_user_id,
            device,
            &peer,
            sender_identity,
            message_id,
            message,
            keys,
            sessions,
        );
        match result {
            Ok((plaintext, sessions)) => {
                self.sessions.insert(peer, sessions);
                Ok(plaintext)
            }
            Err((error, sessions)) => {
                if !sessions.is_empty() {
                    self.sessions.insert(peer, sessions);
                }
                Err(error)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decrypt_from(
        &mut self,
        me: &IdentityKeyPair,
        my_user_id: &str,
        device: &mut DeviceSecrets,
        peer: &PeerDevice,
        sender_identity: &IdentityPublicKey,
        message_id: &str,
        message: &RatchetMessage,
        keys: &mut dyn RatchetKeys,
        mut sessions: Vec<Session>,
    ) -> Attempt {
        if let Some(preamble) = &message.header.preamble {
            if let Some(index) = sessions
                .iter()
                .position(|session| session.base_key().as_slice() == preamble.ephemeral_public.as_slice())
            {
                return match decrypt_at(&mut sessions, index, message_id, message, keys) {
                    Ok(plaintext) => Ok((plaintext, sessions)),
                    Err(error) => Err((error, sessions)),
                };
            }
            if self
                .handshakes
                .iter()
                .any(|key| key.as_slice() == preamble.ephemeral_public.as_slice())
            {
                return Err((CryptoError::DuplicateMessage, sessions));
            }
            let me_public = me.public();
            let me_party = Party {
                user_id: my_user_id,
                device_id: device.device_id(),
                identity: &me_public,
            };
            let sender = Party {
                user_id: &peer.user_id,
                device_id: &peer.device_id,
                identity: sender_identity,
            };
            let responded = pqxdh::respond(me, me_party, device, sender, preamble).and_then(|handshake| {
                let signed = device.signed_prekey_secret(&preamble.signed_prekey_id)?;
                let mut session = Session::responder(
                    SessionPeer {
                        local_device_id: device.device_id().to_owned(),
                        peer_user_id: peer.user_id.clone(),
                        peer_device_id: peer.device_id.clone(),
                        peer_identity_key_id: sender_identity.key_id().to_owned(),
                    },
                    &handshake.sk,
                    handshake.ad,
                    signed,
                    preamble,
                )?;
                let plaintext = session.decrypt(message_id, message, keys)?;
                Ok((session, plaintext))
            });
            return match responded {
                Ok((session, plaintext)) => {
                    let kem_kind =
                        DeviceKeyKind::from_kem_code(preamble.kem_kind).unwrap_or(DeviceKeyKind::KemLastResort);
                    device.spend(&preamble.one_time_prekey_id, kem_kind, &preamble.kem_prekey_id);
                    self.remember_handshake(*session.base_key());
                    sessions.insert(0, session);
                    sessions.truncate(MAX_SESSIONS_PER_DEVICE);
                    Ok((plaintext, sessions))
                }
                Err(error) => Err((error, sessions)),
            };
        }
        if sessions.is_empty() {
            return Err((CryptoError::NoSession(peer.device_id.clone()), sessions));
        }
        let mut first_error = None;
        for index in 0..sessions.len() {
            match decrypt_at(&mut sessions, index, message_id, message, keys) {
                Ok(plaintext) => return Ok((plaintext, sessions)),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err((first_error.unwrap_or(CryptoError::DecryptionFailed), sessions))
    }

    /// Drops every session with a device (it was removed from its user's list).
    pub fn forget_device(&mut self, peer: &PeerDevice) {
        self.sessions.remove(peer);
    }

    fn insert_first(&mut self, peer: PeerDevice, session: Session) {
        let sessions = self.sessions.entry(peer).or_default();
        sessions.insert(0, session);
        sessions.truncate(MAX_SESSIONS_PER_DEVICE);
    }

    fn remember_handshake(&mut self, base_key: [u8; 32]) {
        self.handshakes.push_back(base_key);
        if self.handshakes.len() > MAX_REMEMBERED_HANDSHAKES {
            self.handshakes.pop_front();
        }
    }
}

/// The outcome of decrypting with a peer's sessions, which are handed back either way.
type Attempt = Result<(Zeroizing<Vec<u8>>, Vec<Session>), (CryptoError, Vec<Session>)>;

/// Decrypts with the session at `index` and, on success, makes it the first.
fn decrypt_at(
    sessions: &mut Vec<Session>,
    index: usize,
    message_id: &str,
    message: &RatchetMessage,
    keys: &mut dyn RatchetKeys,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let session = sessions.get_mut(index).ok_or(CryptoError::DecryptionFailed)?;
    let plaintext = session.decrypt(message_id, message, keys)?;
    if index > 0 {
        let session = sessions.remove(index);
        sessions.insert(0, session);
    }
    Ok(plaintext)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerSessions {
    peer: PeerDevice,
    sessions: Vec<Session>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionStoreRepr {
    peers: Vec<PeerSessions>,
    #[serde(with = "handshake_hex")]
    handshakes: Vec<[u8; 32]>,
}

mod handshake_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(keys: &[[u8; 32]], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(keys.iter().map(hex::encode))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| {
                let mut key = [0u8; 32];
                hex::decode_to_slice(text, &mut key).map_err(serde::de::Error::custom)?;
                Ok(key)
            })
            .collect()
    }
}

impl Serialize for SessionStore {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SessionStoreRepr {
            peers: self
                .sessions
                .iter()
                .map(|(peer, sessions)| PeerSessions {
                    peer: peer.clone(),
                    sessions: sessions.clone(),
                })
                .collect(),
            handshakes: self.handshakes.iter().copied().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SessionStore {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = SessionStoreRepr::deserialize(deserializer)?;
        if repr.handshakes.len() > MAX_REMEMBERED_HANDSHAKES
            || repr
                .peers
                .iter()
                .any(|peer| peer.sessions.len() > MAX_SESSIONS_PER_DEVICE)
        {
            return Err(serde::de::Error::custom("the session store holds more than its bounds"));
        }
        Ok(Self {
            sessions: repr.peers.into_iter().map(|peer| (peer.peer, peer.sessions)).collect(),
            handshakes: repr.handshakes.into(),
        })
    }
}
