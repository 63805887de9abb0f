//! Login, sessions and tokens.
//!
//! Login is two steps when MFA is enrolled: the password, then a TOTP code, a passkey or a
//! recovery code against a short-lived challenge (passwordless passkey sign-in is in `passkeys`). Unknown usernames and wrong passwords get the same answer after the same
//! work (a decoy Argon2id check). A session ends on logout, after the idle timeout, after its
//! absolute lifetime, or when its refresh token is presented twice (the whole session is revoked:
//! someone else has a copy). Access tokens carry AAL2 only for active accounts that used a
//! second factor.

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

use crate::accounts::{UserView, revoke_sessions};
use crate::domain::{Audited, AuthDomain, Caller};
use crate::emergency;
use crate::storage::{login_challenge, recovery_code, refresh_token, session, user};
use crate::{password, secrets, totp};

const MAX_CHALLENGE_ATTEMPTS: i32 = 5;
const MAX_PASSWORD_BYTES: usize = 4096;

/// A session's tokens, as handed to the client. `Debug` leaves the tokens out.
#[derive(Clone)]
pub struct IssuedSession {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub idle_expires_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
    pub session_id: String,
    pub aal: u8,
    pub user_id: String,
    pub role: String,
}

impl std::fmt::Debug for IssuedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSession")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("aal", &self.aal)
            .finish_non_exhaustive()
    }
}

/// The answer to the password step. `Debug` leaves the challenge out.
#[derive(Clone)]
pub enum LoginOutcome {
    Tokens(IssuedSession),
    MfaRequired {
        challenge: String,
        expires_at: DateTime<Utc>,
        factors: Vec<FactorKind>,
        /// With [`FactorKind::Passkey`]: the WebAuthn request options.
        passkey_options: Option<Vec<u8>>,
    },
}

/// The kinds of second factor a challenge accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorKind {
    Totp,
    RecoveryCode,
    Passkey,
}

impl std::fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginOutcome::Tokens(session) => f.debug_tuple("Tokens").field(session).finish(),
            LoginOutcome::MfaRequired {
                expires_at, factors, ..
            } => f
                .debug_struct("MfaRequired")
                .field("expires_at", expires_at)
                .field("factors", factors)
                .finish_non_exhaustive(),
        }
    }
}

/// The second factor a user presents. `Debug` leaves the code out.
#[derive(Clone)]
pub enum SecondFactor {
    Totp(String),
    RecoveryCode(String),
    /// The JSON of the passkey's assertion.
    Passkey(Vec<u8>),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecondFactor::Totp(_) => "Totp(..)",
            SecondFactor::RecoveryCode(_) => "RecoveryCode(..)",
            SecondFactor::Passkey(_) => "Passkey(..)",
        })
    }
}

