//! Patient records from the client side (DESIGN.md §4). The SDK checks the content is FHIR JSON
//! of the declared resource type, adds the patient and emergency clauses to the policy, seals the
//! content under it (CP-ABE + AES-256-GCM), signs the whole version with the device's identity
//! key and chains it to the previous version's hash. Reading verifies the author's signature and
//! the hash chain before decrypting with an attribute key whose attributes satisfy the policy.
//! records-svc sees only ciphertext and metadata.

use caremesh_abe::Policy;
use caremesh_crypto::policy_envelope::{
    POLICY_ENVELOPE_VERSION, RecordVersion, open_under_policy, record_content_aad, seal_under_policy,
};
use caremesh_proto::records::v1 as pb;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::auth::Session;
use crate::messaging::{Messenger, crypto};
use crate::{SdkError, ServiceName};

/// A new record.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    pub patient_id: &'a str,
    /// The FHIR resource type, e.g. `Observation`.
    pub kind: &'a str,
    /// Who else may read it, e.g. `"role:doctor" and "dept:cardiology"`; empty for the patient
    /// (and emergency access) only. The patient and emergency clauses are always added.
    pub policy: &'a str,
    /// FHIR JSON whose `resourceType` is `kind`.
    pub content: &'a [u8],
}

/// A record version with its content opened and its signature checked.
#[derive(Clone, Debug)]
pub struct OpenedRecord {
    pub record: pb::Record,
    pub content: Zeroizing<Vec<u8>>,
}

/// The policy a record is sealed under: `policy` widened so the patient and emergency access
/// can each open it.
pub fn record_policy(policy: &str, patient_id: &str) -> Result<String, SdkError> {
    let clauses = format!("\"patient:{patient_id}\" or \"emergency:{patient_id}\"");
    let combined = if policy.trim().is_empty() {
        clauses
    } else {
        let check = caremesh_abe::check_policy(policy, None);
        if let Some(problem) = check.error {
            return Err(SdkError::Local(format!("the policy is invalid: {}", problem.message)));
        }
        if check.canonical.is_empty() {
            clauses
        } else {
            format!("({}) or {clauses}", check.canonical)
        }
    };
    let check = caremesh_abe::check_policy(&combined, Some(patient_id));
    match check.error {
        Some(problem) => Err(SdkError::Local(format!("the policy is invalid: {}", problem.message))),
        None => Ok(check.canonical),
    }
}

/// Checks `content` is a FHIR JSON resource of type `kind`.
pub fn check_fhir(kind: &str, content: &[u8]) -> Result<(), SdkError> {
    let value: serde_json::Value = serde_json::from_slice(content)
        .map_err(|error| SdkError::Local(format!("the record content is not JSON: {error}")))?;
    let declared = value
        .as_object()
        .and_then(|object| object.get("resourceType"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            SdkError::Local("the record content is not a FHIR resource: it has no \"resourceType\"".to_owned())
        })?;
    if declared != kind {
        return Err(SdkError::Local(format!(
            "the content is a FHIR {declared}, not a {kind}: use --kind {declared} or fix the content"
        )));
    }
    Ok(())
}

fn signed_version<'a>(record: &'a pb::Record, envelope: &'a pb::RecordEnvelope) -> RecordVersion<'a> {
    RecordVersion {
        record_id: &record.record_id,
        patient_id: &record.patient_id,
        kind: &record.kind,
        version: record.version,
        policy: &record.policy,
        envelope,
        author_user_id: &record.author_user_id,
        author_identity_key_id: &record.author_identity_key_id,
        previous_version_hash: &record.previous_version_hash,
    }
}

impl Messenger {
    pub(crate) fn records_api(&self) -> Result<RecordsServiceClient<Channel>, SdkError> {
        Ok(RecordsServiceClient::new(self.client.require(ServiceName::Records)?))
    }

