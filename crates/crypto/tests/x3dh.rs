//! Direct-message sealing between a patient (Alice) and a doctor (Bob): round trips, the sender's
//! copy, third parties, ephemeral freshness, one-time prekey spending, tampering with every byte,
//! swapped ids, bad bundle signatures, low-order points, rotation and persistence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashSet;

use caremesh_crypto::{
    CryptoError, DeviceKeys, Envelope, IdentityPublicKey, MAX_CIPHERTEXT_LEN, MAX_PLAINTEXT_LEN, MessageContext,
    VerifiedBundle, new_id, open, seal, seal_to_self, verify_bundle, verify_identity,
};
use caremesh_proto::messaging::v1 as proto;
use ed25519_dalek::{Signer, SigningKey};

const ALICE: &str = "alice-patient";
const BOB: &str = "bob-doctor";
const CAROL: &str = "carol-other";

/// A device that has published its keys: the directory's view is the publish request.
struct Device {
    keys: DeviceKeys,
    published: proto::PublishKeyBundleRequest,
}

impl Device {
    fn new(user_id: &str) -> Self {
        let mut keys = DeviceKeys::generate(user_id).unwrap();
        let published = keys.publish_request(10).unwrap();
        Self { keys, published }
    }

    /// What FetchKeyBundle would return, handing out the `nth` one-time prekey (or none).
    fn bundle(&self, one_time: Option<usize>) -> proto::KeyBundle {
        proto::KeyBundle {
            user_id: self.keys.user_id().to_owned(),
            identity_key: self.published.identity_key.clone(),
            signed_prekey: self.published.signed_prekey.clone(),
            one_time_prekey: one_time.map(|n| self.published.one_time_prekeys[n].clone()),
        }
    }

    fn verified(&self, one_time: Option<usize>) -> VerifiedBundle {
        verify_bundle(&self.bundle(one_time), self.keys.user_id()).unwrap()
    }

    /// The identity as another client gets it from the directory (GetIdentityKey), verified.
    fn identity(&self) -> IdentityPublicKey {
        verify_identity(self.published.identity_key.as_ref().unwrap(), self.keys.user_id()).unwrap()
    }
}

fn context<'a>(sender: &'a str, recipient: &'a str, message_id: &'a str) -> MessageContext<'a> {
    MessageContext {
        sender_user_id: sender,
        recipient_user_id: recipient,
        message_id,
    }
}

#[test]
fn alice_and_bob_exchange_messages_with_and_without_one_time_prekeys() {
    let mut alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let bob_bundles = [bob.verified(Some(0)), bob.verified(None)];
    for bundle in &bob_bundles {
        let id = new_id();
        let ctx = context(ALICE, BOB, &id);
        let envelope = seal(alice.keys.identity(), &ctx, bundle, b"Doctor, my results?").unwrap();
        assert_eq!(envelope.version, 1);
        assert_eq!(envelope.sender_identity_key_id, alice.keys.identity().key_id());
        assert_eq!(envelope.recipient_identity_key_id, bob.keys.identity().key_id());
        assert_eq!(envelope.recipient_signed_prekey_id, bob.keys.signed_prekey().key_id());
        assert_eq!(
            envelope.recipient_one_time_prekey_id,
            bundle
                .one_time_prekey()
                .map(|prekey| prekey.key_id().to_owned())
                .unwrap_or_default()
        );
        assert_eq!(envelope.ephemeral_public_key.len(), 32);
        assert_eq!(envelope.nonce.len(), 12);
        assert_eq!(envelope.ciphertext.len(), b"Doctor, my results?".len() + 16);
        let opened = open(&mut bob.keys, &alice.identity(), &ctx, &envelope).unwrap();
        assert_eq!(opened, b"Doctor, my results?");
    }
    assert_eq!(
        bob.keys.one_time_prekey_count(),
        9,
        "exactly the used one-time prekey was spent"
    );

    // And back: Bob replies to Alice.
    let id = new_id();
    let ctx = context(BOB, ALICE, &id);
    let reply = seal(bob.keys.identity(), &ctx, &alice.verified(Some(3)), b"All normal.").unwrap();
    assert_eq!(
        open(&mut alice.keys, &bob.identity(), &ctx, &reply).unwrap(),
        b"All normal."
    );
}

