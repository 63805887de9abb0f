//! Record commands: `records put|get|list|edit|history|entered-in-error` and `emergency`.
//! Contents are FHIR JSON, sealed, signed and opened by the SDK on this machine; records-svc
//! stores ciphertext only.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use caremesh_sdk::SdkError;
use caremesh_sdk::auth::Session;
use caremesh_sdk::messaging::Messenger;
use caremesh_sdk::proto::records::v1 as pb;
use caremesh_sdk::records::NewRecord;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::Ctx;
use crate::messaging::{messenger, progress_bar, resolve};

/// Where a record's content comes from.
#[derive(Args)]
pub struct ContentArgs {
    /// The FHIR JSON (omit to use --file or standard input).
    content: Option<String>,
    /// Read the FHIR JSON from this file.
    #[arg(long, conflicts_with = "content")]
    file: Option<PathBuf>,
}

impl ContentArgs {
    fn read(self) -> Result<Vec<u8>, SdkError> {
        match (self.content, self.file) {
            (Some(text), _) => Ok(text.into_bytes()),
            (None, Some(path)) => std::fs::read(&path)
                .map_err(|error| SdkError::Local(format!("cannot read {}: {error}", path.display()))),
            (None, None) => {
                let mut body = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut body)
                    .map_err(|error| SdkError::Local(format!("cannot read standard input: {error}")))?;
                Ok(body)
            }
        }
    }
}

