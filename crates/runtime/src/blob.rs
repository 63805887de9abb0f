//! The blob store: encrypted attachment blobs (`docs/protocol.md` §13), written and read in pieces
//! of at most [`MAX_PIECE_LEN`] bytes, never whole in memory, whatever the blob's size.
//!
//! - **Files** on the embedded default (SQLite): one file per blob under `<database>.blobs/`
//!   beside the service's SQLite file (each service its own), appended piece by piece and synced
//!   after each piece, so that an interrupted upload resumes from what reached the disk.
//! - **Rows** in PostgreSQL: one row per piece in the service's own `blob_pieces` table
//!   ([`create_blob_pieces_table`] in its migrations), so that blobs live, replicate and are
//!   backed up with the rest of the service's data.
//!
//! A blob is appended at its current end only ([`BlobStore::append`] takes the offset the writer
//! believes it is at, and refuses another), which makes resuming exact: ask [`BlobStore::len`],
//! send from there. What a blob *means* (whose it is, whether it is complete, who may read it)
//! is the calling service's business; this module stores bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::prelude::{ColumnDef, DbErr, DeriveIden, Index, IntoTableRef, SchemaManager, Table};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::error::Error;

/// The largest piece [`BlobStore::append`] takes and [`BlobStore::read`] returns: 1 MiB.
pub const MAX_PIECE_LEN: usize = 1 << 20;

/// Appends to one blob are serialized; appends to different blobs mostly are not.
const APPEND_LOCKS: usize = 32;

/// Where a service's blobs live; cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    backend: Backend,
    append_locks: Arc<[Mutex<()>; APPEND_LOCKS]>,
}

#[derive(Clone, Debug)]
enum Backend {
    Files(PathBuf),
    Rows(DatabaseConnection),
}

impl BlobStore {
    /// The store that goes with the service's database: rows in PostgreSQL; files in the
    /// directory named after the SQLite file at `database_url` (`messaging.db` keeps its blobs in
    /// `messaging.blobs/`, so services whose databases share a directory never share blobs), or
    /// `blobs` under `fallback_dir` for an in-memory SQLite database.
    pub fn for_database(db: &DatabaseConnection, database_url: &str, fallback_dir: &Path) -> Self {
        let backend = match db.get_database_backend() {
            DbBackend::Postgres => Backend::Rows(db.clone()),
            _ => {
                let dir = crate::db::sqlite_path(database_url)
                    .map(|path| Path::new(path).with_extension("blobs"))
                    .unwrap_or_else(|| fallback_dir.join("blobs"));
                Backend::Files(dir)
            }
        };
        Self::new(backend)
    }

    /// The store of the service `config` describes, on its database `db` (what the service itself
    /// uses, and what backup and tests open beside it).
    pub fn for_service(config: &crate::config::ServiceConfig, db: &DatabaseConnection) -> Self {
        Self::for_database(db, &config.database.url, &config.data_dir.join(config.service.as_str()))
    }

    /// Files under `dir` (created when the first blob is written).
    pub fn files(dir: impl Into<PathBuf>) -> Self {
        Self::new(Backend::Files(dir.into()))
    }

    fn new(backend: Backend) -> Self {
        Self {
            backend,
            append_locks: Arc::new(std::array::from_fn(|_| Mutex::new(()))),
        }
    }

