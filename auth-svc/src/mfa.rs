//! TOTP enrollment (takes effect only when confirmed with a valid code; secrets sealed under the
//! key-encryption key) and recovery codes (ten single-use codes, stored hashed; regenerating them
//! revokes the old set).

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::accounts::{UserView, revoke_sessions};
use crate::domain::{Audited, AuthDomain, Caller};
use crate::sessions::IssuedSession;
use crate::storage::{recovery_code, user};
use crate::{secrets, totp};

pub const RECOVERY_CODES: usize = 10;

pub fn totp_purpose(user_id: &str) -> String {
    format!("auth/totp/{user_id}")
}

fn pending_purpose(user_id: &str) -> String {
    format!("auth/totp-pending/{user_id}")
}

/// What an authenticator app needs. `Debug` leaves the secret out.
#[derive(Clone)]
pub struct Enrollment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl AuthDomain {
    /// Starts a TOTP enrollment. Replacing a confirmed authenticator needs an AAL2 session.
    pub async fn enroll_totp(&self, principal: &Principal, caller: &Caller) -> Result<Enrollment, Error> {
        self.live_session(principal).await?;
        let row = self.find_user(&self.db, &principal.user_id).await?;
        if row.totp_secret.is_some() || row.passkey_count > 0 {
            principal.require_aal2()?;
        }
        let mut secret = zeroize::Zeroizing::new([0u8; totp::SECRET_LEN]);
        secrets::fill(secret.as_mut())?;
        let sealed = self
            .kek
            .seal(&pending_purpose(&row.id), secret.as_ref())
            .map_err(|error| Error::internal("sealing a TOTP secret", error.to_string()))?;
        let expires_at =
            self.now() + TimeDelta::from_std(self.settings.enrollment_ttl).unwrap_or(TimeDelta::minutes(10));
        let (_turn, txn) = self.writer.begin().await?;
        user::Entity::update_many()
            .col_expr(user::Column::TotpPendingSecret, Expr::value(Some(sealed)))
            .col_expr(user::Column::TotpPendingExpiresAt, Expr::value(Some(expires_at)))
            .filter(user::Column::Id.eq(row.id.as_str()))
            .exec(&txn)
            .await?;
        self.audit(
            &txn,
            caller,
            mfa_audit("mfa_enroll", &row.id, AuditOutcome::Success, ""),
        )
        .await?;
        txn.commit().await?;
        Ok(Enrollment {
            secret_base32: totp::encode_secret(secret.as_ref()),
            otpauth_uri: totp::otpauth_uri(&self.settings.totp_issuer, &row.username, secret.as_ref()),
            expires_at,
        })
    }

    /// Confirms the pending enrollment with a code from the app. Returns fresh recovery codes and,
    /// for active accounts, an AAL2 session that replaces the current one.
    pub async fn confirm_totp(
        &self,
        principal: &Principal,
        caller: &Caller,
        code: &str,
    ) -> Result<(Vec<String>, Option<IssuedSession>), Error> {
        self.live_session(principal).await?;
        let now = self.now();
        let row = self.find_user(&self.db, &principal.user_id).await?;
        let (Some(pending), Some(expires_at)) = (&row.totp_pending_secret, row.totp_pending_expires_at) else {
            return Err(Error::failed_precondition(
                "NO_PENDING_ENROLLMENT",
                "start an enrollment first (EnrollTotp)",
            ));
        };
        if expires_at <= now {
            return Err(Error::failed_precondition(
                "ENROLLMENT_EXPIRED",
                "the enrollment expired: start again",
            ));
        }
        let secret = self
            .kek
            .open(&pending_purpose(&row.id), pending)
            .map_err(|error| Error::internal("unsealing a TOTP secret", error.to_string()))?;
        let Some(step) = totp::verify(&secret, code, now.timestamp(), None) else {
            let (_turn, txn) = self.writer.begin().await?;
            self.audit(
                &txn,
                caller,
                mfa_audit("mfa_confirm", &row.id, AuditOutcome::Denied, "WRONG_TOTP"),
            )
            .await?;
            txn.commit().await?;
            return Err(Error::invalid_argument(
                "INVALID_CODE",
                "the code does not match: check the app's clock and enter the current code",
            ));
        };
        let sealed = self
            .kek
            .seal(&totp_purpose(&row.id), &secret)
            .map_err(|error| Error::internal("sealing a TOTP secret", error.to_string()))?;
        let (_turn, txn) = self.writer.begin().await?;
        user::Entity::update_many()
            .col_expr(user::Column::TotpSecret, Expr::value(Some(sealed)))
            .col_expr(user::Column::TotpPendingSecret, Expr::value(Option::<Vec<u8>>::None))
            .col_expr(
                user::Column::TotpPendingExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                user::Column::TotpLastStep,
                Expr::value(Some(i64::try_from(step).unwrap_or(i64::MAX))),
            )
            .col_expr(user::Column::Version, increment_by(Expr::col(user::Column::Version), 1))
            .filter(user::Column::Id.eq(row.id.as_str()))
            .exec(&txn)
            .await?;
        let codes = replace_recovery_codes(&txn, &row.id, now).await?;
        let upgraded = if row.status == "active" {
            revoke_sessions(&txn, &row.id, None, "upgraded to AAL2", now).await?;
            let row = self.find_user(&txn, &row.id).await?;
            Some(self.create_session(&txn, &UserView::new(row), 2, now).await?)
        } else {
            None
        };
        self.audit(
            &txn,
            caller,
            mfa_audit("mfa_confirm", &principal.user_id, AuditOutcome::Success, ""),
        )
        .await?;
        txn.commit().await?;
        Ok((codes, upgraded))
    }

    /// A new set of recovery codes; the old ones stop working.
    pub async fn regenerate_recovery_codes(
        &self,
        principal: &Principal,
        caller: &Caller,
    ) -> Result<Vec<String>, Error> {
        principal.require_aal2()?;
        self.live_session(principal).await?;
        let (_turn, txn) = self.writer.begin().await?;
        let codes = replace_recovery_codes(&txn, &principal.user_id, self.now()).await?;
        self.audit(
            &txn,
            caller,
            mfa_audit(
                "recovery_codes_regenerate",
                &principal.user_id,
                AuditOutcome::Success,
                "",
            ),
        )
        .await?;
        txn.commit().await?;
        Ok(codes)
    }
}

pub(crate) async fn replace_recovery_codes<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Error> {
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let code = secrets::recovery_code()?;
        recovery_code::ActiveModel {
            code_hash: Set(secrets::recovery_code_digest(user_id, &code)),
            user_id: Set(user_id.to_owned()),
            created_at: Set(now),
            used_at: Set(None),
        }
        .insert(conn)
        .await?;
        codes.push(code);
    }
    Ok(codes)
}

fn mfa_audit<'a>(operation: &'a str, user_id: &'a str, outcome: AuditOutcome, reason: &'a str) -> Audited<'a> {
    Audited {
        action: AuditAction::Update,
        operation,
        entity_type: "User",
        entity_id: user_id,
        outcome,
        reason,
        ..Audited::default()
    }
}

/// `column + amount`, without bringing `ExprTrait`'s `min`/`max` into scope.
fn increment_by(column: Expr, amount: i32) -> Expr {
    sea_orm::sea_query::ExprTrait::add(column, amount)
}
