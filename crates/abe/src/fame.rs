//! FAME CP-ABE (Agrawal and Chase, CCS 2017, section 3) with G = G1 and H = G2 of BLS12-381,
//! used as a key encapsulation mechanism.
//!
//! Notation follows the paper: `g`, `h` are the fixed generators of G1 and G2, `[x]_1 = g^x`,
//! `[x]_2 = h^x`, and `H` is the random oracle into G1 ([`crate::curve::hash_attribute`],
//! [`crate::curve::column_hashes`]). Indices `l ∈ {1,2,3}`, `t ∈ {1,2}` are 1-based in hash
//! inputs and 0-based in arrays.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use blstrs::{Bls12, G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Scalar};
use ff::Field;
use group::prime::PrimeCurveAffine;
use group::{Curve, Group};
use pairing::{MillerLoopResult, MultiMillerLoop};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::curve::{Secret, column_hashes, hash_attribute, normalize_g1, random_nonzero};
use crate::encoding::{
    G1_LEN, G2_LEN, GT_LEN, Reader, SCALAR_LEN, TYPE_CIPHERTEXT, TYPE_MASTER_KEY, TYPE_PUBLIC_PARAMS, TYPE_USER_KEY,
    Writer, gt_to_bytes,
};
use crate::error::{AbeError, Malformed, Object};
use crate::fp12::{ExpTable, double_exp_ct, uncompressed};
use crate::kem::{DataKey, derive_data_key};
use crate::policy::{MAX_ATTRIBUTE_LEN, Policy, validate_attribute};

/// Maximum number of distinct attributes in one user key.
pub const MAX_KEY_ATTRIBUTES: usize = 256;

/// Public parameters `mpk = (h, H1 = h^{a1}, H2 = h^{a2}, T1, T2)` with
/// `T_t = e(g, h)^{d_t a_t + d3}`. `h` is the standard G2 generator and is not stored.
#[derive(Clone)]
pub struct PublicParams {
    h_a: [G2Affine; 2],
    t_bytes: [[u8; GT_LEN]; 2],
    /// `[1, T1, T2, T1·T2]` for the constant-time mask computation.
    table: ExpTable,
}

impl PartialEq for PublicParams {
    fn eq(&self, other: &Self) -> bool {
        self.h_a == other.h_a && self.t_bytes == other.t_bytes
    }
}

impl Eq for PublicParams {}

impl fmt::Debug for PublicParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [h1, h2] = &self.h_a;
        f.debug_struct("PublicParams")
            .field("h1", &hex_prefix(&h1.to_compressed()))
            .field("h2", &hex_prefix(&h2.to_compressed()))
            .finish_non_exhaustive()
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    s.push('…');
    s
}

/// The secret scalars of the master key.
#[derive(Clone, Zeroize)]
struct MasterSecrets {
    a: [Secret<Scalar>; 2],
    b: [Secret<Scalar>; 2],
    d: [Secret<Scalar>; 3],
}

/// The master secret key `msk = (a1, a2, b1, b2, d1, d2, d3)`.
///
/// FAME's msk holds `g^{d_k}`; this one holds the `d_k` themselves so that the public parameters
/// can be recomputed from (and checked against) the master key. Zeroized on drop; `Debug`
/// redacts it.
#[derive(Clone)]
pub struct MasterKey {
    secrets: MasterSecrets,
    public: PublicParams,
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.secrets.zeroize();
    }
}

impl ZeroizeOnDrop for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// A user's secret key for a set of attributes:
/// `sk0 = ([b1 r1]_2, [b2 r2]_2, [r1 + r2]_2)`, for every attribute `y` the triple
/// `(sk_{y,1}, sk_{y,2}, sk_{y,3})`, and `sk' = (sk'_1, sk'_2, sk'_3)`.
///
/// Zeroized on drop; `Debug` shows the attributes only.
#[derive(Clone)]
pub struct UserKey {
    /// Sorted, distinct.
    attributes: Vec<String>,
    sk0: [Secret<G2Affine>; 3],
    sk_prime: [Secret<G1Affine>; 3],
    /// Aligned with `attributes`.
    parts: Vec<[Secret<G1Affine>; 3]>,
}

