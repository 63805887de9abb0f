//! Policy checks with reasons clients can act on: the parser's verdict as a stable reason code,
//! a position and what was expected, and the rule every record policy follows (the patient and
//! emergency access can each open it on their own, DESIGN.md §4). abe-authority-svc answers
//! `ValidatePolicy` with it; records-svc and messaging-svc refuse bad policies with it.

use crate::policy::{Policy, PolicyErrorKind};

/// The verdict on a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCheck {
    pub valid: bool,
    pub canonical: String,
    pub attributes: Vec<String>,
    pub depth: u32,
    pub error: Option<PolicyProblem>,
}

/// Why a policy was refused: a stable reason, where, what was expected, and a sentence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyProblem {
    pub reason: String,
    pub position: u32,
    pub expected: String,
    pub message: String,
}

/// Parses `text` with caremesh-abe's parser; with `record_patient_id`, also requires the clauses
/// every record policy must have: the patient (`patient:<id>`) and emergency access
/// (`emergency:<id>`) must each be able to open it on their own.
pub fn check_policy(text: &str, record_patient_id: Option<&str>) -> PolicyCheck {
    let policy = match Policy::parse(text) {
        Ok(policy) => policy,
        Err(error) => {
            let (reason, expected) = match &error.kind {
                PolicyErrorKind::Unexpected { expected, .. } => ("UNEXPECTED_TOKEN", expected.to_string()),
                PolicyErrorKind::UnquotedAttribute { .. } => ("UNQUOTED_ATTRIBUTE", "a quoted attribute".to_owned()),
                PolicyErrorKind::UnterminatedAttribute => ("UNTERMINATED_ATTRIBUTE", "a closing quote".to_owned()),
                PolicyErrorKind::MixedOperators => ("MIXED_OPERATORS", "parentheses around each group".to_owned()),
                PolicyErrorKind::UnclosedParenthesis => ("UNCLOSED_PARENTHESIS", "')'".to_owned()),
                PolicyErrorKind::UnmatchedClosingParenthesis => ("UNMATCHED_PARENTHESIS", String::new()),
                PolicyErrorKind::PolicyTooLong { .. } | PolicyErrorKind::CanonicalFormTooLong { .. } => {
                    ("POLICY_TOO_LONG", String::new())
                }
                PolicyErrorKind::NestingTooDeep { .. } => ("POLICY_TOO_DEEP", String::new()),
                PolicyErrorKind::TooManyAttributes { .. } => ("TOO_MANY_ATTRIBUTES", String::new()),
                PolicyErrorKind::AttributeTooLong { .. } => ("ATTRIBUTE_TOO_LONG", String::new()),
                _ => (
                    "INVALID_ATTRIBUTE",
                    "namespace:value, e.g. \"dept:cardiology\"".to_owned(),
                ),
            };
            return PolicyCheck {
                error: Some(PolicyProblem {
                    reason: reason.to_owned(),
                    position: u32::try_from(error.position).unwrap_or(u32::MAX),
                    expected,
                    message: error.to_string(),
                }),
                ..PolicyCheck::default()
            };
        }
    };
    let canonical = policy.canonical();
    let attributes: Vec<String> = policy.attributes().into_iter().map(str::to_owned).collect();
    let depth = nesting_depth(&canonical);
    if let Some(patient) = record_patient_id {
        for (clause, reason) in [
            (format!("patient:{patient}"), "MISSING_PATIENT_CLAUSE"),
            (format!("emergency:{patient}"), "MISSING_EMERGENCY_CLAUSE"),
        ] {
            if !policy.is_satisfied_by(&[clause.as_str()]) {
                return PolicyCheck {
                    canonical,
                    attributes,
                    depth,
                    error: Some(PolicyProblem {
                        reason: reason.to_owned(),
                        position: 0,
                        expected: format!("(...) or \"{clause}\""),
                        message: format!(
                            "a record policy must let \"{clause}\" open it on its own: add `or \"{clause}\"` at the top level"
                        ),
                    }),
                    valid: false,
                };
            }
        }
    }
    PolicyCheck {
        valid: true,
        canonical,
        attributes,
        depth,
        error: None,
    }
}

/// Parenthesis depth of a canonical policy (attributes are quoted and never contain parentheses).
fn nesting_depth(canonical: &str) -> u32 {
    let (mut depth, mut deepest, mut quoted) = (0u32, 0u32, false);
    for character in canonical.chars() {
        match character {
            '"' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn policies_are_checked_with_positions_and_mandatory_clauses() {
        let good = check_policy(r#""role:doctor" and ("dept:cardiology" or "dept:emergency")"#, None);
        assert!(good.valid, "{good:?}");
        assert_eq!(good.depth, 1);
        let flat = check_policy(r#""a:1" and "b:2" and "c:3""#, None);
        assert!(flat.valid);
        let garbage = check_policy("role:doctor and", None);
        assert!(!garbage.valid);
        let problem = garbage.error.unwrap();
        assert_eq!(problem.reason, "UNQUOTED_ATTRIBUTE");
        assert!(problem.message.contains("byte"), "{}", problem.message);
        let deep = check_policy(&format!("{}\"a:1\"{}", "(".repeat(40), ")".repeat(40)), None);
        assert_eq!(deep.error.unwrap().reason, "POLICY_TOO_DEEP");
        let record = check_policy(r#""role:doctor" or "patient:p1""#, Some("p1"));
        assert_eq!(record.error.unwrap().reason, "MISSING_EMERGENCY_CLAUSE");
        let record = check_policy(r#""role:doctor" or "patient:p1" or "emergency:p1""#, Some("p1"));
        assert!(record.valid, "{record:?}");
    }
}