    /// Seals and signs one version.
    async fn seal_version(
        &self,
        session: &Session,
        template: &pb::Record,
        content: &[u8],
    ) -> Result<(pb::RecordEnvelope, String, [u8; 64]), SdkError> {
        check_fhir(&template.kind, content)?;
        let params = self.public_params(session).await?;
        let policy = Policy::parse(&template.policy)
            .map_err(|error| SdkError::Local(format!("the policy is invalid: {error}")))?;
        let aad = record_content_aad(
            &template.record_id,
            &template.patient_id,
            &template.kind,
            template.version,
        )
        .map_err(|error| crypto("binding the record content", error))?;
        let sealed = seal_under_policy(&params.params, &policy, &aad, content)
            .map_err(|error| crypto("sealing the record content", error))?;
        let envelope = pb::RecordEnvelope {
            version: POLICY_ENVELOPE_VERSION,
            params_version: params.version,
            encapsulated_key: sealed.encapsulated_key,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        };
        let state = self.lock()?;
        let identity = state.keys.identity();
        let key_id = identity.key_id().to_owned();
        let signed = pb::Record {
            author_user_id: session.user_id.clone(),
            author_identity_key_id: key_id.clone(),
            ..template.clone()
        };
        let signature = signed_version(&signed, &envelope)
            .sign(identity)
            .map_err(|error| crypto("signing the record", error))?;
        Ok((envelope, key_id, signature))
    }

    /// Writes a new record (version 1).
    pub async fn create_record(&self, session: &Session, new: NewRecord<'_>) -> Result<pb::Record, SdkError> {
        let template = pb::Record {
            record_id: caremesh_crypto::new_id(),
            patient_id: new.patient_id.to_owned(),
            kind: new.kind.to_owned(),
            version: 1,
            policy: record_policy(new.policy, new.patient_id)?,
            ..pb::Record::default()
        };
        self.create_record_from(session, template, new.content).await
    }

    /// Seals, signs and writes version 1 of `template` (its id, patient, kind and complete
    /// policy set) with `content`.
    pub(crate) async fn create_record_from(
        &self,
        session: &Session,
        template: pb::Record,
        content: &[u8],
    ) -> Result<pb::Record, SdkError> {
        let (envelope, author_identity_key_id, signature) = self.seal_version(session, &template, content).await?;
        let response = self
            .records_api()?
            .create_record(session.request(pb::CreateRecordRequest {
                record_id: template.record_id,
                patient_id: template.patient_id,
                kind: template.kind,
                policy: template.policy,
                envelope: Some(envelope),
                author_identity_key_id,
                author_signature: signature.to_vec(),
            })?)
            .await?
            .into_inner();
        response.record.ok_or(SdkError::Protocol("no record in the answer"))
    }

    /// Writes a new version of a record with new content (and, if given, a new policy; the
    /// patient and emergency clauses are added again). Fails with ABORTED when someone else
    /// wrote a version since `expected_etag` (when given) or since the latest was read.
    pub async fn edit_record(
        &self,
        session: &Session,
        record_id: &str,
        content: &[u8],
        policy: Option<&str>,
        expected_etag: Option<&str>,
    ) -> Result<pb::Record, SdkError> {
        let latest = self
            .record_version(session, record_id, 0, pb::RecordView::Basic)
            .await?;
        let template = pb::Record {
            version: latest.version + 1,
            policy: match policy {
                Some(policy) => record_policy(policy, &latest.patient_id)?,
                None => latest.policy.clone(),
            },
            previous_version_hash: latest.version_hash.clone(),
            ..latest.clone()
        };
        let (envelope, author_identity_key_id, signature) = self.seal_version(session, &template, content).await?;
        let response = self
            .records_api()?
            .update_record(session.request(pb::UpdateRecordRequest {
                record_id: record_id.to_owned(),
                etag: expected_etag.map_or(latest.etag, str::to_owned),
                version: template.version,
                policy: template.policy,
                envelope: Some(envelope),
                previous_version_hash: template.previous_version_hash,
                author_identity_key_id,
                author_signature: signature.to_vec(),
            })?)
            .await?
            .into_inner();
        response.record.ok_or(SdkError::Protocol("no record in the answer"))
    }

    pub(crate) async fn record_version(
        &self,
        session: &Session,
        record_id: &str,
        version: i64,
        view: pb::RecordView,
    ) -> Result<pb::Record, SdkError> {
        self.records_api()?
            .get_record(session.request(pb::GetRecordRequest {
                record_id: record_id.to_owned(),
                version,
                view: view.into(),
            })?)
            .await?
            .into_inner()
            .record
            .ok_or(SdkError::Protocol("no record in the answer"))
    }

    /// Reads a record version (0 = the latest), checks its author's signature and hash, and
    /// opens its content.
    pub async fn read_record(
        &self,
        session: &Session,
        record_id: &str,
        version: i64,
    ) -> Result<OpenedRecord, SdkError> {
        let record = self
            .record_version(session, record_id, version, pb::RecordView::Full)
            .await?;
        let content = self.open_record(session, &record).await?;
        Ok(OpenedRecord { record, content })
    }

