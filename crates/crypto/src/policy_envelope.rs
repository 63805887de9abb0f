//! Policy-addressed content: patient records and doctor group messages (DESIGN.md §4), and the
//! sealing of ABE user keys to their owner's device.
//!
//! # Content under an ABE policy (`caremesh-abe-content-v1`)
//!
//! [`seal_under_policy`] encapsulates a fresh 256-bit data key with CP-ABE (FAME, crate
//! `caremesh-abe`) under the policy and seals the content with AES-256-GCM under that key, a
//! random 12-byte nonce and associated data that names the record version or the message
//! ([`record_content_aad`], [`group_content_aad`]), so a ciphertext cannot be moved to another
//! record, version, patient or message. [`open_under_policy`] reverses it with a user key whose
//! attributes satisfy the policy. The ABE ciphertext carries its policy; [`encapsulated_policy`]
//! reads it back so a server can check it is the policy the envelope claims.
//!
//! # Signatures
//!
//! The author signs every record version and the sender every group message with their Ed25519
//! identity key, over all of it (`lp` as in [`crate::encoding`](crate#encodings)):
//!
//! ```text
//! record version:  lp("caremesh-record-version-v1") lp(record_id) lp(patient_id) lp(kind)
//!                  u64be(version) lp(policy) u32be(envelope.version) lp(params_version)
//!                  lp(encapsulated_key) lp(nonce) lp(ciphertext) lp(author_user_id)
//!                  lp(author_identity_key_id) lp(previous_version_hash)
//! group message:   lp("caremesh-group-message-v1") lp(message_id) lp(sender_user_id) lp(policy)
//!                  u32be(envelope.version) lp(params_version) lp(encapsulated_key) lp(nonce)
//!                  lp(ciphertext) lp(sender_identity_key_id)
//! ```
//!
//! A record version's hash ([`RecordVersion::hash`]) is SHA-256 of its signed bytes; the next
//! version signs it as `previous_version_hash`, so the versions form a hash chain.
//!
//! # Sealed user keys (`caremesh-abe-user-key-v1`)
//!
//! abe-authority-svc seals an issued ABE user key to the owner's registered X25519 identity key:
//! a fresh ephemeral X25519 key `E`, `DH = X25519(E, IK)` (refused unless contributory),
//! `key = HKDF-SHA256(salt = 32 zero bytes, IKM = DH, info = "caremesh-abe-user-key-v1")`, and
//! AES-256-GCM with associated data
//! `lp("caremesh-abe-user-key-v1/aad") lp(user_id) lp(key_id) lp(identity_key_id)
//! lp(identity X25519 public) lp(E public)`. Only the device holding the identity secret opens it.

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{Ciphertext, Policy, PublicParams, UserKey};
use caremesh_proto::abe::v1::SealedUserKey;
use caremesh_proto::messaging::v1::GroupEnvelope;
use caremesh_proto::records::v1::RecordEnvelope;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::keys::{IdentityKeyPair, IdentityPublicKey};
use crate::primitives::{
    AES_KEY_LEN, NONCE_LEN, aes256gcm_open, aes256gcm_seal, ed25519_verify, hkdf_sha256, random_array, x25519_agree,
};

/// The envelope format version of records and group messages.
pub const POLICY_ENVELOPE_VERSION: u32 = 1;
/// The sealing format version of [`SealedUserKey`].
pub const SEALED_USER_KEY_VERSION: u32 = 1;

const RECORD_VERSION_LABEL: &str = "caremesh-record-version-v1";
const GROUP_MESSAGE_LABEL: &str = "caremesh-group-message-v1";
const RECORD_CONTENT_LABEL: &str = "caremesh-abe-content-v1/record";
const GROUP_CONTENT_LABEL: &str = "caremesh-abe-content-v1/group-message";
const USER_KEY_INFO: &str = "caremesh-abe-user-key-v1";
const USER_KEY_AAD_LABEL: &str = "caremesh-abe-user-key-v1/aad";

