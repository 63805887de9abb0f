//! Safety numbers (Signal-style numeric fingerprints) and trust-on-first-use pinning of contacts'
//! identity keys.
//!
//! Each party's 30 digits come from iterated SHA-512 over its identity:
//!
//! ```text
//! H_0     = SHA-512( lp("caremesh-safety-number-v1") || lp(user_id) || lp(ed25519_public) || lp(x25519_public) )
//! H_{i+1} = SHA-512( H_i || ed25519_public || x25519_public )        for i in 0..5200
//! digits  = for each of the first six 5-byte chunks c of H_5200:
//!             (c as a 40-bit big-endian integer) mod 100000, as 5 decimal digits
//! ```
//!
//! where `lp(x)` here is `x`'s length as 8 bytes big-endian followed by `x`. The safety number is
//! the two parties' 30-digit strings in ascending order, concatenated (60 digits), so both sides
//! compute the same number; it is shown as 12 groups of 5 digits. The 5200 iterations follow
//! Signal and make a targeted second preimage (a key of the attacker's with the same digits)
//! costlier.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use subtle::{Choice, ConstantTimeEq};

use crate::CryptoError;
use crate::keys::IdentityPublicKey;

/// Label of the safety number's first hash (names the version).
pub const SAFETY_NUMBER_LABEL: &str = "caremesh-safety-number-v1";
/// SHA-512 iterations per party.
pub const SAFETY_NUMBER_ITERATIONS: usize = 5200;
/// Decimal digits in a safety number.
pub const SAFETY_NUMBER_DIGITS: usize = 60;

const PARTY_DIGITS: usize = SAFETY_NUMBER_DIGITS / 2;

fn length_prefixed(hasher: &mut Sha512, bytes: &[u8]) {
    // usize is at most 64 bits on every platform Rust supports: the cast is lossless.
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// One party's 30 digits (ASCII).
fn party_digits(user_id: &str, identity: &IdentityPublicKey) -> [u8; PARTY_DIGITS] {
    let mut hasher = Sha512::new();
    length_prefixed(&mut hasher, SAFETY_NUMBER_LABEL.as_bytes());
    length_prefixed(&mut hasher, user_id.as_bytes());
    length_prefixed(&mut hasher, identity.signing_public_key());
    length_prefixed(&mut hasher, identity.dh_public_key());
    let mut hash = hasher.finalize();
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(hash);
        hasher.update(identity.signing_public_key());
        hasher.update(identity.dh_public_key());
        hash = hasher.finalize();
    }
    let mut digits = [b'0'; PARTY_DIGITS];
    for (group, chunk) in digits.chunks_exact_mut(5).zip(hash.chunks_exact(5)) {
        let mut value = chunk.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)) % 100_000;
        for digit in group.iter_mut().rev() {
            // `value % 10` is below 10: the cast cannot truncate.
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    digits
}

/// A safety number: 60 decimal digits that two parties compare (read aloud, or scanned) to make
/// sure each holds the other's real identity keys. Equality is constant time.
#[derive(Clone)]
pub struct Fingerprint {
    digits: [u8; SAFETY_NUMBER_DIGITS],
}

impl Fingerprint {
    /// The safety number between two users' identities; the same whichever side computes it.
    pub fn new(
        my_user_id: &str,
        my_identity: &IdentityPublicKey,
        their_user_id: &str,
        their_identity: &IdentityPublicKey,
    ) -> Self {
        let mine = party_digits(my_user_id, my_identity);
        let theirs = party_digits(their_user_id, their_identity);
        let (first, second) = if mine <= theirs { (mine, theirs) } else { (theirs, mine) };
        let mut digits = [0u8; SAFETY_NUMBER_DIGITS];
        for (slot, digit) in digits.iter_mut().zip(first.iter().chain(second.iter())) {
            *slot = *digit;
        }
        Self { digits }
    }

    /// Parses a safety number as displayed or typed: 60 decimal digits, spaces ignored.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let invalid = CryptoError::InvalidKey {
            what: "safety number",
            reason: "must be 60 decimal digits",
        };
        let mut digits = [0u8; SAFETY_NUMBER_DIGITS];
        let mut count = 0usize;
        for byte in text.bytes().filter(|byte| !byte.is_ascii_whitespace()) {
            if !byte.is_ascii_digit() {
                return Err(invalid);
            }
            *digits.get_mut(count).ok_or_else(|| invalid.clone())? = byte;
            count += 1;
        }
        if count != SAFETY_NUMBER_DIGITS {
            return Err(invalid);
        }
        Ok(Self { digits })
    }

    /// The 60 digits without spaces.
    pub fn digits(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.digits).unwrap_or_default()
    }
}

impl ConstantTimeEq for Fingerprint {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.digits.ct_eq(&other.digits)
    }
}

impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Fingerprint {}

/// 12 groups of 5 digits separated by spaces.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, group) in self.digits.chunks(5).enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            f.write_str(std::str::from_utf8(group).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The safety number between two users' identities as shown to people: 60 digits in 12 groups
/// of 5, the same on both sides (see [`Fingerprint`]).
pub fn safety_number(
    my_user_id: &str,
    my_identity_public: &IdentityPublicKey,
    their_user_id: &str,
    their_identity_public: &IdentityPublicKey,
) -> String {
    Fingerprint::new(my_user_id, my_identity_public, their_user_id, their_identity_public).to_string()
}

/// The outcome of checking a contact's identity against the pinned one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustCheck {
    /// No identity was pinned for the contact: this one is now pinned (trust on first use).
    FirstUse,
    /// The identity is the pinned one.
    Trusted,
    /// The contact's identity differs from the pinned one. Nothing was changed: the caller must
    /// refuse to send until the user accepts the new identity ([`TrustStore::accept_new`]),
    /// ideally after comparing safety numbers.
    Changed {
        /// The pinned identity.
        old: IdentityPublicKey,
        /// The identity now presented.
        new: IdentityPublicKey,
    },
}

/// Contacts' pinned identity keys, by user id. Serializable for the SDK to persist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    contacts: BTreeMap<String, IdentityPublicKey>,
}

impl TrustStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `identity` (already verified, e.g. from [`crate::verify_bundle`]) for `user_id`:
    /// pins it if the contact is new, else compares it with the pinned one (key id and both keys).
    pub fn check(&mut self, user_id: &str, identity: &IdentityPublicKey) -> TrustCheck {
        match self.contacts.get(user_id) {
            None => {
                self.contacts.insert(user_id.to_owned(), identity.clone());
                TrustCheck::FirstUse
            }
            Some(pinned) if pinned.same_keys(identity) => TrustCheck::Trusted,
            Some(pinned) => TrustCheck::Changed {
                old: pinned.clone(),
                new: identity.clone(),
            },
        }
    }

    /// Pins `identity` for `user_id`, replacing (and returning) the previously pinned one: the
    /// user accepted a changed identity.
    pub fn accept_new(&mut self, user_id: &str, identity: &IdentityPublicKey) -> Option<IdentityPublicKey> {
        self.contacts.insert(user_id.to_owned(), identity.clone())
    }

    /// The pinned identity of `user_id`.
    pub fn pinned(&self, user_id: &str) -> Option<&IdentityPublicKey> {
        self.contacts.get(user_id)
    }

    /// Unpins `user_id`.
    pub fn forget(&mut self, user_id: &str) -> Option<IdentityPublicKey> {
        self.contacts.remove(user_id)
    }
}
