//! auth-svc's own settings, read through the same injectable environment source as the mesh
//! settings (`CAREMESH_AUTH_*`).

use std::time::Duration;

use caremesh_runtime::config::{ConfigError, EnvSource, bounded_u32};

use crate::password::HashCost;

/// Requests per minute from one source address, with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// Access token lifetime (at most 10 minutes).
    pub access_token_ttl: Duration,
    /// A session ends after this long without a refresh.
    pub session_idle_timeout: Duration,
    /// A session ends this long after login, whatever happens.
    pub session_lifetime: Duration,
    /// Failed logins (in a row) after which an account is locked until an admin unlocks it.
    pub lockout_threshold: u32,
    /// Failed logins (in a row) before each further attempt has to wait, doubling each time.
    pub backoff_after: u32,
    pub password_cost: HashCost,
    /// Argon2id hashes and checks that may run at once (each holds `password_cost` memory).
    pub argon2_concurrency: usize,
    /// Sign-ins (and other hashes) that may wait for a turn; the next is refused.
    pub argon2_queue: usize,
    pub login_rate: RateLimit,
    pub register_rate: RateLimit,
    /// How long the second step of a login may take.
    pub challenge_ttl: Duration,
    /// How long a TOTP enrollment waits for its confirming code.
    pub enrollment_ttl: Duration,
    /// The issuer shown in authenticator apps.
    pub totp_issuer: String,
    /// The WebAuthn relying party id: the web app's host name (passkeys are bound to it).
    pub webauthn_rp_id: String,
    /// The one origin whose passkey ceremonies are accepted: the web app's.
    pub webauthn_origin: String,
    /// How long a passkey ceremony waits for the authenticator's answer.
    pub ceremony_ttl: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(10 * 60),
            session_idle_timeout: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 60 * 60),
            lockout_threshold: 20,
            backoff_after: 5,
            password_cost: HashCost::OWASP_MINIMUM,
            argon2_concurrency: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            argon2_queue: 64,
            login_rate: RateLimit {
                per_minute: 60,
                burst: 20,
            },
            register_rate: RateLimit {
                per_minute: 10,
                burst: 5,
            },
            challenge_ttl: Duration::from_secs(5 * 60),
            enrollment_ttl: Duration::from_secs(10 * 60),
            totp_issuer: "caremesh".to_owned(),
            webauthn_rp_id: DEFAULT_RP_ID.to_owned(),
            webauthn_origin: DEFAULT_ORIGIN.to_owned(),
            ceremony_ttl: Duration::from_secs(5 * 60),
        }
    }
}

pub const ACCESS_TOKEN_TTL_SECONDS: &str = "CAREMESH_AUTH_ACCESS_TOKEN_TTL_SECONDS";
pub const SESSION_IDLE_SECONDS: &str = "CAREMESH_AUTH_SESSION_IDLE_SECONDS";
pub const SESSION_LIFETIME_SECONDS: &str = "CAREMESH_AUTH_SESSION_LIFETIME_SECONDS";
pub const LOCKOUT_THRESHOLD: &str = "CAREMESH_AUTH_LOCKOUT_THRESHOLD";
pub const BACKOFF_AFTER: &str = "CAREMESH_AUTH_BACKOFF_AFTER";
pub const LOGIN_RATE_PER_MINUTE: &str = "CAREMESH_AUTH_LOGIN_RATE_PER_MINUTE";
pub const REGISTER_RATE_PER_MINUTE: &str = "CAREMESH_AUTH_REGISTER_RATE_PER_MINUTE";
pub const ARGON2_MEMORY_KIB: &str = "CAREMESH_AUTH_ARGON2_MEMORY_KIB";
pub const ARGON2_ITERATIONS: &str = "CAREMESH_AUTH_ARGON2_ITERATIONS";
pub const ARGON2_CONCURRENCY: &str = "CAREMESH_AUTH_ARGON2_CONCURRENCY";
pub const ARGON2_QUEUE: &str = "CAREMESH_AUTH_ARGON2_QUEUE";
/// The relying party id of passkeys: the web app's host name, without scheme or port.
pub const WEBAUTHN_RP_ID: &str = "CAREMESH_AUTH_WEBAUTHN_RP_ID";
/// The web app's origin (`https://host[:port]`), the only one whose passkey ceremonies count.
pub const WEBAUTHN_ORIGIN: &str = "CAREMESH_AUTH_WEBAUTHN_ORIGIN";

const DEFAULT_RP_ID: &str = "localhost";
/// `caremesh up`'s web origin on its default port.
const DEFAULT_ORIGIN: &str = "https://localhost:8443";

/// Every service refuses a token that claims to live longer.
const MAX_ACCESS_TOKEN_TTL: u32 = caremesh_token::MAX_LIFETIME_SECONDS as u32;