#[test]
fn the_senders_copy_opens_for_the_sender_and_only_for_the_sender() {
    let mut alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let to_bob = seal(alice.keys.identity(), &ctx, &bob.verified(Some(0)), b"hello").unwrap();
    let own_copy = seal_to_self(&alice.keys, &ctx, b"hello").unwrap();
    assert_eq!(own_copy.recipient_identity_key_id, alice.keys.identity().key_id());
    assert!(own_copy.recipient_one_time_prekey_id.is_empty());
    assert_ne!(own_copy.ephemeral_public_key, to_bob.ephemeral_public_key);

    let alice_identity = alice.identity();
    // No one-time prekey: the sender can read its history again and again.
    for _ in 0..2 {
        assert_eq!(
            open(&mut alice.keys, &alice_identity, &ctx, &own_copy).unwrap(),
            b"hello"
        );
    }
    assert!(open(&mut bob.keys, &alice_identity, &ctx, &own_copy).is_err());
    assert!(open(&mut alice.keys, &alice_identity, &ctx, &to_bob).is_err());
    assert_eq!(open(&mut bob.keys, &alice_identity, &ctx, &to_bob).unwrap(), b"hello");

    // The copy is bound to the conversation's ids like the recipient's envelope.
    let other = new_id();
    assert_eq!(
        open(&mut alice.keys, &alice_identity, &context(ALICE, CAROL, &id), &own_copy),
        Err(CryptoError::DecryptionFailed)
    );
    assert_eq!(
        open(
            &mut alice.keys,
            &alice_identity,
            &context(ALICE, BOB, &other),
            &own_copy
        ),
        Err(CryptoError::DecryptionFailed)
    );
    // Sealing a copy with someone else's context is refused.
    assert!(matches!(
        seal_to_self(&alice.keys, &context(BOB, ALICE, &id), b"x"),
        Err(CryptoError::KeyMismatch(_))
    ));
}

#[test]
fn a_third_party_cannot_open() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let mut carol = Device::new(CAROL);
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let envelope = seal(alice.keys.identity(), &ctx, &bob.verified(Some(0)), b"private").unwrap();

    // Carol's keys, with every context she might try.
    for ctx in [ctx, context(ALICE, CAROL, &id)] {
        let result = open(&mut carol.keys, &alice.identity(), &ctx, &envelope);
        assert!(
            matches!(
                result,
                Err(CryptoError::UnknownKey {
                    what: "identity key",
                    ..
                })
            ),
            "{result:?}"
        );
    }
    // Even if a server rewrites the header to name Carol's keys, she derives another key.
    let mut redirected = envelope.clone();
    redirected.recipient_identity_key_id = carol.keys.identity().key_id().to_owned();
    redirected.recipient_signed_prekey_id = carol.keys.signed_prekey().key_id().to_owned();
    redirected.recipient_one_time_prekey_id = carol.keys.one_time_prekey_ids().next().unwrap().to_owned();
    for ctx in [ctx, context(ALICE, CAROL, &id)] {
        assert_eq!(
            open(&mut carol.keys, &alice.identity(), &ctx, &redirected),
            Err(CryptoError::DecryptionFailed)
        );
    }
    assert_eq!(carol.keys.one_time_prekey_count(), 10, "failed opens spend nothing");
    assert_eq!(
        open(&mut bob.keys, &alice.identity(), &ctx, &envelope).unwrap(),
        b"private"
    );
}

#[test]
fn every_envelope_has_a_fresh_ephemeral_key_and_nonce() {
    let alice = Device::new(ALICE);
    let bob = Device::new(BOB);
    let bundle = bob.verified(None);
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let mut ephemeral = HashSet::new();
    let mut nonces = HashSet::new();
    let mut ciphertexts = HashSet::new();
    for _ in 0..50 {
        let envelope = seal(alice.keys.identity(), &ctx, &bundle, b"same text").unwrap();
        assert!(ephemeral.insert(envelope.ephemeral_public_key.clone()));
        assert!(nonces.insert(envelope.nonce.clone()));
        assert!(ciphertexts.insert(envelope.ciphertext.clone()));
        let own = seal_to_self(&alice.keys, &ctx, b"same text").unwrap();
        assert!(ephemeral.insert(own.ephemeral_public_key));
    }
}

