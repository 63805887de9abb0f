//! Conversions between the protobuf messages of `caremesh.messaging.v1` and the protocol v2 types
//! of `caremesh_crypto::v2`, which know nothing of the wire.

use caremesh_crypto::v2::{
    ArchiveCopy, DeviceBundle, DeviceKeyKind, KemPrekeyPublic, Preamble, PublishedKey, RatchetHeader, RatchetMessage,
};
use caremesh_proto::messaging::v1 as pb;

use crate::SdkError;

/// A signed device key for the directory.
pub(crate) fn signed_key(key: &PublishedKey) -> pb::SignedDeviceKey {
    pb::SignedDeviceKey {
        key_id: key.key_id.clone(),
        public_key: key.public_key.clone(),
        signature: key.signature.clone(),
    }
}

/// A one-time X25519 prekey for the directory.
pub(crate) fn one_time_key(key: &PublishedKey) -> pb::OneTimePrekey {
    pb::OneTimePrekey {
        key_id: key.key_id.clone(),
        public_key: key.public_key.clone(),
    }
}

fn published(key: &pb::SignedDeviceKey) -> PublishedKey {
    PublishedKey {
        key_id: key.key_id.clone(),
        public_key: key.public_key.clone(),
        signature: key.signature.clone(),
    }
}

/// A bundle from the directory, not yet verified. A bundle without an ML-KEM prekey keeps it
/// `None`, which verification refuses.
pub(crate) fn device_bundle(user_id: &str, bundle: &pb::DeviceBundle) -> Result<DeviceBundle, SdkError> {
    let signed_prekey = bundle
        .signed_prekey
        .as_ref()
        .ok_or(SdkError::Protocol("a device bundle without a signed prekey"))?;
    let kem_prekey = match &bundle.kem_prekey {
        Some(pb::KemPrekey { key: Some(key), kind }) => {
            let kind = match pb::KemPrekeyKind::try_from(*kind) {
                Ok(pb::KemPrekeyKind::OneTime) => DeviceKeyKind::KemOneTime,
                Ok(pb::KemPrekeyKind::LastResort) => DeviceKeyKind::KemLastResort,
                _ => return Err(SdkError::Protocol("an ML-KEM prekey of unknown kind")),
            };
            Some(KemPrekeyPublic {
                key_id: key.key_id.clone(),
                kind,
                public_key: key.public_key.clone(),
                signature: key.signature.clone(),
            })
        }
        _ => None,
    };
    Ok(DeviceBundle {
        user_id: user_id.to_owned(),
        device_id: bundle.device_id.clone(),
        signed_prekey: published(signed_prekey),
        kem_prekey,
        one_time_prekey: bundle.one_time_prekey.as_ref().map(|key| PublishedKey {
            key_id: key.key_id.clone(),
            public_key: key.public_key.clone(),
            signature: Vec::new(),
        }),
    })
}

/// A ratchet message as a device ciphertext addressed to `recipient_user_id`.
pub(crate) fn device_ciphertext(recipient_user_id: &str, message: RatchetMessage) -> pb::DeviceCiphertext {
    let header = message.header;
    pb::DeviceCiphertext {
        recipient_user_id: recipient_user_id.to_owned(),
        recipient_device_id: header.recipient_device_id,
        sender_device_id: header.sender_device_id,
        ratchet_public_key: header.dh.to_vec(),
        previous_chain_length: header.pn,
        message_number: header.n,
        preamble: header.preamble.map(|preamble| pb::HandshakePreamble {
            sender_identity_key_id: preamble.sender_identity_key_id,
            ephemeral_public_key: preamble.ephemeral_public,
            signed_prekey_id: preamble.signed_prekey_id,
            one_time_prekey_id: preamble.one_time_prekey_id,
            kem_prekey_id: preamble.kem_prekey_id,
            kem_prekey_kind: preamble.kem_kind,
            kem_ciphertext: preamble.kem_ciphertext,
        }),
        ciphertext: message.ciphertext,
    }
}

/// A device ciphertext as a ratchet message.
pub(crate) fn ratchet_message(ciphertext: &pb::DeviceCiphertext) -> Result<RatchetMessage, SdkError> {
    let dh: [u8; 32] = ciphertext
        .ratchet_public_key
        .as_slice()
        .try_into()
        .map_err(|_| SdkError::Protocol("a ratchet key that is not 32 bytes"))?;
    Ok(RatchetMessage {
        header: RatchetHeader {
            sender_device_id: ciphertext.sender_device_id.clone(),
            recipient_device_id: ciphertext.recipient_device_id.clone(),
            dh,
            pn: ciphertext.previous_chain_length,
            n: ciphertext.message_number,
            preamble: ciphertext.preamble.as_ref().map(|preamble| Preamble {
                sender_identity_key_id: preamble.sender_identity_key_id.clone(),
                ephemeral_public: preamble.ephemeral_public_key.clone(),
                signed_prekey_id: preamble.signed_prekey_id.clone(),
                one_time_prekey_id: preamble.one_time_prekey_id.clone(),
                kem_prekey_id: preamble.kem_prekey_id.clone(),
                kem_kind: preamble.kem_prekey_kind,
                kem_ciphertext: preamble.kem_ciphertext.clone(),
            }),
        },
        ciphertext: ciphertext.ciphertext.clone(),
    })
}

/// An archive copy for the wire.
pub(crate) fn archive_copy(copy: ArchiveCopy) -> pb::ArchiveCopy {
    pb::ArchiveCopy {
        owner_user_id: String::new(),
        history_key_id: copy.history_key_id,
        nonce: copy.nonce.to_vec(),
        ciphertext: copy.ciphertext,
    }
}

/// An archive copy from the wire.
pub(crate) fn archive_from(copy: &pb::ArchiveCopy) -> Result<ArchiveCopy, SdkError> {
    Ok(ArchiveCopy {
        history_key_id: copy.history_key_id.clone(),
        nonce: copy
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| SdkError::Protocol("an archive nonce that is not 12 bytes"))?,
        ciphertext: copy.ciphertext.clone(),
    })
}