impl Drop for UserKey {
    fn drop(&mut self) {
        self.sk0.zeroize();
        self.sk_prime.zeroize();
        self.parts.zeroize();
    }
}

impl ZeroizeOnDrop for UserKey {}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKey")
            .field("attributes", &self.attributes)
            .field("key_material", &"<redacted>")
            .finish()
    }
}

/// A FAME ciphertext without the G_T component (the KEM form): the policy,
/// `ct0 = (H1^{s1}, H2^{s2}, h^{s1+s2})` and three G1 elements per policy row.
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext {
    policy: Policy,
    ct0: [G2Affine; 3],
    rows: Vec<[G1Affine; 3]>,
}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ciphertext")
            .field("policy", &self.policy.canonical())
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

/// Generates fresh public parameters and master key.
pub fn setup<R: RngCore + CryptoRng>(rng: &mut R) -> (PublicParams, MasterKey) {
    loop {
        let secrets = MasterSecrets {
            a: [Secret(random_nonzero(rng)), Secret(random_nonzero(rng))],
            b: [Secret(random_nonzero(rng)), Secret(random_nonzero(rng))],
            d: [
                Secret(Scalar::random(&mut *rng)),
                Secret(Scalar::random(&mut *rng)),
                Secret(Scalar::random(&mut *rng)),
            ],
        };
        // Only fails when some d_t a_t + d3 is zero (probability 2^-254): draw again.
        if let Some(public) = derive_public(&secrets) {
            let master = MasterKey {
                secrets,
                public: public.clone(),
            };
            return (public, master);
        }
    }
}

/// `H1, H2, T1, T2` from the master secrets; `None` if a `T_t` would be the identity.
fn derive_public(secrets: &MasterSecrets) -> Option<PublicParams> {
    let [a1, a2] = secrets.a;
    let [d1, d2, d3] = secrets.d;
    let h = G2Projective::generator();
    let g = G1Projective::generator();
    let h_a = [(h * a1.0).to_affine(), (h * a2.0).to_affine()];
    let x1 = Zeroizing::new(Secret(d1.0 * a1.0 + d3.0));
    let x2 = Zeroizing::new(Secret(d2.0 * a2.0 + d3.0));
    let h_affine = G2Affine::generator();
    let t1 = blstrs::pairing(&(g * x1.0).to_affine(), &h_affine);
    let t2 = blstrs::pairing(&(g * x2.0).to_affine(), &h_affine);
    Some(PublicParams {
        h_a,
        t_bytes: [gt_to_bytes(&t1)?, gt_to_bytes(&t2)?],
        table: ExpTable::new(&t1, &t2)?,
    })
}

impl MasterKey {
    /// The public parameters of this master key.
    pub fn public_params(&self) -> &PublicParams {
        &self.public
    }

    /// `version || 0x02 || a1 || a2 || b1 || b2 || d1 || d2 || d3` (32-byte big-endian scalars).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new(TYPE_MASTER_KEY, 7 * SCALAR_LEN);
        let s = &self.secrets;
        for k in s.a.iter().chain(&s.b).chain(&s.d) {
            w.scalar(&k.0);
        }
        Zeroizing::new(w.0)
    }

    /// Reads a master key and recomputes its public parameters. `a_t`, `b_t` must be non-zero.
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, AbeError> {
        let mut r = Reader::new(bytes, Object::MasterKey, TYPE_MASTER_KEY)?;
        let a = [Secret(r.nonzero_scalar()?), Secret(r.nonzero_scalar()?)];
        let b = [Secret(r.nonzero_scalar()?), Secret(r.nonzero_scalar()?)];
        let mut d = [Secret(Scalar::ZERO); 3];
        for slot in &mut d {
            let raw = Zeroizing::new(r.array::<SCALAR_LEN>()?);
            let scalar: Option<Scalar> = Scalar::from_bytes_be(&raw).into();
            *slot = Secret(scalar.ok_or(r.malformed(Malformed::InvalidScalar))?);
        }
        r.finish()?;
        let secrets = MasterSecrets { a, b, d };
        let public = derive_public(&secrets).ok_or(AbeError::Malformed {
            object: Object::MasterKey,
            reason: Malformed::InvalidScalar,
        })?;
        Ok(MasterKey { secrets, public })
    }
}