#[test]
fn a_spent_one_time_prekey_cannot_be_used_twice() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let bundle = bob.verified(Some(2));
    let opk_id = bundle.one_time_prekey().unwrap().key_id().to_owned();
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let first = seal(alice.keys.identity(), &ctx, &bundle, b"one").unwrap();
    let second_id = new_id();
    let ctx2 = context(ALICE, BOB, &second_id);
    let second = seal(alice.keys.identity(), &ctx2, &bundle, b"two").unwrap();

    assert_eq!(open(&mut bob.keys, &alice.identity(), &ctx, &first).unwrap(), b"one");
    assert!(
        bob.keys.one_time_prekey_ids().all(|id| id != opk_id),
        "the secret is deleted"
    );
    // Replaying the same envelope, or another sealed to the same one-time prekey, fails cleanly.
    for (ctx, envelope) in [(&ctx, &first), (&ctx2, &second)] {
        match open(&mut bob.keys, &alice.identity(), ctx, envelope) {
            Err(CryptoError::UnknownKey { id, .. }) => assert_eq!(id, opk_id),
            other => panic!("expected an unknown one-time prekey, got {other:?}"),
        }
    }
    assert!(bob.keys.take_one_time_prekey(&opk_id).is_none());
    let other = bob.keys.one_time_prekey_ids().next().unwrap().to_owned();
    assert!(bob.keys.take_one_time_prekey(&other).is_some());
    assert!(bob.keys.take_one_time_prekey(&other).is_none());
}

/// Every variant of `envelope` with one byte (or the version, or a length) changed.
fn tampered_variants(envelope: &Envelope) -> Vec<(String, Envelope)> {
    let mut variants = Vec::new();
    for version in [0u32, 2, 3, u32::MAX]
        .into_iter()
        .chain((0..32).map(|bit| 1 ^ (1 << bit)))
    {
        if version != envelope.version {
            let mut changed = envelope.clone();
            changed.version = version;
            variants.push((format!("version {version}"), changed));
        }
    }
    type StringField = fn(&mut Envelope) -> &mut String;
    let strings: [(&str, StringField); 4] = [
        ("sender_identity_key_id", |e| &mut e.sender_identity_key_id),
        ("recipient_identity_key_id", |e| &mut e.recipient_identity_key_id),
        ("recipient_signed_prekey_id", |e| &mut e.recipient_signed_prekey_id),
        ("recipient_one_time_prekey_id", |e| &mut e.recipient_one_time_prekey_id),
    ];
    for (name, field) in strings {
        let mut original = envelope.clone();
        let bytes = field(&mut original).clone().into_bytes();
        for index in 0..bytes.len() {
            for mask in [0x01u8, 0x20] {
                let mut flipped = bytes.clone();
                flipped[index] ^= mask;
                if let Ok(text) = String::from_utf8(flipped) {
                    let mut changed = envelope.clone();
                    *field(&mut changed) = text;
                    variants.push((format!("{name}[{index}] ^ {mask:#x}"), changed));
                }
            }
        }
        if !bytes.is_empty() {
            let mut emptied = envelope.clone();
            field(&mut emptied).clear();
            variants.push((format!("{name} emptied"), emptied));
        }
        let mut replaced = envelope.clone();
        *field(&mut replaced) = new_id();
        variants.push((format!("{name} replaced"), replaced));
    }
    type BytesField = fn(&mut Envelope) -> &mut Vec<u8>;
    let byte_fields: [(&str, BytesField); 3] = [
        ("ephemeral_public_key", |e| &mut e.ephemeral_public_key),
        ("nonce", |e| &mut e.nonce),
        ("ciphertext", |e| &mut e.ciphertext),
    ];
    for (name, field) in byte_fields {
        let length = field(&mut envelope.clone()).len();
        for index in 0..length {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut changed = envelope.clone();
                field(&mut changed)[index] ^= mask;
                variants.push((format!("{name}[{index}] ^ {mask:#x}"), changed));
            }
        }
        let mut truncated = envelope.clone();
        field(&mut truncated).pop();
        variants.push((format!("{name} truncated"), truncated));
        let mut extended = envelope.clone();
        field(&mut extended).push(0);
        variants.push((format!("{name} extended"), extended));
    }
    variants
}

