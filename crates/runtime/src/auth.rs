//! How every service authenticates users: the bearer token from the `authorization` metadata,
//! verified locally against auth-svc's published Ed25519 keys ([`KeySetVerifier`]), with the
//! caller's time. Keys are cached; a token naming an unknown key id triggers one refresh (rate
//! limited), so signing-key rotation needs no restart anywhere. Tokens whose signature checked
//! out are remembered ([`VerifiedTokens`]), so a client's every call costs one signature check
//! per token, not per call. Then the revocation feed ([`crate::revocation`]) has the last word:
//! a revoked session is refused and removed attributes are dropped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use caremesh_proto::auth::v1::GetVerificationKeysRequest;
use caremesh_proto::auth::v1::auth_service_client::AuthServiceClient;
use caremesh_token::{Claims, TokenError, VerifiedTokens};
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;

use crate::revocation::RevocationFeed;
use crate::{Error, MeshChannel, time};

/// Who a verified access token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub role: String,
    /// Namespaced attributes (`role:doctor`, `dept:cardiology`, `patient:<id>`, ...).
    pub attributes: Vec<String>,
    pub session_id: String,
    /// Authenticator assurance level: 1 (password only) or 2 (with a second factor).
    pub aal: u8,
    /// When the access token was issued (Unix seconds): revocations apply to tokens issued
    /// before them.
    pub issued_at: i64,
}

impl Principal {
    pub fn from_claims(claims: Claims) -> Self {
        Self {
            user_id: claims.sub,
            role: claims.role,
            attributes: claims.attrs,
            session_id: claims.sid,
            aal: claims.aal,
            issued_at: claims.iat,
        }
    }

    /// Health data and administration need a second factor (AAL2).
    pub fn require_aal2(&self) -> Result<(), Error> {
        if self.aal >= 2 {
            Ok(())
        } else {
            Err(Error::permission_denied(
                "MFA_REQUIRED",
                "this needs a session with a second factor: enroll and confirm TOTP, then log in again",
            ))
        }
    }

    /// The caller must have one of `roles` (and AAL2).
    pub fn require_role(&self, roles: &[&str]) -> Result<(), Error> {
        self.require_aal2()?;
        if roles.contains(&self.role.as_str()) {
            Ok(())
        } else {
            Err(Error::permission_denied(
                "ROLE_NOT_ALLOWED",
                format!("this needs the role {}; you are {}", roles.join(" or "), self.role),
            ))
        }
    }

    pub fn has_attribute(&self, attribute: &str) -> bool {
        self.attributes.iter().any(|held| held == attribute)
    }
}

