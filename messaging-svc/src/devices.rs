//! The protocol v2 device directory (`docs/protocol.md` §3.2, §4, §5.1, §8): users publish the
//! public keys of each of their devices, keep a signed device list, fetch other users' device
//! bundles and link new devices.
//!
//! Invariants:
//! - every device key signature and every device list signature is verified against the caller's
//!   *current* identity (`caremesh_crypto::v2`), with the caller's user id; a new identity
//!   discards the device list and every device key signed by the old one (`keys.rs`);
//! - a device list is accepted only at version `current + 1` (1 for the first), by a conditional
//!   write, so of two concurrent uploads of the same version one is ABORTED; devices it drops lose
//!   their keys in the same transaction;
//! - a device publishes keys only while it is in the current list (or before the user has one),
//!   and not after an admin removed it;
//! - each one-time key (X25519 or ML-KEM) is handed out at most once: a fetch claims it with one
//!   `DELETE .. RETURNING` statement, only while the identity it read is still current; on
//!   PostgreSQL the candidate row is selected `FOR UPDATE SKIP LOCKED`, so concurrent fetches get
//!   different keys.
//!
//! No tonic types here: the adapter in `grpc.rs` unpacks requests and returns what these return.

use std::collections::{BTreeSet, HashSet};

use caremesh_crypto::IdentityPublicKey;
use caremesh_crypto::v2::{DeviceKeyKind, DeviceList, MAX_DEVICES, verify_device_key};
use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_proto::messaging::v1 as pb;
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use caremesh_runtime::time::to_timestamp;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use sha2::{Digest, Sha256};

use crate::domain::{Audited, Caller, MessagingDomain, check_uuid_v7};
use crate::keys::verify_stored_identity;
use crate::storage::{
    DEVICE_KEY_LAST_RESORT, DEVICE_KEY_SIGNED, device, device_ciphertext, device_kem_prekey, device_link, device_list,
    device_one_time_prekey, device_signed_prekey, identity_key,
};

/// Most one-time prekeys of each kind in one upload.
pub const MAX_DEVICE_PREKEYS_PER_UPLOAD: usize = 100;
/// How long a device link stays pending (and an approved one readable).
pub const LINK_LIFETIME: TimeDelta = TimeDelta::minutes(10);
/// Most pending links per user.
pub const MAX_PENDING_LINKS: usize = 3;
/// Largest sealed provisioning message.
pub const MAX_SEALED_LEN: usize = 64 * 1024;
/// The AES-GCM tag every sealed message carries at least.
const TAG_LEN: usize = 16;
/// Links per page by default and at most.
const LINK_PAGE: u64 = 10;

