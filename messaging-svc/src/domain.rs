//! messaging-svc's domain state and the helpers its operations share: who may write to whom, the
//! audit trail, the live-delivery notifier (in-process, plus PostgreSQL LISTEN/NOTIFY across
//! replicas) and the purge of expired messages. The operations live in `keys` (the key
//! directory), `devices` (the protocol v2 device directory), `messages` and `groups`
//! (policy-addressed messages). No tonic types here.

use std::sync::Arc;
use std::time::Duration;

use caremesh_proto::audit::v1::AuditEvent;
use caremesh_runtime::attachments::Attachments;
use caremesh_runtime::auth::Principal;
use caremesh_runtime::blob::BlobStore;
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::db::{WriteTxn, Writer};
use caremesh_runtime::outbox::Outbox;
use caremesh_runtime::{Error, ServiceName, ServiceRuntime};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::group_commit::DirectSends;
use crate::groups::GroupPolicies;
use crate::peers::Profiles;
use crate::settings::MessagingSettings;
use crate::storage::{delivery, message};

/// A wake-up for every subscriber (after a missed notification).
pub(crate) const WAKE_ALL: &str = "*";

/// Who is calling, as the audit log records it (the runtime's audit actor).
pub use caremesh_runtime::outbox::{Actor as Caller, Audited};

#[derive(Clone, Debug)]
pub struct MessagingDomain {
    pub(crate) db: DatabaseConnection,
    pub(crate) clock: SharedClock,
    pub(crate) outbox: Outbox,
    pub(crate) settings: Arc<MessagingSettings>,
    pub(crate) profiles: Arc<Profiles>,
    pub(crate) live: broadcast::Sender<Arc<str>>,
    pub(crate) shutdown: CancellationToken,
    /// PostgreSQL only: the NOTIFY channel and the advisory lock that orders deliveries.
    pub(crate) pg: Option<Arc<PgLive>>,
    /// This process's writers, in turn (shared with the audit relay).
    pub(crate) writer: Writer,
    /// The policies of stored group messages, parsed (see `groups`).
    pub(crate) group_policies: Arc<std::sync::Mutex<GroupPolicies>>,
    /// Direct messages waiting to be stored together (see `group_commit`).
    pub(crate) direct_sends: Arc<DirectSends>,
    /// Attachment blobs and their bookkeeping (see `attachments`).
    pub(crate) attachments: Attachments,
}

#[derive(Debug)]
pub(crate) struct PgLive {
    pub channel: String,
    /// Seeds the per-recipient advisory lock keys (distinct per schema).
    pub lock_seed: String,
}

