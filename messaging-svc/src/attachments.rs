//! Attachments of messages (`docs/protocol.md` §13): the client creates one for the id of the
//! message it is about to send, uploads the encrypted blob, and names it (with its key and
//! digest) inside the message's end-to-end content. The server keeps the blob through the
//! runtime's [`Attachments`](caremesh_runtime::attachments::Attachments) and serves it to the
//! parties of that message: its sender, its recipient (or, for a group message, whoever the
//! message's policy admits), on any of their devices. Recall and lifespan delete it.

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::Error;
use caremesh_runtime::attachments::{AttachmentView, NewAttachment, attachment};
use caremesh_runtime::auth::Principal;
use futures::Stream;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::domain::{Audited, Caller, MessagingDomain, check_uuid_v7};
use crate::storage::message;

impl MessagingDomain {
    /// Reserves an attachment for the message `message_id` the caller is about to send.
    pub async fn create_attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
        message_id: &str,
        blob_len: u64,
    ) -> Result<AttachmentView, Error> {
        principal.require_aal2()?;
        check_uuid_v7(message_id, "message_id")?;
        if !matches!(principal.role.as_str(), "patient" | "doctor" | "nurse") {
            return Err(Error::permission_denied(
                "ROLE_CANNOT_MESSAGE",
                format!(
                    "only patients, doctors and nurses exchange messages and attachments; you are {}",
                    principal.role
                ),
            ));
        }
        // Attachments go with a message not sent yet: a message id that is taken (by anyone)
        // cannot gain attachments, so nobody attaches a blob to another's message.
        let sent = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id))
            .one(&self.db)
            .await?;
        if sent.is_some() {
            return Err(Error::failed_precondition(
                "MESSAGE_ALREADY_SENT",
                format!(
                    "message {message_id} is already sent: create attachments before sending the message that names them"
                ),
            ));
        }
        let event = self.audit_event(
            caller,
            Audited {
                action: AuditAction::Create,
                operation: "CreateAttachment",
                entity_type: "attachment",
                entity_id: attachment_id,
                patient_id: own_patient_id(principal),
                outcome: AuditOutcome::Success,
                ..Audited::default()
            },
        );
        self.attachments
            .create(
                NewAttachment {
                    owner: &principal.user_id,
                    attachment_id,
                    parent_id: message_id,
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

    /// An attachment's state, for its creator or a party of its message.
    pub async fn attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
    ) -> Result<AttachmentView, Error> {
        principal.require_aal2()?;
        let row = self
            .readable_attachment(principal, caller, attachment_id, "GetAttachment")
            .await?;
        self.attachments.view(row).await
    }

    /// A complete attachment's blob from `offset`, for a party of its message. Audited.
    pub async fn download_attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<(u64, Vec<u8>), Error>> + Send + use<>, Error> {
        principal.require_aal2()?;
        let row = self
            .readable_attachment(principal, caller, attachment_id, "DownloadAttachment")
            .await?;
        let stream = self.attachments.download(&row, offset)?;
        self.audit_read(caller, "DownloadAttachment", "attachment", attachment_id)
            .await?;
        Ok(stream)
    }

    /// The attachment, if the caller created it or may see the message it belongs to (sent by
    /// its creator, not recalled, not expired). A refusal is audited.
    async fn readable_attachment(
        &self,
        principal: &Principal,
        caller: &Caller,
        attachment_id: &str,
        operation: &'static str,
    ) -> Result<attachment::Model, Error> {
        let row = self.attachments.get(attachment_id).await?;
        if row.owner_user_id == principal.user_id {
            return Ok(row);
        }
        let parent = message::Entity::find()
            .filter(message::Column::MessageId.eq(row.parent_id.as_str()))
            .filter(message::Column::SenderUserId.eq(row.owner_user_id.as_str()))
            .filter(message::Column::RecalledAt.is_null())
            .filter(self.not_expired())
            .one(&self.db)
            .await?;
        let admitted = parent
            .as_ref()
            .is_some_and(|parent| self.may_see(parent, &principal.user_id, &principal.attributes));
        if admitted {
            return Ok(row);
        }
        let error = Error::permission_denied(
            "NOT_A_PARTY",
            "this attachment belongs to a message you neither sent nor received",
        );
        Err(self
            .denied(
                caller,
                Audited {
                    action: AuditAction::Read,
                    operation,
                    entity_type: "attachment",
                    entity_id: attachment_id,
                    ..Audited::default()
                },
                error,
            )
            .await)
    }

    /// Removes the blobs of attachments whose message went (recall, lifespan) or never came.
    pub(crate) async fn sweep_attachments(&self) -> Result<u64, Error> {
        self.attachments
            .mark_orphans(message::Entity, message::Column::MessageId, self.now())
            .await?;
        self.attachments.sweep().await
    }
}

/// The patient an action of `principal` concerns when nothing else says: themselves, if they
/// are one.
fn own_patient_id(principal: &Principal) -> &str {
    if principal.role == "patient" {
        &principal.user_id
    } else {
        ""
    }
}
