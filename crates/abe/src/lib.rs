//! # caremesh-abe: ciphertext-policy attribute-based encryption for caremesh
//!
//! Records and doctor group messages in caremesh are encrypted for a *policy* such as
//! `"role:doctor" and ("dept:cardiology" or "dept:emergency")`: anyone holding a key whose
//! attributes satisfy the policy can decrypt, nobody else can, and holders of different keys
//! cannot pool their attributes (collusion resistance). This crate is that cryptographic core.
//! It does no I/O.
//!
//! ## Scheme
//!
//! **FAME** CP-ABE: Shashank Agrawal and Melissa Chase, *FAME: Fast Attribute-based Message
//! Encryption*, ACM CCS 2017, section 3 (ePrint 2017/807). FAME is fully (adaptively) secure
//! under the decisional linear assumption (DLIN) on a Type-III pairing in the random-oracle model,
//! puts no bound on the attribute universe (attributes are arbitrary strings, hashed), no bound on
//! policy size, and allows an attribute to label several rows of the policy's span program.
//!
//! * **Group.** BLS12-381 (about 128-bit security) through [`blstrs`] (the `blst` C/assembly
//!   library). FAME's `G` is G1 (48-byte elements: hashes, key parts, ciphertext rows) and its
//!   `H` is G2 (96 bytes: `sk0`, `ct0`, public `H1`, `H2`).
//! * **Random oracle.** FAME's `H: {0,1}* -> G` is RFC 9380 `hash_to_curve` to G1
//!   (`BLS12381G1_XMD:SHA-256_SSWU_RO_`) with the domain separation tag
//!   [`HASH_TO_G1_DST`] = `CAREMESH-ABE-V1_BLS12381G1_XMD:SHA-256_SSWU_RO_`. The paper's
//!   inputs `(y, l, t)` for an attribute `y` and `(0, j, l, t)` for span-program column `j` are
//!   encoded unambiguously as `0x01 || len(y) (1 byte) || y || l || t` and
//!   `0x00 || j (u32 big-endian) || l || t`. Nobody knows the discrete logarithm of an output.
//! * **Policies** (module [`policy`]) are monotone boolean formulas with n-ary `and`/`or`,
//!   turned into a Lewko-Waters span program over {-1, 0, 1}; a flat n-ary AND uses the matrix of
//!   the right-nested binary AND. Reconstruction coefficients for a minimal satisfying set are all
//!   1, so decryption needs only group additions and one multi-pairing.
//! * **Attribute reuse.** FAME hashes the row's *attribute* (`H(ρ(i) l t)`), not the row, and
//!   gives every row its own span-program share, so a policy may use an attribute several times
//!   (ρ non-injective); the paper's construction and proof cover this, no per-occurrence index is
//!   needed, and a user key holds one part per attribute however often policies use it.
//! * **Decryption** is one product of six pairings: six Miller loops and a single final
//!   exponentiation (`Bls12::multi_miller_loop(..).final_exponentiation()`).
//!
//! ## KEM use
//!
//! FAME encrypts a G_T element `msg` as `ct' = T1^{s1} T2^{s2} · msg`. This crate drops `ct'` and
//! uses the mask `T1^{s1} T2^{s2}` itself as the KEM secret (as the paper's message is a uniformly
//! random G_T element either way, this is the standard KEM form of the same scheme). The 256-bit
//! [`DataKey`] is HKDF-SHA256 of the mask's canonical encoding, with the SHA-256 of the
//! serialized ABE ciphertext (policy included) in the `info` (module [`kem`]), so the key is
//! bound to the exact ciphertext. [`seal`]/[`open`] add AES-256-GCM with caller associated data.
//! Callers that seal themselves use [`encapsulate`]/[`decapsulate`] and the data key directly.
//!
//! The KEM alone is IND-CPA (FAME's guarantee); integrity against a tampered ciphertext comes from
//! AES-GCM over the bound key, and authenticity of an envelope from the author's Ed25519 signature
//! in caremesh (DESIGN.md §4), which this crate does not do.
//!
//! ## Security choices
//!
//! * **Why not the `rabe` crate.** rabe 0.4.2 (including its FAME/"AC17" implementation) hashes
//!   a string `x` to the group as `g^SHA3(x)`. That exponent is public, so the discrete logarithm
//!   of every "hash" is known and key parts for different attributes are linearly related: a key
//!   holder can forge key parts for attributes they were never issued (for BSW from one attribute,
//!   for AC17 by solving a 6x6 linear system over six unrelated attributes). The test
//!   `tests/rabe_forgery.rs` demonstrates it against rabe and shows the same attack failing
//!   here. rabe's policy code also panics on ordinary input (a flat three-way `and`, one-child
//!   JSON policies), and its curve, BN254, gives about 100-bit security after the exTNFS attacks.
//! * **Constant time** where secrets are involved: G1/G2 scalar multiplication is blst's
//!   constant-time windowed multiplication (never the variable-time Pippenger MSM); the G_T double
//!   exponentiation `T1^{s1} T2^{s2}` is a fixed-schedule ladder with constant-time table
//!   selection (blstrs' own `Gt * Scalar` branches on the exponent bits). blstrs hides its `Fp12`,
//!   so the ladder runs on `MillerLoopResult` values (same `Fp12`, `ConditionallySelectable`)
//!   obtained through their shared serde representation; see the private `fp12` module.
//!   Hashing and policy handling involve public data only.
//! * **Checked decoding.** Every deserialized group element is decompressed with an on-curve and
//!   prime-order-subgroup check (G_T elements with a subgroup check), must be canonical, and must
//!   not be the identity (the scheme never produces it; generation re-draws in the ~2^-250 case).
//!   Malformed input is an error, never a panic; the fuzz targets in the repository's `fuzz/`
//!   exercise this.
//! * **Secrets** ([`MasterKey`], [`UserKey`], [`DataKey`], opened plaintext) are zeroized on
//!   drop and redacted in `Debug`. blstrs values are `Copy`, so copies made during arithmetic are
//!   out of reach: zeroization is best effort.
//!
//! ## Deviations from the paper
//!
//! * KEM form (no `ct'`), key derivation bound to the ciphertext — see above.
//! * The master key stores `d1, d2, d3` instead of `g^{d1}, g^{d2}, g^{d3}`, so that the public
//!   parameters can be recomputed from it and checked ([`AbeError::ParamsMismatch`]).
//! * Random exponents `a_t, b_t, r_1, r_2, s_1, s_2` are drawn non-zero (and `r1 + r2`,
//!   `s1 + s2` non-zero), which lets decoding reject identity elements outright.
//!
//! ## Serialization
//!
//! Every object is `version (1 byte, currently 1) || type (1 byte) || fixed layout`, big-endian
//! lengths, compressed points; the layouts are on each `to_bytes`. Encodings are canonical:
//! user-key attributes sorted and distinct, ciphertext policies in canonical form, points and
//! scalars in their unique encodings, no trailing bytes.
//!
//! ## Example
//!
//! ```
//! use caremesh_abe::{Policy, decapsulate, encapsulate, keygen, open, seal, setup};
//! use rand_core::OsRng;
//!
//! let (pp, msk) = setup(&mut OsRng);
//! let policy = Policy::parse(r#""role:doctor" and ("dept:cardiology" or "dept:emergency")"#)?;
//! let alice = keygen(&pp, &msk, &["role:doctor", "dept:cardiology"], &mut OsRng)?;
//! let bob = keygen(&pp, &msk, &["role:nurse", "dept:cardiology"], &mut OsRng)?;
//!
//! let sealed = seal(&pp, &policy, b"ECG: sinus rhythm", b"record 42", &mut OsRng)?;
//! assert_eq!(&open(&alice, &sealed, b"record 42")?[..], b"ECG: sinus rhythm");
//! assert!(open(&bob, &sealed, b"record 42").is_err());
//!
//! let (data_key, ciphertext) = encapsulate(&pp, &policy, &mut OsRng)?;
//! assert_eq!(decapsulate(&alice, &ciphertext)?, data_key);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## References
//!
//! * S. Agrawal, M. Chase. FAME: Fast Attribute-based Message Encryption. CCS 2017.
//!   <https://eprint.iacr.org/2017/807>
//! * A. Lewko, B. Waters. Decentralizing Attribute-Based Encryption. EUROCRYPT 2011 (appendix G:
//!   boolean formulas to LSSS matrices).
//! * RFC 9380: Hashing to Elliptic Curves. RFC 5869: HKDF.
//! * J. Bethencourt, A. Sahai, B. Waters. Ciphertext-Policy Attribute-Based Encryption.
//!   IEEE S&P 2007 (rabe's "BSW").

mod check;
mod curve;
mod encoding;
mod error;
mod fame;
mod fp12;
pub mod kem;
pub mod policy;

pub use check::{PolicyCheck, PolicyProblem, check_policy};
pub use curve::HASH_TO_G1_DST;
pub use encoding::FORMAT_VERSION;
pub use error::{AbeError, Malformed, Object};
pub use fame::{
    Ciphertext, MAX_KEY_ATTRIBUTES, MasterKey, PublicParams, UserKey, decapsulate, encapsulate, keygen, setup,
};
pub use kem::{DataKey, open, seal, sealed_ciphertext};
pub use policy::{Policy, PolicyError, PolicyErrorKind, validate_attribute};
/// The `rand_core` version (0.6) whose `RngCore + CryptoRng` this crate takes; `OsRng` included.
pub use rand_core;
pub use zeroize::Zeroizing;