impl MessagingDomain {
    pub async fn start(runtime: &ServiceRuntime, settings: MessagingSettings) -> Result<Self, Error> {
        let auth = runtime
            .channel(ServiceName::Auth, Default::default())
            .map_err(|error| Error::internal("auth-svc channel", error))?;
        let (live, _) = broadcast::channel(4096);
        let pg = if runtime.db.get_database_backend() == DbBackend::Postgres {
            let schema = &runtime.config.database.schema;
            let digest = Sha256::digest(format!("caremesh-messaging-live/{schema}").as_bytes());
            Some(Arc::new(PgLive {
                channel: format!("caremesh_msg_{}", hex::encode(digest.get(..12).unwrap_or_default())),
                lock_seed: format!("caremesh-messaging-deliveries/{schema}/"),
            }))
        } else {
            None
        };
        let domain = Self {
            writer: runtime.writer.clone(),
            db: runtime.db.clone(),
            clock: Arc::clone(&runtime.clock),
            outbox: runtime.outbox.clone(),
            profiles: Arc::new(Profiles::new(auth, settings.profile_cache_ttl)),
            settings: Arc::new(settings.clone()),
            live,
            shutdown: runtime.shutdown_token(),
            pg,
            group_policies: Arc::default(),
            direct_sends: Arc::default(),
            attachments: Attachments::new(
                runtime.db.clone(),
                runtime.writer.clone(),
                runtime.outbox.clone(),
                BlobStore::for_service(&runtime.config, &runtime.db),
                settings.attachments,
            ),
        };
        if let Some(pg) = &domain.pg {
            tokio::spawn(listen_postgres(
                runtime.config.database.url.clone(),
                pg.channel.clone(),
                domain.live.clone(),
                domain.shutdown.clone(),
            ));
        }
        tokio::spawn(domain.clone().purge_loop());
        Ok(domain)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// On SQLite, this process's turn to write (hold it until the write is done); on PostgreSQL
    /// nothing. For single autocommit statements; transactions use [`Self::begin_write`].
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.writer.turn().await
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite, after this process's earlier
    /// writers). Keep the guard until the commit.
    pub(crate) async fn begin_write(&self) -> Result<WriteTxn, Error> {
        Ok(self.writer.begin().await?)
    }

    /// Whether `sender` may write to `recipient_id` (and fetch their bundle): patients to doctors
    /// and nurses; doctors and nurses to anyone active; never patient to patient.
    pub(crate) async fn check_may_write(&self, sender: &Principal, recipient_id: &str) -> Result<&'static str, Error> {
        if !matches!(sender.role.as_str(), "patient" | "doctor" | "nurse") {
            return Err(Error::permission_denied(
                "ROLE_CANNOT_MESSAGE",
                format!(
                    "only patients, doctors and nurses exchange messages; you are {}",
                    sender.role
                ),
            ));
        }
        let Some(recipient) = self.profiles.get(recipient_id).await? else {
            return Err(Error::not_found(
                "RECIPIENT_NOT_FOUND",
                format!("no user with id {recipient_id}: check the recipient"),
            ));
        };
        if !recipient.active {
            return Err(Error::failed_precondition(
                "RECIPIENT_NOT_ACTIVE",
                "the recipient's account is not active (pending approval or disabled)",
            ));
        }
        let allowed = match sender.role.as_str() {
            "patient" => matches!(recipient.role, "doctor" | "nurse"),
            _ => matches!(recipient.role, "patient" | "doctor" | "nurse"),
        };
        if !allowed {
            return Err(Error::permission_denied(
                "MESSAGING_NOT_ALLOWED",
                format!(
                    "a {} may not write to a {}: patients write to doctors and nurses, doctors and nurses to anyone",
                    sender.role, recipient.role
                ),
            ));
        }
        Ok(recipient.role)
    }

    /// Writes an audit event through `conn` (the transaction of the change it describes).
    pub(crate) async fn audit<C: ConnectionTrait>(
        &self,
        conn: &C,
        caller: &Caller,
        audited: Audited<'_>,
    ) -> Result<(), Error> {
        self.outbox.record(conn, &self.audit_event(caller, audited)).await
    }

    /// The audit event of a messaging action (all of them are for treatment).
    pub(crate) fn audit_event(&self, caller: &Caller, audited: Audited<'_>) -> AuditEvent {
        self.outbox.action_event(
            caller,
            Audited {
                purpose_of_use: "TREAT",
                ..audited
            },
        )
    }

    /// Records a refused access in its own transaction, then returns the refusal.
    pub(crate) async fn denied(&self, caller: &Caller, audited: Audited<'_>, error: Error) -> Error {
        let audited = Audited {
            purpose_of_use: "TREAT",
            ..audited
        };
        self.outbox.record_refusal(&self.writer, caller, audited, error).await
    }

