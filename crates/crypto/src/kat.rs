//! Known-answer tests against an independent implementation of the documented encodings
//! (`kat/generate_kat.py`, pyca/cryptography): the binding and prekey signatures, the X3DH key
//! derivation and associated data (with and without a one-time prekey), the safety number and the
//! detached signature. Fixed keys, ephemeral key and nonce; Ed25519 is deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use caremesh_proto::messaging::v1 as proto;
use ed25519_dalek::SigningKey;
use x25519_dalek::StaticSecret;

use crate::envelope::seal_with;
use crate::keys::{DeviceKeys, IdentityKeyPair, OneTimePrekey, SignedPrekey};
use crate::{MessageContext, open, safety_number, sign_detached, verify_bundle, verify_detached};

// Output of `python3 kat/generate_kat.py`.
const BOB_IDENTITY_BINDING: &str = "a10f7c914a528894850409ea706429462d879de5e48ea1084bb2ad390d683dba9ee6d880fdb6450cf07b8e8125dba108f87820c309b7482db536b77b7b132504";
const BOB_SIGNED_PREKEY_SIGNATURE: &str = "050ac41a703acec717a9e4dde172d43bcc4d38e5512f2a1cb89aaf0978c0cce81487ada0585fa744c54969a7904b270a8a7bf8495f4f64e936206b474b7fec0d";
const CIPHERTEXT_WITH_OPK: &str = "cd24fce32db010141714e10631c30aa4f398e0cf8dcf311d5ef5a3e3975044611dfee022212671";
const CIPHERTEXT_WITHOUT_OPK: &str = "9c805dd8bdc3f414eaf5a10650fb4ca0e3fd12e57cf4ddf457a5f10c69a6ca925ad93d38e5dc43";
const SAFETY_NUMBER: &str = "43696 24650 05005 89877 65387 50527 80668 97635 68024 12200 56733 39891";
const DETACHED_SIGNATURE: &str = "baca9ce31177d9438d0da9a7ba2f73bbbf4f2b43a5e234932b8b41fa5864f447451cb12aae2c8779af7c9b37551fcaf341f159f347d61c04f73932a7e1b19903";

const ALICE: &str = "alice-kat-user";
const BOB: &str = "bob-kat-user";
const MESSAGE_ID: &str = "01890a5d-ac96-7c4b-bcce-b302099a8057";
const ALICE_IK_ID: &str = "01890a5d-ac96-7000-8000-00000000a11c";
const BOB_IK_ID: &str = "01890a5d-ac96-7000-8000-000000000b0b";
const BOB_SPK_ID: &str = "01890a5d-ac96-7000-8000-0000000005be";
const BOB_OPK_ID: &str = "01890a5d-ac96-7000-8000-0000000000be";
const PLAINTEXT: &[u8] = b"caremesh KAT: hello Bob";

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn identity(key_id: &str, ed: u8, x: u8) -> IdentityKeyPair {
    IdentityKeyPair::from_parts(
        key_id.to_owned(),
        SigningKey::from_bytes(&seq(ed)),
        StaticSecret::from(seq::<32>(x)),
    )
}

fn bob_keys() -> DeviceKeys {
    let identity = identity(BOB_IK_ID, 0x40, 0x60);
    let spk = SignedPrekey::from_secret(
        &identity,
        BOB,
        BOB_SPK_ID.to_owned(),
        StaticSecret::from(seq::<32>(0x80)),
    )
    .unwrap();
    let opk = OneTimePrekey::from_secret(BOB_OPK_ID.to_owned(), StaticSecret::from(seq::<32>(0xA0)));
    DeviceKeys::from_parts(BOB, identity, spk, vec![opk])
}

fn bob_bundle(bob: &DeviceKeys, with_opk: bool) -> proto::KeyBundle {
    proto::KeyBundle {
        user_id: BOB.to_owned(),
        identity_key: Some(bob.identity_proto().unwrap()),
        signed_prekey: Some(bob.signed_prekey().to_proto()),
        one_time_prekey: with_opk.then(|| bob.one_time_prekey(BOB_OPK_ID).unwrap().to_proto()),
    }
}

#[test]
fn key_signatures_match_the_independent_implementation() {
    let bob = bob_keys();
    assert_eq!(
        hex::encode(&bob.identity_proto().unwrap().dh_public_key_signature),
        BOB_IDENTITY_BINDING
    );
    assert_eq!(
        hex::encode(bob.signed_prekey().signature()),
        BOB_SIGNED_PREKEY_SIGNATURE
    );
}

#[test]
fn envelopes_match_the_independent_implementation_and_open() {
    let alice = identity(ALICE_IK_ID, 0x00, 0x20);
    let context = MessageContext {
        sender_user_id: ALICE,
        recipient_user_id: BOB,
        message_id: MESSAGE_ID,
    };
    for (with_opk, expected) in [(true, CIPHERTEXT_WITH_OPK), (false, CIPHERTEXT_WITHOUT_OPK)] {
        let mut bob = bob_keys();
        let bundle = verify_bundle(&bob_bundle(&bob, with_opk), BOB).unwrap();
        let ephemeral = StaticSecret::from(seq::<32>(0xC0));
        let envelope = seal_with(&alice, &context, &bundle, PLAINTEXT, &ephemeral, &seq(0xE0)).unwrap();
        assert_eq!(
            hex::encode(&envelope.ciphertext),
            expected,
            "with one-time prekey: {with_opk}"
        );
        assert_eq!(
            envelope.recipient_one_time_prekey_id,
            if with_opk { BOB_OPK_ID } else { "" }
        );
        assert_eq!(open(&mut bob, &alice.public(), &context, &envelope).unwrap(), PLAINTEXT);
    }
}

#[test]
fn safety_number_and_detached_signature_match_the_independent_implementation() {
    let alice = identity(ALICE_IK_ID, 0x00, 0x20);
    let bob = identity(BOB_IK_ID, 0x40, 0x60);
    assert_eq!(safety_number(ALICE, &alice.public(), BOB, &bob.public()), SAFETY_NUMBER);
    assert_eq!(safety_number(BOB, &bob.public(), ALICE, &alice.public()), SAFETY_NUMBER);

    let signature = sign_detached(&alice, "caremesh-kat-v1", b"a record envelope").unwrap();
    assert_eq!(hex::encode(signature), DETACHED_SIGNATURE);
    verify_detached(
        &alice.signing_public_key(),
        "caremesh-kat-v1",
        b"a record envelope",
        &signature,
    )
    .unwrap();
}
