//! Identifiers: caremesh ids are UUIDv7 in canonical form (DESIGN.md §5).

use crate::Error;

/// Checks that `id` is a canonical (lowercase, hyphenated) UUIDv7; `what` names the field in the
/// error.
pub fn check_uuid_v7(id: &str, what: &str) -> Result<(), Error> {
    let valid = uuid::Uuid::try_parse(id)
        .ok()
        .filter(|parsed| parsed.get_version_num() == 7 && parsed.get_variant() == uuid::Variant::RFC4122)
        .is_some_and(|parsed| parsed.hyphenated().to_string() == id);
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "INVALID_ID",
            format!("{what} must be a UUIDv7 (RFC 9562 variant) in canonical form (lowercase, hyphenated), got {id:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_uuid_v7_passes() {
        let id = uuid::Uuid::now_v7().to_string();
        assert!(check_uuid_v7(&id, "record_id").is_ok());
        assert!(check_uuid_v7(&id.to_uppercase(), "record_id").is_err());
        assert!(check_uuid_v7(&id.replace('-', ""), "record_id").is_err());
        assert!(check_uuid_v7("550e8400-e29b-41d4-a716-446655440000", "record_id").is_err()); // v4
        let mut other_variant = id.clone().into_bytes();
        other_variant[19] = b'c'; // version 7, Microsoft variant
        assert!(check_uuid_v7(std::str::from_utf8(&other_variant).unwrap(), "record_id").is_err());
        assert!(check_uuid_v7("", "record_id").is_err());
    }
}
