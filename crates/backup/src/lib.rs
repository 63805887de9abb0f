//! Backup and restore of every caremesh service's database (DESIGN.md §1, HIPAA 164.308(a)(7)).
//!
//! A backup is a logical snapshot: each service's tables are listed from the catalog and read in
//! one read transaction per service (REPEATABLE READ on PostgreSQL, a WAL snapshot on SQLite),
//! while the services keep running. Rows are typed cells, so a backup taken on SQLite restores
//! onto PostgreSQL and the other way round. Secrets stay sealed under the key-encryption key
//! exactly as the services stored them; the KEK itself is not in the archive and must be kept
//! (and supplied to restore) separately.
//!
//! The snapshot is JSON lines (a manifest, then one line per row), compressed, encrypted and
//! signed ([`archive`]). Restore verifies the signature and decodes the whole archive before it
//! touches a database, migrates the targets, refuses non-empty ones unless forced, and writes each
//! service in one transaction. Attachment blobs are in the archive as `blob_pieces` rows whatever
//! the backend (on SQLite they are read from and written back to their files).

pub mod archive;
pub mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use caremesh_runtime::ServiceName;
use caremesh_runtime::blob::{BlobStore, MAX_PIECE_LEN};
use caremesh_runtime::config::ServiceConfig;
use sea_orm::{AccessMode, ConnectionTrait, DbBackend, DbErr, IsolationLevel, TransactionTrait};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use archive::ArchiveError;
use tables::{Cell, Column, MIGRATIONS_TABLE};

const FORMAT: u32 = 1;

/// The blob store's table (`caremesh_runtime::blob`). On PostgreSQL the blobs are its rows. On
/// SQLite they are files beside the database: a backup reads them into this table's rows, and a
/// restore onto SQLite writes those rows back as files, so an archive is the same whichever
/// backend made it or receives it.
const BLOB_PIECES: &str = "blob_pieces";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the key-encryption key {path}: {cause}")]
    KekRead { path: PathBuf, cause: std::io::Error },
    #[error("the key-encryption key {path} is malformed: expected 64 hex characters (32 bytes)")]
    KekMalformed { path: PathBuf },
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("cannot write {path}: {cause}")]
    Write { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {cause}")]
    Archive { path: PathBuf, cause: ArchiveError },
    #[error("{service}: database error: {cause}")]
    Database { service: ServiceName, cause: DbErr },
    #[error(
        "{service}: the database is not empty ({table} holds {rows} rows); restore only into empty \
         databases, or pass --force to replace their contents"
    )]
    NotEmpty {
        service: ServiceName,
        table: String,
        rows: u64,
    },
    #[error("{service}: the backup does not fit this caremesh's schema: {message}")]
    Incompatible { service: ServiceName, message: String },
    #[error("the backup names no database for {0}")]
    Missing(ServiceName),
}

/// What a backup or restore wrote for one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCount {
    pub service: String,
    pub tables: usize,
    pub rows: u64,
}

#[derive(Clone, Debug)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Hex SHA-256 of the archive file.
    pub sha256: String,
    pub created_at: String,
    pub services: Vec<ServiceCount>,
}

#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub created_at: String,
    pub services: Vec<ServiceCount>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    created_at: String,
    caremesh_version: String,
    services: Vec<ServiceManifest>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ServiceManifest {
    service: String,
    backend: String,
    tables: Vec<TableManifest>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TableManifest {
    name: String,
    columns: Vec<Column>,
    rows: u64,
}

#[derive(Serialize, Deserialize)]
struct RowLine {
    s: String,
    t: String,
    r: Vec<Cell>,
}

/// A decoded snapshot: the manifest and the rows of every (service, table).
struct Snapshot {
    manifest: Manifest,
    rows: BTreeMap<(String, String), Vec<Vec<Cell>>>,
}

/// Reads the 32-byte KEK from its file (64 hex characters).
pub fn read_kek(path: &Path) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|cause| BackupError::KekRead {
        path: path.to_owned(),
        cause,
    })?);
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| BackupError::KekMalformed { path: path.to_owned() })?;
    Ok(key)
}

fn db_error(service: ServiceName) -> impl FnOnce(DbErr) -> BackupError {
    move |cause| BackupError::Database { service, cause }
}

