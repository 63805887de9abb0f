//! Attachments of records (`docs/protocol.md` §13.4): a doctor or nurse creates one for the id of
//! the DocumentReference record they are about to write, uploads the encrypted blob, then writes
//! the record, whose ABE-sealed content names the blob with its key and digest. The blob is kept
//! by the runtime's [`Attachments`](caremesh_runtime::attachments::Attachments).
//!
//! Until the record exists only its creator sees the attachment (to resume the upload). Once the
//! record exists — written by the same user — the blob follows the record's policy, exactly as
//! GetRecord does: role, AAL2, the token's attributes against the latest version's policy, and
//! the access audited with the patient id (flagged when only emergency access admitted it).
//! Records are never deleted, so neither are their blobs; attachments whose record never came
//! are removed after the orphan time.

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::Error;
use caremesh_runtime::attachments::{AttachmentView, NewAttachment, attachment};
use caremesh_runtime::auth::Principal;
use futures::Stream;

use crate::domain::{Access, Caller, Grant, RecordsDomain, authorize, require_reader_role, require_writer_role};
use crate::storage::record;
use crate::validate;

impl RecordsDomain {
    /// Reserves an attachment for the record `record_id` the caller is about to write.
    pub async fn create_attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
        record_id: &str,
        blob_len: u64,
    ) -> Result<AttachmentView, Error> {
        let access =
            Access::new(AuditAction::Create, "CreateRecordAttachment", record_id, "").attachment(attachment_id);
        let gate = principal.require_aal2().and_then(|()| require_writer_role(principal));
        if let Err(error) = gate {
            return Err(self.denied(caller, access, error).await);
        }
        validate::check_uuid_v7(record_id, "record_id")?;
        // Only a record not written yet gains attachments, so nobody attaches a blob to a record
        // someone else wrote.
        if self.head(record_id).await?.is_some() {
            return Err(Error::failed_precondition(
                "RECORD_ALREADY_WRITTEN",
                format!(
                    "record {record_id} exists: create attachments before writing the DocumentReference record that names them"
                ),
            ));
        }
        let event = self
            .outbox
            .action_event(caller, access.audited(caller, AuditOutcome::Success, ""));
        self.attachments
            .create(
                NewAttachment {
                    owner: &principal.user_id,
                    attachment_id,
                    parent_id: record_id,
                    blob_len,
                    now: self.now(),
                },
                &event,
            )
            .await
    }

    /// Appends one piece of an upload (only the creator uploads).
    pub async fn upload_attachment_piece(
        &self,
        principal: &Principal,
        attachment_id: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<AttachmentView, Error> {
        principal.require_aal2()?;
        self.attachments
            .append(&principal.user_id, attachment_id, offset, data)
            .await
    }

    /// An attachment's state, for its creator before the record exists, then for whoever may
    /// read the record.
    pub async fn attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
    ) -> Result<AttachmentView, Error> {
        let (row, _) = self
            .readable_attachment(principal, caller, attachment_id, "GetRecordAttachment")
            .await?;
        self.attachments.view(row).await
    }

    /// A complete attachment's blob from `offset`, for whoever may read its record. Audited.
    pub async fn download_attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<(u64, Vec<u8>), Error>> + Send + use<>, Error> {
        let operation = "DownloadRecordAttachment";
        let (row, admitted) = self
            .readable_attachment(principal, caller, attachment_id, operation)
            .await?;
        let Some((head, grant)) = admitted else {
            return Err(Error::failed_precondition(
                "RECORD_NOT_WRITTEN",
                format!(
                    "the record {} that names this attachment is not written yet: write it, then download",
                    row.parent_id
                ),
            ));
        };
        let stream = self.attachments.download(&row, offset)?;
        let access = Access::new(AuditAction::Read, operation, &head.record_id, &head.patient_id)
            .attachment(attachment_id)
            .emergency(grant.emergency);
        self.audit_read(caller, access).await?;
        Ok(stream)
    }

    /// The attachment, with its record and the grant to read it once the record exists (written
    /// by the attachment's creator); before that, for its creator only. A refusal is audited.
    async fn readable_attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
        operation: &'static str,
    ) -> Result<(attachment::Model, Option<(record::Model, Grant)>), Error> {
        let access = Access::new(AuditAction::Read, operation, "", "").attachment(attachment_id);
        let gate = principal.require_aal2().and_then(|()| require_reader_role(principal));
        if let Err(error) = gate {
            return Err(self.denied(caller, access, error).await);
        }
        let row = self.attachments.get(attachment_id).await?;
        let head = self.head(&row.parent_id).await?;
        let first = match &head {
            Some(_) => self.version_row(&self.db, &row.parent_id, 1).await?,
            None => None,
        };
        let written_by_creator = first.is_some_and(|first| first.author_user_id == row.owner_user_id);
        match head {
            Some(head) if written_by_creator => {
                let access = access.patient(&head.patient_id);
                match authorize(principal, &head.policy, "download its attachments") {
                    Ok(grant) => Ok((row, Some((head, grant)))),
                    Err(error) => Err(self.denied(caller, access, error).await),
                }
            }
            _ if row.owner_user_id == principal.user_id => Ok((row, None)),
            _ => {
                let error =
                    Error::permission_denied("NOT_PERMITTED", "this attachment belongs to a record you may not read");
                Err(self.denied(caller, access, error).await)
            }
        }
    }

    /// Every so often, removes the blobs of attachments whose record never came.
    pub(crate) async fn sweep_loop(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut interval = tokio::time::interval(SWEEP_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let swept = async {
                self.attachments
                    .mark_orphans(record::Entity, record::Column::RecordId, self.now())
                    .await?;
                self.attachments.sweep().await
            };
            match swept.await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed attachments whose record was never written"),
                Err(error) => tracing::warn!(reason = error.reason(), "removing attachments failed; retrying later"),
            }
        }
    }
}

/// How often attachments without a record are looked for (they are kept the orphan time first).
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
