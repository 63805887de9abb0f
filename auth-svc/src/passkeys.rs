//! Passkeys (WebAuthn, through webauthn-rs): registration, listing, renaming and removal, a
//! passkey as the second factor of a login, passwordless sign-in, and the per-role policy that
//! requires passkeys.
//!
//! A ceremony is two RPCs. Between them webauthn-rs's state waits in `passkey_ceremonies` under
//! the hash of a secret token and is taken once, so an answer can be used for one finish only.
//! Every passkey requires user verification (webauthn-rs's `Passkey`), which is why a
//! discoverable passkey alone is a sign-in at AAL2.
//!
//! Counters only go up. The stored counter is raised by the same conditional UPDATE that accepts
//! a use, so an answer whose counter is at or below the stored one (a cloned authenticator) is
//! refused even when two sign-ins race, and a passkey removed after a ceremony started cannot
//! finish it. Such a refusal is audited with reason `PASSKEY_COUNTER_REGRESSION`, from which
//! audit-svc raises `ALERT_KIND_CLONED_AUTHENTICATOR`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use serde::Serialize;
use serde::de::DeserializeOwned;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
    WebauthnError,
};

use crate::accounts::{UserView, revoke_sessions};
use crate::domain::{Audited, AuthDomain, Caller};
use crate::secrets;
use crate::sessions::IssuedSession;
use crate::settings::AuthSettings;
use crate::storage::{passkey, passkey_ceremony, role_policy, user};

const MAX_NAME_CHARS: usize = 64;
/// webauthn-rs's answers are a few KiB; anything far larger is not one.
const MAX_CREDENTIAL_JSON: usize = 64 * 1024;

const REGISTER: &str = "register";
const LOGIN: &str = "login";
const SECOND_FACTOR: &str = "second_factor";

/// The relying party of the configured web origin, or what the settings should look like.
pub(crate) fn relying_party(settings: &AuthSettings) -> Result<Webauthn, &'static str> {
    let origin = Url::parse(&settings.webauthn_origin)
        .map_err(|_| "an origin such as https://care.example.org for the web app")?;
    let secure = origin.scheme() == "https" || origin.host_str() == Some("localhost");
    if !secure || origin.path() != "/" || origin.query().is_some() {
        return Err("an https:// origin (scheme, host and port only) for the web app");
    }
    WebauthnBuilder::new(&settings.webauthn_rp_id, &origin)
        .and_then(|builder| builder.rp_name("caremesh").timeout(settings.ceremony_ttl).build())
        .map_err(|_| "a relying party id that is the web origin's host name or a parent domain of it")
}

/// A passkey as its owner sees it.
#[derive(Clone, Debug)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub credential_id: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

impl From<passkey::Model> for PasskeyView {
    fn from(row: passkey::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            credential_id: row.credential_id,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            sign_count: u32::try_from(row.sign_count).unwrap_or(u32::MAX),
            backup_eligible: row.backup_eligible,
            backup_state: row.backup_state,
        }
    }
}

