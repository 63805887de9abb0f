//! The audit outbox (DESIGN.md §3.5): a service records audit events in its own database, in the
//! same transaction as the change they describe, and a [`Relay`] ships them in batches to
//! audit-svc over mTLS, retrying until accepted. audit-svc stores events idempotently by event
//! id, so at-least-once delivery here gives exactly-once in the log, and an event is never lost
//! while audit-svc is down.

use std::sync::Arc;
use std::time::Duration;

use caremesh_proto::audit::v1::audit_internal_service_client::AuditInternalServiceClient;
use caremesh_proto::audit::v1::{AuditAction, AuditActor, AuditEvent, AuditOutcome, IngestEventsRequest};
use prost::Message;
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect, Set};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{binary, string, timestamp_with_time_zone};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::config::RelayConfig;
use crate::db::Writer;
use crate::mesh::MeshChannel;
use crate::{Error, ServiceName, telemetry};

/// The outbox table, present in every service's database.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_outbox")]
    pub struct Model {
        /// The event's UUIDv7: time-ordered, so shipping in key order keeps the event order.
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        /// The protobuf-encoded `caremesh.audit.v1.AuditEvent`.
        pub payload: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The migration that creates the outbox table; every service's migrator includes it.
#[derive(Debug)]
pub struct CreateAuditOutbox;

impl MigrationName for CreateAuditOutbox {
    fn name(&self) -> &str {
        "m20261124_000001_create_audit_outbox"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateAuditOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(entity::Entity)
                    .if_not_exists()
                    .col(string(entity::Column::EventId).primary_key())
                    .col(binary(entity::Column::Payload))
                    .col(timestamp_with_time_zone(entity::Column::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(entity::Entity).to_owned()).await
    }
}

/// Who acted, as the audit log records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    pub user_id: String,
    pub role: String,
    pub session_id: String,
    pub source_address: String,
}

impl Actor {
    /// The signed-in user behind a request, seen from `source`.
    pub fn user(principal: &crate::auth::Principal, source: Option<std::net::SocketAddr>) -> Self {
        Self {
            user_id: principal.user_id.clone(),
            role: principal.role.clone(),
            session_id: principal.session_id.clone(),
            source_address: source.map(|addr| addr.to_string()).unwrap_or_default(),
        }
    }
}

/// What an audit record says happened, besides who did it. Metadata only: never health data.
#[derive(Clone, Copy, Debug, Default)]
pub struct Audited<'a> {
    pub action: AuditAction,
    pub operation: &'a str,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub patient_id: &'a str,
    pub outcome: AuditOutcome,
    /// A stable UPPER_SNAKE reason; empty on plain success.
    pub reason: &'a str,
    /// HL7 PurposeOfUse: `TREAT`, `ETREAT`, `HSYSADMIN`, ...
    pub purpose_of_use: &'a str,
    /// Done under emergency access (break-glass).
    pub emergency: bool,
}

