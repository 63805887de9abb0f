//! `caremesh_crypto::verify_bundle` on an arbitrary `KeyBundle` (decoded with prost), for the
//! user id the bundle claims and for another one. It must never panic; a verified bundle reports
//! exactly the ids and keys the bundle carries, and a bundle never verifies for another user.
#![no_main]

use caremesh_crypto::verify_bundle;
use caremesh_proto::messaging::v1::KeyBundle;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const OTHER_USER: &str = "fuzz-someone-else";

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = KeyBundle::decode(data) else {
        return;
    };
    let claimed = bundle.user_id.clone();
    if let Ok(verified) = verify_bundle(&bundle, &claimed) {
        assert_eq!(verified.user_id(), claimed);
        let identity = bundle.identity_key.as_ref().expect("a verified bundle has an identity");
        assert_eq!(verified.identity().key_id(), identity.key_id);
        assert_eq!(
            &verified.identity().signing_public_key()[..],
            &identity.signing_public_key[..]
        );
        assert_eq!(&verified.identity().dh_public_key()[..], &identity.dh_public_key[..]);
        let signed = bundle
            .signed_prekey
            .as_ref()
            .expect("a verified bundle has a signed prekey");
        assert_eq!(verified.signed_prekey().key_id(), signed.key_id);
        assert_eq!(&verified.signed_prekey().public_key()[..], &signed.public_key[..]);
        match (verified.one_time_prekey(), bundle.one_time_prekey.as_ref()) {
            (Some(verified), Some(prekey)) => {
                assert_eq!(verified.key_id(), prekey.key_id);
                assert_eq!(&verified.public_key()[..], &prekey.public_key[..]);
            }
            (None, None) => {}
            _ => panic!("the one-time prekey was lost or invented"),
        }
    }
    if claimed != OTHER_USER {
        assert!(verify_bundle(&bundle, OTHER_USER).is_err());
    }
});
