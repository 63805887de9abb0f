//! User attributes: namespaced strings (`dept:cardiology`), validated, with the implicit ones
//! auth-svc derives (`role:<role>`, `patient:<id>`). Admins assign only the assignable
//! namespaces; the derived ones and `emergency:` are never taken from a request.

use caremesh_runtime::Error;

/// Namespaces an admin may assign.
pub const ASSIGNABLE_NAMESPACES: &[&str] = &["dept", "org", "specialty", "ward", "team"];
/// Namespaces only auth-svc sets.
pub const DERIVED_NAMESPACES: &[&str] = &["role", "patient", "emergency"];
pub const MAX_ATTRIBUTE_LEN: usize = 128;
pub const MAX_ATTRIBUTES: usize = 32;

/// Validates admin-assigned attributes; returns them sorted and deduplicated.
pub fn validate_assigned(attributes: &[String]) -> Result<Vec<String>, Error> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::invalid_argument(
            "TOO_MANY_ATTRIBUTES",
            format!("assign at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    let mut valid = Vec::with_capacity(attributes.len());
    for attribute in attributes {
        let invalid = |why: String| {
            Err(Error::invalid_argument(
                "INVALID_ATTRIBUTE",
                format!("attribute {attribute:?}: {why}"),
            ))
        };
        let Some((namespace, value)) = attribute.split_once(':') else {
            return invalid("expected namespace:value, e.g. dept:cardiology".to_owned());
        };
        if DERIVED_NAMESPACES.contains(&namespace) {
            return invalid(format!("the {namespace}: namespace is set by auth-svc, not assigned"));
        }
        if !ASSIGNABLE_NAMESPACES.contains(&namespace) {
            return invalid(format!(
                "unknown namespace; use one of {}",
                ASSIGNABLE_NAMESPACES.join(", ")
            ));
        }
        if attribute.len() > MAX_ATTRIBUTE_LEN {
            return invalid(format!("longer than {MAX_ATTRIBUTE_LEN} characters"));
        }
        let value_ok = !value.is_empty()
            && value
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_' | b'.'));
        if !value_ok {
            return invalid("the value may use lower-case letters, digits, '-', '_' and '.'".to_owned());
        }
        valid.push(attribute.clone());
    }
    valid.sort();
    valid.dedup();
    Ok(valid)
}

/// The attributes auth-svc derives for a user.
pub fn derived(user_id: &str, role: &str) -> Vec<String> {
    let mut derived = vec![format!("role:{role}")];
    if role == "patient" {
        derived.push(format!("patient:{user_id}"));
    }
    derived
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_attributes_are_validated_and_normalized() {
        let valid =
            validate_assigned(&["org:st-mary".into(), "dept:cardiology".into(), "dept:cardiology".into()]).unwrap();
        assert_eq!(valid, vec!["dept:cardiology".to_owned(), "org:st-mary".to_owned()]);
        for bad in [
            "cardiology",
            "role:admin",
            "patient:x",
            "emergency:p1",
            "color:blue",
            "dept:Cardiology",
            "dept:",
        ] {
            let error = validate_assigned(&[bad.to_owned()]).unwrap_err();
            assert_eq!(error.reason(), "INVALID_ATTRIBUTE", "{bad}");
        }
    }

    #[test]
    fn derived_attributes_name_role_and_patient() {
        assert_eq!(derived("u1", "patient"), vec!["role:patient", "patient:u1"]);
        assert_eq!(derived("u2", "doctor"), vec!["role:doctor"]);
    }
}
