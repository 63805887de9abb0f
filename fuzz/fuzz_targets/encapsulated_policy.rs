//! `policy_envelope::encapsulated_policy` (what servers use to read the policy of an
//! encapsulated key) must never panic; the policy it returns is the ciphertext's, and it passes
//! `check_policy` as written in canonical form.
#![no_main]

use caremesh_abe::{Ciphertext, check_policy};
use caremesh_crypto::policy_envelope::encapsulated_policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let result = encapsulated_policy(data);
    let ciphertext = Ciphertext::from_bytes(data);
    assert_eq!(result.is_ok(), ciphertext.is_ok());
    if let (Ok(policy), Ok(ciphertext)) = (result, ciphertext) {
        assert_eq!(&policy, ciphertext.policy());
        let check = check_policy(&policy.canonical(), None);
        assert!(check.valid, "{check:?}");
        assert_eq!(check.canonical, policy.canonical());
    }
});
