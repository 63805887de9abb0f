//! Accounts: self-registration (patients active at once; doctors and nurses pending until an
//! admin approves them), and the admin operations. Every admin action is audited in the same
//! transaction as the change.

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr};

use crate::attributes;
use crate::domain::{Audited, AuthDomain, Caller, check_etag, normalize_username, validate_username};
use crate::password;
use crate::revocations;
use crate::storage::{session, user};

pub const ROLES: &[&str] = &["patient", "doctor", "nurse", "admin", "auditor"];
pub const SELF_REGISTERING_ROLES: &[&str] = &["patient", "doctor", "nurse"];

/// A user with the attributes tokens carry.
#[derive(Clone, Debug)]
pub struct UserView {
    pub row: user::Model,
    pub assigned: Vec<String>,
    pub derived: Vec<String>,
}

impl UserView {
    pub fn new(row: user::Model) -> Self {
        let assigned = serde_json::from_str(&row.attributes).unwrap_or_default();
        let derived = attributes::derived(&row.id, &row.role);
        Self { row, assigned, derived }
    }

    /// Everything a token for this user carries.
    pub fn all_attributes(&self) -> Vec<String> {
        let mut all = self.derived.clone();
        all.extend(self.assigned.iter().cloned());
        all
    }
}

/// Filters of the admin user list.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    pub status: Option<String>,
    pub role: Option<String>,
    pub locked: Option<bool>,
    pub username_prefix: String,
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub role: &'a str,
    pub display_name: &'a str,
    pub attributes: &'a [String],
}

fn validate_display_name(name: &str) -> Result<(), Error> {
    let length = name.chars().count();
    if length > 128 || name.chars().any(char::is_control) {
        return Err(Error::invalid_argument(
            "INVALID_DISPLAY_NAME",
            "a display name is at most 128 characters, without control characters",
        ));
    }
    Ok(())
}

fn validate_role(role: &str) -> Result<(), Error> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "INVALID_ROLE",
            format!("role must be one of {}", ROLES.join(", ")),
        ))
    }
}

impl AuthDomain {
    /// Self-registration.
    pub async fn register(&self, caller: &Caller, new: NewUser<'_>) -> Result<UserView, Error> {
        if let Some(source) = caller.source {
            self.register_limiter.check(source, self.now()).map_err(|wait| {
                Error::resource_exhausted(
                    "RATE_LIMITED",
                    "too many registrations from your address; retry later",
                    wait,
                )
            })?;
        }
        if !SELF_REGISTERING_ROLES.contains(&new.role) {
            return Err(Error::permission_denied(
                "ROLE_NOT_SELF_SERVICE",
                "patients, doctors and nurses register themselves; admins and auditors are created by an admin",
            ));
        }
        if !new.attributes.is_empty() {
            return Err(Error::invalid_argument(
                "ATTRIBUTES_NOT_SELF_SERVICE",
                "attributes are assigned by an admin when approving the account",
            ));
        }
        self.insert_user(caller, new, "register").await
    }

    /// Creates an account of any role (admin only). Returns the password it set.
    pub async fn create_user(
        &self,
        admin: &Principal,
        caller: &Caller,
        new: NewUser<'_>,
    ) -> Result<(UserView, String), Error> {
        admin.require_role(&["admin"])?;
        let password = if new.password.is_empty() {
            crate::secrets::initial_password()?
        } else {
            new.password.to_owned()
        };
        let view = self
            .insert_user(
                caller,
                NewUser {
                    password: &password,
                    ..new
                },
                "admin_create_user",
            )
            .await?;
        Ok((view, password))
    }