/// A started ceremony: the options for the browser and the token that names it. `Debug` leaves
/// the token out.
#[derive(Clone)]
pub struct Ceremony {
    pub token: String,
    pub options_json: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A registered passkey, with the recovery codes and AAL2 session of a first second factor.
#[derive(Debug)]
pub struct Registered {
    pub passkey: PasskeyView,
    pub recovery_codes: Vec<String>,
    pub upgraded: Option<IssuedSession>,
}

/// Why webauthn-rs refused an answer: the audit reason, and what the user is told.
fn refusal(error: &WebauthnError) -> (&'static str, &'static str) {
    match error {
        WebauthnError::InvalidRPOrigin => (
            "PASSKEY_WRONG_ORIGIN",
            "the passkey answered for another web site (origin): use the caremesh web app's address",
        ),
        WebauthnError::InvalidRPIDHash => (
            "PASSKEY_WRONG_RP_ID",
            "the passkey belongs to another relying party: use a passkey registered for this site",
        ),
        WebauthnError::MismatchedChallenge | WebauthnError::InvalidClientDataType => (
            "PASSKEY_WRONG_CHALLENGE",
            "the answer is for another ceremony (a replay, or an old tab): start again",
        ),
        WebauthnError::UserNotVerified | WebauthnError::UserNotPresent => (
            "PASSKEY_NOT_VERIFIED",
            "the authenticator did not verify you: passkeys need your PIN, fingerprint or face",
        ),
        WebauthnError::CredentialNotFound | WebauthnError::CredentialExcludedFromRequest => (
            "PASSKEY_UNKNOWN_CREDENTIAL",
            "this passkey is not registered (or was removed): sign in another way",
        ),
        WebauthnError::CredentialBackupEligibilityInconsistent => (
            "PASSKEY_BACKUP_FLAG_CHANGED",
            "this passkey's backup eligibility changed since it was registered: remove it and register it again",
        ),
        WebauthnError::AuthenticationFailure => (
            "PASSKEY_BAD_SIGNATURE",
            "the passkey's signature does not verify: try again or use another passkey",
        ),
        _ => (
            "PASSKEY_INVALID",
            "the authenticator's answer is not valid: try again or use another passkey",
        ),
    }
}

const COUNTER_REGRESSION: &str = "PASSKEY_COUNTER_REGRESSION";

fn counter_regression() -> Error {
    Error::unauthenticated(
        COUNTER_REGRESSION,
        "this passkey's signature counter went backwards, which happens when an authenticator was \
         cloned: sign-in refused; use another passkey or a recovery code, and tell your administrator",
    )
}

fn ceremony_invalid() -> Error {
    Error::unauthenticated(
        "CEREMONY_INVALID",
        "this passkey ceremony is unknown, used or expired: start again",
    )
}

/// A refused answer: `(audit reason, error)`.
fn refused(error: &WebauthnError) -> (&'static str, Error) {
    if matches!(error, WebauthnError::CredentialPossibleCompromise) {
        return (COUNTER_REGRESSION, counter_regression());
    }
    let (reason, message) = refusal(error);
    (reason, Error::unauthenticated("PASSKEY_REFUSED", message))
}

fn parse_answer<T: DeserializeOwned>(json: &[u8], what: &'static str) -> Result<T, Error> {
    if json.is_empty() {
        return Err(Error::invalid_argument(
            "CREDENTIAL_REQUIRED",
            format!("send {what} (the JSON of the browser's PublicKeyCredential)"),
        ));
    }
    if json.len() > MAX_CREDENTIAL_JSON {
        return Err(Error::invalid_argument(
            "CREDENTIAL_TOO_LARGE",
            format!("{what} is larger than any WebAuthn answer (at most 64 KiB)"),
        ));
    }
    serde_json::from_slice(json).map_err(|error| {
        Error::invalid_argument(
            "CREDENTIAL_MALFORMED",
            format!("{what} is not the JSON of a WebAuthn PublicKeyCredential: {error}"),
        )
    })
}

fn to_json<T: Serialize>(value: &T, context: &'static str) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|error| Error::internal(context, error))
}

fn from_json<T: DeserializeOwned>(json: &str, context: &'static str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|error| Error::internal(context, error))
}

/// The options as the browser gets them, with the RP's own choices applied: registrations ask
/// for a discoverable credential (so it can sign in without a username), and the passwordless
/// sign-in is started by a button, not by the autofill (conditional) mediation webauthn-rs sets.
fn options_json(options: &impl Serialize, discoverable: bool) -> Result<Vec<u8>, Error> {
    let mut value = serde_json::to_value(options).map_err(|error| Error::internal("passkey options", error))?;
    if discoverable
        && let Some(selection) = value
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(serde_json::Value::as_object_mut)
    {
        selection.insert("residentKey".to_owned(), "required".into());
        selection.insert("requireResidentKey".to_owned(), true.into());
    }
    if let Some(object) = value.as_object_mut() {
        object.remove("mediation");
    }
    serde_json::to_vec(&value).map_err(|error| Error::internal("passkey options", error))
}

/// Names are what the user reads in the list: 1 to 64 printable characters.
fn checked_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid_argument(
            "INVALID_PASSKEY_NAME",
            "name the passkey with 1 to 64 characters, such as \"work laptop\"",
        ));
    }
    Ok(name.to_owned())
}

