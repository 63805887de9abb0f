//! Audit commands: `carectl audit query|verify|alerts [--follow]` (auditors; `verify` for anyone)
//! and `carectl access-log` (who accessed my records). `verify` keeps the last verified checkpoint
//! next to the profile's session and checks that each new one extends it.

use caremesh_sdk::SdkError;
use caremesh_sdk::audit::{TrustedCheckpoint, time_of, timestamp};
use caremesh_sdk::proto::audit::v1 as pb;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::json;

use crate::Ctx;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Search the log (auditors).
    Query {
        /// Only events about this patient (user id).
        #[arg(long)]
        patient: Option<String>,
        /// Only events by this user id.
        #[arg(long)]
        actor: Option<String>,
        /// create, read, update, delete or execute.
        #[arg(long)]
        action: Option<String>,
        /// success, denied or error.
        #[arg(long)]
        outcome: Option<String>,
        /// Only events at or after this time (RFC 3339, e.g. 2026-11-24T00:00:00Z).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Only emergency (break-glass) accesses.
        #[arg(long)]
        emergency: bool,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Check the log's latest signed checkpoint, and that it extends the one checked last time.
    Verify,
    /// Alerts raised by the rules (auditors).
    Alerts {
        /// Keep streaming new alerts.
        #[arg(long)]
        follow: bool,
    },
}

fn enum_arg<T>(name: &str, value: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, SdkError> {
    match value {
        None => Ok(None),
        Some(text) => parse(&text.to_ascii_uppercase())
            .map(Some)
            .ok_or_else(|| SdkError::Local(format!("unknown {name} {text:?}"))),
    }
}

fn when(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| "-".to_owned(), |time| time.to_rfc3339())
}

