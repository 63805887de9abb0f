//! Sealing and opening direct-message envelopes in the X3DH pattern (`caremesh-x3dh-v1`); the
//! exact key derivation and associated data are specified in the [crate documentation](crate).

use caremesh_proto::messaging::v1::Envelope;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::ids::{check_user_id, check_uuid_v7};
use crate::keys::{DeviceKeys, IdentityKeyPair, IdentityPublicKey, VerifiedBundle};
use crate::primitives::{self, NONCE_LEN, TAG_LEN, random_array, x25519_agree};

/// The envelope format version this code seals and opens.
pub const ENVELOPE_VERSION: u32 = 1;

/// Largest ciphertext (including the 16-byte tag) in an envelope: 256 KiB, the messaging
/// service's limit for each ciphertext.
pub const MAX_CIPHERTEXT_LEN: usize = 256 * 1024;

/// Largest plaintext that can be sealed: [`MAX_CIPHERTEXT_LEN`] minus the tag, so every envelope
/// this crate makes passes the service's size check.
pub const MAX_PLAINTEXT_LEN: usize = MAX_CIPHERTEXT_LEN - TAG_LEN;

/// HKDF `info` of the message key.
pub const X3DH_INFO: &[u8] = b"caremesh-x3dh-v1";

/// First field of the associated data.
pub const AAD_LABEL: &str = "caremesh-x3dh-v1/aad";

/// Who sends a message to whom, and its id: the ids bound into the envelope's associated data.
/// When opening, these are what the caller *expects* (from its own records and the request it
/// made), so a server that swaps them makes the envelope fail to open.
///
/// For the sender's own copy ([`seal_to_self`]) the ids are the same as for the recipient's
/// envelope: `recipient_user_id` is the conversation's recipient, not the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageContext<'a> {
    /// The sending user.
    pub sender_user_id: &'a str,
    /// The receiving user.
    pub recipient_user_id: &'a str,
    /// The client-chosen message id (canonical UUIDv7, see [`crate::new_id`]).
    pub message_id: &'a str,
}

impl MessageContext<'_> {
    fn check(&self) -> Result<(), CryptoError> {
        check_user_id(self.sender_user_id, "sender user id")?;
        check_user_id(self.recipient_user_id, "recipient user id")?;
        check_uuid_v7(self.message_id, "message id")
    }
}

/// Seals `plaintext` from `sender` to the owner of `recipient` (which must be
/// `context.recipient_user_id`), with a fresh ephemeral key. The bundle's one-time prekey is used
/// when it has one.
///
/// Fails with [`CryptoError::NonContributory`] if any key of the bundle is a low-order point,
/// [`CryptoError::PlaintextTooLarge`] above [`MAX_PLAINTEXT_LEN`].
pub fn seal(
    sender: &IdentityKeyPair,
    context: &MessageContext<'_>,
    recipient: &VerifiedBundle,
    plaintext: &[u8],
) -> Result<Envelope, CryptoError> {
    if recipient.user_id() != context.recipient_user_id {
        return Err(CryptoError::KeyMismatch("the bundle is not the recipient's"));
    }
    let ephemeral = StaticSecret::from(*random_array::<32>()?);
    let nonce = random_array::<NONCE_LEN>()?;
    seal_with(sender, context, recipient, plaintext, &ephemeral, &nonce)
}

/// Seals the sender's own copy of a message: the same plaintext and ids, sealed to the sender's
/// own identity and current signed prekey (no one-time prekey), so the sender can read its sent
/// messages. `sender.user_id()` must be `context.sender_user_id`.
pub fn seal_to_self(
    sender: &DeviceKeys,
    context: &MessageContext<'_>,
    plaintext: &[u8],
) -> Result<Envelope, CryptoError> {
    if sender.user_id() != context.sender_user_id {
        return Err(CryptoError::KeyMismatch("these device keys are not the sender's"));
    }
    let ephemeral = StaticSecret::from(*random_array::<32>()?);
    let nonce = random_array::<NONCE_LEN>()?;
    seal_with(
        sender.identity(),
        context,
        &sender.own_bundle(),
        plaintext,
        &ephemeral,
        &nonce,
    )
}