impl PublicParams {
    /// `version || 0x01 || H1 (96) || H2 (96) || T1 (288) || T2 (288)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(TYPE_PUBLIC_PARAMS, 2 * G2_LEN + 2 * GT_LEN);
        for p in &self.h_a {
            w.g2(p);
        }
        for t in &self.t_bytes {
            w.bytes(t);
        }
        w.0
    }

    /// Reads public parameters; every element is checked (on curve / in G_T, prime-order
    /// subgroup, canonical, not the identity).
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicParams, AbeError> {
        let mut r = Reader::new(bytes, Object::PublicParams, TYPE_PUBLIC_PARAMS)?;
        let h_a = [r.g2()?, r.g2()?];
        let (t1, t1_bytes) = r.gt()?;
        let (t2, t2_bytes) = r.gt()?;
        r.finish()?;
        let table = ExpTable::new(&t1, &t2).ok_or(AbeError::Malformed {
            object: Object::PublicParams,
            reason: Malformed::InvalidGroupElement,
        })?;
        Ok(PublicParams {
            h_a,
            t_bytes: [t1_bytes, t2_bytes],
            table,
        })
    }
}

/// Validates, sorts and de-duplicates the attributes of a key request.
fn canonical_attributes<S: AsRef<str>>(attributes: &[S]) -> Result<Vec<String>, AbeError> {
    let mut set = BTreeSet::new();
    for attribute in attributes {
        let attribute = attribute.as_ref();
        if let Err(error) = validate_attribute(attribute) {
            return Err(AbeError::InvalidAttribute {
                attribute: attribute.chars().take(MAX_ATTRIBUTE_LEN + 32).collect(),
                error,
            });
        }
        set.insert(attribute);
    }
    if set.is_empty() || set.len() > MAX_KEY_ATTRIBUTES {
        return Err(AbeError::KeyAttributeCount {
            count: set.len(),
            limit: MAX_KEY_ATTRIBUTES,
        });
    }
    Ok(set.into_iter().map(str::to_owned).collect())
}

/// Issues a key for `attributes` (validated, de-duplicated; at most [`MAX_KEY_ATTRIBUTES`]).
///
/// `pp` must be `msk`'s public parameters ([`AbeError::ParamsMismatch`] otherwise).
pub fn keygen<S: AsRef<str>, R: RngCore + CryptoRng>(
    pp: &PublicParams,
    msk: &MasterKey,
    attributes: &[S],
    rng: &mut R,
) -> Result<UserKey, AbeError> {
    if *pp != msk.public {
        return Err(AbeError::ParamsMismatch);
    }
    let attributes = canonical_attributes(attributes)?;
    loop {
        if let Some(key) = keygen_once(msk, &attributes, rng) {
            return Ok(key);
        }
    }
}