#[test]
fn tampering_with_any_byte_of_the_envelope_fails_to_open() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    for one_time in [Some(0), None] {
        let envelope = seal(
            alice.keys.identity(),
            &ctx,
            &bob.verified(one_time),
            b"blood pressure 120/80",
        )
        .unwrap();
        let variants = tampered_variants(&envelope);
        assert!(variants.len() > 500, "{} variants", variants.len());
        for (what, tampered) in &variants {
            assert_ne!(tampered, &envelope, "{what}");
            let result = open(&mut bob.keys, &alice.identity(), &ctx, tampered);
            assert!(result.is_err(), "{what} opened: {result:?}");
        }
        // Nothing was spent by the failures: the genuine envelope still opens (once).
        assert_eq!(
            open(&mut bob.keys, &alice.identity(), &ctx, &envelope).unwrap(),
            b"blood pressure 120/80"
        );
    }
}

#[test]
fn swapped_sender_recipient_or_message_ids_fail_to_open() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let carol = Device::new(CAROL);
    let id = new_id();
    let other_id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let envelope = seal(alice.keys.identity(), &ctx, &bob.verified(Some(0)), b"note").unwrap();
    let wrong_contexts = [
        context(BOB, ALICE, &id),
        context(CAROL, BOB, &id),
        context(ALICE, CAROL, &id),
        context(ALICE, BOB, &other_id),
        context("alice-patient ", BOB, &id),
    ];
    for wrong in &wrong_contexts {
        assert_eq!(
            open(&mut bob.keys, &alice.identity(), wrong, &envelope),
            Err(CryptoError::DecryptionFailed),
            "{wrong:?}"
        );
    }
    // The wrong sender identity: refused by key id, and by the key itself under a forged id.
    let result = open(&mut bob.keys, &carol.identity(), &ctx, &envelope);
    assert!(matches!(result, Err(CryptoError::KeyMismatch(_))), "{result:?}");
    let mut forged = envelope.clone();
    forged.sender_identity_key_id = carol.keys.identity().key_id().to_owned();
    assert_eq!(
        open(&mut bob.keys, &carol.identity(), &ctx, &forged),
        Err(CryptoError::DecryptionFailed)
    );
    // A message id that is not a canonical UUIDv7 is refused outright.
    let upper = id.to_uppercase();
    assert!(matches!(
        open(
            &mut bob.keys,
            &alice.identity(),
            &context(ALICE, BOB, &upper),
            &envelope
        ),
        Err(CryptoError::InvalidId { .. })
    ));
    assert_eq!(
        open(&mut bob.keys, &alice.identity(), &ctx, &envelope).unwrap(),
        b"note"
    );
}

#[test]
fn sealing_to_a_bundle_of_someone_else_is_refused() {
    let alice = Device::new(ALICE);
    let carol = Device::new(CAROL);
    let id = new_id();
    let result = seal(
        alice.keys.identity(),
        &context(ALICE, BOB, &id),
        &carol.verified(None),
        b"x",
    );
    assert!(matches!(result, Err(CryptoError::KeyMismatch(_))), "{result:?}");
}

