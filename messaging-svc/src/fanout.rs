//! Protocol v2 messages (`docs/protocol.md` §10, Sesame fan-out): the checks of a send's
//! per-device ciphertexts against the current device lists, the digest that makes a resend
//! recognisable, reading a reader's device ciphertext and archive copy beside a listing, and
//! storing a recipient's archive copy. The ciphertexts stay opaque: the server checks their
//! addressing and sizes, never their content.

use std::collections::{BTreeSet, HashMap};

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_proto::messaging::v1 as pb;
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use prost::Message as _;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use sha2::{Digest, Sha256};

use crate::devices::list_ids;
use crate::domain::{Audited, Caller, MessagingDomain, check_uuid_v7};
use crate::messages::{MAX_CIPHERTEXT_LEN, MessageView, TAG_LEN, check_sealed_body};
use crate::storage::{archive_copy, device_ciphertext, device_list, message};

/// The reason of a send whose devices do not match the current device lists.
pub const DEVICE_LIST_CHANGED: &str = "DEVICE_LIST_CHANGED";
/// The reason of an archive copy under a history key that is no longer the account's current one.
pub const HISTORY_KEY_ROTATED: &str = "HISTORY_KEY_ROTATED";
const KEM_CIPHERTEXT_LEN: usize = 1088;

/// What a protocol v2 send carries besides its addressing.
#[derive(Debug)]
pub struct Fanout {
    /// The sending device.
    pub sender_device_id: String,
    /// One ciphertext per device (recipient's and the sender's others).
    pub ciphertexts: Vec<pb::DeviceCiphertext>,
    /// The sender's archive copy (none for contents between the sender's own devices).
    pub archive: Option<pb::ArchiveCopy>,
}

fn invalid(message: String) -> Error {
    Error::invalid_argument("INVALID_DEVICE_CIPHERTEXT", message)
}

/// The form of one device ciphertext (ids, key and ciphertext lengths, the preamble's fields).
fn check_ciphertext(ciphertext: &pb::DeviceCiphertext, index: usize) -> Result<(), Error> {
    let at = |problem: &str| invalid(format!("device_ciphertexts[{index}]: {problem}"));
    for (field, id) in [
        ("recipient_user_id", &ciphertext.recipient_user_id),
        ("recipient_device_id", &ciphertext.recipient_device_id),
        ("sender_device_id", &ciphertext.sender_device_id),
    ] {
        if check_uuid_v7(id, field).is_err() {
            return Err(at(&format!("{field} must be a canonical UUIDv7")));
        }
    }
    if ciphertext.ratchet_public_key.len() != 32 {
        return Err(at("ratchet_public_key must be 32 bytes"));
    }
    if ciphertext.ciphertext.len() < TAG_LEN {
        return Err(at("ciphertext is shorter than the 16-byte tag"));
    }
    if ciphertext.ciphertext.len() > MAX_CIPHERTEXT_LEN {
        return Err(at("ciphertext is larger than 256 KiB"));
    }
    if let Some(preamble) = &ciphertext.preamble {
        for (field, id) in [
            ("preamble.sender_identity_key_id", &preamble.sender_identity_key_id),
            ("preamble.signed_prekey_id", &preamble.signed_prekey_id),
            ("preamble.kem_prekey_id", &preamble.kem_prekey_id),
        ] {
            if check_uuid_v7(id, field).is_err() {
                return Err(at(&format!("{field} must be a canonical UUIDv7")));
            }
        }
        if !preamble.one_time_prekey_id.is_empty()
            && check_uuid_v7(&preamble.one_time_prekey_id, "preamble.one_time_prekey_id").is_err()
        {
            return Err(at("preamble.one_time_prekey_id must be empty or a canonical UUIDv7"));
        }
        if preamble.ephemeral_public_key.len() != 32 {
            return Err(at("preamble.ephemeral_public_key must be 32 bytes"));
        }
        if preamble.kem_ciphertext.len() != KEM_CIPHERTEXT_LEN {
            return Err(at("preamble.kem_ciphertext must be 1088 bytes (ML-KEM-768)"));
        }
        if !matches!(preamble.kem_prekey_kind, 1 | 2) {
            return Err(at("preamble.kem_prekey_kind must be 1 (last-resort) or 2 (one-time)"));
        }
    }
    Ok(())
}

