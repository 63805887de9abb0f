//! Identifiers: key ids and message ids are UUIDv7 strings in canonical form (lowercase,
//! hyphenated, 36 characters), so a given id has exactly one byte representation wherever it is
//! bound (signatures, associated data). User ids are opaque non-empty strings of bounded length.

use uuid::Uuid;

use crate::CryptoError;

/// Longest user id accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;

/// A fresh UUIDv7 in canonical form, for key ids and message ids.
pub fn new_id() -> String {
    Uuid::now_v7().hyphenated().to_string()
}

/// Checks that `id` is a UUIDv7 in canonical form.
pub(crate) fn check_uuid_v7(id: &str, what: &'static str) -> Result<(), CryptoError> {
    if id.is_empty() {
        return Err(CryptoError::InvalidId {
            what,
            reason: "missing",
        });
    }
    let parsed = Uuid::try_parse(id).map_err(|_| CryptoError::InvalidId {
        what,
        reason: "not a UUID",
    })?;
    // Version 7 and the RFC 9562 (formerly 4122) variant, as docs/protocol.md §2 says.
    if parsed.get_version_num() != 7 || parsed.get_variant() != uuid::Variant::RFC4122 {
        return Err(CryptoError::InvalidId {
            what,
            reason: "not a UUIDv7",
        });
    }
    let mut canonical = [0u8; uuid::fmt::Hyphenated::LENGTH];
    if parsed.hyphenated().encode_lower(&mut canonical).as_bytes() != id.as_bytes() {
        return Err(CryptoError::InvalidId {
            what,
            reason: "not in canonical form (lowercase, hyphenated)",
        });
    }
    Ok(())
}

/// Checks that a user id is non-empty and at most [`MAX_USER_ID_LEN`] bytes.
pub(crate) fn check_user_id(id: &str, what: &'static str) -> Result<(), CryptoError> {
    if id.is_empty() {
        return Err(CryptoError::InvalidId {
            what,
            reason: "missing",
        });
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(CryptoError::InvalidId {
            what,
            reason: "longer than 256 bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_canonical_uuid_v7_ids_pass() {
        let id = new_id();
        check_uuid_v7(&id, "id").unwrap();
        assert!(check_uuid_v7(&id.to_uppercase(), "id").is_err());
        assert!(check_uuid_v7(&id.replace('-', ""), "id").is_err());
        assert!(check_uuid_v7(&format!("{{{id}}}"), "id").is_err());
        assert!(check_uuid_v7("", "id").is_err());
        assert!(check_uuid_v7(&Uuid::nil().to_string(), "id").is_err());
        assert!(check_uuid_v7("6ba7b810-9dad-41d1-80b4-00c04fd430c8", "id").is_err());
    }
}
