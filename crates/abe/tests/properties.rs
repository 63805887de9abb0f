//! Property tests: decapsulation succeeds exactly when the attributes satisfy the policy, and then
//! yields the encapsulated key; the parser never panics and its canonical form is a fixed point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{AbeError, Policy, decapsulate, encapsulate};
use proptest::prelude::*;

/// A small universe so that random sets often (but not always) satisfy random policies.
const UNIVERSE: [&str; 6] = [
    "role:doctor",
    "role:nurse",
    "dept:cardiology",
    "dept:oncology",
    "site:north",
    "x:y.z",
];

#[derive(Clone, Debug)]
enum Tree {
    Leaf(usize),
    And(Vec<Tree>),
    Or(Vec<Tree>),
}

impl Tree {
    /// Reference semantics, independent of the crate.
    fn eval(&self, held: &[bool; 6]) -> bool {
        match self {
            Tree::Leaf(i) => held[*i],
            Tree::And(c) => c.iter().all(|t| t.eval(held)),
            Tree::Or(c) => c.iter().any(|t| t.eval(held)),
        }
    }

    /// Renders with random-but-valid spacing, keyword case and redundant parentheses.
    fn render(&self, style: &mut impl Iterator<Item = u8>) -> String {
        let mut pick = || style.next().unwrap_or(0);
        match self {
            Tree::Leaf(i) => {
                let s = format!("\"{}\"", UNIVERSE[*i]);
                if pick() % 5 == 0 { format!("( {s} )") } else { s }
            }
            Tree::And(c) | Tree::Or(c) => {
                let kw = match (self, pick() % 3) {
                    (Tree::And(_), 0) => " AND ",
                    (Tree::And(_), _) => " and ",
                    (_, 0) => "\tOr\n",
                    _ => " or ",
                };
                let parts: Vec<String> = c.iter().map(|t| t.render(style)).collect();
                format!("({})", parts.join(kw))
            }
        }
    }
}

fn tree() -> impl Strategy<Value = Tree> {
    // Leaves repeat attributes freely (6 names), so duplicated attributes are common.
    let leaf = (0..UNIVERSE.len()).prop_map(Tree::Leaf);
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..5).prop_map(Tree::And),
            prop::collection::vec(inner, 2..5).prop_map(Tree::Or),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn decapsulation_succeeds_iff_policy_satisfied(
        tree in tree(),
        held_mask in 0u8..64,
        style in prop::collection::vec(any::<u8>(), 64),
    ) {
        let (pp, _) = common::authority();
        let text = tree.render(&mut style.into_iter());
        let policy = Policy::parse(&text).unwrap();
        let held: [bool; 6] = std::array::from_fn(|i| held_mask & (1 << i) != 0);
        // Every key also holds an attribute no policy mentions, so it is never empty.
        let mut attrs: Vec<&str> = vec!["other:attribute"];
        attrs.extend(UNIVERSE.iter().zip(held).filter(|(_, h)| *h).map(|(a, _)| *a));

        let expected = tree.eval(&held);
        prop_assert_eq!(policy.is_satisfied_by(&attrs), expected, "{}", text);

        let key = common::key_for(&attrs);
        let (data_key, ct) = encapsulate(pp, &policy, &mut OsRng).unwrap();
        match decapsulate(&key, &ct) {
            Ok(recovered) => {
                prop_assert!(expected, "decapsulated without satisfying {}", text);
                prop_assert_eq!(recovered, data_key);
            }
            Err(e) => {
                prop_assert!(!expected, "failed to decapsulate {}: {}", text, e);
                prop_assert_eq!(e, AbeError::PolicyNotSatisfied);
            }
        }
    }

    #[test]
    fn canonical_form_is_a_fixed_point(tree in tree(), style in prop::collection::vec(any::<u8>(), 64)) {
        let text = tree.render(&mut style.into_iter());
        let policy = Policy::parse(&text).unwrap();
        let canonical = policy.canonical();
        let again = Policy::parse(&canonical).unwrap();
        prop_assert_eq!(&again, &policy);
        prop_assert_eq!(again.canonical(), canonical);
    }

    #[test]
    fn parser_never_panics(text in "\\PC{0,64}") {
        let _ = Policy::parse(&text);
    }

    #[test]
    fn parser_never_panics_on_policy_like_input(
        tokens in prop::collection::vec(
            prop_oneof![
                Just("\"a:x\""), Just("\"b:y\""), Just("and"), Just("or"), Just("("), Just(")"),
                Just("\""), Just(" "), Just("AND"), Just("é"), Just(":"), Just("\"\""), Just("x"),
            ],
            0..40,
        )
    ) {
        let text: String = tokens.concat();
        if let Ok(policy) = Policy::parse(&text) {
            prop_assert_eq!(Policy::parse(&policy.canonical()).unwrap(), policy);
        }
    }
}
