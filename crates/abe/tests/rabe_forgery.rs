//! Evidence for DESIGN.md §4: why caremesh does not use the `rabe` crate.
//!
//! rabe 0.4.2 hashes a string `x` to a group as `g^SHA3-256(x)` (`rabe::utils::hash::sha3_hash`).
//! The exponent is public, so every "hash" has a known discrete logarithm, and key components
//! for different attributes are linear combinations of each other *in the exponent*. A key
//! holder can therefore forge key parts for attributes they were never issued:
//!
//! * **AC17** (rabe's FAME, `rabe::schemes::ac17`): a key part for attribute `y` is, for
//!   `t = 1, 2`, `sk_{y,t} = g^{(Σ_l h(y,l,t)·br_l + σ_y)/a_t}` and `sk_{y,3} = g^{-σ_y}`, with
//!   `h(y,l,t) = SHA3(y‖l‖t)` public and `br_l/a_t` the same for every attribute of the key.
//!   For a target `z`, solve the 6×6 system `Σ_j c_j h(y_j,l,t) = h(z,l,t)` (one equation per
//!   `(l,t)`) over six held attributes `y_j`; then `Σ_j c_j·sk_{y_j,·}` is a valid part for `z`
//!   (with `σ_z = Σ_j c_j σ_{y_j}`). We forge `"doctor"` and `"dept:cardiology"` from a key for
//!   six unrelated attributes and open a `"doctor" and "dept:cardiology"` ciphertext.
//! * **BSW** (`rabe::schemes::bsw`): `D_j = g2^r·H(j)^{r_j}`, `D'_j = g1^{r_j}` with
//!   `H(j) = g2^{h_j}`; `(D_j, D'_j^{h_j/h_k})` is a valid part for any `k`. A key for `"nurse"`
//!   alone yields `"doctor"` and `"dept:cardiology"`.
//!
//! Against caremesh the same attack has nothing to stand on: `H` is RFC 9380 hash-to-curve, whose
//! outputs have no known discrete logarithms, so the linear relation the attacker needs between
//! hash outputs cannot be computed. We run the identical solver with the only exponents an
//! attacker could write down (a digest of each hash input, i.e. what rabe's hash would be), show
//! the required relation does not hold between caremesh's hash outputs, and show the forged key
//! neither decapsulates the right data key nor opens the envelope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::ops::{Add, Mul, Sub};

use blstrs::{G1Affine, G1Projective, Scalar};
use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{AbeError, HASH_TO_G1_DST, Policy, UserKey, decapsulate, encapsulate, open, seal};
use common::{join_key, split_key};
use group::{Curve, Group};
use rabe::schemes::{ac17, bsw};
use rabe::utils::hash::sha3_hash_fr;
use rabe::utils::policy::pest::PolicyLanguage;
use rabe_bn::{Fr, G1, Group as _};
use sha2::{Digest, Sha256};

const HELD_RABE: [&str; 6] = ["nurse", "ward:3", "shift:night", "lang:fr", "site:north", "badge:1234"];
const TARGETS_RABE: [&str; 2] = ["doctor", "dept:cardiology"];
const POLICY_RABE: &str = r#""doctor" and "dept:cardiology""#;

const HELD: [&str; 6] = [
    "role:nurse",
    "ward:3",
    "shift:night",
    "lang:fr",
    "site:north",
    "badge:1234",
];
const TARGETS: [&str; 2] = ["role:doctor", "dept:cardiology"];
const POLICY: &str = r#""role:doctor" and "dept:cardiology""#;

const SECRET: &[u8] = b"cardiology consult: patient 17";

/// Just enough field arithmetic to solve a linear system over either scalar field.
trait Field: Copy + PartialEq + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> {
    fn zero() -> Self;
    fn inv(self) -> Option<Self>;
}

impl Field for Fr {
    fn zero() -> Self {
        Fr::zero()
    }
    fn inv(self) -> Option<Self> {
        self.inverse()
    }
}

impl Field for Scalar {
    fn zero() -> Self {
        <Scalar as ff::Field>::ZERO
    }
    fn inv(self) -> Option<Self> {
        Option::from(ff::Field::invert(&self))
    }
}

/// Solves `m · x = b` (square `m`, given by rows) by Gauss-Jordan elimination.
fn solve<F: Field>(mut m: Vec<Vec<F>>, mut b: Vec<F>) -> Option<Vec<F>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).find(|&r| m[r][col] != F::zero())?;
        m.swap(col, pivot);
        b.swap(col, pivot);
        let inv = m[col][col].inv()?;
        for x in m[col].iter_mut() {
            *x = *x * inv;
        }
        b[col] = b[col] * inv;
        let (pivot_row, pivot_b) = (m[col].clone(), b[col]);
        for (r, (row, rhs)) in m.iter_mut().zip(b.iter_mut()).enumerate() {
            let f = row[col];
            if r != col && f != F::zero() {
                for (x, p) in row.iter_mut().zip(&pivot_row) {
                    *x = *x - f * *p;
                }
                *rhs = *rhs - f * pivot_b;
            }
        }
    }
    Some(b)
}

