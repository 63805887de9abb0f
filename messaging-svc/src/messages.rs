//! Messages: send (role check, envelope checks, idempotent by message id), history (inbox,
//! conversations, one conversation; AIP-158 pages over a server-side sequence), live delivery (a
//! per-user log and the shared group log, read after a cursor, woken by notifications), receipts
//! and recall. Group messages (sent via `groups`) share all of it; who sees them follows from the
//! caller's attributes. The server stores envelopes as opaque ciphertext and never sees content.

use std::collections::BTreeMap;
use std::time::Duration;

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_proto::messaging::v1 as pb;
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use caremesh_runtime::error::ErrorCode;
use chrono::TimeDelta;
use prost::Message as _;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use tokio::sync::{broadcast, mpsc};

use crate::domain::{Audited, Caller, MessagingDomain, WAKE_ALL, check_uuid_v7, conversation_id};
use crate::fanout::{Fanout, fanout_digest};
use crate::group_commit::{NewDirect, Stored};
use crate::storage::{GROUP_LOG, KIND_DIRECT, KIND_GROUP, delivery, message};

/// Largest ciphertext in an envelope (including the tag).
pub const MAX_CIPHERTEXT_LEN: usize = 256 * 1024;
/// The AES-256-GCM tag every ciphertext ends with.
pub(crate) const TAG_LEN: usize = 16;
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 500;
const MIN_LIFESPAN: Duration = Duration::from_secs(60);
const MAX_LIFESPAN: Duration = Duration::from_secs(366 * 86_400);
/// How long a live stream waits before reading again after the database was unavailable.
const STREAM_RETRY_DELAY: Duration = Duration::from_millis(500);

/// What a live stream does after a storage error.
enum StreamStep {
    Retry,
    End,
}

/// A stored message as one party (`viewer`) sees it.
#[derive(Clone, Debug)]
pub struct MessageView {
    pub row: message::Model,
    pub viewer: String,
    /// Protocol v2: what belongs to the viewer's device and user (see `fanout`).
    pub copies: DeviceCopies,
}

/// A protocol v2 message's parts for one reader: their device's ciphertext and their own archive
/// copy (encoded protobuf messages, opaque), when present.
#[derive(Clone, Debug, Default)]
pub struct DeviceCopies {
    pub device_ciphertext: Option<Vec<u8>>,
    pub archive: Option<Vec<u8>>,
}

/// The answer to a send whose message id is already stored: the stored message again (sending
/// is idempotent) when it is the same message, ALREADY_EXISTS when the id was used for another.
pub(crate) fn resend(existing: message::Model, same: bool, viewer: &str) -> Result<(MessageView, bool), Error> {
    if !same {
        return Err(Error::already_exists(
            "MESSAGE_ID_EXISTS",
            "this message id was already used for a different message: choose a new UUIDv7",
        ));
    }
    Ok((
        MessageView {
            row: existing,
            viewer: viewer.to_owned(),
            copies: DeviceCopies::default(),
        },
        true,
    ))
}

impl MessageView {
    /// The viewer's envelope (decoded), unless recalled.
    pub fn envelope(&self) -> Option<pb::Envelope> {
        let bytes = if self.viewer == self.row.sender_user_id {
            self.row.sender_envelope.as_deref()
        } else {
            self.row.recipient_envelope.as_deref()
        }?;
        pb::Envelope::decode(bytes).ok()
    }

    /// A group message's envelope (decoded), unless recalled.
    pub fn group_envelope(&self) -> Option<pb::GroupEnvelope> {
        pb::GroupEnvelope::decode(self.row.group_envelope.as_deref()?).ok()
    }

    /// Whether this is a group (policy-addressed) message.
    pub fn is_group(&self) -> bool {
        self.row.kind == KIND_GROUP
    }
}

