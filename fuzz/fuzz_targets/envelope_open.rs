//! `caremesh_crypto::open` on an arbitrary `Envelope` (decoded with prost from the fuzz input),
//! with a fixed test device (`fixtures/recipient_device.json`), a fixed sender identity
//! (`fixtures/sender_identity.json`) and fixed ids (`common::message_context`). It must never
//! panic; a failed open must not spend a one-time prekey, a successful one must spend exactly the
//! prekey it used (so the same envelope cannot be opened twice), and the plaintext is the
//! ciphertext minus the tag.
#![no_main]

mod common;

use std::sync::LazyLock;

use caremesh_crypto::{DeviceKeys, Envelope, IdentityKeyPair, IdentityPublicKey, open};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const DEVICE_JSON: &str = include_str!("../fixtures/recipient_device.json");

static SENDER: LazyLock<IdentityPublicKey> = LazyLock::new(|| {
    let identity: IdentityKeyPair =
        serde_json::from_str(include_str!("../fixtures/sender_identity.json")).expect("fixture sender identity");
    identity.public()
});

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::decode(data) else {
        return;
    };
    // A fresh copy of the device every run: a successful open consumes a one-time prekey.
    let mut device: DeviceKeys = serde_json::from_str(DEVICE_JSON).expect("fixture device");
    let context = common::message_context();
    let before = device.one_time_prekey_count();
    match open(&mut device, &SENDER, &context, &envelope) {
        Ok(plaintext) => {
            assert_eq!(plaintext.len() + 16, envelope.ciphertext.len());
            if envelope.recipient_one_time_prekey_id.is_empty() {
                assert_eq!(device.one_time_prekey_count(), before);
            } else {
                assert_eq!(device.one_time_prekey_count() + 1, before);
                assert!(open(&mut device, &SENDER, &context, &envelope).is_err());
            }
        }
        Err(_) => assert_eq!(device.one_time_prekey_count(), before),
    }
});