/// The outcome of claiming a one-time key.
enum Claim<T> {
    Claimed(T),
    /// None left to hand out.
    Empty,
    /// The identity changed: read again.
    Retry,
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Error {
    Error::invalid_argument(reason, message)
}

/// The ids of a stored list, ascending.
pub(crate) fn list_ids(row: &device_list::Model) -> Vec<String> {
    row.device_ids
        .split(',')
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The wire form of a stored device list.
pub(crate) fn list_message(row: &device_list::Model) -> pb::DeviceList {
    pb::DeviceList {
        user_id: row.user_id.clone(),
        identity_key_id: row.identity_key_id.clone(),
        version: u64::try_from(row.version).unwrap_or_default(),
        device_ids: list_ids(row),
        signature: row.signature.clone(),
        update_time: Some(to_timestamp(row.updated_at)),
        history_key_id: row.history_key_id.clone(),
    }
}

/// The wire form of a stored link, as of `now`.
pub(crate) fn link_message(row: &device_link::Model, now: DateTime<Utc>) -> pb::DeviceLink {
    let expired = row.expire_at <= now;
    let state = match (row.approved_at.is_some(), expired) {
        (_, true) => pb::DeviceLinkState::Expired,
        (true, false) => pb::DeviceLinkState::Approved,
        (false, false) => pb::DeviceLinkState::Pending,
    };
    let approved = state == pb::DeviceLinkState::Approved;
    pb::DeviceLink {
        link_id: row.link_id.clone(),
        user_id: row.user_id.clone(),
        device_id: row.device_id.clone(),
        ephemeral_public: row.ephemeral_public.clone(),
        commitment: row.commitment.clone(),
        state: state.into(),
        create_time: Some(to_timestamp(row.created_at)),
        expire_time: Some(to_timestamp(row.expire_at)),
        approver_public: if approved {
            row.approver_public.clone().unwrap_or_default()
        } else {
            Vec::new()
        },
        sealed: if approved {
            row.sealed.clone().unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

fn signed_key_message(key_id: &str, public_key: &[u8], signature: &[u8]) -> pb::SignedDeviceKey {
    pb::SignedDeviceKey {
        key_id: key_id.to_owned(),
        public_key: public_key.to_vec(),
        signature: signature.to_vec(),
    }
}

/// Checks a user id named in a request: 1 to 256 bytes (UUIDv7 in practice).
fn check_user_id(user_id: &str) -> Result<(), Error> {
    if user_id.is_empty() {
        return Err(invalid("USER_ID_REQUIRED", "user_id is required"));
    }
    if user_id.len() > caremesh_crypto::MAX_USER_ID_LEN {
        return Err(invalid(
            "INVALID_USER_ID",
            format!(
                "user_id is {} bytes; user ids have at most {}",
                user_id.len(),
                caremesh_crypto::MAX_USER_ID_LEN
            ),
        ));
    }
    Ok(())
}

/// Checks a list of device ids before anything else: 1 to 10 canonical UUIDv7s.
fn check_list_ids(device_ids: &[String], field: &str) -> Result<(), Error> {
    if device_ids.is_empty() || device_ids.len() > MAX_DEVICES {
        return Err(invalid(
            "INVALID_DEVICE_LIST",
            format!(
                "a device list has 1 to {MAX_DEVICES} devices; {field} has {}",
                device_ids.len()
            ),
        ));
    }
    for (index, id) in device_ids.iter().enumerate() {
        check_uuid_v7(id, &format!("{field}[{index}]"))?;
    }
    Ok(())
}

fn check_version(version: u64) -> Result<i64, Error> {
    i64::try_from(version)
        .ok()
        .filter(|version| *version >= 1)
        .ok_or_else(|| {
            invalid(
                "INVALID_DEVICE_LIST_VERSION",
                format!("device list versions start at 1 and increase by 1; {version} is not one"),
            )
        })
}

/// Verifies a signed device key of `device_id` against the caller's identity.
fn verify_key(
    identity: &IdentityPublicKey,
    kind: DeviceKeyKind,
    user_id: &str,
    device_id: &str,
    key: &pb::SignedDeviceKey,
    field: &str,
) -> Result<(), Error> {
    check_uuid_v7(&key.key_id, &format!("{field}.key_id"))?;
    verify_device_key(
        identity,
        kind,
        user_id,
        device_id,
        &key.key_id,
        &key.public_key,
        &key.signature,
    )
    .map_err(|error| {
        invalid(
            "INVALID_DEVICE_KEY",
            format!(
                "{field} ({}): {error}; sign it for this device with your current identity {} (kind {})",
                key.key_id,
                identity.key_id(),
                kind.label()
            ),
        )
    })
}

/// One-time prekeys of an upload, checked: at most 100 of each kind, well-formed, every key id
/// new within the upload, the ML-KEM ones signed by the caller's identity.
fn check_one_time_keys(
    identity: &IdentityPublicKey,
    user_id: &str,
    device_id: &str,
    one_time: &[pb::OneTimePrekey],
    kem: &[pb::SignedDeviceKey],
    seen: &mut HashSet<String>,
) -> Result<(), Error> {
    for (count, what) in [
        (one_time.len(), "one_time_prekeys"),
        (kem.len(), "kem_one_time_prekeys"),
    ] {
        if count > MAX_DEVICE_PREKEYS_PER_UPLOAD {
            return Err(invalid(
                "TOO_MANY_PREKEYS",
                format!("send at most {MAX_DEVICE_PREKEYS_PER_UPLOAD} {what} per call (got {count})"),
            ));
        }
    }
    let mut fresh = |key_id: &str| {
        if seen.insert(key_id.to_owned()) {
            Ok(())
        } else {
            Err(invalid(
                "DUPLICATE_PREKEY_ID",
                format!("key id {key_id} appears twice in the upload: every device key needs its own id"),
            ))
        }
    };
    for (index, prekey) in one_time.iter().enumerate() {
        check_uuid_v7(&prekey.key_id, &format!("one_time_prekeys[{index}].key_id"))?;
        caremesh_crypto::check_one_time_prekey(prekey).map_err(|error| {
            invalid(
                "INVALID_PREKEY",
                format!("one_time_prekeys[{index}] ({}): {error}", prekey.key_id),
            )
        })?;
        fresh(&prekey.key_id)?;
    }
    for (index, key) in kem.iter().enumerate() {
        verify_key(
            identity,
            DeviceKeyKind::KemOneTime,
            user_id,
            device_id,
            key,
            &format!("kem_one_time_prekeys[{index}]"),
        )?;
        fresh(&key.key_id)?;
    }
    Ok(())
}

impl MessagingDomain {
    /// The caller's current identity, verified (it was verified on upload), or
    /// FAILED_PRECONDITION when they have published none.
    async fn own_identity<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
    ) -> Result<(identity_key::Model, IdentityPublicKey), Error> {
        let row = self.current_identity(conn, user_id).await?.ok_or_else(|| {
            Error::failed_precondition(
                "KEYS_NOT_PUBLISHED",
                "publish your identity first (KeyDirectoryService.PublishKeyBundle): device keys and device lists are signed by it",
            )
        })?;
        let public = verify_stored_identity(&row)?;
        Ok((row, public))
    }

    /// Inside a write transaction, first: on PostgreSQL, a transaction-scoped advisory lock on
    /// `user_id`'s device directory, so that one user's device writes (and an identity change)
    /// run one after the other, as every SQLite writer does anyway. Without it, a device published
    /// while a concurrent list drops it (or while the identity changes) could keep its keys.
    async fn lock_devices<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<(), Error> {
        if let Some(pg) = &self.pg {
            let digest = Sha256::digest(format!("{}devices/{user_id}", pg.lock_seed).as_bytes());
            let mut key = [0u8; 8];
            key.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [i64::from_be_bytes(key).into()],
            ))
            .await?;
        }
        Ok(())
    }

    /// Inside a write transaction: the caller's identity is still `key_id`.
    async fn still_current<C: ConnectionTrait>(&self, conn: &C, user_id: &str, key_id: &str) -> Result<(), Error> {
        match self.current_identity(conn, user_id).await? {
            Some(current) if current.key_id == key_id => Ok(()),
            _ => Err(Error::aborted(
                "IDENTITY_CHANGED",
                "your identity changed while this request was checked: sign with your current identity and try again",
            )),
        }
    }

    async fn stored_list<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
    ) -> Result<Option<device_list::Model>, Error> {
        Ok(device_list::Entity::find_by_id(user_id.to_owned()).one(conn).await?)
    }

    /// The devices of `user_id` an admin removed, ascending.
    pub(crate) async fn admin_removed<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
    ) -> Result<Vec<String>, Error> {
        Ok(device::Entity::find()
            .filter(device::Column::UserId.eq(user_id))
            .filter(device::Column::AdminRemovedAt.is_not_null())
            .order_by_asc(device::Column::DeviceId)
            .all(conn)
            .await?
            .into_iter()
            .map(|row| row.device_id)
            .collect())
    }

