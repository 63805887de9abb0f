//! The policy parser must never panic; an accepted policy's canonical form must parse back to
//! the same policy and be a fixed point.
#![no_main]

use caremesh_abe::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::parse(text) {
        let canonical = policy.canonical();
        let again = Policy::parse(&canonical).expect("canonical form parses");
        assert_eq!(again, policy);
        assert_eq!(again.canonical(), canonical);
        let _ = policy.is_satisfied_by(&policy.attributes());
    }
});