/// Takes a consistent snapshot of every service in `configs` and writes it to `out` as one
/// encrypted, signed archive (mode 0600, written atomically).
pub async fn backup(configs: &[ServiceConfig], kek_file: &Path, out: &Path) -> Result<BackupReport, BackupError> {
    let kek = read_kek(kek_file)?;
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut manifest = Manifest {
        format: FORMAT,
        created_at: created_at.clone(),
        caremesh_version: env!("CARGO_PKG_VERSION").to_owned(),
        services: Vec::new(),
    };
    let mut lines: Vec<u8> = Vec::new();
    for config in configs {
        let service = config.service;
        let (dump, rows) = dump_service(config).await.map_err(db_error(service))?;
        for (table, table_rows) in rows {
            for row in table_rows {
                serde_json::to_writer(
                    &mut lines,
                    &RowLine {
                        s: service.as_str().to_owned(),
                        t: table.clone(),
                        r: row,
                    },
                )
                .map_err(|error| BackupError::Incompatible {
                    service,
                    message: error.to_string(),
                })?;
                lines.push(b'\n');
            }
        }
        manifest.services.push(dump);
    }
    let counts = counts(&manifest);
    let mut plaintext = Zeroizing::new(serde_json::to_vec(&manifest).map_err(|error| BackupError::Archive {
        path: out.to_owned(),
        cause: ArchiveError::Contents(error.to_string()),
    })?);
    plaintext.push(b'\n');
    plaintext.extend_from_slice(&lines);
    drop(Zeroizing::new(lines));

    let sealed = archive::seal(&kek, &plaintext, &created_at).map_err(|cause| BackupError::Archive {
        path: out.to_owned(),
        cause,
    })?;
    caremesh_runtime::kek::write_private(out, &sealed).map_err(|cause| BackupError::Write {
        path: out.to_owned(),
        cause,
    })?;
    Ok(BackupReport {
        path: out.to_owned(),
        bytes: u64::try_from(sealed.len()).unwrap_or(u64::MAX),
        sha256: hex::encode(Sha256::digest(&sealed)),
        created_at,
        services: counts,
    })
}

type Rows = Vec<(String, Vec<Vec<Cell>>)>;

async fn dump_service(config: &ServiceConfig) -> Result<(ServiceManifest, Rows), DbErr> {
    let db = caremesh_runtime::db::connect(&config.database).await?;
    let backend = db.get_database_backend();
    let txn = if backend == DbBackend::Postgres {
        db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
            .await?
    } else {
        db.begin().await?
    };
    let mut manifest = ServiceManifest {
        service: config.service.as_str().to_owned(),
        backend: backend_name(backend).to_owned(),
        tables: Vec::new(),
    };
    let mut all = Vec::new();
    for table in tables::tables(&txn).await? {
        let columns = tables::columns(&txn, &table).await?;
        let rows = tables::read_rows(&txn, &table, &columns).await?;
        manifest.tables.push(TableManifest {
            name: table.clone(),
            columns,
            rows: u64::try_from(rows.len()).unwrap_or(u64::MAX),
        });
        all.push((table, rows));
    }
    txn.commit().await?;
    if backend == DbBackend::Sqlite
        && let Some(index) = manifest.tables.iter().position(|table| table.name == BLOB_PIECES)
        && let (Some(table), Some((_, rows))) = (manifest.tables.get_mut(index), all.get_mut(index))
    {
        let store = BlobStore::for_service(config, &db);
        *rows = blob_rows(&store, &table.columns).await?;
        table.rows = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    }
    db.close().await?;
    Ok((manifest, all))
}

/// Every blob of a files store, as `blob_pieces` rows in the order of `columns`.
async fn blob_rows(store: &BlobStore, columns: &[Column]) -> Result<Vec<Vec<Cell>>, DbErr> {
    let failed = |error: caremesh_runtime::Error| DbErr::Custom(format!("reading the blobs: {}", error.message()));
    let mut rows = Vec::new();
    for id in store.ids().await.map_err(failed)? {
        let mut offset = 0u64;
        loop {
            let piece = store.read(id, offset, MAX_PIECE_LEN).await.map_err(failed)?;
            if piece.is_empty() {
                break;
            }
            let row = columns
                .iter()
                .map(|column| match column.name.as_str() {
                    "blob_id" => Cell::Uuid(id.hyphenated().to_string()),
                    "start_offset" => Cell::Int(i64::try_from(offset).unwrap_or(i64::MAX)),
                    "data" => Cell::Bytes(tables::b64(&piece)),
                    _ => Cell::Null,
                })
                .collect();
            rows.push(row);
            offset += piece.len() as u64;
        }
    }
    Ok(rows)
}

