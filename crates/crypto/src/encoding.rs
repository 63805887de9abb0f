//! The one unambiguous byte encoding used for everything this crate signs, authenticates or
//! hashes: a sequence of fields, each a 4-byte big-endian length followed by that many bytes
//! (`lp(x) = u32be(len(x)) || x`), and fixed-width big-endian integers where noted. Every encoding
//! starts with a field naming its purpose and version, so no two purposes share a byte string.

use crate::CryptoError;

/// Builds a length-prefixed encoding.
pub(crate) struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    /// Starts an encoding whose first field is the purpose label `label`.
    pub(crate) fn new(label: &str) -> Result<Self, CryptoError> {
        let mut encoder = Self {
            out: Vec::with_capacity(256),
        };
        encoder.field(label.as_bytes())?;
        Ok(encoder)
    }

    /// Starts an encoding without a label: only for a field nested inside a labelled encoding.
    pub(crate) fn new_unlabelled() -> Self {
        Self {
            out: Vec::with_capacity(64),
        }
    }

    /// Appends `lp(bytes)`.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> Result<&mut Self, CryptoError> {
        let len = u32::try_from(bytes.len()).map_err(|_| CryptoError::Encoding("a field is longer than 4 GiB"))?;
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(bytes);
        Ok(self)
    }

    /// Appends a 4-byte big-endian integer (fixed width, no length prefix).
    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.out.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends fixed-width bytes (e.g. a big-endian integer) without a length prefix.
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// Appends `bytes` as they are, without a length prefix: only for a final field.
    pub(crate) fn finish_with_raw(mut self, bytes: &[u8]) -> Vec<u8> {
        self.out.extend_from_slice(bytes);
        self.out
    }

    /// The encoding.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Reads a length-prefixed encoding back, field by field. Every read is bounds-checked and
/// answers `None` past the end.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next 4-byte big-endian integer.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(u32::from_be_bytes(*head))
    }

    /// The next 8-byte big-endian integer.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some(u64::from_be_bytes(*head))
    }

    /// The next `lp(x)` field's `x`.
    pub(crate) fn field(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(field)
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_are_length_prefixed_so_boundaries_cannot_shift() {
        let mut a = Encoder::new("t").unwrap();
        a.field(b"ab").unwrap().field(b"c").unwrap();
        let mut b = Encoder::new("t").unwrap();
        b.field(b"a").unwrap().field(b"bc").unwrap();
        let (a, b) = (a.finish(), b.finish());
        assert_ne!(a, b);
        assert_eq!(a, [0, 0, 0, 1, b't', 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c']);
    }
}