/// The identity's Ed25519 seed, read from the persisted form (to play a malicious key owner).
fn signing_key(keys: &DeviceKeys) -> SigningKey {
    let stored = serde_json::to_value(keys).unwrap();
    let seed: [u8; 32] = hex::decode(stored["identity"]["signing_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Signs a signed prekey per the documented encoding, whatever its public key.
fn sign_prekey(key: &SigningKey, user_id: &str, identity_key_id: &str, prekey: &mut proto::SignedPrekey) {
    let mut message = Vec::new();
    for field in [
        b"caremesh-key-signature-v1".as_slice(),
        b"signed-prekey",
        user_id.as_bytes(),
    ] {
        lp(&mut message, field);
    }
    lp(&mut message, identity_key_id.as_bytes());
    lp(&mut message, prekey.key_id.as_bytes());
    lp(&mut message, &prekey.public_key);
    prekey.signature = key.sign(&message).to_bytes().to_vec();
}

/// Signs an identity binding per the documented encoding, whatever its X25519 key.
fn sign_identity(key: &SigningKey, user_id: &str, identity: &mut proto::IdentityKey) {
    let mut message = Vec::new();
    for field in [
        b"caremesh-key-signature-v1".as_slice(),
        b"identity-key",
        user_id.as_bytes(),
    ] {
        lp(&mut message, field);
    }
    lp(&mut message, identity.key_id.as_bytes());
    lp(&mut message, &identity.signing_public_key);
    lp(&mut message, &identity.dh_public_key);
    identity.dh_public_key_signature = key.sign(&message).to_bytes().to_vec();
}

#[test]
fn bundles_with_bad_signatures_or_owners_are_refused() {
    let bob = Device::new(BOB);
    let carol = Device::new(CAROL);
    let good = bob.bundle(Some(0));
    verify_bundle(&good, BOB).unwrap();

    // The documented encoding is what the code signs.
    let mut resigned = good.clone();
    sign_prekey(
        &signing_key(&bob.keys),
        BOB,
        bob.keys.identity().key_id(),
        resigned.signed_prekey.as_mut().unwrap(),
    );
    assert_eq!(resigned, good);

    let mut cases: Vec<(&str, proto::KeyBundle)> = Vec::new();
    for index in 0..64 {
        let mut bad = good.clone();
        bad.signed_prekey.as_mut().unwrap().signature[index] ^= 0x01;
        cases.push(("flipped signed-prekey signature byte", bad));
    }
    let mut bad = good.clone();
    bad.signed_prekey.as_mut().unwrap().public_key = carol.keys.signed_prekey().public_key().to_vec();
    cases.push(("substituted signed prekey", bad));
    let mut bad = good.clone();
    bad.signed_prekey.as_mut().unwrap().key_id = new_id();
    cases.push(("substituted signed prekey id", bad));
    let mut bad = good.clone();
    bad.signed_prekey = carol.bundle(None).signed_prekey;
    cases.push(("Carol's signed prekey", bad));
    let mut bad = good.clone();
    bad.signed_prekey.as_mut().unwrap().signature.clear();
    cases.push(("empty signature", bad));
    let mut bad = good.clone();
    bad.signed_prekey = None;
    cases.push(("no signed prekey", bad));
    let mut bad = good.clone();
    bad.identity_key.as_mut().unwrap().dh_public_key_signature[5] ^= 0x01;
    cases.push(("flipped identity binding", bad));
    let mut bad = good.clone();
    bad.identity_key.as_mut().unwrap().dh_public_key = carol.keys.identity().dh_public_key().to_vec();
    cases.push(("substituted X25519 identity key", bad));
    let mut bad = good.clone();
    bad.identity_key = None;
    cases.push(("no identity", bad));
    let mut bad = good.clone();
    bad.one_time_prekey.as_mut().unwrap().public_key.pop();
    cases.push(("short one-time prekey", bad));
    let mut bad = good.clone();
    bad.user_id = CAROL.to_owned();
    cases.push(("claims another owner", bad));
    // A bundle verified before does not vouch for a changed one.
    let verified_before = verify_bundle(&bob.bundle(Some(1)), BOB).unwrap();
    for (what, bundle) in &cases {
        assert!(verify_bundle(bundle, BOB).is_err(), "{what}");
        assert!(
            verified_before.verify_next(bundle, BOB).is_err(),
            "{what}, after a good bundle"
        );
    }
    assert!(
        verified_before.verify_next(&good, CAROL).is_err(),
        "asked for another user"
    );
    let mut flipped = good.clone();
    flipped.signed_prekey.as_mut().unwrap().signature[0] ^= 0x01;
    assert_eq!(
        verify_bundle(&flipped, BOB).unwrap_err(),
        CryptoError::BadSignature { what: "signed prekey" }
    );

    // Mallory republishing Bob's keys as her own: the binding names Bob.
    let mut stolen = good.clone();
    stolen.user_id = "mallory".to_owned();
    assert_eq!(
        verify_bundle(&stolen, "mallory").unwrap_err(),
        CryptoError::BadSignature {
            what: "identity key binding"
        }
    );
    // The bundle of the user asked for, not of whoever the server says.
    assert_eq!(
        verify_bundle(&good, CAROL).unwrap_err(),
        CryptoError::KeyMismatch("the bundle belongs to another user")
    );
}

/// X25519 public keys of small order (and non-canonical encodings of them).
fn low_order_points() -> Vec<[u8; 32]> {
    let hex_points = [
        "0000000000000000000000000000000000000000000000000000000000000000", // 0
        "0100000000000000000000000000000000000000000000000000000000000000", // 1
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p - 1 (order 2)
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p (= 0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p + 1 (= 1)
        "0000000000000000000000000000000000000000000000000000000000000080", // 0, high bit set
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880", // order 8, high bit set
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // p + 1 (= 1), high bit set
    ];
    hex_points
        .iter()
        .map(|point| hex::decode(point).unwrap().try_into().unwrap())
        .collect()
}

#[test]
fn low_order_bundle_keys_are_refused_as_non_contributory() {
    let alice = Device::new(ALICE);
    let bob = Device::new(BOB);
    let bob_signing = signing_key(&bob.keys);
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    for point in low_order_points() {
        // A validly signed signed prekey that is a low-order point.
        let mut bundle = bob.bundle(Some(0));
        let prekey = bundle.signed_prekey.as_mut().unwrap();
        prekey.public_key = point.to_vec();
        sign_prekey(&bob_signing, BOB, bob.keys.identity().key_id(), prekey);
        let verified = verify_bundle(&bundle, BOB).unwrap();
        assert_eq!(
            seal(alice.keys.identity(), &ctx, &verified, b"x").unwrap_err(),
            CryptoError::NonContributory {
                what: "the recipient's signed prekey"
            },
            "{}",
            hex::encode(point)
        );

        // A validly bound X25519 identity key that is a low-order point.
        let mut bundle = bob.bundle(None);
        let identity = bundle.identity_key.as_mut().unwrap();
        identity.dh_public_key = point.to_vec();
        sign_identity(&bob_signing, BOB, identity);
        let verified = verify_bundle(&bundle, BOB).unwrap();
        assert_eq!(
            seal(alice.keys.identity(), &ctx, &verified, b"x").unwrap_err(),
            CryptoError::NonContributory {
                what: "the recipient's identity key"
            }
        );

        // A low-order one-time prekey (unsigned: anyone on the path could substitute it).
        let mut bundle = bob.bundle(Some(1));
        bundle.one_time_prekey.as_mut().unwrap().public_key = point.to_vec();
        let verified = verify_bundle(&bundle, BOB).unwrap();
        assert_eq!(
            seal(alice.keys.identity(), &ctx, &verified, b"x").unwrap_err(),
            CryptoError::NonContributory {
                what: "the recipient's one-time prekey"
            }
        );
    }
}

#[test]
fn low_order_keys_from_the_sender_are_refused_when_opening() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let alice_signing = signing_key(&alice.keys);
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let envelope = seal(alice.keys.identity(), &ctx, &bob.verified(Some(0)), b"x").unwrap();
    for point in low_order_points() {
        let mut tampered = envelope.clone();
        tampered.ephemeral_public_key = point.to_vec();
        assert_eq!(
            open(&mut bob.keys, &alice.identity(), &ctx, &tampered).unwrap_err(),
            CryptoError::NonContributory {
                what: "the ephemeral key"
            }
        );
        // A sender identity (validly bound) with a low-order X25519 key.
        let mut identity = alice.published.identity_key.clone().unwrap();
        identity.dh_public_key = point.to_vec();
        sign_identity(&alice_signing, ALICE, &mut identity);
        let identity = verify_identity(&identity, ALICE).unwrap();
        assert_eq!(
            open(&mut bob.keys, &identity, &ctx, &envelope).unwrap_err(),
            CryptoError::NonContributory {
                what: "the sender's identity key"
            }
        );
    }
    assert_eq!(open(&mut bob.keys, &alice.identity(), &ctx, &envelope).unwrap(), b"x");
}

#[test]
fn the_size_limit_is_clear() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let bundle = bob.verified(None);
    let largest = vec![0x42; MAX_PLAINTEXT_LEN];
    let envelope = seal(alice.keys.identity(), &ctx, &bundle, &largest).unwrap();
    assert_eq!(envelope.ciphertext.len(), MAX_CIPHERTEXT_LEN);
    assert_eq!(MAX_CIPHERTEXT_LEN, 256 * 1024);
    assert_eq!(
        open(&mut bob.keys, &alice.identity(), &ctx, &envelope).unwrap(),
        largest
    );
    let too_large = vec![0x42; MAX_PLAINTEXT_LEN + 1];
    let error = seal(alice.keys.identity(), &ctx, &bundle, &too_large).unwrap_err();
    assert_eq!(
        error,
        CryptoError::PlaintextTooLarge {
            len: MAX_PLAINTEXT_LEN + 1,
            max: MAX_PLAINTEXT_LEN
        }
    );
    assert_eq!(
        error.to_string(),
        "the message is 262129 bytes; at most 262128 bytes can be sealed"
    );
    assert!(seal_to_self(&alice.keys, &ctx, &too_large).is_err());
    let mut oversized = envelope.clone();
    oversized.ciphertext.push(0);
    assert!(matches!(
        open(&mut bob.keys, &alice.identity(), &ctx, &oversized),
        Err(CryptoError::MalformedEnvelope(_))
    ));
}

#[test]
fn messages_to_the_previous_signed_prekey_open_until_it_is_forgotten() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let bundle = bob.verified(None);
    let ids = [new_id(), new_id(), new_id()];
    let sealed: Vec<_> = ids
        .iter()
        .map(|id| {
            seal(
                alice.keys.identity(),
                &context(ALICE, BOB, id),
                &bundle,
                b"before rotation",
            )
            .unwrap()
        })
        .collect();

    let rotated = bob.keys.rotate_signed_prekey().unwrap();
    let new_prekey = rotated.signed_prekey.unwrap();
    assert_ne!(new_prekey.key_id, bundle.signed_prekey().key_id());
    assert_eq!(
        bob.keys.previous_signed_prekey().unwrap().key_id(),
        bundle.signed_prekey().key_id()
    );
    // The directory's copy is the new one, and verifies.
    let mut fetched = bob.bundle(None);
    fetched.signed_prekey = Some(new_prekey);
    let fresh = verify_bundle(&fetched, BOB).unwrap();
    let after_id = new_id();
    let after = seal(alice.keys.identity(), &context(ALICE, BOB, &after_id), &fresh, b"after").unwrap();
    assert_eq!(
        open(
            &mut bob.keys,
            &alice.identity(),
            &context(ALICE, BOB, &after_id),
            &after
        )
        .unwrap(),
        b"after"
    );
    assert_eq!(
        open(
            &mut bob.keys,
            &alice.identity(),
            &context(ALICE, BOB, &ids[0]),
            &sealed[0]
        )
        .unwrap(),
        b"before rotation"
    );

    bob.keys.rotate_signed_prekey().unwrap();
    assert!(matches!(
        open(
            &mut bob.keys,
            &alice.identity(),
            &context(ALICE, BOB, &ids[1]),
            &sealed[1]
        ),
        Err(CryptoError::UnknownKey {
            what: "signed prekey",
            ..
        })
    ));
    assert_eq!(
        open(
            &mut bob.keys,
            &alice.identity(),
            &context(ALICE, BOB, &after_id),
            &after
        )
        .unwrap(),
        b"after"
    );
    bob.keys.forget_previous_signed_prekey();
    assert!(
        open(
            &mut bob.keys,
            &alice.identity(),
            &context(ALICE, BOB, &after_id),
            &after
        )
        .is_err()
    );
}

#[test]
fn device_keys_persist_and_reload() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    bob.keys.rotate_signed_prekey().unwrap();
    let mut fetched = bob.bundle(Some(4));
    fetched.signed_prekey = Some(bob.keys.signed_prekey().to_proto());
    let bundle = verify_bundle(&fetched, BOB).unwrap();
    let id = new_id();
    let ctx = context(ALICE, BOB, &id);
    let envelope = seal(alice.keys.identity(), &ctx, &bundle, b"persisted").unwrap();

    let stored = serde_json::to_string(&bob.keys).unwrap();
    let mut reloaded: DeviceKeys = serde_json::from_str(&stored).unwrap();
    assert_eq!(reloaded.user_id(), BOB);
    assert_eq!(reloaded.identity().key_id(), bob.keys.identity().key_id());
    assert_eq!(
        reloaded.identity().signing_public_key(),
        bob.keys.identity().signing_public_key()
    );
    assert_eq!(reloaded.identity().dh_public_key(), bob.keys.identity().dh_public_key());
    assert_eq!(
        reloaded.signed_prekey().signature(),
        bob.keys.signed_prekey().signature()
    );
    assert!(reloaded.previous_signed_prekey().is_some());
    assert_eq!(reloaded.one_time_prekey_count(), 10);
    assert_eq!(serde_json::to_string(&reloaded).unwrap(), stored);
    assert_eq!(
        open(&mut reloaded, &alice.identity(), &ctx, &envelope).unwrap(),
        b"persisted"
    );
    assert_eq!(reloaded.one_time_prekey_count(), 9);

    // Inconsistent or unknown stored forms are refused.
    let value: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let carol = serde_json::to_value(&Device::new(CAROL).keys).unwrap();
    let mut mixed = value.clone();
    mixed["signed_prekey"] = carol["signed_prekey"].clone();
    let mut other_user = value.clone();
    other_user["user_id"] = CAROL.into();
    let mut future = value.clone();
    future["format"] = 2.into();
    let mut extra = value.clone();
    extra["unexpected"] = true.into();
    let mut short_secret = value.clone();
    short_secret["identity"]["dh_key"] = "abcd".into();
    for bad in [mixed, other_user, future, extra, short_secret] {
        assert!(serde_json::from_value::<DeviceKeys>(bad).is_err());
    }
}

