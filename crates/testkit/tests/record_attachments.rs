//! Files attached to records (`docs/protocol.md` §13.4, issue #18) through the real services and
//! the SDK: a doctor attaches a file to a record, which becomes a DocumentReference record under
//! the same policy; the patient saves it byte for byte; a doctor whom the policy does not admit
//! is refused the blob by records-svc itself (not only the record), and the refusal and the
//! download are in the patient's access report; the blob in storage holds no plaintext; the
//! attachment rules (writers only, records not yet written). On SQLite and, when
//! CAREMESH_TEST_DATABASE_URL is set, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use caremesh_proto::audit::v1 as audit_pb;
use caremesh_proto::records::v1 as pb;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use caremesh_runtime::blob::BlobStore;
use caremesh_sdk::auth::Role;
use caremesh_sdk::record_attachments::{DOCUMENT_REFERENCE, attachment_of_document};
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::{Service, TestMesh, backends, eventually};
use tonic::Code;

mod attachment_support;

use attachment_support::*;

const OBSERVATION: &[u8] = br#"{"resourceType":"Observation","status":"final","code":{"text":"skin lesion"}}"#;

fn records_api(mesh: &TestMesh) -> RecordsServiceClient<tonic::transport::Channel> {
    RecordsServiceClient::new(mesh.sdk().channel(Service::Records).unwrap())
}

