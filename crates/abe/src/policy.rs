//! The policy language, its parser, and its monotone span program.
//!
//! # Grammar
//!
//! ```text
//! policy    = expr
//! expr      = operand *( "and" operand )     ; one flat, n-ary AND
//!           / operand *( "or"  operand )     ; one flat, n-ary OR
//! operand   = attribute / "(" expr ")"
//! attribute = DQUOTE namespace ":" value DQUOTE
//! namespace = %x61-7A *( %x61-7A / DIGIT / "-" / "_" )            ; a-z, then a-z 0-9 - _
//! value     = 1*( ALPHA / DIGIT / "-" / "_" / "." / ":" )
//! ```
//!
//! Whitespace (space, tab, CR, LF) may appear between tokens. The keywords `and` and `or` are
//! matched case-insensitively (`AND` works) and printed in lowercase.
//!
//! **Precedence.** There is none: `and` and `or` may not be mixed at the same level without
//! parentheses. `"a" and "b" or "c"` is rejected with [`PolicyErrorKind::MixedOperators`]; write
//! `("a" and "b") or "c"` or `"a" and ("b" or "c")`. A record's access rule is too important to
//! hinge on a precedence convention a reader might not share.
//!
//! **Attributes** are ASCII, case-sensitive, at most [`MAX_ATTRIBUTE_LEN`] bytes, and always
//! namespaced: the namespace runs up to the first `:` and the value (which may itself contain
//! `:`) follows. `"role:doctor"`, `"patient:0193c6b1-1a2b-7c3d"`, `"emergency:p-42"`.
//!
//! **Attribute reuse.** An attribute may appear more than once (`("a:x" and "b:y") or ("a:x" and
//! "c:z")`): FAME handles a non-injective row labelling natively, see the crate documentation.
//!
//! **Limits.** [`MAX_POLICY_LEN`] bytes of text (also for the canonical form),
//! [`MAX_POLICY_ATTRIBUTES`] attribute occurrences, [`MAX_NESTING_DEPTH`] levels of parentheses,
//! [`MAX_ATTRIBUTE_LEN`] bytes per attribute. Each violation is its own error kind.
//!
//! **Canonical form.** [`Policy::canonical`] prints attributes quoted, keywords in lowercase with
//! single spaces, and the fewest parentheses: nested groups with the same operator are flattened
//! (`"a:x" and ("b:y" and "c:z")` becomes `"a:x" and "b:y" and "c:z"`) and redundant parentheses
//! are dropped. The order of operands is kept. Parsing the canonical form gives the same policy.

use std::collections::HashSet;
use std::fmt;

/// Maximum length of a policy text, in bytes (also enforced on the canonical form).
pub const MAX_POLICY_LEN: usize = 4096;
/// Maximum number of attribute occurrences (rows of the span program) in one policy.
pub const MAX_POLICY_ATTRIBUTES: usize = 64;
/// Maximum nesting depth of parentheses.
pub const MAX_NESTING_DEPTH: usize = 16;
/// Maximum length of one attribute, in bytes.
pub const MAX_ATTRIBUTE_LEN: usize = 128;

/// A parsed, validated access policy: a monotone boolean formula over attributes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    root: Node,
    leaves: usize,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Node {
    Attribute(String),
    And(Vec<Node>),
    Or(Vec<Node>),
}

/// The two operators of the policy language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `and`: every operand must be satisfied.
    And,
    /// `or`: at least one operand must be satisfied.
    Or,
}

impl Operator {
    fn keyword(self) -> &'static str {
        match self {
            Operator::And => "and",
            Operator::Or => "or",
        }
    }
}

/// A policy that could not be parsed: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// Byte offset into the policy text (for an attribute checked on its own, into the attribute).
    pub position: usize,
    /// What went wrong.
    pub kind: PolicyErrorKind,
}

/// What the parser expected to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A quoted attribute or `(`.
    Operand,
    /// `and`, `or`, or the end of the policy.
    OperatorOrEnd,
    /// `and`, `or`, or `)`.
    OperatorOrClosingParenthesis,
}

/// What the parser found instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The text ended.
    EndOfInput,
    /// A quoted attribute.
    Attribute,
    /// `(`.
    OpeningParenthesis,
    /// `)`.
    ClosingParenthesis,
    /// The keyword `and` or `or`.
    Operator(Operator),
    /// An unquoted word (shortened to 32 characters).
    Word(String),
    /// Any other character.
    Character(char),
}

