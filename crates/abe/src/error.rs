//! Errors.

use std::fmt;

use crate::policy::PolicyError;

/// Everything that can go wrong in this crate. No input makes it panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AbeError {
    /// The policy text is invalid.
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    /// An attribute given to [`keygen`](crate::keygen) is invalid.
    #[error("invalid attribute {attribute:?}: {error}")]
    InvalidAttribute {
        /// The attribute (shortened to 160 characters).
        attribute: String,
        /// Why (positions are byte offsets into the attribute).
        error: PolicyError,
    },
    /// A user key must hold between 1 and [`MAX_KEY_ATTRIBUTES`](crate::MAX_KEY_ATTRIBUTES)
    /// distinct attributes.
    #[error("a user key holds between 1 and {limit} distinct attributes, not {count}")]
    KeyAttributeCount {
        /// Distinct attributes requested.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The public parameters passed to [`keygen`](crate::keygen) are not the master key's.
    #[error("the public parameters do not belong to this master key")]
    ParamsMismatch,
    /// The key's attributes do not satisfy the ciphertext's policy.
    #[error("the key's attributes do not satisfy the ciphertext policy")]
    PolicyNotSatisfied,
    /// Serialized input is malformed.
    #[error("malformed {object}: {reason}")]
    Malformed {
        /// What was being read.
        object: Object,
        /// What is wrong with it.
        reason: Malformed,
    },
    /// AES-256-GCM authentication failed: a key whose attributes satisfy the policy on paper
    /// but that does not open it (e.g. forged or from another authority), the wrong associated
    /// data, or a tampered envelope.
    #[error("decryption failed: wrong key or associated data, or a tampered envelope")]
    DecryptionFailed,
}

/// The serialized objects of this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// [`PublicParams`](crate::PublicParams).
    PublicParams,
    /// [`MasterKey`](crate::MasterKey).
    MasterKey,
    /// [`UserKey`](crate::UserKey).
    UserKey,
    /// [`Ciphertext`](crate::Ciphertext).
    Ciphertext,
    /// The output of [`seal`](crate::seal).
    SealedEnvelope,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::PublicParams => "public parameters",
            Object::MasterKey => "master key",
            Object::UserKey => "user key",
            Object::Ciphertext => "ciphertext",
            Object::SealedEnvelope => "sealed envelope",
        })
    }
}

/// Why serialized input was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The version byte is not one this build reads.
    UnsupportedVersion(u8),
    /// The type byte names another object (e.g. a key passed as a ciphertext).
    WrongObjectType(u8),
    /// The input ends early.
    Truncated,
    /// Bytes are left after the object.
    TrailingBytes,
    /// A group element is not the canonical compressed encoding of a point on the curve in the
    /// prime-order subgroup (or, for G_T, of an element of the order-r subgroup).
    InvalidGroupElement,
    /// A group element is the identity, which the scheme never produces.
    IdentityElement,
    /// A scalar is not canonical (not below the group order) or is zero where it must not be.
    InvalidScalar,
    /// An attribute name is invalid.
    InvalidAttribute,
    /// Attributes are not in strictly increasing byte order (unsorted or duplicated).
    NonCanonicalAttributes,
    /// Too many or too few attributes.
    AttributeCount,
    /// A text field is not UTF-8.
    NotUtf8,
    /// The embedded policy does not parse.
    InvalidPolicy(PolicyError),
    /// The embedded policy is not in canonical form.
    NonCanonicalPolicy,
    /// The number of ciphertext rows differs from the policy's attribute occurrences.
    RowCountMismatch {
        /// Rows the policy needs.
        expected: usize,
        /// Rows present.
        found: usize,
    },
    /// A length field is out of range.
    InvalidLength,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Malformed::WrongObjectType(t) => write!(f, "wrong object type byte {t:#04x}"),
            Malformed::Truncated => f.write_str("truncated"),
            Malformed::TrailingBytes => f.write_str("trailing bytes"),
            Malformed::InvalidGroupElement => {
                f.write_str("a group element is not a valid compressed point in the prime-order subgroup")
            }
            Malformed::IdentityElement => f.write_str("a group element is the identity"),
            Malformed::InvalidScalar => f.write_str("a scalar is out of range"),
            Malformed::InvalidAttribute => f.write_str("an attribute name is invalid"),
            Malformed::NonCanonicalAttributes => f.write_str("attributes are not sorted and distinct"),
            Malformed::AttributeCount => f.write_str("attribute count out of range"),
            Malformed::NotUtf8 => f.write_str("a text field is not UTF-8"),
            Malformed::InvalidPolicy(e) => write!(f, "invalid policy: {e}"),
            Malformed::NonCanonicalPolicy => f.write_str("policy is not in canonical form"),
            Malformed::RowCountMismatch { expected, found } => {
                write!(f, "policy needs {expected} rows, found {found}")
            }
            Malformed::InvalidLength => f.write_str("a length field is out of range"),
        }
    }
}
