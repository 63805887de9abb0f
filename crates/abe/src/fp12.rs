//! Access to G_T elements as plain Fp12 coordinates, and constant-time arithmetic on them.
//!
//! blstrs keeps its `Fp12` type private, and its `Gt` has neither constant-time selection nor a
//! constant-time exponentiation (`Gt * Scalar` branches on the exponent bits). Its public
//! `MillerLoopResult` wraps the same `Fp12`, multiplies with `+`, and *is*
//! `ConditionallySelectable`. Both types implement serde with the same representation: the
//! twelve Fp coordinates `c0.c0.c0, c0.c0.c1, c0.c1.c0, …, c1.c2.c1`, each as six canonical
//! little-endian `u64` limbs of the standard (non-Montgomery) value.
//!
//! This module moves values between the two through that serde representation, using a
//! minimal serializer (collects the 72 limbs; no formatting, no data-dependent branches) and
//! deserializer (feeds them back; blstrs rejects non-canonical limbs). The round trip is
//! checked by tests. It is used for:
//!
//! * the constant-time double exponentiation `T1^{s1} · T2^{s2}` of encapsulation, run on
//!   `MillerLoopResult` values holding the (public) `T_t`;
//! * the canonical 576-byte encoding of the KEM mask fed to HKDF (from either type).

use blstrs::{Gt, MillerLoopResult, Scalar};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{self, Impossible, Serialize, SerializeStruct, SerializeTuple, Serializer};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

/// Number of u64 limbs in an Fp12 element (12 coordinates × 6 limbs).
pub(crate) const LIMBS: usize = 72;

/// Length of the uncompressed canonical encoding (12 × 48 bytes).
pub(crate) const UNCOMPRESSED_LEN: usize = 8 * LIMBS;

#[derive(Debug)]
pub(crate) struct BridgeError;

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unexpected Fp12 representation")
    }
}

impl std::error::Error for BridgeError {}

impl ser::Error for BridgeError {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        BridgeError
    }
}

impl de::Error for BridgeError {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        BridgeError
    }
}

/// Collects the limbs of a serialized Fp12.
struct LimbSink {
    limbs: Zeroizing<Vec<u64>>,
}

macro_rules! reject {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<Self::Ok, Self::Error> { Err(BridgeError) })*
    };
}

