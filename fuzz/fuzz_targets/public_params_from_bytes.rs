//! `PublicParams::from_bytes` must never panic, and anything it accepts is canonical: it
//! serializes back to exactly the input.
#![no_main]

use caremesh_abe::PublicParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = PublicParams::from_bytes(data) {
        let bytes = params.to_bytes();
        assert_eq!(bytes, data);
        assert_eq!(PublicParams::from_bytes(&bytes).ok(), Some(params));
    }
});
