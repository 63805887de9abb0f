//! caremesh access tokens.
//!
//! Format: `cmt1.<payload>.<signature>`. `payload` is the base64url (unpadded) JSON of
//! [`Claims`]; `signature` is the base64url Ed25519 signature over the ASCII bytes
//! `cmt1.<payload>`. The version prefix fixes the algorithm: there is no `alg` header to swap, and
//! anything that is not `cmt1` is refused before any parsing. The key id in the claims only
//! selects a verification key; the claims are trusted only after the signature checks out, and
//! after that the expiry and issue time are checked against the caller's clock.
//!
//! auth-svc signs ([`sign`]); every service verifies locally ([`verify`], or through a
//! [`VerifiedTokens`] cache) with the keys auth-svc publishes, found by key id.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The only token version this code accepts.
pub const PREFIX: &str = "cmt1";

/// Longest token accepted: anything larger is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Tolerated clock difference between auth-svc and the verifying service.
pub const CLOCK_SKEW_SECONDS: i64 = 30;

/// The longest lifetime (`exp - iat`) of an access token; a token claiming more is refused.
pub const MAX_LIFETIME_SECONDS: i64 = 600;

/// How long a revocation matters: a token issued before it has expired everywhere by then.
pub const REVOCATION_RETENTION_SECONDS: i64 = MAX_LIFETIME_SECONDS + 2 * CLOCK_SKEW_SECONDS;

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Key id of the signing key.
    pub kid: String,
    /// The user id.
    pub sub: String,
    /// `patient`, `doctor`, `nurse`, `admin` or `auditor`.
    pub role: String,
    /// The user's attributes at issue time, including derived ones (`role:doctor`, `patient:<id>`).
    pub attrs: Vec<String>,
    /// The session id.
    pub sid: String,
    /// Authenticator assurance level: 1 (password) or 2 (password and second factor).
    pub aal: u8,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a caremesh access token (expected the cmt1 format)")]
    Malformed,
    #[error("the token was signed with an unknown key ({0})")]
    UnknownKey(String),
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued in the future")]
    NotYetValid,
    #[error("cannot encode the claims")]
    Encode,
}

/// The id of a verification key: the first 16 hex digits of SHA-256 of its bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(digest.get(..8).unwrap_or_default())
}

/// Signs `claims` (whose `kid` must name `key`).
pub fn sign(claims: &Claims, key: &SigningKey) -> Result<String, TokenError> {
    let json = serde_json::to_vec(claims).map_err(|_| TokenError::Encode)?;
    let signed = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
    let signature = key.sign(signed.as_bytes());
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
}

/// The claims of a token, *unverified*: only for choosing the verification key.
pub fn peek_key_id(token: &str) -> Result<String, TokenError> {
    Ok(split(token)?.claims.kid)
}

struct Parts<'a> {
    signed: &'a str,
    claims: Claims,
    signature: Signature,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (prefix, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    if prefix != PREFIX {
        return Err(TokenError::Malformed);
    }
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Malformed)?;
    Ok(Parts {
        signed,
        claims,
        signature,
    })
}

/// Verifies `token` with the key `lookup` returns for its key id, and checks its lifetime at `now`
/// (Unix seconds).
pub fn verify(token: &str, lookup: impl FnOnce(&str) -> Option<VerifyingKey>, now: i64) -> Result<Claims, TokenError> {
    let parts = split(token)?;
    let key = lookup(&parts.claims.kid).ok_or_else(|| TokenError::UnknownKey(parts.claims.kid.clone()))?;
    // The key id must be the key's own: a lookup that ignored the id cannot be tricked.
    if subtle::ConstantTimeEq::ct_eq(key_id(&key).as_bytes(), parts.claims.kid.as_bytes()).unwrap_u8() != 1 {
        return Err(TokenError::UnknownKey(parts.claims.kid));
    }
    key.verify_strict(parts.signed.as_bytes(), &parts.signature)
        .map_err(|_| TokenError::BadSignature)?;
    check_lifetime(&parts.claims, now)?;
    Ok(parts.claims)
}

/// Whether `claims` are valid at `now` (Unix seconds): not expired, not issued in the future.
fn check_lifetime(claims: &Claims, now: i64) -> Result<(), TokenError> {
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.iat > now + CLOCK_SKEW_SECONDS {
        return Err(TokenError::NotYetValid);
    }
    // Revocations are kept only this long (REVOCATION_RETENTION_SECONDS): no token may outlive them.
    if claims.exp.saturating_sub(claims.iat) > MAX_LIFETIME_SECONDS {
        return Err(TokenError::Malformed);
    }
    Ok(())
}

