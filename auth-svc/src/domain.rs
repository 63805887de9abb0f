//! auth-svc's domain state and the helpers its operations share. The operations themselves live
//! in `accounts` (registration and administration), `sessions` (login, refresh, logout, tokens)
//! and `mfa` (TOTP and recovery codes). No tonic types here: the adapter in `grpc` unpacks
//! requests into these calls and maps [`Error`]s to statuses.

use std::net::IpAddr;
use std::sync::Arc;

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::auth::Principal;
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::db::Writer;
use caremesh_runtime::kek::Kek;
pub(crate) use caremesh_runtime::outbox::Audited;
use caremesh_runtime::outbox::{Actor, Outbox};
use caremesh_runtime::{Error, ServiceRuntime};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};

use crate::keys::SigningKeys;
use crate::password::Hashing;
use crate::settings::AuthSettings;
use crate::storage::user;
use crate::throttle::{SourceLimiter, UsernameBackoff};

/// Who is calling, as the audit log records it.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub user_id: String,
    pub role: String,
    pub session_id: String,
    pub source: Option<IpAddr>,
    pub source_address: String,
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user_id.clone(),
            role: self.role.clone(),
            session_id: self.session_id.clone(),
            source_address: self.source_address.clone(),
        }
    }

    pub fn anonymous(source: Option<std::net::SocketAddr>) -> Self {
        Self {
            source: source.map(|addr| addr.ip()),
            source_address: source.map(|addr| addr.to_string()).unwrap_or_default(),
            ..Self::default()
        }
    }

    pub fn user(principal: &Principal, source: Option<std::net::SocketAddr>) -> Self {
        Self {
            user_id: principal.user_id.clone(),
            role: principal.role.clone(),
            session_id: principal.session_id.clone(),
            ..Self::anonymous(source)
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthDomain {
    pub(crate) db: DatabaseConnection,
    /// This process's writers, in turn (shared with the audit relay).
    pub(crate) writer: Writer,
    pub(crate) clock: SharedClock,
    pub(crate) kek: Arc<Kek>,
    pub(crate) outbox: Outbox,
    pub(crate) settings: Arc<AuthSettings>,
    pub(crate) keys: Arc<SigningKeys>,
    pub(crate) login_limiter: Arc<SourceLimiter>,
    pub(crate) register_limiter: Arc<SourceLimiter>,
    pub(crate) backoff: Arc<UsernameBackoff>,
    /// The WebAuthn relying party (the web app's origin and RP id).
    pub(crate) webauthn: Arc<webauthn_rs::Webauthn>,
    /// Every Argon2id hash and check, in one fair, bounded queue: at most
    /// `settings.argon2_concurrency` at once (so a login flood can take neither every core nor
    /// unbounded memory), at most `settings.argon2_queue` waiting.
    hashing: Arc<Hashing>,
    /// A hash to check passwords of unknown usernames against (same cost as a real check).
    decoy_hash: Arc<String>,
}

impl AuthDomain {
    pub async fn start(runtime: &ServiceRuntime, settings: AuthSettings) -> Result<Self, Error> {
        let keys = SigningKeys::new();
        keys.ensure(&runtime.writer, &runtime.kek, runtime.clock.now()).await?;
        let hashing = Arc::new(Hashing::new(settings.argon2_concurrency, settings.argon2_queue));
        let decoy_hash = hashing.decoy(settings.password_cost).await?;
        let webauthn = crate::passkeys::relying_party(&settings)
            .map_err(|expected| Error::internal("the WebAuthn relying party", format!("expected {expected}")))?;
        Ok(Self {
            webauthn: Arc::new(webauthn),
            db: runtime.db.clone(),
            writer: runtime.writer.clone(),
            clock: Arc::clone(&runtime.clock),
            kek: Arc::clone(&runtime.kek),
            outbox: runtime.outbox.clone(),
            login_limiter: Arc::new(SourceLimiter::new(settings.login_rate)),
            register_limiter: Arc::new(SourceLimiter::new(settings.register_rate)),
            backoff: Arc::new(UsernameBackoff::new(settings.backoff_after)),
            settings: Arc::new(settings),
            keys: Arc::new(keys),
            hashing,
            decoy_hash: Arc::new(decoy_hash),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Hashes a password off the async threads, in turn (RESOURCE_EXHAUSTED when the queue is
    /// full).
    pub(crate) async fn hash_password(&self, password: &str) -> Result<String, Error> {
        self.hashing.hash(password, self.settings.password_cost).await
    }

    /// Checks a password against `stored` (or against the decoy when there is no account), in
    /// the same queue either way, so unknown usernames wait and cost what real checks do.
    pub(crate) async fn verify_password(&self, password: &str, stored: Option<&str>) -> Result<bool, Error> {
        let (stored, real) = match stored {
            Some(stored) => (stored.to_owned(), true),
            None => (self.decoy_hash.as_ref().clone(), false),
        };
        let matches = self.hashing.verify(password, stored).await?;
        Ok(matches && real)
    }

    /// Writes an audit event through `conn` (the transaction of the change it describes).
    pub(crate) async fn audit<C: ConnectionTrait>(
        &self,
        conn: &C,
        caller: &Caller,
        audited: Audited<'_>,
    ) -> Result<(), Error> {
        let audited = Audited {
            purpose_of_use: "HSYSADMIN",
            ..audited
        };
        self.outbox.record_action(conn, &caller.actor(), audited).await
    }

    /// Audits a refused administrative call and returns the refusal.
    pub async fn refused(&self, caller: &Caller, operation: &str, refusal: Error) -> Error {
        let audited = Audited {
            action: AuditAction::Execute,
            operation,
            entity_type: "user",
            entity_id: "",
            patient_id: "",
            outcome: AuditOutcome::Denied,
            reason: "",
            purpose_of_use: "HSYSADMIN",
            emergency: false,
        };
        self.outbox
            .record_refusal(&self.writer, &caller.actor(), audited, refusal)
            .await
    }

    pub(crate) async fn find_user<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<user::Model, Error> {
        user::Entity::find_by_id(user_id.to_owned())
            .one(conn)
            .await?
            .ok_or_else(|| Error::not_found("USER_NOT_FOUND", format!("no user with id {user_id}")))
    }
}

/// Normalizes a username for storage and lookup.
pub fn normalize_username(username: &str) -> String {
    username.trim().to_lowercase()
}

/// Refuses usernames that are not 3 to 64 of `a-z 0-9 . _ -`.
pub fn validate_username(username: &str) -> Result<(), Error> {
    let valid = (3..=64).contains(&username.len())
        && username
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "INVALID_USERNAME",
            "a username is 3 to 64 characters: lower-case letters, digits, '.', '_' and '-'",
        ))
    }
}

const MAX_PAGE_SIZE: u64 = 500;
const DEFAULT_PAGE_SIZE: u64 = 50;

/// A request's page size: 0 is the default, larger ones are capped, negative ones refused.
pub fn page_size(requested: i32) -> Result<u64, Error> {
    match u64::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
        Err(_) => Err(Error::invalid_argument(
            "INVALID_PAGE_SIZE",
            "page_size must not be negative",
        )),
    }
}

/// A page token: the key the next page starts after, tagged with what is being listed.
pub fn encode_page_token(kind: &str, after: &str) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("{kind}{after}"),
    )
}

pub fn decode_page_token(kind: &str, token: &str) -> Result<String, Error> {
    let invalid = || Error::invalid_argument("INVALID_PAGE_TOKEN", "the page_token is not one this service issued");
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind).map(str::to_owned).ok_or_else(invalid)
}

/// The etag of a user row.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Checks a client's etag against the row's version (an empty etag skips the check).
pub fn check_etag(given: &str, version: i64, required: bool) -> Result<(), Error> {
    if given.is_empty() && !required {
        return Ok(());
    }
    if given.is_empty() {
        return Err(Error::invalid_argument(
            "ETAG_REQUIRED",
            "send the user's current etag (from GetUser)",
        ));
    }
    if given != etag(version) {
        return Err(Error::aborted(
            "ETAG_MISMATCH",
            "the user changed since you read it: read it again and retry",
        ));
    }
    Ok(())
}