/// One key-generation attempt; `None` (probability ~2^-250) if an element came out as the
/// identity, which deserialization would reject.
fn keygen_once<R: RngCore + CryptoRng>(msk: &MasterKey, attributes: &[String], rng: &mut R) -> Option<UserKey> {
    let s = &msk.secrets;
    let [a1, a2] = s.a;
    let [b1, b2] = s.b;
    let [d1, d2, d3] = s.d;
    let r1 = Zeroizing::new(Secret(random_nonzero(rng)));
    let r2 = Zeroizing::new(Secret(random_nonzero(rng)));
    // br = (b1 r1, b2 r2, r1 + r2)
    let br = Zeroizing::new([Secret(b1.0 * r1.0), Secret(b2.0 * r2.0), Secret(r1.0 + r2.0)]);
    let a_inv = Zeroizing::new([
        Secret(Option::<Scalar>::from(a1.0.invert())?),
        Secret(Option::<Scalar>::from(a2.0.invert())?),
    ]);
    // br_l / a_t, indexed [t][l].
    let mut coeff = Zeroizing::new([[Secret(Scalar::ZERO); 3]; 2]);
    for (row, inv) in coeff.iter_mut().zip(a_inv.iter()) {
        for (c, b) in row.iter_mut().zip(br.iter()) {
            *c = Secret(b.0 * inv.0);
        }
    }

    let h = G2Projective::generator();
    let g = G1Projective::generator();
    let sk0 = br.map(|b| h * b.0);

    // One closure for both kinds of triples:
    // sk_t = base_t + sum_l H_{l,t} * (br_l / a_t) + g * (sigma / a_t), and sk_3 = last.
    let triple = |hashes: &[[G1Projective; 2]; 3],
                  base: [G1Projective; 2],
                  sigma: &Scalar,
                  last: G1Projective|
     -> [G1Projective; 3] {
        let mut out = [G1Projective::identity(); 3];
        let per_t = coeff.iter().zip(a_inv.iter());
        for (t, ((slot, base), (row, inv))) in out.iter_mut().zip(base).zip(per_t).enumerate() {
            let mut acc = base;
            for (hash_l, c) in hashes.iter().zip(row.iter()) {
                if let Some(hash) = hash_l.get(t) {
                    acc += hash * c.0;
                }
            }
            acc += g * (*sigma * inv.0);
            *slot = acc;
        }
        let [_, _, third] = &mut out;
        *third = last;
        out
    };

    let mut projective: Vec<G1Projective> = Vec::with_capacity(3 * (attributes.len() + 1));
    // sk' with column 1's hashes H(0 1 l t).
    let column1 = column_hashes(1).map(|row| row.map(G1Projective::from));
    let sigma_prime = Zeroizing::new(Secret(Scalar::random(&mut *rng)));
    projective.extend(triple(
        &column1,
        [g * d1.0, g * d2.0],
        &sigma_prime.0,
        g * (d3.0 - sigma_prime.0),
    ));
    for attribute in attributes {
        let hashes = [1u8, 2, 3].map(|l| [1u8, 2].map(|t| hash_attribute(attribute, l, t)));
        let sigma = Zeroizing::new(Secret(Scalar::random(&mut *rng)));
        projective.extend(triple(&hashes, [G1Projective::identity(); 2], &sigma.0, g * (-sigma.0)));
    }

    let affine = normalize_g1(&projective);
    let mut sk0_affine = [G2Affine::identity(); 3];
    G2Projective::batch_normalize(&sk0, &mut sk0_affine);
    let any_identity =
        affine.iter().any(|p| bool::from(p.is_identity())) || sk0_affine.iter().any(|p| bool::from(p.is_identity()));
    if any_identity {
        return None;
    }
    let mut chunks = affine.chunks_exact(3).map(|c| {
        let mut out = [Secret(G1Affine::identity()); 3];
        for (o, p) in out.iter_mut().zip(c) {
            *o = Secret(*p);
        }
        out
    });
    let sk_prime = chunks.next()?;
    let parts: Vec<[Secret<G1Affine>; 3]> = chunks.collect();
    if parts.len() != attributes.len() {
        return None;
    }
    Some(UserKey {
        attributes: attributes.to_vec(),
        sk0: sk0_affine.map(Secret),
        sk_prime,
        parts,
    })
}

impl UserKey {
    /// The key's attributes, sorted and distinct.
    pub fn attributes(&self) -> &[String] {
        &self.attributes
    }

    /// Whether the key holds `attribute`.
    pub fn has_attribute(&self, attribute: &str) -> bool {
        self.index_of(attribute).is_some()
    }

    /// Whether this key's attributes satisfy the ciphertext's policy.
    pub fn can_decrypt(&self, ciphertext: &Ciphertext) -> bool {
        ciphertext.policy.is_satisfied_by(&self.attributes)
    }

