//! Database access: SQLite (one file per service) by default, PostgreSQL (one schema per service)
//! when the URL says so. Migrations run at start.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::DatabaseConfig;

/// Connects to the service's database, creating the SQLite file or the PostgreSQL schema if
/// needed, and brings its schema up to date with `M`.
pub async fn connect_and_migrate<M: MigratorTrait>(config: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let db = connect(config).await?;
    M::up(&db, None).await?;
    Ok(db)
}

/// Begins a transaction that will write. On SQLite it takes the write lock up front (`BEGIN
/// IMMEDIATE`): a deferred transaction that reads and then writes fails at once with "database is
/// locked" when another writer committed in between, whereas an immediate one waits its turn.
/// PostgreSQL ignores the mode.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// A write transaction and, on SQLite, this process's write turn: keep both until the commit.
pub type WriteTxn = (Option<OwnedMutexGuard<()>>, DatabaseTransaction);

/// This process's writers to its database, in turn. SQLite lets one transaction write at a time,
/// and a writer that finds the file locked sleeps in SQLite's busy handler (1 ms, then longer)
/// with everything it holds; so this process's writers queue here instead, in arrival order, and
/// reach SQLite when it is free. (Writers in other processes, such as a backup, still meet the
/// busy timeout.) PostgreSQL locks rows, not the database: there writers go straight through.
#[derive(Clone, Debug)]
pub struct Writer {
    db: DatabaseConnection,
    turn: Option<Arc<Mutex<()>>>,
}

impl Writer {
    pub fn new(db: DatabaseConnection) -> Self {
        let sqlite = db.get_database_backend() == sea_orm::DbBackend::Sqlite;
        Self {
            turn: sqlite.then(|| Arc::new(Mutex::new(()))),
            db,
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// This process's turn to write, for one autocommit statement: hold it until the statement
    /// is done. `None` on PostgreSQL.
    pub async fn turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.turn {
            Some(turn) => Some(Arc::clone(turn).lock_owned().await),
            None => None,
        }
    }

    /// Begins a write transaction ([`begin_write`]) in this process's turn.
    pub async fn begin(&self) -> Result<WriteTxn, DbErr> {
        let turn = self.turn().await;
        let txn = begin_write(&self.db).await?;
        Ok((turn, txn))
    }
}

/// Connects without migrating (for tools that read a service's database directly).
pub async fn connect(config: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(config.url.clone());
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if config.is_postgres() {
        let schema = checked_schema(&config.schema)?;
        create_schema(&config.url, schema).await?;
        options
            .max_connections(16)
            .min_connections(1)
            .set_schema_search_path(schema.to_owned());
    } else {
        if let Some(parent) = sqlite_path(&config.url).and_then(|path| std::path::Path::new(path).parent()) {
            std::fs::create_dir_all(parent)
                .map_err(|error| DbErr::Custom(format!("cannot create {}: {error}", parent.display())))?;
        }
        // WAL lets readers run beside the writer; the busy timeout queues writers instead of
        // failing them; NORMAL sync is durable across process crashes in WAL mode.
        options
            .max_connections(8)
            .min_connections(1)
            .map_sqlx_sqlite_opts(|sqlite| {
                sqlite
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
    }
    Database::connect(options).await
}

async fn create_schema(url: &str, schema: &str) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    let admin = Database::connect(options).await?;
    let created = admin
        .execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await;
    admin.close().await?;
    match created {
        Ok(_) => Ok(()),
        // Two replicas creating the same schema at once: one wins, the other sees a duplicate.
        Err(error) if error.to_string().contains("already exists") => Ok(()),
        Err(error) => Err(error),
    }
}

/// Schema names are interpolated into SQL, so only plain identifiers are accepted.
fn checked_schema(schema: &str) -> Result<&str, DbErr> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(schema)
    } else {
        Err(DbErr::Custom(format!(
            "invalid PostgreSQL schema name {schema:?}: use lower-case letters, digits and _"
        )))
    }
}

/// The file path in a `sqlite://path?options` URL.
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(checked_schema("t_1a2b_auth").is_ok());
        assert!(checked_schema("auth\"; drop table x; --").is_err());
        assert!(checked_schema("").is_err());
        assert!(checked_schema("1abc").is_err());
    }

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(sqlite_path("sqlite://data/auth.db?mode=rwc"), Some("data/auth.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }
}
