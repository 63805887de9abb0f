//! Issuing ABE user keys and break-glass emergency access.
//!
//! A key holds the attributes auth-svc reports for the caller at the time of issue (never what
//! the client claims), including emergency attributes of grants in force, and is sealed to the
//! caller's registered X25519 identity key (`caremesh_crypto::policy_envelope::seal_user_key`),
//! so the authority's answer is useless to anyone but the caller's device. The key material is
//! never stored; the issuance is (metadata) and audited.
//!
//! Emergency access (HIPAA 164.312(a)(2)(ii)): a doctor names a patient and a reason; the grant
//! is recorded here and with auth-svc (whose next tokens carry `emergency:<patient>` until the
//! grant ends), a key with that attribute expiring with the grant is issued, and the request is
//! audited with the emergency flag, which makes audit-svc raise an alert.

use caremesh_abe::rand_core::OsRng;
use caremesh_crypto::policy_envelope::seal_user_key;
use caremesh_proto::abe::v1::SealedUserKey;
use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_proto::auth::v1::Role;
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::db::Writer;
use caremesh_runtime::outbox::{Actor, Audited, Outbox};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, Set};

use crate::authority::Authority;
use crate::peers::Peers;
use crate::settings::AbeSettings;
use crate::storage::{emergency_grant, user_key};

/// Longest emergency justification, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// An issued key as the client receives it.
#[derive(Clone, Debug)]
pub struct IssuedKey {
    pub key_id: String,
    pub user_id: String,
    pub attributes: Vec<String>,
    pub params_version: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub attributes_etag: String,
    pub sealed: SealedUserKey,
}

/// A recorded emergency grant.
#[derive(Clone, Debug)]
pub struct Grant {
    pub grant_id: String,
    pub user_id: String,
    pub patient_id: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What an emergency request asks for.
#[derive(Clone, Debug)]
pub struct EmergencyRequest<'a> {
    pub patient_id: &'a str,
    pub reason: &'a str,
    /// `None`: the configured default.
    pub duration: Option<std::time::Duration>,
    pub identity_key_id: &'a str,
}

#[derive(Clone, Debug)]
pub struct Issuer {
    pub(crate) authority: Authority,
    pub(crate) peers: Peers,
    /// This process's writers, in turn (shared with the audit relay).
    pub(crate) writer: Writer,
    pub(crate) outbox: Outbox,
    pub(crate) clock: SharedClock,
    pub(crate) settings: AbeSettings,
}

fn actor(principal: &Principal, source_address: &str) -> Actor {
    Actor {
        user_id: principal.user_id.clone(),
        role: principal.role.clone(),
        session_id: principal.session_id.clone(),
        source_address: source_address.to_owned(),
    }
}

impl Issuer {
    /// Issues a key for the caller's current attributes, sealed to their identity key.
    pub async fn issue_user_key(
        &self,
        principal: &Principal,
        source_address: &str,
        expected_identity_key_id: &str,
    ) -> Result<IssuedKey, Error> {
        principal.require_aal2()?;
        let now = self.clock.now();
        let expires_at = now + chrono::Duration::from_std(self.settings.user_key_ttl).unwrap_or_default();
        let key = self
            .issue(principal, expected_identity_key_id, now, expires_at, None)
            .await;
        let audited = |outcome, reason| Audited {
            action: AuditAction::Execute,
            operation: "IssueUserKey",
            entity_type: "abe_user_key",
            entity_id: "",
            patient_id: "",
            outcome,
            reason,
            purpose_of_use: "",
            emergency: false,
        };
        let actor = actor(principal, source_address);
        match key {
            Ok(key) => {
                let (_turn, txn) = self.writer.begin().await?;
                store_key(&txn, &key, None).await?;
                self.outbox
                    .record_action(
                        &txn,
                        &actor,
                        Audited {
                            entity_id: &key.key_id,
                            ..audited(AuditOutcome::Success, "")
                        },
                    )
                    .await?;
                txn.commit().await?;
                self.outbox.wake_relay();
                Ok(key)
            }
            Err(error) => Err(self.denied(&actor, audited(AuditOutcome::Denied, ""), error).await),
        }
    }

