//! Alert rules over incoming events, run in the ingest transaction:
//! - a burst of failed logins for one account, or from one source host;
//! - every emergency (break-glass) access;
//! - a burst of denied accesses by one actor (logins excluded, they have their own rules);
//! - one actor reading many different patients' data in a short window.
//!
//! Windows are measured on the events' `recorded_at`. A burst rule raises one alert per subject
//! per window: while an alert for the same subject covers the window, further matches are quiet.
//! Alerts carry ids and counts only, never health data.

use std::collections::{BTreeMap, BTreeSet};

use caremesh_proto::audit::v1::{self as pb, AlertKind, AlertSeverity, AuditAction, AuditEvent, AuditOutcome};
use caremesh_runtime::{Error, time};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Select, Set,
};

use crate::log::source_host;
use crate::settings::{AuditSettings, Burst};
use crate::storage::{alert, checkpoint, event};

/// Rows a burst rule reads at most per subject.
const SCAN_LIMIT: u64 = 5000;
/// Event ids an alert lists at most.
const MAX_EVENT_IDS: usize = 100;
/// auth-svc's audit reason for a passkey answer whose signature counter went backwards.
const PASSKEY_COUNTER_REGRESSION: &str = "PASSKEY_COUNTER_REGRESSION";

fn is_failed_login(event: &AuditEvent) -> bool {
    event.outcome == AuditOutcome::Denied as i32 && event.operation.contains("login")
}

fn actor_id(event: &AuditEvent) -> &str {
    event.actor.as_ref().map_or("", |actor| actor.user_id.as_str())
}

/// The subject of a burst rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    LoginAccount(String),
    LoginSource(String),
    Denials(String),
    Patients(String),
}

impl Subject {
    fn kind(&self) -> AlertKind {
        match self {
            Self::LoginAccount(_) => AlertKind::FailedLoginBurstAccount,
            Self::LoginSource(_) => AlertKind::FailedLoginBurstSource,
            Self::Denials(_) => AlertKind::DenialBurst,
            Self::Patients(_) => AlertKind::ManyPatientsAccessed,
        }
    }

    fn key(&self) -> String {
        match self {
            Self::LoginAccount(id) => format!("login-account:{id}"),
            Self::LoginSource(host) => format!("login-source:{host}"),
            Self::Denials(id) => format!("denials:{id}"),
            Self::Patients(id) => format!("patients:{id}"),
        }
    }

    fn burst(&self, settings: &AuditSettings) -> Burst {
        match self {
            Self::LoginAccount(_) => settings.failed_login_account,
            Self::LoginSource(_) => settings.failed_login_source,
            Self::Denials(_) => settings.denial,
            Self::Patients(_) => settings.many_patients,
        }
    }

    /// The stored events this rule counts. The per-actor rules compare `action` and `outcome`
    /// as `column + 0`, which no index serves, so that the planner walks the actor's index
    /// `(actor_user_id, leaf_index)` (a handful of rows) and never the low-cardinality
    /// `(action, leaf_index)` or `(outcome, leaf_index)` ones (every read, or every denial, in
    /// the log). The source rule has no actor; it walks the outcome index, where denials are few.
    fn condition(&self) -> Condition {
        let login = event::Column::Operation.contains("login");
        match self {
            Self::LoginAccount(id) => Condition::all()
                .add(unindexed_eq(event::Column::Outcome, AuditOutcome::Denied as i32))
                .add(login)
                .add(event::Column::ActorUserId.eq(id.as_str())),
            Self::LoginSource(host) => Condition::all()
                .add(event::Column::Outcome.eq(AuditOutcome::Denied as i32))
                .add(login)
                .add(event::Column::SourceAddress.eq(host.as_str())),
            Self::Denials(id) => Condition::all()
                .add(unindexed_eq(event::Column::Outcome, AuditOutcome::Denied as i32))
                .add(event::Column::Operation.not_like("%login%"))
                .add(event::Column::ActorUserId.eq(id.as_str())),
            Self::Patients(id) => Condition::all()
                .add(unindexed_eq(event::Column::Action, AuditAction::Read as i32))
                .add(unindexed_eq(event::Column::Outcome, AuditOutcome::Success as i32))
                .add(event::Column::ActorUserId.eq(id.as_str()))
                .add(event::Column::PatientId.ne(""))
                .add(event::Column::PatientId.ne(id.as_str())),
        }
    }
}

