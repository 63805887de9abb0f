//! Signed checkpoints: the Ed25519 signing key (generated on first start, sealed under the
//! key-encryption key with purpose [`KEY_PURPOSE`], stored in the database, shared by replicas),
//! signing a C2SP checkpoint of the current tree, reading stored ones, and the background task that
//! signs one on a cadence while the tree grows.

use std::sync::Arc;
use std::time::Duration;

use caremesh_proto::audit::v1 as pb;
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::kek::Kek;
use caremesh_runtime::{Error, time};
use caremesh_tlog::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use ed25519_dalek::SigningKey;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, Set};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::storage::{checkpoint, signing_key};
use crate::tree;

/// The KEK purpose the checkpoint signing key is sealed under.
pub const KEY_PURPOSE: &str = "audit/checkpoint-key";

/// Signs and serves checkpoints.
#[derive(Clone)]
pub struct Checkpointer {
    db: DatabaseConnection,
    clock: SharedClock,
    origin: String,
    signer: Arc<NoteSigner>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Opens the sealed signing key of a stored key row.
pub(crate) fn open_key(kek: &Kek, row: &signing_key::Model) -> Result<NoteSigner, Error> {
    let secret = kek
        .open(KEY_PURPOSE, &row.sealed_secret)
        .map_err(|error| Error::internal("opening the checkpoint signing key", error))?;
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
        secret
            .as_slice()
            .try_into()
            .map_err(|_| Error::internal("opening the checkpoint signing key", "sealed key is not 32 bytes"))?,
    );
    let key = SigningKey::from_bytes(&bytes);
    if key.verifying_key().as_bytes().as_slice() != row.public_key.as_slice() {
        return Err(Error::internal(
            "opening the checkpoint signing key",
            "the sealed key does not match the stored public key",
        ));
    }
    NoteSigner::new(row.key_name.clone(), key)
        .map_err(|error| Error::internal("opening the checkpoint signing key", error))
}

impl Checkpointer {
    /// Loads the signing key, generating and storing it on first start.
    pub async fn open(db: DatabaseConnection, clock: SharedClock, kek: &Kek, origin: &str) -> Result<Self, Error> {
        let row = match signing_key::Entity::find_by_id(1).one(&db).await? {
            Some(row) => row,
            None => {
                let mut seed = Zeroizing::new([0u8; 32]);
                getrandom::fill(seed.as_mut_slice())
                    .map_err(|error| Error::internal("generating the checkpoint signing key", error))?;
                let key = SigningKey::from_bytes(&seed);
                let sealed = kek
                    .seal(KEY_PURPOSE, seed.as_slice())
                    .map_err(|error| Error::internal("sealing the checkpoint signing key", error))?;
                // Two replicas starting at once: one row wins, both use it.
                signing_key::Entity::insert(signing_key::ActiveModel {
                    id: Set(1),
                    key_name: Set(origin.to_owned()),
                    public_key: Set(key.verifying_key().as_bytes().to_vec()),
                    sealed_secret: Set(sealed),
                    created_at: Set(clock.now()),
                })
                .on_conflict_do_nothing_on([signing_key::Column::Id])
                .exec_without_returning(&db)
                .await?;
                signing_key::Entity::find_by_id(1)
                    .one(&db)
                    .await?
                    .ok_or_else(|| Error::internal("storing the checkpoint signing key", "the key row vanished"))?
            }
        };
        let signer = open_key(kek, &row)?;
        Ok(Self {
            db,
            clock,
            origin: origin.to_owned(),
            signer: Arc::new(signer),
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// Signs a checkpoint of the current tree, unless the latest one already covers it (then
    /// returns that one).
    pub async fn create(&self) -> Result<pb::Checkpoint, Error> {
        let size = tree::tree_size(&self.db, false).await?;
        if let Some(latest) = self.latest_row(&self.db).await?
            && tree::to_u64(latest.tree_size)? >= size
        {
            return to_proto(&self.origin, latest);
        }
        let root = tree::root(&self.db, size).await?;
        let note = self.signer.sign(&Checkpoint::new(self.origin.clone(), size, root));
        checkpoint::Entity::insert(checkpoint::ActiveModel {
            tree_size: Set(tree::to_i64(size)?),
            root_hash: Set(root.to_vec()),
            signed_note: Set(note),
            created_at: Set(self.clock.now()),
        })
        .on_conflict_do_nothing_on([checkpoint::Column::TreeSize])
        .exec_without_returning(&self.db)
        .await?;
        self.stored(size).await
    }

    async fn latest_row<C: ConnectionTrait>(&self, conn: &C) -> Result<Option<checkpoint::Model>, Error> {
        Ok(checkpoint::Entity::find()
            .order_by_desc(checkpoint::Column::TreeSize)
            .one(conn)
            .await?)
    }

    /// The latest checkpoint, signing one first if there is none yet.
    pub async fn latest(&self) -> Result<pb::Checkpoint, Error> {
        match self.latest_row(&self.db).await? {
            Some(row) => to_proto(&self.origin, row),
            None => self.create().await,
        }
    }

    /// The stored checkpoint of `size` leaves (0: the latest).
    pub async fn get(&self, size: u64) -> Result<pb::Checkpoint, Error> {
        if size == 0 {
            return self.latest().await;
        }
        self.stored(size).await
    }

    async fn stored(&self, size: u64) -> Result<pb::Checkpoint, Error> {
        let row = checkpoint::Entity::find_by_id(tree::to_i64(size)?)
            .one(&self.db)
            .await?
            .ok_or_else(|| {
                Error::not_found(
                    "CHECKPOINT_NOT_FOUND",
                    format!("there is no checkpoint of tree size {size}: ask for 0 (the latest) or a size a checkpoint was signed at"),
                )
            })?;
        to_proto(&self.origin, row)
    }

    /// Signs a checkpoint every `interval` while the tree grows, until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    if let Err(error) = self.create().await {
                        tracing::warn!(reason = error.reason(), "signing a checkpoint failed; retrying");
                    }
                }
            }
        }
    }
}

pub(crate) fn to_proto(origin: &str, row: checkpoint::Model) -> Result<pb::Checkpoint, Error> {
    // The origin the note was signed with (the setting may have changed since).
    let signed_origin = row.signed_note.split('\n').next().unwrap_or(origin).to_owned();
    Ok(pb::Checkpoint {
        origin: signed_origin,
        tree_size: tree::to_u64(row.tree_size)?,
        root_hash: row.root_hash,
        signed_note: row.signed_note,
        create_time: Some(time::to_timestamp(row.created_at)),
    })
}