    fn index_of(&self, attribute: &str) -> Option<usize> {
        self.attributes.binary_search_by(|a| a.as_str().cmp(attribute)).ok()
    }

    /// `version || 0x03 || n (u16) || n × (len (u8) || attribute) || sk0 (3 × 96) ||
    /// sk' (3 × 48) || n × (sk_{y,1} || sk_{y,2} || sk_{y,3}) (3 × 48 each)`, attributes in
    /// strictly increasing byte order.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let names: usize = self.attributes.iter().map(|a| a.len() + 1).sum();
        let mut w = Writer::new(
            TYPE_USER_KEY,
            2 + names + 3 * G2_LEN + 3 * G1_LEN * (self.parts.len() + 1),
        );
        w.u16(u16::try_from(self.attributes.len()).unwrap_or(u16::MAX));
        for attribute in &self.attributes {
            w.u8(u8::try_from(attribute.len()).unwrap_or(u8::MAX));
            w.bytes(attribute.as_bytes());
        }
        for p in &self.sk0 {
            w.g2(&p.0);
        }
        for p in self.sk_prime.iter().chain(self.parts.iter().flatten()) {
            w.g1(&p.0);
        }
        Zeroizing::new(w.0)
    }

    /// Reads a user key; attributes must be valid, sorted and distinct, and every group element
    /// a non-identity element of the prime-order subgroup.
    pub fn from_bytes(bytes: &[u8]) -> Result<UserKey, AbeError> {
        let mut r = Reader::new(bytes, Object::UserKey, TYPE_USER_KEY)?;
        let count = usize::from(r.u16()?);
        if count == 0 || count > MAX_KEY_ATTRIBUTES {
            return Err(r.malformed(Malformed::AttributeCount));
        }
        let mut attributes: Vec<String> = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let raw = r.take(len)?;
            let attribute = std::str::from_utf8(raw)
                .ok()
                .filter(|a| validate_attribute(a).is_ok())
                .ok_or(r.malformed(Malformed::InvalidAttribute))?;
            if attributes.last().is_some_and(|previous| previous.as_str() >= attribute) {
                return Err(r.malformed(Malformed::NonCanonicalAttributes));
            }
            attributes.push(attribute.to_owned());
        }
        // Cheap length check before the (costlier) point decoding.
        if r.remaining() != 3 * G2_LEN + 3 * G1_LEN * (count + 1) {
            return Err(r.malformed(if r.remaining() < 3 * G2_LEN + 3 * G1_LEN * (count + 1) {
                Malformed::Truncated
            } else {
                Malformed::TrailingBytes
            }));
        }
        let sk0 = [Secret(r.g2()?), Secret(r.g2()?), Secret(r.g2()?)];
        let sk_prime = [Secret(r.g1()?), Secret(r.g1()?), Secret(r.g1()?)];
        let mut parts = Vec::with_capacity(count);
        for _ in 0..count {
            parts.push([Secret(r.g1()?), Secret(r.g1()?), Secret(r.g1()?)]);
        }
        r.finish()?;
        Ok(UserKey {
            attributes,
            sk0,
            sk_prime,
            parts,
        })
    }
}

