//! The audit log from the client side: auditor queries, the patient access report, alerts, and
//! verification of what audit-svc serves. Checkpoint signatures, consistency proofs (a newer
//! checkpoint extends one the client already trusts) and inclusion proofs (an event is in a
//! checkpoint's tree) are all checked here with `caremesh-tlog`, so a client does not have to take
//! the server's word for the log's integrity.

use caremesh_proto::audit::v1 as pb;
use caremesh_proto::audit::v1::audit_service_client::AuditServiceClient;
use caremesh_tlog::Hash;
use caremesh_tlog::checkpoint::NoteVerifier;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::auth::Session;
use crate::{Client, SdkError, ServiceName};

/// A checkpoint the client has verified and keeps (e.g. in its profile directory), with the
/// verifier key it was checked with (pinned on first use).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedCheckpoint {
    /// `<name>+<key hash>+<key>`: the log's verifier key.
    pub verifier_key: String,
    /// The log's origin.
    pub origin: String,
    pub tree_size: u64,
    /// Hex root hash.
    pub root_hash: String,
    /// The signed note as served.
    pub signed_note: String,
}

/// What [`Client::audit_verify`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogGrowth {
    /// The newly verified checkpoint (store it for the next check).
    pub latest: TrustedCheckpoint,
    /// The size of the checkpoint it was proven consistent with, if the client held one.
    pub previous_size: Option<u64>,
}

fn hash_of(bytes: &[u8]) -> Result<Hash, SdkError> {
    bytes
        .try_into()
        .map_err(|_| SdkError::Protocol("a hash from audit-svc is not 32 bytes"))
}

fn hashes_of(list: &[Vec<u8>]) -> Result<Vec<Hash>, SdkError> {
    list.iter().map(|bytes| hash_of(bytes)).collect()
}

fn integrity(what: &str, error: impl std::fmt::Display) -> SdkError {
    SdkError::Local(format!("AUDIT LOG INTEGRITY FAILURE: {what}: {error}"))
}

/// Checks `checkpoint`'s signature with `verifier` and that its fields match what was signed.
pub fn verify_checkpoint(verifier: &NoteVerifier, checkpoint: &pb::Checkpoint) -> Result<Hash, SdkError> {
    let signed = verifier
        .open_checkpoint(&checkpoint.signed_note, Some(&checkpoint.origin))
        .map_err(|error| integrity("the checkpoint signature does not verify", error))?;
    if signed.size != checkpoint.tree_size || signed.root.as_slice() != checkpoint.root_hash.as_slice() {
        return Err(integrity(
            "the checkpoint fields differ from the signed note",
            "size or root",
        ));
    }
    Ok(signed.root)
}

impl Client {
    fn audit(&self) -> Result<AuditServiceClient<Channel>, SdkError> {
        Ok(AuditServiceClient::new(self.require(ServiceName::Audit)?))
    }

    /// Searches the log (auditors). Pass `next_page_token` back in `request.page_token` for more.
    pub async fn audit_query(
        &self,
        session: &Session,
        request: pb::QueryEventsRequest,
    ) -> Result<pb::QueryEventsResponse, SdkError> {
        Ok(self
            .audit()?
            .query_events(session.request(request)?)
            .await?
            .into_inner())
    }

    /// Who accessed a patient's records (empty `patient_id`: the caller's own).
    pub async fn access_report(
        &self,
        session: &Session,
        request: pb::ListPatientAccessesRequest,
    ) -> Result<pb::ListPatientAccessesResponse, SdkError> {
        Ok(self
            .audit()?
            .list_patient_accesses(session.request(request)?)
            .await?
            .into_inner())
    }

    /// Stored alerts, newest first (auditors).
    pub async fn audit_alerts(
        &self,
        session: &Session,
        request: pb::ListAlertsRequest,
    ) -> Result<pb::ListAlertsResponse, SdkError> {
        Ok(self.audit()?.list_alerts(session.request(request)?).await?.into_inner())
    }

    /// Follows alerts as they are raised (auditors); resume with the last item's cursor.
    pub async fn follow_alerts(
        &self,
        session: &Session,
        cursor: &str,
    ) -> Result<tonic::Streaming<pb::StreamAlertsResponse>, SdkError> {
        let request = pb::StreamAlertsRequest {
            cursor: cursor.to_owned(),
            kinds: Vec::new(),
        };
        Ok(self
            .audit()?
            .stream_alerts(session.request(request)?)
            .await?
            .into_inner())
    }