/// `column + 0 = value`: the same test as `column = value`, but one no index serves.
fn unindexed_eq(column: event::Column, value: i32) -> Expr {
    use sea_orm::sea_query::ExprTrait;
    Expr::col(column).add(0).eq(value)
}

/// Runs the rules over `fresh` (just appended through `txn`); returns how many alerts were raised.
pub(crate) async fn evaluate<C: ConnectionTrait>(
    txn: &C,
    settings: &AuditSettings,
    fresh: &[&AuditEvent],
    now: DateTime<Utc>,
) -> Result<u32, Error> {
    let mut raised = 0u32;
    let auth_svc_id = caremesh_runtime::ServiceName::Auth.spiffe_id().to_string();
    // The latest time each subject was seen in this batch.
    let mut subjects: BTreeMap<Subject, DateTime<Utc>> = BTreeMap::new();
    for event in fresh {
        let at = event.recorded_at.as_ref().and_then(time::from_timestamp).unwrap_or(now);
        let actor = actor_id(event);
        let mut touch = |subject: Subject| {
            let entry = subjects.entry(subject).or_insert(at);
            *entry = (*entry).max(at);
        };
        if is_failed_login(event) {
            if !actor.is_empty() {
                touch(Subject::LoginAccount(actor.to_owned()));
            }
            let host = source_host(event.actor.as_ref().map_or("", |a| a.source_address.as_str()));
            if !host.is_empty() {
                touch(Subject::LoginSource(host));
            }
        } else if event.outcome == AuditOutcome::Denied as i32 && !actor.is_empty() {
            touch(Subject::Denials(actor.to_owned()));
        }
        if event.action == AuditAction::Read as i32
            && event.outcome == AuditOutcome::Success as i32
            && !actor.is_empty()
            && !event.patient_id.is_empty()
            && event.patient_id != actor
        {
            touch(Subject::Patients(actor.to_owned()));
        }
        let single = if event.emergency {
            Some((
                AlertKind::EmergencyAccess,
                "emergency",
                format!(
                    "emergency access ({}) by user {} to patient {}",
                    event.operation,
                    if actor.is_empty() { "unknown" } else { actor },
                    if event.patient_id.is_empty() {
                        "-"
                    } else {
                        &event.patient_id
                    },
                ),
            ))
        } else if event.outcome_reason == PASSKEY_COUNTER_REGRESSION && event.service == auth_svc_id {
            Some((
                AlertKind::ClonedAuthenticator,
                "cloned-authenticator",
                format!(
                    "passkey {} of user {} answered with a signature counter that went backwards ({}): \
                     a cloned authenticator? The sign-in was refused",
                    if event.entity_id.is_empty() {
                        "-"
                    } else {
                        &event.entity_id
                    },
                    if actor.is_empty() { "unknown" } else { actor },
                    event.operation,
                ),
            ))
        } else {
            None
        };
        // Some events alert each time they happen.
        if let Some((kind, dedupe, summary)) = single {
            let at_ts = at;
            store(
                txn,
                NewAlert {
                    kind,
                    severity: AlertSeverity::High,
                    summary,
                    actor_user_id: actor.to_owned(),
                    source_address: event
                        .actor
                        .as_ref()
                        .map(|a| a.source_address.clone())
                        .unwrap_or_default(),
                    patient_id: event.patient_id.clone(),
                    window: (at_ts, at_ts),
                    event_ids: vec![event.event_id.clone()],
                    event_count: 1,
                    dedupe_key: format!("{dedupe}:{}", event.event_id),
                },
                now,
            )
            .await?;
            raised += 1;
        }
    }
    // Which subjects already have an alert covering their window: one query for the batch.
    let mut covered: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let keys: Vec<String> = subjects.keys().map(Subject::key).collect();
    let earliest = subjects
        .iter()
        .map(|(subject, at)| window_start(settings, subject, *at))
        .min()
        .unwrap_or(now);
    for chunk in keys.chunks(500) {
        let rows: Vec<(String, DateTime<Utc>)> = alert::Entity::find()
            .select_only()
            .column(alert::Column::DedupeKey)
            .column(alert::Column::WindowEnd)
            .filter(alert::Column::DedupeKey.is_in(chunk.iter().map(String::as_str)))
            .filter(alert::Column::WindowEnd.gte(earliest))
            .into_tuple()
            .all(txn)
            .await?;
        for (key, end) in rows {
            let entry = covered.entry(key).or_insert(end);
            *entry = (*entry).max(end);
        }
    }
    let uncovered: Vec<(Subject, DateTime<Utc>)> = subjects
        .into_iter()
        .filter(|(subject, at)| {
            let start = window_start(settings, subject, *at);
            covered.get(&subject.key()).is_none_or(|end| *end < start)
        })
        .collect();
    let Some(earliest_uncovered) = uncovered
        .iter()
        .map(|(subject, at)| window_start(settings, subject, *at))
        .min()
    else {
        return Ok(raised);
    };
    let floor = scan_floor(txn, earliest_uncovered).await?;
    for (subject, at) in uncovered {
        if check_burst(txn, settings, &subject, at, floor, now).await? {
            raised += 1;
        }
    }
    Ok(raised)
}