    /// Checks a full-view record's signature and hash and decrypts it.
    pub async fn open_record(&self, session: &Session, record: &pb::Record) -> Result<Zeroizing<Vec<u8>>, SdkError> {
        let envelope = record
            .envelope
            .as_ref()
            .ok_or(SdkError::Protocol("the record came without its envelope"))?;
        let signed = signed_version(record, envelope);
        let author = self
            .sender_identity(session, &record.author_user_id, &record.author_identity_key_id)
            .await?;
        signed
            .verify(&author, &record.author_signature)
            .map_err(|error| crypto("the record's author signature", error))?;
        let hash = signed.hash().map_err(|error| crypto("hashing the record", error))?;
        if hash.as_slice() != record.version_hash.as_slice() {
            return Err(SdkError::Protocol(
                "the record's version hash does not match its content",
            ));
        }
        let policy =
            Policy::parse(&record.policy).map_err(|error| SdkError::Local(format!("the record's policy: {error}")))?;
        let key = self.key_for(session, &policy, &envelope.params_version).await?;
        let aad = record_content_aad(&record.record_id, &record.patient_id, &record.kind, record.version)
            .map_err(|error| crypto("binding the record content", error))?;
        open_under_policy(
            &key,
            &envelope.encapsulated_key,
            &envelope.nonce,
            &envelope.ciphertext,
            &aad,
        )
        .map_err(|error| crypto("opening the record", error))
    }

    /// One page of a patient's records (metadata only). An empty `patient_id` means the caller's
    /// own records (patients).
    pub async fn list_records(
        &self,
        session: &Session,
        request: pb::ListRecordsRequest,
    ) -> Result<(Vec<pb::Record>, String), SdkError> {
        let response = self
            .records_api()?
            .list_records(session.request(request)?)
            .await?
            .into_inner();
        Ok((response.records, response.next_page_token))
    }

    /// One page of a record's versions, newest first (metadata only).
    pub async fn record_history(
        &self,
        session: &Session,
        record_id: &str,
        page_token: &str,
    ) -> Result<(Vec<pb::Record>, String), SdkError> {
        let response = self
            .records_api()?
            .list_record_versions(session.request(pb::ListRecordVersionsRequest {
                record_id: record_id.to_owned(),
                page_token: page_token.to_owned(),
                ..pb::ListRecordVersionsRequest::default()
            })?)
            .await?
            .into_inner();
        Ok((response.versions, response.next_page_token))
    }

    /// Marks a version entered-in-error (it stays stored and listed).
    pub async fn mark_entered_in_error(
        &self,
        session: &Session,
        record_id: &str,
        version: i64,
        reason: &str,
    ) -> Result<pb::Record, SdkError> {
        let latest = self
            .record_version(session, record_id, 0, pb::RecordView::Basic)
            .await?;
        let version = if version == 0 { latest.version } else { version };
        self.records_api()?
            .mark_entered_in_error(session.request(pb::MarkEnteredInErrorRequest {
                record_id: record_id.to_owned(),
                version,
                etag: latest.etag,
                reason: reason.to_owned(),
            })?)
            .await?
            .into_inner()
            .record
            .ok_or(SdkError::Protocol("no record in the answer"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn record_policies_always_admit_the_patient_and_emergency_access() {
        let policy = record_policy(r#""role:doctor" and "dept:cardiology""#, "p1").unwrap();
        let parsed = Policy::parse(&policy).unwrap();
        assert!(parsed.is_satisfied_by(&["patient:p1"]));
        assert!(parsed.is_satisfied_by(&["emergency:p1"]));
        assert!(parsed.is_satisfied_by(&["role:doctor", "dept:cardiology"]));
        assert!(!parsed.is_satisfied_by(&["role:doctor", "dept:oncology"]));
        assert!(
            Policy::parse(&record_policy("", "p1").unwrap())
                .unwrap()
                .is_satisfied_by(&["patient:p1"])
        );
        assert!(record_policy("role:doctor and", "p1").is_err());
    }

    #[test]
    fn content_must_be_fhir_json_of_the_declared_type() {
        check_fhir("Observation", br#"{"resourceType":"Observation","status":"final"}"#).unwrap();
        assert!(check_fhir("Condition", br#"{"resourceType":"Observation"}"#).is_err());
        assert!(check_fhir("Observation", b"not json").is_err());
        assert!(check_fhir("Observation", br#"["resourceType"]"#).is_err());
    }
}