/// Content sealed under an ABE policy: the fields shared by [`RecordEnvelope`] and
/// [`GroupEnvelope`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySealed {
    pub encapsulated_key: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Encapsulates a fresh data key under `policy` and seals `plaintext` under it with `aad`.
pub fn seal_under_policy(
    params: &PublicParams,
    policy: &Policy,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<PolicySealed, CryptoError> {
    let (data_key, encapsulated) = caremesh_abe::encapsulate(params, policy, &mut OsRng)?;
    let nonce = random_array::<NONCE_LEN>()?;
    let ciphertext = aes256gcm_seal(data_key.as_bytes(), &nonce, aad, plaintext)?;
    Ok(PolicySealed {
        encapsulated_key: encapsulated.to_bytes(),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Opens content sealed by [`seal_under_policy`] with a user key whose attributes satisfy its
/// policy ([`CryptoError::Abe`] with `PolicyNotSatisfied` otherwise).
pub fn open_under_policy(
    key: &UserKey,
    encapsulated_key: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let encapsulated = Ciphertext::from_bytes(encapsulated_key)?;
    let data_key = caremesh_abe::decapsulate(key, &encapsulated)?;
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| CryptoError::MalformedEnvelope("the nonce must be 12 bytes"))?;
    let key_bytes: &[u8; AES_KEY_LEN] = data_key.as_bytes();
    Ok(Zeroizing::new(aes256gcm_open(key_bytes, &nonce, aad, ciphertext)?))
}

/// The policy an encapsulated key was made for (parsed and checked like any ABE ciphertext).
pub fn encapsulated_policy(encapsulated_key: &[u8]) -> Result<Policy, CryptoError> {
    Ok(Ciphertext::from_bytes(encapsulated_key)?.policy().clone())
}

/// The associated data of a record version's content.
pub fn record_content_aad(record_id: &str, patient_id: &str, kind: &str, version: i64) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(RECORD_CONTENT_LABEL)?;
    encoder
        .field(record_id.as_bytes())?
        .field(patient_id.as_bytes())?
        .field(kind.as_bytes())?
        .field(&version.to_be_bytes())?;
    Ok(encoder.finish())
}

/// The associated data of a group message's content.
pub fn group_content_aad(message_id: &str, sender_user_id: &str, policy: &str) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(GROUP_CONTENT_LABEL)?;
    encoder
        .field(message_id.as_bytes())?
        .field(sender_user_id.as_bytes())?
        .field(policy.as_bytes())?;
    Ok(encoder.finish())
}

/// One version of a record, as its author signs it.
#[derive(Clone, Copy, Debug)]
pub struct RecordVersion<'a> {
    pub record_id: &'a str,
    pub patient_id: &'a str,
    pub kind: &'a str,
    pub version: i64,
    pub policy: &'a str,
    pub envelope: &'a RecordEnvelope,
    pub author_user_id: &'a str,
    pub author_identity_key_id: &'a str,
    /// Empty for version 1.
    pub previous_version_hash: &'a [u8],
}

impl RecordVersion<'_> {
    /// The exact bytes the author signs.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, CryptoError> {
        let envelope = self.envelope;
        let mut encoder = Encoder::new(RECORD_VERSION_LABEL)?;
        encoder
            .field(self.record_id.as_bytes())?
            .field(self.patient_id.as_bytes())?
            .field(self.kind.as_bytes())?;
        encoder.raw(&self.version.to_be_bytes());
        encoder.field(self.policy.as_bytes())?;
        encoder.u32(envelope.version);
        encoder
            .field(envelope.params_version.as_bytes())?
            .field(&envelope.encapsulated_key)?
            .field(&envelope.nonce)?
            .field(&envelope.ciphertext)?
            .field(self.author_user_id.as_bytes())?
            .field(self.author_identity_key_id.as_bytes())?
            .field(self.previous_version_hash)?;
        Ok(encoder.finish())
    }

    /// SHA-256 of the signed bytes: the next version's `previous_version_hash`.
    pub fn hash(&self) -> Result<[u8; 32], CryptoError> {
        Ok(Sha256::digest(self.signed_bytes()?).into())
    }

    /// The author's signature.
    pub fn sign(&self, author: &IdentityKeyPair) -> Result<[u8; 64], CryptoError> {
        if author.key_id() != self.author_identity_key_id {
            return Err(CryptoError::KeyMismatch(
                "the record names another identity key than the one signing",
            ));
        }
        Ok(author.sign_raw(&self.signed_bytes()?))
    }

    /// Checks the author's signature with the author's identity signing key (strict Ed25519).
    pub fn verify(&self, author: &IdentityPublicKey, signature: &[u8]) -> Result<(), CryptoError> {
        if author.key_id() != self.author_identity_key_id {
            return Err(CryptoError::KeyMismatch(
                "the record was signed with another identity key than the author's registered one",
            ));
        }
        ed25519_verify(
            author.signing_public_key(),
            &self.signed_bytes()?,
            signature,
            "record author",
        )
    }
}

