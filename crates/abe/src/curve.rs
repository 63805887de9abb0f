//! Group plumbing: FAME's hash H, secret wrappers.

use std::sync::OnceLock;

use blstrs::{G1Affine, G1Projective, Scalar};
use ff::Field;
use group::Curve;
use rand_core::{CryptoRng, RngCore};
use zeroize::DefaultIsZeroes;

use crate::policy::MAX_POLICY_ATTRIBUTES;

/// Domain separation tag of FAME's random oracle `H` (RFC 9380 `hash_to_curve`, G1,
/// expand_message_xmd with SHA-256, simplified SWU, random oracle variant).
pub const HASH_TO_G1_DST: &[u8] = b"CAREMESH-ABE-V1_BLS12381G1_XMD:SHA-256_SSWU_RO_";

/// First byte of an `H` input for an attribute: `H(y, l, t)`.
const HASH_INPUT_ATTRIBUTE: u8 = 0x01;
/// First byte of an `H` input for a span-program column: `H(0, j, l, t)`.
const HASH_INPUT_COLUMN: u8 = 0x00;

/// A `Copy` value that is overwritten with its `Default` (volatile write) when zeroized.
///
/// blstrs' types implement neither `Zeroize` nor `Drop`; this wrapper lets secret scalars and
/// key points be wiped through `zeroize`'s `DefaultIsZeroes` without `unsafe`. Copies made
/// during arithmetic (registers, temporaries) are out of reach: this is best effort.
#[derive(Clone, Copy, Default)]
pub(crate) struct Secret<T: Copy + Default>(pub(crate) T);

impl<T: Copy + Default> DefaultIsZeroes for Secret<T> {}

/// FAME's `H(y l t)` for attribute `y`: input `0x01 || len(y) || y || l || t`.
pub(crate) fn hash_attribute(attribute: &str, l: u8, t: u8) -> G1Projective {
    let bytes = attribute.as_bytes();
    let mut msg = Vec::with_capacity(bytes.len() + 4);
    msg.push(HASH_INPUT_ATTRIBUTE);
    // Attributes are at most 128 bytes (validated), so the length fits a byte; clamp anyway.
    msg.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    msg.extend_from_slice(bytes);
    msg.push(l);
    msg.push(t);
    G1Projective::hash_to_curve(&msg, HASH_TO_G1_DST, &[])
}

/// FAME's `H(0 j l t)` for span-program column `j` (1-based): input `0x00 || j (u32 BE) || l || t`.
fn hash_column_uncached(j: u32, l: u8, t: u8) -> G1Projective {
    let mut msg = [0u8; 7];
    let [tag, j0, j1, j2, j3, ml, mt] = &mut msg;
    *tag = HASH_INPUT_COLUMN;
    [*j0, *j1, *j2, *j3] = j.to_be_bytes();
    *ml = l;
    *mt = t;
    G1Projective::hash_to_curve(&msg, HASH_TO_G1_DST, &[])
}

/// `[l-1][t-1] -> H(0 j l t)` for one column.
pub(crate) type ColumnHashes = [[G1Affine; 2]; 3];

fn compute_column(j: u32) -> ColumnHashes {
    let points: Vec<G1Projective> = (1..=3u8)
        .flat_map(|l| (1..=2u8).map(move |t| hash_column_uncached(j, l, t)))
        .collect();
    let mut affine = [G1Affine::default(); 6];
    G1Projective::batch_normalize(&points, &mut affine);
    let [a, b, c, d, e, f] = affine;
    [[a, b], [c, d], [e, f]]
}

/// Column hashes do not depend on any key or policy, so each is computed once per process.
static COLUMN_CACHE: [OnceLock<ColumnHashes>; MAX_POLICY_ATTRIBUTES] =
    [const { OnceLock::new() }; MAX_POLICY_ATTRIBUTES];

/// `H(0 j l t)` for column `j` (1-based), memoized for `j <= MAX_POLICY_ATTRIBUTES`.
pub(crate) fn column_hashes(j: usize) -> ColumnHashes {
    let index = u32::try_from(j).unwrap_or(u32::MAX);
    match j.checked_sub(1).and_then(|i| COLUMN_CACHE.get(i)) {
        Some(cell) => *cell.get_or_init(|| compute_column(index)),
        None => compute_column(index),
    }
}

/// A uniformly random non-zero scalar.
pub(crate) fn random_nonzero<R: RngCore + CryptoRng>(rng: &mut R) -> Scalar {
    loop {
        let s = Scalar::random(&mut *rng);
        if !bool::from(s.is_zero()) {
            return s;
        }
    }
}

/// Normalizes a slice of projective G1 points to affine with one shared inversion.
pub(crate) fn normalize_g1(points: &[G1Projective]) -> Vec<G1Affine> {
    let mut out = vec![G1Affine::default(); points.len()];
    G1Projective::batch_normalize(points, &mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use group::Curve;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 9380, appendix J.9.1 (BLS12381G1_XMD:SHA-256_SSWU_RO_), msg = "": blst implements
    /// the RFC suite that `H` is specified as.
    #[test]
    fn hash_to_curve_is_rfc9380() {
        let p = G1Projective::hash_to_curve(b"", b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_", &[]);
        assert_eq!(
            hex(&p.to_affine().to_uncompressed()),
            "052926add2207b76ca4fa57a8734416c8dc95e24501772c814278700eed6d1e4e8cf62d9c09db0fac349612b759e79a1\
             08ba738453bfed09cb546dbb0783dbb3a5f1f566ed67bb6be0e8c67e2e81a4cc68ee29813bb7994998f3eae0c9c6a265"
        );
    }

    /// Pins the documented input encodings of `H` (the forgery test recomputes them).
    #[test]
    fn hash_inputs_follow_the_documented_encoding() {
        let dst = b"CAREMESH-ABE-V1_BLS12381G1_XMD:SHA-256_SSWU_RO_";
        assert_eq!(HASH_TO_G1_DST, dst);
        let expected = G1Projective::hash_to_curve(b"\x01\x0brole:doctor\x02\x01", dst, &[]);
        assert_eq!(hash_attribute("role:doctor", 2, 1), expected);
        let expected = G1Projective::hash_to_curve(&[0, 0, 0, 0, 7, 3, 2], dst, &[]);
        assert_eq!(hash_column_uncached(7, 3, 2), expected);
        assert_ne!(hash_attribute("role:doctor", 2, 1), hash_attribute("role:doctor", 1, 2));
    }

    #[test]
    fn column_cache_is_consistent() {
        let cached = column_hashes(3);
        assert_eq!(cached[1][0], hash_column_uncached(3, 2, 1).to_affine());
        assert_eq!(column_hashes(3), cached);
        // Beyond the cache it still works.
        let far = column_hashes(MAX_POLICY_ATTRIBUTES + 5);
        assert_eq!(
            far[0][1],
            hash_column_uncached(u32::try_from(MAX_POLICY_ATTRIBUTES + 5).unwrap(), 1, 2).to_affine()
        );
    }
}