    async fn device_stock<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        device_id: &str,
    ) -> Result<pb::DevicePrekeyStock, Error> {
        let one_time = device_one_time_prekey::Entity::find()
            .filter(device_one_time_prekey::Column::UserId.eq(user_id))
            .filter(device_one_time_prekey::Column::DeviceId.eq(device_id))
            .count(conn)
            .await?;
        let kem = device_kem_prekey::Entity::find()
            .filter(device_kem_prekey::Column::UserId.eq(user_id))
            .filter(device_kem_prekey::Column::DeviceId.eq(device_id))
            .count(conn)
            .await?;
        Ok(pb::DevicePrekeyStock {
            device_id: device_id.to_owned(),
            one_time_prekey_count: u32::try_from(one_time).unwrap_or(u32::MAX),
            kem_one_time_prekey_count: u32::try_from(kem).unwrap_or(u32::MAX),
            low_watermark: self.settings.prekey_low_watermark,
        })
    }

    /// Stores new one-time keys of a device: none of their ids in stock yet, and the stock of each
    /// kind within the limit.
    async fn insert_device_prekeys<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        device_id: &str,
        identity_key_id: &str,
        one_time: &[pb::OneTimePrekey],
        kem: &[pb::SignedDeviceKey],
    ) -> Result<pb::DevicePrekeyStock, Error> {
        let ids: Vec<String> = one_time
            .iter()
            .map(|key| key.key_id.clone())
            .chain(kem.iter().map(|key| key.key_id.clone()))
            .collect();
        if !ids.is_empty() {
            let clash = device_one_time_prekey::Entity::find()
                .filter(device_one_time_prekey::Column::UserId.eq(user_id))
                .filter(device_one_time_prekey::Column::DeviceId.eq(device_id))
                .filter(device_one_time_prekey::Column::KeyId.is_in(ids.clone()))
                .one(conn)
                .await?
                .map(|row| row.key_id);
            let clash = match clash {
                Some(id) => Some(id),
                None => device_kem_prekey::Entity::find()
                    .filter(device_kem_prekey::Column::UserId.eq(user_id))
                    .filter(device_kem_prekey::Column::DeviceId.eq(device_id))
                    .filter(device_kem_prekey::Column::KeyId.is_in(ids))
                    .one(conn)
                    .await?
                    .map(|row| row.key_id),
            };
            if let Some(id) = clash {
                return Err(Error::already_exists(
                    "PREKEY_ID_EXISTS",
                    format!("one-time prekey id {id} is already in this device's stock: use new ids"),
                ));
            }
        }
        let before = self.device_stock(conn, user_id, device_id).await?;
        let limit = self.settings.prekey_stock_limit;
        for (stock, added, what) in [
            (before.one_time_prekey_count, one_time.len(), "one-time X25519"),
            (before.kem_one_time_prekey_count, kem.len(), "one-time ML-KEM"),
        ] {
            if stock.saturating_add(u32::try_from(added).unwrap_or(u32::MAX)) > limit {
                return Err(Error::failed_precondition(
                    "PREKEY_STOCK_FULL",
                    format!("this device has {stock} {what} prekeys in stock; at most {limit} are kept: upload fewer"),
                ));
            }
        }
        let now = self.now();
        if !one_time.is_empty() {
            device_one_time_prekey::Entity::insert_many(one_time.iter().map(|key| {
                device_one_time_prekey::ActiveModel {
                    user_id: Set(user_id.to_owned()),
                    device_id: Set(device_id.to_owned()),
                    key_id: Set(key.key_id.clone()),
                    public_key: Set(key.public_key.clone()),
                    created_at: Set(now),
                }
            }))
            .exec_without_returning(conn)
            .await?;
        }
        if !kem.is_empty() {
            device_kem_prekey::Entity::insert_many(kem.iter().map(|key| device_kem_prekey::ActiveModel {
                user_id: Set(user_id.to_owned()),
                device_id: Set(device_id.to_owned()),
                key_id: Set(key.key_id.clone()),
                identity_key_id: Set(identity_key_id.to_owned()),
                public_key: Set(key.public_key.clone()),
                signature: Set(key.signature.clone()),
                created_at: Set(now),
            }))
            .exec_without_returning(conn)
            .await?;
        }
        self.device_stock(conn, user_id, device_id).await
    }

    /// Deletes every key of the devices of `user_id` that `keep` says to drop (signed prekeys and
    /// both kinds of one-time prekeys), and, with `rows`, their device rows.
    async fn delete_device_keys<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        devices: DeviceSelection<'_>,
        rows: bool,
    ) -> Result<(), Error> {
        macro_rules! delete_in {
            ($entity:ident) => {{
                let mut query = $entity::Entity::delete_many().filter($entity::Column::UserId.eq(user_id));
                query = match devices {
                    DeviceSelection::All => query,
                    DeviceSelection::One(id) => query.filter($entity::Column::DeviceId.eq(id)),
                    DeviceSelection::AllBut(keep) => {
                        query.filter($entity::Column::DeviceId.is_not_in(keep.iter().cloned()))
                    }
                };
                query.exec(conn).await?;
            }};
        }
        delete_in!(device_signed_prekey);
        delete_in!(device_one_time_prekey);
        delete_in!(device_kem_prekey);
        if rows {
            delete_in!(device);
        }
        // Their message ciphertexts not yet read can never be read now (protocol v2 fan-out).
        let pending =
            device_ciphertext::Entity::delete_many().filter(device_ciphertext::Column::RecipientUserId.eq(user_id));
        let pending = match devices {
            DeviceSelection::All => pending,
            DeviceSelection::One(id) => pending.filter(device_ciphertext::Column::RecipientDeviceId.eq(id)),
            DeviceSelection::AllBut(keep) => {
                pending.filter(device_ciphertext::Column::RecipientDeviceId.is_not_in(keep.iter().cloned()))
            }
        };
        pending.exec(conn).await?;
        Ok(())
    }

    /// Inside the transaction of an identity change: everything signed by the old identity goes
    /// (the device list and every device's keys); the new identity's lists start at version 1.
    pub(crate) async fn discard_devices<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<(), Error> {
        self.lock_devices(conn, user_id).await?;
        device_list::Entity::delete_many()
            .filter(device_list::Column::UserId.eq(user_id))
            .exec(conn)
            .await?;
        self.delete_device_keys(conn, user_id, DeviceSelection::All, true).await
    }

    /// Publishes (or refreshes) one of the caller's devices.
    pub async fn publish_device(
        &self,
        caller: &Principal,
        actor: &Caller,
        request: pb::PublishDeviceRequest,
    ) -> Result<pb::DevicePrekeyStock, Error> {
        caller.require_aal2()?;
        let user_id = caller.user_id.as_str();
        let device_id = request.device_id.as_str();
        check_uuid_v7(device_id, "device_id")?;
        let signed = request.signed_prekey.as_ref().ok_or_else(|| {
            invalid(
                "SIGNED_PREKEY_REQUIRED",
                "signed_prekey is required (the device's signed X25519 prekey)",
            )
        })?;
        let last_resort = request.last_resort_prekey.as_ref().ok_or_else(|| {
            invalid(
                "LAST_RESORT_PREKEY_REQUIRED",
                "last_resort_prekey is required (the device's signed ML-KEM-768 last-resort prekey)",
            )
        })?;
        let (identity, public) = self.own_identity(&self.db, user_id).await?;
        verify_key(
            &public,
            DeviceKeyKind::SignedPrekey,
            user_id,
            device_id,
            signed,
            "signed_prekey",
        )?;
        verify_key(
            &public,
            DeviceKeyKind::KemLastResort,
            user_id,
            device_id,
            last_resort,
            "last_resort_prekey",
        )?;
        let mut seen = HashSet::new();
        check_one_time_keys(
            &public,
            user_id,
            device_id,
            &request.one_time_prekeys,
            &request.kem_one_time_prekeys,
            &mut seen,
        )?;

        let (_turn, txn) = self.begin_write().await?;
        self.lock_devices(&txn, user_id).await?;
        self.still_current(&txn, user_id, &identity.key_id).await?;
        let list = self.stored_list(&txn, user_id).await?;
        if let Some(list) = &list
            && !list_ids(list).iter().any(|id| id == device_id)
        {
            return Err(Error::failed_precondition(
                "DEVICE_NOT_IN_LIST",
                format!(
                    "device {device_id} is not in your signed device list (version {}): add it with UpdateDeviceList (or link it) first",
                    list.version
                ),
            ));
        }
        let existing = device::Entity::find_by_id((user_id.to_owned(), device_id.to_owned()))
            .one(&txn)
            .await?;
        let now = self.now();
        match &existing {
            Some(row) if row.admin_removed_at.is_some() => {
                return Err(Error::failed_precondition(
                    "DEVICE_REMOVED_BY_ADMIN",
                    format!(
                        "device {device_id} was removed by an admin: sign a device list without it, and register this device under a new id"
                    ),
                ));
            }
            Some(row) => {
                let mut row: device::ActiveModel = row.clone().into();
                row.updated_at = Set(now);
                row.update(&txn).await?;
            }
            None => {
                if list.is_none() {
                    let devices = device::Entity::find()
                        .filter(device::Column::UserId.eq(user_id))
                        .count(&txn)
                        .await?;
                    if devices >= MAX_DEVICES as u64 {
                        return Err(Error::failed_precondition(
                            "TOO_MANY_DEVICES",
                            format!(
                                "you already have {devices} devices (at most {MAX_DEVICES}): sign a device list without the ones you no longer use"
                            ),
                        ));
                    }
                }
                device::ActiveModel {
                    user_id: Set(user_id.to_owned()),
                    device_id: Set(device_id.to_owned()),
                    created_at: Set(now),
                    updated_at: Set(now),
                    admin_removed_at: Set(None),
                    admin_removed_by: Set(String::new()),
                }
                .insert(&txn)
                .await?;
            }
        }
        device_signed_prekey::Entity::delete_many()
            .filter(device_signed_prekey::Column::UserId.eq(user_id))
            .filter(device_signed_prekey::Column::DeviceId.eq(device_id))
            .exec(&txn)
            .await?;
        device_signed_prekey::Entity::insert_many(
            [(DEVICE_KEY_SIGNED, signed), (DEVICE_KEY_LAST_RESORT, last_resort)].map(|(kind, key)| {
                device_signed_prekey::ActiveModel {
                    user_id: Set(user_id.to_owned()),
                    device_id: Set(device_id.to_owned()),
                    kind: Set(kind.to_owned()),
                    key_id: Set(key.key_id.clone()),
                    identity_key_id: Set(identity.key_id.clone()),
                    public_key: Set(key.public_key.clone()),
                    signature: Set(key.signature.clone()),
                    created_at: Set(now),
                }
            }),
        )
        .exec_without_returning(&txn)
        .await?;
        let stock = self
            .insert_device_prekeys(
                &txn,
                user_id,
                device_id,
                &identity.key_id,
                &request.one_time_prekeys,
                &request.kem_one_time_prekeys,
            )
            .await?;
        self.audit(
            &txn,
            actor,
            Audited {
                action: if existing.is_some() {
                    AuditAction::Update
                } else {
                    AuditAction::Create
                },
                operation: "PublishDevice",
                entity_type: "device",
                entity_id: device_id,
                outcome: AuditOutcome::Success,
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(stock)
    }

    /// Adds one-time prekeys to one of the caller's published devices.
    pub async fn upload_device_prekeys(
        &self,
        caller: &Principal,
        actor: &Caller,
        request: pb::UploadDevicePrekeysRequest,
    ) -> Result<pb::DevicePrekeyStock, Error> {
        caller.require_aal2()?;
        let user_id = caller.user_id.as_str();
        let device_id = request.device_id.as_str();
        check_uuid_v7(device_id, "device_id")?;
        if request.one_time_prekeys.is_empty() && request.kem_one_time_prekeys.is_empty() {
            return Err(invalid(
                "PREKEYS_REQUIRED",
                "send one-time prekeys (one_time_prekeys, kem_one_time_prekeys or both; at most 100 of each)",
            ));
        }
        let (identity, public) = self.own_identity(&self.db, user_id).await?;
        check_one_time_keys(
            &public,
            user_id,
            device_id,
            &request.one_time_prekeys,
            &request.kem_one_time_prekeys,
            &mut HashSet::new(),
        )?;
        let (_turn, txn) = self.begin_write().await?;
        self.lock_devices(&txn, user_id).await?;
        self.still_current(&txn, user_id, &identity.key_id).await?;
        let published = device_signed_prekey::Entity::find()
            .filter(device_signed_prekey::Column::UserId.eq(user_id))
            .filter(device_signed_prekey::Column::DeviceId.eq(device_id))
            .count(&txn)
            .await?;
        if published == 0 {
            return Err(Error::failed_precondition(
                "DEVICE_NOT_PUBLISHED",
                format!("device {device_id} has no published keys: publish it first (PublishDevice)"),
            ));
        }
        let stock = self
            .insert_device_prekeys(
                &txn,
                user_id,
                device_id,
                &identity.key_id,
                &request.one_time_prekeys,
                &request.kem_one_time_prekeys,
            )
            .await?;
        self.audit(
            &txn,
            actor,
            Audited {
                action: AuditAction::Update,
                operation: "UploadDevicePrekeys",
                entity_type: "device",
                entity_id: device_id,
                outcome: AuditOutcome::Success,
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(stock)
    }

    /// Inside a write transaction: verifies the caller's next device list and stores it if it is
    /// the version after the current one; drops the keys of the devices it leaves out. Returns the
    /// stored list and the devices dropped.
    #[allow(clippy::too_many_arguments)]
    async fn apply_device_list<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        identity: &IdentityPublicKey,
        version: u64,
        device_ids: Vec<String>,
        signature: &[u8],
        history_key_id: &str,
    ) -> Result<(device_list::Model, Vec<String>), Error> {
        let stored_version = check_version(version)?;
        if !history_key_id.is_empty() && check_uuid_v7(history_key_id, "history_key_id").is_err() {
            return Err(invalid(
                "INVALID_HISTORY_KEY_ID",
                "history_key_id must be empty or a canonical UUIDv7",
            ));
        }
        let list = DeviceList::verify(user_id, identity, version, device_ids, signature).map_err(|error| {
            invalid(
                "INVALID_DEVICE_LIST",
                format!(
                    "device list: {error}; sign the list (version, device ids) with your current identity {}",
                    identity.key_id()
                ),
            )
        })?;
        let current = self.stored_list(conn, user_id).await?;
        let current_version = current.as_ref().map_or(0, |row| row.version);
        if stored_version != current_version.saturating_add(1) {
            return Err(Error::aborted(
                "DEVICE_LIST_VERSION_MISMATCH",
                if current.is_some() {
                    format!(
                        "your current device list is version {current_version}: fetch it and sign version {} (got {version})",
                        current_version.saturating_add(1)
                    )
                } else {
                    format!(
                        "you have no device list yet (current version 0): the first one is version 1 (got {version})"
                    )
                },
            ));
        }
        let now = self.now();
        let row = device_list::Model {
            user_id: user_id.to_owned(),
            identity_key_id: identity.key_id().to_owned(),
            version: stored_version,
            device_ids: list.device_ids().join(","),
            signature: signature.to_vec(),
            updated_at: now,
            history_key_id: if history_key_id.is_empty() {
                current
                    .as_ref()
                    .map(|row| row.history_key_id.clone())
                    .unwrap_or_default()
            } else {
                history_key_id.to_owned()
            },
        };
        // A conditional write: of two uploads of the same version, one wins.
        let written = match &current {
            Some(current) => {
                device_list::Entity::update_many()
                    .set(device_list::ActiveModel {
                        identity_key_id: Set(row.identity_key_id.clone()),
                        version: Set(row.version),
                        device_ids: Set(row.device_ids.clone()),
                        signature: Set(row.signature.clone()),
                        updated_at: Set(now),
                        history_key_id: Set(row.history_key_id.clone()),
                        ..Default::default()
                    })
                    .filter(device_list::Column::UserId.eq(user_id))
                    .filter(device_list::Column::Version.eq(current.version))
                    .exec(conn)
                    .await?
                    .rows_affected
            }
            None => {
                device_list::Entity::insert(device_list::ActiveModel::from(row.clone()))
                    .on_conflict(OnConflict::column(device_list::Column::UserId).do_nothing().to_owned())
                    .exec_without_returning(conn)
                    .await?
            }
        };
        if written != 1 {
            return Err(Error::aborted(
                "DEVICE_LIST_VERSION_MISMATCH",
                format!(
                    "your device list changed meanwhile (another device uploaded version {stored_version}): fetch it and sign the next version"
                ),
            ));
        }
        let keep: BTreeSet<&str> = list.device_ids().iter().map(String::as_str).collect();
        let mut dropped: BTreeSet<String> = current.as_ref().map(list_ids).unwrap_or_default().into_iter().collect();
        dropped.extend(
            device::Entity::find()
                .filter(device::Column::UserId.eq(user_id))
                .all(conn)
                .await?
                .into_iter()
                .map(|row| row.device_id),
        );
        dropped.retain(|id| !keep.contains(id.as_str()));
        self.delete_device_keys(conn, user_id, DeviceSelection::AllBut(list.device_ids()), true)
            .await?;
        Ok((row, dropped.into_iter().collect()))
    }

    /// Replaces the caller's signed device list; returns it and the devices it dropped.
    pub async fn update_device_list(
        &self,
        caller: &Principal,
        actor: &Caller,
        version: u64,
        device_ids: Vec<String>,
        signature: &[u8],
        history_key_id: &str,
    ) -> Result<(pb::DeviceList, Vec<String>), Error> {
        caller.require_aal2()?;
        let user_id = caller.user_id.as_str();
        check_list_ids(&device_ids, "device_ids")?;
        let (_turn, txn) = self.begin_write().await?;
        self.lock_devices(&txn, user_id).await?;
        let (_, public) = self.own_identity(&txn, user_id).await?;
        let (row, dropped) = self
            .apply_device_list(&txn, user_id, &public, version, device_ids, signature, history_key_id)
            .await?;
        self.audit(
            &txn,
            actor,
            Audited {
                action: AuditAction::Update,
                operation: "UpdateDeviceList",
                entity_type: "device_list",
                entity_id: user_id,
                outcome: AuditOutcome::Success,
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok((list_message(&row), dropped))
    }

    /// A user's current device list and the devices an admin removed from it.
    pub async fn device_list(&self, caller: &Principal, user_id: &str) -> Result<pb::GetDeviceListResponse, Error> {
        caller.require_aal2()?;
        check_user_id(user_id)?;
        let list = self.stored_list(&self.db, user_id).await?.ok_or_else(|| {
            Error::not_found(
                "DEVICE_LIST_NOT_FOUND",
                format!("user {user_id} has no device list yet"),
            )
        })?;
        let listed = list_ids(&list);
        let removed = self
            .admin_removed(&self.db, user_id)
            .await?
            .into_iter()
            .filter(|id| listed.contains(id))
            .collect();
        Ok(pb::GetDeviceListResponse {
            device_list: Some(list_message(&list)),
            admin_removed_device_ids: removed,
        })
    }

    /// `user_id`'s device bundles, consuming one-time keys (see the module documentation).
    pub async fn fetch_device_bundles(
        &self,
        caller: &Principal,
        user_id: &str,
        only: &[String],
    ) -> Result<pb::FetchDeviceBundlesResponse, Error> {
        caller.require_aal2()?;
        check_user_id(user_id)?;
        if only.len() > MAX_DEVICES {
            return Err(invalid(
                "TOO_MANY_DEVICES",
                format!("ask for at most {MAX_DEVICES} devices (got {})", only.len()),
            ));
        }
        for (index, id) in only.iter().enumerate() {
            check_uuid_v7(id, &format!("device_ids[{index}]"))?;
        }
        if user_id != caller.user_id {
            self.check_may_write(caller, user_id).await?;
        }
        'attempt: for _attempt in 0..8 {
            let identity = self.current_identity(&self.db, user_id).await?.ok_or_else(|| {
                Error::not_found(
                    "KEYS_NOT_PUBLISHED",
                    format!("user {user_id} has not published keys yet: they need to sign in to messaging once"),
                )
            })?;
            let list = self.stored_list(&self.db, user_id).await?.ok_or_else(|| {
                Error::not_found(
                    "DEVICE_LIST_NOT_FOUND",
                    format!("user {user_id} has no device list yet: they need to sign in to messaging once"),
                )
            })?;
            if list.identity_key_id != identity.key_id {
                continue; // read while the identity was being replaced
            }
            let listed = list_ids(&list);
            if let Some(unknown) = only.iter().find(|id| !listed.contains(id)) {
                return Err(Error::not_found(
                    "DEVICE_NOT_FOUND",
                    format!(
                        "device {unknown} is not in the device list of user {user_id} (version {}): fetch the list again",
                        list.version
                    ),
                ));
            }
            let removed = self.admin_removed(&self.db, user_id).await?;
            let wanted: Vec<String> = listed
                .into_iter()
                .filter(|id| only.is_empty() || only.contains(id))
                .filter(|id| !removed.contains(id))
                .collect();
            let signed = device_signed_prekey::Entity::find()
                .filter(device_signed_prekey::Column::UserId.eq(user_id))
                .filter(device_signed_prekey::Column::IdentityKeyId.eq(&identity.key_id))
                .filter(device_signed_prekey::Column::DeviceId.is_in(wanted.iter().cloned()))
                .all(&self.db)
                .await?;
            let find =
                |device_id: &str, kind: &str| signed.iter().find(|row| row.device_id == device_id && row.kind == kind);
            let mut bundles = Vec::new();
            for device_id in &wanted {
                let (Some(spk), Some(last_resort)) = (
                    find(device_id, DEVICE_KEY_SIGNED),
                    find(device_id, DEVICE_KEY_LAST_RESORT),
                ) else {
                    continue; // listed, keys not published yet
                };
                let kem = match self
                    .claim::<device_kem_prekey::Entity>(
                        "device_kem_prekeys",
                        "user_id, device_id, key_id, identity_key_id, public_key, signature, created_at",
                        user_id,
                        device_id,
                        &identity.key_id,
                    )
                    .await?
                {
                    Claim::Claimed(row) => pb::KemPrekey {
                        key: Some(signed_key_message(&row.key_id, &row.public_key, &row.signature)),
                        kind: pb::KemPrekeyKind::OneTime.into(),
                    },
                    Claim::Empty => pb::KemPrekey {
                        key: Some(signed_key_message(
                            &last_resort.key_id,
                            &last_resort.public_key,
                            &last_resort.signature,
                        )),
                        kind: pb::KemPrekeyKind::LastResort.into(),
                    },
                    Claim::Retry => continue 'attempt,
                };
                let one_time = match self
                    .claim::<device_one_time_prekey::Entity>(
                        "device_one_time_prekeys",
                        "user_id, device_id, key_id, public_key, created_at",
                        user_id,
                        device_id,
                        &identity.key_id,
                    )
                    .await?
                {
                    Claim::Claimed(row) => Some(pb::OneTimePrekey {
                        key_id: row.key_id,
                        public_key: row.public_key,
                    }),
                    Claim::Empty => None,
                    Claim::Retry => continue 'attempt,
                };
                bundles.push(pb::DeviceBundle {
                    device_id: device_id.clone(),
                    signed_prekey: Some(signed_key_message(&spk.key_id, &spk.public_key, &spk.signature)),
                    kem_prekey: Some(kem),
                    one_time_prekey: one_time,
                });
            }
            return Ok(pb::FetchDeviceBundlesResponse {
                user_id: user_id.to_owned(),
                identity_key: Some(pb::IdentityKey {
                    create_time: Some(to_timestamp(identity.created_at)),
                    ..crate::keys::identity_proto(&identity)
                }),
                device_list_version: u64::try_from(list.version).unwrap_or_default(),
                bundles,
            });
        }
        Err(Error::unavailable(
            "KEY_DIRECTORY_BUSY",
            format!("the device keys of {user_id} are changing right now: try again"),
        ))
    }

    /// Claims (deletes and returns) the oldest one-time key of a device from `table`, if
    /// `identity_key_id` is still the user's current identity: one `DELETE .. RETURNING`
    /// statement, so a key goes to at most one fetch.
    async fn claim<E>(
        &self,
        table: &str,
        columns: &str,
        user_id: &str,
        device_id: &str,
        identity_key_id: &str,
    ) -> Result<Claim<E::Model>, Error>
    where
        E: EntityTrait,
        E::Model: FromQueryResult,
    {
        let backend = self.db.get_database_backend();
        let sql = if backend == DbBackend::Postgres {
            // SKIP LOCKED: concurrent fetches take different keys instead of waiting.
            format!(
                "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2 AND key_id = (\
                   SELECT key_id FROM {table} WHERE user_id = $1 AND device_id = $2 \
                   ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 AND EXISTS (SELECT 1 FROM identity_keys \
                   WHERE user_id = $1 AND key_id = $3 AND \"current\") \
                 RETURNING {columns}"
            )
        } else {
            format!(
                "DELETE FROM {table} WHERE user_id = ?1 AND device_id = ?2 AND key_id = (\
                   SELECT key_id FROM {table} WHERE user_id = ?1 AND device_id = ?2 \
                   ORDER BY key_id LIMIT 1) \
                 AND EXISTS (SELECT 1 FROM identity_keys \
                   WHERE user_id = ?1 AND key_id = ?3 AND \"current\") \
                 RETURNING {columns}"
            )
        };
        let statement =
            Statement::from_sql_and_values(backend, sql, [user_id.into(), device_id.into(), identity_key_id.into()]);
        let claimed = {
            // One autocommit statement; on SQLite it waits for this process's earlier writers.
            let _turn = self.write_turn().await;
            E::find().from_raw_sql(statement).one(&self.db).await?
        };
        if let Some(row) = claimed {
            return Ok(Claim::Claimed(row));
        }
        let current = self.current_identity(&self.db, user_id).await?;
        Ok(if current.is_some_and(|current| current.key_id == identity_key_id) {
            Claim::Empty
        } else {
            Claim::Retry
        })
    }

    /// Admins: marks a device of a user as removed and deletes its keys; returns the user's
    /// admin-removed devices.
    pub async fn remove_device(
        &self,
        admin: &Principal,
        actor: &Caller,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>, Error> {
        let audited = Audited {
            action: AuditAction::Delete,
            operation: "RemoveDevice",
            entity_type: "device",
            // A refusal is recorded before the input is checked: only a well-formed id goes in.
            entity_id: if check_uuid_v7(device_id, "device_id").is_ok() {
                device_id
            } else {
                ""
            },
            outcome: AuditOutcome::Success,
            purpose_of_use: "HSYSADMIN",
            ..Audited::default()
        };
        if let Err(refusal) = admin.require_role(&["admin"]) {
            return Err(self.outbox.record_refusal(&self.writer, actor, audited, refusal).await);
        }
        check_user_id(user_id)?;
        check_uuid_v7(device_id, "device_id")?;
        let (_turn, txn) = self.begin_write().await?;
        self.lock_devices(&txn, user_id).await?;
        let listed = self
            .stored_list(&txn, user_id)
            .await?
            .is_some_and(|list| list_ids(&list).iter().any(|id| id == device_id));
        let existing = device::Entity::find_by_id((user_id.to_owned(), device_id.to_owned()))
            .one(&txn)
            .await?;
        let now = self.now();
        match existing {
            Some(row) if row.admin_removed_at.is_some() => {}
            Some(row) => {
                let mut row: device::ActiveModel = row.into();
                row.admin_removed_at = Set(Some(now));
                row.admin_removed_by = Set(admin.user_id.clone());
                row.updated_at = Set(now);
                row.update(&txn).await?;
            }
            None if listed => {
                device::ActiveModel {
                    user_id: Set(user_id.to_owned()),
                    device_id: Set(device_id.to_owned()),
                    created_at: Set(now),
                    updated_at: Set(now),
                    admin_removed_at: Set(Some(now)),
                    admin_removed_by: Set(admin.user_id.clone()),
                }
                .insert(&txn)
                .await?;
            }
            None => {
                return Err(Error::not_found(
                    "DEVICE_NOT_FOUND",
                    format!("user {user_id} has no device {device_id} (neither listed nor published)"),
                ));
            }
        }
        self.delete_device_keys(&txn, user_id, DeviceSelection::One(device_id), false)
            .await?;
        self.outbox.record_action(&txn, actor, audited).await?;
        let removed = self.admin_removed(&txn, user_id).await?;
        txn.commit().await?;
        Ok(removed)
    }

    /// Opens a pending link for a new device of the caller.
    pub async fn create_device_link(
        &self,
        caller: &Principal,
        actor: &Caller,
        request: pb::CreateDeviceLinkRequest,
    ) -> Result<pb::DeviceLink, Error> {
        caller.require_aal2()?;
        let user_id = caller.user_id.as_str();
        check_uuid_v7(&request.device_id, "device_id")?;
        for (bytes, field) in [
            (&request.ephemeral_public, "ephemeral_public (the X25519 public key E)"),
            (&request.commitment, "commitment (SHA-256)"),
        ] {
            if bytes.len() != 32 {
                return Err(invalid(
                    "INVALID_KEY_LENGTH",
                    format!("{field} must be 32 bytes (got {})", bytes.len()),
                ));
            }
        }
        let now = self.now();
        let (_turn, txn) = self.begin_write().await?;
        self.lock_devices(&txn, user_id).await?;
        device_link::Entity::delete_many()
            .filter(device_link::Column::UserId.eq(user_id))
            .filter(device_link::Column::ExpireAt.lte(now))
            .exec(&txn)
            .await?;
        if let Some(list) = self.stored_list(&txn, user_id).await?
            && list_ids(&list).contains(&request.device_id)
        {
            return Err(Error::failed_precondition(
                "DEVICE_ALREADY_LISTED",
                format!(
                    "device {} is already in your device list: a new device needs a new id",
                    request.device_id
                ),
            ));
        }
        let pending = device_link::Entity::find()
            .filter(device_link::Column::UserId.eq(user_id))
            .filter(device_link::Column::ApprovedAt.is_null())
            .order_by_asc(device_link::Column::ExpireAt)
            .all(&txn)
            .await?;
        if let Some(same) = pending.iter().find(|link| link.device_id == request.device_id) {
            return Err(Error::already_exists(
                "LINK_PENDING",
                format!(
                    "a link for device {} is already pending ({}): use it, or wait until it expires",
                    request.device_id, same.link_id
                ),
            ));
        }
        if pending.len() >= MAX_PENDING_LINKS {
            let wait = pending
                .first()
                .map_or(LINK_LIFETIME, |oldest| oldest.expire_at - now)
                .to_std()
                .unwrap_or_default();
            return Err(Error::resource_exhausted(
                "TOO_MANY_PENDING_LINKS",
                format!(
                    "you have {} pending device links (at most {MAX_PENDING_LINKS}): approve one or wait until one expires",
                    pending.len()
                ),
                wait,
            ));
        }
        let row = device_link::ActiveModel {
            link_id: Set(uuid::Uuid::now_v7().to_string()),
            user_id: Set(user_id.to_owned()),
            device_id: Set(request.device_id),
            ephemeral_public: Set(request.ephemeral_public),
            commitment: Set(request.commitment),
            created_at: Set(now),
            expire_at: Set(now + LINK_LIFETIME),
            approved_at: Set(None),
            approver_public: Set(None),
            sealed: Set(None),
        }
        .insert(&txn)
        .await?;
        self.audit(
            &txn,
            actor,
            Audited {
                action: AuditAction::Create,
                operation: "CreateDeviceLink",
                entity_type: "device_link",
                entity_id: &row.link_id,
                outcome: AuditOutcome::Success,
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        Ok(link_message(&row, now))
    }

    /// The caller's pending, unexpired links, oldest first, a page at a time.
    pub async fn device_links(
        &self,
        caller: &Principal,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<pb::DeviceLink>, String), Error> {
        caller.require_aal2()?;
        let size = match u64::try_from(page_size) {
            Ok(0) => LINK_PAGE,
            Ok(size) => size.min(LINK_PAGE),
            Err(_) => return Err(invalid("INVALID_PAGE_SIZE", "page_size must not be negative")),
        };
        let now = self.now();
        let mut query = device_link::Entity::find()
            .filter(device_link::Column::UserId.eq(&caller.user_id))
            .filter(device_link::Column::ApprovedAt.is_null())
            .filter(device_link::Column::ExpireAt.gt(now))
            .order_by_asc(device_link::Column::LinkId)
            .limit(size + 1);
        if !page_token.is_empty() {
            let after = hex::decode(page_token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| text.strip_prefix("device-links.").map(str::to_owned))
                .ok_or_else(|| {
                    invalid(
                        "INVALID_PAGE_TOKEN",
                        "the page token is not from ListDeviceLinks: start again without one",
                    )
                })?;
            query = query.filter(device_link::Column::LinkId.gt(after));
        }
        let mut rows = query.all(&self.db).await?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next = match rows.last() {
            Some(last) if more => hex::encode(format!("device-links.{}", last.link_id)),
            _ => String::new(),
        };
        Ok((rows.iter().map(|row| link_message(row, now)).collect(), next))
    }

    /// One of the caller's links, or NOT_FOUND (also for another user's link).
    async fn own_link<C: ConnectionTrait>(
        &self,
        conn: &C,
        caller: &Principal,
        link_id: &str,
    ) -> Result<device_link::Model, Error> {
        check_uuid_v7(link_id, "link_id")?;
        device_link::Entity::find_by_id(link_id.to_owned())
            .one(conn)
            .await?
            .filter(|row| row.user_id == caller.user_id)
            .ok_or_else(|| {
                Error::not_found(
                    "LINK_NOT_FOUND",
                    format!("you have no device link {link_id}: check the id (links expire after 10 minutes)"),
                )
            })
    }

    /// Approves one of the caller's pending links with the sealed provisioning message and the
    /// next device list (the current devices plus the link's), in one transaction.
    pub async fn approve_device_link(
        &self,
        caller: &Principal,
        actor: &Caller,
        request: pb::ApproveDeviceLinkRequest,
    ) -> Result<(pb::DeviceLink, pb::DeviceList), Error> {
        caller.require_aal2()?;
        let user_id = caller.user_id.as_str();
        check_uuid_v7(&request.link_id, "link_id")?;
        if request.approver_public.len() != 32 {
            return Err(invalid(
                "INVALID_KEY_LENGTH",
                format!(
                    "approver_public (the X25519 public key E2) must be 32 bytes (got {})",
                    request.approver_public.len()
                ),
            ));
        }
        if request.sealed.len() < TAG_LEN || request.sealed.len() > MAX_SEALED_LEN {
            return Err(invalid(
                "INVALID_SEALED_PROVISIONING",
                format!(
                    "sealed must be {TAG_LEN} bytes to 64 KiB (the AES-256-GCM provisioning message); got {} bytes",
                    request.sealed.len()
                ),
            ));
        }
        check_list_ids(&request.device_ids, "device_ids")?;
        let now = self.now();
        let (_turn, txn) = self.begin_write().await?;
        self.lock_devices(&txn, user_id).await?;
        let link = self.own_link(&txn, caller, &request.link_id).await?;
        if link.approved_at.is_some() {
            return Err(Error::failed_precondition(
                "LINK_ALREADY_APPROVED",
                format!("device link {} is already approved", link.link_id),
            ));
        }
        if link.expire_at <= now {
            return Err(Error::failed_precondition(
                "LINK_EXPIRED",
                format!(
                    "device link {} expired at {}: open a new one on the new device",
                    link.link_id,
                    link.expire_at.to_rfc3339()
                ),
            ));
        }
        let (_, public) = self.own_identity(&txn, user_id).await?;
        let current = self.stored_list(&txn, user_id).await?.ok_or_else(|| {
            Error::failed_precondition(
                "DEVICE_LIST_REQUIRED",
                "you have no device list yet: upload one with your current devices (UpdateDeviceList) before approving a link",
            )
        })?;
        let mut expected: BTreeSet<String> = list_ids(&current).into_iter().collect();
        let added = expected.insert(link.device_id.clone());
        let offered: BTreeSet<String> = request.device_ids.iter().cloned().collect();
        if !added || offered != expected || offered.len() != request.device_ids.len() {
            return Err(invalid(
                "LINK_DEVICE_LIST_MISMATCH",
                format!(
                    "the new device list must be your current devices (version {}) plus the link's device {}, nothing else",
                    current.version, link.device_id
                ),
            ));
        }
        let (list, _) = self
            .apply_device_list(
                &txn,
                user_id,
                &public,
                request.device_list_version,
                request.device_ids,
                &request.device_list_signature,
                "",
            )
            .await?;
        let expire_at = now + LINK_LIFETIME;
        let updated = device_link::Entity::update_many()
            .set(device_link::ActiveModel {
                approved_at: Set(Some(now)),
                approver_public: Set(Some(request.approver_public.clone())),
                sealed: Set(Some(request.sealed.clone())),
                expire_at: Set(expire_at),
                ..Default::default()
            })
            .filter(device_link::Column::LinkId.eq(&link.link_id))
            .filter(device_link::Column::ApprovedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        if updated != 1 {
            return Err(Error::aborted(
                "LINK_ALREADY_APPROVED",
                format!("device link {} was approved meanwhile", link.link_id),
            ));
        }
        self.audit(
            &txn,
            actor,
            Audited {
                action: AuditAction::Update,
                operation: "ApproveDeviceLink",
                entity_type: "device_link",
                entity_id: &link.link_id,
                outcome: AuditOutcome::Success,
                ..Audited::default()
            },
        )
        .await?;
        txn.commit().await?;
        let approved = device_link::Model {
            approved_at: Some(now),
            approver_public: Some(request.approver_public),
            sealed: Some(request.sealed),
            expire_at,
            ..link
        };
        Ok((link_message(&approved, now), list_message(&list)))
    }

    /// One of the caller's links, as the new device polls it.
    pub async fn device_link(&self, caller: &Principal, link_id: &str) -> Result<pb::DeviceLink, Error> {
        caller.require_aal2()?;
        let row = self.own_link(&self.db, caller, link_id).await?;
        Ok(link_message(&row, self.now()))
    }
}

/// Which devices of a user an operation touches.
#[derive(Clone, Copy, Debug)]
enum DeviceSelection<'a> {
    All,
    One(&'a str),
    AllBut(&'a [String]),
}
