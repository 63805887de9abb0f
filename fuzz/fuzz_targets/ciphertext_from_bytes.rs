//! `Ciphertext::from_bytes` must never panic, and anything it accepts is canonical: it serializes
//! back to exactly the input, and its policy is in canonical form. An accepted ciphertext is then
//! decapsulated with a fixed user key (`fixtures/user_key.bin`, attributes `role:doctor`,
//! `dept:cardiology`) whenever the key's attributes satisfy its policy: that must not panic either.
#![no_main]

use std::sync::LazyLock;

use caremesh_abe::{Ciphertext, Policy, UserKey, decapsulate};
use libfuzzer_sys::fuzz_target;

static USER_KEY: LazyLock<UserKey> =
    LazyLock::new(|| UserKey::from_bytes(include_bytes!("../fixtures/user_key.bin")).expect("fixture user key"));

fuzz_target!(|data: &[u8]| {
    if let Ok(ct) = Ciphertext::from_bytes(data) {
        assert_eq!(ct.to_bytes(), data);
        let policy = ct.policy();
        assert_eq!(policy.leaf_count(), policy.leaves().len());
        assert_eq!(Policy::parse(&policy.canonical()).as_ref(), Ok(policy));
        let key = &*USER_KEY;
        let satisfied = policy.is_satisfied_by(key.attributes());
        assert_eq!(key.can_decrypt(&ct), satisfied);
        if satisfied {
            // A ciphertext under other parameters decapsulates to a wrong key; that is fine.
            let _ = decapsulate(key, &ct);
        } else {
            assert!(decapsulate(key, &ct).is_err());
        }
    }
});