/// The sealing itself, with the ephemeral secret and nonce given (tests use fixed ones).
pub(crate) fn seal_with(
    sender: &IdentityKeyPair,
    context: &MessageContext<'_>,
    recipient: &VerifiedBundle,
    plaintext: &[u8],
    ephemeral: &StaticSecret,
    nonce: &[u8; NONCE_LEN],
) -> Result<Envelope, CryptoError> {
    context.check()?;
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::PlaintextTooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let signed_prekey = recipient.signed_prekey();
    let one_time_prekey = recipient.one_time_prekey();

    let dh1 = x25519_agree(
        sender.dh_secret(),
        signed_prekey.public_key(),
        "the recipient's signed prekey",
    )?;
    let dh2 = x25519_agree(
        ephemeral,
        recipient.identity().dh_public_key(),
        "the recipient's identity key",
    )?;
    let dh3 = x25519_agree(ephemeral, signed_prekey.public_key(), "the recipient's signed prekey")?;
    let dh4 = one_time_prekey
        .map(|prekey| x25519_agree(ephemeral, prekey.public_key(), "the recipient's one-time prekey"))
        .transpose()?;
    let key = derive_message_key(&dh1, &dh2, &dh3, dh4.as_deref())?;

    let mut envelope = Envelope {
        version: ENVELOPE_VERSION,
        sender_identity_key_id: sender.key_id().to_owned(),
        recipient_identity_key_id: recipient.identity().key_id().to_owned(),
        recipient_signed_prekey_id: signed_prekey.key_id().to_owned(),
        recipient_one_time_prekey_id: one_time_prekey
            .map(|prekey| prekey.key_id().to_owned())
            .unwrap_or_default(),
        ephemeral_public_key: PublicKey::from(ephemeral).to_bytes().to_vec(),
        nonce: nonce.to_vec(),
        ciphertext: Vec::new(),
    };
    let aad = associated_data(context, &sender.public(), recipient.identity(), &envelope)?;
    envelope.ciphertext = primitives::aes256gcm_seal(&key, nonce, &aad, plaintext)?;
    Ok(envelope)
}

/// Opens an envelope sealed to `recipient`'s keys by `sender` (whose identity the caller has
/// fetched by `envelope.sender_identity_key_id` and verified, or pinned), with the ids the caller
/// expects. Works for both the recipient's envelope and the sender's own copy.
///
/// The signed prekey is looked up among the current and previous one. If a one-time prekey was
/// used, its secret is deleted once the envelope has authenticated, so a second open of the same
/// envelope fails with [`CryptoError::UnknownKey`] (forged envelopes cannot burn prekeys). The SDK
/// must therefore keep what it opened (see the crate documentation).
pub fn open(
    recipient: &mut DeviceKeys,
    sender: &IdentityPublicKey,
    context: &MessageContext<'_>,
    envelope: &Envelope,
) -> Result<Vec<u8>, CryptoError> {
    if envelope.version != ENVELOPE_VERSION {
        return Err(CryptoError::UnsupportedVersion(envelope.version));
    }
    context.check()?;
    check_uuid_v7(&envelope.sender_identity_key_id, "sender identity key id")?;
    check_uuid_v7(&envelope.recipient_identity_key_id, "recipient identity key id")?;
    check_uuid_v7(&envelope.recipient_signed_prekey_id, "signed prekey id")?;
    let one_time_prekey_id = envelope.recipient_one_time_prekey_id.as_str();
    if !one_time_prekey_id.is_empty() {
        check_uuid_v7(one_time_prekey_id, "one-time prekey id")?;
    }
    let ephemeral: [u8; 32] = envelope
        .ephemeral_public_key
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::MalformedEnvelope("the ephemeral key must be 32 bytes"))?;
    let nonce: [u8; NONCE_LEN] = envelope
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::MalformedEnvelope("the nonce must be 12 bytes"))?;
    if envelope.ciphertext.len() < TAG_LEN {
        return Err(CryptoError::MalformedEnvelope("the ciphertext is shorter than the tag"));
    }
    if envelope.ciphertext.len() > MAX_CIPHERTEXT_LEN {
        return Err(CryptoError::MalformedEnvelope("the ciphertext is larger than 256 KiB"));
    }
    if envelope.sender_identity_key_id != sender.key_id() {
        return Err(CryptoError::KeyMismatch(
            "the envelope was sealed by another identity than the one given",
        ));
    }
    if envelope.recipient_identity_key_id != recipient.identity().key_id() {
        return Err(CryptoError::UnknownKey {
            what: "identity key",
            id: envelope.recipient_identity_key_id.clone(),
        });
    }

    let plaintext = {
        let identity = recipient.identity();
        let signed_prekey = recipient
            .signed_prekey_by_id(&envelope.recipient_signed_prekey_id)
            .ok_or_else(|| CryptoError::UnknownKey {
                what: "signed prekey",
                id: envelope.recipient_signed_prekey_id.clone(),
            })?;
        let one_time_prekey = if one_time_prekey_id.is_empty() {
            None
        } else {
            Some(
                recipient
                    .one_time_prekey(one_time_prekey_id)
                    .ok_or_else(|| CryptoError::UnknownKey {
                        what: "one-time prekey (spent, or never issued)",
                        id: one_time_prekey_id.to_owned(),
                    })?,
            )
        };

        let dh1 = x25519_agree(
            signed_prekey.secret(),
            sender.dh_public_key(),
            "the sender's identity key",
        )?;
        let dh2 = x25519_agree(identity.dh_secret(), &ephemeral, "the ephemeral key")?;
        let dh3 = x25519_agree(signed_prekey.secret(), &ephemeral, "the ephemeral key")?;
        let dh4 = one_time_prekey
            .map(|prekey| x25519_agree(prekey.secret(), &ephemeral, "the ephemeral key"))
            .transpose()?;
        let key = derive_message_key(&dh1, &dh2, &dh3, dh4.as_deref())?;
        let aad = associated_data(context, sender, &identity.public(), envelope)?;
        primitives::aes256gcm_open(&key, &nonce, &aad, &envelope.ciphertext)?
    };

    if !one_time_prekey_id.is_empty() {
        // Authenticated: the one-time prekey is spent. Dropping it wipes the secret.
        drop(recipient.take_one_time_prekey(one_time_prekey_id));
    }
    Ok(plaintext)
}