fn credential_id(passkey: &Passkey) -> String {
    URL_SAFE_NO_PAD.encode(passkey.cred_id().as_slice())
}

/// The counter and flags webauthn-rs recorded at registration (they are not otherwise exposed).
fn registered_flags(passkey: &Passkey) -> (i64, bool, bool) {
    let value = serde_json::to_value(passkey).unwrap_or_default();
    let field = |name: &str| value.get("cred").and_then(|cred| cred.get(name));
    (
        field("counter").and_then(serde_json::Value::as_i64).unwrap_or(0),
        field("backup_eligible")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        field("backup_state")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    )
}

fn passkey_audit<'a>(
    action: AuditAction,
    operation: &'a str,
    entity_id: &'a str,
    outcome: AuditOutcome,
    reason: &'a str,
) -> Audited<'a> {
    Audited {
        action,
        operation,
        entity_type: "Passkey",
        entity_id,
        outcome,
        reason,
        ..Audited::default()
    }
}

pub(crate) async fn user_passkeys<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<Vec<passkey::Model>, Error> {
    Ok(passkey::Entity::find()
        .filter(passkey::Column::UserId.eq(user_id))
        .order_by_asc(passkey::Column::CreatedAt)
        .all(conn)
        .await?)
}

/// Keeps `users.passkey_count` in step with the rows (in the transaction that adds or removes).
async fn count_passkeys<C: ConnectionTrait>(conn: &C, user_id: &str, change: i32) -> Result<(), Error> {
    user::Entity::update_many()
        .col_expr(
            user::Column::PasskeyCount,
            sea_orm::sea_query::ExprTrait::add(Expr::col(user::Column::PasskeyCount), change),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Whether an admin requires passkeys of `role`.
pub(crate) async fn passkey_required<C: ConnectionTrait>(conn: &C, role: &str) -> Result<bool, Error> {
    Ok(role_policy::Entity::find_by_id(role.to_owned())
        .one(conn)
        .await?
        .is_some_and(|policy| policy.passkey_required))
}

/// A ceremony to store between its two RPCs.
struct NewCeremony<'a> {
    /// The hash of its token.
    token_hash: String,
    kind: &'a str,
    user_id: &'a str,
    session_id: &'a str,
    /// webauthn-rs's state, as JSON.
    state: String,
}

/// The second-factor half of a login challenge with passkeys: the options to send with it.
pub(crate) struct PasskeyChallenge {
    pub options_json: Vec<u8>,
}

impl AuthDomain {
    fn ceremony_expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::from_std(self.settings.ceremony_ttl).unwrap_or(TimeDelta::minutes(5))
    }

    /// Stores a ceremony's state (and drops expired ones: they are garbage).
    async fn store_ceremony<C: ConnectionTrait>(
        &self,
        conn: &C,
        ceremony: NewCeremony<'_>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Error> {
        let NewCeremony {
            token_hash,
            kind,
            user_id,
            session_id,
            state,
        } = ceremony;
        passkey_ceremony::Entity::delete_many()
            .filter(passkey_ceremony::Column::ExpiresAt.lte(now))
            .exec(conn)
            .await?;
        let expires_at = self.ceremony_expiry(now);
        passkey_ceremony::ActiveModel {
            token_hash: Set(token_hash),
            kind: Set(kind.to_owned()),
            user_id: Set(user_id.to_owned()),
            session_id: Set(session_id.to_owned()),
            state: Set(state),
            expires_at: Set(expires_at),
        }
        .insert(conn)
        .await?;
        Ok(expires_at)
    }

    /// Takes a live ceremony of `kind` once: a second take of the same token finds nothing.
    async fn take_ceremony(&self, token: &str, kind: &str) -> Result<passkey_ceremony::Model, Error> {
        let token_hash = secrets::digest(token);
        let (_turn, txn) = self.writer.begin().await?;
        let found = passkey_ceremony::Entity::find_by_id(token_hash.clone())
            .one(&txn)
            .await?
            .filter(|row| row.kind == kind && row.expires_at > self.now())
            .ok_or_else(ceremony_invalid)?;
        let taken = passkey_ceremony::Entity::delete_many()
            .filter(passkey_ceremony::Column::TokenHash.eq(token_hash))
            .exec(&txn)
            .await?;
        if taken.rows_affected != 1 {
            return Err(ceremony_invalid());
        }
        txn.commit().await?;
        Ok(found)
    }

    /// Audits a refused passkey answer (in its own transaction) and returns the error.
    async fn refuse(&self, caller: &Caller, operation: &str, entity_id: &str, reason: &str, error: Error) -> Error {
        let audited = passkey_audit(AuditAction::Execute, operation, entity_id, AuditOutcome::Denied, reason);
        let recorded = async {
            let (_turn, txn) = self.writer.begin().await?;
            self.audit(&txn, caller, audited).await?;
            txn.commit().await?;
            Ok::<(), Error>(())
        };
        match recorded.await {
            Ok(()) => error,
            Err(failure) => failure,
        }
    }

    /// Records a verified use: raises the counter, stores the updated credential and the backup
    /// state. Refuses (as a counter regression) when the stored counter is already as high, or
    /// when the passkey is gone.
    async fn record_use<C: ConnectionTrait>(
        &self,
        conn: &C,
        row: &passkey::Model,
        result: &AuthenticationResult,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut credential: Passkey = from_json(&row.credential, "reading a stored passkey")?;
        credential.update_credential(result);
        let counter = i64::from(result.counter());
        // Authenticators without a counter always send 0; all others must go up.
        let raised = if counter == 0 {
            passkey::Column::SignCount.eq(0)
        } else {
            passkey::Column::SignCount.lt(counter)
        };
        let updated = passkey::Entity::update_many()
            .col_expr(passkey::Column::SignCount, Expr::value(counter))
            .col_expr(
                passkey::Column::Credential,
                Expr::value(to_json(&credential, "storing a passkey")?),
            )
            .col_expr(passkey::Column::BackupState, Expr::value(result.backup_state()))
            .col_expr(passkey::Column::LastUsedAt, Expr::value(Some(now)))
            .filter(passkey::Column::Id.eq(row.id.as_str()))
            .filter(raised)
            .exec(conn)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Starts registering a passkey for the caller.
    pub async fn start_passkey_registration(&self, principal: &Principal) -> Result<Ceremony, Error> {
        self.live_session(principal).await?;
        let row = self.find_user(&self.db, &principal.user_id).await?;
        let existing = user_passkeys(&self.db, &row.id).await?;
        if row.totp_secret.is_some() || !existing.is_empty() {
            principal.require_aal2()?;
        }
        let exclude = existing
            .iter()
            .map(|row| from_json::<Passkey>(&row.credential, "reading a stored passkey").map(|p| p.cred_id().clone()))
            .collect::<Result<Vec<_>, Error>>()?;
        let handle = Uuid::parse_str(&row.id).map_err(|error| Error::internal("a user id as a user handle", error))?;
        let display_name = if row.display_name.is_empty() {
            &row.username
        } else {
            &row.display_name
        };
        let (options, state) = self
            .webauthn
            .start_passkey_registration(handle, &row.username, display_name, Some(exclude))
            .map_err(|error| Error::internal("starting a passkey registration", error))?;
        self.begin_ceremony(
            REGISTER,
            &row.id,
            &principal.session_id,
            to_json(&state, "storing a passkey registration")?,
            options_json(&options, true)?,
        )
        .await
    }

    /// A ceremony with a fresh token, its state stored under the token's hash.
    async fn begin_ceremony(
        &self,
        kind: &str,
        user_id: &str,
        session_id: &str,
        state: String,
        options_json: Vec<u8>,
    ) -> Result<Ceremony, Error> {
        let token = secrets::random_token("cmk1_")?;
        let (_turn, txn) = self.writer.begin().await?;
        let ceremony = NewCeremony {
            token_hash: secrets::digest(&token),
            kind,
            user_id,
            session_id,
            state,
        };
        let expires_at = self.store_ceremony(&txn, ceremony, self.now()).await?;
        txn.commit().await?;
        Ok(Ceremony {
            token,
            options_json,
            expires_at,
        })
    }

    /// Finishes a registration and stores the passkey. The account's first second factor also
    /// gets recovery codes and, for an active account, an AAL2 session in place of this one.
    pub async fn finish_passkey_registration(
        &self,
        principal: &Principal,
        caller: &Caller,
        token: &str,
        credential_json: &[u8],
        name: &str,
    ) -> Result<Registered, Error> {
        let name = checked_name(name)?;
        let answer: RegisterPublicKeyCredential = parse_answer(credential_json, "credential_json")?;
        self.live_session(principal).await?;
        let ceremony = self.take_ceremony(token, REGISTER).await?;
        if ceremony.user_id != principal.user_id || ceremony.session_id != principal.session_id {
            return Err(ceremony_invalid());
        }
        let state: PasskeyRegistration = from_json(&ceremony.state, "reading a passkey registration")?;
        let credential = match self.webauthn.finish_passkey_registration(&answer, &state) {
            Ok(credential) => credential,
            Err(error) => {
                let (reason, refusal) = refused(&error);
                return Err(self
                    .refuse(caller, "passkey_register", &principal.user_id, reason, refusal)
                    .await);
            }
        };
        let credential_id = credential_id(&credential);
        if passkey::Entity::find()
            .filter(passkey::Column::CredentialId.eq(credential_id.as_str()))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(Error::already_exists(
                "PASSKEY_EXISTS",
                "this authenticator's passkey is already registered",
            ));
        }
        let (sign_count, backup_eligible, backup_state) = registered_flags(&credential);
        let now = self.now();
        let row = self.find_user(&self.db, &principal.user_id).await?;
        let (_turn, txn) = self.writer.begin().await?;
        let first_factor = row.totp_secret.is_none() && user_passkeys(&txn, &row.id).await?.is_empty();
        let stored = passkey::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            user_id: Set(row.id.clone()),
            credential_id: Set(credential_id),
            name: Set(name),
            credential: Set(to_json(&credential, "storing a passkey")?),
            sign_count: Set(sign_count),
            backup_eligible: Set(backup_eligible),
            backup_state: Set(backup_state),
            created_at: Set(now),
            last_used_at: Set(None),
        }
        .insert(&txn)
        .await?;
        count_passkeys(&txn, &row.id, 1).await?;
        let (recovery_codes, upgraded) = if first_factor {
            let codes = crate::mfa::replace_recovery_codes(&txn, &row.id, now).await?;
            let upgraded = if row.status == "active" {
                revoke_sessions(&txn, &row.id, None, "upgraded to AAL2", now).await?;
                Some(self.create_session(&txn, &UserView::new(row.clone()), 2, now).await?)
            } else {
                None
            };
            (codes, upgraded)
        } else {
            (Vec::new(), None)
        };
        self.audit(
            &txn,
            caller,
            passkey_audit(
                AuditAction::Create,
                "passkey_register",
                &stored.id,
                AuditOutcome::Success,
                "",
            ),
        )
        .await?;
        txn.commit().await?;
        Ok(Registered {
            passkey: stored.into(),
            recovery_codes,
            upgraded,
        })
    }

    /// A page of the caller's passkeys (oldest first: ids are UUIDv7), whether their role
    /// requires one, and the next page's token.
    pub async fn list_passkeys(
        &self,
        principal: &Principal,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<PasskeyView>, bool, String), Error> {
        const PAGE: &str = "p1:";
        self.live_session(principal).await?;
        let size = crate::domain::page_size(page_size)?;
        let mut query = passkey::Entity::find()
            .filter(passkey::Column::UserId.eq(principal.user_id.as_str()))
            .order_by_asc(passkey::Column::Id);
        if !page_token.is_empty() {
            let after = crate::domain::decode_page_token(PAGE, page_token)?;
            query = query.filter(passkey::Column::Id.gt(after));
        }
        let mut rows = query.limit(size + 1).all(&self.db).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            rows.last()
                .map(|row| crate::domain::encode_page_token(PAGE, &row.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let required = passkey_required(&self.db, &principal.role).await?;
        Ok((rows.into_iter().map(PasskeyView::from).collect(), required, next))
    }

    async fn own_passkey(&self, principal: &Principal, passkey_id: &str) -> Result<passkey::Model, Error> {
        passkey::Entity::find_by_id(passkey_id.to_owned())
            .one(&self.db)
            .await?
            .filter(|row| row.user_id == principal.user_id)
            .ok_or_else(|| {
                Error::not_found(
                    "PASSKEY_NOT_FOUND",
                    format!("you have no passkey with id {passkey_id}: list them with ListPasskeys"),
                )
            })
    }

    pub async fn rename_passkey(
        &self,
        principal: &Principal,
        caller: &Caller,
        passkey_id: &str,
        name: &str,
    ) -> Result<PasskeyView, Error> {
        let name = checked_name(name)?;
        self.live_session(principal).await?;
        let row = self.own_passkey(principal, passkey_id).await?;
        let (_turn, txn) = self.writer.begin().await?;
        passkey::Entity::update_many()
            .col_expr(passkey::Column::Name, Expr::value(name.clone()))
            .filter(passkey::Column::Id.eq(row.id.as_str()))
            .exec(&txn)
            .await?;
        self.audit(
            &txn,
            caller,
            passkey_audit(
                AuditAction::Update,
                "passkey_rename",
                &row.id,
                AuditOutcome::Success,
                "",
            ),
        )
        .await?;
        txn.commit().await?;
        Ok(PasskeyView {
            name,
            ..PasskeyView::from(row)
        })
    }

    pub async fn remove_passkey(&self, principal: &Principal, caller: &Caller, passkey_id: &str) -> Result<(), Error> {
        principal.require_aal2()?;
        self.live_session(principal).await?;
        let row = self.own_passkey(principal, passkey_id).await?;
        let (_turn, txn) = self.writer.begin().await?;
        let others = user_passkeys(&txn, &row.user_id).await?.len().saturating_sub(1);
        if others == 0 && passkey_required(&txn, &principal.role).await? {
            // Audited in this transaction: the writer's turn is held until it ends.
            let denied = passkey_audit(
                AuditAction::Delete,
                "passkey_remove",
                &row.id,
                AuditOutcome::Denied,
                "PASSKEY_REQUIRED",
            );
            self.audit(&txn, caller, denied).await?;
            txn.commit().await?;
            return Err(Error::failed_precondition(
                "PASSKEY_REQUIRED",
                "your role requires a passkey: register another one before removing this one",
            ));
        }
        passkey::Entity::delete_many()
            .filter(passkey::Column::Id.eq(row.id.as_str()))
            .exec(&txn)
            .await?;
        count_passkeys(&txn, &row.user_id, -1).await?;
        self.audit(
            &txn,
            caller,
            passkey_audit(
                AuditAction::Delete,
                "passkey_remove",
                &row.id,
                AuditOutcome::Success,
                "",
            ),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// For a login challenge: the request options naming the user's passkeys, with the state kept
    /// under the challenge's own hash (the challenge is the ceremony's token).
    pub(crate) async fn passkey_challenge<C: ConnectionTrait>(
        &self,
        conn: &C,
        passkeys: &[passkey::Model],
        user_id: &str,
        challenge_hash: String,
        now: DateTime<Utc>,
    ) -> Result<PasskeyChallenge, Error> {
        let credentials = passkeys
            .iter()
            .map(|row| from_json::<Passkey>(&row.credential, "reading a stored passkey"))
            .collect::<Result<Vec<_>, Error>>()?;
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&credentials)
            .map_err(|error| Error::internal("starting a passkey authentication", error))?;
        self.store_ceremony(
            conn,
            NewCeremony {
                token_hash: challenge_hash,
                kind: SECOND_FACTOR,
                user_id,
                session_id: "",
                state: to_json(&state, "storing a passkey authentication")?,
            },
            now,
        )
        .await?;
        Ok(PasskeyChallenge {
            options_json: options_json(&options, false)?,
        })
    }

    /// Checks a passkey answer to a login challenge; on success the use is recorded through
    /// `conn` (the transaction that also ends the challenge). `Err` carries the audit reason.
    pub(crate) async fn accept_passkey_factor<C: ConnectionTrait>(
        &self,
        conn: &C,
        user: &user::Model,
        challenge_hash: &str,
        answer_json: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Result<(), (&'static str, Error)>, Error> {
        let answer: PublicKeyCredential = parse_answer(answer_json, "passkey_assertion_json")?;
        let Some(ceremony) = passkey_ceremony::Entity::find_by_id(challenge_hash.to_owned())
            .one(conn)
            .await?
            .filter(|row| row.kind == SECOND_FACTOR && row.user_id == user.id && row.expires_at > now)
        else {
            return Ok(Err((
                "PASSKEY_NOT_OFFERED",
                Error::failed_precondition(
                    "PASSKEY_NOT_OFFERED",
                    "this login challenge offers no passkey: log in again, or use another factor",
                ),
            )));
        };
        let state: PasskeyAuthentication = from_json(&ceremony.state, "reading a passkey authentication")?;
        let result = match self.webauthn.finish_passkey_authentication(&answer, &state) {
            Ok(result) => result,
            Err(error) => return Ok(Err(refused(&error))),
        };
        let used = URL_SAFE_NO_PAD.encode(result.cred_id().as_slice());
        let Some(row) = user_passkeys(conn, &user.id)
            .await?
            .into_iter()
            .find(|row| row.credential_id == used)
        else {
            return Ok(Err(refused(&WebauthnError::CredentialNotFound)));
        };
        if !self.record_use(conn, &row, &result, now).await? {
            return Ok(Err((COUNTER_REGRESSION, counter_regression())));
        }
        passkey_ceremony::Entity::delete_many()
            .filter(passkey_ceremony::Column::TokenHash.eq(challenge_hash))
            .exec(conn)
            .await?;
        Ok(Ok(()))
    }

    /// Starts a passwordless sign-in.
    pub async fn start_passkey_login(&self, caller: &Caller) -> Result<Ceremony, Error> {
        let now = self.now();
        self.check_login_rate(caller, now)?;
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|error| Error::internal("starting a passkey sign-in", error))?;
        self.begin_ceremony(
            LOGIN,
            "",
            "",
            to_json(&state, "storing a passkey sign-in")?,
            options_json(&options, false)?,
        )
        .await
    }

    /// Finishes a passwordless sign-in: the discoverable passkey names its user.
    pub async fn finish_passkey_login(
        &self,
        caller: &Caller,
        token: &str,
        answer_json: &[u8],
    ) -> Result<(IssuedSession, u64), Error> {
        const OPERATION: &str = "login_passkey";
        let answer: PublicKeyCredential = parse_answer(answer_json, "credential_json")?;
        let ceremony = self.take_ceremony(token, LOGIN).await?;
        let state: DiscoverableAuthentication = from_json(&ceremony.state, "reading a passkey sign-in")?;
        let now = self.now();
        let (handle, used) = match self.webauthn.identify_discoverable_authentication(&answer) {
            Ok((handle, used)) => (handle, URL_SAFE_NO_PAD.encode(used)),
            Err(error) => {
                let (reason, refusal) = refused(&error);
                return Err(self.refuse(caller, OPERATION, "", reason, refusal).await);
            }
        };
        let user_id = handle.hyphenated().to_string();
        let stored = passkey::Entity::find()
            .filter(passkey::Column::CredentialId.eq(used.as_str()))
            .filter(passkey::Column::UserId.eq(user_id.as_str()))
            .one(&self.db)
            .await?;
        let mut caller = caller.clone();
        let Some(stored) = stored else {
            let (reason, refusal) = refused(&WebauthnError::CredentialNotFound);
            return Err(self.refuse(&caller, OPERATION, "", reason, refusal).await);
        };
        let row = self.find_user(&self.db, &stored.user_id).await?;
        caller.user_id = row.id.clone();
        caller.role = row.role.clone();
        self.refuse_unusable_account(&caller, &row, OPERATION).await?;
        let credential: Passkey = from_json(&stored.credential, "reading a stored passkey")?;
        let result = match self.webauthn.finish_discoverable_authentication(
            &answer,
            state,
            &[DiscoverableKey::from(&credential)],
        ) {
            Ok(result) => result,
            Err(error) => {
                let (reason, refusal) = refused(&error);
                self.backoff.failed(&row.username, now);
                return Err(self.refuse(&caller, OPERATION, &stored.id, reason, refusal).await);
            }
        };
        let (_turn, txn) = self.writer.begin().await?;
        if !self.record_use(&txn, &stored, &result, now).await? {
            // Audited in this transaction (which changed nothing): the writer's turn is held.
            let denied = passkey_audit(
                AuditAction::Execute,
                OPERATION,
                &stored.id,
                AuditOutcome::Denied,
                COUNTER_REGRESSION,
            );
            self.audit(&txn, &caller, denied).await?;
            txn.commit().await?;
            return Err(counter_regression());
        }
        // Pending doctors and nurses prove both factors but stay at AAL1 until approved.
        let aal = if row.status == "active" { 2 } else { 1 };
        let issued = self.create_session(&txn, &UserView::new(row.clone()), aal, now).await?;
        self.audit(
            &txn,
            &caller,
            passkey_audit(AuditAction::Execute, OPERATION, &stored.id, AuditOutcome::Success, ""),
        )
        .await?;
        let remaining = crate::sessions::unused_recovery_codes(&txn, &row.id).await?;
        txn.commit().await?;
        Ok((issued, remaining))
    }

    /// The sign-in policy of every role that has one set.
    pub async fn role_policies(&self, admin: &Principal) -> Result<Vec<role_policy::Model>, Error> {
        admin.require_role(&["admin"])?;
        Ok(role_policy::Entity::find().all(&self.db).await?)
    }

    pub async fn set_role_policy(
        &self,
        admin: &Principal,
        caller: &Caller,
        role: &str,
        passkey_required: bool,
    ) -> Result<role_policy::Model, Error> {
        admin.require_role(&["admin"])?;
        let now = self.now();
        let (_turn, txn) = self.writer.begin().await?;
        role_policy::Entity::delete_by_id(role.to_owned()).exec(&txn).await?;
        let policy = role_policy::ActiveModel {
            role: Set(role.to_owned()),
            passkey_required: Set(passkey_required),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Update,
                operation: "admin_set_role_policy",
                entity_type: "RolePolicy",
                entity_id: role,
                outcome: AuditOutcome::Success,
                reason: if passkey_required {
                    "PASSKEY_REQUIRED"
                } else {
                    "PASSKEY_OPTIONAL"
                },
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(policy)
    }
}
