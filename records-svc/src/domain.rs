//! records-svc's domain state and the helpers its operations share: who may read and write a
//! record (role and token attributes against the record's policy, on top of the ABE encryption),
//! whether an access was possible only through emergency access, and the audit trail. The
//! operations live in `records`. No tonic types here.

use std::sync::Arc;

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::attachments::{AttachmentLimits, Attachments};
use caremesh_runtime::auth::Principal;
use caremesh_runtime::blob::BlobStore;
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::db::{WriteTxn, Writer};
use caremesh_runtime::outbox::{Audited, Outbox};
use caremesh_runtime::{Error, ServiceName, ServiceRuntime};
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::identities::Identities;

/// Who is calling, as the audit log records it (the runtime's audit actor).
pub use caremesh_runtime::outbox::Actor as Caller;

/// The audit entity type of records.
pub const ENTITY_TYPE: &str = "record";

/// The audit entity type of a record's attachment.
pub const ATTACHMENT_ENTITY_TYPE: &str = "attachment";

#[derive(Clone, Debug)]
pub struct RecordsDomain {
    pub(crate) db: DatabaseConnection,
    pub(crate) clock: SharedClock,
    pub(crate) outbox: Outbox,
    pub(crate) identities: Arc<Identities>,
    /// This process's writers, in turn (shared with the audit relay).
    writer: Writer,
    /// Attachment blobs of DocumentReference records (see `attachments`).
    pub(crate) attachments: Attachments,
}

/// What an audit event of records-svc says, besides who acted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Access<'a> {
    pub action: AuditAction,
    pub operation: &'a str,
    /// What was accessed: a record ([`ENTITY_TYPE`]) or a record's attachment.
    pub entity_type: &'a str,
    /// The record (or attachment); empty for a listing.
    pub record_id: &'a str,
    pub patient_id: &'a str,
    /// True when the caller could act only through their `emergency:` attribute.
    pub emergency: bool,
}

impl<'a> Access<'a> {
    pub fn new(action: AuditAction, operation: &'a str, record_id: &'a str, patient_id: &'a str) -> Self {
        Self {
            action,
            operation,
            entity_type: ENTITY_TYPE,
            record_id,
            patient_id,
            emergency: false,
        }
    }

    /// The same access to the attachment `attachment_id` of a record.
    pub fn attachment(self, attachment_id: &'a str) -> Self {
        Self {
            entity_type: ATTACHMENT_ENTITY_TYPE,
            record_id: attachment_id,
            ..self
        }
    }

    pub fn patient(self, patient_id: &'a str) -> Self {
        Self { patient_id, ..self }
    }

    pub fn emergency(self, emergency: bool) -> Self {
        Self { emergency, ..self }
    }

    /// The audit event's fields for this access by `caller`.
    pub(crate) fn audited(self, caller: &Caller, outcome: AuditOutcome, reason: &'a str) -> Audited<'a> {
        let purpose_of_use = if self.emergency {
            "ETREAT"
        } else if caller.role == "patient" {
            "PATRQT"
        } else {
            "TREAT"
        };
        Audited {
            action: self.action,
            operation: self.operation,
            entity_type: self.entity_type,
            entity_id: self.record_id,
            patient_id: self.patient_id,
            outcome,
            reason,
            purpose_of_use,
            emergency: self.emergency,
        }
    }
}

/// A granted access to one record version: whether it needed emergency access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub emergency: bool,
}

impl RecordsDomain {
    pub fn start(runtime: &ServiceRuntime, limits: AttachmentLimits) -> Result<Self, Error> {
        let messaging = runtime
            .channel(ServiceName::Messaging, Default::default())
            .map_err(|error| Error::internal("messaging-svc channel", error))?;
        let domain = Self {
            db: runtime.db.clone(),
            clock: Arc::clone(&runtime.clock),
            outbox: runtime.outbox.clone(),
            identities: Arc::new(Identities::new(messaging)),
            writer: runtime.writer.clone(),
            attachments: Attachments::new(
                runtime.db.clone(),
                runtime.writer.clone(),
                runtime.outbox.clone(),
                BlobStore::for_service(&runtime.config, &runtime.db),
                limits,
            ),
        };
        tokio::spawn(domain.clone().sweep_loop(runtime.shutdown_token()));
        Ok(domain)
    }

    /// Now, to the microsecond (what PostgreSQL stores), so a response shows the stored times.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(6)
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite, after this process's earlier
    /// writers). Keep the guard until the commit.
    pub(crate) async fn begin_write(&self) -> Result<WriteTxn, Error> {
        Ok(self.writer.begin().await?)
    }

    /// Writes an audit event through `conn` (the transaction of the change it describes).
    pub(crate) async fn audit<C: ConnectionTrait>(
        &self,
        conn: &C,
        caller: &Caller,
        access: Access<'_>,
        outcome: AuditOutcome,
        reason: &str,
    ) -> Result<(), Error> {
        self.outbox
            .record_action(conn, caller, access.audited(caller, outcome, reason))
            .await
    }

