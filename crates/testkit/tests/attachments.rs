//! Attachments (docs/protocol.md §13, issue #18) through the real services and the SDK (the 20 MiB
//! round trip, which measures memory, is `attachments_memory.rs`, a process of its own): an upload
//! cut in the middle that resumes where the server's copy ends; blobs altered in
//! storage (a flipped byte, two chunks swapped, the end cut off) refused by the client without a
//! byte written; downloads refused to anyone but the message's parties; recall and lifespan
//! deleting the blob; the per-user quota and the size limit; and no plaintext in storage. Each
//! test runs on SQLite (files beside the database) and, when CAREMESH_TEST_DATABASE_URL is set,
//! on PostgreSQL (rows).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use caremesh_proto::messaging::v1 as pb;
use caremesh_runtime::blob::BlobStore;
use caremesh_sdk::attachments::{PreparedUpload, Progress};
use caremesh_sdk::auth::{Role, Session};
use caremesh_testkit::{TestMesh, backends, eventually};

mod attachment_support;

use attachment_support::*;

#[tokio::test]
async fn an_interrupted_upload_resumes_where_the_servers_copy_ends() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend).start().await;
        let patient = party(&mesh, mesh.patient().await).await;
        let nurse = party(&mesh, mesh.staff(Role::Nurse, &[]).await).await;
        let files = tempfile::tempdir().unwrap();
        let original = write_file(files.path(), "referral.pdf", 8 * MIB + 12_345, "REFERRAL");
        let upload = PreparedUpload::new(&original, &caremesh_crypto::new_id()).unwrap();

        // The first attempt is cut once 6 MiB are on their way (as a lost connection would).
        let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
        let cut_tx = Mutex::new(Some(cut_tx));
        let cut_at: Progress = Arc::new(move |done, _| {
            if done >= 6 * MIB
                && let Some(tx) = cut_tx.lock().unwrap().take()
            {
                let _ = tx.send(());
            }
        });
        let first = patient
            .messenger
            .upload_attachment(&patient.user.session, &upload, Some(cut_at));
        tokio::select! {
            result = first => panic!("{name}: the upload finished before it was cut: {result:?}"),
            _ = cut_rx => {}
        }
        // Pieces already on the wire may still land after the cut: wait until the server's copy
        // stops growing, so the resumed upload is measured against what the server really holds.
        let stored_now = || async {
            api(&mesh)
                .get_attachment(
                    patient
                        .user
                        .session
                        .request(pb::GetAttachmentRequest {
                            attachment_id: upload.attachment_id().to_owned(),
                        })
                        .unwrap(),
                )
                .await
                .ok()?
                .into_inner()
                .attachment
        };
        let stored = eventually(Duration::from_secs(10), || async {
            let before = stored_now().await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = stored_now().await?;
            (before.stored_length >= MIB && after.stored_length == before.stored_length).then_some(after)
        })
        .await
        .unwrap_or_else(|| panic!("{name}: part of the blob was stored before the cut"));
        assert!(!stored.complete, "{name}: the cut upload is not complete");
        assert!(stored.stored_length < upload.blob_len(), "{name}");

        // The same upload again sends only what is missing.
        let resumed: Arc<Mutex<Vec<u64>>> = Arc::default();
        let seen = Arc::clone(&resumed);
        let report: Progress = Arc::new(move |done, _| seen.lock().unwrap().push(done));
        let attachment = patient
            .messenger
            .upload_attachment(&patient.user.session, &upload, Some(report))
            .await
            .unwrap();
        let first_report = resumed.lock().unwrap()[0];
        assert!(
            first_report > stored.stored_length && first_report <= stored.stored_length + MIB,
            "{name}: the resumed upload starts at the stored {} bytes (first report {first_report})",
            stored.stored_length
        );
        let sent = patient
            .messenger
            .send_attachment(
                &patient.user.session,
                &nurse.user.user_id,
                &upload,
                attachment,
                "",
                None,
            )
            .await
            .unwrap();
        let attachment = received_attachment(&nurse, &sent.message_id).await;
        let saved = files.path().join("saved.pdf");
        nurse
            .messenger
            .save_attachment(&nurse.user.session, &attachment, &saved, None)
            .await
            .unwrap();
        assert_eq!(
            file_digest(&saved),
            file_digest(&original),
            "{name}: the resumed file is whole"
        );
        mesh.shutdown().await;
    }
}

/// Replaces the stored blob `id` with what `change` makes of it.
async fn rewrite_blob(store: &BlobStore, id: uuid::Uuid, change: impl FnOnce(&mut Vec<u8>)) {
    let mut blob = read_blob(store, id).await;
    change(&mut blob);
    store.delete(id).await.unwrap();
    for (index, piece) in blob.chunks(1 << 20).enumerate() {
        store.append(id, (index << 20) as u64, piece).await.unwrap();
    }
}