#[test]
fn publishing_respects_the_upload_limit() {
    let mut keys = DeviceKeys::generate(ALICE).unwrap();
    assert!(matches!(keys.publish_request(101), Err(CryptoError::OutOfRange { .. })));
    assert!(matches!(keys.top_up_request(0), Err(CryptoError::OutOfRange { .. })));
    assert_eq!(keys.one_time_prekey_count(), 0);
    let request = keys.publish_request(100).unwrap();
    assert_eq!(request.one_time_prekeys.len(), 100);
    let top_up = keys.top_up_request(7).unwrap();
    assert_eq!(top_up.one_time_prekeys.len(), 7);
    assert_eq!(keys.one_time_prekey_count(), 107);
    let identity = verify_identity(request.identity_key.as_ref().unwrap(), ALICE).unwrap();
    assert_eq!(identity, keys.identity().public());
    caremesh_crypto::verify_signed_prekey(request.signed_prekey.as_ref().unwrap(), ALICE, &identity).unwrap();
    for prekey in request.one_time_prekeys.iter().chain(&top_up.one_time_prekeys) {
        caremesh_crypto::check_one_time_prekey(prekey).unwrap();
    }
    assert!(matches!(DeviceKeys::generate(""), Err(CryptoError::InvalidId { .. })));
}