#[derive(Subcommand)]
pub enum RecordsCommand {
    /// Write a new record about a patient (doctors and nurses).
    Put {
        /// The patient's username or user id.
        #[arg(long)]
        patient: String,
        /// The FHIR resource type of the content, e.g. Observation, Condition.
        #[arg(long)]
        kind: String,
        /// Who else may read it, e.g. '"role:doctor" and "dept:cardiology"'. The patient and
        /// emergency access are always added.
        #[arg(long, default_value = "")]
        policy: String,
        #[command(flatten)]
        content: ContentArgs,
    },
    /// Read and decrypt a record (the latest version unless --version).
    Get {
        record_id: String,
        #[arg(long, default_value_t = 0)]
        version: i64,
    },
    /// A patient's records (metadata): yours as a patient, or --patient.
    List {
        #[arg(long)]
        patient: Option<String>,
        #[arg(long, default_value = "")]
        kind: String,
        #[arg(long, default_value_t = 50)]
        limit: i32,
        /// Also list records whose latest version is entered-in-error.
        #[arg(long)]
        include_entered_in_error: bool,
    },
    /// Write a new version of a record.
    Edit {
        record_id: String,
        /// A new policy (the patient and emergency clauses are added again).
        #[arg(long)]
        policy: Option<String>,
        /// Only if the record is still at this etag (else ABORTED).
        #[arg(long)]
        etag: Option<String>,
        #[command(flatten)]
        content: ContentArgs,
    },
    /// The versions of a record, newest first.
    History { record_id: String },
    /// Attach a file to a record: it is encrypted here and kept as a new DocumentReference
    /// record about the same patient, under the same policy (doctors and nurses).
    Attach { record_id: String, file: PathBuf },
    /// Save the file a DocumentReference record holds into a directory, decrypted here (under
    /// its attached name, made safe; never over an existing file).
    Save {
        record_id: String,
        /// The directory to save into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Mark a version entered-in-error (it stays stored): a reason code such as WRONG_PATIENT.
    EnteredInError {
        record_id: String,
        /// The version (default: the latest).
        #[arg(long, default_value_t = 0)]
        version: i64,
        #[arg(long)]
        reason: String,
    },
}

fn time(timestamp: Option<prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn record_json(record: &pb::Record) -> serde_json::Value {
    json!({
        "record_id": record.record_id,
        "patient_id": record.patient_id,
        "kind": record.kind,
        "version": record.version,
        "policy": record.policy,
        "author_user_id": record.author_user_id,
        "etag": record.etag,
        "version_hash": hex::encode(&record.version_hash),
        "entered_in_error": record.entered_in_error.as_ref().map(|mark| mark.reason.clone()),
        "create_time": record.create_time.map(|t| t.seconds),
        "update_time": record.update_time.map(|t| t.seconds),
    })
}

fn record_line(record: &pb::Record) -> String {
    let mark = record
        .entered_in_error
        .as_ref()
        .map(|mark| format!("  ENTERED-IN-ERROR ({})", mark.reason))
        .unwrap_or_default();
    format!(
        "{}  {}  v{}  {:<20} {}{mark}",
        time(record.update_time),
        record.record_id,
        record.version,
        record.kind,
        record.policy
    )
}

pub async fn run(ctx: &Ctx, command: RecordsCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let messenger = messenger(ctx, &session).await?;
    match command {
        RecordsCommand::Put {
            patient,
            kind,
            policy,
            content,
        } => {
            let patient_id = resolve(ctx, &session, &patient).await?;
            let body = content.read()?;
            let record = messenger
                .create_record(
                    &session,
                    NewRecord {
                        patient_id: &patient_id,
                        kind: &kind,
                        policy: &policy,
                        content: &body,
                    },
                )
                .await?;
            ctx.print(record_json(&record), || {
                format!("wrote {} (version 1, etag {})", record.record_id, record.etag)
            });
        }
        RecordsCommand::Get { record_id, version } => {
            let opened = messenger.read_record(&session, &record_id, version).await?;
            let text = String::from_utf8_lossy(&opened.content).into_owned();
            let mut value = record_json(&opened.record);
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "content".to_owned(),
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone())),
                );
            }
            ctx.print(value, || format!("{}\n{text}", record_line(&opened.record)));
        }
        RecordsCommand::List {
            patient,
            kind,
            limit,
            include_entered_in_error,
        } => {
            let patient_id = match patient {
                Some(patient) => resolve(ctx, &session, &patient).await?,
                None => String::new(),
            };
            let (records, _) = messenger
                .list_records(
                    &session,
                    pb::ListRecordsRequest {
                        patient_id,
                        kind,
                        page_size: limit,
                        include_entered_in_error,
                        ..pb::ListRecordsRequest::default()
                    },
                )
                .await?;
            ctx.print(json!(records.iter().map(record_json).collect::<Vec<_>>()), || {
                if records.is_empty() {
                    "no records".to_owned()
                } else {
                    records.iter().map(record_line).collect::<Vec<_>>().join("\n")
                }
            });
        }
        RecordsCommand::Edit {
            record_id,
            policy,
            etag,
            content,
        } => {
            let body = content.read()?;
            let record = messenger
                .edit_record(&session, &record_id, &body, policy.as_deref(), etag.as_deref())
                .await?;
            ctx.print(record_json(&record), || {
                format!(
                    "wrote {} version {} (etag {})",
                    record.record_id, record.version, record.etag
                )
            });
        }
        RecordsCommand::Attach { record_id, file } => {
            let record = messenger
                .attach_to_record(&session, &record_id, &file, progress_bar("uploading", ctx.json))
                .await?;
            ctx.print(record_json(&record), || {
                format!(
                    "attached {} to {record_id} as DocumentReference {}",
                    file.display(),
                    record.record_id
                )
            });
        }
        RecordsCommand::Save { record_id, out } => {
            let path = messenger
                .save_record_attachment(&session, &record_id, &out, progress_bar("saving", ctx.json))
                .await?;
            ctx.print(
                json!({"record_id": record_id, "path": path.display().to_string()}),
                || format!("saved {}", path.display()),
            );
        }
        RecordsCommand::History { record_id } => {
            let mut versions = Vec::new();
            let mut page_token = String::new();
            loop {
                let (page, next) = messenger.record_history(&session, &record_id, &page_token).await?;
                versions.extend(page);
                if next.is_empty() {
                    break;
                }
                page_token = next;
            }
            ctx.print(json!(versions.iter().map(record_json).collect::<Vec<_>>()), || {
                versions.iter().map(record_line).collect::<Vec<_>>().join("\n")
            });
        }
        RecordsCommand::EnteredInError {
            record_id,
            version,
            reason,
        } => {
            let record = messenger
                .mark_entered_in_error(&session, &record_id, version, &reason)
                .await?;
            ctx.print(record_json(&record), || {
                format!(
                    "marked {} version {} entered-in-error",
                    record.record_id, record.version
                )
            });
        }
    }
    Ok(())
}

/// `carectl emergency <patient> --reason ...`: break-glass access, then a fresh session whose
/// token carries the emergency attribute.
pub async fn emergency(ctx: &Ctx, patient: String, reason: String, minutes: Option<u64>) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let messenger: Messenger = messenger(ctx, &session).await?;
    let patient_id = resolve(ctx, &session, &patient).await?;
    let access = messenger
        .request_emergency_access(
            &session,
            &patient_id,
            &reason,
            minutes.map(|minutes| Duration::from_secs(minutes.saturating_mul(60))),
        )
        .await?;
    let refreshed: Session = ctx.client.refresh(&session).await?;
    ctx.store.save(&ctx.profile, &refreshed)?;
    let grant = access.grant;
    ctx.print(
        json!({
            "grant_id": grant.grant_id,
            "patient_id": grant.patient_id,
            "expire_time": grant.expire_time.map(|t| t.seconds),
            "key_id": access.key.key_id,
        }),
        || {
            format!(
                "emergency access to {patient} until {} (grant {}); this access is audited and auditors are alerted",
                time(grant.expire_time),
                grant.grant_id
            )
        },
    );
    Ok(())
}