#[tokio::test]
async fn a_file_attached_to_a_record_follows_the_records_policy() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend).start().await;
        let patient = party(&mesh, mesh.patient().await).await;
        let cardiologist = party(&mesh, mesh.staff(Role::Doctor, &["dept:cardiology"]).await).await;
        let oncologist = party(&mesh, mesh.staff(Role::Doctor, &["dept:oncology"]).await).await;
        let record = cardiologist
            .messenger
            .create_record(
                &cardiologist.user.session,
                NewRecord {
                    patient_id: &patient.user.user_id,
                    kind: "Observation",
                    policy: r#""role:doctor" and "dept:cardiology""#,
                    content: OBSERVATION,
                },
            )
            .await
            .unwrap();

        let files = tempfile::tempdir().unwrap();
        let marker = "DERMATOLOGY-SCAN-MARKER";
        let original = write_file(files.path(), "scan.pdf", 3 * MIB + 777, marker);
        let document = cardiologist
            .messenger
            .attach_to_record(&cardiologist.user.session, &record.record_id, &original, None)
            .await
            .unwrap();
        assert_eq!(document.kind, DOCUMENT_REFERENCE, "{name}");
        assert_eq!(document.patient_id, patient.user.user_id, "{name}");
        assert_eq!(document.policy, record.policy, "{name}: the same policy as the record");

        // The patient saves it, byte for byte, under its attached name.
        let saved_dir = tempfile::tempdir().unwrap();
        let saved = patient
            .messenger
            .save_record_attachment(&patient.user.session, &document.record_id, saved_dir.path(), None)
            .await
            .unwrap();
        assert_eq!(saved.file_name().unwrap(), "scan.pdf", "{name}");
        assert_eq!(file_digest(&saved), file_digest(&original), "{name}: the file is whole");

        // The DocumentReference relates to the record and names the blob.
        let opened = patient
            .messenger
            .read_record(&patient.user.session, &document.record_id, 0)
            .await
            .unwrap();
        let content: serde_json::Value = serde_json::from_slice(&opened.content).unwrap();
        assert_eq!(
            content["context"]["related"][0]["reference"],
            format!("Observation/{}", record.record_id),
            "{name}"
        );
        assert_eq!(content["content"][0]["attachment"]["contentType"], "application/pdf");
        let attachment = attachment_of_document(&opened.content).unwrap();

        // records-svc refuses the blob itself to a doctor the policy does not admit.
        let refused = oncologist
            .messenger
            .save_record_attachment(&oncologist.user.session, &document.record_id, saved_dir.path(), None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(Code::PermissionDenied), "{name}: {refused}");
        let download = records_api(&mesh)
            .download_record_attachment(
                oncologist
                    .user
                    .session
                    .request(pb::DownloadRecordAttachmentRequest {
                        attachment_id: attachment.attachment_id.clone(),
                        offset: 0,
                    })
                    .unwrap(),
            )
            .await;
        let Err(status) = download else {
            panic!("{name}: the oncologist downloaded the blob")
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status:?}");
        assert!(status.message().contains("policy"), "{name}: {}", status.message());

        // The download and the refusal are in the patient's access report.
        let report = eventually(Duration::from_secs(10), || async {
            let report = mesh
                .sdk()
                .access_report(
                    &patient.user.session,
                    audit_pb::ListPatientAccessesRequest {
                        include_own: true,
                        ..Default::default()
                    },
                )
                .await
                .ok()?;
            let downloaded = report.accesses.iter().any(|access| {
                access.operation == "DownloadRecordAttachment"
                    && access.actor_user_id == patient.user.user_id
                    && access.outcome() == audit_pb::AuditOutcome::Success
            });
            let refused = report.accesses.iter().any(|access| {
                access.operation == "DownloadRecordAttachment"
                    && access.actor_user_id == oncologist.user.user_id
                    && access.outcome() == audit_pb::AuditOutcome::Denied
            });
            (downloaded && refused).then_some(report)
        })
        .await;
        assert!(
            report.is_some(),
            "{name}: the access report names the download and the refusal"
        );

        // Storage holds the blob, never the file.
        let db = mesh.database(Service::Records).await;
        let store = BlobStore::for_service(mesh.config(Service::Records), &db);
        let id = uuid::Uuid::parse_str(&attachment.attachment_id).unwrap();
        let blob = read_blob(&store, id).await;
        assert_eq!(blob.len() as u64, caremesh_crypto::attachment::blob_len(3 * MIB + 777));
        assert!(
            !blob.windows(marker.len()).any(|window| window == marker.as_bytes()),
            "{name}: plaintext in the stored blob"
        );
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn only_writers_attach_and_only_to_records_not_yet_written() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend).start().await;
        let patient = party(&mesh, mesh.patient().await).await;
        let doctor = party(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let record = doctor
            .messenger
            .create_record(
                &doctor.user.session,
                NewRecord {
                    patient_id: &patient.user.user_id,
                    kind: "Observation",
                    policy: r#""role:doctor""#,
                    content: OBSERVATION,
                },
            )
            .await
            .unwrap();
        let files = tempfile::tempdir().unwrap();
        let photo = write_file(files.path(), "rash.jpg", 100_000, "RASH");

        // A patient reads the record but may not attach to it.
        let refused = patient
            .messenger
            .attach_to_record(&patient.user.session, &record.record_id, &photo, None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(Code::PermissionDenied), "{name}: {refused}");
        assert_eq!(refused.reason().as_deref(), Some("ROLE_CANNOT_WRITE_RECORDS"), "{name}");

        // A written record gains no attachment: they come with a new record.
        let taken = records_api(&mesh)
            .create_record_attachment(
                doctor
                    .user
                    .session
                    .request(pb::CreateRecordAttachmentRequest {
                        attachment_id: caremesh_crypto::new_id(),
                        record_id: record.record_id.clone(),
                        blob_length: 1000,
                    })
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(taken.code(), Code::FailedPrecondition, "{name}: {taken:?}");
        assert!(taken.message().contains("create attachments before writing"), "{name}");

        // Saving from a record that is not a DocumentReference says what to give instead.
        let wrong = doctor
            .messenger
            .save_record_attachment(&doctor.user.session, &record.record_id, files.path(), None)
            .await
            .unwrap_err();
        assert!(wrong.to_string().contains("not a DocumentReference"), "{name}: {wrong}");
        mesh.shutdown().await;
    }
}