/// Writes `blob_pieces` rows (columns in the order of `columns`) as the blobs of a files store,
/// replacing whatever blobs it held.
async fn write_blob_files(store: &BlobStore, columns: &[Column], rows: &[Vec<Cell>]) -> Result<(), String> {
    let at = |name: &str| columns.iter().position(|column| column.name == name);
    let (Some(id_at), Some(offset_at), Some(data_at)) = (at("blob_id"), at("start_offset"), at("data")) else {
        return Err("the backup's blob_pieces table lacks blob_id, start_offset or data".to_owned());
    };
    let mut pieces = Vec::with_capacity(rows.len());
    for row in rows {
        let id = match row.get(id_at) {
            Some(Cell::Uuid(text) | Cell::Text(text)) => uuid::Uuid::try_parse(text).ok(),
            _ => None,
        };
        let offset = match row.get(offset_at) {
            Some(Cell::Int(offset)) => u64::try_from(*offset).ok(),
            _ => None,
        };
        let data = match row.get(data_at) {
            Some(Cell::Bytes(data)) => tables::unb64(data).ok(),
            _ => None,
        };
        let (Some(id), Some(offset), Some(data)) = (id, offset, data) else {
            return Err("a blob piece in the backup is malformed".to_owned());
        };
        pieces.push((id, offset, data));
    }
    pieces.sort_by_key(|(id, offset, _)| (*id, *offset));
    let failed = |error: caremesh_runtime::Error| format!("writing the blobs: {}", error.message());
    for id in store.ids().await.map_err(failed)? {
        store.delete(id).await.map_err(failed)?;
    }
    for (id, offset, data) in pieces {
        store.append(id, offset, &data).await.map_err(failed)?;
    }
    Ok(())
}

fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

/// Verifies and decodes the archive at `from` without touching any database. Returns the
/// creation time and the rows per service it holds.
pub fn inspect(kek_file: &Path, from: &Path) -> Result<RestoreReport, BackupError> {
    let snapshot = load(kek_file, from)?;
    Ok(RestoreReport {
        created_at: snapshot.manifest.created_at.clone(),
        services: counts(&snapshot.manifest),
    })
}

fn counts(manifest: &Manifest) -> Vec<ServiceCount> {
    manifest
        .services
        .iter()
        .map(|service| ServiceCount {
            service: service.service.clone(),
            tables: service.tables.len(),
            rows: service
                .tables
                .iter()
                .filter(|table| table.name != MIGRATIONS_TABLE)
                .map(|table| table.rows)
                .sum(),
        })
        .collect()
}

fn load(kek_file: &Path, from: &Path) -> Result<Snapshot, BackupError> {
    let kek = read_kek(kek_file)?;
    let bytes = std::fs::read(from).map_err(|cause| BackupError::Read {
        path: from.to_owned(),
        cause,
    })?;
    let archive_error = |cause| BackupError::Archive {
        path: from.to_owned(),
        cause,
    };
    let (_, plaintext) = archive::open(&kek, &bytes).map_err(archive_error)?;
    decode(&plaintext).map_err(|message| archive_error(ArchiveError::Contents(message)))
}

