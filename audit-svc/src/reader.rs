//! Reading the log: auditor queries, the patient access report (HIPAA accounting of
//! disclosures), alerts, proofs and exports. Who may do what is decided here; every query is
//! itself written to the audit log through the outbox (granted or denied).
//! No tonic here: callers arrive as a [`Caller`] (the verified token's principal and address).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caremesh_proto::audit::v1::{self as pb, AuditAction, AuditActor, AuditEvent, AuditOutcome};
use caremesh_runtime::auth::Principal;
use caremesh_runtime::db::begin_write;
use caremesh_runtime::outbox::Outbox;
use caremesh_runtime::{Error, time};
use prost::Message;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use sha2::{Digest, Sha256};

use crate::checkpoints::Checkpointer;
use crate::log::EventLog;
use crate::storage::{alert, event};
use crate::tree;

pub const AUDITOR: &str = "auditor";
/// The entity type of the events that audit reads of the log itself.
pub const QUERY_ENTITY: &str = "AuditQuery";
const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = 1000;

/// Who is calling, as the audit log records it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub source_address: String,
}

impl Caller {
    fn is_auditor(&self) -> bool {
        self.principal.role == AUDITOR && self.principal.aal >= 2
    }
}

/// The read side of the log.
#[derive(Clone, Debug)]
pub struct Reader {
    pub log: EventLog,
    pub checkpoints: Checkpointer,
    pub outbox: Outbox,
    /// Where actors' names come from (none: reports without names).
    pub names: Option<crate::names::Directory>,
}

fn page_size(requested: i32) -> Result<u64, Error> {
    match u64::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE),
        Ok(size) => Ok(size.min(MAX_PAGE)),
        Err(_) => Err(Error::invalid_argument(
            "INVALID_PAGE_SIZE",
            "page_size must not be negative",
        )),
    }
}

/// A page token: the last position returned, bound to the request's filters.
fn encode_token(position: i64, fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1.{position}.{fingerprint}"))
}

fn decode_token(token: &str, fingerprint: &str) -> Result<Option<i64>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid_argument(
            "INVALID_PAGE_TOKEN",
            "page_token is not one this service issued for this request: pass next_page_token unchanged, with the same filters",
        )
    };
    let text = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(text).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '.');
    let (Some("v1"), Some(position), Some(bound)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if bound != fingerprint {
        return Err(invalid());
    }
    position.parse::<i64>().map(Some).map_err(|_| invalid())
}

/// Binds a page token to the request it continues (everything but the token and page size).
fn fingerprint<M: Message>(request: &M) -> String {
    let digest = Sha256::digest(request.encode_to_vec());
    hex::encode(digest.get(..8).unwrap_or_default())
}

fn time_range(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    column: impl ColumnTrait + Copy,
) -> Result<Condition, Error> {
    let mut condition = Condition::all();
    if let Some(start) = start {
        let start = time::from_timestamp(start)
            .ok_or_else(|| Error::invalid_argument("INVALID_START_TIME", "start_time is out of range"))?;
        condition = condition.add(column.gte(start));
    }
    if let Some(end) = end {
        let end = time::from_timestamp(end)
            .ok_or_else(|| Error::invalid_argument("INVALID_END_TIME", "end_time is out of range"))?;
        condition = condition.add(column.lt(end));
    }
    Ok(condition)
}

fn decode_event(payload: &[u8]) -> Result<AuditEvent, Error> {
    AuditEvent::decode(payload).map_err(|error| Error::internal("decoding a stored audit event", error))
}

fn entry(row: event::Model, with_value: bool) -> Result<pb::LogEntry, Error> {
    let leaf_index = row
        .leaf_index
        .ok_or_else(|| Error::internal("reading a log entry", "an event has no leaf index"))?;
    Ok(pb::LogEntry {
        leaf_index: tree::to_u64(leaf_index)?,
        event: Some(decode_event(&row.payload)?),
        integrate_time: Some(time::to_timestamp(row.ingested_at)),
        leaf_hash: row.leaf_hash.unwrap_or_default(),
        leaf_value: if with_value { row.payload } else { Vec::new() },
    })
}

