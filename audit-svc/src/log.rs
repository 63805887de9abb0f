//! The audit log's domain: ingesting events shipped by the services' outbox relays. Each new
//! event becomes the next leaf of the Merkle tree in the same transaction that stores it (the
//! tree's new interior nodes and size too), and the alert rules run over it there as well.
//! No tonic here; the gRPC adapter unpacks requests and maps [`caremesh_runtime::Error`]s.

use std::collections::HashSet;
use std::sync::Arc;

use caremesh_proto::audit::v1::AuditEvent;
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::db::begin_write;
use caremesh_runtime::outbox::validate_event;
use caremesh_runtime::tls::SpiffeId;
use caremesh_runtime::{Error, time};
use prost::Message;
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use tokio::sync::Notify;

use crate::alerts;
use crate::settings::AuditSettings;
use crate::storage::event;
use crate::tree;

/// The most events one ingest call may carry.
pub const MAX_BATCH: usize = 1000;

/// Rows per multi-row statement: a whole batch in one statement (fewer round trips to the
/// database), while 1000 rows of the event table's 17 columns stay below SQLite's (32,766) and
/// PostgreSQL's (65,535) bind-parameter limits.
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

/// Splits `items` into owned runs of at most `size` (moving, not cloning, the rows).
pub(crate) fn owned_chunks<T>(mut items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::with_capacity(items.len().div_ceil(size.max(1)));
    while items.len() > size.max(1) {
        let rest = items.split_off(size.max(1));
        chunks.push(std::mem::replace(&mut items, rest));
    }
    if !items.is_empty() {
        chunks.push(items);
    }
    chunks
}

/// What an ingest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: u32,
    pub duplicates: u32,
}

/// The stored log.
#[derive(Clone, Debug)]
pub struct EventLog {
    pub(crate) db: DatabaseConnection,
    /// Where appends run: on SQLite a dedicated connection (see [`sqlite_writer`]), else `db`.
    writer: DatabaseConnection,
    /// Wakes the SQLite WAL checkpointer after a commit (see [`wal_checkpointer`]).
    wal_checkpoints: Option<tokio::sync::mpsc::Sender<()>>,
    pub(crate) clock: SharedClock,
    pub(crate) settings: Arc<AuditSettings>,
    /// Woken when alerts were raised.
    pub(crate) alerts_raised: Arc<Notify>,
}

/// WAL pages (4 KiB each) after which the SQLite writer checkpoints inline: a backstop, as the
/// background checkpointer (see [`wal_checkpointer`]) usually copies the pages first. SQLite's
/// default, 1000 pages, is less than one 1000-event batch writes (about 1400 pages, most of them
/// the patient index's, whose inserts land on random pages), so every commit checkpointed inline:
/// copying and syncing the same index pages again and again, in the append's time.
const WAL_AUTOCHECKPOINT_PAGES: &str = "50000";

/// A dedicated append connection for SQLite: a pool of one connection with the same options as
/// `db` (WAL, NORMAL sync, busy timeout), a 64 MiB page cache (the log's indexes outgrow the 2 MiB
/// default within a few hundred thousand events) and the WAL backstop above. Keeping appends on
/// one connection keeps its cache warm (SQLite drops a connection's page cache when another one
/// wrote since) and confines the large auto-checkpoint threshold to the append path. `None` for
/// PostgreSQL (and anything else): appends then use `db` itself.
fn sqlite_writer(db: &DatabaseConnection) -> Option<DatabaseConnection> {
    use sea_orm::DatabaseConnectionType;
    use sea_orm::sqlx::sqlite::SqlitePoolOptions;
    if !matches!(db.inner, DatabaseConnectionType::SqlxSqlitePoolConnection(_)) {
        return None;
    }
    let options = (*db.get_sqlite_connection_pool().connect_options())
        .clone()
        .pragma("cache_size", "-65536")
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect_lazy_with(options);
    Some(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// Starts the SQLite WAL checkpointer: after appends commit, it copies their pages from the WAL
/// into the database file (`PRAGMA wal_checkpoint(PASSIVE)`, which never blocks the writer) on a
/// connection of `db`, beside the next append instead of inside it. Requests arriving while it
/// runs coalesce into one; it stops when every [`EventLog`] clone is gone. `None` outside a Tokio
/// runtime (the writer's auto-checkpoint still bounds the WAL).
fn wal_checkpointer(db: DatabaseConnection) -> Option<tokio::sync::mpsc::Sender<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<()>(1);
    handle.spawn(async move {
        while receiver.recv().await.is_some() {
            if let Err(error) = db.execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::debug!(%error, "checkpointing the audit log's WAL failed; the next append retries");
            }
        }
    });
    Some(sender)
}