/// A group message, as its sender signs it (`envelope.signature` is not part of the bytes).
#[derive(Clone, Copy, Debug)]
pub struct GroupMessage<'a> {
    pub message_id: &'a str,
    pub sender_user_id: &'a str,
    pub policy: &'a str,
    pub envelope: &'a GroupEnvelope,
}

impl GroupMessage<'_> {
    /// The exact bytes the sender signs.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, CryptoError> {
        let envelope = self.envelope;
        let mut encoder = Encoder::new(GROUP_MESSAGE_LABEL)?;
        encoder
            .field(self.message_id.as_bytes())?
            .field(self.sender_user_id.as_bytes())?
            .field(self.policy.as_bytes())?;
        encoder.u32(envelope.version);
        encoder
            .field(envelope.params_version.as_bytes())?
            .field(&envelope.encapsulated_key)?
            .field(&envelope.nonce)?
            .field(&envelope.ciphertext)?
            .field(envelope.sender_identity_key_id.as_bytes())?;
        Ok(encoder.finish())
    }

    /// The sender's signature (for `envelope.signature`).
    pub fn sign(&self, sender: &IdentityKeyPair) -> Result<[u8; 64], CryptoError> {
        if sender.key_id() != self.envelope.sender_identity_key_id {
            return Err(CryptoError::KeyMismatch(
                "the envelope names another identity key than the one signing",
            ));
        }
        Ok(sender.sign_raw(&self.signed_bytes()?))
    }

    /// Checks `envelope.signature` with the sender's identity signing key (strict Ed25519).
    pub fn verify(&self, sender: &IdentityPublicKey) -> Result<(), CryptoError> {
        if sender.key_id() != self.envelope.sender_identity_key_id {
            return Err(CryptoError::KeyMismatch(
                "the message was signed with another identity key than the sender's registered one",
            ));
        }
        ed25519_verify(
            sender.signing_public_key(),
            &self.signed_bytes()?,
            &self.envelope.signature,
            "group message sender",
        )
    }
}

fn user_key_aad(
    user_id: &str,
    key_id: &str,
    recipient: &IdentityPublicKey,
    ephemeral_public: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(USER_KEY_AAD_LABEL)?;
    encoder
        .field(user_id.as_bytes())?
        .field(key_id.as_bytes())?
        .field(recipient.key_id().as_bytes())?
        .field(recipient.dh_public_key())?
        .field(ephemeral_public)?;
    Ok(encoder.finish())
}

fn user_key_wrapping_key(shared: &[u8; 32]) -> Result<Zeroizing<[u8; AES_KEY_LEN]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; AES_KEY_LEN]);
    hkdf_sha256(&[0u8; 32], shared, USER_KEY_INFO.as_bytes(), key.as_mut_slice())?;
    Ok(key)
}