impl Reader {
    /// Writes the audit event of a read of the log.
    async fn audit(
        &self,
        caller: &Caller,
        operation: &str,
        patient_id: &str,
        denied: Option<&Error>,
    ) -> Result<(), Error> {
        let mut event = self.outbox.new_event();
        event.actor = Some(AuditActor {
            user_id: caller.principal.user_id.clone(),
            role: caller.principal.role.clone(),
            session_id: caller.principal.session_id.clone(),
            source_address: caller.source_address.clone(),
            peer_identity: String::new(),
        });
        event.set_action(AuditAction::Read);
        event.operation = format!("/caremesh.audit.v1.AuditService/{operation}");
        event.entity_type = QUERY_ENTITY.to_owned();
        event.patient_id = patient_id.to_owned();
        event.purpose_of_use = if caller.principal.user_id == patient_id {
            "PATRQT".to_owned()
        } else {
            "HOPERAT".to_owned()
        };
        match denied {
            Some(error) => {
                event.set_outcome(AuditOutcome::Denied);
                event.outcome_reason = error.reason().to_owned();
            }
            None => event.set_outcome(AuditOutcome::Success),
        }
        let txn = begin_write(&self.log.db).await?;
        self.outbox.record(&txn, &event).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Checks `allowed`, auditing the refusal when it fails.
    async fn authorize(
        &self,
        caller: &Caller,
        operation: &str,
        patient_id: &str,
        allowed: Result<(), Error>,
    ) -> Result<(), Error> {
        if let Err(error) = allowed {
            self.audit(caller, operation, patient_id, Some(&error)).await?;
            return Err(error);
        }
        Ok(())
    }

    /// `CreateCheckpoint`: auditors ask for a signed checkpoint now.
    pub async fn create_checkpoint(&self, caller: &Caller) -> Result<pb::Checkpoint, Error> {
        let allowed = caller.principal.require_role(&[AUDITOR]);
        self.authorize(caller, "CreateCheckpoint", "", allowed).await?;
        self.checkpoints.create().await
    }

    /// `QueryEvents`: auditors search the log.
    pub async fn query_events(
        &self,
        caller: &Caller,
        request: &pb::QueryEventsRequest,
    ) -> Result<pb::QueryEventsResponse, Error> {
        let allowed = caller.principal.require_role(&[AUDITOR]);
        self.authorize(caller, "QueryEvents", &request.patient_id, allowed)
            .await?;
        let limit = page_size(request.page_size)?;
        let mut bound = request.clone();
        bound.page_token.clear();
        bound.page_size = 0;
        let print = fingerprint(&bound);
        let after = decode_token(&request.page_token, &print)?;

        let mut condition = time_range(
            request.start_time.as_ref(),
            request.end_time.as_ref(),
            event::Column::RecordedAt,
        )?;
        let text_filters = [
            (event::Column::PatientId, &request.patient_id),
            (event::Column::ActorUserId, &request.actor_user_id),
            (event::Column::EntityType, &request.entity_type),
            (event::Column::EntityId, &request.entity_id),
            (event::Column::Service, &request.service),
            (event::Column::Operation, &request.operation),
        ];
        for (column, value) in text_filters {
            if !value.is_empty() {
                condition = condition.add(column.eq(value.as_str()));
            }
        }
        if request.action != 0 {
            AuditAction::try_from(request.action)
                .map_err(|_| Error::invalid_argument("INVALID_ACTION", "action is not a known AuditAction"))?;
            condition = condition.add(event::Column::Action.eq(request.action));
        }
        if request.outcome != 0 {
            AuditOutcome::try_from(request.outcome)
                .map_err(|_| Error::invalid_argument("INVALID_OUTCOME", "outcome is not a known AuditOutcome"))?;
            condition = condition.add(event::Column::Outcome.eq(request.outcome));
        }
        if request.emergency_only {
            condition = condition.add(event::Column::Emergency.eq(true));
        }
        let oldest_first = match pb::SortOrder::try_from(request.order) {
            Ok(pb::SortOrder::OldestFirst) => true,
            Ok(_) => false,
            Err(_) => {
                return Err(Error::invalid_argument(
                    "INVALID_ORDER",
                    "order is not a known SortOrder",
                ));
            }
        };
        let (entries, next) = self.page(condition, after, oldest_first, limit).await?;
        self.audit(caller, "QueryEvents", &request.patient_id, None).await?;
        Ok(pb::QueryEventsResponse {
            entries: entries
                .into_iter()
                .map(|row| entry(row, false))
                .collect::<Result<_, _>>()?,
            next_page_token: next.map(|position| encode_token(position, &print)).unwrap_or_default(),
        })
    }

    /// One page of events in leaf order, after the token's position.
    async fn page(
        &self,
        mut condition: Condition,
        after: Option<i64>,
        oldest_first: bool,
        limit: u64,
    ) -> Result<(Vec<event::Model>, Option<i64>), Error> {
        condition = condition.add(event::Column::LeafIndex.is_not_null());
        if let Some(after) = after {
            condition = condition.add(if oldest_first {
                event::Column::LeafIndex.gt(after)
            } else {
                event::Column::LeafIndex.lt(after)
            });
        }
        let query = event::Entity::find().filter(condition);
        let query = if oldest_first {
            query.order_by_asc(event::Column::LeafIndex)
        } else {
            query.order_by_desc(event::Column::LeafIndex)
        };
        let mut rows = query.limit(limit + 1).all(&self.log.db).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = if more {
            rows.last().and_then(|row| row.leaf_index)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// `ListPatientAccesses`: who accessed a patient's data. Patients see their own; auditors any.
    pub async fn list_patient_accesses(
        &self,
        caller: &Caller,
        request: &pb::ListPatientAccessesRequest,
    ) -> Result<pb::ListPatientAccessesResponse, Error> {
        let patient_id = if request.patient_id.is_empty() {
            caller.principal.user_id.clone()
        } else {
            request.patient_id.clone()
        };
        let allowed = caller.principal.require_aal2().and_then(|()| {
            if patient_id == caller.principal.user_id || caller.is_auditor() {
                Ok(())
            } else {
                Err(Error::permission_denied(
                    "NOT_YOUR_RECORDS",
                    "you may list the accesses to your own records only: leave patient_id empty",
                ))
            }
        });
        self.authorize(caller, "ListPatientAccesses", &patient_id, allowed)
            .await?;
        let limit = page_size(request.page_size)?;
        let mut bound = request.clone();
        bound.page_token.clear();
        bound.page_size = 0;
        bound.patient_id = patient_id.clone();
        let print = fingerprint(&bound);
        let after = decode_token(&request.page_token, &print)?;
        let mut condition = time_range(
            request.start_time.as_ref(),
            request.end_time.as_ref(),
            event::Column::RecordedAt,
        )?
        .add(event::Column::PatientId.eq(patient_id.as_str()))
        // Reads of the audit log itself are not accesses to the patient's records.
        .add(event::Column::EntityType.ne(QUERY_ENTITY));
        if !request.include_own {
            condition = condition.add(event::Column::ActorUserId.ne(patient_id.as_str()));
        }
        let (rows, next) = self.page(condition, after, false, limit).await?;
        self.audit(caller, "ListPatientAccesses", &patient_id, None).await?;
        let names = match &self.names {
            Some(directory) => {
                let mut actors: Vec<String> = rows.iter().map(|row| row.actor_user_id.clone()).collect();
                actors.sort();
                actors.dedup();
                actors.retain(|actor| !actor.is_empty());
                directory.names(&actors).await
            }
            None => std::collections::HashMap::new(),
        };
        let mut accesses = Vec::with_capacity(rows.len());
        for row in rows {
            let event = decode_event(&row.payload)?;
            let actor = event.actor.clone().unwrap_or_default();
            let known = names.get(&actor.user_id).cloned().unwrap_or_default();
            accesses.push(pb::PatientAccess {
                event_id: event.event_id,
                access_time: event.recorded_at,
                actor_user_id: actor.user_id,
                actor_username: known.username,
                actor_display_name: known.display_name,
                actor_role: actor.role,
                action: event.action,
                operation: event.operation,
                entity_type: event.entity_type,
                entity_id: event.entity_id,
                purpose_of_use: event.purpose_of_use,
                emergency: event.emergency,
                outcome: event.outcome,
            });
        }
        Ok(pb::ListPatientAccessesResponse {
            accesses,
            next_page_token: next.map(|position| encode_token(position, &print)).unwrap_or_default(),
        })
    }

    /// `ListAlerts`: stored alerts, newest first (auditors).
    pub async fn list_alerts(
        &self,
        caller: &Caller,
        request: &pb::ListAlertsRequest,
    ) -> Result<pb::ListAlertsResponse, Error> {
        let allowed = caller.principal.require_role(&[AUDITOR]);
        self.authorize(caller, "ListAlerts", "", allowed).await?;
        let limit = page_size(request.page_size)?;
        let mut bound = request.clone();
        bound.page_token.clear();
        bound.page_size = 0;
        let print = fingerprint(&bound);
        let after = decode_token(&request.page_token, &print)?;
        let mut condition = time_range(
            request.start_time.as_ref(),
            request.end_time.as_ref(),
            alert::Column::CreatedAt,
        )?
        .add(kinds_condition(&request.kinds)?);
        if let Some(after) = after {
            condition = condition.add(alert::Column::Seq.lt(after));
        }
        let mut rows = alert::Entity::find()
            .filter(condition)
            .order_by_desc(alert::Column::Seq)
            .limit(limit + 1)
            .all(&self.log.db)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = if more { rows.last().map(|row| row.seq) } else { None };
        self.audit(caller, "ListAlerts", "", None).await?;
        Ok(pb::ListAlertsResponse {
            alerts: rows.into_iter().map(crate::alerts::to_proto).collect(),
            next_page_token: next.map(|position| encode_token(position, &print)).unwrap_or_default(),
        })
    }

    /// Checks a caller may follow the alert stream; returns the starting cursor.
    pub async fn start_alert_stream(&self, caller: &Caller, request: &pb::StreamAlertsRequest) -> Result<i64, Error> {
        let allowed = caller.principal.require_role(&[AUDITOR]);
        self.authorize(caller, "StreamAlerts", "", allowed).await?;
        kinds_condition(&request.kinds)?;
        let cursor = if request.cursor.is_empty() {
            alert::Entity::find()
                .select_only()
                .column_as(alert::Column::Seq.max(), "max")
                .into_tuple::<Option<i64>>()
                .one(&self.log.db)
                .await?
                .flatten()
                .unwrap_or(0)
        } else {
            request
                .cursor
                .strip_prefix('a')
                .and_then(|seq| seq.parse::<i64>().ok())
                .ok_or_else(|| {
                    Error::invalid_argument("INVALID_CURSOR", "cursor must be one a StreamAlertsResponse carried")
                })?
        };
        self.audit(caller, "StreamAlerts", "", None).await?;
        Ok(cursor)
    }

    /// The alerts after `cursor` (at most 100), oldest first, with their cursors.
    pub async fn alerts_after(&self, cursor: i64, kinds: &[i32]) -> Result<Vec<pb::StreamAlertsResponse>, Error> {
        let rows = alert::Entity::find()
            .filter(alert::Column::Seq.gt(cursor))
            .filter(kinds_condition(kinds)?)
            .order_by_asc(alert::Column::Seq)
            .limit(100)
            .all(&self.log.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let cursor = format!("a{}", row.seq);
                pb::StreamAlertsResponse {
                    alert: Some(crate::alerts::to_proto(row)),
                    cursor,
                }
            })
            .collect())
    }

    /// Waits until alerts may have been raised (or a second passed).
    pub async fn wait_for_alerts(&self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.log.alerts_raised.notified()).await;
    }