impl AuthSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some(seconds) = bounded_u32(
            env,
            ACCESS_TOKEN_TTL_SECONDS,
            10,
            MAX_ACCESS_TOKEN_TTL,
            "10 to 600 seconds",
        )? {
            settings.access_token_ttl = Duration::from_secs(seconds.into());
        }
        if let Some(seconds) = bounded_u32(env, SESSION_IDLE_SECONDS, 60, 86_400, "60 to 86400 seconds")? {
            settings.session_idle_timeout = Duration::from_secs(seconds.into());
        }
        if let Some(seconds) = bounded_u32(env, SESSION_LIFETIME_SECONDS, 60, 7 * 86_400, "60 seconds to 7 days")? {
            settings.session_lifetime = Duration::from_secs(seconds.into());
        }
        if let Some(count) = bounded_u32(
            env,
            LOCKOUT_THRESHOLD,
            1,
            100,
            "1 to 100 (NIST SP 800-63B caps it at 100)",
        )? {
            settings.lockout_threshold = count;
        }
        if let Some(count) = bounded_u32(env, BACKOFF_AFTER, 1, 100, "1 to 100")? {
            settings.backoff_after = count;
        }
        if let Some(rate) = bounded_u32(env, LOGIN_RATE_PER_MINUTE, 1, 1_000_000, "1 to 1000000")? {
            settings.login_rate = RateLimit {
                per_minute: rate,
                burst: rate.div_ceil(3).max(1),
            };
        }
        if let Some(rate) = bounded_u32(env, REGISTER_RATE_PER_MINUTE, 1, 1_000_000, "1 to 1000000")? {
            settings.register_rate = RateLimit {
                per_minute: rate,
                burst: rate.div_ceil(2).max(1),
            };
        }
        let minimum = HashCost::OWASP_MINIMUM;
        if let Some(memory) = bounded_u32(
            env,
            ARGON2_MEMORY_KIB,
            minimum.memory_kib,
            4 * 1024 * 1024,
            "19456 KiB or more",
        )? {
            settings.password_cost.memory_kib = memory;
        }
        if let Some(iterations) = bounded_u32(env, ARGON2_ITERATIONS, minimum.iterations, 100, "2 or more")? {
            settings.password_cost.iterations = iterations;
        }
        if let Some(concurrency) = bounded_u32(env, ARGON2_CONCURRENCY, 1, 256, "1 to 256")? {
            settings.argon2_concurrency = concurrency as usize;
        }
        if let Some(queue) = bounded_u32(env, ARGON2_QUEUE, 0, 100_000, "0 to 100000")? {
            settings.argon2_queue = queue as usize;
        }
        if let Some(rp_id) = env.get(WEBAUTHN_RP_ID) {
            settings.webauthn_rp_id = rp_id;
        }
        if let Some(origin) = env.get(WEBAUTHN_ORIGIN) {
            settings.webauthn_origin = origin;
        }
        crate::passkeys::relying_party(&settings).map_err(|expected| ConfigError::Invalid {
            key: format!("{WEBAUTHN_RP_ID}/{WEBAUTHN_ORIGIN}"),
            value: format!("{} / {}", settings.webauthn_rp_id, settings.webauthn_origin),
            expected,
        })?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caremesh_runtime::config::MapEnv;

    #[test]
    fn settings_are_read_and_bounded() {
        let env = MapEnv::default()
            .set(LOCKOUT_THRESHOLD, "3")
            .set(SESSION_IDLE_SECONDS, "120");
        let settings = AuthSettings::from_env(&env).unwrap();
        assert_eq!(settings.lockout_threshold, 3);
        assert_eq!(settings.session_idle_timeout, Duration::from_secs(120));
        let too_many = MapEnv::default().set(LOCKOUT_THRESHOLD, "1000");
        assert!(
            AuthSettings::from_env(&too_many)
                .unwrap_err()
                .to_string()
                .contains("100")
        );
        let weak = MapEnv::default().set(ARGON2_MEMORY_KIB, "1024");
        assert!(AuthSettings::from_env(&weak).is_err(), "below OWASP's minimum");
        let queue = MapEnv::default().set(ARGON2_CONCURRENCY, "1").set(ARGON2_QUEUE, "0");
        let settings = AuthSettings::from_env(&queue).unwrap();
        assert_eq!((settings.argon2_concurrency, settings.argon2_queue), (1, 0));
        assert!(AuthSettings::default().argon2_concurrency >= 1, "the number of cores");
        let none = MapEnv::default().set(ARGON2_CONCURRENCY, "0");
        assert!(AuthSettings::from_env(&none).is_err(), "at least one hash at a time");
        let web = MapEnv::default()
            .set(WEBAUTHN_RP_ID, "care.example.org")
            .set(WEBAUTHN_ORIGIN, "https://care.example.org");
        let settings = AuthSettings::from_env(&web).unwrap();
        assert_eq!(settings.webauthn_origin, "https://care.example.org");
        let elsewhere = MapEnv::default()
            .set(WEBAUTHN_RP_ID, "care.example.org")
            .set(WEBAUTHN_ORIGIN, "https://evil.example.net");
        let refusal = AuthSettings::from_env(&elsewhere).unwrap_err().to_string();
        assert!(refusal.contains("origin"), "{refusal}");
        let not_a_url = MapEnv::default().set(WEBAUTHN_ORIGIN, "localhost:8443");
        assert!(AuthSettings::from_env(&not_a_url).is_err());
    }
}
