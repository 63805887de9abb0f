//! Serialization: round trips, canonical encodings, and hostile bytes (flips, truncations,
//! off-subgroup and identity points) that must be errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use blstrs::{G1Affine, G2Affine};
use caremesh_abe::rand_core::{OsRng, RngCore};
use caremesh_abe::{
    AbeError, Ciphertext, FORMAT_VERSION, Malformed, MasterKey, Object, Policy, PublicParams, UserKey, decapsulate,
    encapsulate, keygen, open, seal, setup,
};
use group::prime::PrimeCurveAffine;

fn malformed(result: Result<impl std::fmt::Debug, AbeError>) -> Malformed {
    match result {
        Err(AbeError::Malformed { reason, .. }) => reason,
        other => panic!("expected a Malformed error, got {other:?}"),
    }
}

fn small_ciphertext() -> (caremesh_abe::DataKey, Ciphertext) {
    let (pp, _) = common::authority();
    let policy = Policy::parse(r#""a:x" and "b:y""#).unwrap();
    encapsulate(pp, &policy, &mut OsRng).unwrap()
}

/// Where the group elements of the small ciphertext `"a:x" and "b:y"` lie: after
/// version, type, u16 length and the 15-byte policy come 3 G2, a u16 count and 6 G1.
fn ciphertext_point_ranges() -> Vec<std::ops::Range<usize>> {
    let policy_end = 2 + 2 + r#""a:x" and "b:y""#.len();
    let mut ranges: Vec<_> = (0..3).map(|i| policy_end + 96 * i..policy_end + 96 * (i + 1)).collect();
    let rows_start = policy_end + 3 * 96 + 2;
    ranges.extend((0..6).map(|i| rows_start + 48 * i..rows_start + 48 * (i + 1)));
    ranges
}

#[test]
fn round_trips_are_canonical() {
    let (pp, msk) = setup(&mut OsRng);
    let pp_bytes = pp.to_bytes();
    assert_eq!(pp_bytes.len(), 2 + 2 * 96 + 2 * 288);
    let pp2 = PublicParams::from_bytes(&pp_bytes).unwrap();
    assert_eq!(pp2, pp);
    assert_eq!(pp2.to_bytes(), pp_bytes);

    let msk_bytes = msk.to_bytes();
    assert_eq!(msk_bytes.len(), 2 + 7 * 32);
    let msk2 = MasterKey::from_bytes(&msk_bytes).unwrap();
    assert_eq!(*msk2.to_bytes(), *msk_bytes);
    assert_eq!(
        msk2.public_params(),
        &pp,
        "public parameters are recomputed from the master key"
    );

    let key = keygen(&pp, &msk2, &["role:nurse", "dept:cardiology", "role:nurse"], &mut OsRng).unwrap();
    assert_eq!(key.attributes(), ["dept:cardiology", "role:nurse"], "sorted, distinct");
    let key_bytes = key.to_bytes();
    let key2 = UserKey::from_bytes(&key_bytes).unwrap();
    assert_eq!(*key2.to_bytes(), *key_bytes);
    assert_eq!(key2.attributes(), key.attributes());

    let policy = Policy::parse(r#"("role:doctor" or "role:nurse") and "dept:cardiology""#).unwrap();
    let (data_key, ct) = encapsulate(&pp, &policy, &mut OsRng).unwrap();
    let ct_bytes = ct.to_bytes();
    let ct2 = Ciphertext::from_bytes(&ct_bytes).unwrap();
    assert_eq!(ct2, ct);
    assert_eq!(ct2.to_bytes(), ct_bytes);
    assert_eq!(ct2.policy(), &policy);
    assert_eq!(decapsulate(&key2, &ct2).unwrap(), data_key);
    assert_eq!(decapsulate(&key, &ct).unwrap(), data_key);
    assert!(key2.can_decrypt(&ct2));
}

#[test]
fn keygen_checks_its_inputs() {
    let (pp, msk) = common::authority();
    let (other_pp, _) = setup(&mut OsRng);
    assert_eq!(
        keygen(&other_pp, msk, &["a:x"], &mut OsRng).unwrap_err(),
        AbeError::ParamsMismatch
    );
    let none: [&str; 0] = [];
    assert!(matches!(
        keygen(pp, msk, &none, &mut OsRng),
        Err(AbeError::KeyAttributeCount { count: 0, .. })
    ));
    match keygen(pp, msk, &["a:x", "Doctor"], &mut OsRng) {
        Err(AbeError::InvalidAttribute { attribute, error }) => {
            assert_eq!(attribute, "Doctor");
            assert_eq!(error.position, 0);
        }
        other => panic!("{other:?}"),
    }
    let many: Vec<String> = (0..=caremesh_abe::MAX_KEY_ATTRIBUTES)
        .map(|i| format!("a:{i}"))
        .collect();
    assert!(matches!(
        keygen(pp, msk, &many, &mut OsRng),
        Err(AbeError::KeyAttributeCount { count: 257, limit: 256 })
    ));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let (pp, msk) = common::authority();
    let key = common::key_for(&["role:doctor"]);
    let (data_key, ct) = encapsulate(pp, &Policy::parse(r#""role:doctor""#).unwrap(), &mut OsRng).unwrap();
    assert_eq!(format!("{msk:?}"), "MasterKey(<redacted>)");
    assert_eq!(format!("{data_key:?}"), "DataKey(<redacted>)");
    assert_eq!(
        format!("{key:?}"),
        r#"UserKey { attributes: ["role:doctor"], key_material: "<redacted>" }"#
    );
    assert!(format!("{ct:?}").contains("role:doctor"));
}

#[test]
fn flipped_ciphertext_bytes_never_panic_and_points_fail_the_subgroup_check() {
    let key = common::key_for(&["a:x", "b:y"]);
    let (data_key, ct) = small_ciphertext();
    let bytes = ct.to_bytes();
    let point_ranges = ciphertext_point_ranges();
    assert_eq!(point_ranges.last().unwrap().end, bytes.len());
    let mut accepted = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut flipped = bytes.clone();
            flipped[i] ^= mask;
            let result = Ciphertext::from_bytes(&flipped);
            if point_ranges.iter().any(|r| r.contains(&i)) {
                // A flipped coordinate or flag: not on the curve, not in the subgroup, or a bad
                // encoding. (Landing on another subgroup point has probability ~2^-126.)
                assert_eq!(
                    malformed(result),
                    Malformed::InvalidGroupElement,
                    "byte {i} ^ {mask:#x}"
                );
            } else if let Ok(other) = result {
                // Only the policy text can change into another valid, canonical policy of the
                // same shape; then the data key is unrelated (it is bound to the ciphertext).
                accepted += 1;
                assert_ne!(other, ct);
                if let Ok(k) = decapsulate(&key, &other) {
                    assert_ne!(k, data_key, "byte {i} ^ {mask:#x}");
                }
            }
        }
    }
    assert!(accepted < 10, "{accepted}");
}

#[test]
fn truncated_or_extended_input_is_rejected() {
    let (_, ct) = small_ciphertext();
    let (pp, msk) = common::authority();
    let key = common::key_for(&["a:x"]);
    type Parses = fn(&[u8]) -> bool;
    let objects: [(Vec<u8>, Parses); 4] = [
        (ct.to_bytes(), |b| Ciphertext::from_bytes(b).is_ok()),
        (key.to_bytes().to_vec(), |b| UserKey::from_bytes(b).is_ok()),
        (pp.to_bytes(), |b| PublicParams::from_bytes(b).is_ok()),
        (msk.to_bytes().to_vec(), |b| MasterKey::from_bytes(b).is_ok()),
    ];
    for (bytes, parses) in objects {
        assert!(parses(&bytes));
        for len in 0..bytes.len() {
            assert!(!parses(&bytes[..len]), "prefix of {len} bytes accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!parses(&longer));
    }
    let mut longer = ct.to_bytes();
    longer.push(0);
    assert_eq!(malformed(Ciphertext::from_bytes(&longer)), Malformed::TrailingBytes);
    assert_eq!(
        malformed(Ciphertext::from_bytes(&ct.to_bytes()[..100])),
        Malformed::Truncated
    );
    assert_eq!(malformed(Ciphertext::from_bytes(&[])), Malformed::Truncated);
}

#[test]
fn flipped_user_key_bytes_never_panic() {
    let key = common::key_for(&["a:x", "b:y"]);
    let bytes = key.to_bytes();
    // 2 header + 2 count + (1+3)*2 names, then 3 G2 and 9 G1.
    let points_start = 4 + 8;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= mask;
            let result = UserKey::from_bytes(&flipped);
            if i >= points_start {
                assert_eq!(
                    malformed(result),
                    Malformed::InvalidGroupElement,
                    "byte {i} ^ {mask:#x}"
                );
            } else if let Ok(other) = result {
                // A flipped name can become another valid, sorted name.
                assert_ne!(*other.to_bytes(), *bytes);
            }
        }
    }
}

#[test]
fn header_checks() {
    let (_, ct) = small_ciphertext();
    let key = common::key_for(&["a:x"]);
    let mut bytes = ct.to_bytes();
    bytes[0] = FORMAT_VERSION + 1;
    assert_eq!(
        malformed(Ciphertext::from_bytes(&bytes)),
        Malformed::UnsupportedVersion(2)
    );
    assert_eq!(
        Ciphertext::from_bytes(&key.to_bytes()).unwrap_err(),
        AbeError::Malformed {
            object: Object::Ciphertext,
            reason: Malformed::WrongObjectType(3)
        }
    );
    assert_eq!(
        malformed(UserKey::from_bytes(&ct.to_bytes())),
        Malformed::WrongObjectType(4)
    );
}

/// A compressed G1 encoding of a point on the curve but outside the prime-order subgroup.
fn off_subgroup_g1() -> [u8; 48] {
    loop {
        let mut bytes = [0u8; 48];
        OsRng.fill_bytes(&mut bytes);
        bytes[0] = 0x80 | (bytes[0] & 0x0f); // compressed, not infinity, x < p
        if let Some(p) = Option::<G1Affine>::from(G1Affine::from_compressed_unchecked(&bytes)) {
            assert!(bool::from(p.is_on_curve()));
            if !bool::from(p.is_torsion_free()) {
                return bytes;
            }
        }
    }
}

/// A compressed G2 encoding of a point on the twist but outside the prime-order subgroup.
fn off_subgroup_g2() -> [u8; 96] {
    loop {
        let mut bytes = [0u8; 96];
        OsRng.fill_bytes(&mut bytes);
        bytes[0] = 0x80 | (bytes[0] & 0x0f);
        bytes[48] &= 0x0f;
        if let Some(p) = Option::<G2Affine>::from(G2Affine::from_compressed_unchecked(&bytes)) {
            assert!(bool::from(p.is_on_curve()));
            if !bool::from(p.is_torsion_free()) {
                return bytes;
            }
        }
    }
}

#[test]
fn off_subgroup_and_identity_points_are_rejected() {
    let (_, ct) = small_ciphertext();
    let bytes = ct.to_bytes();
    let ranges = ciphertext_point_ranges();
    let g1 = off_subgroup_g1();
    let g2 = off_subgroup_g2();

    let mut bad = bytes.clone();
    bad[ranges[5].clone()].copy_from_slice(&g1);
    assert_eq!(malformed(Ciphertext::from_bytes(&bad)), Malformed::InvalidGroupElement);
    let mut bad = bytes.clone();
    bad[ranges[1].clone()].copy_from_slice(&g2);
    assert_eq!(malformed(Ciphertext::from_bytes(&bad)), Malformed::InvalidGroupElement);

    // The identity (point at infinity) has a valid encoding, but the scheme never produces it.
    let mut bad = bytes.clone();
    bad[ranges[4].clone()].copy_from_slice(&G1Affine::identity().to_compressed());
    assert_eq!(malformed(Ciphertext::from_bytes(&bad)), Malformed::IdentityElement);
    let mut bad = bytes.clone();
    bad[ranges[0].clone()].copy_from_slice(&G2Affine::identity().to_compressed());
    assert_eq!(malformed(Ciphertext::from_bytes(&bad)), Malformed::IdentityElement);

    // x >= p (non-canonical field element).
    let mut bad = bytes.clone();
    bad[ranges[3].clone()].copy_from_slice(&[0x9f; 48]);
    assert_eq!(malformed(Ciphertext::from_bytes(&bad)), Malformed::InvalidGroupElement);

    // Same in a user key and the public parameters.
    let key = common::key_for(&["a:x"]);
    let mut key_bytes = key.to_bytes().to_vec();
    let n = key_bytes.len();
    key_bytes[n - 48..].copy_from_slice(&g1);
    assert_eq!(
        malformed(UserKey::from_bytes(&key_bytes)),
        Malformed::InvalidGroupElement
    );
    let (pp, _) = common::authority();
    let mut pp_bytes = pp.to_bytes();
    pp_bytes[2..98].copy_from_slice(&g2);
    assert_eq!(
        malformed(PublicParams::from_bytes(&pp_bytes)),
        Malformed::InvalidGroupElement
    );
}

#[test]
fn invalid_gt_elements_are_rejected() {
    let (pp, _) = common::authority();
    let bytes = pp.to_bytes();
    let t1 = 2 + 2 * 96;
    for i in [t1, t1 + 47, t1 + 100, t1 + 287, t1 + 288 + 5] {
        let mut bad = bytes.clone();
        bad[i] ^= 1;
        assert_eq!(
            malformed(PublicParams::from_bytes(&bad)),
            Malformed::InvalidGroupElement,
            "byte {i}"
        );
    }
    let mut bad = bytes.clone();
    bad[t1..t1 + 288].fill(0);
    assert!(PublicParams::from_bytes(&bad).is_err());
}

#[test]
fn non_canonical_encodings_are_rejected() {
    let (_, ct) = small_ciphertext();
    let bytes = ct.to_bytes();
    // Same policy, written with extra parentheses: parses, but is not the canonical text.
    let text = r#"("a:x" and "b:y")"#;
    let mut bad = vec![1u8, 4];
    bad.extend_from_slice(&u16::try_from(text.len()).unwrap().to_be_bytes());
    bad.extend_from_slice(text.as_bytes());
    bad.extend_from_slice(&bytes[4 + 15..]);
    assert_eq!(malformed(Ciphertext::from_bytes(&bad)), Malformed::NonCanonicalPolicy);

    // A policy with a different number of rows than the ciphertext carries.
    let text = r#""a:x" and "b:y" and "c:z""#;
    let mut bad = vec![1u8, 4];
    bad.extend_from_slice(&u16::try_from(text.len()).unwrap().to_be_bytes());
    bad.extend_from_slice(text.as_bytes());
    bad.extend_from_slice(&bytes[4 + 15..]);
    assert_eq!(
        malformed(Ciphertext::from_bytes(&bad)),
        Malformed::RowCountMismatch { expected: 3, found: 2 }
    );

    // An unparsable policy.
    let mut bad = bytes.clone();
    bad[4] = b'(';
    assert!(matches!(
        malformed(Ciphertext::from_bytes(&bad)),
        Malformed::InvalidPolicy(_)
    ));

    // User key attributes out of order or duplicated.
    let key = common::key_for(&["a:x", "b:y"]);
    let mut parts = common::split_key(&key.to_bytes());
    let mut raw = common::join_key(&parts);
    raw[5..8].copy_from_slice(b"b:y");
    raw[9..12].copy_from_slice(b"a:x");
    assert_eq!(malformed(UserKey::from_bytes(&raw)), Malformed::NonCanonicalAttributes);
    parts.attributes[1] = "a:x".into();
    let mut raw = common::join_key(&parts);
    assert_eq!(malformed(UserKey::from_bytes(&raw)), Malformed::NonCanonicalAttributes);
    raw[5] = b'A';
    assert_eq!(malformed(UserKey::from_bytes(&raw)), Malformed::InvalidAttribute);
    assert_eq!(malformed(UserKey::from_bytes(&[1, 3, 0, 0])), Malformed::AttributeCount);

    // Master key scalars: zero a1, or a value >= the group order.
    let (_, msk) = common::authority();
    let mut m = msk.to_bytes().to_vec();
    m[2..34].fill(0);
    assert_eq!(malformed(MasterKey::from_bytes(&m)), Malformed::InvalidScalar);
    let mut m = msk.to_bytes().to_vec();
    m[34..66].fill(0xff);
    assert_eq!(malformed(MasterKey::from_bytes(&m)), Malformed::InvalidScalar);
}

#[test]
fn seal_and_open() {
    let (pp, _) = common::authority();
    let policy = Policy::parse(r#""role:doctor" and ("dept:cardiology" or "dept:emergency")"#).unwrap();
    let doctor = common::key_for(&["role:doctor", "dept:emergency"]);
    let nurse = common::key_for(&["role:nurse", "dept:emergency"]);
    let sealed = seal(pp, &policy, b"BP 120/80", b"record-7", &mut OsRng).unwrap();
    assert_eq!(&open(&doctor, &sealed, b"record-7").unwrap()[..], b"BP 120/80");
    assert_eq!(
        open(&nurse, &sealed, b"record-7").unwrap_err(),
        AbeError::PolicyNotSatisfied
    );
    assert_eq!(
        open(&doctor, &sealed, b"record-8").unwrap_err(),
        AbeError::DecryptionFailed
    );
    assert_eq!(caremesh_abe::sealed_ciphertext(&sealed).unwrap().policy(), &policy);
    let empty = seal(pp, &policy, b"", b"", &mut OsRng).unwrap();
    assert!(open(&doctor, &empty, b"").unwrap().is_empty());

    // Every single-byte change is an error (never a different plaintext, never a panic).
    let small = seal(pp, &Policy::parse(r#""role:doctor""#).unwrap(), b"hi", b"", &mut OsRng).unwrap();
    assert_eq!(&open(&doctor, &small, b"").unwrap()[..], b"hi");
    for i in 0..small.len() {
        let mut bad = small.clone();
        bad[i] ^= 0x01;
        assert!(open(&doctor, &bad, b"").is_err(), "byte {i}");
    }
    for len in 0..small.len() {
        assert!(open(&doctor, &small[..len], b"").is_err(), "prefix {len}");
    }
}