    /// `GetInclusionProof`: auditors, or the patient an event is about.
    pub async fn inclusion_proof(
        &self,
        caller: &Caller,
        request: &pb::GetInclusionProofRequest,
    ) -> Result<pb::GetInclusionProofResponse, Error> {
        caller.principal.require_aal2()?;
        let row = match &request.leaf {
            Some(pb::get_inclusion_proof_request::Leaf::EventId(id)) => {
                event::Entity::find()
                    .filter(event::Column::EventId.eq(id.as_str()))
                    .one(&self.log.db)
                    .await?
            }
            Some(pb::get_inclusion_proof_request::Leaf::LeafIndex(index)) => {
                event::Entity::find()
                    .filter(event::Column::LeafIndex.eq(tree::to_i64(*index)?))
                    .one(&self.log.db)
                    .await?
            }
            None => {
                return Err(Error::invalid_argument(
                    "LEAF_REQUIRED",
                    "name the event: set event_id or leaf_index",
                ));
            }
        };
        let allowed = match &row {
            Some(row) if row.patient_id == caller.principal.user_id => Ok(()),
            _ => caller.principal.require_role(&[AUDITOR]),
        };
        let patient = row.as_ref().map(|row| row.patient_id.clone()).unwrap_or_default();
        self.authorize(caller, "GetInclusionProof", &patient, allowed).await?;
        let row =
            row.ok_or_else(|| Error::not_found("EVENT_NOT_FOUND", "no event in the log has that id or leaf index"))?;
        let checkpoint = self.checkpoints.get(request.tree_size).await?;
        let index = row
            .leaf_index
            .map(tree::to_u64)
            .transpose()?
            .ok_or_else(|| Error::internal("reading a log entry", "an event has no leaf index"))?;
        if index >= checkpoint.tree_size {
            return Err(Error::failed_precondition(
                "NOT_YET_CHECKPOINTED",
                format!(
                    "leaf {index} is not in the checkpoint of size {}: retry after the next checkpoint (about a second)",
                    checkpoint.tree_size
                ),
            ));
        }
        let hashes = tree::inclusion_proof(&self.log.db, index, checkpoint.tree_size).await?;
        self.audit(caller, "GetInclusionProof", &row.patient_id, None).await?;
        Ok(pb::GetInclusionProofResponse {
            entry: Some(entry(row, true)?),
            checkpoint: Some(checkpoint),
            hashes: hashes.into_iter().map(|hash| hash.to_vec()).collect(),
        })
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (no checks on the caller;
    /// for benchmarks and tools).
    pub async fn leaf_proof(&self, index: u64, size: u64) -> Result<Vec<Vec<u8>>, Error> {
        Ok(tree::inclusion_proof(&self.log.db, index, size)
            .await?
            .into_iter()
            .map(|hash| hash.to_vec())
            .collect())
    }

    /// `GetConsistencyProof`: any authenticated user at AAL2.
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<pb::GetConsistencyProofResponse, Error> {
        let checkpoint = self.checkpoints.get(second).await?;
        if first > checkpoint.tree_size {
            return Err(Error::invalid_argument(
                "FIRST_SIZE_TOO_LARGE",
                format!(
                    "first_tree_size {first} is larger than the second checkpoint's size {}",
                    checkpoint.tree_size
                ),
            ));
        }
        let hashes = tree::consistency_proof(&self.log.db, first, checkpoint.tree_size).await?;
        Ok(pb::GetConsistencyProofResponse {
            first_tree_size: first,
            second_checkpoint: Some(checkpoint),
            hashes: hashes.into_iter().map(|hash| hash.to_vec()).collect(),
        })
    }

    /// Starts an export (auditors): the checkpoint the export refers to and the leaf range.
    pub async fn start_export(
        &self,
        caller: &Caller,
        request: &pb::ExportEventsRequest,
    ) -> Result<(pb::Checkpoint, u64, u64), Error> {
        let allowed = caller.principal.require_role(&[AUDITOR]);
        self.authorize(caller, "ExportEvents", "", allowed).await?;
        let checkpoint = self.checkpoints.create().await?;
        let end = if request.end_index == 0 {
            checkpoint.tree_size
        } else {
            request.end_index
        };
        if end > checkpoint.tree_size || request.start_index > end {
            return Err(Error::invalid_argument(
                "INVALID_EXPORT_RANGE",
                format!(
                    "export a range within 0..{} (start_index <= end_index; 0 as end_index means the whole log)",
                    checkpoint.tree_size
                ),
            ));
        }
        self.audit(caller, "ExportEvents", "", None).await?;
        Ok((checkpoint, request.start_index, end))
    }

    /// Exported entries `[start, min(start + 500, end))`, with proofs against a tree of `size`.
    pub async fn export_page(
        &self,
        start: u64,
        end: u64,
        size: u64,
        proofs: bool,
    ) -> Result<Vec<pb::ExportedEntry>, Error> {
        let stop = end.min(start.saturating_add(500));
        let rows = event::Entity::find()
            .filter(event::Column::LeafIndex.gte(tree::to_i64(start)?))
            .filter(event::Column::LeafIndex.lt(tree::to_i64(stop)?))
            .order_by_asc(event::Column::LeafIndex)
            .all(&self.log.db)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let entry = entry(row, true)?;
            let inclusion_proof = if proofs {
                tree::inclusion_proof(&self.log.db, entry.leaf_index, size)
                    .await?
                    .into_iter()
                    .map(|hash| hash.to_vec())
                    .collect()
            } else {
                Vec::new()
            };
            out.push(pb::ExportedEntry {
                entry: Some(entry),
                inclusion_proof,
            });
        }
        Ok(out)
    }

    /// `GetVerificationKey`.
    pub fn verification_key(&self) -> pb::GetVerificationKeyResponse {
        let verifier = self.checkpoints.verifier();
        pb::GetVerificationKeyResponse {
            origin: self.checkpoints.origin().to_owned(),
            key_name: verifier.name().to_owned(),
            public_key: verifier.public_key().to_vec(),
            verifier_key: verifier.to_text(),
        }
    }
}

fn kinds_condition(kinds: &[i32]) -> Result<Condition, Error> {
    let mut wanted = Vec::new();
    for kind in kinds {
        match pb::AlertKind::try_from(*kind) {
            Ok(pb::AlertKind::Unspecified) => {}
            Ok(_) => wanted.push(*kind),
            Err(_) => {
                return Err(Error::invalid_argument(
                    "INVALID_ALERT_KIND",
                    "kinds holds an unknown AlertKind",
                ));
            }
        }
    }
    let mut condition = Condition::all();
    if !wanted.is_empty() {
        condition = condition.add(alert::Column::Kind.is_in(wanted));
    }
    Ok(condition)
}
