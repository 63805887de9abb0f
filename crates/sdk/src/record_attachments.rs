//! Files kept with patient records (`docs/protocol.md` §13.4): a file is encrypted here (as a
//! message's attachment is) and uploaded to records-svc for a new FHIR `DocumentReference`
//! record about the same patient, under the same policy as the record it is attached to. The
//! DocumentReference names the blob (`content[0].attachment.url` = `urn:uuid:<attachment id>`)
//! and carries its key and digest in two extensions, inside the ABE-sealed content: the server
//! sees the blob and its length only, and serves it to whoever the record's policy admits.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use caremesh_crypto::v2::{AttachmentRef, MAX_ATTACHMENT_LABEL_LEN};
use caremesh_proto::records::v1 as pb;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::SdkError;
use crate::attachments::{
    BlobPiece, BlobService, BlobState, PreparedUpload, Progress, safe_file_name, save_blob, truncate_utf8, upload_blob,
    upload_requests,
};
use crate::auth::Session;
use crate::messaging::Messenger;

/// The FHIR resource type of records that hold a file.
pub const DOCUMENT_REFERENCE: &str = "DocumentReference";
/// The extension holding the attachment key (base64).
pub const KEY_EXTENSION: &str = "https://caremesh.dev/fhir/StructureDefinition/attachment-key";
/// The extension holding the SHA-256 of the encrypted blob (base64).
pub const DIGEST_EXTENSION: &str = "https://caremesh.dev/fhir/StructureDefinition/attachment-blob-sha256";
const URL_PREFIX: &str = "urn:uuid:";

/// The DocumentReference (FHIR R4) for `attachment`, about `patient_id`, related to the record
/// `related` (its kind and id).
pub fn document_reference(patient_id: &str, related: (&str, &str), attachment: &AttachmentRef, now: &str) -> Value {
    let (kind, record_id) = related;
    let mut file = json!({
        "url": format!("{URL_PREFIX}{}", attachment.attachment_id),
        "size": attachment.file_len,
        "title": attachment.file_name,
        "creation": now,
        "extension": [
            {"url": KEY_EXTENSION, "valueBase64Binary": BASE64.encode(attachment.key.as_slice())},
            {"url": DIGEST_EXTENSION, "valueBase64Binary": BASE64.encode(attachment.digest)},
        ],
    });
    if !attachment.media_type.is_empty()
        && let Some(object) = file.as_object_mut()
    {
        object.insert("contentType".to_owned(), json!(attachment.media_type));
    }
    json!({
        "resourceType": DOCUMENT_REFERENCE,
        "status": "current",
        "subject": {"reference": format!("Patient/{patient_id}")},
        "date": now,
        "description": attachment.file_name,
        "content": [{"attachment": file}],
        "context": {"related": [{"reference": format!("{kind}/{record_id}")}]},
    })
}

/// The attachment a DocumentReference's content names, with its key and digest.
pub fn attachment_of_document(content: &[u8]) -> Result<AttachmentRef, SdkError> {
    let not_ours = |what: &str| {
        SdkError::Local(format!(
            "the DocumentReference holds no caremesh attachment ({what}): it was not written by `records attach`"
        ))
    };
    let document: Value = serde_json::from_slice(content).map_err(|_| not_ours("not JSON"))?;
    let file = document
        .pointer("/content/0/attachment")
        .ok_or_else(|| not_ours("no content[0].attachment"))?;
    let text = |name: &str| file.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let attachment_id = text("url")
        .strip_prefix(URL_PREFIX)
        .map(str::to_owned)
        .ok_or_else(|| not_ours("its url is not urn:uuid:"))?;
    let extension = |url: &str| -> Result<Zeroizing<Vec<u8>>, SdkError> {
        let value = file
            .get("extension")
            .and_then(Value::as_array)
            .and_then(|extensions| {
                extensions
                    .iter()
                    .find(|extension| extension.get("url").and_then(Value::as_str) == Some(url))
            })
            .and_then(|extension| extension.get("valueBase64Binary"))
            .and_then(Value::as_str)
            .ok_or_else(|| not_ours("no key or digest extension"))?;
        BASE64
            .decode(value)
            .map(Zeroizing::new)
            .map_err(|_| not_ours("the key or digest is not base64"))
    };
    let key = extension(KEY_EXTENSION)?;
    let digest = extension(DIGEST_EXTENSION)?;
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| not_ours("the key is not 32 bytes"))?;
    let digest: [u8; 32] = digest
        .as_slice()
        .try_into()
        .map_err(|_| not_ours("the digest is not 32 bytes"))?;
    let file_len = file
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| not_ours("no size"))?;
    let file_name = truncate_utf8(&text("title"), MAX_ATTACHMENT_LABEL_LEN);
    Ok(AttachmentRef {
        attachment_id,
        key: Zeroizing::new(key),
        digest,
        file_len,
        media_type: text("contentType"),
        file_name,
    })
}

/// records-svc as a [`BlobService`].
struct RecordBlobs(RecordsServiceClient<Channel>);

fn record_blob_state(attachment: Option<pb::RecordAttachment>) -> Result<BlobState, SdkError> {
    let attachment = attachment.ok_or(SdkError::Protocol("no attachment in the answer"))?;
    Ok(BlobState {
        stored_length: attachment.stored_length,
        blob_length: attachment.blob_length,
        complete: attachment.complete,
    })
}

