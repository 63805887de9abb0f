//! `policy_envelope::open_user_key` on an arbitrary `SealedUserKey` (decoded with prost), with
//! the fixed test device's identity (`fixtures/recipient_device.json`) and fixed user and key ids.
//! It must never panic; an opened key is the ciphertext minus the tag, it does not open for
//! another user id, and the opened bytes are fed to `UserKey::from_bytes` (which must not panic
//! either).
#![no_main]

mod common;

use std::sync::LazyLock;

use caremesh_abe::UserKey;
use caremesh_crypto::DeviceKeys;
use caremesh_crypto::policy_envelope::open_user_key;
use caremesh_proto::abe::v1::SealedUserKey;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

static DEVICE: LazyLock<DeviceKeys> =
    LazyLock::new(|| serde_json::from_str(include_str!("../fixtures/recipient_device.json")).expect("fixture device"));

fuzz_target!(|data: &[u8]| {
    let Ok(sealed) = SealedUserKey::decode(data) else {
        return;
    };
    let identity = DEVICE.identity();
    if let Ok(opened) = open_user_key(identity, common::RECIPIENT_USER_ID, common::USER_KEY_ID, &sealed) {
        assert_eq!(opened.len() + 16, sealed.ciphertext.len());
        assert!(open_user_key(identity, common::SENDER_USER_ID, common::USER_KEY_ID, &sealed).is_err());
        if let Ok(key) = UserKey::from_bytes(&opened) {
            assert_eq!(&key.to_bytes()[..], &opened[..]);
        }
    }
});