fn delta(duration: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn invalid_credentials() -> Error {
    Error::unauthenticated("INVALID_CREDENTIALS", "wrong username or password")
}

impl AuthDomain {
    /// Sign-ins from one source address are rate-limited, whatever they present.
    pub(crate) fn check_login_rate(&self, caller: &Caller, now: DateTime<Utc>) -> Result<(), Error> {
        if let Some(source) = caller.source {
            self.login_limiter.check(source, now).map_err(|wait| {
                Error::resource_exhausted(
                    "RATE_LIMITED",
                    "too many login attempts from your address; retry later",
                    wait,
                )
            })?;
        }
        Ok(())
    }

    pub async fn login(&self, caller: &Caller, username: &str, password: &str) -> Result<LoginOutcome, Error> {
        let now = self.now();
        self.check_login_rate(caller, now)?;
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid_argument(
                "PASSWORD_TOO_LONG",
                "passwords are at most 128 characters",
            ));
        }
        let username = crate::domain::normalize_username(username);
        self.backoff.check(&username, now).map_err(|wait| {
            Error::resource_exhausted(
                "LOGIN_BACKOFF",
                format!(
                    "too many failed logins for this username; retry in {} s",
                    wait.as_secs().max(1)
                ),
                wait,
            )
        })?;
        let row = user::Entity::find()
            .filter(user::Column::Username.eq(username.as_str()))
            .one(&self.db)
            .await?;
        let matches = self
            .verify_password(password, row.as_ref().map(|row| row.password_hash.as_str()))
            .await?;
        let Some(row) = row.filter(|_| matches) else {
            self.backoff.failed(&username, now);
            self.record_failed_login(caller, &username).await?;
            return Err(invalid_credentials());
        };
        let mut caller = caller.clone();
        caller.user_id = row.id.clone();
        caller.role = row.role.clone();
        self.refuse_unusable_account(&caller, &row, "login").await?;
        self.backoff.succeeded(&username);

        let rehashed = if password::needs_rehash(&row.password_hash, self.settings.password_cost) {
            Some(self.hash_password(password).await?)
        } else {
            None
        };
        let passkeys = if row.passkey_count > 0 {
            crate::passkeys::user_passkeys(&self.db, &row.id).await?
        } else {
            Vec::new()
        };
        let (_turn, txn) = self.writer.begin().await?;
        if row.failed_attempts != 0 || rehashed.is_some() {
            let mut changes = user::Entity::update_many().col_expr(user::Column::FailedAttempts, Expr::value(0));
            if let Some(rehashed) = rehashed {
                changes = changes.col_expr(user::Column::PasswordHash, Expr::value(rehashed));
            }
            changes.filter(user::Column::Id.eq(row.id.as_str())).exec(&txn).await?;
        }
        let outcome = if row.totp_secret.is_some() || !passkeys.is_empty() {
            let challenge = secrets::random_token("cmc1_")?;
            let expires_at = now + delta(self.settings.challenge_ttl);
            login_challenge::ActiveModel {
                challenge_hash: Set(secrets::digest(&challenge)),
                user_id: Set(row.id.clone()),
                expires_at: Set(expires_at),
                attempts: Set(0),
                used_at: Set(None),
            }
            .insert(&txn)
            .await?;
            let totp_allowed = row.totp_secret.is_some()
                && (passkeys.is_empty() || !crate::passkeys::passkey_required(&txn, &row.role).await?);
            let mut factors = Vec::with_capacity(3);
            let mut passkey_options = None;
            if totp_allowed {
                factors.push(FactorKind::Totp);
            }
            if !passkeys.is_empty() {
                let offered = self
                    .passkey_challenge(&txn, &passkeys, &row.id, secrets::digest(&challenge), now)
                    .await?;
                passkey_options = Some(offered.options_json);
                factors.push(FactorKind::Passkey);
            }
            factors.push(FactorKind::RecoveryCode);
            LoginOutcome::MfaRequired {
                challenge,
                expires_at,
                factors,
                passkey_options,
            }
        } else {
            LoginOutcome::Tokens(self.create_session(&txn, &UserView::new(row.clone()), 1, now).await?)
        };
        let reason = match outcome {
            LoginOutcome::MfaRequired { .. } => "SECOND_FACTOR_REQUIRED",
            LoginOutcome::Tokens(_) => "",
        };
        self.audit(
            &txn,
            &caller,
            login_audit("login", &row.id, AuditOutcome::Success, reason),
        )
        .await?;
        txn.commit().await?;
        Ok(outcome)
    }

    /// Counts a failed password against the account (locking it at the threshold) and audits it.
    async fn record_failed_login(&self, caller: &Caller, username: &str) -> Result<(), Error> {
        let (_turn, txn) = self.writer.begin().await?;
        let row = user::Entity::find()
            .filter(user::Column::Username.eq(username))
            .one(&txn)
            .await?;
        let mut caller = caller.clone();
        let (entity_id, reason) = match &row {
            Some(row) => {
                caller.user_id = row.id.clone();
                caller.role = row.role.clone();
                let failed = row.failed_attempts.saturating_add(1);
                let lock = u32::try_from(failed).unwrap_or(u32::MAX) >= self.settings.lockout_threshold;
                user::Entity::update_many()
                    .col_expr(
                        user::Column::FailedAttempts,
                        increment_by(Expr::col(user::Column::FailedAttempts), 1),
                    )
                    .col_expr(user::Column::Locked, Expr::value(row.locked || lock))
                    .filter(user::Column::Id.eq(row.id.as_str()))
                    .exec(&txn)
                    .await?;
                let reason = if lock && !row.locked {
                    "WRONG_PASSWORD_ACCOUNT_LOCKED"
                } else {
                    "WRONG_PASSWORD"
                };
                (row.id.clone(), reason)
            }
            None => (String::new(), "UNKNOWN_USERNAME"),
        };
        self.audit(
            &txn,
            &caller,
            login_audit("login", &entity_id, AuditOutcome::Denied, reason),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Locked and disabled accounts are refused (only after the password proved right, so this
    /// reveals nothing to someone guessing).
    pub(crate) async fn refuse_unusable_account(
        &self,
        caller: &Caller,
        row: &user::Model,
        operation: &str,
    ) -> Result<(), Error> {
        let refusal = if row.locked {
            Some((
                "ACCOUNT_LOCKED",
                "this account is locked after too many failed logins: ask an administrator to unlock it",
            ))
        } else if row.status == "disabled" {
            Some(("ACCOUNT_DISABLED", "this account is disabled: contact an administrator"))
        } else {
            None
        };
        if let Some((reason, message)) = refusal {
            let (_turn, txn) = self.writer.begin().await?;
            self.audit(
                &txn,
                caller,
                login_audit(operation, &row.id, AuditOutcome::Denied, reason),
            )
            .await?;
            txn.commit().await?;
            return Err(Error::permission_denied(reason, message));
        }
        Ok(())
    }

    /// The second step: a TOTP or recovery code against the challenge from [`Self::login`].
    pub async fn complete_login(
        &self,
        caller: &Caller,
        challenge: &str,
        factor: SecondFactor,
    ) -> Result<(IssuedSession, u64), Error> {
        let now = self.now();
        let invalid_challenge = || {
            Error::unauthenticated(
                "CHALLENGE_INVALID",
                "this login challenge is unknown, used or expired: log in with your password again",
            )
        };
        let challenge_hash = secrets::digest(challenge);
        let record = login_challenge::Entity::find_by_id(challenge_hash.clone())
            .one(&self.db)
            .await?
            .filter(|record| {
                record.used_at.is_none() && record.expires_at > now && record.attempts < MAX_CHALLENGE_ATTEMPTS
            })
            .ok_or_else(invalid_challenge)?;
        let row = self.find_user(&self.db, &record.user_id).await?;
        let mut caller = caller.clone();
        caller.user_id = row.id.clone();
        caller.role = row.role.clone();
        self.refuse_unusable_account(&caller, &row, "login_second_factor")
            .await?;

        if matches!(factor, SecondFactor::Totp(_))
            && row.passkey_count > 0
            && crate::passkeys::passkey_required(&self.db, &row.role).await?
        {
            let (_turn, txn) = self.writer.begin().await?;
            self.audit(
                &txn,
                &caller,
                login_audit("login_second_factor", &row.id, AuditOutcome::Denied, "PASSKEY_REQUIRED"),
            )
            .await?;
            txn.commit().await?;
            return Err(Error::permission_denied(
                "PASSKEY_REQUIRED",
                "your role requires a passkey: sign in with your passkey (or a recovery code)",
            ));
        }
        let (_turn, txn) = self.writer.begin().await?;
        let mut refusal = None;
        let accepted = match &factor {
            SecondFactor::Totp(code) => self.accept_totp(&txn, &row, code, now).await?,
            SecondFactor::Passkey(answer) => {
                match self
                    .accept_passkey_factor(&txn, &row, &challenge_hash, answer, now)
                    .await?
                {
                    Ok(()) => true,
                    Err(refused) => {
                        refusal = Some(refused);
                        false
                    }
                }
            }
            SecondFactor::RecoveryCode(code) => {
                recovery_code::Entity::update_many()
                    .col_expr(recovery_code::Column::UsedAt, Expr::value(Some(now)))
                    .filter(recovery_code::Column::CodeHash.eq(secrets::recovery_code_digest(&row.id, code)))
                    .filter(recovery_code::Column::UserId.eq(row.id.as_str()))
                    .filter(recovery_code::Column::UsedAt.is_null())
                    .exec(&txn)
                    .await?
                    .rows_affected
                    == 1
            }
        };
        let factor_name = match factor {
            SecondFactor::Totp(_) => "TOTP",
            SecondFactor::RecoveryCode(_) => "RECOVERY_CODE",
            SecondFactor::Passkey(_) => "PASSKEY",
        };
        if !accepted {
            login_challenge::Entity::update_many()
                .col_expr(
                    login_challenge::Column::Attempts,
                    increment_by(Expr::col(login_challenge::Column::Attempts), 1),
                )
                .filter(login_challenge::Column::ChallengeHash.eq(challenge_hash))
                .exec(&txn)
                .await?;
            let reason = refusal
                .as_ref()
                .map_or_else(|| format!("WRONG_{factor_name}"), |(reason, _)| (*reason).to_owned());
            self.audit(
                &txn,
                &caller,
                login_audit("login_second_factor", &row.id, AuditOutcome::Denied, &reason),
            )
            .await?;
            txn.commit().await?;
            self.backoff.failed(&row.username, now);
            return Err(refusal.map_or_else(
                || Error::unauthenticated("INVALID_CODE", "the code is wrong or was already used"),
                |(_, error)| error,
            ));
        }
        let used = login_challenge::Entity::update_many()
            .col_expr(login_challenge::Column::UsedAt, Expr::value(Some(now)))
            .filter(login_challenge::Column::ChallengeHash.eq(challenge_hash))
            .filter(login_challenge::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if used.rows_affected != 1 {
            return Err(invalid_challenge());
        }
        // Pending doctors and nurses prove their second factor but stay at AAL1 until approved.
        let aal = if row.status == "active" { 2 } else { 1 };
        let issued = self.create_session(&txn, &UserView::new(row.clone()), aal, now).await?;
        self.audit(
            &txn,
            &caller,
            login_audit("login_second_factor", &row.id, AuditOutcome::Success, factor_name),
        )
        .await?;
        let remaining = unused_recovery_codes(&txn, &row.id).await?;
        txn.commit().await?;
        Ok((issued, remaining))
    }

    /// Accepts a TOTP code at most once: the step is stored, and a code for the same or an
    /// earlier step is refused even when two requests race.
    pub(crate) async fn accept_totp<C: ConnectionTrait>(
        &self,
        conn: &C,
        row: &user::Model,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(sealed) = &row.totp_secret else {
            return Ok(false);
        };
        let secret = self
            .kek
            .open(&crate::mfa::totp_purpose(&row.id), sealed)
            .map_err(|error| Error::internal("unsealing a TOTP secret", error.to_string()))?;
        let last = row.totp_last_step.and_then(|step| u64::try_from(step).ok());
        let Some(step) = totp::verify(&secret, code, now.timestamp(), last) else {
            return Ok(false);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let claimed = user::Entity::update_many()
            .col_expr(user::Column::TotpLastStep, Expr::value(Some(step)))
            .filter(user::Column::Id.eq(row.id.as_str()))
            .filter(
                sea_orm::Condition::any()
                    .add(user::Column::TotpLastStep.is_null())
                    .add(user::Column::TotpLastStep.lt(step)),
            )
            .exec(conn)
            .await?;
        Ok(claimed.rows_affected == 1)
    }

    /// A new session with its first refresh token and access token.
    pub(crate) async fn create_session<C: ConnectionTrait>(
        &self,
        conn: &C,
        user: &UserView,
        aal: u8,
        now: DateTime<Utc>,
    ) -> Result<IssuedSession, Error> {
        let session_id = uuid::Uuid::now_v7().to_string();
        let expires_at = now + delta(self.settings.session_lifetime);
        session::ActiveModel {
            id: Set(session_id.clone()),
            user_id: Set(user.row.id.clone()),
            aal: Set(i32::from(aal)),
            created_at: Set(now),
            last_seen_at: Set(now),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
            revoked_reason: Set(None),
        }
        .insert(conn)
        .await?;
        self.issue(conn, user, &session_id, aal, expires_at, now).await
    }

    async fn issue<C: ConnectionTrait>(
        &self,
        conn: &C,
        user: &UserView,
        session_id: &str,
        aal: u8,
        session_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<IssuedSession, Error> {
        let refresh = secrets::random_token("cmr1_")?;
        refresh_token::ActiveModel {
            token_hash: Set(secrets::digest(&refresh)),
            session_id: Set(session_id.to_owned()),
            created_at: Set(now),
            used_at: Set(None),
        }
        .insert(conn)
        .await?;
        let mut access_expires_at = (now + delta(self.settings.access_token_ttl)).min(session_expires_at);
        let mut attrs = user.all_attributes();
        // Emergency attributes ride in the token only while their grant holds: the token ends
        // with the first grant it carries.
        for grant in emergency::active(conn, &user.row.id, now).await? {
            access_expires_at = access_expires_at.min(grant.expires_at);
            attrs.push(grant.attribute);
        }
        let (kid, key) = self.keys.current()?;
        let claims = caremesh_token::Claims {
            kid,
            sub: user.row.id.clone(),
            role: user.row.role.clone(),
            attrs,
            sid: session_id.to_owned(),
            aal,
            iat: now.timestamp(),
            exp: access_expires_at.timestamp(),
        };
        let access_token = caremesh_token::sign(&claims, &key)
            .map_err(|error| Error::internal("signing an access token", error.to_string()))?;
        Ok(IssuedSession {
            access_token,
            access_expires_at,
            refresh_token: refresh,
            idle_expires_at: (now + delta(self.settings.session_idle_timeout)).min(session_expires_at),
            session_expires_at,
            session_id: session_id.to_owned(),
            aal,
            user_id: user.row.id.clone(),
            role: user.row.role.clone(),
        })
    }

    /// Exchanges a refresh token for new tokens. A token presented twice ends the session.
    pub async fn refresh(&self, caller: &Caller, token: &str) -> Result<IssuedSession, Error> {
        let now = self.now();
        let invalid =
            || Error::unauthenticated("INVALID_REFRESH_TOKEN", "the refresh token is not valid: log in again");
        let hash = secrets::digest(token);
        let record = refresh_token::Entity::find_by_id(hash.clone())
            .one(&self.db)
            .await?
            .ok_or_else(invalid)?;
        let (_turn, txn) = self.writer.begin().await?;
        let current = session::Entity::find_by_id(record.session_id.clone())
            .one(&txn)
            .await?
            .ok_or_else(invalid)?;
        let mut caller = caller.clone();
        caller.user_id = current.user_id.clone();
        caller.session_id = current.id.clone();
        if current.revoked_at.is_some() {
            return Err(Error::unauthenticated(
                "SESSION_REVOKED",
                "the session has ended: log in again",
            ));
        }
        let claimed = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(Some(now)))
            .filter(refresh_token::Column::TokenHash.eq(hash))
            .filter(refresh_token::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            // Reuse: someone holds a copy of a rotated token. End the whole session.
            session::Entity::update_many()
                .col_expr(session::Column::RevokedAt, Expr::value(Some(now)))
                .col_expr(
                    session::Column::RevokedReason,
                    Expr::value(Some("refresh token reuse".to_owned())),
                )
                .filter(session::Column::Id.eq(current.id.as_str()))
                .exec(&txn)
                .await?;
            self.audit(
                &txn,
                &caller,
                session_audit("refresh", &current.id, AuditOutcome::Denied, "REFRESH_TOKEN_REUSE"),
            )
            .await?;
            txn.commit().await?;
            return Err(Error::unauthenticated(
                "REFRESH_TOKEN_REUSED",
                "this refresh token was already used, so the session has been ended for safety: log in again",
            ));
        }
        let idle_deadline = current.last_seen_at + delta(self.settings.session_idle_timeout);
        if now >= current.expires_at || now >= idle_deadline {
            return Err(Error::unauthenticated(
                "SESSION_EXPIRED",
                "the session has expired: log in again",
            ));
        }
        let row = self.find_user(&txn, &current.user_id).await?;
        if row.locked || row.status == "disabled" {
            revoke_sessions(&txn, &row.id, None, "account locked or disabled", now).await?;
            txn.commit().await?;
            return Err(Error::unauthenticated(
                "SESSION_REVOKED",
                "the session has ended: contact an administrator",
            ));
        }
        let aal = if row.status == "active" {
            u8::try_from(current.aal).unwrap_or(1)
        } else {
            1
        };
        session::Entity::update_many()
            .col_expr(session::Column::LastSeenAt, Expr::value(now))
            .filter(session::Column::Id.eq(current.id.as_str()))
            .exec(&txn)
            .await?;
        let issued = self
            .issue(&txn, &UserView::new(row), &current.id, aal, current.expires_at, now)
            .await?;
        txn.commit().await?;
        Ok(issued)
    }

    /// Ends the session a refresh token belongs to.
    pub async fn logout(&self, caller: &Caller, token: &str) -> Result<(), Error> {
        let now = self.now();
        let Some(record) = refresh_token::Entity::find_by_id(secrets::digest(token))
            .one(&self.db)
            .await?
        else {
            // Logging out twice is not an error.
            return Ok(());
        };
        let (_turn, txn) = self.writer.begin().await?;
        let ended = session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(Some(now)))
            .col_expr(session::Column::RevokedReason, Expr::value(Some("logout".to_owned())))
            .filter(session::Column::Id.eq(record.session_id.as_str()))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if ended.rows_affected == 1 {
            let owner = session::Entity::find_by_id(record.session_id.clone()).one(&txn).await?;
            let mut caller = caller.clone();
            caller.session_id = record.session_id.clone();
            caller.user_id = owner.map(|session| session.user_id).unwrap_or_default();
            self.audit(
                &txn,
                &caller,
                session_audit("logout", &record.session_id, AuditOutcome::Success, ""),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The session behind an access token must still be live for auth-svc's own account RPCs.
    pub async fn live_session(&self, principal: &Principal) -> Result<session::Model, Error> {
        let ended = || Error::unauthenticated("SESSION_REVOKED", "the session has ended: log in again");
        let current = session::Entity::find_by_id(principal.session_id.clone())
            .one(&self.db)
            .await?
            .ok_or_else(ended)?;
        if current.revoked_at.is_some() || current.expires_at <= self.now() || current.user_id != principal.user_id {
            return Err(ended());
        }
        Ok(current)
    }

    pub async fn whoami(&self, principal: &Principal) -> Result<(UserView, session::Model, u64), Error> {
        let current = self.live_session(principal).await?;
        let row = self.find_user(&self.db, &principal.user_id).await?;
        let remaining = unused_recovery_codes(&self.db, &row.id).await?;
        Ok((UserView::new(row), current, remaining))
    }

    /// Changes the password (the current one must be given) and ends the user's other sessions.
    pub async fn change_password(
        &self,
        principal: &Principal,
        caller: &Caller,
        current: &str,
        new: &str,
    ) -> Result<u64, Error> {
        self.live_session(principal).await?;
        let row = self.find_user(&self.db, &principal.user_id).await?;
        if !self.verify_password(current, Some(&row.password_hash)).await? {
            return Err(Error::unauthenticated(
                "INVALID_CREDENTIALS",
                "the current password is wrong",
            ));
        }
        password::check_strength(new, &row.username, &row.display_name)?;
        let hash = self.hash_password(new).await?;
        let now = self.now();
        let (_turn, txn) = self.writer.begin().await?;
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .col_expr(user::Column::Version, increment_by(Expr::col(user::Column::Version), 1))
            .filter(user::Column::Id.eq(row.id.as_str()))
            .exec(&txn)
            .await?;
        let revoked = revoke_sessions(&txn, &row.id, Some(&principal.session_id), "password changed", now).await?;
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Update,
                operation: "change_password",
                entity_type: "User",
                entity_id: &row.id,
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(revoked)
    }
}

pub(crate) async fn unused_recovery_codes<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<u64, Error> {
    Ok(recovery_code::Entity::find()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::UsedAt.is_null())
        .count(conn)
        .await?)
}

fn login_audit<'a>(operation: &'a str, user_id: &'a str, outcome: AuditOutcome, reason: &'a str) -> Audited<'a> {
    Audited {
        action: AuditAction::Execute,
        operation,
        entity_type: "User",
        entity_id: user_id,
        outcome,
        reason,
        ..Audited::default()
    }
}

fn session_audit<'a>(operation: &'a str, session_id: &'a str, outcome: AuditOutcome, reason: &'a str) -> Audited<'a> {
    Audited {
        action: AuditAction::Execute,
        operation,
        entity_type: "Session",
        entity_id: session_id,
        outcome,
        reason,
        ..Audited::default()
    }
}

/// `column + amount`, without bringing `ExprTrait`'s `min`/`max` into scope.
fn increment_by(column: Expr, amount: i32) -> Expr {
    sea_orm::sea_query::ExprTrait::add(column, amount)
}