/// The form of an archive copy.
pub(crate) fn check_archive(archive: &pb::ArchiveCopy, what: &str) -> Result<(), Error> {
    let bad = |problem: &str| Error::invalid_argument("INVALID_ARCHIVE_COPY", format!("{what}: {problem}"));
    if check_uuid_v7(&archive.history_key_id, "history_key_id").is_err() {
        return Err(bad("history_key_id must be a canonical UUIDv7"));
    }
    check_sealed_body(&archive.nonce, &archive.ciphertext).map_err(|problem| bad(&problem))
}

/// SHA-256 over a send's ciphertexts (in the order given) and its archive copy.
pub(crate) fn fanout_digest(fanout: &Fanout) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(fanout.sender_device_id.as_bytes());
    for ciphertext in &fanout.ciphertexts {
        let bytes = ciphertext.encode_to_vec();
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(&bytes);
    }
    if let Some(archive) = &fanout.archive {
        hash.update(archive.encode_to_vec());
    }
    hash.finalize().to_vec()
}

/// A user's devices to encrypt to, from their current device list.
#[derive(Debug, Default)]
pub(crate) struct ActiveDevices {
    /// Listed and not removed by an admin.
    pub(crate) ids: BTreeSet<String>,
    /// The history key id the list declares (empty: none).
    pub(crate) history_key_id: String,
}

/// An archive copy must use the owner's current history key, when one was declared: a key
/// replaced at a device's removal is one the removed device still holds (§7.3).
fn check_history_key(current: &str, archive: &pb::ArchiveCopy) -> Result<(), Error> {
    if !current.is_empty() && current != archive.history_key_id {
        return Err(Error::failed_precondition(
            HISTORY_KEY_ROTATED,
            "your history key was replaced on another of your devices: read the message it sent to your \
             devices (your own conversation), then seal the archive copy again",
        ));
    }
    Ok(())
}