    /// How many bytes of `id` are stored (0 for a blob never written).
    pub async fn len(&self, id: Uuid) -> Result<u64, Error> {
        match &self.backend {
            Backend::Files(dir) => match tokio::fs::metadata(blob_path(dir, id)).await {
                Ok(metadata) => Ok(metadata.len()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(error) => Err(Error::internal("reading a blob's size", error)),
            },
            Backend::Rows(db) => {
                let row = db
                    .query_one_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        // The last piece's end (one step down the key's index), not a sum of all.
                        "SELECT (start_offset + length(data))::bigint AS len FROM blob_pieces WHERE blob_id = $1 \
                         ORDER BY start_offset DESC LIMIT 1",
                        [id.into()],
                    ))
                    .await
                    .map_err(|error| Error::internal("reading a blob's size", error))?;
                let len: i64 = match row {
                    Some(row) => row
                        .try_get("", "len")
                        .map_err(|error| Error::internal("reading a blob's size", error))?,
                    None => 0,
                };
                Ok(u64::try_from(len).unwrap_or(0))
            }
        }
    }

    /// Appends `piece` (at most [`MAX_PIECE_LEN`] bytes) at `offset`, which must be the blob's
    /// current length; returns the new length. Another offset is FAILED_PRECONDITION
    /// `BLOB_OFFSET_MISMATCH`, with the stored length in the message and metadata, so the
    /// writer can resume from there.
    pub async fn append(&self, id: Uuid, offset: u64, piece: &[u8]) -> Result<u64, Error> {
        if piece.len() > MAX_PIECE_LEN {
            return Err(Error::invalid_argument(
                "PIECE_TOO_LARGE",
                format!(
                    "a piece of {} bytes: send at most {MAX_PIECE_LEN} bytes at a time",
                    piece.len()
                ),
            ));
        }
        let lock = self
            .append_locks
            .get(lock_index(id))
            .ok_or_else(|| Error::internal("blob append lock", "no lock for this blob"))?;
        let _turn = lock.lock().await;
        let stored = self.len(id).await?;
        if stored != offset {
            return Err(Error::failed_precondition(
                "BLOB_OFFSET_MISMATCH",
                format!("{stored} bytes of this blob are stored: continue from offset {stored}, not {offset}"),
            )
            .with_metadata("stored_len", stored.to_string()));
        }
        if piece.is_empty() {
            return Ok(stored);
        }
        match &self.backend {
            Backend::Files(dir) => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|error| Error::internal("creating the blob directory", error))?;
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(blob_path(dir, id))
                    .await
                    .map_err(|error| Error::internal("opening a blob", error))?;
                file.write_all(piece)
                    .await
                    .map_err(|error| Error::internal("writing a blob", error))?;
                // Synced before the writer hears "stored": a resumed upload never skips bytes
                // that a crash lost.
                file.sync_data()
                    .await
                    .map_err(|error| Error::internal("syncing a blob", error))?;
            }
            Backend::Rows(db) => {
                db.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO blob_pieces (blob_id, start_offset, data) VALUES ($1, $2, $3)",
                    [
                        id.into(),
                        i64::try_from(offset).unwrap_or(i64::MAX).into(),
                        piece.to_vec().into(),
                    ],
                ))
                .await
                .map_err(|error| Error::internal("writing a blob piece", error))?;
            }
        }
        Ok(stored + piece.len() as u64)
    }

    /// Up to `max` bytes (at most [`MAX_PIECE_LEN`]) of `id` from `offset`; empty at the end.
    pub async fn read(&self, id: Uuid, offset: u64, max: usize) -> Result<Vec<u8>, Error> {
        let max = max.min(MAX_PIECE_LEN);
        match &self.backend {
            Backend::Files(dir) => {
                let mut file = match tokio::fs::File::open(blob_path(dir, id)).await {
                    Ok(file) => file,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(error) => return Err(Error::internal("opening a blob", error)),
                };
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|error| Error::internal("reading a blob", error))?;
                let mut out = Vec::with_capacity(max);
                file.take(max as u64)
                    .read_to_end(&mut out)
                    .await
                    .map_err(|error| Error::internal("reading a blob", error))?;
                Ok(out)
            }
            Backend::Rows(db) => {
                // The piece that holds `offset`, from there to its end.
                let row = db
                    .query_one_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "SELECT start_offset, data FROM blob_pieces WHERE blob_id = $1 AND start_offset <= $2 \
                         ORDER BY start_offset DESC LIMIT 1",
                        [id.into(), i64::try_from(offset).unwrap_or(i64::MAX).into()],
                    ))
                    .await
                    .map_err(|error| Error::internal("reading a blob piece", error))?;
                let Some(row) = row else { return Ok(Vec::new()) };
                let start: i64 = row
                    .try_get("", "start_offset")
                    .map_err(|error| Error::internal("reading a blob piece", error))?;
                let data: Vec<u8> = row
                    .try_get("", "data")
                    .map_err(|error| Error::internal("reading a blob piece", error))?;
                let skip =
                    usize::try_from(offset.saturating_sub(u64::try_from(start).unwrap_or(0))).unwrap_or(usize::MAX);
                Ok(data
                    .get(skip..)
                    .map(|rest| rest.iter().take(max).copied().collect())
                    .unwrap_or_default())
            }
        }
    }

    /// SHA-256 of everything stored for `id`, read piece by piece.
    pub async fn digest(&self, id: Uuid) -> Result<[u8; 32], Error> {
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        loop {
            let piece = self.read(id, offset, MAX_PIECE_LEN).await?;
            if piece.is_empty() {
                return Ok(hasher.finalize().into());
            }
            hasher.update(&piece);
            offset += piece.len() as u64;
        }
    }

    /// The ids of every stored blob.
    pub async fn ids(&self) -> Result<Vec<Uuid>, Error> {
        match &self.backend {
            Backend::Files(dir) => {
                let mut entries = match tokio::fs::read_dir(dir).await {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(error) => return Err(Error::internal("listing blobs", error)),
                };
                let mut ids = Vec::new();
                while let Some(entry) = entries
                    .next_entry()
                    .await
                    .map_err(|error| Error::internal("listing blobs", error))?
                {
                    let name = entry.file_name();
                    let id = name
                        .to_str()
                        .and_then(|name| name.strip_suffix(".blob"))
                        .and_then(|id| Uuid::try_parse(id).ok());
                    ids.extend(id);
                }
                ids.sort();
                Ok(ids)
            }
            Backend::Rows(db) => {
                let rows = db
                    .query_all_raw(Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT DISTINCT blob_id FROM blob_pieces ORDER BY blob_id",
                    ))
                    .await
                    .map_err(|error| Error::internal("listing blobs", error))?;
                rows.iter()
                    .map(|row| row.try_get::<Uuid>("", "blob_id"))
                    .collect::<Result<_, _>>()
                    .map_err(|error| Error::internal("listing blobs", error))
            }
        }
    }

    /// Deletes `id` (nothing happens for a blob that does not exist).
    pub async fn delete(&self, id: Uuid) -> Result<(), Error> {
        match &self.backend {
            Backend::Files(dir) => match tokio::fs::remove_file(blob_path(dir, id)).await {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(Error::internal("deleting a blob", error)),
            },
            Backend::Rows(db) => db
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "DELETE FROM blob_pieces WHERE blob_id = $1",
                    [id.into()],
                ))
                .await
                .map(|_| ())
                .map_err(|error| Error::internal("deleting a blob", error)),
        }
    }

    /// The directory of the files backend (backups copy it), `None` for rows.
    pub fn files_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Files(dir) => Some(dir),
            Backend::Rows(_) => None,
        }
    }
}

