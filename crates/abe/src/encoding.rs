//! The byte layouts: a small checked reader and writer.
//!
//! Every object starts with [`FORMAT_VERSION`] and a type byte; integers are big-endian; G1
//! and G2 elements are the 48- and 96-byte compressed encodings of the Zcash/IETF BLS12-381
//! serialization; G_T elements are the 288-byte torus compression of blstrs; scalars are 32
//! bytes big-endian, below the group order.

use blstrs::{Compress, G1Affine, G2Affine, Gt, Scalar};
use group::Group;
use group::prime::PrimeCurveAffine;

use crate::error::{AbeError, Malformed, Object};

/// The serialization format version written and read by this build.
pub const FORMAT_VERSION: u8 = 1;

pub(crate) const TYPE_PUBLIC_PARAMS: u8 = 0x01;
pub(crate) const TYPE_MASTER_KEY: u8 = 0x02;
pub(crate) const TYPE_USER_KEY: u8 = 0x03;
pub(crate) const TYPE_CIPHERTEXT: u8 = 0x04;
pub(crate) const TYPE_SEALED: u8 = 0x05;

pub(crate) const G1_LEN: usize = 48;
pub(crate) const G2_LEN: usize = 96;
pub(crate) const GT_LEN: usize = 288;
pub(crate) const SCALAR_LEN: usize = 32;

pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn new(object_type: u8, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity + 2);
        out.push(FORMAT_VERSION);
        out.push(object_type);
        Writer(out)
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn g1(&mut self, p: &G1Affine) {
        self.0.extend_from_slice(&p.to_compressed());
    }

    pub(crate) fn g2(&mut self, p: &G2Affine) {
        self.0.extend_from_slice(&p.to_compressed());
    }

    pub(crate) fn scalar(&mut self, s: &Scalar) {
        self.0.extend_from_slice(&s.to_bytes_be());
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    object: Object,
}

impl<'a> Reader<'a> {
    /// Checks the version and type bytes.
    pub(crate) fn new(buf: &'a [u8], object: Object, object_type: u8) -> Result<Self, AbeError> {
        let mut reader = Reader { buf, pos: 0, object };
        let version = reader.u8()?;
        if version != FORMAT_VERSION {
            return Err(reader.malformed(Malformed::UnsupportedVersion(version)));
        }
        let found = reader.u8()?;
        if found != object_type {
            return Err(reader.malformed(Malformed::WrongObjectType(found)));
        }
        Ok(reader)
    }

    pub(crate) fn malformed(&self, reason: Malformed) -> AbeError {
        AbeError::Malformed {
            object: self.object,
            reason,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], AbeError> {
        let end = self.pos.checked_add(n).ok_or(self.malformed(Malformed::Truncated))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(self.malformed(Malformed::Truncated))?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], AbeError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.malformed(Malformed::Truncated))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, AbeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, AbeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, AbeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// A non-identity G1 element: on the curve, in the prime-order subgroup.
    pub(crate) fn g1(&mut self) -> Result<G1Affine, AbeError> {
        let bytes = self.array::<G1_LEN>()?;
        let point: Option<G1Affine> = G1Affine::from_compressed(&bytes).into();
        let point = point.ok_or(self.malformed(Malformed::InvalidGroupElement))?;
        if bool::from(point.is_identity()) {
            return Err(self.malformed(Malformed::IdentityElement));
        }
        Ok(point)
    }

    /// A non-identity G2 element: on the curve, in the prime-order subgroup.
    pub(crate) fn g2(&mut self) -> Result<G2Affine, AbeError> {
        let bytes = self.array::<G2_LEN>()?;
        let point: Option<G2Affine> = G2Affine::from_compressed(&bytes).into();
        let point = point.ok_or(self.malformed(Malformed::InvalidGroupElement))?;
        if bool::from(point.is_identity()) {
            return Err(self.malformed(Malformed::IdentityElement));
        }
        Ok(point)
    }

    /// A non-identity G_T element in the order-r subgroup, with its (canonical) encoding.
    pub(crate) fn gt(&mut self) -> Result<(Gt, [u8; GT_LEN]), AbeError> {
        let bytes = self.array::<GT_LEN>()?;
        // read_compressed checks each coordinate is canonical and the result is in G_T.
        let element =
            Gt::read_compressed(bytes.as_slice()).map_err(|_| self.malformed(Malformed::InvalidGroupElement))?;
        if bool::from(element.is_identity()) {
            return Err(self.malformed(Malformed::IdentityElement));
        }
        // Insist on the canonical encoding (re-encoding must give the same bytes).
        if gt_to_bytes(&element) != Some(bytes) {
            return Err(self.malformed(Malformed::InvalidGroupElement));
        }
        Ok((element, bytes))
    }

    /// A canonical, non-zero scalar.
    pub(crate) fn nonzero_scalar(&mut self) -> Result<Scalar, AbeError> {
        let bytes = self.array::<SCALAR_LEN>()?;
        let scalar: Option<Scalar> = Scalar::from_bytes_be(&bytes).into();
        match scalar {
            Some(s) if !bool::from(ff::Field::is_zero(&s)) => Ok(s),
            _ => Err(self.malformed(Malformed::InvalidScalar)),
        }
    }

    pub(crate) fn finish(self) -> Result<(), AbeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.malformed(Malformed::TrailingBytes))
        }
    }
}

/// The canonical 288-byte encoding of a non-identity G_T element (`None` for the identity,
/// which has no torus compression).
pub(crate) fn gt_to_bytes(element: &Gt) -> Option<[u8; GT_LEN]> {
    if bool::from(element.is_identity()) {
        return None;
    }
    // Torus compression divides by the c1 half of the Fp12 element; it is zero only for the
    // identity within G_T, but check rather than trust that (blstrs would panic on it).
    if crate::fp12::c1_is_zero(element) {
        return None;
    }
    let mut out = Vec::with_capacity(GT_LEN);
    element.write_compressed(&mut out).ok()?;
    <[u8; GT_LEN]>::try_from(out).ok()
}