impl Serializer for &mut LimbSink {
    type Ok = ();
    type Error = BridgeError;
    type SerializeSeq = Impossible<(), BridgeError>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Impossible<(), BridgeError>;
    type SerializeTupleVariant = Impossible<(), BridgeError>;
    type SerializeMap = Impossible<(), BridgeError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), BridgeError>;

    fn serialize_u64(self, v: u64) -> Result<(), BridgeError> {
        self.limbs.push(v);
        Ok(())
    }

    reject!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), BridgeError> {
        Err(BridgeError)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<(), BridgeError> {
        Err(BridgeError)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), BridgeError> {
        Err(BridgeError)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, BridgeError> {
        Err(BridgeError)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, BridgeError> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, BridgeError> {
        Err(BridgeError)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, BridgeError> {
        Err(BridgeError)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, BridgeError> {
        Err(BridgeError)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, BridgeError> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, BridgeError> {
        Err(BridgeError)
    }
}

impl SerializeTuple for &mut LimbSink {
    type Ok = ();
    type Error = BridgeError;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), BridgeError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), BridgeError> {
        Ok(())
    }
}

impl SerializeStruct for &mut LimbSink {
    type Ok = ();
    type Error = BridgeError;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Result<(), BridgeError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), BridgeError> {
        Ok(())
    }
}

/// Feeds limbs back to a serde deserializer.
struct LimbSource<'a> {
    limbs: &'a [u64],
}

struct Elements<'s, 'a> {
    source: &'s mut LimbSource<'a>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, '_> {
    type Error = BridgeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, BridgeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.source).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> Deserializer<'de> for &mut LimbSource<'_> {
    type Error = BridgeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, BridgeError> {
        Err(BridgeError)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, BridgeError> {
        let (first, rest) = self.limbs.split_first().ok_or(BridgeError)?;
        self.limbs = rest;
        visitor.visit_u64(*first)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, BridgeError> {
        visitor.visit_seq(Elements {
            source: self,
            left: len,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BridgeError> {
        visitor.visit_seq(Elements {
            source: self,
            left: fields.len(),
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple_struct map enum identifier ignored_any
    }
}

/// The 72 limbs of a G_T element or Miller loop value.
pub(crate) fn limbs<T: Serialize>(value: &T) -> Option<Zeroizing<Vec<u64>>> {
    let mut sink = LimbSink {
        limbs: Zeroizing::new(Vec::with_capacity(LIMBS)),
    };
    value.serialize(&mut sink).ok()?;
    (sink.limbs.len() == LIMBS).then_some(sink.limbs)
}

/// Rebuilds a value from 72 limbs (`None` if any coordinate is not canonical).
fn from_limbs<'de, T: serde::Deserialize<'de>>(limbs: &[u64]) -> Option<T> {
    let mut source = LimbSource { limbs };
    let value = T::deserialize(&mut source).ok()?;
    source.limbs.is_empty().then_some(value)
}

/// The canonical uncompressed encoding: the 72 limbs as little-endian bytes.
pub(crate) fn uncompressed<T: Serialize>(value: &T) -> Option<Zeroizing<[u8; UNCOMPRESSED_LEN]>> {
    let limbs = limbs(value)?;
    let mut out = Zeroizing::new([0u8; UNCOMPRESSED_LEN]);
    for (chunk, limb) in out.chunks_exact_mut(8).zip(limbs.iter()) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    Some(out)
}

/// Whether the `c1` half (limbs 36..72) is zero, i.e. the element lies in Fp6.
pub(crate) fn c1_is_zero(value: &Gt) -> bool {
    limbs(value).is_none_or(|l| l.iter().skip(LIMBS / 2).all(|&x| x == 0))
}

/// A G_T element held as a `MillerLoopResult`, for constant-time arithmetic.
pub(crate) fn to_miller(value: &Gt) -> Option<MillerLoopResult> {
    from_limbs(&limbs(value)?)
}

/// Precomputed table `[1, T1, T2, T1·T2]` for [`double_exp_ct`].
#[derive(Clone)]
pub(crate) struct ExpTable([MillerLoopResult; 4]);

impl ExpTable {
    pub(crate) fn new(t1: &Gt, t2: &Gt) -> Option<ExpTable> {
        let u1 = to_miller(t1)?;
        let u2 = to_miller(t2)?;
        Some(ExpTable([MillerLoopResult::default(), u1, u2, u1 + u2]))
    }
}

/// `T1^{e1} · T2^{e2}` (multiplicative notation; blstrs writes the product as `+`), in constant
/// time with respect to the exponents: per bit, one squaring, one constant-time table scan and
/// one multiplication. Returns the canonical uncompressed encoding of the result.
pub(crate) fn double_exp_ct(table: &ExpTable, e1: &Scalar, e2: &Scalar) -> Option<Zeroizing<[u8; UNCOMPRESSED_LEN]>> {
    let bits1 = Zeroizing::new(e1.to_bytes_le());
    let bits2 = Zeroizing::new(e2.to_bytes_le());
    let mut acc = MillerLoopResult::default();
    // Scalars are below 2^255: start at bit 254.
    for bit in (0..255usize).rev() {
        acc = acc + acc;
        let shift = bit % 8;
        let b1 = (bits1.get(bit / 8).copied().unwrap_or(0) >> shift) & 1;
        let b2 = (bits2.get(bit / 8).copied().unwrap_or(0) >> shift) & 1;
        let index = b1 | (b2 << 1);
        let mut selected = MillerLoopResult::default();
        for (k, entry) in (0u8..).zip(table.0.iter()) {
            selected = MillerLoopResult::conditional_select(&selected, entry, index.ct_eq(&k));
        }
        acc += selected;
    }
    uncompressed(&acc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ff::Field;
    use group::Group;
    use rand_core::OsRng;

    #[test]
    fn round_trip_through_miller_loop_result() {
        let x = Gt::generator() * Scalar::random(OsRng);
        let m = to_miller(&x).unwrap();
        assert_eq!(limbs(&m).unwrap(), limbs(&x).unwrap());
        let back: Gt = from_limbs(&limbs(&m).unwrap()).unwrap();
        assert_eq!(back, x);
        assert!(!c1_is_zero(&x));
        assert!(c1_is_zero(&Gt::identity()));
        // Non-canonical limbs (all ones) are rejected by blstrs.
        assert!(from_limbs::<Gt>(&[u64::MAX; LIMBS]).is_none());
        assert!(from_limbs::<Gt>(&[0; LIMBS - 1]).is_none());
    }

    #[test]
    fn ct_double_exponentiation_matches_naive() {
        let t1 = Gt::generator() * Scalar::random(OsRng);
        let t2 = Gt::generator() * Scalar::random(OsRng);
        let table = ExpTable::new(&t1, &t2).unwrap();
        for (e1, e2) in [
            (Scalar::random(OsRng), Scalar::random(OsRng)),
            (Scalar::ZERO, Scalar::ZERO),
            (-Scalar::ONE, Scalar::ONE),
        ] {
            let expected = uncompressed(&(t1 * e1 + t2 * e2)).unwrap();
            assert_eq!(*double_exp_ct(&table, &e1, &e2).unwrap(), *expected);
        }
    }
}
