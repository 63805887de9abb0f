//! `check_policy` must never panic. Input: `<policy>` alone, or `<patient id> NUL <policy>` to
//! check it as a record policy. Its verdict must agree with the parser, be self-consistent, and
//! be stable when the canonical form is checked again.
#![no_main]

use caremesh_abe::{Policy, check_policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (patient, text) = match input.split_once('\0') {
        Some((patient, text)) => (Some(patient), text),
        None => (None, input),
    };
    let check = check_policy(text, patient);
    assert_eq!(check.valid, check.error.is_none(), "{check:?}");
    if let Some(problem) = &check.error {
        assert!(!problem.reason.is_empty());
        assert!(
            problem.reason.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "{problem:?}"
        );
        assert!(!problem.message.is_empty());
    }
    match Policy::parse(text) {
        Ok(policy) => {
            assert_eq!(check.canonical, policy.canonical());
            let attributes: Vec<&str> = check.attributes.iter().map(String::as_str).collect();
            assert_eq!(attributes, policy.attributes());
            if check.valid
                && let Some(patient) = patient
            {
                assert!(policy.is_satisfied_by(&[format!("patient:{patient}")]));
                assert!(policy.is_satisfied_by(&[format!("emergency:{patient}")]));
            }
            // The canonical form gets the same verdict.
            let again = check_policy(&check.canonical, patient);
            assert_eq!(again.valid, check.valid);
            assert_eq!(again.canonical, check.canonical);
            assert_eq!(again.depth, check.depth);
        }
        Err(_) => {
            assert!(!check.valid);
            assert!(check.canonical.is_empty());
        }
    }
});
