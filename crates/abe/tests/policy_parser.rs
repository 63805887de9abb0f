//! The policy language: error positions and messages, limits, precedence, canonical form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use caremesh_abe::Policy;
use caremesh_abe::policy::{
    Expected, Found, MAX_ATTRIBUTE_LEN, MAX_NESTING_DEPTH, MAX_POLICY_ATTRIBUTES, MAX_POLICY_LEN, Operator,
    PolicyErrorKind,
};

fn err(text: &str) -> (usize, PolicyErrorKind, String) {
    let e = Policy::parse(text).expect_err(text);
    let message = e.to_string();
    (e.position, e.kind, message)
}

#[test]
fn flat_n_ary_and_or() {
    let p = Policy::parse(r#""a:x" and "b:y" and "c:z""#).unwrap();
    assert_eq!(p.canonical(), r#""a:x" and "b:y" and "c:z""#);
    assert_eq!(p.attributes(), ["a:x", "b:y", "c:z"]);
    assert!(p.is_satisfied_by(&["c:z", "a:x", "b:y"]));
    assert!(!p.is_satisfied_by(&["a:x", "b:y"]));

    let p = Policy::parse(r#""a:x" or "b:y" or "c:z" or "d:w""#).unwrap();
    assert!(p.is_satisfied_by(&["d:w"]));
    assert!(!p.is_satisfied_by(&["e:v"]));
    assert!(!p.is_satisfied_by::<&str>(&[]));
}

#[test]
fn design_example() {
    let p = Policy::parse(r#""role:doctor" and ("dept:cardiology" or "dept:emergency")"#).unwrap();
    assert!(p.is_satisfied_by(&["role:doctor", "dept:emergency"]));
    assert!(!p.is_satisfied_by(&["role:nurse", "dept:emergency"]));
    assert!(!p.is_satisfied_by(&["role:doctor", "dept:oncology"]));
    assert_eq!(
        p.to_string(),
        r#""role:doctor" and ("dept:cardiology" or "dept:emergency")"#
    );
}

#[test]
fn mixing_and_or_requires_parentheses() {
    let (pos, kind, msg) = err(r#""a:x" and "b:y" or "c:z""#);
    assert_eq!((pos, kind), (16, PolicyErrorKind::MixedOperators));
    assert!(msg.contains("add parentheses"), "{msg}");
    assert_eq!(err(r#""a:x" or "b:y" and "c:z""#).0, 15);
    // Either grouping is fine once written out.
    let left = Policy::parse(r#"("a:x" and "b:y") or "c:z""#).unwrap();
    let right = Policy::parse(r#""a:x" and ("b:y" or "c:z")"#).unwrap();
    assert!(left.is_satisfied_by(&["c:z"]));
    assert!(!right.is_satisfied_by(&["c:z"]));
    // Inside parentheses the rule holds too.
    assert_eq!(
        err(r#""a:x" and ("b:y" or "c:z" and "d:w")"#).1,
        PolicyErrorKind::MixedOperators
    );
}

#[test]
fn canonical_form_flattens_and_drops_redundant_parentheses() {
    let p = Policy::parse(" ( \"a:x\"AND(\"b:y\" and \"c:z\") )\tor ((\"d:w\"))\n").unwrap();
    assert_eq!(p.canonical(), r#"("a:x" and "b:y" and "c:z") or "d:w""#);
    assert_eq!(Policy::parse(&p.canonical()).unwrap(), p);
    let single = Policy::parse(r#"((("role:doctor")))"#).unwrap();
    assert_eq!(single.canonical(), r#""role:doctor""#);
    // Keywords are case-insensitive, printed in lowercase.
    assert_eq!(
        Policy::parse(r#""a:x" OR "b:y""#).unwrap().canonical(),
        r#""a:x" or "b:y""#
    );
}

#[test]
fn duplicated_attributes_are_allowed() {
    let p = Policy::parse(r#"("a:x" and "b:y") or ("a:x" and "c:z")"#).unwrap();
    assert_eq!(p.attributes(), ["a:x", "b:y", "c:z"]);
    assert_eq!(p.leaves(), ["a:x", "b:y", "a:x", "c:z"]);
    assert_eq!(p.leaf_count(), 4);
    assert!(p.is_satisfied_by(&["a:x", "c:z"]));
    assert!(!p.is_satisfied_by(&["b:y", "c:z"]));
}

#[test]
fn garbage() {
    let (pos, kind, msg) = err("");
    assert_eq!(pos, 0);
    assert_eq!(
        kind,
        PolicyErrorKind::Unexpected {
            expected: Expected::Operand,
            found: Found::EndOfInput
        }
    );
    assert_eq!(
        msg,
        "expected a quoted attribute or '(' at byte 0, found the end of the policy"
    );

    let (pos, kind, msg) = err("@#!");
    assert_eq!(pos, 0);
    assert_eq!(
        kind,
        PolicyErrorKind::Unexpected {
            expected: Expected::Operand,
            found: Found::Character('@')
        }
    );
    assert_eq!(msg, "expected a quoted attribute or '(' at byte 0, found '@'");

    let (pos, kind, msg) = err(r#""role:doctor" and "#);
    assert_eq!(
        (pos, &kind),
        (
            18,
            &PolicyErrorKind::Unexpected {
                expected: Expected::Operand,
                found: Found::EndOfInput
            }
        )
    );
    assert_eq!(
        msg,
        "expected a quoted attribute or '(' at byte 18, found the end of the policy"
    );

    let (pos, _, msg) = err(r#""role:doctor" and and"#);
    assert_eq!(pos, 18);
    assert_eq!(msg, "expected a quoted attribute or '(' at byte 18, found 'and'");

    let (pos, _, msg) = err(r#""a:x" "b:y""#);
    assert_eq!(pos, 6);
    assert_eq!(
        msg,
        "expected 'and', 'or' or the end of the policy at byte 6, found a quoted attribute"
    );

    let (pos, _, msg) = err(r#""a:x" nand "b:y""#);
    assert_eq!(pos, 6);
    assert_eq!(
        msg,
        "expected 'and', 'or' or the end of the policy at byte 6, found the unquoted word `nand`"
    );

    let (pos, _, msg) = err(r#"("a:x" xor "b:y")"#);
    assert_eq!(pos, 7);
    assert_eq!(
        msg,
        "expected 'and', 'or' or ')' at byte 7, found the unquoted word `xor`"
    );

    let (pos, kind, _) = err("é");
    assert_eq!(
        (pos, kind),
        (
            0,
            PolicyErrorKind::Unexpected {
                expected: Expected::Operand,
                found: Found::Character('é')
            }
        )
    );
    let (pos, kind, _) = err(r#""a:x" or ()"#);
    assert_eq!(
        (pos, kind),
        (
            10,
            PolicyErrorKind::Unexpected {
                expected: Expected::Operand,
                found: Found::ClosingParenthesis
            }
        )
    );
    let (pos, kind, _) = err(r#""a:x" or"#);
    assert_eq!(
        (pos, kind),
        (
            8,
            PolicyErrorKind::Unexpected {
                expected: Expected::Operand,
                found: Found::EndOfInput
            }
        )
    );
    let (pos, kind, _) = err(r#"or "a:x""#);
    assert_eq!(
        (pos, kind),
        (
            0,
            PolicyErrorKind::Unexpected {
                expected: Expected::Operand,
                found: Found::Operator(Operator::Or)
            }
        )
    );
}

#[test]
fn unbalanced_parentheses() {
    let (pos, kind, msg) = err(r#"("a:x" and "b:y""#);
    assert_eq!((pos, kind), (0, PolicyErrorKind::UnclosedParenthesis));
    assert_eq!(msg, "'(' at byte 0 is never closed: expected ')'");

    let (pos, kind, _) = err(r#""a:x" and ("b:y" or ("c:z")"#);
    assert_eq!((pos, kind), (10, PolicyErrorKind::UnclosedParenthesis));

    let (pos, kind, msg) = err(r#""a:x")"#);
    assert_eq!((pos, kind), (5, PolicyErrorKind::UnmatchedClosingParenthesis));
    assert_eq!(msg, "')' at byte 5 has no matching '('");

    let (pos, kind, _) = err(r#"("a:x"))"#);
    assert_eq!((pos, kind), (7, PolicyErrorKind::UnmatchedClosingParenthesis));
}

#[test]
fn unquoted_words() {
    let (pos, kind, msg) = err(r#"role:doctor and "dept:cardiology""#);
    assert_eq!(
        (pos, kind),
        (
            0,
            PolicyErrorKind::UnquotedAttribute {
                word: "role:doctor".into()
            }
        )
    );
    assert_eq!(
        msg,
        "unquoted word `role:doctor` at byte 0: attributes must be in double quotes, e.g. \"role:doctor\""
    );
    let (pos, _, _) = err(r#""role:doctor" and cardiology"#);
    assert_eq!(pos, 18);
    // Long words are shortened in the error.
    let long = "x".repeat(5000);
    let (_, kind, _) = err(&long[..4000]);
    assert_eq!(kind, PolicyErrorKind::UnquotedAttribute { word: "x".repeat(32) });
}

#[test]
fn attribute_syntax() {
    let (pos, kind, msg) = err(r#""a:x" or """#);
    assert_eq!((pos, kind), (9, PolicyErrorKind::EmptyAttribute));
    assert_eq!(msg, "empty attribute \"\" at byte 9");

    let (pos, kind, msg) = err(r#""a:x" and "b:y"#);
    assert_eq!((pos, kind), (10, PolicyErrorKind::UnterminatedAttribute));
    assert_eq!(msg, "attribute starting at byte 10 has no closing '\"'");

    let (pos, kind, msg) = err(r#""doctor""#);
    assert_eq!((pos, kind), (0, PolicyErrorKind::MissingNamespace));
    assert!(msg.contains("has no namespace"), "{msg}");
    assert_eq!(err(r#"":doctor""#).1, PolicyErrorKind::MissingNamespace);

    let (pos, kind, msg) = err(r#""Role:doctor""#);
    assert_eq!(
        (pos, kind),
        (1, PolicyErrorKind::InvalidNamespaceCharacter { character: 'R' })
    );
    assert!(
        msg.starts_with("invalid character 'R' in attribute namespace at byte 1"),
        "{msg}"
    );
    assert_eq!(
        err(r#""1ab:x""#).1,
        PolicyErrorKind::InvalidNamespaceCharacter { character: '1' }
    );
    assert_eq!(err(r#""a.b:x""#).0, 2);

    let (pos, kind, msg) = err(r#""a:x" or "role:doc tor""#);
    assert_eq!(
        (pos, kind),
        (18, PolicyErrorKind::InvalidValueCharacter { character: ' ' })
    );
    assert!(
        msg.starts_with("invalid character ' ' in attribute value at byte 18"),
        "{msg}"
    );
    assert_eq!(
        err(r#""a:é""#),
        (
            3,
            PolicyErrorKind::InvalidValueCharacter { character: 'é' },
            err(r#""a:é""#).2
        )
    );
    assert_eq!(
        err(r#""a:x\"y""#).1,
        PolicyErrorKind::InvalidValueCharacter { character: '\\' }
    );

    let (pos, kind, _) = err(r#""role:""#);
    assert_eq!((pos, kind), (5, PolicyErrorKind::EmptyAttributeValue));

    // Valid: digits, '-', '_', '.', ':' in values; '-' and '_' and digits in namespaces.
    Policy::parse(r#""patient:0193c6b1-1a2b-7c3d.v2_x:y" and "ns-2_b:UPPER""#).unwrap();
    assert!(caremesh_abe::validate_attribute("emergency:p-42").is_ok());
    assert_eq!(caremesh_abe::validate_attribute("role:a b").unwrap_err().position, 6);
}

#[test]
fn nesting_limit() {
    let ok = format!(
        "{}\"a:x\"{}",
        "(".repeat(MAX_NESTING_DEPTH),
        ")".repeat(MAX_NESTING_DEPTH)
    );
    Policy::parse(&ok).unwrap();
    let deep = format!(
        "{}\"a:x\"{}",
        "(".repeat(MAX_NESTING_DEPTH + 1),
        ")".repeat(MAX_NESTING_DEPTH + 1)
    );
    let (pos, kind, msg) = err(&deep);
    assert_eq!(
        (pos, kind),
        (
            MAX_NESTING_DEPTH,
            PolicyErrorKind::NestingTooDeep {
                limit: MAX_NESTING_DEPTH
            }
        )
    );
    assert_eq!(msg, "parentheses nested too deeply at byte 16: the limit is 16 levels");
    // A huge nesting (no stack overflow, still the nesting error).
    let huge = "(".repeat(4000);
    assert_eq!(
        err(&huge).1,
        PolicyErrorKind::NestingTooDeep {
            limit: MAX_NESTING_DEPTH
        }
    );
}

#[test]
fn attribute_count_limit() {
    let names: Vec<String> = (0..=MAX_POLICY_ATTRIBUTES).map(|i| format!("\"a:{i}\"")).collect();
    Policy::parse(&names[..MAX_POLICY_ATTRIBUTES].join(" or ")).unwrap();
    let text = names.join(" or ");
    let (pos, kind, msg) = err(&text);
    assert_eq!(
        kind,
        PolicyErrorKind::TooManyAttributes {
            limit: MAX_POLICY_ATTRIBUTES
        }
    );
    assert_eq!(pos, text.len() - names[MAX_POLICY_ATTRIBUTES].len());
    assert_eq!(
        msg,
        format!("too many attributes at byte {pos}: a policy may contain at most 64")
    );
    // Repeats count: they are rows of the span program.
    let repeated = vec![r#""a:x""#; MAX_POLICY_ATTRIBUTES + 1].join(" and ");
    assert_eq!(
        err(&repeated).1,
        PolicyErrorKind::TooManyAttributes {
            limit: MAX_POLICY_ATTRIBUTES
        }
    );
}

#[test]
fn length_limits() {
    let long_value = "v".repeat(MAX_ATTRIBUTE_LEN - 2);
    Policy::parse(&format!("\"a:{long_value}\"")).unwrap();
    let (pos, kind, msg) = err(&format!("\"a:x\" or \"a:{long_value}v\""));
    assert_eq!(
        (pos, kind),
        (
            9,
            PolicyErrorKind::AttributeTooLong {
                limit: MAX_ATTRIBUTE_LEN,
                length: 129
            }
        )
    );
    assert_eq!(
        msg,
        "attribute at byte 9 is too long: 129 bytes, over the limit of 128 bytes"
    );

    let too_long = format!("\"a:x\"{}", " ".repeat(MAX_POLICY_LEN));
    let (pos, kind, msg) = err(&too_long);
    assert_eq!(
        (pos, kind),
        (
            MAX_POLICY_LEN,
            PolicyErrorKind::PolicyTooLong {
                limit: MAX_POLICY_LEN,
                length: 4101
            }
        )
    );
    assert_eq!(
        msg,
        "policy is too long: 4101 bytes, over the limit of 4096 bytes (exceeded at byte 4096)"
    );
    // Exactly at the limit is fine.
    Policy::parse(&format!("\"a:x\"{}", " ".repeat(MAX_POLICY_LEN - 5))).unwrap();

    // A tightly written policy whose canonical form (with spaces) would exceed the limit.
    let attrs: Vec<String> = (0..64).map(|i| format!("\"a:{i:0>56}\"")).collect();
    let tight = attrs.join("and");
    assert!(tight.len() <= MAX_POLICY_LEN);
    let (_, kind, _) = err(&tight);
    assert_eq!(
        kind,
        PolicyErrorKind::CanonicalFormTooLong {
            limit: MAX_POLICY_LEN,
            length: 4155
        }
    );
}

#[test]
fn error_messages_are_std_errors() {
    let e: Box<dyn std::error::Error> = Box::new(Policy::parse("(").unwrap_err());
    assert_eq!(
        e.to_string(),
        "expected a quoted attribute or '(' at byte 1, found the end of the policy"
    );
}