fn decode(plaintext: &[u8]) -> Result<Snapshot, String> {
    let mut lines = plaintext.split(|byte| *byte == b'\n').filter(|line| !line.is_empty());
    let manifest: Manifest =
        serde_json::from_slice(lines.next().ok_or("no manifest")?).map_err(|error| format!("manifest: {error}"))?;
    if manifest.format != FORMAT {
        return Err(format!("snapshot format {} is not supported", manifest.format));
    }
    let mut rows: BTreeMap<(String, String), Vec<Vec<Cell>>> = BTreeMap::new();
    for service in &manifest.services {
        for table in &service.tables {
            rows.insert((service.service.clone(), table.name.clone()), Vec::new());
        }
    }
    for line in lines {
        let row: RowLine = serde_json::from_slice(line).map_err(|error| format!("row: {error}"))?;
        let slot = rows
            .get_mut(&(row.s.clone(), row.t.clone()))
            .ok_or_else(|| format!("a row of {}/{} is not in the manifest", row.s, row.t))?;
        slot.push(row.r);
    }
    for service in &manifest.services {
        for table in &service.tables {
            let held = rows
                .get(&(service.service.clone(), table.name.clone()))
                .map_or(0, Vec::len);
            if u64::try_from(held).ok() != Some(table.rows) {
                return Err(format!(
                    "{}/{} should hold {} rows but holds {held}",
                    service.service, table.name, table.rows
                ));
            }
        }
    }
    Ok(Snapshot { manifest, rows })
}

/// Restores the archive at `from` into the databases of `configs`.
///
/// Order: verify the signature and decode everything; migrate every target; check that every
/// target is empty (unless `force`) and that the backup fits its schema; only then write, one
/// transaction per service. A damaged archive therefore writes nothing at all.
pub async fn restore(
    configs: &[ServiceConfig],
    kek_file: &Path,
    from: &Path,
    force: bool,
) -> Result<RestoreReport, BackupError> {
    let snapshot = load(kek_file, from)?;
    for config in configs {
        if !snapshot
            .manifest
            .services
            .iter()
            .any(|service| service.service == config.service.as_str())
        {
            return Err(BackupError::Missing(config.service));
        }
    }

    let mut targets = Vec::new();
    for config in configs {
        let service = config.service;
        caremesh_serve::migrate_service(config)
            .await
            .map_err(db_error(service))?;
        let db = caremesh_runtime::db::connect(&config.database)
            .await
            .map_err(db_error(service))?;
        let manifest = snapshot
            .manifest
            .services
            .iter()
            .find(|dump| dump.service == service.as_str())
            .ok_or(BackupError::Missing(service))?;
        let table = manifest.tables.iter().find(|table| table.name == MIGRATIONS_TABLE);
        let backup_versions = migration_versions(
            table.map(|table| table.columns.as_slice()),
            snapshot
                .rows
                .get(&(manifest.service.clone(), MIGRATIONS_TABLE.to_owned()))
                .map_or(&[][..], Vec::as_slice),
        );
        let seeds = seed_counts(config).await?;
        let schema = check_target(&db, service, manifest, &backup_versions, &seeds, force).await?;
        targets.push((config, db, manifest, schema));
    }

    let mut report = Vec::new();
    for (config, db, manifest, schema) in targets {
        let service = config.service;
        let blob_files = db.get_database_backend() == DbBackend::Sqlite;
        // On SQLite, the blob_pieces rows, written as files after the commit.
        let mut blobs = None;
        let txn = caremesh_runtime::db::begin_write(&db)
            .await
            .map_err(db_error(service))?;
        if db.get_database_backend() == DbBackend::Sqlite {
            txn.execute_unprepared("PRAGMA defer_foreign_keys = ON")
                .await
                .map_err(db_error(service))?;
        }
        // Checked above: unless forced, these hold only what the migrations seeded.
        for table in schema.keys().filter(|table| table.as_str() != MIGRATIONS_TABLE) {
            tables::clear(&txn, table).await.map_err(db_error(service))?;
        }
        let mut rows_written = 0;
        for table in manifest.tables.iter().filter(|table| table.name != MIGRATIONS_TABLE) {
            let target = schema.get(&table.name).ok_or_else(|| BackupError::Incompatible {
                service,
                message: format!("no table {}", table.name),
            })?;
            let rows = snapshot
                .rows
                .get(&(manifest.service.clone(), table.name.clone()))
                .map_or(&[][..], Vec::as_slice);
            rows_written += table.rows;
            if blob_files && table.name == BLOB_PIECES {
                blobs = Some((table.columns.as_slice(), rows));
                continue;
            }
            tables::write_rows(&txn, &table.name, &table.columns, target, rows)
                .await
                .map_err(db_error(service))?;
        }
        txn.commit().await.map_err(db_error(service))?;
        // A backup from before attachments has no blob_pieces table and no blobs to write.
        if let Some((columns, rows)) = blobs {
            write_blob_files(&BlobStore::for_service(config, &db), columns, rows)
                .await
                .map_err(|message| BackupError::Incompatible { service, message })?;
        }
        db.close().await.map_err(db_error(service))?;
        report.push(ServiceCount {
            service: manifest.service.clone(),
            tables: manifest.tables.len(),
            rows: rows_written,
        });
    }
    Ok(RestoreReport {
        created_at: snapshot.manifest.created_at,
        services: report,
    })
}

