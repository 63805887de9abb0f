//! `UserKey::from_bytes` must never panic, and anything it accepts must be canonical: it
//! serializes back to exactly the input.
#![no_main]

use caremesh_abe::UserKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = UserKey::from_bytes(data) {
        assert_eq!(&key.to_bytes()[..], data);
    }
});