/// How far before a window's start an event's `recorded_at` (the emitting service's clock) may
/// lie behind audit-svc's own clock, which dates checkpoints.
const CLOCK_SKEW_SLACK: TimeDelta = TimeDelta::minutes(5);

/// The first leaf a burst window starting at `start` can contain: the size of the newest
/// checkpoint signed before it (less a slack for clock skew). Every leaf below that size was
/// ingested, so recorded, before then. Bounds the rules' scans to the window instead of the
/// actor's (or every denial's) whole history. Walks back from the newest checkpoint over about
/// one checkpoint per second of the window; 0 when no checkpoint is that old.
async fn scan_floor<C: ConnectionTrait>(txn: &C, start: DateTime<Utc>) -> Result<i64, Error> {
    let before = start
        .checked_sub_signed(CLOCK_SKEW_SLACK)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let size: Option<i64> = checkpoint::Entity::find()
        .select_only()
        .column(checkpoint::Column::TreeSize)
        .filter(checkpoint::Column::CreatedAt.lt(before))
        .order_by_desc(checkpoint::Column::TreeSize)
        .limit(1)
        .into_tuple()
        .one(txn)
        .await?;
    Ok(size.unwrap_or(0))
}

fn window_start(settings: &AuditSettings, subject: &Subject, at: DateTime<Utc>) -> DateTime<Utc> {
    let window = TimeDelta::from_std(subject.burst(settings).window).unwrap_or(TimeDelta::MAX);
    at.checked_sub_signed(window).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

async fn check_burst<C: ConnectionTrait>(
    txn: &C,
    settings: &AuditSettings,
    subject: &Subject,
    at: DateTime<Utc>,
    floor: i64,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let burst = subject.burst(settings);
    let start = window_start(settings, subject, at);
    let key = subject.key();
    let rows: Vec<(String, String)> = burst_query(subject, start, at, floor).into_tuple().all(txn).await?;
    let count = match subject {
        Subject::Patients(_) => rows.iter().map(|(_, patient)| patient).collect::<BTreeSet<_>>().len(),
        _ => rows.len(),
    };
    if u32::try_from(count).unwrap_or(u32::MAX) < burst.threshold {
        return Ok(false);
    }
    let seconds = burst.window.as_secs();
    let (summary, actor_user_id, source_address, severity) = match subject {
        Subject::LoginAccount(id) => (
            format!("{count} failed logins for user {id} in {seconds}s"),
            id.clone(),
            String::new(),
            AlertSeverity::Medium,
        ),
        Subject::LoginSource(host) => (
            format!("{count} failed logins from {host} in {seconds}s"),
            String::new(),
            host.clone(),
            AlertSeverity::High,
        ),
        Subject::Denials(id) => (
            format!("{count} denied accesses by user {id} in {seconds}s"),
            id.clone(),
            String::new(),
            AlertSeverity::Medium,
        ),
        Subject::Patients(id) => (
            format!("user {id} read the data of {count} different patients in {seconds}s"),
            id.clone(),
            String::new(),
            AlertSeverity::High,
        ),
    };
    store(
        txn,
        NewAlert {
            kind: subject.kind(),
            severity,
            summary,
            actor_user_id,
            source_address,
            patient_id: String::new(),
            window: (start, at),
            event_count: u32::try_from(rows.len()).unwrap_or(u32::MAX),
            event_ids: rows.into_iter().take(MAX_EVENT_IDS).map(|(id, _)| id).collect(),
            dedupe_key: key,
        },
        now,
    )
    .await?;
    Ok(true)
}

/// The events `subject`'s rule counts in the window `[start, at]`, newest first, from leaf
/// `floor` on (see [`scan_floor`]).
fn burst_query(subject: &Subject, start: DateTime<Utc>, at: DateTime<Utc>, floor: i64) -> Select<event::Entity> {
    event::Entity::find()
        .select_only()
        .column(event::Column::EventId)
        .column(event::Column::PatientId)
        .filter(subject.condition())
        .filter(event::Column::LeafIndex.gte(floor))
        .filter(event::Column::RecordedAt.gte(start))
        .filter(event::Column::RecordedAt.lte(at))
        .order_by_desc(event::Column::LeafIndex)
        .limit(SCAN_LIMIT)
}

struct NewAlert {
    kind: AlertKind,
    severity: AlertSeverity,
    summary: String,
    actor_user_id: String,
    source_address: String,
    patient_id: String,
    window: (DateTime<Utc>, DateTime<Utc>),
    event_count: u32,
    event_ids: Vec<String>,
    dedupe_key: String,
}

async fn store<C: ConnectionTrait>(txn: &C, new: NewAlert, now: DateTime<Utc>) -> Result<(), Error> {
    tracing::warn!(
        kind = new.kind.as_str_name(),
        events = new.event_count,
        "audit alert raised"
    );
    alert::Entity::insert(alert::ActiveModel {
        seq: NotSet,
        alert_id: Set(uuid::Uuid::now_v7().to_string()),
        kind: Set(new.kind as i32),
        severity: Set(new.severity as i32),
        created_at: Set(now),
        summary: Set(new.summary),
        actor_user_id: Set(new.actor_user_id),
        source_address: Set(new.source_address),
        patient_id: Set(new.patient_id),
        window_start: Set(new.window.0),
        window_end: Set(new.window.1),
        event_count: Set(i32::try_from(new.event_count).unwrap_or(i32::MAX)),
        event_ids: Set(new.event_ids.join(",")),
        dedupe_key: Set(new.dedupe_key),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// The API form of a stored alert.
pub(crate) fn to_proto(row: alert::Model) -> pb::Alert {
    pb::Alert {
        alert_id: row.alert_id,
        kind: row.kind,
        severity: row.severity,
        create_time: Some(time::to_timestamp(row.created_at)),
        summary: row.summary,
        actor_user_id: row.actor_user_id,
        source_address: row.source_address,
        patient_id: row.patient_id,
        window_start_time: Some(time::to_timestamp(row.window_start)),
        window_end_time: Some(time::to_timestamp(row.window_end)),
        event_count: u32::try_from(row.event_count).unwrap_or(0),
        event_ids: row
            .event_ids
            .split(',')
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use caremesh_runtime::config::DatabaseConfig;
    use sea_orm::{DbBackend, QueryTrait, Statement};

    use super::*;

    /// Each rule's scan starts at the window's first leaf on an index that leads with its
    /// subject: never the whole history of reads or denials in the log.
    #[tokio::test]
    async fn burst_scans_are_bounded_by_subject_and_window() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display()),
            schema: String::new(),
        };
        let db = caremesh_runtime::db::connect_and_migrate::<crate::storage::Migrator>(&config)
            .await
            .unwrap();
        let at = Utc::now();
        let start = at - TimeDelta::minutes(10);
        let expected = [
            (
                Subject::LoginAccount("u".into()),
                "audit_events_actor (actor_user_id=? AND leaf_index>?)",
            ),
            (
                Subject::Denials("u".into()),
                "audit_events_actor (actor_user_id=? AND leaf_index>?)",
            ),
            (
                Subject::Patients("u".into()),
                "audit_events_actor (actor_user_id=? AND leaf_index>?)",
            ),
            (
                Subject::LoginSource("10.0.0.1".into()),
                "audit_events_outcome (outcome=? AND leaf_index>?)",
            ),
        ];
        for (subject, index) in expected {
            let query = burst_query(&subject, start, at, 42).build(DbBackend::Sqlite);
            let explain = Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {}", query.sql),
                query.values.unwrap(),
            );
            let plan: Vec<String> = db
                .query_all_raw(explain)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get::<String>("", "detail").unwrap())
                .collect();
            let plan = plan.join("; ");
            assert!(plan.contains(&format!("USING INDEX {index}")), "{subject:?}: {plan}");
        }
    }
}