#[test]
fn the_next_bundle_of_an_unchanged_contact_reuses_the_signature_checks() {
    let alice = Device::new(ALICE);
    let mut bob = Device::new(BOB);
    let first = bob.verified(Some(0));
    for (index, one_time) in [Some(1), None, Some(2)].into_iter().enumerate() {
        let next = first.verify_next(&bob.bundle(one_time), BOB).unwrap();
        assert_eq!(next.identity(), first.identity());
        assert_eq!(next.signed_prekey(), first.signed_prekey());
        assert_eq!(
            next.one_time_prekey().map(|prekey| prekey.key_id().to_owned()),
            one_time.map(|n| bob.published.one_time_prekeys[n].key_id.clone())
        );
        // And it seals to the right keys.
        let message_id = new_id();
        let text = format!("message {index}");
        let envelope = seal(
            alice.keys.identity(),
            &context(ALICE, BOB, &message_id),
            &next,
            text.as_bytes(),
        )
        .unwrap();
        let opened = open(
            &mut bob.keys,
            &alice.identity(),
            &context(ALICE, BOB, &message_id),
            &envelope,
        )
        .unwrap();
        assert_eq!(opened.as_slice(), text.as_bytes());
    }
    // After Bob rotates his signed prekey, the new bundle is verified in full and works.
    bob.keys.rotate_signed_prekey().unwrap();
    bob.published = bob.keys.publish_request(3).unwrap();
    let rotated = first.verify_next(&bob.bundle(Some(0)), BOB).unwrap();
    assert_ne!(rotated.signed_prekey(), first.signed_prekey());
    assert_eq!(rotated.signed_prekey().key_id(), bob.keys.signed_prekey().key_id());
}