/// Tokens whose signature already checked out, by SHA-256 of the whole token. A client sends the
/// same token with every call until it expires, and one Ed25519 verification costs more than the
/// rest of a small call's authentication; a remembered token skips only that. On every use the
/// lifetime is checked at the caller's `now` and the signing key must still be one `lookup` knows
/// (not retired), so answers are those of [`verify`]. Bounded: when full, expired entries go, and
/// if that is not enough, all of them.
#[derive(Debug)]
pub struct VerifiedTokens {
    by_digest: RwLock<HashMap<[u8; 32], Claims>>,
    capacity: usize,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_digest: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// [`verify`], skipping the signature check for a token verified before.
    pub fn verify(
        &self,
        token: &str,
        lookup: impl Fn(&str) -> Option<VerifyingKey>,
        now: i64,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .by_digest
            .read()
            .ok()
            .and_then(|verified| verified.get(&digest).cloned());
        if let Some(claims) = remembered
            && lookup(&claims.kid).is_some()
        {
            check_lifetime(&claims, now)?;
            return Ok(claims);
        }
        let claims = verify(token, lookup, now)?;
        if let Ok(mut verified) = self.by_digest.write() {
            if verified.len() >= self.capacity {
                verified.retain(|_, claims| now < claims.exp);
                if verified.len() >= self.capacity {
                    verified.clear();
                }
            }
            verified.insert(digest, claims.clone());
        }
        Ok(claims)
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.by_digest.read().map_or(0, |verified| verified.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims(key: &SigningKey) -> Claims {
        Claims {
            kid: key_id(&key.verifying_key()),
            sub: "0190b0a0-0000-7000-8000-000000000001".to_owned(),
            role: "doctor".to_owned(),
            attrs: vec!["role:doctor".to_owned(), "dept:cardiology".to_owned()],
            sid: "0190b0a0-0000-7000-8000-0000000000aa".to_owned(),
            aal: 2,
            iat: 1_000,
            exp: 1_600,
        }
    }

    fn lookup(key: &SigningKey) -> impl Fn(&str) -> Option<VerifyingKey> + '_ {
        move |kid| (kid == key_id(&key.verifying_key())).then(|| key.verifying_key())
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let key = key(1);
        let token = sign(&claims(&key), &key).unwrap();
        assert!(token.starts_with("cmt1."));
        assert_eq!(verify(&token, lookup(&key), 1_100).unwrap(), claims(&key));
        assert_eq!(verify(&token, lookup(&key), 1_600), Err(TokenError::Expired));
        assert_eq!(verify(&token, lookup(&key), 900), Err(TokenError::NotYetValid));
        assert!(
            verify(&token, lookup(&key), 1_000 - CLOCK_SKEW_SECONDS).is_ok(),
            "small skew tolerated"
        );
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let key = key(1);
        let token = sign(&claims(&key), &key).unwrap();
        let (_, payload, signature) = {
            let mut parts = token.split('.');
            (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
        };
        // Raise the role inside an otherwise valid token.
        let mut forged = claims(&key);
        forged.role = "admin".to_owned();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("cmt1.{forged_payload}.{signature}");
        assert_eq!(verify(&tampered, lookup(&key), 1_100), Err(TokenError::BadSignature));
        // Another version prefix, a JWT with alg=none, garbage.
        assert_eq!(
            verify(&format!("cmt2.{payload}.{signature}"), lookup(&key), 1_100),
            Err(TokenError::Malformed)
        );
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), payload);
        assert_eq!(verify(&none, lookup(&key), 1_100), Err(TokenError::Malformed));
        for garbage in ["", ".", "cmt1..", "cmt1.!!.!!", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(
                verify(garbage, lookup(&key), 1_100),
                Err(TokenError::Malformed),
                "{garbage:.20}"
            );
        }
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let (good, evil) = (key(1), key(2));
        // The attacker names the real key id but signs with their own key.
        let token = sign(&claims(&good), &evil).unwrap();
        assert_eq!(verify(&token, lookup(&good), 1_100), Err(TokenError::BadSignature));
        // Or names their own key id, which the verifier does not know.
        let token = sign(&claims(&evil), &evil).unwrap();
        assert!(matches!(
            verify(&token, lookup(&good), 1_100),
            Err(TokenError::UnknownKey(_))
        ));
        // A lookup that hands out a key for any id is caught by the key id check.
        let token = sign(&claims(&evil), &evil).unwrap();
        assert!(matches!(
            verify(&token, |_| Some(good.verifying_key()), 1_100),
            Err(TokenError::UnknownKey(_))
        ));
    }

    #[test]
    fn remembered_tokens_get_the_answers_of_a_full_verification() {
        let (good, evil) = (key(1), key(2));
        let cache = VerifiedTokens::new(2);
        let token = sign(&claims(&good), &good).unwrap();
        assert_eq!(cache.verify(&token, lookup(&good), 1_100).unwrap(), claims(&good));
        assert_eq!(cache.len(), 1);
        // Remembered: still refused once expired, or when its key is no longer known (retired).
        assert_eq!(cache.verify(&token, lookup(&good), 1_100).unwrap(), claims(&good));
        assert_eq!(cache.verify(&token, lookup(&good), 1_600), Err(TokenError::Expired));
        assert_eq!(
            cache.verify(&token, |_| None, 1_100),
            Err(TokenError::UnknownKey(claims(&good).kid))
        );
        assert_eq!(cache.verify(&token, lookup(&good), 900), Err(TokenError::NotYetValid));
        // Failures are not remembered: a forged token fails every time.
        let forged = sign(&claims(&good), &evil).unwrap();
        for _ in 0..2 {
            assert_eq!(
                cache.verify(&forged, lookup(&good), 1_100),
                Err(TokenError::BadSignature)
            );
        }
        assert_eq!(cache.len(), 1);
        // Bounded: a full cache drops expired entries first, then everything.
        let later = Claims {
            iat: 1_500,
            exp: 2_000,
            ..claims(&good)
        };
        let second = sign(&later, &good).unwrap();
        cache.verify(&second, lookup(&good), 1_550).unwrap();
        assert_eq!(cache.len(), 2);
        let third = sign(
            &Claims {
                exp: 2_001,
                ..later.clone()
            },
            &good,
        )
        .unwrap();
        cache.verify(&third, lookup(&good), 1_700).unwrap();
        assert_eq!(cache.len(), 2, "the expired first token made room");
        let fourth = sign(&Claims { exp: 2_002, ..later }, &good).unwrap();
        cache.verify(&fourth, lookup(&good), 1_700).unwrap();
        assert_eq!(cache.len(), 1, "nothing had expired, so all were dropped");
    }
}