pub async fn run(ctx: &Ctx, command: AuditCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    match command {
        AuditCommand::Query {
            patient,
            actor,
            action,
            outcome,
            since,
            until,
            emergency,
            limit,
        } => {
            let action = enum_arg("action", action.as_deref(), |name| {
                pb::AuditAction::from_str_name(&format!("AUDIT_ACTION_{name}"))
            })?;
            let outcome = enum_arg("outcome", outcome.as_deref(), |name| {
                pb::AuditOutcome::from_str_name(&format!("AUDIT_OUTCOME_{name}"))
            })?;
            let mut request = pb::QueryEventsRequest {
                page_size: i32::try_from(limit.min(1000)).unwrap_or(1000),
                patient_id: patient.unwrap_or_default(),
                actor_user_id: actor.unwrap_or_default(),
                action: action.map_or(0, |action| action as i32),
                outcome: outcome.map_or(0, |outcome| outcome as i32),
                start_time: since.map(timestamp),
                end_time: until.map(timestamp),
                emergency_only: emergency,
                ..Default::default()
            };
            let mut entries = Vec::new();
            loop {
                let page = ctx.client.audit_query(&session, request.clone()).await?;
                entries.extend(page.entries);
                if page.next_page_token.is_empty() || entries.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            entries.truncate(limit);
            let rows: Vec<serde_json::Value> = entries
                .iter()
                .map(|entry| {
                    let event = entry.event.clone().unwrap_or_default();
                    let actor = event.actor.clone().unwrap_or_default();
                    json!({
                        "leaf_index": entry.leaf_index,
                        "event_id": event.event_id,
                        "recorded_at": when(time_of(event.recorded_at.as_ref())),
                        "actor": actor.user_id,
                        "role": actor.role,
                        "action": event.action().as_str_name(),
                        "operation": event.operation,
                        "entity": format!("{} {}", event.entity_type, event.entity_id),
                        "patient_id": event.patient_id,
                        "outcome": event.outcome().as_str_name(),
                        "reason": event.outcome_reason,
                        "emergency": event.emergency,
                    })
                })
                .collect();
            ctx.print(json!(rows), || {
                rows.iter()
                    .map(|row| {
                        format!(
                            "#{:<8} {} {:<20} {:<36} {} {} patient={} {}{}",
                            row["leaf_index"],
                            row["recorded_at"].as_str().unwrap_or_default(),
                            row["action"].as_str().unwrap_or_default(),
                            row["actor"].as_str().unwrap_or_default(),
                            row["operation"].as_str().unwrap_or_default(),
                            row["outcome"].as_str().unwrap_or_default(),
                            row["patient_id"].as_str().unwrap_or_default(),
                            row["reason"].as_str().unwrap_or_default(),
                            if row["emergency"].as_bool().unwrap_or(false) {
                                " EMERGENCY"
                            } else {
                                ""
                            },
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AuditCommand::Verify => {
            let path = ctx.store.dir().join(format!("{}.audit-checkpoint.json", ctx.profile));
            let trusted: Option<TrustedCheckpoint> = match std::fs::read(&path) {
                Ok(bytes) => Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|error| SdkError::Local(format!("{} is malformed: {error}", path.display())))?,
                ),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(SdkError::Local(format!("cannot read {}: {error}", path.display()))),
            };
            let growth = ctx.client.audit_verify(&session, trusted.as_ref()).await?;
            let text = serde_json::to_vec_pretty(&growth.latest)
                .map_err(|error| SdkError::Local(format!("cannot encode the checkpoint: {error}")))?;
            std::fs::write(&path, text)
                .map_err(|error| SdkError::Local(format!("cannot write {}: {error}", path.display())))?;
            ctx.print(
                json!({
                    "verified": true,
                    "tree_size": growth.latest.tree_size,
                    "root_hash": growth.latest.root_hash,
                    "previous_size": growth.previous_size,
                }),
                || match growth.previous_size {
                    Some(previous) => format!(
                        "log verified: {} events (root {}), consistent with the {} checked before",
                        growth.latest.tree_size, growth.latest.root_hash, previous
                    ),
                    None => format!(
                        "log checkpoint verified: {} events (root {}); key pinned, kept in {}",
                        growth.latest.tree_size,
                        growth.latest.root_hash,
                        path.display()
                    ),
                },
            );
        }
        AuditCommand::Alerts { follow } => {
            let alerts = ctx
                .client
                .audit_alerts(&session, pb::ListAlertsRequest::default())
                .await?
                .alerts;
            for alert in alerts.iter().rev() {
                print_alert(ctx, alert);
            }
            if follow {
                let mut stream = ctx.client.follow_alerts(&session, "").await?;
                while let Some(item) = stream.message().await? {
                    if let Some(alert) = &item.alert {
                        print_alert(ctx, alert);
                    }
                }
            }
        }
    }
    Ok(())
}

fn print_alert(ctx: &Ctx, alert: &pb::Alert) {
    ctx.print(
        json!({
            "alert_id": alert.alert_id,
            "kind": alert.kind().as_str_name(),
            "severity": alert.severity().as_str_name(),
            "time": when(time_of(alert.create_time.as_ref())),
            "summary": alert.summary,
            "event_ids": alert.event_ids,
        }),
        || {
            format!(
                "{} {:<22} {:<36} {}",
                when(time_of(alert.create_time.as_ref())),
                alert.severity().as_str_name(),
                alert.kind().as_str_name(),
                alert.summary
            )
        },
    );
}

/// `carectl access-log`: who accessed my (or, for auditors, a patient's) records.
pub async fn access_log(ctx: &Ctx, patient: Option<String>, include_own: bool) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let mut request = pb::ListPatientAccessesRequest {
        patient_id: patient.unwrap_or_default(),
        page_size: 1000,
        include_own,
        ..Default::default()
    };
    let mut accesses = Vec::new();
    loop {
        let page = ctx.client.access_report(&session, request.clone()).await?;
        accesses.extend(page.accesses);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let rows: Vec<serde_json::Value> = accesses
        .iter()
        .map(|access| {
            json!({
                "time": when(time_of(access.access_time.as_ref())),
                "actor": access.actor_user_id,
                "role": access.actor_role,
                "action": access.action().as_str_name(),
                "operation": access.operation,
                "entity": format!("{} {}", access.entity_type, access.entity_id),
                "purpose": access.purpose_of_use,
                "emergency": access.emergency,
                "outcome": access.outcome().as_str_name(),
            })
        })
        .collect();
    ctx.print(json!(rows), || {
        if rows.is_empty() {
            return "nobody else has accessed these records".to_owned();
        }
        rows.iter()
            .map(|row| {
                format!(
                    "{} {} ({}) {} {} purpose={} {}{}",
                    row["time"].as_str().unwrap_or_default(),
                    row["actor"].as_str().unwrap_or_default(),
                    row["role"].as_str().unwrap_or_default(),
                    row["operation"].as_str().unwrap_or_default(),
                    row["entity"].as_str().unwrap_or_default(),
                    row["purpose"].as_str().unwrap_or_default(),
                    row["outcome"].as_str().unwrap_or_default(),
                    if row["emergency"].as_bool().unwrap_or(false) {
                        " EMERGENCY"
                    } else {
                        ""
                    },
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}
