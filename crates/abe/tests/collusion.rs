//! Collusion resistance: two users who each hold half of an AND policy cannot combine their key
//! components into a key that opens it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{AbeError, Policy, UserKey, decapsulate, encapsulate, open, seal};
use common::{KeyParts, join_key, split_key};

const POLICY: &str = r#""role:doctor" and "dept:cardiology""#;

#[test]
fn half_keys_cannot_be_combined() {
    let (pp, _) = common::authority();
    let policy = Policy::parse(POLICY).unwrap();
    // Alice is a doctor (in oncology), Bob works in cardiology (as a nurse).
    let alice = common::key_for(&["role:doctor", "dept:oncology"]);
    let bob = common::key_for(&["role:nurse", "dept:cardiology"]);
    let (data_key, ct) = encapsulate(pp, &policy, &mut OsRng).unwrap();
    let sealed = seal(pp, &policy, b"cardiology note", b"", &mut OsRng).unwrap();
    assert_eq!(decapsulate(&alice, &ct).unwrap_err(), AbeError::PolicyNotSatisfied);
    assert_eq!(decapsulate(&bob, &ct).unwrap_err(), AbeError::PolicyNotSatisfied);

    let a = split_key(&alice.to_bytes());
    let b = split_key(&bob.to_bytes());

    // The naive mix: a key that claims both attributes, with each attribute's part taken from
    // the user who holds it, and the shared components (sk0, sk') from either user.
    for (sk0_from, sk_prime_from) in [(&a, &a), (&b, &b), (&a, &b), (&b, &a)] {
        let mixed = KeyParts {
            attributes: vec!["role:doctor".into(), "dept:cardiology".into()],
            sk0: sk0_from.sk0,
            sk_prime: sk_prime_from.sk_prime,
            parts: vec![a.part("role:doctor"), b.part("dept:cardiology")],
        };
        // Every component is a valid group element, so the key parses...
        let forged = UserKey::from_bytes(&join_key(&mixed)).unwrap();
        assert!(forged.can_decrypt(&ct));
        // ...but the per-key randomness (r1, r2 and the sigmas) does not cancel: wrong key.
        assert_ne!(decapsulate(&forged, &ct).unwrap(), data_key);
        assert_eq!(open(&forged, &sealed, b"").unwrap_err(), AbeError::DecryptionFailed);
    }

    // Control: the same byte-level surgery on a genuine key (re-assembled from its parts)
    // works, so the failure above is the scheme's collusion resistance, not the tooling.
    let carol = common::key_for(&["role:doctor", "dept:cardiology"]);
    let c = split_key(&carol.to_bytes());
    let rebuilt = KeyParts {
        attributes: vec!["role:doctor".into(), "dept:cardiology".into()],
        sk0: c.sk0,
        sk_prime: c.sk_prime,
        parts: vec![c.part("role:doctor"), c.part("dept:cardiology")],
    };
    let rebuilt = UserKey::from_bytes(&join_key(&rebuilt)).unwrap();
    assert_eq!(decapsulate(&rebuilt, &ct).unwrap(), data_key);
    assert_eq!(&open(&rebuilt, &sealed, b"").unwrap()[..], b"cardiology note");
}

#[test]
fn attribute_parts_do_not_transfer_between_keys_of_one_user_set() {
    // Two keys issued to the *same* attribute set still use independent randomness: mixing
    // their parts fails too (keys are not "per attribute" tokens).
    let (pp, _) = common::authority();
    let policy = Policy::parse(POLICY).unwrap();
    let k1 = split_key(&common::key_for(&["role:doctor", "dept:cardiology"]).to_bytes());
    let k2 = split_key(&common::key_for(&["role:doctor", "dept:cardiology"]).to_bytes());
    let (data_key, ct) = encapsulate(pp, &policy, &mut OsRng).unwrap();
    let mixed = KeyParts {
        attributes: vec!["role:doctor".into(), "dept:cardiology".into()],
        sk0: k1.sk0,
        sk_prime: k1.sk_prime,
        parts: vec![k1.part("role:doctor"), k2.part("dept:cardiology")],
    };
    let mixed = UserKey::from_bytes(&join_key(&mixed)).unwrap();
    assert_ne!(decapsulate(&mixed, &ct).unwrap(), data_key);
}