/// The kinds of policy errors. Each limit has its own kind, naming the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// A token other than the one the grammar allows here.
    Unexpected {
        /// What would have been valid.
        expected: Expected,
        /// What was there.
        found: Found,
    },
    /// A bare word where an attribute was expected: attributes must be quoted.
    UnquotedAttribute {
        /// The word (shortened to 32 characters).
        word: String,
    },
    /// An opening `"` without a closing one.
    UnterminatedAttribute,
    /// `""`.
    EmptyAttribute,
    /// An attribute without a `namespace:` prefix (or with an empty namespace).
    MissingNamespace,
    /// A character not allowed in a namespace (`[a-z][a-z0-9_-]*`).
    InvalidNamespaceCharacter {
        /// The offending character.
        character: char,
    },
    /// A character not allowed in an attribute value (letters, digits, `-`, `_`, `.`, `:`).
    InvalidValueCharacter {
        /// The offending character.
        character: char,
    },
    /// `"ns:"`: nothing after the namespace.
    EmptyAttributeValue,
    /// A `(` that is never closed.
    UnclosedParenthesis,
    /// A `)` without a matching `(`.
    UnmatchedClosingParenthesis,
    /// `and` and `or` mixed at one level without parentheses.
    MixedOperators,
    /// The policy text is longer than [`MAX_POLICY_LEN`].
    PolicyTooLong {
        /// The limit, in bytes.
        limit: usize,
        /// The actual length, in bytes.
        length: usize,
    },
    /// The canonical form would be longer than [`MAX_POLICY_LEN`] (e.g. a tightly written policy).
    CanonicalFormTooLong {
        /// The limit, in bytes.
        limit: usize,
        /// The canonical form's length, in bytes.
        length: usize,
    },
    /// Parentheses nested deeper than [`MAX_NESTING_DEPTH`].
    NestingTooDeep {
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_POLICY_ATTRIBUTES`] attribute occurrences.
    TooManyAttributes {
        /// The limit.
        limit: usize,
    },
    /// An attribute longer than [`MAX_ATTRIBUTE_LEN`].
    AttributeTooLong {
        /// The limit, in bytes.
        limit: usize,
        /// The attribute's length, in bytes.
        length: usize,
    },
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Operand => "a quoted attribute or '('",
            Expected::OperatorOrEnd => "'and', 'or' or the end of the policy",
            Expected::OperatorOrClosingParenthesis => "'and', 'or' or ')'",
        })
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::EndOfInput => f.write_str("the end of the policy"),
            Found::Attribute => f.write_str("a quoted attribute"),
            Found::OpeningParenthesis => f.write_str("'('"),
            Found::ClosingParenthesis => f.write_str("')'"),
            Found::Operator(op) => write!(f, "'{}'", op.keyword()),
            Found::Word(word) => write!(f, "the unquoted word `{word}`"),
            Found::Character(c) => write!(f, "{c:?}"),
        }
    }
}

const NAMESPACE_RULE: &str = "a namespace is a lowercase letter followed by lowercase letters, digits, '-' or '_'";
const VALUE_RULE: &str = "a value may contain letters, digits, '-', '_', '.' and ':'";

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.position;
        match &self.kind {
            PolicyErrorKind::Unexpected { expected, found } => {
                write!(f, "expected {expected} at byte {at}, found {found}")
            }
            PolicyErrorKind::UnquotedAttribute { word } => write!(
                f,
                "unquoted word `{word}` at byte {at}: attributes must be in double quotes, \
                 e.g. \"role:doctor\""
            ),
            PolicyErrorKind::UnterminatedAttribute => {
                write!(f, "attribute starting at byte {at} has no closing '\"'")
            }
            PolicyErrorKind::EmptyAttribute => write!(f, "empty attribute \"\" at byte {at}"),
            PolicyErrorKind::MissingNamespace => write!(
                f,
                "attribute at byte {at} has no namespace: write \"namespace:value\", \
                 e.g. \"role:doctor\""
            ),
            PolicyErrorKind::InvalidNamespaceCharacter { character } => write!(
                f,
                "invalid character {character:?} in attribute namespace at byte {at}: \
                 {NAMESPACE_RULE}"
            ),
            PolicyErrorKind::InvalidValueCharacter { character } => write!(
                f,
                "invalid character {character:?} in attribute value at byte {at}: {VALUE_RULE}"
            ),
            PolicyErrorKind::EmptyAttributeValue => {
                write!(f, "attribute at byte {at} has an empty value after ':'")
            }
            PolicyErrorKind::UnclosedParenthesis => {
                write!(f, "'(' at byte {at} is never closed: expected ')'")
            }
            PolicyErrorKind::UnmatchedClosingParenthesis => {
                write!(f, "')' at byte {at} has no matching '('")
            }
            PolicyErrorKind::MixedOperators => write!(
                f,
                "'and' and 'or' mixed without parentheses at byte {at}: add parentheses, \
                 e.g. (\"a:x\" and \"b:y\") or \"c:z\""
            ),
            PolicyErrorKind::PolicyTooLong { limit, length } => write!(
                f,
                "policy is too long: {length} bytes, over the limit of {limit} bytes \
                 (exceeded at byte {at})"
            ),
            PolicyErrorKind::CanonicalFormTooLong { limit, length } => write!(
                f,
                "policy is too long in canonical form: {length} bytes, over the limit of \
                 {limit} bytes"
            ),
            PolicyErrorKind::NestingTooDeep { limit } => write!(
                f,
                "parentheses nested too deeply at byte {at}: the limit is {limit} levels"
            ),
            PolicyErrorKind::TooManyAttributes { limit } => write!(
                f,
                "too many attributes at byte {at}: a policy may contain at most {limit}"
            ),
            PolicyErrorKind::AttributeTooLong { limit, length } => write!(
                f,
                "attribute at byte {at} is too long: {length} bytes, over the limit of \
                 {limit} bytes"
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

/// Checks one attribute against the attribute syntax (see the module documentation).
///
/// Error positions are byte offsets into `attribute`.
pub fn validate_attribute(attribute: &str) -> Result<(), PolicyError> {
    check_attribute(attribute).map_err(|(position, kind)| PolicyError { position, kind })
}

/// Validates an attribute; on error returns the offset within the attribute and the kind.
fn check_attribute(attribute: &str) -> Result<(), (usize, PolicyErrorKind)> {
    if attribute.is_empty() {
        return Err((0, PolicyErrorKind::EmptyAttribute));
    }
    if attribute.len() > MAX_ATTRIBUTE_LEN {
        return Err((
            0,
            PolicyErrorKind::AttributeTooLong {
                limit: MAX_ATTRIBUTE_LEN,
                length: attribute.len(),
            },
        ));
    }
    let colon = match attribute.find(':') {
        Some(0) | None => return Err((0, PolicyErrorKind::MissingNamespace)),
        Some(colon) => colon,
    };
    for (i, c) in attribute.char_indices() {
        if i < colon {
            let ok = if i == 0 {
                c.is_ascii_lowercase()
            } else {
                is_namespace_char(c)
            };
            if !ok {
                return Err((i, PolicyErrorKind::InvalidNamespaceCharacter { character: c }));
            }
        } else if i > colon && !is_value_char(c) {
            return Err((i, PolicyErrorKind::InvalidValueCharacter { character: c }));
        }
    }
    if colon + 1 == attribute.len() {
        return Err((colon, PolicyErrorKind::EmptyAttributeValue));
    }
    Ok(())
}

fn is_namespace_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// Bytes that make up a bare word in error reporting (and the keywords).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    leaves: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.pos += 1;
        }
    }

    fn error<T>(&self, position: usize, kind: PolicyErrorKind) -> Result<T, PolicyError> {
        Err(PolicyError { position, kind })
    }

    /// Reads a bare word starting at the current position (which holds a word byte).
    fn read_word(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_word_byte) {
            self.pos += 1;
        }
        // Word bytes are ASCII, so both ends are character boundaries.
        self.text.get(start..self.pos).unwrap_or_default()
    }

    fn char_at(&self, position: usize) -> char {
        self.text
            .get(position..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or('\u{fffd}')
    }

    fn parse_expr(&mut self, depth: usize, open: Option<usize>) -> Result<Node, PolicyError> {
        let mut operands = vec![self.parse_operand(depth)?];
        let mut operator: Option<Operator> = None;
        loop {
            self.skip_whitespace();
            let start = self.pos;
            match self.peek() {
                None => match open {
                    Some(open) => return self.error(open, PolicyErrorKind::UnclosedParenthesis),
                    None => break,
                },
                Some(b')') => match open {
                    Some(_) => break,
                    None => {
                        return self.error(start, PolicyErrorKind::UnmatchedClosingParenthesis);
                    }
                },
                Some(b) if is_word_byte(b) => {
                    let word = self.read_word();
                    let Some(op) = keyword(word) else {
                        return self.error(
                            start,
                            PolicyErrorKind::Unexpected {
                                expected: expected_after_operand(open),
                                found: Found::Word(shorten(word)),
                            },
                        );
                    };
                    match operator {
                        Some(previous) if previous != op => {
                            return self.error(start, PolicyErrorKind::MixedOperators);
                        }
                        _ => operator = Some(op),
                    }
                    operands.push(self.parse_operand(depth)?);
                }
                Some(b) => {
                    let found = match b {
                        b'"' => Found::Attribute,
                        b'(' => Found::OpeningParenthesis,
                        _ => Found::Character(self.char_at(start)),
                    };
                    return self.error(
                        start,
                        PolicyErrorKind::Unexpected {
                            expected: expected_after_operand(open),
                            found,
                        },
                    );
                }
            }
        }
        Ok(match operator {
            None => operands.pop().unwrap_or(Node::Or(Vec::new())),
            Some(op) => {
                let mut flat = Vec::with_capacity(operands.len());
                for operand in operands {
                    match (op, operand) {
                        (Operator::And, Node::And(children)) | (Operator::Or, Node::Or(children)) => {
                            flat.extend(children)
                        }
                        (_, other) => flat.push(other),
                    }
                }
                match op {
                    Operator::And => Node::And(flat),
                    Operator::Or => Node::Or(flat),
                }
            }
        })
    }

    fn parse_operand(&mut self, depth: usize) -> Result<Node, PolicyError> {
        self.skip_whitespace();
        let start = self.pos;
        let unexpected = |found| PolicyErrorKind::Unexpected {
            expected: Expected::Operand,
            found,
        };
        match self.peek() {
            Some(b'"') => self.parse_attribute(),
            Some(b'(') => {
                if depth >= MAX_NESTING_DEPTH {
                    return self.error(
                        start,
                        PolicyErrorKind::NestingTooDeep {
                            limit: MAX_NESTING_DEPTH,
                        },
                    );
                }
                self.pos += 1;
                let node = self.parse_expr(depth + 1, Some(start))?;
                // parse_expr returns inside parentheses only when it stands on ')'.
                self.pos += 1;
                Ok(node)
            }
            None => self.error(start, unexpected(Found::EndOfInput)),
            Some(b')') => self.error(start, unexpected(Found::ClosingParenthesis)),
            Some(b) if is_word_byte(b) => {
                let word = self.read_word();
                match keyword(word) {
                    Some(op) => self.error(start, unexpected(Found::Operator(op))),
                    None => self.error(start, PolicyErrorKind::UnquotedAttribute { word: shorten(word) }),
                }
            }
            Some(_) => self.error(start, unexpected(Found::Character(self.char_at(start)))),
        }
    }

    fn parse_attribute(&mut self) -> Result<Node, PolicyError> {
        let quote = self.pos;
        let body_start = quote + 1;
        let rest = self.text.get(body_start..).unwrap_or_default();
        let Some(len) = rest.find('"') else {
            return self.error(quote, PolicyErrorKind::UnterminatedAttribute);
        };
        let attribute = rest.get(..len).unwrap_or_default();
        if attribute.is_empty() {
            return self.error(quote, PolicyErrorKind::EmptyAttribute);
        }
        if attribute.len() > MAX_ATTRIBUTE_LEN {
            return self.error(
                quote,
                PolicyErrorKind::AttributeTooLong {
                    limit: MAX_ATTRIBUTE_LEN,
                    length: attribute.len(),
                },
            );
        }
        if let Err((offset, kind)) = check_attribute(attribute) {
            let position = match kind {
                PolicyErrorKind::MissingNamespace => quote,
                _ => body_start + offset,
            };
            return self.error(position, kind);
        }
        if self.leaves >= MAX_POLICY_ATTRIBUTES {
            return self.error(
                quote,
                PolicyErrorKind::TooManyAttributes {
                    limit: MAX_POLICY_ATTRIBUTES,
                },
            );
        }
        self.leaves += 1;
        self.pos = body_start + len + 1;
        Ok(Node::Attribute(attribute.to_owned()))
    }
}

fn expected_after_operand(open: Option<usize>) -> Expected {
    match open {
        Some(_) => Expected::OperatorOrClosingParenthesis,
        None => Expected::OperatorOrEnd,
    }
}

fn keyword(word: &str) -> Option<Operator> {
    if word.eq_ignore_ascii_case("and") {
        Some(Operator::And)
    } else if word.eq_ignore_ascii_case("or") {
        Some(Operator::Or)
    } else {
        None
    }
}

fn shorten(word: &str) -> String {
    word.chars().take(32).collect()
}

impl Policy {
    /// Parses a policy. See the [module documentation](self) for the grammar and the limits.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(PolicyError {
                position: MAX_POLICY_LEN,
                kind: PolicyErrorKind::PolicyTooLong {
                    limit: MAX_POLICY_LEN,
                    length: text.len(),
                },
            });
        }
        let mut parser = Parser {
            text,
            pos: 0,
            leaves: 0,
        };
        let root = parser.parse_expr(0, None)?;
        let policy = Policy {
            root,
            leaves: parser.leaves,
        };
        let canonical_len = policy.canonical().len();
        if canonical_len > MAX_POLICY_LEN {
            return Err(PolicyError {
                position: 0,
                kind: PolicyErrorKind::CanonicalFormTooLong {
                    limit: MAX_POLICY_LEN,
                    length: canonical_len,
                },
            });
        }
        Ok(policy)
    }

    /// The canonical text of this policy (see the [module documentation](self)).
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        write_node(&self.root, &mut out, true);
        out
    }

    /// The distinct attributes, in order of first appearance.
    pub fn attributes(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.leaves()
            .into_iter()
            .filter(|attribute| seen.insert(*attribute))
            .collect()
    }

    /// Every attribute occurrence, left to right (one per span-program row).
    pub fn leaves(&self) -> Vec<&str> {
        let mut out = Vec::with_capacity(self.leaves);
        collect_leaves(&self.root, &mut out);
        out
    }

    /// Number of attribute occurrences (rows of the span program, ciphertext components).
    pub fn leaf_count(&self) -> usize {
        self.leaves
    }

    /// Whether a holder of `attributes` satisfies the policy.
    pub fn is_satisfied_by<S: AsRef<str>>(&self, attributes: &[S]) -> bool {
        let set: HashSet<&str> = attributes.iter().map(AsRef::as_ref).collect();
        satisfied(&self.root, &|a| set.contains(a))
    }

    /// The Lewko-Waters monotone span program of this policy.
    pub(crate) fn span_program(&self) -> SpanProgram<'_> {
        let mut program = SpanProgram {
            rows: Vec::with_capacity(self.leaves),
            columns: 1,
        };
        // The root is labelled with the target vector (1, 0, ..., 0).
        lewko_waters(&self.root, &[(0, 1)], &mut program);
        program
    }

    /// The rows (leaf indices) of a minimal satisfying choice, each with coefficient 1 in the
    /// span-program reconstruction, or `None` when `has` does not satisfy the policy.
    pub(crate) fn reconstruction_rows(&self, has: &dyn Fn(&str) -> bool) -> Option<Vec<usize>> {
        select_rows(&self.root, 0, has)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Policy({})", self.canonical())
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::parse(s)
    }
}

fn write_node(node: &Node, out: &mut String, top: bool) {
    let (children, separator) = match node {
        Node::Attribute(attribute) => {
            out.push('"');
            out.push_str(attribute);
            out.push('"');
            return;
        }
        Node::And(children) => (children, " and "),
        Node::Or(children) => (children, " or "),
    };
    if !top {
        out.push('(');
    }
    for (i, child) in children.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        write_node(child, out, false);
    }
    if !top {
        out.push(')');
    }
}

fn collect_leaves<'a>(node: &'a Node, out: &mut Vec<&'a str>) {
    match node {
        Node::Attribute(attribute) => out.push(attribute),
        Node::And(children) | Node::Or(children) => {
            for child in children {
                collect_leaves(child, out);
            }
        }
    }
}

fn leaf_count(node: &Node) -> usize {
    match node {
        Node::Attribute(_) => 1,
        Node::And(children) | Node::Or(children) => children.iter().map(leaf_count).sum(),
    }
}

fn satisfied(node: &Node, has: &dyn Fn(&str) -> bool) -> bool {
    match node {
        Node::Attribute(attribute) => has(attribute),
        Node::And(children) => children.iter().all(|c| satisfied(c, has)),
        Node::Or(children) => children.iter().any(|c| satisfied(c, has)),
    }
}

fn select_rows(node: &Node, first_leaf: usize, has: &dyn Fn(&str) -> bool) -> Option<Vec<usize>> {
    match node {
        Node::Attribute(attribute) => has(attribute).then(|| vec![first_leaf]),
        Node::And(children) => {
            let mut rows = Vec::new();
            let mut base = first_leaf;
            for child in children {
                rows.extend(select_rows(child, base, has)?);
                base += leaf_count(child);
            }
            Some(rows)
        }
        Node::Or(children) => {
            let mut best: Option<Vec<usize>> = None;
            let mut base = first_leaf;
            for child in children {
                if let Some(rows) = select_rows(child, base, has)
                    && best.as_ref().is_none_or(|b| rows.len() < b.len())
                {
                    best = Some(rows);
                }
                base += leaf_count(child);
            }
            best
        }
    }
}

/// A monotone span program over {-1, 0, 1}: sparse rows, one per attribute occurrence.
pub(crate) struct SpanProgram<'a> {
    /// `(attribute, entries)` with entries `(column, ±1)`; columns are 0-based.
    pub(crate) rows: Vec<(&'a str, Vec<(usize, i8)>)>,
    /// Number of columns.
    pub(crate) columns: usize,
}

/// Lewko-Waters: an OR passes its vector to every child; an n-ary AND with vector `v` and fresh
/// columns `x_1..x_{n-1}` gives child 1 `v + x_1`, child `i` `-x_{i-1} + x_i`, child `n`
/// `-x_{n-1}` (the same matrix as the right-nested binary AND), so the children's vectors sum to
/// `v` and every proper subset of them misses some `x_i`.
fn lewko_waters<'a>(node: &'a Node, vector: &[(usize, i8)], program: &mut SpanProgram<'a>) {
    match node {
        Node::Attribute(attribute) => program.rows.push((attribute, vector.to_vec())),
        Node::Or(children) => {
            for child in children {
                lewko_waters(child, vector, program);
            }
        }
        Node::And(children) => {
            let first_new = program.columns;
            let count = children.len();
            program.columns += count.saturating_sub(1);
            for (i, child) in children.iter().enumerate() {
                let mut v = Vec::with_capacity(vector.len() + 1);
                if i == 0 {
                    v.extend_from_slice(vector);
                } else {
                    v.push((first_new + i - 1, -1));
                }
                if i + 1 < count {
                    v.push((first_new + i, 1));
                }
                lewko_waters(child, &v, program);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Reconstruction with coefficient 1 on the selected rows gives (1, 0, ..., 0).
    fn check_reconstruction(policy: &str, attrs: &[&str]) {
        let p = Policy::parse(policy).unwrap();
        let program = p.span_program();
        let rows = p.reconstruction_rows(&|a| attrs.contains(&a));
        assert_eq!(rows.is_some(), p.is_satisfied_by(attrs), "{policy} {attrs:?}");
        if let Some(rows) = rows {
            let mut sum = vec![0i64; program.columns];
            for r in rows {
                assert!(attrs.contains(&program.rows[r].0));
                for &(c, v) in &program.rows[r].1 {
                    sum[c] += i64::from(v);
                }
            }
            let mut target = vec![0i64; program.columns];
            target[0] = 1;
            assert_eq!(sum, target, "{policy} {attrs:?}");
        }
    }

    #[test]
    fn span_program_reconstructs() {
        check_reconstruction(r#""a:1""#, &["a:1"]);
        check_reconstruction(r#""a:1" and "a:2" and "a:3""#, &["a:1", "a:2", "a:3"]);
        check_reconstruction(r#""a:1" and "a:2" and "a:3""#, &["a:1", "a:3"]);
        check_reconstruction(r#"("a:1" or "a:2") and ("a:3" or ("a:4" and "a:1"))"#, &["a:1", "a:4"]);
        check_reconstruction(r#"("a:1" and "a:2") or ("a:1" and "a:3")"#, &["a:1", "a:3"]);
    }

    #[test]
    fn columns_match_lewko_waters() {
        let p = Policy::parse(r#""a:1" and "a:2" and ("a:3" or "a:4")"#).unwrap();
        let sp = p.span_program();
        assert_eq!(sp.columns, 3);
        assert_eq!(sp.rows[0].1, vec![(0, 1), (1, 1)]);
        assert_eq!(sp.rows[1].1, vec![(1, -1), (2, 1)]);
        assert_eq!(sp.rows[2].1, vec![(2, -1)]);
        assert_eq!(sp.rows[3].1, vec![(2, -1)]);
    }
}