    /// Records a successful read in its own transaction (the read is refused if it cannot be
    /// audited).
    pub(crate) async fn audit_read(&self, caller: &Caller, access: Access<'_>) -> Result<(), Error> {
        let (_turn, txn) = self.begin_write().await?;
        self.audit(&txn, caller, access, AuditOutcome::Success, "").await?;
        txn.commit().await?;
        self.outbox.wake_relay();
        Ok(())
    }

    /// Records a refused access in its own transaction, then returns the refusal.
    pub(crate) async fn denied(&self, caller: &Caller, access: Access<'_>, error: Error) -> Error {
        // (The outcome and reason are set from the refusal.)
        let audited = access.audited(caller, AuditOutcome::Denied, "");
        self.outbox.record_refusal(&self.writer, caller, audited, error).await
    }
}

/// Roles that may read records (when their attributes satisfy the policy).
pub fn require_reader_role(principal: &Principal) -> Result<(), Error> {
    if matches!(principal.role.as_str(), "doctor" | "nurse" | "patient") {
        Ok(())
    } else {
        Err(Error::permission_denied(
            "ROLE_CANNOT_READ_RECORDS",
            format!(
                "only doctors, nurses and patients may read records; you are {}",
                principal.role
            ),
        ))
    }
}

/// Roles that may write records (when their attributes satisfy the policy).
pub fn require_writer_role(principal: &Principal) -> Result<(), Error> {
    if matches!(principal.role.as_str(), "doctor" | "nurse") {
        Ok(())
    } else {
        Err(Error::permission_denied(
            "ROLE_CANNOT_WRITE_RECORDS",
            format!("only doctors and nurses may write records; you are {}", principal.role),
        ))
    }
}

/// Whether the caller's token attributes satisfy `policy`, and whether only through emergency
/// access (the policy is satisfied, but not without the `emergency:` attributes).
pub fn evaluate(principal: &Principal, policy: &str) -> Result<Option<Grant>, Error> {
    let parsed =
        caremesh_abe::Policy::parse(policy).map_err(|error| Error::internal("parsing a stored policy", error))?;
    if !parsed.is_satisfied_by(&principal.attributes) {
        return Ok(None);
    }
    let ordinary: Vec<&str> = principal
        .attributes
        .iter()
        .map(String::as_str)
        .filter(|attribute| !attribute.starts_with("emergency:"))
        .collect();
    Ok(Some(Grant {
        emergency: !parsed.is_satisfied_by(&ordinary),
    }))
}

/// Like [`evaluate`], refusing when the policy is not satisfied; `what` says what was tried.
pub fn authorize(principal: &Principal, policy: &str, what: &str) -> Result<Grant, Error> {
    evaluate(principal, policy)?.ok_or_else(|| {
        Error::permission_denied(
            "POLICY_NOT_SATISFIED",
            format!("your attributes do not satisfy the record's policy, so you may not {what}"),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn principal(role: &str, attributes: &[&str]) -> Principal {
        Principal {
            user_id: "u1".to_owned(),
            role: role.to_owned(),
            attributes: attributes.iter().map(|attribute| (*attribute).to_owned()).collect(),
            session_id: "s1".to_owned(),
            aal: 2,
            issued_at: 0,
        }
    }

    const POLICY: &str = r#"("role:doctor" and "dept:cardiology") or "patient:p1" or "emergency:p1""#;

    #[test]
    fn access_through_emergency_attributes_only_is_flagged() {
        let cardiology = principal("doctor", &["role:doctor", "dept:cardiology"]);
        assert_eq!(evaluate(&cardiology, POLICY).unwrap(), Some(Grant { emergency: false }));
        let oncology = principal("doctor", &["role:doctor", "dept:oncology"]);
        assert_eq!(evaluate(&oncology, POLICY).unwrap(), None);
        assert_eq!(
            authorize(&oncology, POLICY, "read it").unwrap_err().reason(),
            "POLICY_NOT_SATISFIED"
        );
        let emergency = principal("doctor", &["role:doctor", "dept:oncology", "emergency:p1"]);
        assert_eq!(evaluate(&emergency, POLICY).unwrap(), Some(Grant { emergency: true }));
        let both = principal("doctor", &["role:doctor", "dept:cardiology", "emergency:p1"]);
        assert_eq!(evaluate(&both, POLICY).unwrap(), Some(Grant { emergency: false }));
        let patient = principal("patient", &["role:patient", "patient:p1"]);
        assert_eq!(evaluate(&patient, POLICY).unwrap(), Some(Grant { emergency: false }));
    }

    #[test]
    fn only_clinicians_write_and_admins_read_nothing() {
        assert!(require_writer_role(&principal("doctor", &[])).is_ok());
        assert!(require_writer_role(&principal("nurse", &[])).is_ok());
        assert!(require_writer_role(&principal("patient", &[])).is_err());
        assert!(require_reader_role(&principal("patient", &[])).is_ok());
        for role in ["admin", "auditor"] {
            assert_eq!(
                require_reader_role(&principal(role, &[])).unwrap_err().reason(),
                "ROLE_CANNOT_READ_RECORDS"
            );
        }
    }
}