impl Ciphertext {
    /// The policy this ciphertext is encrypted under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// `version || 0x04 || len (u16) || canonical policy (UTF-8) || ct0 (3 × 96) ||
    /// rows (u16) || rows × (ct_{i,1} || ct_{i,2} || ct_{i,3}) (3 × 48 each)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let policy = self.policy.canonical();
        let mut w = Writer::new(
            TYPE_CIPHERTEXT,
            4 + policy.len() + 3 * G2_LEN + 3 * G1_LEN * self.rows.len(),
        );
        w.u16(u16::try_from(policy.len()).unwrap_or(u16::MAX));
        w.bytes(policy.as_bytes());
        for p in &self.ct0 {
            w.g2(p);
        }
        w.u16(u16::try_from(self.rows.len()).unwrap_or(u16::MAX));
        for p in self.rows.iter().flatten() {
            w.g1(p);
        }
        w.0
    }

    /// Reads a ciphertext: the policy must parse and be canonical, the row count must match it,
    /// and every group element must be a non-identity element of the prime-order subgroup.
    pub fn from_bytes(bytes: &[u8]) -> Result<Ciphertext, AbeError> {
        let mut r = Reader::new(bytes, Object::Ciphertext, TYPE_CIPHERTEXT)?;
        let policy_len = usize::from(r.u16()?);
        let text = std::str::from_utf8(r.take(policy_len)?).map_err(|_| r.malformed(Malformed::NotUtf8))?;
        let policy = Policy::parse(text).map_err(|e| r.malformed(Malformed::InvalidPolicy(e)))?;
        if policy.canonical() != text {
            return Err(r.malformed(Malformed::NonCanonicalPolicy));
        }
        let ct0 = [r.g2()?, r.g2()?, r.g2()?];
        let count = usize::from(r.u16()?);
        if count != policy.leaf_count() {
            return Err(r.malformed(Malformed::RowCountMismatch {
                expected: policy.leaf_count(),
                found: count,
            }));
        }
        if r.remaining() != 3 * G1_LEN * count {
            return Err(r.malformed(if r.remaining() < 3 * G1_LEN * count {
                Malformed::Truncated
            } else {
                Malformed::TrailingBytes
            }));
        }
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            rows.push([r.g1()?, r.g1()?, r.g1()?]);
        }
        r.finish()?;
        Ok(Ciphertext { policy, ct0, rows })
    }
}

/// Encapsulates a fresh 256-bit data key under `policy`.
///
/// The key is HKDF-SHA256 of `T1^{s1} T2^{s2}` (FAME's G_T mask) bound to the serialized
/// ciphertext; see [`crate::kem`].
pub fn encapsulate<R: RngCore + CryptoRng>(
    pp: &PublicParams,
    policy: &Policy,
    rng: &mut R,
) -> Result<(DataKey, Ciphertext), AbeError> {
    loop {
        if let Some(out) = encapsulate_once(pp, policy, rng)? {
            return Ok(out);
        }
    }
}

#[allow(clippy::type_complexity)]
fn encapsulate_once<R: RngCore + CryptoRng>(
    pp: &PublicParams,
    policy: &Policy,
    rng: &mut R,
) -> Result<Option<(DataKey, Ciphertext)>, AbeError> {
    let s1 = Zeroizing::new(Secret(random_nonzero(rng)));
    let s2 = Zeroizing::new(Secret(random_nonzero(rng)));
    let s_sum = Zeroizing::new(Secret(s1.0 + s2.0));
    if bool::from(s_sum.0.is_zero()) {
        return Ok(None);
    }
    let [h1, h2] = &pp.h_a;
    let ct0_projective = [h1 * s1.0, h2 * s2.0, G2Projective::generator() * s_sum.0];
    let mut ct0 = [G2Affine::identity(); 3];
    G2Projective::batch_normalize(&ct0_projective, &mut ct0);

    let program = policy.span_program();
    let columns: Vec<_> = (1..=program.columns).map(column_hashes).collect();
    // H(y l t) once per distinct attribute, even when it labels several rows.
    let mut attribute_hashes: HashMap<&str, [[G1Projective; 2]; 3]> = HashMap::new();
    let mut projective = Vec::with_capacity(3 * program.rows.len());
    for (attribute, entries) in &program.rows {
        let hashes = *attribute_hashes
            .entry(attribute)
            .or_insert_with(|| [1u8, 2, 3].map(|l| [1u8, 2].map(|t| hash_attribute(attribute, l, t))));
        // ct_{i,l} = s1 (H(y l 1) + sum_j M_ij H(0 j l 1)) + s2 (H(y l 2) + sum_j M_ij H(0 j l 2))
        for (l, [mut p1, mut p2]) in hashes.into_iter().enumerate() {
            for &(column, sign) in entries {
                let Some([q1, q2]) = columns.get(column).and_then(|c| c.get(l)) else {
                    continue;
                };
                if sign < 0 {
                    p1 -= q1;
                    p2 -= q2;
                } else {
                    p1 += q1;
                    p2 += q2;
                }
            }
            projective.push(p1 * s1.0 + p2 * s2.0);
        }
    }
    let affine = normalize_g1(&projective);
    if affine.iter().any(|p| bool::from(p.is_identity())) || ct0.iter().any(|p| bool::from(p.is_identity())) {
        return Ok(None);
    }
    let rows: Vec<[G1Affine; 3]> = affine
        .chunks_exact(3)
        .map(|c| {
            let mut row = [G1Affine::identity(); 3];
            for (o, p) in row.iter_mut().zip(c) {
                *o = *p;
            }
            row
        })
        .collect();
    let Some(mask) = double_exp_ct(&pp.table, &s1.0, &s2.0) else {
        return Ok(None);
    };
    let ciphertext = Ciphertext {
        policy: policy.clone(),
        ct0,
        rows,
    };
    match derive_data_key(&mask, &ciphertext) {
        Some(key) => Ok(Some((key, ciphertext))),
        None => Ok(None),
    }
}