    /// Inside a write transaction that adds deliveries for `user_id`: on PostgreSQL, takes a
    /// transaction-scoped advisory lock per recipient, so that one user's delivery-log sequence
    /// numbers commit in order and their stream, reading "after cursor N", never skips a row that
    /// commits later with a smaller number. (Streams read one user's rows only, so different
    /// users need not wait for each other.) SQLite writers are serial anyway.
    pub(crate) async fn order_deliveries<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<(), Error> {
        if let Some(pg) = &self.pg {
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [Self::delivery_lock_key(pg, user_id).into()],
            ))
            .await?;
        }
        Ok(())
    }

    /// [`Self::order_deliveries`] and [`Self::notify_in`] in one round trip (the notification
    /// is only sent when the transaction commits, so taking the lock first changes nothing).
    pub(crate) async fn order_and_notify<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<(), Error> {
        if let Some(pg) = &self.pg {
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1), pg_notify($2, $3)",
                [
                    Self::delivery_lock_key(pg, user_id).into(),
                    pg.channel.clone().into(),
                    user_id.to_owned().into(),
                ],
            ))
            .await?;
        }
        Ok(())
    }

    fn delivery_lock_key(pg: &PgLive, user_id: &str) -> i64 {
        let digest = Sha256::digest(format!("{}{user_id}", pg.lock_seed).as_bytes());
        let mut key = [0u8; 8];
        key.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
        i64::from_be_bytes(key)
    }

    /// Inside the transaction: tells every replica's subscribers of `user_id` (delivered on commit).
    pub(crate) async fn notify_in<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<(), Error> {
        if let Some(pg) = &self.pg {
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [pg.channel.clone().into(), user_id.to_owned().into()],
            ))
            .await?;
        }
        Ok(())
    }

    /// After the commit: wakes this process's subscribers of `user_id`.
    pub(crate) fn notify_local(&self, user_id: &str) {
        // No receivers is fine: nobody is subscribed.
        let _ = self.live.send(Arc::from(user_id));
    }

    /// Purges expired messages every `purge_interval` until shutdown.
    async fn purge_loop(self) {
        let mut interval = tokio::time::interval(self.settings.purge_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.purge_expired().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged expired messages"),
                Err(error) => tracing::warn!(
                    reason = error.reason(),
                    "purging expired messages failed; retrying later"
                ),
            }
            match self.sweep_attachments().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed attachments of recalled, expired or unsent messages"),
                Err(error) => tracing::warn!(reason = error.reason(), "removing attachments failed; retrying later"),
            }
        }
    }

    /// Deletes messages whose lifespan has ended; returns how many. Their entries in the
    /// delivery log stay (streams skip them) so that cursors keep their meaning; log entries
    /// older than [`DELIVERY_LOG_RETENTION`] are trimmed.
    pub async fn purge_expired(&self) -> Result<u64, Error> {
        let now = self.now();
        let (_turn, txn) = self.begin_write().await?;
        let expired: Vec<(String, i32)> = message::Entity::find()
            .select_only()
            .column(message::Column::MessageId)
            .column(message::Column::ProtocolVersion)
            .filter(message::Column::ExpireAt.lte(now))
            .into_tuple()
            .all(&txn)
            .await?;
        self.attachments
            .mark_deleted(&txn, &expired.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), now)
            .await?;
        let fanned_out = expired
            .into_iter()
            .filter(|(_, version)| *version == 2)
            .map(|(id, _)| id)
            .collect();
        self.delete_fanout(&txn, fanned_out).await?;
        let purged = message::Entity::delete_many()
            .filter(message::Column::ExpireAt.lte(now))
            .exec(&txn)
            .await?
            .rows_affected;
        delivery::Entity::delete_many()
            .filter(delivery::Column::CreatedAt.lt(now - DELIVERY_LOG_RETENTION))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(purged)
    }
}

/// How long live-delivery log entries (and so resume cursors) are kept.
pub const DELIVERY_LOG_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// Forwards PostgreSQL notifications (from every replica) to this process's subscribers,
/// reconnecting after errors; after a reconnect everyone re-checks storage.
async fn listen_postgres(url: String, channel: String, live: broadcast::Sender<Arc<str>>, shutdown: CancellationToken) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let connected = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(&channel).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for live delivery; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let _ = live.send(Arc::from(WAKE_ALL));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(notification) => {
                        let _ = live.send(Arc::from(notification.payload()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "live delivery listener failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

/// A direct conversation's id: the same for both parties, opaque to clients.
pub fn conversation_id(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = Sha256::new();
    hasher.update(b"caremesh-direct-conversation-v1");
    for part in [first, second] {
        hasher.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!("dm-{}", hex::encode(digest.get(..16).unwrap_or_default()))
}

pub use caremesh_runtime::ids::check_uuid_v7;