/// The coefficients `c` with `Σ_j c_j·e(held_j)[k] = e(target)[k]` for all six `k = (l, t)`.
fn forge_coefficients<F: Field>(exponents: impl Fn(&str) -> [F; 6], held: &[&str; 6], target: &str) -> Vec<F> {
    let columns: Vec<[F; 6]> = held.iter().map(|a| exponents(a)).collect();
    let rows: Vec<Vec<F>> = (0..6).map(|k| columns.iter().map(|c| c[k]).collect()).collect();
    solve(rows, exponents(target).to_vec()).expect("the 6x6 system is invertible")
}

/// rabe's exponents: AC17 hashes `attr ‖ l ‖ t` (decimal, 0-based) with `sha3_hash`, i.e. to
/// `g^{sha3_hash_fr(attr‖l‖t)}`. Index `k = 2l + t`.
fn rabe_exponents(attribute: &str) -> [Fr; 6] {
    std::array::from_fn(|k| sha3_hash_fr(&format!("{attribute}{}{}", k / 2, k % 2)).unwrap())
}

#[test]
fn ac17_six_unrelated_attributes_forge_doctor_and_cardiology() {
    let (pk, msk) = ac17::setup();
    let key = ac17::cp_keygen(&msk, &HELD_RABE).unwrap();
    let ct = ac17::cp_encrypt(&pk, POLICY_RABE, SECRET, PolicyLanguage::HumanPolicy).unwrap();
    assert!(
        ac17::cp_decrypt(&key, &ct).is_err(),
        "the honest key does not satisfy the policy"
    );

    let mut forged_parts = Vec::new();
    for target in TARGETS_RABE {
        let c = forge_coefficients(rabe_exponents, &HELD_RABE, target);
        // The relation holds between rabe's hash outputs themselves (public g = pk.g):
        // Σ c_j·H(y_j‖l‖t) = H(z‖l‖t) for every (l, t).
        for k in 0..6 {
            let combined = HELD_RABE.iter().zip(&c).fold(G1::zero(), |acc, (held, cj)| {
                acc + pk.g * (rabe_exponents(held)[k] * *cj)
            });
            assert_eq!(combined, pk.g * rabe_exponents(target)[k]);
        }
        // So the same combination of the key's parts is a valid part for the target.
        let part: Vec<G1> = (0..3)
            .map(|i| {
                HELD_RABE.iter().zip(&c).fold(G1::zero(), |acc, (held, cj)| {
                    let (_, components) = key.sk.k.iter().find(|(name, _)| name == held).unwrap();
                    acc + components[i] * *cj
                })
            })
            .collect();
        forged_parts.push((target.to_string(), part));
    }
    let forged = ac17::Ac17CpSecretKey {
        attr: TARGETS_RABE.iter().map(|s| s.to_string()).collect(),
        sk: ac17::Ac17SecretKey {
            k_0: key.sk.k_0.clone(),
            k: forged_parts,
            k_p: key.sk.k_p.clone(),
        },
    };
    assert_eq!(
        ac17::cp_decrypt(&forged, &ct).unwrap(),
        SECRET,
        "forged AC17 key opens the ciphertext"
    );
}

#[test]
fn bsw_nurse_key_forges_doctor_and_cardiology() {
    let (pk, msk) = bsw::setup();
    let key = bsw::keygen(&pk, &msk, &["nurse"]).unwrap();
    let ct = bsw::encrypt(&pk, POLICY_RABE, PolicyLanguage::HumanPolicy, SECRET).unwrap();
    assert!(bsw::decrypt(&key, &ct).is_err());
    let nurse = key.d_j[0].clone();
    let h_nurse = sha3_hash_fr("nurse").unwrap();
    let forge = |target: &str| {
        // D'_k = D'_nurse^{h_nurse/h_k} makes D_nurse = g2^r·H(k)^{r_k} with r_k = r·h_nurse/h_k.
        let ratio = h_nurse * sha3_hash_fr(target).unwrap().inverse().unwrap();
        bsw::CpAbeAttribute {
            string: target.to_string(),
            g1: nurse.g1 * ratio,
            g2: nurse.g2,
        }
    };
    let forged = bsw::CpAbeSecretKey {
        d: key.d,
        d_j: TARGETS_RABE.iter().map(|t| forge(t)).collect(),
    };
    assert_eq!(
        bsw::decrypt(&forged, &ct).unwrap(),
        SECRET,
        "forged BSW key opens the ciphertext"
    );
}

