//! The key directory: users publish the public halves of their device keys (signatures verified
//! with the caller's user id), others fetch bundles. Each one-time prekey is handed out at most
//! once: a fetch claims it with one `DELETE .. RETURNING` statement, so only the fetch whose delete
//! removed the row gets it (on PostgreSQL concurrent fetches also skip rows another fetch has
//! locked, so they get different prekeys instead of none).

use std::collections::HashSet;

use caremesh_proto::messaging::v1 as pb;
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, Set, Statement,
};

use crate::domain::MessagingDomain;
use crate::storage::{identity_key, one_time_prekey, signed_prekey};

/// Most one-time prekeys in one upload.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 100;

/// The outcome of claiming a one-time prekey.
enum Claim {
    Claimed(one_time_prekey::Model),
    /// None left to hand out.
    Empty,
    /// The identity changed: read the bundle again.
    Retry,
}

/// A fetched bundle, in storage form.
#[derive(Debug)]
pub struct Bundle {
    pub identity: identity_key::Model,
    pub signed_prekey: signed_prekey::Model,
    pub one_time_prekey: Option<one_time_prekey::Model>,
}

/// The caller's stock.
#[derive(Debug)]
pub struct Stock {
    pub one_time_prekeys: u32,
    pub low_watermark: u32,
    pub identity_key_id: String,
    pub signed_prekey: signed_prekey::Model,
}

fn crypto_error(reason: &'static str, what: &str, error: &caremesh_crypto::CryptoError) -> Error {
    Error::invalid_argument(reason, format!("{what}: {error}"))
}