/// Seals a serialized ABE user key (`key_id`, owned by `user_id`) to the owner's verified
/// identity key.
pub fn seal_user_key(
    user_id: &str,
    key_id: &str,
    recipient: &IdentityPublicKey,
    user_key: &[u8],
) -> Result<SealedUserKey, CryptoError> {
    let ephemeral = x25519_dalek::StaticSecret::from(*random_array::<32>()?);
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let shared = x25519_agree(&ephemeral, recipient.dh_public_key(), "the recipient identity key")?;
    let key = user_key_wrapping_key(&shared)?;
    let nonce = random_array::<NONCE_LEN>()?;
    let aad = user_key_aad(user_id, key_id, recipient, &ephemeral_public)?;
    Ok(SealedUserKey {
        version: SEALED_USER_KEY_VERSION,
        recipient_identity_key_id: recipient.key_id().to_owned(),
        ephemeral_public_key: ephemeral_public.to_vec(),
        nonce: nonce.to_vec(),
        ciphertext: aes256gcm_seal(&key, &nonce, &aad, user_key)?,
    })
}

/// Opens a [`seal_user_key`] box with the device's identity and returns the serialized user key.
pub fn open_user_key(
    identity: &IdentityKeyPair,
    user_id: &str,
    key_id: &str,
    sealed: &SealedUserKey,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.version != SEALED_USER_KEY_VERSION {
        return Err(CryptoError::UnsupportedVersion(sealed.version));
    }
    if sealed.recipient_identity_key_id != identity.key_id() {
        return Err(CryptoError::UnknownKey {
            what: "identity key",
            id: sealed.recipient_identity_key_id.clone(),
        });
    }
    let ephemeral_public: [u8; 32] = sealed
        .ephemeral_public_key
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::MalformedEnvelope("the ephemeral public key must be 32 bytes"))?;
    let nonce: [u8; NONCE_LEN] = sealed
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::MalformedEnvelope("the nonce must be 12 bytes"))?;
    let shared = x25519_agree(identity.dh_secret(), &ephemeral_public, "the ephemeral key")?;
    let key = user_key_wrapping_key(&shared)?;
    let aad = user_key_aad(user_id, key_id, &identity.public(), &ephemeral_public)?;
    Ok(Zeroizing::new(aes256gcm_open(&key, &nonce, &aad, &sealed.ciphertext)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn envelope(sealed: &PolicySealed) -> RecordEnvelope {
        RecordEnvelope {
            version: POLICY_ENVELOPE_VERSION,
            params_version: "p1".into(),
            encapsulated_key: sealed.encapsulated_key.clone(),
            nonce: sealed.nonce.clone(),
            ciphertext: sealed.ciphertext.clone(),
        }
    }

    #[test]
    fn content_opens_only_for_satisfying_keys_and_the_same_aad() {
        let (params, master) = caremesh_abe::setup(&mut OsRng);
        let policy = Policy::parse(r#""dept:cardiology" or "patient:p1""#).unwrap();
        let aad = record_content_aad("r1", "p1", "Observation", 1).unwrap();
        let sealed = seal_under_policy(&params, &policy, &aad, b"{\"resourceType\":\"Observation\"}").unwrap();
        assert_eq!(encapsulated_policy(&sealed.encapsulated_key).unwrap(), policy);

        let cardiology = caremesh_abe::keygen(&params, &master, &["dept:cardiology"], &mut OsRng).unwrap();
        let oncology = caremesh_abe::keygen(&params, &master, &["dept:oncology"], &mut OsRng).unwrap();
        let opened = open_under_policy(
            &cardiology,
            &sealed.encapsulated_key,
            &sealed.nonce,
            &sealed.ciphertext,
            &aad,
        )
        .unwrap();
        assert_eq!(opened.as_slice(), b"{\"resourceType\":\"Observation\"}");
        assert!(matches!(
            open_under_policy(
                &oncology,
                &sealed.encapsulated_key,
                &sealed.nonce,
                &sealed.ciphertext,
                &aad
            ),
            Err(CryptoError::Abe(_))
        ));
        let other_version = record_content_aad("r1", "p1", "Observation", 2).unwrap();
        assert!(matches!(
            open_under_policy(
                &cardiology,
                &sealed.encapsulated_key,
                &sealed.nonce,
                &sealed.ciphertext,
                &other_version
            ),
            Err(CryptoError::DecryptionFailed)
        ));
    }

    #[test]
    fn record_signatures_cover_every_field_and_chain_versions() {
        let (params, _) = caremesh_abe::setup(&mut OsRng);
        let author = IdentityKeyPair::generate().unwrap();
        let policy = Policy::parse(r#""patient:p1""#).unwrap();
        let sealed = seal_under_policy(&params, &policy, b"aad", b"content").unwrap();
        let envelope = envelope(&sealed);
        let version = RecordVersion {
            record_id: "r1",
            patient_id: "p1",
            kind: "Observation",
            version: 1,
            policy: r#""patient:p1""#,
            envelope: &envelope,
            author_user_id: "u1",
            author_identity_key_id: author.key_id(),
            previous_version_hash: &[],
        };
        let signature = version.sign(&author).unwrap();
        version.verify(&author.public(), &signature).unwrap();

        let mut tampered_envelope = envelope.clone();
        tampered_envelope.ciphertext[0] ^= 1;
        let variants = [
            RecordVersion {
                patient_id: "p2",
                ..version
            },
            RecordVersion {
                kind: "Condition",
                ..version
            },
            RecordVersion { version: 2, ..version },
            RecordVersion {
                policy: r#""patient:p2""#,
                ..version
            },
            RecordVersion {
                envelope: &tampered_envelope,
                ..version
            },
            RecordVersion {
                author_user_id: "u2",
                ..version
            },
            RecordVersion {
                previous_version_hash: &[0u8; 32],
                ..version
            },
        ];
        for variant in variants {
            assert!(variant.verify(&author.public(), &signature).is_err());
            assert_ne!(variant.hash().unwrap(), version.hash().unwrap());
        }
        let other = IdentityKeyPair::generate().unwrap();
        assert!(matches!(
            version.verify(&other.public(), &signature),
            Err(CryptoError::KeyMismatch(_))
        ));
    }

    #[test]
    fn group_signatures_cover_the_envelope_and_policy() {
        let sender = IdentityKeyPair::generate().unwrap();
        let mut envelope = GroupEnvelope {
            version: POLICY_ENVELOPE_VERSION,
            params_version: "p1".into(),
            encapsulated_key: vec![1, 2, 3],
            nonce: vec![0; 12],
            ciphertext: vec![4; 20],
            sender_identity_key_id: sender.key_id().to_owned(),
            signature: Vec::new(),
        };
        let signature = GroupMessage {
            message_id: "m1",
            sender_user_id: "d1",
            policy: r#""role:doctor""#,
            envelope: &envelope,
        }
        .sign(&sender)
        .unwrap();
        envelope.signature = signature.to_vec();
        let signed = GroupMessage {
            message_id: "m1",
            sender_user_id: "d1",
            policy: r#""role:doctor""#,
            envelope: &envelope,
        };
        signed.verify(&sender.public()).unwrap();
        assert!(
            GroupMessage {
                policy: r#""role:nurse""#,
                ..signed
            }
            .verify(&sender.public())
            .is_err()
        );
        assert!(
            GroupMessage {
                sender_user_id: "d2",
                ..signed
            }
            .verify(&sender.public())
            .is_err()
        );
    }

    #[test]
    fn sealed_user_keys_open_only_on_the_owner_device_with_the_same_ids() {
        let device = IdentityKeyPair::generate().unwrap();
        let sealed = seal_user_key("u1", "k1", &device.public(), b"user key bytes").unwrap();
        assert_eq!(
            open_user_key(&device, "u1", "k1", &sealed).unwrap().as_slice(),
            b"user key bytes"
        );
        assert!(open_user_key(&device, "u2", "k1", &sealed).is_err());
        assert!(open_user_key(&device, "u1", "k2", &sealed).is_err());
        let other = IdentityKeyPair::generate().unwrap();
        assert!(matches!(
            open_user_key(&other, "u1", "k1", &sealed),
            Err(CryptoError::UnknownKey { .. })
        ));
        let mut low_order = sealed.clone();
        low_order.ephemeral_public_key = vec![0; 32];
        assert!(matches!(
            open_user_key(&device, "u1", "k1", &low_order),
            Err(CryptoError::NonContributory { .. })
        ));
    }
}