impl MessagingDomain {
    /// `user_id`'s devices to encrypt to; `None` when the user has no device list.
    pub(crate) async fn active_devices<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
    ) -> Result<Option<ActiveDevices>, Error> {
        let Some(list) = device_list::Entity::find_by_id(user_id.to_owned()).one(conn).await? else {
            return Ok(None);
        };
        let removed = self.admin_removed(conn, user_id).await?;
        Ok(Some(ActiveDevices {
            ids: list_ids(&list).into_iter().filter(|id| !removed.contains(id)).collect(),
            history_key_id: list.history_key_id,
        }))
    }

    /// Checks a v2 send: every ciphertext well formed and from the sending device, which is one
    /// of the sender's; exactly one per active device of the recipient and per other active
    /// device of the sender, else FAILED_PRECONDITION [`DEVICE_LIST_CHANGED`] (the client fetches
    /// the lists again and resends with the same message id).
    pub(crate) async fn check_fanout(&self, sender: &str, recipient: &str, fanout: &Fanout) -> Result<(), Error> {
        check_uuid_v7(&fanout.sender_device_id, "sender_device_id")?;
        // Messages carry the sender's archive copy; contents between devices (a new history key)
        // carry none. The server cannot tell them apart, and need not.
        if let Some(archive) = &fanout.archive {
            check_archive(archive, "archive")?;
        }
        let mut given = BTreeSet::new();
        for (index, ciphertext) in fanout.ciphertexts.iter().enumerate() {
            check_ciphertext(ciphertext, index)?;
            if ciphertext.sender_device_id != fanout.sender_device_id {
                return Err(invalid(format!(
                    "device_ciphertexts[{index}]: sender_device_id differs from the send's sender_device_id"
                )));
            }
            if !given.insert((
                ciphertext.recipient_user_id.as_str(),
                ciphertext.recipient_device_id.as_str(),
            )) {
                return Err(invalid(format!(
                    "device_ciphertexts[{index}]: a second ciphertext for device {}",
                    ciphertext.recipient_device_id
                )));
            }
        }
        let own = self.active_devices(&self.db, sender).await?.unwrap_or_default();
        if let Some(archive) = &fanout.archive {
            check_history_key(&own.history_key_id, archive)?;
        }
        let own = own.ids;
        if !own.contains(&fanout.sender_device_id) {
            return Err(Error::failed_precondition(
                "UNKNOWN_DEVICE",
                "sender_device_id is not one of your devices: publish this device or link it first",
            ));
        }
        let theirs = if recipient == sender {
            BTreeSet::new()
        } else {
            self.active_devices(&self.db, recipient)
                .await?
                .ok_or_else(|| {
                    Error::failed_precondition(
                        "DEVICES_NOT_PUBLISHED",
                        "the recipient has no devices yet: they must sign in with an up-to-date app first",
                    )
                })?
                .ids
        };
        let expected: BTreeSet<(&str, &str)> = theirs
            .iter()
            .map(|id| (recipient, id.as_str()))
            .chain(
                own.iter()
                    .filter(|id| **id != fanout.sender_device_id)
                    .map(|id| (sender, id.as_str())),
            )
            .collect();
        if expected.is_empty() {
            return Err(Error::invalid_argument(
                "NO_DEVICES",
                "there is no other device to send to",
            ));
        }
        if given != expected {
            let missing = expected.difference(&given).count();
            let extra = given.difference(&expected).count();
            return Err(Error::failed_precondition(
                DEVICE_LIST_CHANGED,
                format!(
                    "the devices changed ({missing} missing, {extra} not current): fetch the device lists again and \
                     resend with the same message id"
                ),
            ));
        }
        Ok(())
    }

    /// The device ciphertext and archive rows of a new v2 message.
    pub(crate) fn fanout_rows(
        message_id: &str,
        owner: &str,
        fanout: &Fanout,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (Vec<device_ciphertext::Model>, Option<archive_copy::Model>) {
        let ciphertexts = fanout
            .ciphertexts
            .iter()
            .map(|ciphertext| device_ciphertext::Model {
                message_id: message_id.to_owned(),
                recipient_device_id: ciphertext.recipient_device_id.clone(),
                recipient_user_id: ciphertext.recipient_user_id.clone(),
                body: ciphertext.encode_to_vec(),
            })
            .collect();
        let archive = fanout.archive.as_ref().map(|archive| archive_copy::Model {
            message_id: message_id.to_owned(),
            owner_user_id: owner.to_owned(),
            body: archive.encode_to_vec(),
            created_at: now,
        });
        (ciphertexts, archive)
    }

    /// Checks that `device_id` (when given) is one of the caller's listed devices.
    pub(crate) async fn check_own_device(&self, principal: &Principal, device_id: &str) -> Result<(), Error> {
        if device_id.is_empty() {
            return Ok(());
        }
        check_uuid_v7(device_id, "device_id")?;
        let listed = self
            .active_devices(&self.db, &principal.user_id)
            .await?
            .is_some_and(|devices| devices.ids.contains(device_id));
        if !listed {
            return Err(Error::permission_denied(
                "NOT_YOUR_DEVICE",
                "device_id is not one of your current devices",
            ));
        }
        Ok(())
    }

    /// Attaches to each v2 message the ciphertext for `device_id` and the viewer's archive copy
    /// (two queries for the whole page).
    pub(crate) async fn attach_copies(&self, views: &mut [MessageView], device_id: &str) -> Result<(), Error> {
        let ids: Vec<String> = views
            .iter()
            .filter(|view| view.row.protocol_version == 2 && view.row.recalled_at.is_none())
            .map(|view| view.row.message_id.clone())
            .collect();
        let Some(viewer) = views.first().map(|view| view.viewer.clone()) else {
            return Ok(());
        };
        if ids.is_empty() {
            return Ok(());
        }
        let mut ciphertexts: HashMap<String, Vec<u8>> = HashMap::new();
        if !device_id.is_empty() {
            ciphertexts = device_ciphertext::Entity::find()
                .filter(device_ciphertext::Column::MessageId.is_in(ids.clone()))
                .filter(device_ciphertext::Column::RecipientDeviceId.eq(device_id))
                .filter(device_ciphertext::Column::RecipientUserId.eq(viewer.clone()))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|row| (row.message_id, row.body))
                .collect();
        }
        let mut archives: HashMap<String, Vec<u8>> = archive_copy::Entity::find()
            .filter(archive_copy::Column::MessageId.is_in(ids))
            .filter(archive_copy::Column::OwnerUserId.eq(viewer))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.message_id, row.body))
            .collect();
        for view in views.iter_mut() {
            view.copies.device_ciphertext = ciphertexts.remove(&view.row.message_id);
            view.copies.archive = archives.remove(&view.row.message_id);
        }
        Ok(())
    }

    /// Stores the caller's archive copy of a v2 message they received (`Ok(false)` when one was
    /// stored already).
    pub async fn store_archive_copy(
        &self,
        principal: &Principal,
        caller: &Caller,
        message_id: &str,
        archive: Option<pb::ArchiveCopy>,
    ) -> Result<bool, Error> {
        principal.require_aal2()?;
        check_uuid_v7(message_id, "message_id")?;
        let archive = archive.ok_or_else(|| Error::invalid_argument("ARCHIVE_REQUIRED", "archive is required"))?;
        check_archive(&archive, "archive")?;
        let own = self
            .active_devices(&self.db, &principal.user_id)
            .await?
            .unwrap_or_default();
        check_history_key(&own.history_key_id, &archive)?;
        let row = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id))
            .one(&self.db)
            .await?
            .filter(|row| row.recipient_user_id == principal.user_id && row.protocol_version == 2)
            .ok_or_else(|| {
                Error::not_found(
                    "MESSAGE_NOT_FOUND",
                    "no protocol v2 message with this id was sent to you",
                )
            })?;
        if row.recalled_at.is_some() {
            return Err(Error::failed_precondition(
                "MESSAGE_RECALLED",
                "the message was recalled: there is nothing to archive",
            ));
        }
        // Usually another device of the caller stored it already: then nothing is written (the
        // conditional insert below settles a race between two devices).
        let stored = archive_copy::Entity::find_by_id((message_id.to_owned(), principal.user_id.clone()))
            .one(&self.db)
            .await?;
        if stored.is_some() {
            return Ok(false);
        }
        let (_turn, txn) = self.begin_write().await?;
        let inserted = archive_copy::Entity::insert(archive_copy::ActiveModel {
            message_id: Set(message_id.to_owned()),
            owner_user_id: Set(principal.user_id.clone()),
            body: Set(archive.encode_to_vec()),
            created_at: Set(self.now()),
        })
        .on_conflict(
            OnConflict::columns([archive_copy::Column::MessageId, archive_copy::Column::OwnerUserId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        self.audit(
            &txn,
            caller,
            Audited {
                action: AuditAction::Create,
                operation: "StoreArchiveCopy",
                entity_type: "message",
                entity_id: message_id,
                patient_id: if principal.role == "patient" {
                    &principal.user_id
                } else {
                    ""
                },
                outcome: AuditOutcome::Success,
                reason: "",
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        self.outbox.wake_relay();
        Ok(inserted > 0)
    }

    /// Deletes what a message's devices and owners hold (recall, lifespan).
    pub(crate) async fn delete_fanout<C: ConnectionTrait>(
        &self,
        conn: &C,
        message_ids: Vec<String>,
    ) -> Result<(), Error> {
        if message_ids.is_empty() {
            return Ok(());
        }
        device_ciphertext::Entity::delete_many()
            .filter(device_ciphertext::Column::MessageId.is_in(message_ids.clone()))
            .exec(conn)
            .await?;
        archive_copy::Entity::delete_many()
            .filter(archive_copy::Column::MessageId.is_in(message_ids))
            .exec(conn)
            .await?;
        Ok(())
    }
}