/// Checks that the target is empty (unless `force`), knows every migration the backup had
/// applied, and has every table and column the backup holds. Returns its tables and columns.
async fn check_target(
    db: &impl ConnectionTrait,
    service: ServiceName,
    manifest: &ServiceManifest,
    backup_versions: &[String],
    seeds: &BTreeMap<String, u64>,
    force: bool,
) -> Result<BTreeMap<String, Vec<Column>>, BackupError> {
    let incompatible = |message: String| BackupError::Incompatible { service, message };
    let mut schema = BTreeMap::new();
    for table in tables::tables(db).await.map_err(db_error(service))? {
        let columns = tables::columns(db, &table).await.map_err(db_error(service))?;
        if table != MIGRATIONS_TABLE && !force {
            let rows = tables::count(db, &table).await.map_err(db_error(service))?;
            if rows > seeds.get(&table).copied().unwrap_or(0) {
                return Err(BackupError::NotEmpty { service, table, rows });
            }
        }
        schema.insert(table, columns);
    }
    for table in &manifest.tables {
        let target = schema
            .get(&table.name)
            .ok_or_else(|| incompatible(format!("this caremesh has no table {}", table.name)))?;
        for column in &table.columns {
            if !target.iter().any(|t| t.name == column.name) {
                return Err(incompatible(format!(
                    "this caremesh has no column {}.{}",
                    table.name, column.name
                )));
            }
        }
    }
    // Migrations: the backup must not come from a newer schema than the one just migrated to.
    let target_versions = migration_versions(
        schema.get(MIGRATIONS_TABLE).map(Vec::as_slice),
        &tables::read_rows(
            db,
            MIGRATIONS_TABLE,
            schema.get(MIGRATIONS_TABLE).map_or(&[][..], Vec::as_slice),
        )
        .await
        .map_err(db_error(service))?,
    );
    if let Some(newer) = backup_versions
        .iter()
        .find(|version| !target_versions.contains(*version))
    {
        return Err(incompatible(format!(
            "the backup has migration {newer}, which this caremesh does not know: restore with the \
             caremesh version that made the backup or a newer one"
        )));
    }
    Ok(schema)
}

/// The `version` column of `seaql_migrations` rows.
fn migration_versions(columns: Option<&[Column]>, rows: &[Vec<Cell>]) -> Vec<String> {
    let Some(index) = columns.and_then(|columns| columns.iter().position(|column| column.name == "version")) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| match row.get(index) {
            Some(Cell::Text(version)) => Some(version.clone()),
            _ => None,
        })
        .collect()
}

/// The rows a fresh migration of `config.service` seeds (e.g. a singleton state row), per table:
/// a target holding no more than these counts as empty. Measured on a scratch SQLite database.
async fn seed_counts(config: &ServiceConfig) -> Result<BTreeMap<String, u64>, BackupError> {
    let service = config.service;
    let dir = tempfile::tempdir().map_err(|cause| BackupError::Write {
        path: std::env::temp_dir(),
        cause,
    })?;
    let mut scratch = config.clone();
    scratch.database = caremesh_runtime::config::DatabaseConfig {
        url: format!("sqlite://{}?mode=rwc", dir.path().join("seed.db").display()),
        schema: config.database.schema.clone(),
    };
    caremesh_serve::migrate_service(&scratch)
        .await
        .map_err(db_error(service))?;
    let db = caremesh_runtime::db::connect(&scratch.database)
        .await
        .map_err(db_error(service))?;
    let mut seeds = BTreeMap::new();
    for table in tables::tables(&db).await.map_err(db_error(service))? {
        let rows = tables::count(&db, &table).await.map_err(db_error(service))?;
        seeds.insert(table, rows);
    }
    db.close().await.map_err(db_error(service))?;
    Ok(seeds)
}