/// What `SendMessage` carried, before checks.
#[derive(Debug)]
pub enum SendContent {
    Direct {
        recipient: String,
        envelope: Option<pb::Envelope>,
    },
    Group {
        policy: String,
        envelope: Option<pb::GroupEnvelope>,
    },
    Missing,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// Sort order of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// A summary of one conversation.
#[derive(Debug)]
pub struct ConversationView {
    pub conversation_id: String,
    pub peer_user_id: String,
    pub last: message::Model,
    pub unread: u32,
}

/// One item of a live stream.
#[derive(Debug)]
pub struct StreamItem {
    pub view: MessageView,
    pub cursor: String,
}

/// Which conversation to list.
#[derive(Debug)]
pub enum ConversationTarget {
    Id(String),
    Peer(String),
}

pub(crate) fn check_envelope(envelope: &pb::Envelope, what: &str) -> Result<(), Error> {
    let bad = |problem: String| Error::invalid_argument("INVALID_ENVELOPE", format!("{what}: {problem}"));
    if envelope.version != 1 {
        return Err(bad(format!("version must be 1, got {}", envelope.version)));
    }
    for (field, id) in [
        ("sender_identity_key_id", &envelope.sender_identity_key_id),
        ("recipient_identity_key_id", &envelope.recipient_identity_key_id),
        ("recipient_signed_prekey_id", &envelope.recipient_signed_prekey_id),
    ] {
        check_uuid_v7(id, field).map_err(|_| bad(format!("{field} must be a canonical UUIDv7")))?;
    }
    if !envelope.recipient_one_time_prekey_id.is_empty() {
        check_uuid_v7(&envelope.recipient_one_time_prekey_id, "recipient_one_time_prekey_id")
            .map_err(|_| bad("recipient_one_time_prekey_id must be empty or a canonical UUIDv7".to_owned()))?;
    }
    if envelope.ephemeral_public_key.len() != 32 {
        return Err(bad("ephemeral_public_key must be 32 bytes".to_owned()));
    }
    check_sealed_body(&envelope.nonce, &envelope.ciphertext).map_err(bad)
}

/// The AES-256-GCM part every envelope (direct or group) carries: a 12-byte nonce and a
/// ciphertext of at least the tag and at most [`MAX_CIPHERTEXT_LEN`]. The problem, if any.
pub(crate) fn check_sealed_body(nonce: &[u8], ciphertext: &[u8]) -> Result<(), String> {
    if nonce.len() != 12 {
        return Err("nonce must be 12 bytes".to_owned());
    }
    if ciphertext.len() < TAG_LEN {
        return Err("ciphertext is shorter than the 16-byte tag".to_owned());
    }
    if ciphertext.len() > MAX_CIPHERTEXT_LEN {
        return Err(format!(
            "ciphertext is {} bytes; at most {MAX_CIPHERTEXT_LEN} (256 KiB) are accepted",
            ciphertext.len()
        ));
    }
    Ok(())
}

pub(crate) fn check_lifespan(lifespan: Option<Duration>) -> Result<(), Error> {
    if let Some(lifespan) = lifespan
        && !(MIN_LIFESPAN..=MAX_LIFESPAN).contains(&lifespan)
    {
        return Err(Error::invalid_argument(
            "INVALID_LIFESPAN",
            "lifespan must be between 1 minute and 366 days (or unset to keep the message)",
        ));
    }
    Ok(())
}

fn page_size(requested: i32) -> u64 {
    match u64::try_from(requested) {
        Ok(0) | Err(_) => DEFAULT_PAGE,
        Ok(size) => size.min(MAX_PAGE),
    }
}

/// Page tokens: `<scope>.<order>.<last seq>` in hex, bound to the listing they came from.
fn encode_token(scope: &str, order: Order, last: i64) -> String {
    let order = if order == Order::NewestFirst { "n" } else { "o" };
    hex::encode(format!("{scope}.{order}.{last}"))
}

fn decode_token(token: &str, scope: &str, order: Order) -> Result<Option<i64>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid_argument(
            "INVALID_PAGE_TOKEN",
            "the page token is not from this listing (same filters and order): start again without one",
        )
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let expected = format!("{scope}.{}.", if order == Order::NewestFirst { "n" } else { "o" });
    text.strip_prefix(&expected)
        .and_then(|last| last.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(invalid)
}

/// Where a stream is: the last entry seen of the user's own delivery log and of the group log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    user: i64,
    group: i64,
}

/// Stream cursors: `c2-<own log seq>-<group log seq>` (the older `c1-<seq>` stands for both).
fn encode_cursor(cursor: Cursor) -> String {
    format!("c2-{}-{}", cursor.user, cursor.group)
}

fn decode_cursor(text: &str, latest: i64) -> Option<Cursor> {
    let cursor = if let Some(seq) = text.strip_prefix("c1-") {
        let seq = seq.parse::<i64>().ok()?;
        Cursor { user: seq, group: seq }
    } else {
        let (user, group) = text.strip_prefix("c2-")?.split_once('-')?;
        Cursor {
            user: user.parse().ok()?,
            group: group.parse().ok()?,
        }
    };
    let valid = |seq: i64| (0..=latest).contains(&seq);
    (valid(cursor.user) && valid(cursor.group)).then_some(cursor)
}

impl MessagingDomain {
    pub(crate) fn not_expired(&self) -> Condition {
        Condition::any()
            .add(message::Column::ExpireAt.is_null())
            .add(message::Column::ExpireAt.gt(self.now()))
    }

    fn patient_of(sender: &Principal, recipient_role: &str, recipient: &str) -> String {
        if sender.role == "patient" {
            sender.user_id.clone()
        } else if recipient_role == "patient" {
            recipient.to_owned()
        } else {
            String::new()
        }
    }