/// Writes audit events into the service's outbox.
#[derive(Clone, Debug)]
pub struct Outbox {
    service: ServiceName,
    clock: SharedClock,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(service: ServiceName, clock: SharedClock) -> Self {
        Self {
            service,
            clock,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A new event with its id, time, emitting service and trace id filled in; the caller sets
    /// who, what, outcome and so on.
    pub fn new_event(&self) -> AuditEvent {
        let now = self.clock.now();
        AuditEvent {
            event_id: Uuid::now_v7().to_string(),
            recorded_at: Some(crate::time::to_timestamp(now)),
            service: self.service.spiffe_id().to_string(),
            trace_id: telemetry::current_trace_id(),
            ..AuditEvent::default()
        }
    }

    /// Stores `event` through `conn`: pass the transaction that makes the change it describes.
    /// An invalid event fails here, in its own transaction, rather than poisoning the relay.
    pub async fn record<C: ConnectionTrait>(&self, conn: &C, event: &AuditEvent) -> Result<(), Error> {
        self.record_many(conn, std::slice::from_ref(event)).await
    }

    /// Stores `events` through `conn` in one statement (the transaction of the changes they
    /// describe). Every event is checked first; an invalid one stores none of them.
    pub async fn record_many<C: ConnectionTrait>(&self, conn: &C, events: &[AuditEvent]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            validate_event(event)?;
        }
        // Inserted without reading the rows back (on SQLite that would be another statement in
        // the caller's write transaction). Waking the relay before the commit is harmless: it
        // also polls on an interval.
        let now = self.clock.now();
        entity::Entity::insert_many(events.iter().map(|event| entity::ActiveModel {
            event_id: Set(event.event_id.clone()),
            payload: Set(event.encode_to_vec()),
            created_at: Set(now),
        }))
        .exec_without_returning(conn)
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// The event that records that `actor` did `audited` (not stored yet: see [`Self::record`]).
    pub fn action_event(&self, actor: &Actor, audited: Audited<'_>) -> AuditEvent {
        let mut event = self.new_event();
        event.actor = Some(AuditActor {
            user_id: actor.user_id.clone(),
            role: actor.role.clone(),
            session_id: actor.session_id.clone(),
            source_address: actor.source_address.clone(),
            peer_identity: String::new(),
        });
        event.set_action(audited.action);
        event.operation = audited.operation.to_owned();
        event.entity_type = audited.entity_type.to_owned();
        event.entity_id = audited.entity_id.to_owned();
        event.patient_id = audited.patient_id.to_owned();
        event.set_outcome(audited.outcome);
        event.outcome_reason = audited.reason.to_owned();
        event.purpose_of_use = audited.purpose_of_use.to_owned();
        event.emergency = audited.emergency;
        event
    }

    /// Records that `actor` did `audited`, through `conn` (the transaction of the change).
    pub async fn record_action<C: ConnectionTrait>(
        &self,
        conn: &C,
        actor: &Actor,
        audited: Audited<'_>,
    ) -> Result<(), Error> {
        self.record(conn, &self.action_event(actor, audited)).await
    }

    /// Records that `actor` was refused `audited` (outcome DENIED, the refusal's reason) in a
    /// transaction of its own (in `writer`'s turn), and returns the refusal. A refusal changes nothing, so
    /// there is no change to share a transaction with; if even this write fails, the failure is
    /// logged and the caller still gets the refusal.
    pub async fn record_refusal(&self, writer: &Writer, actor: &Actor, audited: Audited<'_>, refusal: Error) -> Error {
        let reason = refusal.reason().to_owned();
        let audited = Audited {
            outcome: AuditOutcome::Denied,
            reason: &reason,
            ..audited
        };
        let record = async {
            let (_turn, txn) = writer.begin().await?;
            self.record_action(&txn, actor, audited).await?;
            txn.commit().await?;
            Ok::<(), Error>(())
        };
        if let Err(error) = record.await {
            tracing::error!(
                reason = error.reason(),
                "could not record a refusal in the audit outbox"
            );
        }
        self.wake_relay();
        refusal
    }

    /// Nudges the relay to ship now (e.g. right after a commit).
    pub fn wake_relay(&self) {
        self.wake.notify_one();
    }

    /// The relay that ships this outbox to audit-svc.
    pub fn relay(&self, writer: Writer, audit: MeshChannel, config: RelayConfig) -> Relay {
        Relay {
            writer,
            client: AuditInternalServiceClient::new(audit),
            config,
            wake: Arc::clone(&self.wake),
        }
    }
}

/// The longest string field an audit event may carry.
pub const MAX_EVENT_FIELD_LEN: usize = 512;

/// The checks audit-svc applies to every event it ingests, applied when the event is written too.
pub fn validate_event(event: &AuditEvent) -> Result<(), Error> {
    let invalid = |reason: &'static str, message: String| Err(Error::invalid_argument(reason, message));
    if Uuid::parse_str(&event.event_id).is_err() {
        return invalid(
            "INVALID_EVENT_ID",
            format!("event_id {:?} is not a UUID", event.event_id),
        );
    }
    if event.recorded_at.is_none() {
        return invalid(
            "MISSING_RECORDED_AT",
            format!("event {} has no recorded_at", event.event_id),
        );
    }
    if event.action() == AuditAction::Unspecified || event.outcome() == AuditOutcome::Unspecified {
        return invalid(
            "MISSING_ACTION_OR_OUTCOME",
            format!("event {} must set both action and outcome", event.event_id),
        );
    }
    if event.operation.is_empty() || event.service.is_empty() {
        return invalid(
            "MISSING_OPERATION_OR_SERVICE",
            format!("event {} must name its operation and service", event.event_id),
        );
    }
    let actor = event.actor.clone().unwrap_or_default();
    let fields = [
        &event.operation,
        &event.entity_type,
        &event.entity_id,
        &event.patient_id,
        &event.service,
        &event.outcome_reason,
        &event.purpose_of_use,
        &event.trace_id,
        &actor.user_id,
        &actor.role,
        &actor.session_id,
        &actor.source_address,
        &actor.peer_identity,
    ];
    if fields.iter().any(|field| field.len() > MAX_EVENT_FIELD_LEN) {
        return invalid(
            "EVENT_FIELD_TOO_LONG",
            format!(
                "event {} has a field longer than {MAX_EVENT_FIELD_LEN} bytes",
                event.event_id
            ),
        );
    }
    Ok(())
}

/// Ships outbox rows to audit-svc and deletes them once accepted.
#[derive(Debug)]
pub struct Relay {
    writer: Writer,
    client: AuditInternalServiceClient<MeshChannel>,
    config: RelayConfig,
    wake: Arc<Notify>,
}

impl Relay {
    /// Runs until `shutdown`, shipping batches as they appear.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.ship_batch().await {
                Ok(shipped) if shipped > 0 => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(_) => {
                    tokio::select! {
                        () = self.wake.notified() => {
                            tokio::select! {
                                () = tokio::time::sleep(self.config.linger) => {}
                                () = shutdown.cancelled() => return,
                            }
                        }
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "audit relay: shipping failed; will retry");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Ships one batch; returns how many events left the outbox.
    pub async fn ship_batch(&mut self) -> Result<usize, Error> {
        let rows = entity::Entity::find()
            .order_by_asc(entity::Column::EventId)
            .limit(self.config.batch_size)
            .all(self.writer.db())
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut events = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            match AuditEvent::decode(row.payload.as_slice()) {
                Ok(event) => events.push(event),
                // Only a corrupted database gets here; the row can never be delivered.
                Err(error) => {
                    tracing::error!(event_id = %row.event_id, %error, "audit relay: dropping undecodable outbox row")
                }
            }
            ids.push(row.event_id);
        }
        let span = tracing::info_span!("audit.relay.ship", events = events.len());
        let mut request = tonic::Request::new(IngestEventsRequest { events });
        request.set_timeout(self.config.request_timeout);
        self.client
            .ingest_events(request)
            .instrument(span)
            .await
            .map_err(|status| Error::unavailable("AUDIT_UNAVAILABLE", format!("audit-svc: {}", status.message())))?;
        let shipped = ids.len();
        // In the service's write turn: on SQLite, colliding with one of its writes would put
        // one of the two to sleep in the busy handler.
        let _turn = self.writer.turn().await;
        entity::Entity::delete_many()
            .filter(entity::Column::EventId.is_in(ids))
            .exec(self.writer.db())
            .await?;
        Ok(shipped)
    }
}