/// The source address without its port (failed-login bursts come from one host, many ports).
pub(crate) fn source_host(address: &str) -> String {
    match address.parse::<std::net::SocketAddr>() {
        Ok(socket) => socket.ip().to_string(),
        Err(_) => address.to_owned(),
    }
}

impl EventLog {
    pub fn new(db: DatabaseConnection, clock: SharedClock) -> Self {
        Self::with_settings(db, clock, AuditSettings::default())
    }

    pub fn with_settings(db: DatabaseConnection, clock: SharedClock, settings: AuditSettings) -> Self {
        let (writer, wal_checkpoints) = match sqlite_writer(&db) {
            Some(writer) => (writer, wal_checkpointer(db.clone())),
            None => (db.clone(), None),
        };
        Self {
            writer,
            wal_checkpoints,
            db,
            clock,
            settings: Arc::new(settings),
            alerts_raised: Arc::new(Notify::new()),
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Appends `events` sent by `caller`, each at most once by event id. All or nothing: one
    /// invalid event refuses the whole batch and stores none of it.
    pub async fn ingest(&self, caller: &SpiffeId, events: &[AuditEvent]) -> Result<Ingested, Error> {
        if events.len() > MAX_BATCH {
            return Err(Error::invalid_argument(
                "BATCH_TOO_LARGE",
                format!("send at most {MAX_BATCH} events per call (got {})", events.len()),
            ));
        }
        for event in events {
            validate_event(event)?;
            if event.service != caller.as_str() {
                return Err(Error::permission_denied(
                    "EVENT_SERVICE_MISMATCH",
                    format!(
                        "{caller} may only ingest its own events (event {} names {})",
                        event.event_id, event.service
                    ),
                ));
            }
            event
                .recorded_at
                .as_ref()
                .and_then(time::from_timestamp)
                .ok_or_else(|| Error::invalid_argument("INVALID_RECORDED_AT", "recorded_at is out of range"))?;
        }
        let txn = begin_write(&self.writer).await?;
        let ingested = self.append(&txn, events).await?;
        txn.commit().await?;
        if let Some(checkpointer) = &self.wal_checkpoints {
            // Full: a checkpoint is already due, which will copy this commit too.
            let _ = checkpointer.try_send(());
        }
        if ingested.raised_alerts {
            self.alerts_raised.notify_waiters();
        }
        Ok(Ingested {
            accepted: ingested.accepted,
            duplicates: ingested.duplicates,
        })
    }

    /// Appends the new events among `events` to the log and the tree through `txn`.
    async fn append<C: ConnectionTrait>(&self, txn: &C, events: &[AuditEvent]) -> Result<Appended, Error> {
        // Serializes appends (PostgreSQL row lock; SQLite's write transaction already does).
        let size = tree::tree_size(txn, true).await?;
        let ids: Vec<&str> = events.iter().map(|event| event.event_id.as_str()).collect();
        let mut seen: HashSet<String> = HashSet::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let stored: Vec<String> = event::Entity::find()
                .select_only()
                .column(event::Column::EventId)
                .filter(event::Column::EventId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(txn)
                .await?;
            seen.extend(stored);
        }
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(events.len());
        let mut leaves = Vec::with_capacity(events.len());
        let mut fresh = Vec::with_capacity(events.len());
        let mut duplicates = 0u32;
        for event in events {
            if !seen.insert(event.event_id.clone()) {
                duplicates += 1;
                continue;
            }
            let leaf_index = size + leaves.len() as u64;
            let payload = event.encode_to_vec();
            let leaf = caremesh_tlog::leaf_hash(&payload);
            leaves.push(leaf);
            rows.push(row(event, payload, leaf_index, &leaf, now)?);
            fresh.push(event);
        }
        for chunk in owned_chunks(rows, ROWS_PER_STATEMENT) {
            event::Entity::insert_many(chunk).exec_without_returning(txn).await?;
        }
        tree::append_nodes(txn, size, &leaves).await?;
        let raised = alerts::evaluate(txn, &self.settings, &fresh, now).await?;
        Ok(Appended {
            accepted: u32::try_from(fresh.len()).unwrap_or(u32::MAX),
            duplicates,
            raised_alerts: raised > 0,
        })
    }

    /// Integrates rows stored before the Merkle tree existed (no leaf index yet), in insertion
    /// order. Runs at start; a no-op on a log created with the tree.
    pub async fn integrate_untreed(&self) -> Result<u64, Error> {
        let mut total = 0u64;
        loop {
            let txn = begin_write(&self.writer).await?;
            let size = tree::tree_size(&txn, true).await?;
            let pending = event::Entity::find()
                .filter(event::Column::LeafIndex.is_null())
                .order_by_asc(event::Column::Seq)
                .limit(500)
                .all(&txn)
                .await?;
            if pending.is_empty() {
                txn.rollback().await?;
                return Ok(total);
            }
            let mut leaves = Vec::with_capacity(pending.len());
            for stored in pending {
                let decoded = AuditEvent::decode(stored.payload.as_slice())
                    .map_err(|error| Error::internal("decoding a stored audit event", error))?;
                let payload = decoded.encode_to_vec();
                let leaf = caremesh_tlog::leaf_hash(&payload);
                let leaf_index = size + leaves.len() as u64;
                let mut update = row(&decoded, payload, leaf_index, &leaf, stored.ingested_at)?;
                update.seq = Set(stored.seq);
                update.ingested_at = NotSet;
                event::Entity::update(update).exec(&txn).await?;
                leaves.push(leaf);
            }
            tree::append_nodes(&txn, size, &leaves).await?;
            txn.commit().await?;
            total += leaves.len() as u64;
        }
    }

    /// Every event in log order (tests read the log this way).
    pub async fn events(&self) -> Result<Vec<AuditEvent>, Error> {
        let rows = event::Entity::find()
            .order_by_asc(event::Column::LeafIndex)
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|row| {
                AuditEvent::decode(row.payload.as_slice())
                    .map_err(|error| Error::internal("decoding a stored audit event", error))
            })
            .collect()
    }

    /// How many events the log holds.
    pub async fn event_count(&self) -> Result<u64, Error> {
        use sea_orm::PaginatorTrait;
        Ok(event::Entity::find().count(&self.db).await?)
    }

    /// The tree size (number of leaves).
    pub async fn tree_size(&self) -> Result<u64, Error> {
        tree::tree_size(&self.db, false).await
    }
}

struct Appended {
    accepted: u32,
    duplicates: u32,
    raised_alerts: bool,
}

fn row(
    event: &AuditEvent,
    payload: Vec<u8>,
    leaf_index: u64,
    leaf: &caremesh_tlog::Hash,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<event::ActiveModel, Error> {
    let recorded_at = event
        .recorded_at
        .as_ref()
        .and_then(time::from_timestamp)
        .ok_or_else(|| Error::invalid_argument("INVALID_RECORDED_AT", "recorded_at is out of range"))?;
    let actor = event.actor.clone().unwrap_or_default();
    Ok(event::ActiveModel {
        seq: NotSet,
        event_id: Set(event.event_id.clone()),
        recorded_at: Set(recorded_at),
        ingested_at: Set(now),
        service: Set(event.service.clone()),
        actor_user_id: Set(actor.user_id),
        patient_id: Set(event.patient_id.clone()),
        action: Set(event.action),
        outcome: Set(event.outcome),
        payload: Set(payload),
        leaf_index: Set(Some(tree::to_i64(leaf_index)?)),
        leaf_hash: Set(Some(leaf.to_vec())),
        operation: Set(event.operation.clone()),
        entity_type: Set(event.entity_type.clone()),
        entity_id: Set(event.entity_id.clone()),
        source_address: Set(source_host(&actor.source_address)),
        emergency: Set(event.emergency),
    })
}