    /// Break-glass access for a doctor: records the grant (here and with auth-svc) and issues a
    /// key with `emergency:<patient>` that expires with it.
    pub async fn request_emergency_access(
        &self,
        principal: &Principal,
        source_address: &str,
        request: EmergencyRequest<'_>,
    ) -> Result<(Grant, IssuedKey), Error> {
        let actor = actor(principal, source_address);
        let audited = |outcome, reason| Audited {
            action: AuditAction::Execute,
            operation: "RequestEmergencyAccess",
            entity_type: "emergency_grant",
            entity_id: "",
            patient_id: request.patient_id,
            outcome,
            reason,
            purpose_of_use: "ETREAT",
            emergency: false,
        };
        let checked = check_emergency_request(principal, &request);
        if let Err(error) = checked {
            return Err(self.denied(&actor, audited(AuditOutcome::Denied, ""), error).await);
        }
        let now = self.clock.now();
        let duration = request
            .duration
            .unwrap_or(self.settings.emergency_default)
            .min(self.settings.emergency_max);
        let grant = Grant {
            grant_id: uuid::Uuid::now_v7().to_string(),
            user_id: principal.user_id.clone(),
            patient_id: request.patient_id.to_owned(),
            reason: request.reason.trim().to_owned(),
            created_at: now,
            expires_at: now + chrono::Duration::from_std(duration).unwrap_or_default(),
        };
        let issued = async {
            self.peers
                .grant_emergency_attribute(&grant.grant_id, &grant.user_id, &grant.patient_id, grant.expires_at)
                .await?;
            self.issue(principal, request.identity_key_id, now, grant.expires_at, Some(&grant))
                .await
        }
        .await;
        let key = match issued {
            Ok(issued) => issued,
            Err(error) => {
                return Err(self.denied(&actor, audited(AuditOutcome::Denied, ""), error).await);
            }
        };
        let (_turn, txn) = self.writer.begin().await?;
        emergency_grant::ActiveModel {
            grant_id: Set(grant.grant_id.clone()),
            user_id: Set(grant.user_id.clone()),
            patient_id: Set(grant.patient_id.clone()),
            reason: Set(grant.reason.clone()),
            created_at: Set(grant.created_at),
            expires_at: Set(grant.expires_at),
        }
        .insert(&txn)
        .await?;
        store_key(&txn, &key, Some(&grant.grant_id)).await?;
        // The emergency flag is what makes audit-svc raise the alert.
        self.outbox
            .record_action(
                &txn,
                &actor,
                Audited {
                    entity_id: &grant.grant_id,
                    patient_id: &grant.patient_id,
                    emergency: true,
                    ..audited(AuditOutcome::Success, "")
                },
            )
            .await?;
        txn.commit().await?;
        self.outbox.wake_relay();
        Ok((grant, key))
    }