fn blob_path(dir: &Path, id: Uuid) -> PathBuf {
    // The id's canonical hyphenated form: no path separators, nothing a caller chose.
    dir.join(format!("{}.blob", id.hyphenated()))
}

fn lock_index(id: Uuid) -> usize {
    id.as_bytes().iter().fold(0usize, |acc, byte| {
        acc.wrapping_mul(31).wrapping_add(usize::from(*byte))
    }) % APPEND_LOCKS
}

#[derive(DeriveIden)]
enum BlobPieces {
    Table,
    BlobId,
    StartOffset,
    Data,
}

/// The `blob_pieces` table of a service that stores blobs (used on PostgreSQL; created on SQLite
/// too, where it stays empty, so that both schemas match).
pub async fn create_blob_pieces_table(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(BlobPieces::Table)
                .if_not_exists()
                .col(ColumnDef::new(BlobPieces::BlobId).uuid().not_null())
                .col(ColumnDef::new(BlobPieces::StartOffset).big_integer().not_null())
                .col(ColumnDef::new(BlobPieces::Data).binary().not_null())
                .primary_key(Index::create().col(BlobPieces::BlobId).col(BlobPieces::StartOffset))
                .to_owned(),
        )
        .await
}

/// Drops the `blob_pieces` table (a migration's `down`).
pub async fn drop_blob_pieces_table(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    crate::migration::drop_tables(manager, [BlobPieces::Table.into_table_ref()]).await
}