impl MessagingDomain {
    /// The current identity of `user_id`, if published.
    pub(crate) async fn current_identity<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
    ) -> Result<Option<identity_key::Model>, Error> {
        Ok(identity_key::Entity::find()
            .filter(identity_key::Column::UserId.eq(user_id))
            .filter(identity_key::Column::Current.eq(true))
            .one(conn)
            .await?)
    }

    /// The current identities of `user_ids` (those that have one), in one query.
    pub(crate) async fn current_identities<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_ids: impl IntoIterator<Item = &String>,
    ) -> Result<Vec<identity_key::Model>, Error> {
        Ok(identity_key::Entity::find()
            .filter(identity_key::Column::UserId.is_in(user_ids.into_iter().cloned()))
            .filter(identity_key::Column::Current.eq(true))
            .all(conn)
            .await?)
    }

    async fn stock_count<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<u32, Error> {
        let count = one_time_prekey::Entity::find()
            .filter(one_time_prekey::Column::UserId.eq(user_id))
            .count(conn)
            .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Checks one-time prekeys (well-formed, ids unique in the upload) before storing them.
    fn check_prekeys(prekeys: &[pb::OneTimePrekey], allow_empty: bool) -> Result<(), Error> {
        if prekeys.len() > MAX_PREKEYS_PER_UPLOAD || (!allow_empty && prekeys.is_empty()) {
            return Err(Error::invalid_argument(
                "TOO_MANY_PREKEYS",
                format!(
                    "send 1 to {MAX_PREKEYS_PER_UPLOAD} one-time prekeys per call (got {})",
                    prekeys.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for prekey in prekeys {
            caremesh_crypto::check_one_time_prekey(prekey)
                .map_err(|error| crypto_error("INVALID_PREKEY", "one-time prekey", &error))?;
            if !seen.insert(prekey.key_id.as_str()) {
                return Err(Error::invalid_argument(
                    "DUPLICATE_PREKEY_ID",
                    format!("one-time prekey id {} appears twice in the upload", prekey.key_id),
                ));
            }
        }
        Ok(())
    }

    async fn insert_prekeys<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        prekeys: &[pb::OneTimePrekey],
    ) -> Result<u32, Error> {
        let ids: Vec<String> = prekeys.iter().map(|prekey| prekey.key_id.clone()).collect();
        if !ids.is_empty() {
            let clash = one_time_prekey::Entity::find()
                .filter(one_time_prekey::Column::UserId.eq(user_id))
                .filter(one_time_prekey::Column::KeyId.is_in(ids))
                .one(conn)
                .await?;
            if let Some(clash) = clash {
                return Err(Error::already_exists(
                    "PREKEY_ID_EXISTS",
                    format!("one-time prekey id {} is already in stock: use new ids", clash.key_id),
                ));
            }
        }
        let stock = self.stock_count(conn, user_id).await?;
        let after = stock.saturating_add(u32::try_from(prekeys.len()).unwrap_or(u32::MAX));
        if after > self.settings.prekey_stock_limit {
            return Err(Error::failed_precondition(
                "PREKEY_STOCK_FULL",
                format!(
                    "you have {stock} one-time prekeys in stock; at most {} are kept: upload fewer",
                    self.settings.prekey_stock_limit
                ),
            ));
        }
        let now = self.now();
        for prekey in prekeys {
            one_time_prekey::ActiveModel {
                user_id: Set(user_id.to_owned()),
                key_id: Set(prekey.key_id.clone()),
                public_key: Set(prekey.public_key.clone()),
                created_at: Set(now),
            }
            .insert(conn)
            .await?;
        }
        Ok(after)
    }

    async fn store_signed_prekey<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        identity_key_id: &str,
        prekey: &pb::SignedPrekey,
    ) -> Result<signed_prekey::Model, Error> {
        signed_prekey::Entity::delete_many()
            .filter(signed_prekey::Column::UserId.eq(user_id))
            .exec(conn)
            .await?;
        Ok(signed_prekey::ActiveModel {
            user_id: Set(user_id.to_owned()),
            key_id: Set(prekey.key_id.clone()),
            identity_key_id: Set(identity_key_id.to_owned()),
            public_key: Set(prekey.public_key.clone()),
            signature: Set(prekey.signature.clone()),
            created_at: Set(self.now()),
        }
        .insert(conn)
        .await?)
    }

    /// Publishes (or replaces) the caller's identity, signed prekey and one-time prekeys.
    /// Returns whether the identity changed and the stock after.
    pub async fn publish_bundle(
        &self,
        caller: &Principal,
        identity: Option<pb::IdentityKey>,
        prekey: Option<pb::SignedPrekey>,
        one_time: Vec<pb::OneTimePrekey>,
    ) -> Result<(bool, u32), Error> {
        caller.require_aal2()?;
        let user_id = caller.user_id.as_str();
        let identity = identity.ok_or_else(|| {
            Error::invalid_argument("IDENTITY_KEY_REQUIRED", "identity_key is required (your identity keys)")
        })?;
        let prekey =
            prekey.ok_or_else(|| Error::invalid_argument("SIGNED_PREKEY_REQUIRED", "signed_prekey is required"))?;
        let verified = caremesh_crypto::verify_identity(&identity, user_id).map_err(|error| {
            crypto_error(
                "INVALID_IDENTITY_KEY",
                "identity key (signed for your user id?)",
                &error,
            )
        })?;
        caremesh_crypto::verify_signed_prekey(&prekey, user_id, &verified)
            .map_err(|error| crypto_error("INVALID_SIGNED_PREKEY", "signed prekey", &error))?;
        Self::check_prekeys(&one_time, true)?;

        let (_turn, txn) = self.begin_write().await?;
        let current = self.current_identity(&txn, user_id).await?;
        let changed = match &current {
            Some(current) if current.key_id == identity.key_id => {
                if current.signing_public_key != identity.signing_public_key
                    || current.dh_public_key != identity.dh_public_key
                {
                    return Err(Error::already_exists(
                        "IDENTITY_KEY_ID_REUSED",
                        "this identity key id is already published with other keys: a new identity needs a new key id",
                    ));
                }
                false
            }
            _ => {
                let reused = identity_key::Entity::find_by_id((user_id.to_owned(), identity.key_id.clone()))
                    .one(&txn)
                    .await?;
                if reused.is_some() {
                    return Err(Error::already_exists(
                        "IDENTITY_KEY_ID_REUSED",
                        "this identity key id was published before: a new identity needs a new key id",
                    ));
                }
                if let Some(current) = &current {
                    let mut old: identity_key::ActiveModel = current.clone().into();
                    old.current = Set(false);
                    old.update(&txn).await?;
                    // Prekeys belong to the old identity.
                    one_time_prekey::Entity::delete_many()
                        .filter(one_time_prekey::Column::UserId.eq(user_id))
                        .exec(&txn)
                        .await?;
                    // So do the device list and the device keys it signed (protocol v2).
                    self.discard_devices(&txn, user_id).await?;
                }
                identity_key::ActiveModel {
                    user_id: Set(user_id.to_owned()),
                    key_id: Set(identity.key_id.clone()),
                    signing_public_key: Set(identity.signing_public_key.clone()),
                    dh_public_key: Set(identity.dh_public_key.clone()),
                    signature: Set(identity.dh_public_key_signature.clone()),
                    current: Set(true),
                    created_at: Set(self.now()),
                }
                .insert(&txn)
                .await?;
                current.is_some()
            }
        };
        self.store_signed_prekey(&txn, user_id, &identity.key_id, &prekey)
            .await?;
        let count = self.insert_prekeys(&txn, user_id, &one_time).await?;
        txn.commit().await?;
        Ok((changed, count))
    }

    /// Replaces the caller's signed prekey.
    pub async fn rotate_signed_prekey(
        &self,
        caller: &Principal,
        prekey: Option<pb::SignedPrekey>,
    ) -> Result<signed_prekey::Model, Error> {
        caller.require_aal2()?;
        let user_id = caller.user_id.as_str();
        let prekey =
            prekey.ok_or_else(|| Error::invalid_argument("SIGNED_PREKEY_REQUIRED", "signed_prekey is required"))?;
        let (_turn, txn) = self.begin_write().await?;
        let identity = self.require_own_identity(&txn, user_id).await?;
        let verified = verify_stored_identity(&identity)?;
        caremesh_crypto::verify_signed_prekey(&prekey, user_id, &verified)
            .map_err(|error| crypto_error("INVALID_SIGNED_PREKEY", "signed prekey", &error))?;
        let stored = self
            .store_signed_prekey(&txn, user_id, &identity.key_id, &prekey)
            .await?;
        txn.commit().await?;
        Ok(stored)
    }

    async fn require_own_identity<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
    ) -> Result<identity_key::Model, Error> {
        self.current_identity(conn, user_id).await?.ok_or_else(|| {
            Error::failed_precondition(
                "KEYS_NOT_PUBLISHED",
                "publish your key bundle first (KeyDirectoryService.PublishKeyBundle)",
            )
        })
    }

    /// Adds one-time prekeys to the caller's stock; returns the stock after.
    pub async fn upload_prekeys(&self, caller: &Principal, prekeys: Vec<pb::OneTimePrekey>) -> Result<u32, Error> {
        caller.require_aal2()?;
        Self::check_prekeys(&prekeys, false)?;
        let (_turn, txn) = self.begin_write().await?;
        self.require_own_identity(&txn, &caller.user_id).await?;
        let count = self.insert_prekeys(&txn, &caller.user_id, &prekeys).await?;
        txn.commit().await?;
        Ok(count)
    }

    /// The caller's stock and current keys.
    pub async fn prekey_stock(&self, caller: &Principal) -> Result<Stock, Error> {
        caller.require_aal2()?;
        let identity = self.require_own_identity(&self.db, &caller.user_id).await?;
        let signed_prekey = signed_prekey::Entity::find_by_id(caller.user_id.clone())
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::failed_precondition("KEYS_NOT_PUBLISHED", "publish your key bundle first"))?;
        Ok(Stock {
            one_time_prekeys: self.stock_count(&self.db, &caller.user_id).await?,
            low_watermark: self.settings.prekey_low_watermark,
            identity_key_id: identity.key_id,
            signed_prekey,
        })
    }

    /// `user_id`'s bundle, consuming one one-time prekey when any is left. The caller must be
    /// allowed to write to the user (or be the user).
    ///
    /// The identity and signed prekey are read first, without the write lock. The one-time prekey
    /// is then claimed by a single `DELETE .. RETURNING` statement, which hands a row to at most
    /// one fetch (the one whose delete removed it) and only while the identity just read is still
    /// the current one: publishing a new identity deletes the old identity's prekeys in the same
    /// transaction, so a prekey claimed under that condition belongs to the returned identity. If
    /// the identity changed in between, the bundle is read again.
    pub async fn fetch_bundle(&self, caller: &Principal, user_id: &str) -> Result<Bundle, Error> {
        caller.require_aal2()?;
        if user_id.is_empty() {
            return Err(Error::invalid_argument("USER_ID_REQUIRED", "user_id is required"));
        }
        if user_id != caller.user_id {
            self.check_may_write(caller, user_id).await?;
        }
        for _attempt in 0..8 {
            // The signed prekey with the current identity that signed it, in one query.
            let found = signed_prekey::Entity::find_by_id(user_id.to_owned())
                .find_also_related(identity_key::Entity)
                .filter(identity_key::Column::Current.eq(true))
                .one(&self.db)
                .await?;
            let Some((signed_prekey, Some(identity))) = found else {
                // None published yet, or read while a new identity was being published.
                if self.current_identity(&self.db, user_id).await?.is_none() {
                    return Err(Error::not_found(
                        "KEYS_NOT_PUBLISHED",
                        format!("user {user_id} has not published keys yet: they need to sign in to messaging once"),
                    ));
                }
                if signed_prekey::Entity::find_by_id(user_id.to_owned())
                    .one(&self.db)
                    .await?
                    .is_none()
                {
                    return Err(Error::not_found(
                        "KEYS_NOT_PUBLISHED",
                        format!("user {user_id} has no signed prekey"),
                    ));
                }
                continue;
            };
            match self.claim_one_time_prekey(user_id, &identity.key_id).await? {
                Claim::Claimed(prekey) => {
                    return Ok(Bundle {
                        identity,
                        signed_prekey,
                        one_time_prekey: Some(prekey),
                    });
                }
                Claim::Empty => {
                    return Ok(Bundle {
                        identity,
                        signed_prekey,
                        one_time_prekey: None,
                    });
                }
                Claim::Retry => {}
            }
        }
        Err(Error::unavailable(
            "KEY_DIRECTORY_BUSY",
            format!("the key bundle of {user_id} is changing right now: try again"),
        ))
    }

    /// Claims (deletes and returns) `user_id`'s oldest one-time prekey, if `identity_key_id` is
    /// still their current identity.
    async fn claim_one_time_prekey(&self, user_id: &str, identity_key_id: &str) -> Result<Claim, Error> {
        let backend = self.db.get_database_backend();
        let sql = if backend == DbBackend::Postgres {
            // SKIP LOCKED: concurrent fetches take different prekeys instead of waiting.
            "DELETE FROM one_time_prekeys WHERE user_id = $1 AND key_id = (\
               SELECT key_id FROM one_time_prekeys WHERE user_id = $1 \
               ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             AND EXISTS (SELECT 1 FROM identity_keys \
               WHERE user_id = $1 AND key_id = $2 AND \"current\") \
             RETURNING user_id, key_id, public_key, created_at"
        } else {
            "DELETE FROM one_time_prekeys WHERE user_id = ?1 AND key_id = (\
               SELECT key_id FROM one_time_prekeys WHERE user_id = ?1 \
               ORDER BY key_id LIMIT 1) \
             AND EXISTS (SELECT 1 FROM identity_keys \
               WHERE user_id = ?1 AND key_id = ?2 AND \"current\") \
             RETURNING user_id, key_id, public_key, created_at"
        };
        let statement = Statement::from_sql_and_values(backend, sql, [user_id.into(), identity_key_id.into()]);
        let claimed = {
            // One autocommit statement; on SQLite it waits for this process's earlier writers.
            let _turn = self.write_turn().await;
            one_time_prekey::Entity::find()
                .from_raw_sql(statement)
                .one(&self.db)
                .await?
        };
        if let Some(prekey) = claimed {
            return Ok(Claim::Claimed(prekey));
        }
        // Nothing claimed: the stock is empty (or, on PostgreSQL, every prekey left is being
        // claimed by a concurrent fetch: as before, this fetch then goes without), or the
        // identity was replaced meanwhile.
        let current = self.current_identity(&self.db, user_id).await?;
        Ok(if current.is_some_and(|current| current.key_id == identity_key_id) {
            Claim::Empty
        } else {
            Claim::Retry
        })
    }

    /// A user's identity: the current one, or a specific (possibly replaced) one by key id.
    pub async fn identity(
        &self,
        caller: &Principal,
        user_id: &str,
        key_id: &str,
    ) -> Result<identity_key::Model, Error> {
        caller.require_aal2()?;
        let found = if key_id.is_empty() {
            self.current_identity(&self.db, user_id).await?
        } else {
            identity_key::Entity::find_by_id((user_id.to_owned(), key_id.to_owned()))
                .one(&self.db)
                .await?
        };
        found.ok_or_else(|| {
            Error::not_found(
                "IDENTITY_KEY_NOT_FOUND",
                format!(
                    "user {user_id} has no published identity key{}",
                    if key_id.is_empty() {
                        String::new()
                    } else {
                        format!(" with id {key_id}")
                    }
                ),
            )
        })
    }

    /// Current identities of up to 100 users, in request order (for other services).
    pub async fn batch_identities(&self, user_ids: &[String]) -> Result<Vec<identity_key::Model>, Error> {
        if user_ids.is_empty() || user_ids.len() > 100 {
            return Err(Error::invalid_argument("BATCH_SIZE", "ask for 1 to 100 users"));
        }
        let rows = identity_key::Entity::find()
            .filter(identity_key::Column::UserId.is_in(user_ids.iter().cloned()))
            .filter(identity_key::Column::Current.eq(true))
            .all(&self.db)
            .await?;
        Ok(user_ids
            .iter()
            .filter_map(|user_id| rows.iter().find(|row| &row.user_id == user_id).cloned())
            .collect())
    }
}

/// An identity as stored, re-verified (it was verified on upload).
pub(crate) fn verify_stored_identity(row: &identity_key::Model) -> Result<caremesh_crypto::IdentityPublicKey, Error> {
    caremesh_crypto::verify_identity(&identity_proto(row), &row.user_id)
        .map_err(|error| Error::internal("stored identity key no longer verifies", error))
}

/// The wire form of a stored identity (without its time, which the adapter adds).
pub fn identity_proto(row: &identity_key::Model) -> pb::IdentityKey {
    pb::IdentityKey {
        key_id: row.key_id.clone(),
        signing_public_key: row.signing_public_key.clone(),
        dh_public_key: row.dh_public_key.clone(),
        dh_public_key_signature: row.signature.clone(),
        create_time: None,
    }
}