/// Recovers the data key, or [`AbeError::PolicyNotSatisfied`].
///
/// Computes, in one multi-pairing (six Miller loops, one final exponentiation),
/// `prod_t e(sk'_t + sum_{i in I} sk_{rho(i),t}, ct_{0,t}) / prod_l e(sum_{i in I} ct_{i,l}, sk_{0,l})`,
/// where `I` is a minimal satisfying set of rows (all reconstruction coefficients are 1 for a
/// Lewko-Waters matrix, so no exponentiations are needed).
///
/// A key that is not a genuine key for its attributes (forged, from another authority) yields a
/// wrong data key rather than an error; AES-GCM in [`open`](crate::open) then fails.
pub fn decapsulate(key: &UserKey, ciphertext: &Ciphertext) -> Result<DataKey, AbeError> {
    let policy = &ciphertext.policy;
    let selected = policy
        .reconstruction_rows(&|a| key.has_attribute(a))
        .ok_or(AbeError::PolicyNotSatisfied)?;
    let leaves = policy.leaves();
    let internal = AbeError::Malformed {
        object: Object::Ciphertext,
        reason: Malformed::RowCountMismatch {
            expected: policy.leaf_count(),
            found: ciphertext.rows.len(),
        },
    };

    let mut a = [G1Projective::identity(); 3];
    let mut b = key.sk_prime.map(|p| G1Projective::from(p.0));
    for row in selected {
        let attribute = leaves.get(row).ok_or(internal.clone())?;
        let ct_row = ciphertext.rows.get(row).ok_or(internal.clone())?;
        let part = key
            .index_of(attribute)
            .and_then(|i| key.parts.get(i))
            .ok_or(AbeError::PolicyNotSatisfied)?;
        for (acc, p) in a.iter_mut().zip(ct_row) {
            *acc += p;
        }
        for (acc, p) in b.iter_mut().zip(part) {
            *acc += p.0;
        }
    }
    let [a1, a2, a3] = a;
    let [b1, b2, b3] = b;
    let g1_points = normalize_g1(&[b1, b2, b3, -a1, -a2, -a3]);
    let g2_points: Vec<G2Prepared> = ciphertext
        .ct0
        .iter()
        .copied()
        .chain(key.sk0.iter().map(|p| p.0))
        .map(G2Prepared::from)
        .collect();
    let terms: Vec<(&G1Affine, &G2Prepared)> = g1_points.iter().zip(g2_points.iter()).collect();
    let mask = Bls12::multi_miller_loop(&terms).final_exponentiation();
    let encoded = uncompressed(&mask).ok_or(AbeError::Malformed {
        object: Object::Ciphertext,
        reason: Malformed::InvalidGroupElement,
    })?;
    derive_data_key(&encoded, ciphertext).ok_or(AbeError::Malformed {
        object: Object::Ciphertext,
        reason: Malformed::IdentityElement,
    })
}
