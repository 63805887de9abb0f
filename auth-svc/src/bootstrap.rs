//! The first administrator. On first start with no admin account, auth-svc creates `admin` with
//! a random password, an enrolled TOTP secret and recovery codes, and writes them once to a file
//! in the data directory that only its owner can read. `caremesh up` prints where it is.

use std::path::{Path, PathBuf};

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::Error;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

use crate::domain::{Audited, AuthDomain, Caller};
use crate::mfa::totp_purpose;
use crate::storage::{recovery_code, user};
use crate::{mfa, secrets, totp};

pub const BOOTSTRAP_FILE: &str = "bootstrap-admin.txt";
pub const BOOTSTRAP_USERNAME: &str = "admin";

/// The bootstrap file's path in `data_dir`.
pub fn bootstrap_file(data_dir: &Path) -> PathBuf {
    data_dir.join(BOOTSTRAP_FILE)
}

impl AuthDomain {
    /// Creates the bootstrap admin when there is no admin yet; returns the file it wrote.
    pub async fn ensure_admin(&self, data_dir: &Path) -> Result<Option<PathBuf>, Error> {
        let admins = user::Entity::find()
            .filter(user::Column::Role.eq("admin"))
            .count(&self.db)
            .await?;
        if admins > 0 {
            return Ok(None);
        }
        let now = self.now();
        let password = secrets::initial_password()?;
        let hash = self.hash_password(&password).await?;
        let mut secret = zeroize::Zeroizing::new([0u8; totp::SECRET_LEN]);
        secrets::fill(secret.as_mut())?;
        let id = uuid::Uuid::now_v7().to_string();
        let sealed = self
            .kek
            .seal(&totp_purpose(&id), secret.as_ref())
            .map_err(|error| Error::internal("sealing a TOTP secret", error.to_string()))?;
        let (_turn, txn) = self.writer.begin().await?;
        user::ActiveModel {
            id: Set(id.clone()),
            username: Set(BOOTSTRAP_USERNAME.to_owned()),
            display_name: Set("Bootstrap administrator".to_owned()),
            role: Set("admin".to_owned()),
            status: Set("active".to_owned()),
            attributes: Set("[]".to_owned()),
            password_hash: Set(hash),
            totp_secret: Set(Some(sealed)),
            totp_pending_secret: Set(None),
            totp_pending_expires_at: Set(None),
            totp_last_step: Set(None),
            failed_attempts: Set(0),
            passkey_count: Set(0),
            locked: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            approved_at: Set(Some(now)),
            version: Set(1),
        }
        .insert(&txn)
        .await?;
        let mut codes = Vec::with_capacity(mfa::RECOVERY_CODES);
        for _ in 0..mfa::RECOVERY_CODES {
            let code = secrets::recovery_code()?;
            recovery_code::ActiveModel {
                code_hash: Set(secrets::recovery_code_digest(&id, &code)),
                user_id: Set(id.clone()),
                created_at: Set(now),
                used_at: Set(None),
            }
            .insert(&txn)
            .await?;
            codes.push(code);
        }
        self.audit(
            &txn,
            &Caller {
                role: "service".to_owned(),
                ..Caller::default()
            },
            Audited {
                action: AuditAction::Create,
                operation: "bootstrap_admin",
                entity_type: "User",
                entity_id: &id,
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        let contents = zeroize::Zeroizing::new(format!(
            "# caremesh bootstrap administrator, created {now}.\n\
             # Log in with these, keep them somewhere safe, then delete this file.\n\
             username: {BOOTSTRAP_USERNAME}\n\
             password: {password}\n\
             totp_secret: {}\n\
             otpauth_uri: {}\n\
             recovery_codes: {}\n",
            totp::encode_secret(secret.as_ref()),
            totp::otpauth_uri(&self.settings.totp_issuer, BOOTSTRAP_USERNAME, secret.as_ref()),
            codes.join(" "),
        ));
        let path = bootstrap_file(data_dir);
        // Written before the commit: if the file cannot be written, no admin exists that nobody
        // can log in as.
        caremesh_runtime::kek::write_private(&path, contents.as_bytes())
            .map_err(|error| Error::internal("writing the bootstrap admin file", error))?;
        txn.commit().await?;
        tracing::warn!(path = %path.display(), "created the bootstrap administrator; its credentials are in this file");
        Ok(Some(path))
    }

    pub async fn verification_keys(&self) -> Result<Vec<crate::keys::PublishedKey>, Error> {
        self.keys.published(&self.db, self.now()).await
    }

    /// Makes a new signing key current. Tokens signed by the old key keep working until they
    /// expire.
    pub async fn rotate_signing_key(
        &self,
        admin: &caremesh_runtime::auth::Principal,
        caller: &Caller,
    ) -> Result<crate::keys::PublishedKey, Error> {
        admin.require_role(&["admin"])?;
        let overlap = self.settings.access_token_ttl + std::time::Duration::from_secs(60);
        let key = self.keys.rotate(&self.writer, &self.kek, self.now(), overlap).await?;
        let (_turn, txn) = self.writer.begin().await?;
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Update,
                operation: "admin_rotate_signing_key",
                entity_type: "SigningKey",
                entity_id: &key.kid,
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(key)
    }
}