#[tokio::test]
async fn a_blob_altered_in_storage_is_refused_by_the_client_and_nothing_is_written() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend).start().await;
        let patient = party(&mesh, mesh.patient().await).await;
        let doctor = party(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let files = tempfile::tempdir().unwrap();
        let store = store(&mesh).await;
        let chunk = caremesh_crypto::attachment::SEALED_CHUNK_LEN;
        type Tampering = Box<dyn FnOnce(&mut Vec<u8>)>;
        let tamperings: [(&str, Tampering); 3] = [
            ("a flipped byte", Box::new(|blob: &mut Vec<u8>| blob[70_000] ^= 0x01)),
            (
                "two chunks swapped",
                Box::new(move |blob: &mut Vec<u8>| {
                    let (first, rest) = blob.split_at_mut(chunk);
                    first.swap_with_slice(&mut rest[..chunk]);
                }),
            ),
            (
                "the last chunk cut off",
                Box::new(move |blob: &mut Vec<u8>| {
                    let keep = blob.len() - blob.len() % chunk;
                    let keep = if keep == blob.len() { keep - chunk } else { keep };
                    blob.truncate(keep);
                }),
            ),
        ];
        for (what, change) in tamperings {
            let original = write_file(files.path(), &format!("scan {what}.pdf"), 300_000, "SCAN");
            let sent = patient
                .messenger
                .send_file(&patient.user.session, &doctor.user.user_id, &original, "", None, None)
                .await
                .unwrap();
            let attachment = received_attachment(&doctor, &sent.message_id).await;
            let id = uuid::Uuid::parse_str(&attachment.attachment_id).unwrap();
            rewrite_blob(&store, id, change).await;
            let out = files.path().join(format!("saved {what}.pdf"));
            let error = doctor
                .messenger
                .save_attachment(&doctor.user.session, &attachment, &out, None)
                .await
                .expect_err(&format!("{name}: {what} must be refused"));
            eprintln!("{name}: {what}: {error}");
            assert!(!out.exists(), "{name}: {what}: nothing at the destination");
            let part = files.path().join(format!("saved {what}.pdf.part"));
            assert!(!part.exists(), "{name}: {what}: no partial file left");
        }
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn only_the_messages_parties_may_download_or_upload() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend).start().await;
        let patient = party(&mesh, mesh.patient().await).await;
        let doctor = party(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let other_doctor = party(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let files = tempfile::tempdir().unwrap();
        let original = write_file(files.path(), "letter.pdf", 100_000, "LETTER");
        let sent = patient
            .messenger
            .send_file(&patient.user.session, &doctor.user.user_id, &original, "", None, None)
            .await
            .unwrap();
        let attachment = received_attachment(&doctor, &sent.message_id).await;

        // Even with the key (say it leaked), a stranger gets no blob.
        let out = files.path().join("stolen.pdf");
        let error = other_doctor
            .messenger
            .save_attachment(&other_doctor.user.session, &attachment, &out, None)
            .await
            .unwrap_err();
        assert_eq!(
            status_of(error),
            (tonic::Code::PermissionDenied, "NOT_A_PARTY".to_owned()),
            "{name}"
        );
        assert!(!out.exists(), "{name}");
        let status = api(&mesh)
            .get_attachment(
                other_doctor
                    .user
                    .session
                    .request(pb::GetAttachmentRequest {
                        attachment_id: attachment.attachment_id.clone(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{name}: {status:?}");

        // Only the creator uploads; a taken message id gains no attachments.
        let pieces = futures::stream::iter([pb::UploadAttachmentRequest {
            attachment_id: attachment.attachment_id.clone(),
            offset: 0,
            data: vec![0; 16],
        }]);
        let status = api(&mesh)
            .upload_attachment(doctor.user.session.request(pieces).unwrap())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{name}: {status:?}");
        let status = api(&mesh)
            .create_attachment(
                other_doctor
                    .user
                    .session
                    .request(pb::CreateAttachmentRequest {
                        attachment_id: caremesh_crypto::new_id(),
                        message_id: sent.message_id.clone(),
                        blob_length: 100,
                    })
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{name}: {status:?}");
        assert!(
            status.message().contains("already sent"),
            "{name}: {}",
            status.message()
        );

        // The parties, on the other hand, can.
        let out = files.path().join("mine.pdf");
        patient
            .messenger
            .save_attachment(&patient.user.session, &attachment, &out, None)
            .await
            .unwrap();
        assert_eq!(
            file_digest(&out),
            file_digest(&original),
            "{name}: the sender reads it back"
        );
        mesh.shutdown().await;
    }
}

async fn blob_exists(store: &BlobStore, attachment_id: &str) -> bool {
    store.len(uuid::Uuid::parse_str(attachment_id).unwrap()).await.unwrap() > 0
}

async fn attachment_state(
    mesh: &TestMesh,
    session: &Session,
    attachment_id: &str,
) -> Result<pb::Attachment, tonic::Status> {
    api(mesh)
        .get_attachment(
            session
                .request(pb::GetAttachmentRequest {
                    attachment_id: attachment_id.to_owned(),
                })
                .unwrap(),
        )
        .await
        .map(|response| response.into_inner().attachment.unwrap())
}

#[tokio::test]
async fn recall_and_lifespan_delete_the_blob() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder()
            .backend(backend)
            .setting("CAREMESH_MESSAGING_PURGE_INTERVAL_SECONDS", "1")
            .start()
            .await;
        let patient = party(&mesh, mesh.patient().await).await;
        let doctor = party(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let files = tempfile::tempdir().unwrap();
        let store = store(&mesh).await;
        let original = write_file(files.path(), "photo.png", 200_000, "PHOTO");

        let sent = patient
            .messenger
            .send_file(&patient.user.session, &doctor.user.user_id, &original, "", None, None)
            .await
            .unwrap();
        let attachment = received_attachment(&doctor, &sent.message_id).await;
        assert!(blob_exists(&store, &attachment.attachment_id).await, "{name}");
        patient
            .messenger
            .recall(&patient.user.session, &sent.message_id)
            .await
            .unwrap();
        assert!(
            !blob_exists(&store, &attachment.attachment_id).await,
            "{name}: recall deletes the blob"
        );
        let status = attachment_state(&mesh, &doctor.user.session, &attachment.attachment_id)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{name}: {status:?}");
        let out = files.path().join("recalled.png");
        let error = doctor
            .messenger
            .save_attachment(&doctor.user.session, &attachment, &out, None)
            .await
            .unwrap_err();
        assert_eq!(status_of(error).0, tonic::Code::NotFound, "{name}");

        let sent = patient
            .messenger
            .send_file(
                &patient.user.session,
                &doctor.user.user_id,
                &original,
                "",
                Some(Duration::from_secs(60)),
                None,
            )
            .await
            .unwrap();
        let attachment = received_attachment(&doctor, &sent.message_id).await;
        assert!(blob_exists(&store, &attachment.attachment_id).await, "{name}");
        mesh.advance(61);
        let gone = eventually(Duration::from_secs(20), || async {
            (!blob_exists(&store, &attachment.attachment_id).await).then_some(())
        })
        .await;
        assert!(gone.is_some(), "{name}: the lifespan's end deletes the blob");
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn the_quota_and_the_size_limit_are_clear_refusals() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder()
            .backend(backend)
            .setting("CAREMESH_MESSAGING_ATTACHMENT_QUOTA_MIB", "3")
            .setting("CAREMESH_MESSAGING_ATTACHMENT_MAX_MIB", "2")
            .start()
            .await;
        let patient = party(&mesh, mesh.patient().await).await;
        let doctor = party(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let files = tempfile::tempdir().unwrap();

        let large = write_file(files.path(), "large.bin", 2 * MIB + 1, "LARGE");
        let error = patient
            .messenger
            .send_file(&patient.user.session, &doctor.user.user_id, &large, "", None, None)
            .await
            .unwrap_err();
        let message = error.to_string();
        assert_eq!(
            status_of(error),
            (tonic::Code::InvalidArgument, "ATTACHMENT_TOO_LARGE".to_owned()),
            "{name}"
        );
        assert!(message.contains("smaller file"), "{name}: says what to do: {message}");

        let half = write_file(files.path(), "half.bin", 1536 * 1024, "HALF");
        let first = patient
            .messenger
            .send_file(&patient.user.session, &doctor.user.user_id, &half, "", None, None)
            .await
            .unwrap();
        let error = patient
            .messenger
            .send_file(&patient.user.session, &doctor.user.user_id, &half, "", None, None)
            .await
            .unwrap_err();
        let message = error.to_string();
        assert_eq!(
            status_of(error),
            (tonic::Code::ResourceExhausted, "ATTACHMENT_QUOTA_EXCEEDED".to_owned()),
            "{name}"
        );
        assert!(message.contains("recall"), "{name}: says what to do: {message}");
        // The quota is the user's: the doctor still sends, and a recall frees the patient's.
        doctor
            .messenger
            .send_file(&doctor.user.session, &patient.user.user_id, &half, "", None, None)
            .await
            .unwrap();
        patient
            .messenger
            .recall(&patient.user.session, &first.message_id)
            .await
            .unwrap();
        patient
            .messenger
            .send_file(&patient.user.session, &doctor.user.user_id, &half, "", None, None)
            .await
            .unwrap();
        mesh.shutdown().await;
    }
}