/// caremesh's hash input for `H(attr, l, t)` (1-based `l`, `t`), as documented in the crate.
fn caremesh_hash_input(attribute: &str, k: usize) -> Vec<u8> {
    let mut msg = vec![0x01, u8::try_from(attribute.len()).unwrap()];
    msg.extend_from_slice(attribute.as_bytes());
    msg.push(u8::try_from(k / 2 + 1).unwrap());
    msg.push(u8::try_from(k % 2 + 1).unwrap());
    msg
}

/// The attacker's stand-in for discrete logs caremesh does not have: a digest of each hash input
/// (what rabe's hash would use), reduced below the group order.
fn naive_exponents(attribute: &str) -> [Scalar; 6] {
    std::array::from_fn(|k| {
        let mut digest: [u8; 32] = Sha256::digest(caremesh_hash_input(attribute, k)).into();
        digest[0] &= 0x3f;
        Option::from(Scalar::from_bytes_be(&digest)).unwrap()
    })
}

fn caremesh_hash(attribute: &str, k: usize) -> G1Projective {
    G1Projective::hash_to_curve(&caremesh_hash_input(attribute, k), HASH_TO_G1_DST, &[])
}

fn g1(bytes: &[u8; 48]) -> G1Projective {
    Option::<G1Affine>::from(G1Affine::from_compressed(bytes))
        .unwrap()
        .into()
}

#[test]
fn the_same_forgery_fails_against_caremesh() {
    let (pp, _) = common::authority();
    let policy = Policy::parse(POLICY).unwrap();
    let victim = common::key_for(&HELD);
    let (data_key, ct) = encapsulate(pp, &policy, &mut OsRng).unwrap();
    let sealed = seal(pp, &policy, SECRET, b"", &mut OsRng).unwrap();
    assert_eq!(decapsulate(&victim, &ct).unwrap_err(), AbeError::PolicyNotSatisfied);

    let mut parts = split_key(&victim.to_bytes());
    for target in TARGETS {
        let c = forge_coefficients(naive_exponents, &HELD, target);
        // The relation the forgery needs, checked on caremesh's actual hash outputs: it fails
        // for every (l, t). (Finding coefficients for which it holds means computing discrete
        // logarithms of RFC 9380 outputs.)
        for k in 0..6 {
            let combined: G1Projective = HELD
                .iter()
                .zip(&c)
                .map(|(held, cj)| caremesh_hash(held, k) * cj)
                .fold(G1Projective::identity(), |a, b| a + b);
            assert_ne!(
                combined,
                caremesh_hash(target, k),
                "relation unexpectedly holds for {target}, k = {k}"
            );
        }
        // Combine the victim's parts exactly as against rabe.
        let forged: [[u8; 48]; 3] = std::array::from_fn(|i| {
            HELD.iter()
                .zip(&c)
                .fold(G1Projective::identity(), |acc, (held, cj)| {
                    acc + g1(&parts.part(held)[i]) * cj
                })
                .to_affine()
                .to_compressed()
        });
        parts.attributes.push(target.to_string());
        parts.parts.push(forged);
    }
    let forged = UserKey::from_bytes(&join_key(&parts)).unwrap();
    assert!(forged.can_decrypt(&ct), "the forged key claims the target attributes");
    assert_ne!(
        decapsulate(&forged, &ct).unwrap(),
        data_key,
        "but does not recover the data key"
    );
    assert_eq!(open(&forged, &sealed, b"").unwrap_err(), AbeError::DecryptionFailed);

    // Control: the key surgery itself is sound (re-assembling the victim's genuine parts
    // under a policy they satisfy opens it).
    let own = Policy::parse(r#""role:nurse" and "ward:3""#).unwrap();
    let (own_key, own_ct) = encapsulate(pp, &own, &mut OsRng).unwrap();
    let reassembled = UserKey::from_bytes(&join_key(&split_key(&victim.to_bytes()))).unwrap();
    assert_eq!(decapsulate(&reassembled, &own_ct).unwrap(), own_key);
}

/// rabe's span-program code panics on a flat three-way `and` (and on one-child groups), so a
/// service using it could be crashed by a policy string; caremesh parses it as one n-ary AND.
#[test]
fn rabe_panics_on_a_flat_three_way_and() {
    let flat = r#""a:x" and "b:y" and "c:z""#;
    let (pk, _) = ac17::setup();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| ac17::cp_encrypt(&pk, flat, SECRET, PolicyLanguage::HumanPolicy));
    std::panic::set_hook(hook);
    let payload = outcome.expect_err("rabe 0.4.2 panics");
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("Number of arguments under AND != 2"), "{message}");

    let (pp, _) = common::authority();
    let policy = Policy::parse(flat).unwrap();
    let key = common::key_for(&["a:x", "b:y", "c:z"]);
    let (data_key, ct) = encapsulate(pp, &policy, &mut OsRng).unwrap();
    assert_eq!(decapsulate(&key, &ct).unwrap(), data_key);
}