    /// Sends a message (direct, or group via `groups`); `Ok((view, duplicate))`.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        principal: &Principal,
        caller: &Caller,
        message_id: String,
        content: SendContent,
        sender_copy: Option<pb::Envelope>,
        lifespan: Option<Duration>,
        fanout: Option<Fanout>,
    ) -> Result<(MessageView, bool), Error> {
        principal.require_aal2()?;
        let (recipient, envelope) = match content {
            SendContent::Group { policy, envelope } => {
                return self
                    .send_group(principal, caller, message_id, policy, envelope, sender_copy, lifespan)
                    .await;
            }
            SendContent::Missing => {
                return Err(Error::invalid_argument(
                    "CONTENT_REQUIRED",
                    "set `direct` (recipient and envelope) or `group` (policy and envelope)",
                ));
            }
            SendContent::Direct { recipient, envelope } => (recipient, envelope),
        };
        if let Some(fanout) = fanout {
            return self
                .send_to_devices(
                    principal,
                    caller,
                    message_id,
                    recipient,
                    envelope,
                    sender_copy,
                    lifespan,
                    fanout,
                )
                .await;
        }
        check_uuid_v7(&message_id, "message_id")?;
        if recipient.is_empty() {
            return Err(Error::invalid_argument(
                "RECIPIENT_REQUIRED",
                "direct.recipient_user_id is required",
            ));
        }
        if recipient == principal.user_id {
            return Err(Error::invalid_argument(
                "SELF_MESSAGE",
                "you cannot send a message to yourself",
            ));
        }
        let envelope =
            envelope.ok_or_else(|| Error::invalid_argument("ENVELOPE_REQUIRED", "direct.envelope is required"))?;
        let sender_copy = sender_copy.ok_or_else(|| {
            Error::invalid_argument(
                "SENDER_COPY_REQUIRED",
                "sender_copy is required: seal the message to your own keys too, so you keep your history",
            )
        })?;
        check_envelope(&envelope, "direct.envelope")?;
        check_envelope(&sender_copy, "sender_copy")?;
        check_lifespan(lifespan)?;
        let audited = |outcome| Audited {
            action: AuditAction::Create,
            operation: "SendMessage",
            entity_type: "message",
            entity_id: &message_id,
            patient_id: "",
            outcome,
            reason: "",
            ..Audited::default()
        };
        let recipient_role = match self.check_may_write(principal, &recipient).await {
            Ok(role) => role,
            Err(error) => return Err(self.denied(caller, audited(AuditOutcome::Denied), error).await),
        };
        let patient_id = Self::patient_of(principal, recipient_role, &recipient);

        // The envelopes must name the parties' current identities (both read in one query).
        let identities = self
            .current_identities(&self.db, [&principal.user_id, &recipient])
            .await?;
        let current_of = |user_id: &str| identities.iter().find(|row| row.user_id == user_id);
        let own = current_of(&principal.user_id).ok_or_else(|| {
            Error::failed_precondition("KEYS_NOT_PUBLISHED", "publish your key bundle before sending")
        })?;
        let theirs = current_of(&recipient)
            .ok_or_else(|| Error::failed_precondition("KEYS_NOT_PUBLISHED", "the recipient has not published keys"))?;
        if envelope.sender_identity_key_id != own.key_id
            || sender_copy.sender_identity_key_id != own.key_id
            || sender_copy.recipient_identity_key_id != own.key_id
        {
            return Err(Error::failed_precondition(
                "SENDER_KEY_MISMATCH",
                "the envelopes are not sealed with your current identity key: republish your keys or seal again",
            ));
        }
        if envelope.recipient_identity_key_id != theirs.key_id {
            return Err(Error::failed_precondition(
                "RECIPIENT_KEY_CHANGED",
                "the recipient's identity key changed: fetch their bundle again, verify it and seal again",
            ));
        }

        let now = self.now();
        let row = message::Model {
            seq: 0,
            message_id: message_id.clone(),
            conversation_id: conversation_id(&principal.user_id, &recipient),
            sender_user_id: principal.user_id.clone(),
            recipient_user_id: recipient.clone(),
            recipient_envelope: Some(envelope.encode_to_vec()),
            sender_envelope: Some(sender_copy.encode_to_vec()),
            created_at: now,
            expire_at: lifespan
                .and_then(|lifespan| TimeDelta::from_std(lifespan).ok())
                .map(|lifespan| now + lifespan),
            recalled_at: None,
            delivered_at: None,
            read_at: None,
            kind: KIND_DIRECT.to_owned(),
            policy: String::new(),
            group_envelope: None,
            protocol_version: 1,
            sender_device_id: String::new(),
            fanout_digest: None,
        };
        let event = self.audit_event(
            caller,
            Audited {
                patient_id: &patient_id,
                ..audited(AuditOutcome::Success)
            },
        );
        // Idempotent by message id: a taken id was compared with this message (the same:
        // answered again; different: refused).
        match self
            .store_direct(NewDirect {
                row,
                event,
                ciphertexts: Vec::new(),
                archive: None,
            })
            .await?
        {
            Stored::Fresh(stored) => Ok((
                MessageView {
                    row: stored,
                    viewer: principal.user_id.clone(),
                    copies: DeviceCopies::default(),
                },
                false,
            )),
            Stored::Taken { existing, same } => resend(existing, same, &principal.user_id),
        }
    }

    /// A protocol v2 direct send (see `fanout`): the devices are checked against the current
    /// lists, the message, its ciphertexts, its archive copy, its delivery-log entries (the
    /// recipient's, and the sender's for its other devices) and its audit event are stored in
    /// one transaction. A message to oneself goes to one's other devices only.
    #[allow(clippy::too_many_arguments)]
    async fn send_to_devices(
        &self,
        principal: &Principal,
        caller: &Caller,
        message_id: String,
        recipient: String,
        envelope: Option<pb::Envelope>,
        sender_copy: Option<pb::Envelope>,
        lifespan: Option<Duration>,
        fanout: Fanout,
    ) -> Result<(MessageView, bool), Error> {
        check_uuid_v7(&message_id, "message_id")?;
        if recipient.is_empty() {
            return Err(Error::invalid_argument(
                "RECIPIENT_REQUIRED",
                "direct.recipient_user_id is required",
            ));
        }
        if envelope.is_some() || sender_copy.is_some() {
            return Err(Error::invalid_argument(
                "MIXED_PROTOCOLS",
                "a protocol v2 send carries device_ciphertexts only: leave direct.envelope and sender_copy unset",
            ));
        }
        check_lifespan(lifespan)?;
        let audited = |outcome| Audited {
            action: AuditAction::Create,
            operation: "SendMessage",
            entity_type: "message",
            entity_id: &message_id,
            patient_id: "",
            outcome,
            reason: "",
            ..Audited::default()
        };
        let to_self = recipient == principal.user_id;
        let patient_id = if to_self {
            if principal.role == "patient" {
                principal.user_id.clone()
            } else {
                String::new()
            }
        } else {
            let recipient_role = match self.check_may_write(principal, &recipient).await {
                Ok(role) => role,
                Err(error) => return Err(self.denied(caller, audited(AuditOutcome::Denied), error).await),
            };
            Self::patient_of(principal, recipient_role, &recipient)
        };
        self.check_fanout(&principal.user_id, &recipient, &fanout).await?;
        let now = self.now();
        let (ciphertexts, archive) = Self::fanout_rows(&message_id, &principal.user_id, &fanout, now);
        let row = message::Model {
            seq: 0,
            message_id: message_id.clone(),
            conversation_id: conversation_id(&principal.user_id, &recipient),
            sender_user_id: principal.user_id.clone(),
            recipient_user_id: recipient.clone(),
            recipient_envelope: None,
            sender_envelope: None,
            created_at: now,
            expire_at: lifespan
                .and_then(|lifespan| TimeDelta::from_std(lifespan).ok())
                .map(|lifespan| now + lifespan),
            recalled_at: None,
            delivered_at: None,
            read_at: None,
            kind: KIND_DIRECT.to_owned(),
            policy: String::new(),
            group_envelope: None,
            protocol_version: 2,
            sender_device_id: fanout.sender_device_id.clone(),
            fanout_digest: Some(fanout_digest(&fanout)),
        };
        let event = self.audit_event(
            caller,
            Audited {
                patient_id: &patient_id,
                ..audited(AuditOutcome::Success)
            },
        );
        match self
            .store_direct(NewDirect {
                row,
                event,
                ciphertexts,
                archive,
            })
            .await?
        {
            Stored::Fresh(stored) => Ok((
                MessageView {
                    row: stored,
                    viewer: principal.user_id.clone(),
                    copies: DeviceCopies::default(),
                },
                false,
            )),
            Stored::Taken { existing, same } => resend(existing, same, &principal.user_id),
        }
    }

    /// Records a read of history (one audit event per listing).
    pub(crate) async fn audit_read(
        &self,
        caller: &Caller,
        operation: &str,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<(), Error> {
        let (_turn, txn) = self.begin_write().await?;
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Read,
                operation,
                entity_type,
                entity_id,
                patient_id: if caller.role == "patient" { &caller.user_id } else { "" },
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// One message the caller is a party to.
    pub async fn get(&self, principal: &Principal, caller: &Caller, message_id: &str) -> Result<MessageView, Error> {
        principal.require_aal2()?;
        let row = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id))
            .filter(self.not_expired())
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::not_found("MESSAGE_NOT_FOUND", format!("no message {message_id}")))?;
        let audited = |outcome| Audited {
            action: AuditAction::Read,
            operation: "GetMessage",
            entity_type: "message",
            entity_id: message_id,
            patient_id: "",
            outcome,
            reason: "",
            ..Audited::default()
        };
        if !self.may_see(&row, &principal.user_id, &principal.attributes) {
            let error = if row.kind == KIND_GROUP {
                Error::permission_denied(
                    "POLICY_NOT_SATISFIED",
                    "this group message's policy is not satisfied by your attributes",
                )
            } else {
                Error::permission_denied(
                    "NOT_A_PARTY",
                    "you are neither the sender nor the recipient of this message",
                )
            };
            return Err(self.denied(caller, audited(AuditOutcome::Denied), error).await);
        }
        self.audit_read(caller, "GetMessage", "message", message_id).await?;
        Ok(MessageView {
            row,
            viewer: principal.user_id.clone(),
            copies: DeviceCopies::default(),
        })
    }

    /// Messages addressed to the caller: direct ones, and group messages of others whose policy
    /// the caller's attributes satisfy.
    pub async fn inbox(
        &self,
        principal: &Principal,
        caller: &Caller,
        size: i32,
        token: &str,
        order: Order,
        unread_only: bool,
    ) -> Result<Page<MessageView>, Error> {
        principal.require_aal2()?;
        let scope = if unread_only { "inbox-unread" } else { "inbox" };
        let mut addressed = Condition::any().add(message::Column::RecipientUserId.eq(principal.user_id.clone()));
        if let Some(group) = self.group_condition(principal).await? {
            addressed = addressed.add(group.add(message::Column::SenderUserId.ne(principal.user_id.clone())));
        }
        let mut filter = Condition::all().add(addressed).add(self.not_expired());
        if unread_only {
            filter = filter.add(message::Column::ReadAt.is_null());
        }
        let page = self.page(filter, size, token, scope, order, &principal.user_id).await?;
        self.audit_read(caller, "ListInbox", "inbox", &principal.user_id)
            .await?;
        Ok(page)
    }

    /// The condition "a message the caller may see": sent by them, addressed to them, or a group
    /// message whose policy they satisfy.
    async fn visible(&self, principal: &Principal) -> Result<Condition, Error> {
        let mut mine = Condition::any()
            .add(message::Column::SenderUserId.eq(principal.user_id.clone()))
            .add(message::Column::RecipientUserId.eq(principal.user_id.clone()));
        if let Some(group) = self.group_condition(principal).await? {
            mine = mine.add(group);
        }
        Ok(mine)
    }

    async fn page(
        &self,
        filter: Condition,
        size: i32,
        token: &str,
        scope: &str,
        order: Order,
        viewer: &str,
    ) -> Result<Page<MessageView>, Error> {
        let size = page_size(size);
        let after = decode_token(token, scope, order)?;
        let mut query = message::Entity::find().filter(filter);
        query = match (order, after) {
            (Order::NewestFirst, Some(last)) => query.filter(message::Column::Seq.lt(last)),
            (Order::OldestFirst, Some(last)) => query.filter(message::Column::Seq.gt(last)),
            (_, None) => query,
        };
        query = match order {
            Order::NewestFirst => query.order_by_desc(message::Column::Seq),
            Order::OldestFirst => query.order_by_asc(message::Column::Seq),
        };
        let mut rows = query.limit(size + 1).all(&self.db).await?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next_page_token = match rows.last() {
            Some(last) if more => encode_token(scope, order, last.seq),
            _ => String::new(),
        };
        Ok(Page {
            items: rows
                .into_iter()
                .map(|row| MessageView {
                    row,
                    viewer: viewer.to_owned(),
                    copies: DeviceCopies::default(),
                })
                .collect(),
            next_page_token,
        })
    }

    /// One conversation, both directions.
    pub async fn conversation(
        &self,
        principal: &Principal,
        caller: &Caller,
        target: ConversationTarget,
        size: i32,
        token: &str,
        order: Order,
    ) -> Result<Page<MessageView>, Error> {
        principal.require_aal2()?;
        let id = match target {
            ConversationTarget::Id(id) if !id.is_empty() => id,
            ConversationTarget::Peer(peer) if !peer.is_empty() => conversation_id(&principal.user_id, &peer),
            _ => {
                return Err(Error::invalid_argument(
                    "CONVERSATION_REQUIRED",
                    "name the conversation: conversation_id or peer_user_id",
                ));
            }
        };
        let mine = self.visible(principal).await?;
        let in_conversation = message::Column::ConversationId.eq(id.clone());
        let party = message::Entity::find()
            .filter(in_conversation.clone())
            .filter(mine.clone())
            .one(&self.db)
            .await?;
        if party.is_none() {
            let exists = message::Entity::find()
                .filter(in_conversation.clone())
                .one(&self.db)
                .await?
                .is_some();
            if exists {
                let error = Error::permission_denied("NOT_A_PARTY", "this is not one of your conversations");
                let audited = Audited {
                    action: AuditAction::Read,
                    operation: "ListConversationMessages",
                    entity_type: "conversation",
                    entity_id: &id,
                    patient_id: "",
                    outcome: AuditOutcome::Denied,
                    reason: "",
                    ..Audited::default()
                };
                return Err(self.denied(caller, audited, error).await);
            }
        }
        let filter = Condition::all().add(in_conversation).add(mine).add(self.not_expired());
        let page = self
            .page(filter, size, token, &format!("conv-{id}"), order, &principal.user_id)
            .await?;
        self.audit_read(caller, "ListConversationMessages", "conversation", &id)
            .await?;
        Ok(page)
    }

    /// The caller's conversations, most recent first.
    pub async fn conversations(
        &self,
        principal: &Principal,
        caller: &Caller,
        size: i32,
        token: &str,
    ) -> Result<Page<ConversationView>, Error> {
        principal.require_aal2()?;
        let rows = message::Entity::find()
            .filter(self.visible(principal).await?)
            .filter(self.not_expired())
            .order_by_desc(message::Column::Seq)
            .limit(20_000)
            .all(&self.db)
            .await?;
        let mut order: Vec<String> = Vec::new();
        let mut by_id: BTreeMap<String, ConversationView> = BTreeMap::new();
        for row in rows {
            let unread = u32::from(
                row.recipient_user_id == principal.user_id && row.read_at.is_none() && row.recalled_at.is_none(),
            );
            match by_id.get_mut(&row.conversation_id) {
                Some(view) => view.unread += unread,
                None => {
                    let peer = if row.kind == KIND_GROUP {
                        String::new()
                    } else if row.sender_user_id == principal.user_id {
                        row.recipient_user_id.clone()
                    } else {
                        row.sender_user_id.clone()
                    };
                    order.push(row.conversation_id.clone());
                    by_id.insert(
                        row.conversation_id.clone(),
                        ConversationView {
                            conversation_id: row.conversation_id.clone(),
                            peer_user_id: peer,
                            last: row,
                            unread,
                        },
                    );
                }
            }
        }
        let size = usize::try_from(page_size(size)).unwrap_or(50);
        let start = decode_token(token, "conversations", Order::NewestFirst)?
            .and_then(|offset| usize::try_from(offset).ok())
            .unwrap_or(0);
        let items: Vec<ConversationView> = order
            .iter()
            .skip(start)
            .take(size)
            .filter_map(|id| by_id.remove(id))
            .collect();
        let end = start.saturating_add(items.len());
        let next_page_token = if end < order.len() {
            encode_token(
                "conversations",
                Order::NewestFirst,
                i64::try_from(end).unwrap_or(i64::MAX),
            )
        } else {
            String::new()
        };
        self.audit_read(caller, "ListConversations", "inbox", &principal.user_id)
            .await?;
        Ok(Page { items, next_page_token })
    }

    /// Records delivered or read receipts; returns how many changed.
    pub async fn receipts(&self, principal: &Principal, message_ids: &[String], read: bool) -> Result<u32, Error> {
        principal.require_aal2()?;
        if message_ids.is_empty() || message_ids.len() > 100 {
            return Err(Error::invalid_argument(
                "BATCH_SIZE",
                "send receipts for 1 to 100 messages",
            ));
        }
        let now = self.now();
        let (_turn, txn) = self.begin_write().await?;
        let rows = message::Entity::find()
            .filter(message::Column::MessageId.is_in(message_ids.iter().cloned()))
            .filter(message::Column::RecipientUserId.eq(principal.user_id.clone()))
            .all(&txn)
            .await?;
        let mut updated = 0u32;
        for row in rows {
            let needs_delivered = row.delivered_at.is_none();
            let needs_read = read && row.read_at.is_none();
            if !needs_delivered && !needs_read {
                continue;
            }
            let mut active: message::ActiveModel = row.into();
            if needs_delivered {
                active.delivered_at = Set(Some(now));
            }
            if needs_read {
                active.read_at = Set(Some(now));
            }
            active.update(&txn).await?;
            updated += 1;
        }
        txn.commit().await?;
        Ok(updated)
    }

    /// Recalls a message the caller sent: its envelopes are deleted, a tombstone stays and goes
    /// to the recipient's stream (for a group message, to the group log).
    pub async fn recall(&self, principal: &Principal, caller: &Caller, message_id: &str) -> Result<MessageView, Error> {
        principal.require_aal2()?;
        let audited = |outcome, patient_id| Audited {
            action: AuditAction::Delete,
            operation: "RecallMessage",
            entity_type: "message",
            entity_id: message_id,
            patient_id,
            outcome,
            reason: "",
            ..Audited::default()
        };
        let now = self.now();
        let (turn, txn) = self.begin_write().await?;
        let row = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::not_found("MESSAGE_NOT_FOUND", format!("no message {message_id}")))?;
        if row.sender_user_id != principal.user_id {
            drop(txn);
            drop(turn);
            let error = Error::permission_denied("NOT_THE_SENDER", "only the sender can recall a message");
            return Err(self.denied(caller, audited(AuditOutcome::Denied, ""), error).await);
        }
        let recipient = if row.kind == KIND_GROUP {
            GROUP_LOG.to_owned()
        } else {
            row.recipient_user_id.clone()
        };
        self.order_deliveries(&txn, &recipient).await?;
        // Read again under the recipient's lock: a concurrent recall may have just committed.
        let row = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::not_found("MESSAGE_NOT_FOUND", format!("no message {message_id}")))?;
        if row.recalled_at.is_some() {
            return Ok(MessageView {
                row,
                viewer: principal.user_id.clone(),
                copies: DeviceCopies::default(),
            });
        }
        let mut active: message::ActiveModel = row.into();
        active.recalled_at = Set(Some(now));
        active.recipient_envelope = Set(None);
        active.sender_envelope = Set(None);
        active.group_envelope = Set(None);
        let row = active.update(&txn).await?;
        self.delete_fanout(&txn, vec![row.message_id.clone()]).await?;
        self.attachments
            .mark_deleted(&txn, std::slice::from_ref(&row.message_id), now)
            .await?;
        delivery::ActiveModel {
            user_id: Set(recipient.clone()),
            message_id: Set(message_id.to_owned()),
            kind: Set("recall".to_owned()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        let patient_id = if principal.role == "patient" {
            principal.user_id.clone()
        } else {
            String::new()
        };
        self.audit(&txn, caller, audited(AuditOutcome::Success, &patient_id))
            .await?;
        self.notify_in(&txn, &recipient).await?;
        txn.commit().await?;
        drop(turn);
        self.notify_local(&recipient);
        self.outbox.wake_relay();
        // The blobs go now; a failure leaves them marked, for the purge loop's next sweep.
        if let Err(error) = self.attachments.sweep().await {
            tracing::warn!(
                reason = error.reason(),
                "removing a recalled message's attachments failed; retrying later"
            );
        }
        Ok(MessageView {
            row,
            viewer: principal.user_id.clone(),
            copies: DeviceCopies::default(),
        })
    }

    /// Starts a live stream for the caller, after `cursor` (empty: from now on). Items arrive
    /// in delivery order, exactly once; the stream ends at shutdown or when the client leaves.
    /// Group messages are filtered by the attributes of the token the stream was opened with.
    pub async fn subscribe(
        &self,
        principal: &Principal,
        caller: &Caller,
        cursor: &str,
        device_id: String,
    ) -> Result<mpsc::Receiver<Result<StreamItem, Error>>, Error> {
        principal.require_aal2()?;
        let latest = delivery::Entity::find()
            .order_by_desc(delivery::Column::Seq)
            .one(&self.db)
            .await?
            .map_or(0, |row| row.seq);
        let start = if cursor.is_empty() {
            // The newest entries of this user's log and of the group log: with per-log ordering,
            // anything in them that commits later has a larger number.
            let newest = |log: String| async move {
                Ok::<i64, Error>(
                    delivery::Entity::find()
                        .filter(delivery::Column::UserId.eq(log))
                        .order_by_desc(delivery::Column::Seq)
                        .one(&self.db)
                        .await?
                        .map_or(0, |row| row.seq),
                )
            };
            Cursor {
                user: newest(principal.user_id.clone()).await?,
                group: newest(GROUP_LOG.to_owned()).await?,
            }
        } else {
            decode_cursor(cursor, latest).ok_or_else(|| {
                Error::invalid_argument(
                    "INVALID_CURSOR",
                    "unknown cursor: pass one from a previous SubscribeResponse, or none to start from now",
                )
            })?
        };
        self.audit_read(caller, "Subscribe", "inbox", &principal.user_id)
            .await?;
        let (tx, rx) = mpsc::channel(64);
        let wake = self.live.subscribe();
        tokio::spawn(self.clone().stream(
            principal.user_id.clone(),
            device_id,
            principal.attributes.clone(),
            start,
            tx,
            wake,
        ));
        Ok(rx)
    }

    /// A live stream outlives a database hiccup: while the database is unavailable (a restart,
    /// a pool exhausted under load) the stream waits and reads again from its cursor, so the
    /// subscriber misses nothing; any other error ends the stream with that error.
    async fn after_storage_error(&self, error: Error, tx: &mpsc::Sender<Result<StreamItem, Error>>) -> StreamStep {
        if error.code() != ErrorCode::Unavailable {
            let _ = tx.send(Err(error)).await;
            return StreamStep::End;
        }
        tracing::warn!(
            reason = error.reason(),
            "live delivery: storage unavailable, reading again shortly"
        );
        tokio::select! {
            () = self.shutdown.cancelled() => StreamStep::End,
            () = tx.closed() => StreamStep::End,
            () = tokio::time::sleep(STREAM_RETRY_DELAY) => StreamStep::Retry,
        }
    }

    async fn stream(
        self,
        user_id: String,
        device_id: String,
        attributes: Vec<String>,
        mut after: Cursor,
        tx: mpsc::Sender<Result<StreamItem, Error>>,
        mut wake: broadcast::Receiver<std::sync::Arc<str>>,
    ) {
        const BATCH: u64 = 200;
        loop {
            // Each log is read after its own position: they commit in order separately.
            let logs = Condition::any()
                .add(
                    Condition::all()
                        .add(delivery::Column::UserId.eq(user_id.clone()))
                        .add(delivery::Column::Seq.gt(after.user)),
                )
                .add(
                    Condition::all()
                        .add(delivery::Column::UserId.eq(GROUP_LOG))
                        .add(delivery::Column::Seq.gt(after.group)),
                );
            let batch = match delivery::Entity::find()
                .filter(logs)
                .order_by_asc(delivery::Column::Seq)
                .limit(BATCH)
                .all(&self.db)
                .await
            {
                Ok(batch) => batch,
                Err(error) => match self.after_storage_error(error.into(), &tx).await {
                    StreamStep::Retry => continue,
                    StreamStep::End => return,
                },
            };
            let full = batch.len() as u64 == BATCH;
            let ids: Vec<String> = batch.iter().map(|row| row.message_id.clone()).collect();
            let messages = match message::Entity::find()
                .filter(message::Column::MessageId.is_in(ids))
                .all(&self.db)
                .await
            {
                Ok(rows) => rows,
                Err(error) => match self.after_storage_error(error.into(), &tx).await {
                    StreamStep::Retry => continue,
                    StreamStep::End => return,
                },
            };
            let mut views: Vec<MessageView> = messages
                .into_iter()
                .map(|row| MessageView {
                    row,
                    viewer: user_id.clone(),
                    copies: DeviceCopies::default(),
                })
                .collect();
            if let Err(error) = self.attach_copies(&mut views, &device_id).await {
                match self.after_storage_error(error, &tx).await {
                    StreamStep::Retry => continue,
                    StreamStep::End => return,
                }
            }
            let now = self.now();
            for entry in batch {
                if entry.user_id == GROUP_LOG {
                    after.group = entry.seq;
                } else {
                    after.user = entry.seq;
                }
                let Some(view) = views.iter().find(|view| view.row.message_id == entry.message_id) else {
                    continue; // purged
                };
                let row = &view.row;
                if row.expire_at.is_some_and(|expire| expire <= now) {
                    continue;
                }
                // Group messages: for members other than the sender.
                if entry.user_id == GROUP_LOG
                    && (row.sender_user_id == user_id || !self.policy_satisfied(&row.policy, &attributes))
                {
                    continue;
                }
                let item = StreamItem {
                    view: view.clone(),
                    cursor: encode_cursor(after),
                };
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    sent = tx.send(Ok(item)) => if sent.is_err() { return },
                }
            }
            if full {
                continue;
            }
            // Wait for news for this user or the group log (or anyone, after a lag), a poll
            // tick, the client leaving, or shutdown.
            let poll = tokio::time::sleep(self.settings.stream_poll_interval);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    () = &mut poll => break,
                    received = wake.recv() => match received {
                        Ok(who) if *who == *user_id || &*who == WAKE_ALL || &*who == GROUP_LOG => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn page_tokens_are_bound_to_their_listing() {
        let token = encode_token("inbox", Order::OldestFirst, 42);
        assert_eq!(decode_token(&token, "inbox", Order::OldestFirst).unwrap(), Some(42));
        assert!(decode_token(&token, "inbox", Order::NewestFirst).is_err());
        assert!(decode_token(&token, "inbox-unread", Order::OldestFirst).is_err());
        assert!(decode_token("zz", "inbox", Order::OldestFirst).is_err());
        assert_eq!(decode_token("", "inbox", Order::OldestFirst).unwrap(), None);
        assert_eq!(page_size(0), 50);
        assert_eq!(page_size(-3), 50);
        assert_eq!(page_size(10_000), 500);
    }

    #[test]
    fn envelopes_are_checked_for_structure_and_size() {
        let id = uuid::Uuid::now_v7().to_string();
        let good = pb::Envelope {
            version: 1,
            sender_identity_key_id: id.clone(),
            recipient_identity_key_id: id.clone(),
            recipient_signed_prekey_id: id.clone(),
            recipient_one_time_prekey_id: String::new(),
            ephemeral_public_key: vec![9; 32],
            nonce: vec![0; 12],
            ciphertext: vec![0; 16],
        };
        check_envelope(&good, "e").unwrap();
        let too_big = pb::Envelope {
            ciphertext: vec![0; MAX_CIPHERTEXT_LEN + 1],
            ..good.clone()
        };
        assert!(check_envelope(&too_big, "e").unwrap_err().message().contains("256 KiB"));
        let short_nonce = pb::Envelope {
            nonce: vec![0; 11],
            ..good.clone()
        };
        assert!(check_envelope(&short_nonce, "e").is_err());
        let bad_id = pb::Envelope {
            recipient_signed_prekey_id: id.to_uppercase(),
            ..good
        };
        assert!(check_envelope(&bad_id, "e").is_err());
    }

    #[test]
    fn cursors_track_both_logs_and_accept_the_old_form() {
        let cursor = Cursor { user: 3, group: 7 };
        assert_eq!(decode_cursor(&encode_cursor(cursor), 10), Some(cursor));
        assert_eq!(decode_cursor("c1-4", 10), Some(Cursor { user: 4, group: 4 }));
        assert_eq!(decode_cursor("c2-3-11", 10), None);
        assert_eq!(decode_cursor("c2-3", 10), None);
        assert_eq!(decode_cursor("c2--1-3", 10), None);
        assert_eq!(decode_cursor("x", 10), None);
    }

    #[test]
    fn a_conversation_has_one_id_for_both_parties() {
        assert_eq!(conversation_id("a", "b"), conversation_id("b", "a"));
        assert_ne!(conversation_id("a", "bc"), conversation_id("ab", "c"));
    }
}