/// `HKDF-SHA256(salt = 32 zero bytes, IKM = 0xFF×32 || DH1 || DH2 || DH3 [|| DH4],
/// info = "caremesh-x3dh-v1")`, 32 bytes: the AES-256-GCM key.
pub(crate) fn derive_message_key(
    dh1: &[u8; 32],
    dh2: &[u8; 32],
    dh3: &[u8; 32],
    dh4: Option<&[u8; 32]>,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    // Capacity for all five parts up front: the buffer is never reallocated, so no unwiped copy
    // of the key material is left behind.
    let mut ikm = Zeroizing::new(Vec::with_capacity(5 * 32));
    ikm.extend_from_slice(&[0xFF; 32]);
    ikm.extend_from_slice(dh1);
    ikm.extend_from_slice(dh2);
    ikm.extend_from_slice(dh3);
    if let Some(dh4) = dh4 {
        ikm.extend_from_slice(dh4);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    primitives::hkdf_sha256(&[0u8; 32], &ikm, X3DH_INFO, key.as_mut_slice())?;
    Ok(key)
}

/// The associated data (see the crate documentation for the layout).
pub(crate) fn associated_data(
    context: &MessageContext<'_>,
    sender: &IdentityPublicKey,
    recipient: &IdentityPublicKey,
    header: &Envelope,
) -> Result<Vec<u8>, CryptoError> {
    let mut encoder = Encoder::new(AAD_LABEL)?;
    encoder
        .u32(header.version)
        .field(context.sender_user_id.as_bytes())?
        .field(context.recipient_user_id.as_bytes())?
        .field(context.message_id.as_bytes())?
        .field(header.sender_identity_key_id.as_bytes())?
        .field(sender.signing_public_key())?
        .field(sender.dh_public_key())?
        .field(header.recipient_identity_key_id.as_bytes())?
        .field(recipient.signing_public_key())?
        .field(recipient.dh_public_key())?
        .field(header.recipient_signed_prekey_id.as_bytes())?
        .field(header.recipient_one_time_prekey_id.as_bytes())?
        .field(&header.ephemeral_public_key)?;
    Ok(encoder.finish())
}
