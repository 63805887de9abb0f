//! Attachment bookkeeping over the [`BlobStore`](crate::blob::BlobStore), shared by the services
//! that keep attachments (`docs/protocol.md` §13): which blob belongs to which parent (a message,
//! a record) and which user, how long it is declared to be, whether it is complete, the per-user
//! quota, and deletion that survives a crash between the database and the blob store.
//!
//! Who may read an attachment is the calling service's business (the parent's access rules);
//! this module only knows the owner, who alone uploads.
//!
//! Deletion is two-phase: a parent's removal marks its attachments `deleted_at` in the parent's
//! own transaction ([`Attachments::mark_deleted`]), and [`Attachments::sweep`] later removes the
//! blobs and then the rows, so a crash in between leaves rows that the next sweep finishes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect, Set,
};
use sea_orm_migration::prelude::{
    DbErr, Iden, IntoIden, IntoTableRef, MigrationName, MigrationTrait, SchemaManager, Table,
};
use sea_orm_migration::schema::{
    big_integer, boolean, string, timestamp_with_time_zone, timestamp_with_time_zone_null,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use caremesh_proto::audit::v1::AuditEvent;

use crate::ServiceName;
use crate::blob::{BlobStore, MAX_PIECE_LEN, create_blob_pieces_table, drop_blob_pieces_table};
use crate::config::{ConfigError, EnvSource, bounded_u32, service_key};
use crate::db::Writer;
use crate::error::Error;
use crate::ids::check_uuid_v7;
use crate::outbox::Outbox;

/// The `attachments` table.
pub mod attachment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "attachments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub attachment_id: String,
        /// The message or record that names it.
        pub parent_id: String,
        pub owner_user_id: String,
        /// The declared blob length.
        pub blob_len: i64,
        pub complete: bool,
        pub created_at: DateTimeUtc,
        /// Set when its parent went (recall, lifespan, orphan): the blob is about to be removed.
        pub deleted_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Limits of a service's attachments (each service reads them from its own settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachmentLimits {
    /// The largest blob (a 100 MiB file is `100 MiB + 16 bytes per 64 KiB chunk`).
    pub max_blob_len: u64,
    /// The most blob bytes one user may keep in this service.
    pub quota_per_user: u64,
    /// How long an attachment may wait for its parent before it is removed.
    pub orphan_ttl: Duration,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        Self {
            max_blob_len: blob_len_of_file(100 << 20),
            quota_per_user: 2 << 30,
            orphan_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl AttachmentLimits {
    /// The defaults, overridden by `CAREMESH_<SERVICE>_ATTACHMENT_MAX_MIB` (the largest file),
    /// `_ATTACHMENT_QUOTA_MIB` (each user's quota) and `_ATTACHMENT_ORPHAN_HOURS` (how long an
    /// attachment waits for its parent) when set.
    pub fn from_env(env: &dyn EnvSource, service: ServiceName) -> Result<Self, ConfigError> {
        let mut limits = Self::default();
        let key = |suffix| service_key(service, suffix);
        if let Some(mib) = bounded_u32(env, &key("ATTACHMENT_MAX_MIB"), 1, 1024, "1 to 1024 MiB")? {
            limits.max_blob_len = blob_len_of_file(u64::from(mib) << 20);
        }
        if let Some(mib) = bounded_u32(env, &key("ATTACHMENT_QUOTA_MIB"), 1, 1 << 20, "1 to 1048576 MiB")? {
            limits.quota_per_user = u64::from(mib) << 20;
        }
        if let Some(hours) = bounded_u32(env, &key("ATTACHMENT_ORPHAN_HOURS"), 1, 720, "1 to 720 hours")? {
            limits.orphan_ttl = Duration::from_secs(u64::from(hours) * 3600);
        }
        Ok(limits)
    }
}

/// The blob length of a file of `file_len` bytes (`docs/protocol.md` §13.1).
pub fn blob_len_of_file(file_len: u64) -> u64 {
    const CHUNK: u64 = 64 * 1024;
    const TAG: u64 = 16;
    file_len + TAG * file_len.div_ceil(CHUNK).max(1)
}

/// An attachment with how much of it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentView {
    pub row: attachment::Model,
    pub stored_len: u64,
}

impl AttachmentView {
    pub fn blob_len(&self) -> u64 {
        u64::try_from(self.row.blob_len).unwrap_or(0)
    }
}

/// A service's attachments; cheap to clone.
#[derive(Clone, Debug)]
pub struct Attachments {
    db: DatabaseConnection,
    writer: Writer,
    outbox: Outbox,
    blobs: BlobStore,
    limits: AttachmentLimits,
}

/// What [`Attachments::create`] reserves.
#[derive(Clone, Copy, Debug)]
pub struct NewAttachment<'a> {
    pub owner: &'a str,
    pub attachment_id: &'a str,
    pub parent_id: &'a str,
    pub blob_len: u64,
    pub now: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct Total {
    total: Option<i64>,
}

impl Attachments {
    pub fn new(
        db: DatabaseConnection,
        writer: Writer,
        outbox: Outbox,
        blobs: BlobStore,
        limits: AttachmentLimits,
    ) -> Self {
        Self {
            db,
            writer,
            outbox,
            blobs,
            limits,
        }
    }

    pub fn limits(&self) -> AttachmentLimits {
        self.limits
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Reserves an attachment within the owner's quota and records `event` in the same
    /// transaction. The same reservation again returns what is stored (so a client that lost the
    /// answer can retry); a different one under a taken id is ALREADY_EXISTS.
    pub async fn create(&self, new: NewAttachment<'_>, event: &AuditEvent) -> Result<AttachmentView, Error> {
        let NewAttachment {
            owner,
            attachment_id,
            parent_id,
            blob_len,
            now,
        } = new;
        check_uuid_v7(attachment_id, "attachment_id")?;
        let max = self.limits.max_blob_len;
        if blob_len < 16 {
            return Err(Error::invalid_argument(
                "ATTACHMENT_LENGTH_INVALID",
                "blob_length must be at least 16 bytes (an empty file's blob is one 16-byte tag)",
            ));
        }
        if blob_len > max {
            return Err(Error::invalid_argument(
                "ATTACHMENT_TOO_LARGE",
                format!("an attachment's blob may be at most {max} bytes; this one is {blob_len}: send a smaller file"),
            ));
        }
        let signed_len = i64::try_from(blob_len)
            .map_err(|_| Error::invalid_argument("ATTACHMENT_TOO_LARGE", "blob_length is too large"))?;
        let (_turn, txn) = self.writer.begin().await?;
        if let Some(existing) = attachment::Entity::find_by_id(attachment_id).one(&txn).await? {
            drop(txn);
            let same = existing.owner_user_id == owner
                && existing.parent_id == parent_id
                && existing.blob_len == signed_len
                && existing.deleted_at.is_none();
            if !same {
                return Err(Error::already_exists(
                    "ATTACHMENT_EXISTS",
                    format!("attachment {attachment_id} exists with other details: choose a new attachment id"),
                ));
            }
            return self.view(existing).await;
        }
        let used = attachment::Entity::find()
            .select_only()
            // SUM of a bigint is numeric on PostgreSQL: cast back.
            .column_as(Expr::cust("CAST(COALESCE(SUM(blob_len), 0) AS BIGINT)"), "total")
            .filter(attachment::Column::OwnerUserId.eq(owner))
            .filter(attachment::Column::DeletedAt.is_null())
            .into_model::<Total>()
            .one(&txn)
            .await?
            .and_then(|total| total.total)
            .and_then(|total| u64::try_from(total).ok())
            .unwrap_or(0);
        let quota = self.limits.quota_per_user;
        if used.saturating_add(blob_len) > quota {
            return Err(Error::resource_exhausted(
                "ATTACHMENT_QUOTA_EXCEEDED",
                format!(
                    "your attachments use {used} of {quota} bytes and this one needs {blob_len} more: \
                     recall messages with attachments you no longer need, or send a smaller file"
                ),
                Duration::ZERO,
            ));
        }
        let row = attachment::ActiveModel {
            attachment_id: Set(attachment_id.to_owned()),
            parent_id: Set(parent_id.to_owned()),
            owner_user_id: Set(owner.to_owned()),
            blob_len: Set(signed_len),
            complete: Set(false),
            created_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await?;
        self.outbox.record(&txn, event).await?;
        txn.commit().await?;
        self.outbox.wake_relay();
        Ok(AttachmentView { row, stored_len: 0 })
    }

    /// The attachment (one not being deleted), if there is one.
    pub async fn find(&self, attachment_id: &str) -> Result<Option<attachment::Model>, Error> {
        Ok(attachment::Entity::find_by_id(attachment_id)
            .filter(attachment::Column::DeletedAt.is_null())
            .one(&self.db)
            .await?)
    }

    /// The attachment, or NOT_FOUND `ATTACHMENT_NOT_FOUND`.
    pub async fn get(&self, attachment_id: &str) -> Result<attachment::Model, Error> {
        self.find(attachment_id).await?.ok_or_else(|| {
            Error::not_found(
                "ATTACHMENT_NOT_FOUND",
                format!("no attachment {attachment_id}: check the id, or it was deleted with its message"),
            )
        })
    }

    /// `row` with its stored length.
    pub async fn view(&self, row: attachment::Model) -> Result<AttachmentView, Error> {
        let stored_len = self.blobs.len(blob_id(&row.attachment_id)?).await?;
        Ok(AttachmentView { row, stored_len })
    }

    /// Appends `data` at `offset` to an attachment `owner` created; the last piece completes it.
    pub async fn append(
        &self,
        owner: &str,
        attachment_id: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<AttachmentView, Error> {
        let row = self.get(attachment_id).await?;
        if row.owner_user_id != owner {
            return Err(Error::permission_denied(
                "NOT_THE_UPLOADER",
                "only the user who created an attachment uploads it",
            ));
        }
        let blob_len = u64::try_from(row.blob_len).unwrap_or(0);
        if row.complete {
            return Err(Error::failed_precondition(
                "ATTACHMENT_COMPLETE",
                format!("attachment {attachment_id} is complete ({blob_len} bytes): nothing more to upload"),
            ));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > blob_len {
            return Err(Error::invalid_argument(
                "ATTACHMENT_OVERFLOW",
                format!("this piece ends at byte {end}, past the declared blob length {blob_len}"),
            ));
        }
        let id = blob_id(attachment_id)?;
        let stored_len = self.blobs.append(id, offset, data).await?;
        let mut row = row;
        if stored_len == blob_len {
            let _turn = self.writer.turn().await;
            attachment::Entity::update_many()
                .col_expr(attachment::Column::Complete, Expr::value(true))
                .filter(attachment::Column::AttachmentId.eq(attachment_id))
                .exec(&self.db)
                .await?;
            row.complete = true;
        }
        Ok(AttachmentView { row, stored_len })
    }

    /// The blob of a complete attachment from `offset`, piece by piece (at most 1 MiB each, two
    /// pieces ahead of the reader at most, so memory stays bounded whatever the blob's size).
    pub fn download(
        &self,
        row: &attachment::Model,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<(u64, Vec<u8>), Error>> + Send + use<>, Error> {
        if !row.complete {
            return Err(Error::failed_precondition(
                "ATTACHMENT_INCOMPLETE",
                "this attachment's upload has not finished: try again once the sender's upload is done",
            ));
        }
        let blob_len = u64::try_from(row.blob_len).unwrap_or(0);
        if offset > blob_len {
            return Err(Error::invalid_argument(
                "OFFSET_PAST_END",
                format!("offset {offset} is past the blob's end ({blob_len} bytes)"),
            ));
        }
        let id = blob_id(&row.attachment_id)?;
        let blobs = self.blobs.clone();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut at = offset;
            while at < blob_len {
                let piece = match blobs.read(id, at, MAX_PIECE_LEN).await {
                    Ok(piece) if piece.is_empty() => Err(Error::internal(
                        "reading an attachment",
                        "the stored blob is shorter than its declared length",
                    )),
                    other => other,
                };
                let failed = piece.is_err();
                let len = piece.as_ref().map(Vec::len).unwrap_or(0) as u64;
                if tx.send(piece.map(|piece| (at, piece))).await.is_err() || failed {
                    return;
                }
                at += len;
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Inside the transaction that removes them: marks the attachments of `parents` deleted.
    pub async fn mark_deleted<C: ConnectionTrait>(
        &self,
        conn: &C,
        parents: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, Error> {
        if parents.is_empty() {
            return Ok(0);
        }
        let mut marked = 0;
        // Bounded IN lists: SQLite allows a limited number of variables per statement.
        for batch in parents.chunks(500) {
            marked += attachment::Entity::update_many()
                .col_expr(attachment::Column::DeletedAt, Expr::value(now))
                .filter(attachment::Column::ParentId.is_in(batch.iter().cloned()))
                .filter(attachment::Column::DeletedAt.is_null())
                .exec(conn)
                .await?
                .rows_affected;
        }
        Ok(marked)
    }

    /// Marks deleted the attachments older than the orphan time whose parent is not in
    /// `parent_table.parent_column` (the upload was never followed by its message or record).
    pub async fn mark_orphans<T: Iden + 'static, C: Iden + 'static>(
        &self,
        parent_table: T,
        parent_column: C,
        now: DateTime<Utc>,
    ) -> Result<u64, Error> {
        let cutoff = now - chrono::TimeDelta::from_std(self.limits.orphan_ttl).unwrap_or(chrono::TimeDelta::days(1));
        let _turn = self.writer.turn().await;
        Ok(attachment::Entity::update_many()
            .col_expr(attachment::Column::DeletedAt, Expr::value(now))
            .filter(attachment::Column::DeletedAt.is_null())
            .filter(attachment::Column::CreatedAt.lt(cutoff))
            .filter(
                attachment::Column::ParentId
                    .not_in_subquery(Query::select().column(parent_column).from(parent_table).to_owned()),
            )
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// Removes the blobs of attachments marked deleted, then their rows; returns how many.
    pub async fn sweep(&self) -> Result<u64, Error> {
        let marked = attachment::Entity::find()
            .filter(attachment::Column::DeletedAt.is_not_null())
            .limit(1000)
            .all(&self.db)
            .await?;
        let mut removed = 0;
        for row in marked {
            self.blobs.delete(blob_id(&row.attachment_id)?).await?;
            let _turn = self.writer.turn().await;
            attachment::Entity::delete_by_id(row.attachment_id)
                .exec(&self.db)
                .await?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn blob_id(attachment_id: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(attachment_id).map_err(|_| {
        Error::invalid_argument(
            "INVALID_ID",
            format!("attachment_id must be a UUIDv7, got {attachment_id:?}"),
        )
    })
}

/// The migration of a service that keeps attachments: the `attachments` table and the blob
/// store's `blob_pieces` table.
pub struct CreateAttachmentTables;

impl MigrationName for CreateAttachmentTables {
    fn name(&self) -> &str {
        "m20261203_000001_create_attachment_tables"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateAttachmentTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use attachment::{Column, Entity};
        manager
            .create_table(
                Table::create()
                    .table(Entity)
                    .if_not_exists()
                    .col(string(Column::AttachmentId).primary_key())
                    .col(string(Column::ParentId))
                    .col(string(Column::OwnerUserId))
                    .col(big_integer(Column::BlobLen))
                    .col(boolean(Column::Complete))
                    .col(timestamp_with_time_zone(Column::CreatedAt))
                    .col(timestamp_with_time_zone_null(Column::DeletedAt))
                    .to_owned(),
            )
            .await?;
        crate::migration::create_index(
            manager,
            "idx_attachments_parent",
            Entity.into_table_ref(),
            vec![Column::ParentId.into_iden()],
            false,
        )
        .await?;
        crate::migration::create_index(
            manager,
            "idx_attachments_owner",
            Entity.into_table_ref(),
            vec![Column::OwnerUserId.into_iden()],
            false,
        )
        .await?;
        create_blob_pieces_table(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_blob_pieces_table(manager).await?;
        crate::migration::drop_tables(manager, [attachment::Entity.into_table_ref()]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_lengths_follow_the_chunking() {
        assert_eq!(blob_len_of_file(0), 16);
        assert_eq!(blob_len_of_file(1), 17);
        assert_eq!(blob_len_of_file(65_536), 65_552);
        assert_eq!(blob_len_of_file(65_537), 65_537 + 32);
        assert_eq!(blob_len_of_file(100 << 20), 104_857_600 + 16 * 1600);
    }
}