    async fn insert_user(&self, caller: &Caller, new: NewUser<'_>, operation: &str) -> Result<UserView, Error> {
        let username = normalize_username(new.username);
        validate_username(&username)?;
        validate_role(new.role)?;
        validate_display_name(new.display_name)?;
        let assigned = attributes::validate_assigned(new.attributes)?;
        password::check_strength(new.password, &username, new.display_name)?;
        let hash = self.hash_password(new.password).await?;
        let now = self.now();
        let status = if matches!(new.role, "doctor" | "nurse") && operation == "register" {
            "pending"
        } else {
            "active"
        };
        let id = uuid::Uuid::now_v7().to_string();
        let row = user::ActiveModel {
            id: Set(id.clone()),
            username: Set(username),
            display_name: Set(new.display_name.to_owned()),
            role: Set(new.role.to_owned()),
            status: Set(status.to_owned()),
            attributes: Set(serde_json::to_string(&assigned).unwrap_or_else(|_| "[]".to_owned())),
            password_hash: Set(hash),
            totp_secret: Set(None),
            totp_pending_secret: Set(None),
            totp_pending_expires_at: Set(None),
            totp_last_step: Set(None),
            failed_attempts: Set(0),
            passkey_count: Set(0),
            locked: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            approved_at: Set((status == "active" && new.role != "patient").then_some(now)),
            version: Set(1),
        };
        let (_turn, txn) = self.writer.begin().await?;
        let row = row.insert(&txn).await.map_err(|error| match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Error::already_exists("USERNAME_TAKEN", "that username is taken; choose another")
            }
            _ => Error::from(error),
        })?;
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Create,
                operation,
                entity_type: "User",
                entity_id: &id,
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(UserView::new(row))
    }

    pub async fn get_user(
        &self,
        admin: &Principal,
        user_id: Option<&str>,
        username: Option<&str>,
    ) -> Result<UserView, Error> {
        admin.require_role(&["admin"])?;
        let row = match (user_id, username) {
            (Some(id), _) => self.find_user(&self.db, id).await?,
            (None, Some(name)) => user::Entity::find()
                .filter(user::Column::Username.eq(normalize_username(name)))
                .one(&self.db)
                .await?
                .ok_or_else(|| Error::not_found("USER_NOT_FOUND", format!("no user named {name}")))?,
            (None, None) => return Err(Error::invalid_argument("MISSING_USER", "give a user_id or a username")),
        };
        Ok(UserView::new(row))
    }

    /// Users in username order, `page_size` at a time.
    pub async fn list_users(
        &self,
        admin: &Principal,
        filter: &UserFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<UserView>, String), Error> {
        admin.require_role(&["admin"])?;
        let size = crate::domain::page_size(page_size)?;
        let mut query = user::Entity::find().order_by_asc(user::Column::Username);
        if !page_token.is_empty() {
            let after = crate::domain::decode_page_token(USER_PAGE, page_token)?;
            query = query.filter(user::Column::Username.gt(after));
        }
        if let Some(status) = &filter.status {
            query = query.filter(user::Column::Status.eq(status.as_str()));
        }
        if let Some(role) = &filter.role {
            query = query.filter(user::Column::Role.eq(role.as_str()));
        }
        if let Some(locked) = filter.locked {
            query = query.filter(user::Column::Locked.eq(locked));
        }
        if !filter.username_prefix.is_empty() {
            query = query.filter(user::Column::Username.starts_with(normalize_username(&filter.username_prefix)));
        }
        let mut rows = query.limit(size + 1).all(&self.db).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            rows.last()
                .map(|row| crate::domain::encode_page_token(USER_PAGE, &row.username))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows.into_iter().map(UserView::new).collect(), next))
    }

    /// Approves a pending doctor or nurse with their attributes.
    pub async fn approve_user(
        &self,
        admin: &Principal,
        caller: &Caller,
        user_id: &str,
        assigned: &[String],
        etag: &str,
    ) -> Result<UserView, Error> {
        self.admin_update(admin, caller, user_id, etag, true, "admin_approve_user", |row, now| {
            if row.status != "pending" {
                return Err(Error::failed_precondition(
                    "NOT_PENDING",
                    format!("the user is {}, not pending approval", row.status),
                ));
            }
            let assigned = attributes::validate_assigned(assigned)?;
            Ok(vec![
                (user::Column::Status, Expr::value("active")),
                (user::Column::ApprovedAt, Expr::value(Some(now))),
                (
                    user::Column::Attributes,
                    Expr::value(serde_json::to_string(&assigned).unwrap_or_default()),
                ),
            ])
        })
        .await
    }

    pub async fn update_attributes(
        &self,
        admin: &Principal,
        caller: &Caller,
        user_id: &str,
        assigned: &[String],
        etag: &str,
    ) -> Result<UserView, Error> {
        self.admin_update(admin, caller, user_id, etag, true, "admin_update_attributes", |_, _| {
            let assigned = attributes::validate_assigned(assigned)?;
            Ok(vec![(
                user::Column::Attributes,
                Expr::value(serde_json::to_string(&assigned).unwrap_or_default()),
            )])
        })
        .await
    }

    pub async fn set_disabled(
        &self,
        admin: &Principal,
        caller: &Caller,
        user_id: &str,
        disabled: bool,
        etag: &str,
    ) -> Result<UserView, Error> {
        if disabled && admin.user_id == user_id {
            return Err(Error::failed_precondition(
                "SELF_DISABLE",
                "an admin cannot disable their own account",
            ));
        }
        let operation = if disabled {
            "admin_disable_user"
        } else {
            "admin_enable_user"
        };
        let view = self
            .admin_update(admin, caller, user_id, etag, false, operation, |row, _| {
                let status = if disabled {
                    "disabled"
                } else if row.approved_at.is_some() || row.role == "patient" {
                    "active"
                } else {
                    "pending"
                };
                Ok(vec![(user::Column::Status, Expr::value(status))])
            })
            .await?;
        if disabled {
            self.revoke_sessions_of(user_id, "user disabled").await?;
        }
        Ok(view)
    }

    pub async fn unlock_user(
        &self,
        admin: &Principal,
        caller: &Caller,
        user_id: &str,
        etag: &str,
    ) -> Result<UserView, Error> {
        let view = self
            .admin_update(admin, caller, user_id, etag, false, "admin_unlock_user", |_, _| {
                Ok(vec![
                    (user::Column::Locked, Expr::value(false)),
                    (user::Column::FailedAttempts, Expr::value(0)),
                ])
            })
            .await?;
        self.backoff.succeeded(&view.row.username);
        Ok(view)
    }

    pub async fn reset_mfa(
        &self,
        admin: &Principal,
        caller: &Caller,
        user_id: &str,
        etag: &str,
    ) -> Result<UserView, Error> {
        let view = self
            .admin_update(admin, caller, user_id, etag, false, "admin_reset_mfa", |_, _| {
                Ok(vec![
                    (user::Column::TotpSecret, Expr::value(Option::<Vec<u8>>::None)),
                    (user::Column::TotpPendingSecret, Expr::value(Option::<Vec<u8>>::None)),
                ])
            })
            .await?;
        // Passkeys are second factors too; a lost device is the usual reason for a reset.
        let (_turn, txn) = self.writer.begin().await?;
        crate::storage::passkey::Entity::delete_many()
            .filter(crate::storage::passkey::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        user::Entity::update_many()
            .col_expr(user::Column::PasskeyCount, Expr::value(0))
            .filter(user::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.revoke_sessions_of(user_id, "MFA reset").await?;
        Ok(view)
    }

    pub async fn admin_revoke_sessions(&self, admin: &Principal, caller: &Caller, user_id: &str) -> Result<u64, Error> {
        admin.require_role(&["admin"])?;
        self.find_user(&self.db, user_id).await?;
        let (_turn, txn) = self.writer.begin().await?;
        let revoked = revoke_sessions(&txn, user_id, None, "revoked by admin", self.now()).await?;
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Update,
                operation: "admin_revoke_sessions",
                entity_type: "User",
                entity_id: user_id,
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(revoked)
    }

    async fn revoke_sessions_of(&self, user_id: &str, reason: &str) -> Result<u64, Error> {
        revoke_sessions(&self.db, user_id, None, reason, self.now()).await
    }

    /// Applies `change` to a user if `etag` matches, bumping the version, with an audit record,
    /// in one transaction. A concurrent change in between makes this ABORTED.
    #[allow(clippy::too_many_arguments)]
    async fn admin_update<F>(
        &self,
        admin: &Principal,
        caller: &Caller,
        user_id: &str,
        etag: &str,
        etag_required: bool,
        operation: &str,
        change: F,
    ) -> Result<UserView, Error>
    where
        F: FnOnce(&user::Model, DateTime<Utc>) -> Result<Vec<(user::Column, sea_orm::sea_query::SimpleExpr)>, Error>,
    {
        admin.require_role(&["admin"])?;
        let now = self.now();
        let (_turn, txn) = self.writer.begin().await?;
        let row = self.find_user(&txn, user_id).await?;
        check_etag(etag, row.version, etag_required)?;
        let mut update = user::Entity::update_many()
            .col_expr(user::Column::Version, Expr::value(row.version + 1))
            .col_expr(user::Column::UpdatedAt, Expr::value(now));
        for (column, value) in change(&row, now)? {
            update = update.col_expr(column, value);
        }
        let updated = update
            .filter(user::Column::Id.eq(user_id))
            .filter(user::Column::Version.eq(row.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(Error::aborted(
                "ETAG_MISMATCH",
                "the user changed while this was applied: read it again and retry",
            ));
        }
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Update,
                operation,
                entity_type: "User",
                entity_id: user_id,
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        let updated = UserView::new(self.find_user(&txn, user_id).await?);
        // Tokens issued before now stop carrying what was taken away (the revocation feed).
        let before = UserView::new(row);
        revocations::record_removed_attributes(&txn, user_id, &before.assigned, &updated.assigned, now).await?;
        txn.commit().await?;
        Ok(updated)
    }

    /// A user's current role, status and attributes (internal RPC).
    pub async fn user_attributes(&self, user_id: &str) -> Result<UserView, Error> {
        Ok(UserView::new(self.find_user(&self.db, user_id).await?))
    }

    /// Profiles of many users (internal RPC); unknown ids are left out.
    pub async fn profiles(&self, user_ids: &[String]) -> Result<Vec<UserView>, Error> {
        if user_ids.len() > 1000 {
            return Err(Error::invalid_argument(
                "TOO_MANY_IDS",
                "ask for at most 1000 users at once",
            ));
        }
        let rows = user::Entity::find()
            .filter(user::Column::Id.is_in(user_ids.iter().cloned()))
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(UserView::new).collect())
    }

    /// Another user's public profile, for a signed-in user. Patients do not see other patients.
    pub async fn lookup(
        &self,
        principal: &Principal,
        user_id: Option<&str>,
        username: Option<&str>,
    ) -> Result<UserView, Error> {
        let not_found = || Error::not_found("USER_NOT_FOUND", "no such user");
        let row = match (user_id, username) {
            (Some(id), _) => user::Entity::find_by_id(id.to_owned()).one(&self.db).await?,
            (None, Some(name)) => {
                user::Entity::find()
                    .filter(user::Column::Username.eq(normalize_username(name)))
                    .one(&self.db)
                    .await?
            }
            (None, None) => return Err(Error::invalid_argument("MISSING_USER", "give a user_id or a username")),
        }
        .ok_or_else(not_found)?;
        if principal.role == "patient" && row.role == "patient" && row.id != principal.user_id {
            return Err(not_found());
        }
        Ok(UserView::new(row))
    }
}

/// Revokes the sessions of `user_id` (all, or all but `keep`); returns how many.
pub async fn revoke_sessions<C: sea_orm::ConnectionTrait>(
    conn: &C,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    let mut update = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Some(now)))
        .col_expr(session::Column::RevokedReason, Expr::value(Some(reason.to_owned())))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(session::Column::Id.ne(keep));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// Users' pages continue after a username.
const USER_PAGE: &str = "u1:";
