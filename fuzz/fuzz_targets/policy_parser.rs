//! `Policy::parse` must never panic. An accepted policy's canonical form parses back to the same
//! policy and is a fixed point; the policy is monotone (all its attributes satisfy it, none do
//! not) and its leaf bookkeeping is consistent.
#![no_main]

use caremesh_abe::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::parse(text) {
        let canonical = policy.canonical();
        let again = Policy::parse(&canonical).expect("the canonical form parses");
        assert_eq!(again, policy);
        assert_eq!(again.canonical(), canonical);
        assert_eq!(policy.to_string(), canonical);
        let leaves = policy.leaves();
        assert_eq!(policy.leaf_count(), leaves.len());
        assert!(!leaves.is_empty());
        let attributes = policy.attributes();
        assert!(attributes.iter().all(|attribute| leaves.contains(attribute)));
        assert!(leaves.iter().all(|leaf| attributes.contains(leaf)));
        assert!(policy.is_satisfied_by(&attributes));
        assert!(!policy.is_satisfied_by::<&str>(&[]));
    }
});