/// Verifies access tokens.
#[tonic::async_trait]
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, Error>;
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Result<&str, Error> {
    let missing = || {
        Error::unauthenticated(
            "MISSING_ACCESS_TOKEN",
            "send an access token as `authorization: Bearer <token>` (log in with auth-svc to get one)",
        )
    };
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

/// Maps a token failure to what the caller should do.
pub fn token_error(error: TokenError) -> Error {
    match error {
        TokenError::Expired => Error::unauthenticated(
            "TOKEN_EXPIRED",
            "the access token has expired: refresh it with your refresh token",
        ),
        TokenError::NotYetValid => Error::unauthenticated(
            "TOKEN_NOT_YET_VALID",
            "the access token is not valid yet: check your clock",
        ),
        TokenError::UnknownKey(_) | TokenError::BadSignature | TokenError::Malformed | TokenError::Encode => {
            Error::unauthenticated("INVALID_TOKEN", "the access token is not valid: log in again")
        }
    }
}

/// The least time between two key fetches: tokens with made-up key ids cannot make a service
/// hammer auth-svc, and a freshly rotated key is picked up after at most this delay.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// How many verified tokens a service remembers (about 1 MiB): more than the live sessions of a
/// hospital's busiest hour; beyond it, the cache starts over.
pub const VERIFIED_TOKENS: usize = 4096;

#[derive(Debug, Default)]
struct KeyCache {
    keys: HashMap<String, (VerifyingKey, Option<DateTime<Utc>>)>,
    fetched_at: Option<Instant>,
    ttl: Duration,
}

/// Verifies tokens with the keys auth-svc publishes (`AuthService.GetVerificationKeys`).
#[derive(Debug)]
pub struct KeySetVerifier {
    client: AuthServiceClient<MeshChannel>,
    cache: RwLock<KeyCache>,
    refreshing: tokio::sync::Mutex<()>,
    verified: VerifiedTokens,
    revocations: Arc<RevocationFeed>,
}

impl KeySetVerifier {
    pub fn new(auth: MeshChannel) -> Self {
        Self {
            revocations: Arc::new(RevocationFeed::new(auth.clone())),
            client: AuthServiceClient::new(auth),
            cache: RwLock::new(KeyCache::default()),
            refreshing: tokio::sync::Mutex::new(()),
            verified: VerifiedTokens::new(VERIFIED_TOKENS),
        }
    }

    /// The revocation feed this verifier applies (its poller is run by the service).
    pub fn revocations(&self) -> Arc<RevocationFeed> {
        Arc::clone(&self.revocations)
    }

    fn lookup(&self, kid: &str, now: DateTime<Utc>) -> Option<VerifyingKey> {
        let cache = self.cache.read().ok()?;
        let (key, retire) = cache.keys.get(kid)?;
        retire.is_none_or(|retire| now < retire).then_some(*key)
    }

    fn stale(&self) -> bool {
        self.cache.read().map_or(true, |cache| {
            cache.fetched_at.is_none_or(|fetched| fetched.elapsed() >= cache.ttl)
        })
    }

    /// How long until another fetch is allowed.
    fn refresh_wait(&self) -> Duration {
        self.cache
            .read()
            .ok()
            .and_then(|cache| cache.fetched_at)
            .map_or(Duration::ZERO, |fetched| {
                MIN_REFRESH_INTERVAL.saturating_sub(fetched.elapsed())
            })
    }

    async fn refresh(&self, kid: &str, now: DateTime<Utc>) -> Result<(), Error> {
        let _one_at_a_time = self.refreshing.lock().await;
        // Another task may have refreshed while we waited for the lock.
        if !self.stale() && (kid.is_empty() || self.lookup(kid, now).is_some()) {
            return Ok(());
        }
        // Fetches are spaced out; one holding the lock also holds back the others, so a flood
        // of made-up key ids costs auth-svc at most one fetch per interval.
        tokio::time::sleep(self.refresh_wait()).await;
        let response = self
            .client
            .clone()
            .get_verification_keys(GetVerificationKeysRequest {})
            .await
            .map_err(|status| {
                Error::unavailable(
                    "AUTH_KEYS_UNAVAILABLE",
                    format!(
                        "cannot fetch token verification keys from auth-svc: {}",
                        status.message()
                    ),
                )
            })?
            .into_inner();
        let mut keys = HashMap::new();
        for key in response.keys {
            let Ok(bytes) = <[u8; 32]>::try_from(key.public_key.as_slice()) else {
                continue;
            };
            let Ok(verifying) = VerifyingKey::from_bytes(&bytes) else {
                continue;
            };
            let retire = key.retire_time.as_ref().and_then(time::from_timestamp);
            keys.insert(key.key_id, (verifying, retire));
        }
        let ttl = response
            .cache_ttl
            .and_then(|ttl| u64::try_from(ttl.seconds).ok())
            .map_or(Duration::from_secs(300), Duration::from_secs);
        if let Ok(mut cache) = self.cache.write() {
            *cache = KeyCache {
                keys,
                fetched_at: Some(Instant::now()),
                ttl,
            };
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl TokenVerifier for KeySetVerifier {
    async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, Error> {
        if self.stale() {
            // Periodic refresh; a known key keeps working while auth-svc is briefly unreachable.
            if let Err(error) = self.refresh("", now).await {
                tracing::warn!(%error, "token keys not refreshed; using the cached ones");
            }
        }
        let verify = || {
            self.verified
                .verify(token, |kid| self.lookup(kid, now), now.timestamp())
        };
        let claims = match verify() {
            // A key we have not seen yet (a rotation): fetch the published keys and try again.
            Err(TokenError::UnknownKey(kid)) => {
                self.refresh(&kid, now).await?;
                verify()
            }
            other => other,
        };
        let principal = claims.map(Principal::from_claims).map_err(token_error)?;
        self.revocations.check(principal).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn metadata(value: &str) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", value.parse().unwrap());
        metadata
    }

    #[test]
    fn bearer_tokens_are_read_and_anything_else_is_unauthenticated() {
        assert_eq!(bearer_token(&metadata("Bearer abc.def")).unwrap(), "abc.def");
        assert_eq!(bearer_token(&metadata("bearer  abc ")).unwrap(), "abc");
        for bad in ["Basic dXNlcg==", "Bearer ", "abc"] {
            let error = bearer_token(&metadata(bad)).unwrap_err();
            assert_eq!(error.code(), ErrorCode::Unauthenticated, "{bad}");
        }
        let error = bearer_token(&tonic::metadata::MetadataMap::new()).unwrap_err();
        assert!(error.message().contains("Bearer"));
    }

    #[test]
    fn roles_and_assurance_are_enforced() {
        let principal = Principal {
            user_id: "u".to_owned(),
            role: "doctor".to_owned(),
            attributes: vec![],
            session_id: "s".to_owned(),
            aal: 1,
            issued_at: 0,
        };
        assert_eq!(principal.require_aal2().unwrap_err().reason(), "MFA_REQUIRED");
        let principal = Principal { aal: 2, ..principal };
        assert!(principal.require_role(&["doctor", "nurse"]).is_ok());
        assert_eq!(
            principal.require_role(&["admin"]).unwrap_err().reason(),
            "ROLE_NOT_ALLOWED"
        );
    }
}