    /// The log's verifier key as served (pin it on first use).
    pub async fn audit_verifier(&self, session: &Session) -> Result<NoteVerifier, SdkError> {
        let key = self
            .audit()?
            .get_verification_key(session.request(pb::GetVerificationKeyRequest {})?)
            .await?
            .into_inner();
        NoteVerifier::parse(&key.verifier_key).map_err(|error| integrity("the verifier key is malformed", error))
    }

    /// Fetches the latest checkpoint, checks its signature, and, when the client holds an earlier
    /// trusted checkpoint, checks the consistency proof that the new tree extends it (with the
    /// verifier key pinned in `trusted`, not the one the server offers now).
    pub async fn audit_verify(
        &self,
        session: &Session,
        trusted: Option<&TrustedCheckpoint>,
    ) -> Result<LogGrowth, SdkError> {
        let verifier = match trusted {
            Some(trusted) => NoteVerifier::parse(&trusted.verifier_key)
                .map_err(|error| SdkError::Local(format!("the stored verifier key is malformed: {error}")))?,
            None => self.audit_verifier(session).await?,
        };
        let latest = self
            .audit()?
            .get_checkpoint(session.request(pb::GetCheckpointRequest { tree_size: 0 })?)
            .await?
            .into_inner()
            .checkpoint
            .ok_or(SdkError::Protocol("GetCheckpoint returned no checkpoint"))?;
        let root = verify_checkpoint(&verifier, &latest)?;
        let mut previous_size = None;
        if let Some(trusted) = trusted {
            let old_root = hex::decode(&trusted.root_hash)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
                .ok_or_else(|| SdkError::Local("the stored checkpoint's root hash is malformed".to_owned()))?;
            if latest.tree_size < trusted.tree_size {
                return Err(integrity(
                    "the log shrank",
                    format!("{} events now, {} before", latest.tree_size, trusted.tree_size),
                ));
            }
            let proof = self
                .audit()?
                .get_consistency_proof(session.request(pb::GetConsistencyProofRequest {
                    first_tree_size: trusted.tree_size,
                    second_tree_size: latest.tree_size,
                })?)
                .await?
                .into_inner();
            caremesh_tlog::verify_consistency(
                trusted.tree_size,
                latest.tree_size,
                &hashes_of(&proof.hashes)?,
                &old_root,
                &root,
            )
            .map_err(|error| integrity("the new checkpoint does not extend the trusted one", error))?;
            previous_size = Some(trusted.tree_size);
        }
        Ok(LogGrowth {
            latest: TrustedCheckpoint {
                verifier_key: verifier.to_text(),
                origin: latest.origin,
                tree_size: latest.tree_size,
                root_hash: hex::encode(root),
                signed_note: latest.signed_note,
            },
            previous_size,
        })
    }

    /// Fetches an event's inclusion proof against a checkpoint (0: the latest) and verifies it and
    /// the checkpoint's signature; returns the verified entry.
    pub async fn audit_prove_event(
        &self,
        session: &Session,
        verifier: &NoteVerifier,
        event_id: &str,
        tree_size: u64,
    ) -> Result<pb::LogEntry, SdkError> {
        let request = pb::GetInclusionProofRequest {
            leaf: Some(pb::get_inclusion_proof_request::Leaf::EventId(event_id.to_owned())),
            tree_size,
        };
        let answer = self
            .audit()?
            .get_inclusion_proof(session.request(request)?)
            .await?
            .into_inner();
        let checkpoint = answer
            .checkpoint
            .ok_or(SdkError::Protocol("GetInclusionProof returned no checkpoint"))?;
        let entry = answer
            .entry
            .ok_or(SdkError::Protocol("GetInclusionProof returned no entry"))?;
        let root = verify_checkpoint(verifier, &checkpoint)?;
        let leaf = caremesh_tlog::leaf_hash(&entry.leaf_value);
        caremesh_tlog::verify_inclusion(
            &leaf,
            entry.leaf_index,
            checkpoint.tree_size,
            &hashes_of(&answer.hashes)?,
            &root,
        )
        .map_err(|error| integrity("the event is not proven to be in the log", error))?;
        Ok(entry)
    }
}

/// A protobuf timestamp for a query's time range.
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as UTC time, if in range.
pub fn time_of(timestamp: Option<&prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    let timestamp = timestamp?;
    chrono::DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
}