    /// Looks up the caller's attributes and identity key and makes the sealed key.
    async fn issue(
        &self,
        principal: &Principal,
        expected_identity_key_id: &str,
        now: DateTime<Utc>,
        mut expires_at: DateTime<Utc>,
        grant: Option<&Grant>,
    ) -> Result<IssuedKey, Error> {
        let user = self.peers.user_attributes(&principal.user_id).await?;
        if !user.active {
            return Err(Error::failed_precondition(
                "ACCOUNT_NOT_ACTIVE",
                "only active accounts get attribute keys",
            ));
        }
        if matches!(user.role, Role::Admin | Role::Auditor) {
            return Err(Error::permission_denied(
                "ROLE_HAS_NO_KEYS",
                "admins and auditors do not read health data, so they get no attribute keys",
            ));
        }
        let identity = self.peers.identity_key(&principal.user_id).await?.ok_or_else(|| {
            Error::failed_precondition(
                "NO_IDENTITY_KEY",
                "publish your device keys (MessagingService.PublishKeyBundle) before asking for an attribute key",
            )
        })?;
        if !expected_identity_key_id.is_empty() && identity.key_id() != expected_identity_key_id {
            return Err(Error::failed_precondition(
                "IDENTITY_KEY_CHANGED",
                format!(
                    "your registered identity key is {}, not {expected_identity_key_id}; this device would not be able to open the key",
                    identity.key_id()
                ),
            ));
        }
        let mut attributes = user.attributes;
        for (attribute, until) in user.temporary {
            if until > now {
                // A key never outlives an emergency attribute it holds.
                expires_at = expires_at.min(until);
                attributes.push(attribute);
            }
        }
        if let Some(grant) = grant {
            let granted = format!("emergency:{}", grant.patient_id);
            if !attributes.contains(&granted) {
                return Err(Error::unavailable(
                    "GRANT_NOT_VISIBLE",
                    "auth-svc has not confirmed the emergency grant yet; retry shortly",
                ));
            }
        }
        attributes.sort();
        attributes.dedup();
        let master = std::sync::Arc::clone(&self.authority.master);
        let params = std::sync::Arc::clone(&self.authority.params);
        let key_attributes = attributes.clone();
        // Key generation is a few milliseconds of curve arithmetic: off the async threads.
        let key_bytes = tokio::task::spawn_blocking(move || {
            caremesh_abe::keygen(&params, &master, &key_attributes, &mut OsRng).map(|key| key.to_bytes())
        })
        .await
        .map_err(|error| Error::internal("generating an ABE user key", error))?
        .map_err(|error| {
            Error::failed_precondition(
                "ATTRIBUTES_NOT_KEYABLE",
                format!("your attributes cannot be put in a key: {error}"),
            )
        })?;
        let key_id = uuid::Uuid::now_v7().to_string();
        let sealed = seal_user_key(&principal.user_id, &key_id, &identity, &key_bytes)
            .map_err(|error| Error::internal("sealing an ABE user key", error.to_string()))?;
        Ok(IssuedKey {
            key_id,
            user_id: principal.user_id.clone(),
            attributes,
            params_version: self.authority.published().version.clone(),
            issued_at: now,
            expires_at,
            attributes_etag: user.etag,
            sealed,
        })
    }

    /// Records a refused request, then returns the refusal.
    async fn denied(&self, actor: &Actor, audited: Audited<'_>, error: Error) -> Error {
        self.outbox.record_refusal(&self.writer, actor, audited, error).await
    }
}

fn check_emergency_request(principal: &Principal, request: &EmergencyRequest<'_>) -> Result<(), Error> {
    principal.require_aal2()?;
    if principal.role != "doctor" {
        return Err(Error::permission_denied(
            "DOCTORS_ONLY",
            "emergency access is for doctors only",
        ));
    }
    if request.patient_id.is_empty() {
        return Err(Error::invalid_argument("MISSING_FIELD", "patient_id is required"));
    }
    let reason = request.reason.trim();
    if reason.is_empty() {
        return Err(Error::invalid_argument(
            "MISSING_REASON",
            "give a reason for emergency access (it is shown to auditors and the patient)",
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(Error::invalid_argument(
            "INVALID_REASON",
            format!("the reason must be at most {MAX_REASON_CHARS} characters on one line"),
        ));
    }
    if request.duration.is_some_and(|duration| duration.is_zero()) {
        return Err(Error::invalid_argument(
            "INVALID_DURATION",
            "the duration must be positive (or unset for the default)",
        ));
    }
    Ok(())
}

async fn store_key<C: sea_orm::ConnectionTrait>(
    conn: &C,
    key: &IssuedKey,
    grant_id: Option<&str>,
) -> Result<(), Error> {
    user_key::ActiveModel {
        key_id: Set(key.key_id.clone()),
        user_id: Set(key.user_id.clone()),
        attributes: Set(serde_json::to_string(&key.attributes)
            .map_err(|error| Error::internal("encoding key attributes", error))?),
        attributes_etag: Set(key.attributes_etag.clone()),
        params_version: Set(key.params_version.clone()),
        identity_key_id: Set(key.sealed.recipient_identity_key_id.clone()),
        grant_id: Set(grant_id.map(str::to_owned)),
        issued_at: Set(key.issued_at),
        expires_at: Set(key.expires_at),
    }
    .insert(conn)
    .await?;
    Ok(())
}
