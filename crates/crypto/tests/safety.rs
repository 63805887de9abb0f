//! Safety numbers, identity pinning and domain-separated signatures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use caremesh_crypto::{
    CryptoError, Fingerprint, IdentityKeyPair, IdentityPublicKey, TrustCheck, TrustStore, safety_number, sign_detached,
    verify_detached,
};
use subtle::ConstantTimeEq;

fn identity() -> IdentityPublicKey {
    IdentityKeyPair::generate().unwrap().public()
}

/// `identity` with one of its keys replaced by the same key of `other` (same key id).
fn with_key_of(identity: &IdentityPublicKey, other: &IdentityPublicKey, field: &str) -> IdentityPublicKey {
    let mut value = serde_json::to_value(identity).unwrap();
    value[field] = serde_json::to_value(other).unwrap()[field].clone();
    serde_json::from_value(value).unwrap()
}

#[test]
fn safety_numbers_are_symmetric_60_digits_in_12_groups() {
    let (alice, bob) = (identity(), identity());
    let number = safety_number("alice", &alice, "bob", &bob);
    assert_eq!(number, safety_number("bob", &bob, "alice", &alice));
    let groups: Vec<&str> = number.split(' ').collect();
    assert_eq!(groups.len(), 12);
    assert!(
        groups
            .iter()
            .all(|group| group.len() == 5 && group.bytes().all(|b| b.is_ascii_digit()))
    );

    let fingerprint = Fingerprint::new("alice", &alice, "bob", &bob);
    assert_eq!(fingerprint.to_string(), number);
    assert_eq!(fingerprint.digits(), number.replace(' ', ""));
    assert_eq!(Fingerprint::parse(&number).unwrap(), fingerprint);
    assert_eq!(Fingerprint::parse(fingerprint.digits()).unwrap(), fingerprint);
    assert!(bool::from(
        fingerprint.ct_eq(&Fingerprint::new("bob", &bob, "alice", &alice))
    ));
    // A non-digit in place of the first digit; `replace('1', ..)` would be a no-op for numbers without a 1.
    let with_letter = format!("x{}", &number[1..]);
    for bad in ["", "123", &with_letter, &format!("{number}0")] {
        assert!(Fingerprint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_safety_number_changes_when_either_party_changes_a_key() {
    let (alice, bob, other) = (identity(), identity(), identity());
    let number = safety_number("alice", &alice, "bob", &bob);
    let fingerprint = Fingerprint::new("alice", &alice, "bob", &bob);
    let mut variants = Vec::new();
    for field in ["signing_public_key", "dh_public_key"] {
        let alice_changed = with_key_of(&alice, &other, field);
        let bob_changed = with_key_of(&bob, &other, field);
        assert_eq!(alice_changed.key_id(), alice.key_id());
        variants.push(safety_number("alice", &alice_changed, "bob", &bob));
        variants.push(safety_number("alice", &alice, "bob", &bob_changed));
        variants.push(safety_number("bob", &bob_changed, "alice", &alice));
    }
    variants.push(safety_number("alice", &other, "bob", &bob));
    variants.push(safety_number("mallory", &alice, "bob", &bob));
    variants.push(safety_number("alice", &alice, "bobby", &bob));
    for variant in &variants {
        assert_ne!(variant, &number);
        assert_ne!(Fingerprint::parse(variant).unwrap(), fingerprint);
    }
}

#[test]
fn the_trust_store_pins_on_first_use_and_reports_changes() {
    let (bob, bob_new) = (identity(), identity());
    let mut store = TrustStore::new();
    assert_eq!(store.check("bob", &bob), TrustCheck::FirstUse);
    assert_eq!(store.check("bob", &bob), TrustCheck::Trusted);
    assert_eq!(store.pinned("bob"), Some(&bob));

    let changed = TrustCheck::Changed {
        old: bob.clone(),
        new: bob_new.clone(),
    };
    assert_eq!(store.check("bob", &bob_new), changed);
    assert_eq!(
        store.check("bob", &bob_new),
        changed,
        "a change stays reported until accepted"
    );
    assert_eq!(store.pinned("bob"), Some(&bob));
    // A change of only one key, with the same key id, is a change too.
    let half = with_key_of(&bob, &bob_new, "dh_public_key");
    assert!(matches!(store.check("bob", &half), TrustCheck::Changed { .. }));

    // Persisted and reloaded, the pin holds.
    let stored = serde_json::to_string(&store).unwrap();
    let mut reloaded: TrustStore = serde_json::from_str(&stored).unwrap();
    assert_eq!(reloaded, store);
    assert_eq!(reloaded.check("bob", &bob_new), changed);

    assert_eq!(reloaded.accept_new("bob", &bob_new), Some(bob.clone()));
    assert_eq!(reloaded.check("bob", &bob_new), TrustCheck::Trusted);
    assert!(matches!(reloaded.check("bob", &bob), TrustCheck::Changed { .. }));
    assert_eq!(reloaded.forget("bob"), Some(bob_new));
    assert_eq!(reloaded.check("bob", &bob), TrustCheck::FirstUse);

    // Stored keys are validated on load.
    let mut bad: serde_json::Value = serde_json::from_str(&stored).unwrap();
    bad["contacts"]["bob"]["signing_public_key"] = "00".into();
    assert!(serde_json::from_value::<TrustStore>(bad).is_err());
}

#[test]
fn detached_signatures_are_domain_separated() {
    let alice = IdentityKeyPair::generate().unwrap();
    let mallory = IdentityKeyPair::generate().unwrap();
    let public = alice.signing_public_key();
    let domain = "caremesh-record-envelope-v1";
    let signature = sign_detached(&alice, domain, b"record bytes").unwrap();
    verify_detached(&public, domain, b"record bytes", &signature).unwrap();

    let bad = CryptoError::BadSignature { what: "detached" };
    assert_eq!(
        verify_detached(&public, "caremesh-group-envelope-v1", b"record bytes", &signature),
        Err(bad.clone())
    );
    assert_eq!(
        verify_detached(&public, domain, b"record bytes!", &signature),
        Err(bad.clone())
    );
    assert_eq!(
        verify_detached(&mallory.signing_public_key(), domain, b"record bytes", &signature),
        Err(bad.clone())
    );
    // Moving bytes between the domain and the message does not verify either.
    let shifted = sign_detached(&alice, "caremesh-a", b"bc").unwrap();
    assert_eq!(
        verify_detached(&public, "caremesh-ab", b"c", &shifted),
        Err(bad.clone())
    );
    for index in 0..64 {
        let mut flipped = signature;
        flipped[index] ^= 0x01;
        assert_eq!(
            verify_detached(&public, domain, b"record bytes", &flipped),
            Err(bad.clone())
        );
    }
    assert_eq!(
        verify_detached(&public, domain, b"record bytes", &signature[..63]),
        Err(bad)
    );
    assert!(matches!(
        verify_detached(&public[..31], domain, b"record bytes", &signature),
        Err(CryptoError::InvalidKey { .. })
    ));
    for domain in ["", "has space", "naïve", &"x".repeat(129)] {
        assert!(
            matches!(sign_detached(&alice, domain, b"m"), Err(CryptoError::InvalidDomain(_))),
            "{domain:?}"
        );
    }
    // Signatures are deterministic (RFC 8032).
    assert_eq!(sign_detached(&alice, domain, b"record bytes").unwrap(), signature);
}