impl BlobService for RecordBlobs {
    async fn create(&self, session: &Session, upload: &PreparedUpload) -> Result<BlobState, SdkError> {
        let answer = self
            .0
            .clone()
            .create_record_attachment(session.request(pb::CreateRecordAttachmentRequest {
                attachment_id: upload.attachment_id().to_owned(),
                record_id: upload.parent_id().to_owned(),
                blob_length: upload.blob_len(),
            })?)
            .await?;
        record_blob_state(answer.into_inner().attachment)
    }

    async fn state(&self, session: &Session, attachment_id: &str) -> Result<BlobState, SdkError> {
        let answer = self
            .0
            .clone()
            .get_record_attachment(session.request(pb::GetRecordAttachmentRequest {
                attachment_id: attachment_id.to_owned(),
            })?)
            .await?;
        record_blob_state(answer.into_inner().attachment)
    }

    async fn upload(
        &self,
        session: &Session,
        attachment_id: &str,
        pieces: BoxStream<'static, BlobPiece>,
    ) -> Result<BlobState, SdkError> {
        let requests = upload_requests(attachment_id, pieces, |attachment_id, (offset, data)| {
            pb::UploadRecordAttachmentRequest {
                attachment_id,
                offset,
                data,
            }
        });
        let answer = self
            .0
            .clone()
            .upload_record_attachment(session.request(requests)?)
            .await?;
        record_blob_state(answer.into_inner().attachment)
    }

    async fn download(
        &self,
        session: &Session,
        attachment_id: &str,
    ) -> Result<BoxStream<'static, Result<BlobPiece, SdkError>>, SdkError> {
        let pieces = self
            .0
            .clone()
            .download_record_attachment(session.request(pb::DownloadRecordAttachmentRequest {
                attachment_id: attachment_id.to_owned(),
                offset: 0,
            })?)
            .await?
            .into_inner();
        Ok(pieces
            .map(|piece| piece.map(|piece| (piece.offset, piece.data)).map_err(SdkError::from))
            .boxed())
    }
}

impl Messenger {
    /// Attaches `file` to the record `record_id`: encrypts and uploads it, then writes a new
    /// DocumentReference record naming it, about the same patient and under the same policy.
    /// Returns that record.
    pub async fn attach_to_record(
        &self,
        session: &Session,
        record_id: &str,
        file: &Path,
        progress: Option<Progress>,
    ) -> Result<pb::Record, SdkError> {
        let target = self
            .record_version(session, record_id, 0, pb::RecordView::Basic)
            .await?;
        let upload = PreparedUpload::new(file, &caremesh_crypto::new_id())?;
        let attachment = upload_blob(&RecordBlobs(self.records_api()?), session, &upload, progress).await?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let document = document_reference(&target.patient_id, (&target.kind, &target.record_id), &attachment, &now);
        let content = Zeroizing::new(
            serde_json::to_vec(&document)
                .map_err(|error| SdkError::Local(format!("the DocumentReference: {error}")))?,
        );
        let template = pb::Record {
            record_id: upload.parent_id().to_owned(),
            patient_id: target.patient_id,
            kind: DOCUMENT_REFERENCE.to_owned(),
            version: 1,
            // Already the complete policy (with the patient and emergency clauses).
            policy: target.policy,
            ..pb::Record::default()
        };
        self.create_record_from(session, template, &content).await
    }

    /// Saves the file a DocumentReference record (`attach_to_record`) holds into `dir`, under the
    /// name it was attached with (made safe), and returns its path. Nothing is left in `dir`
    /// unless every chunk and the digest check out.
    pub async fn save_record_attachment(
        &self,
        session: &Session,
        record_id: &str,
        dir: &Path,
        progress: Option<Progress>,
    ) -> Result<PathBuf, SdkError> {
        let opened = self.read_record(session, record_id, 0).await?;
        if opened.record.kind != DOCUMENT_REFERENCE {
            return Err(SdkError::Local(format!(
                "record {record_id} is a {}, not a DocumentReference: give the id `records attach` printed",
                opened.record.kind
            )));
        }
        let attachment = attachment_of_document(&opened.content)?;
        let out = dir.join(safe_file_name(&attachment.file_name, "attachment"));
        save_blob(&RecordBlobs(self.records_api()?), session, &attachment, &out, progress).await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reference_gives_back_the_attachment_it_names() {
        let attachment = AttachmentRef {
            attachment_id: "0190b9a0-0000-7000-8000-000000000001".to_owned(),
            key: Zeroizing::new([7; 32]),
            digest: [9; 32],
            file_len: 123_456,
            media_type: "application/pdf".to_owned(),
            file_name: "referral.pdf".to_owned(),
        };
        let document = document_reference("p1", ("Observation", "r1"), &attachment, "2026-12-03T12:00:00Z");
        assert_eq!(document["context"]["related"][0]["reference"], "Observation/r1");
        assert_eq!(document["subject"]["reference"], "Patient/p1");
        let back = attachment_of_document(&serde_json::to_vec(&document).unwrap()).unwrap();
        assert_eq!(back.attachment_id, attachment.attachment_id);
        assert_eq!(*back.key, *attachment.key);
        assert_eq!(back.digest, attachment.digest);
        assert_eq!(back.file_len, attachment.file_len);
        assert_eq!(back.media_type, attachment.media_type);
        assert_eq!(back.file_name, attachment.file_name);
    }

    #[test]
    fn a_document_without_our_extensions_is_refused_with_the_reason() {
        let document = json!({"resourceType": "DocumentReference", "content": [{"attachment": {"url": "urn:uuid:x"}}]});
        let error = attachment_of_document(&serde_json::to_vec(&document).unwrap()).unwrap_err();
        assert!(error.to_string().contains("no key or digest extension"), "{error}");
    }
}
