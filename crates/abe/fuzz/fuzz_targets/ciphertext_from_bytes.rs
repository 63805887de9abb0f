//! `Ciphertext::from_bytes` must never panic, and anything it accepts must be canonical: it
//! serializes back to exactly the input.
#![no_main]

use caremesh_abe::Ciphertext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ct) = Ciphertext::from_bytes(data) {
        assert_eq!(ct.to_bytes(), data);
        assert_eq!(ct.policy().leaf_count(), ct.policy().leaves().len());
    }
});
