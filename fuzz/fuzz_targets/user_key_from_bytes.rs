//! `UserKey::from_bytes` must never panic, and anything it accepts is canonical: it serializes
//! back to exactly the input, and its attributes are sorted and distinct.
#![no_main]

use caremesh_abe::UserKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = UserKey::from_bytes(data) {
        assert_eq!(&key.to_bytes()[..], data);
        let attributes = key.attributes();
        assert!(attributes.windows(2).all(|pair| pair[0] < pair[1]), "{attributes:?}");
        assert!(attributes.iter().all(|attribute| key.has_attribute(attribute)));
    }
});
