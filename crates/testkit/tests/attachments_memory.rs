//! A 40 MiB attachment (issue #18) sent by a patient and saved by the doctor, byte for byte,
//! through the real services and the SDK, in this process alone (its own test binary) so that the
//! resident-memory peak it reads is the transfer's: upload, storage and download must grow it by
//! much less than the file. Storage holds the blob and no plaintext of the file. SQLite (files)
//! and, when CAREMESH_TEST_DATABASE_URL is set, PostgreSQL (rows).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};

use caremesh_sdk::attachments::Progress;
use caremesh_sdk::auth::Role;
use caremesh_sdk::messaging::Content;
use caremesh_testkit::{Backend, Service, TestMesh, backends};
use sea_orm::{ConnectionTrait, Statement};

mod attachment_support;

use attachment_support::*;

/// The file moved: twice the 20 MiB issue #18 names, so that what stays in memory (the pieces in
/// flight, about 13 MiB in a debug build whatever the size) is clearly apart from the file.
const FILE_LEN: u64 = 40 * MIB;

#[tokio::test]
async fn a_40_mib_file_goes_through_unchanged_in_bounded_memory_with_no_plaintext_stored() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = party(&mesh, mesh.patient().await).await;
        let doctor = party(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let files = tempfile::tempdir().unwrap();
        let marker = format!("RASH-PHOTO-MARKER-{}", uuid::Uuid::now_v7().simple());
        let original = write_file(files.path(), "rash.jpg", FILE_LEN, &marker);

        // Warm up (connections, caches, allocator arenas), then move a 2 MiB and a 40 MiB file,
        // each with the peak reset before it: twenty times the bytes must not cost much more memory.
        let small = write_file(files.path(), "small.txt", 2 * MIB, &marker);
        round_trip(&patient, &doctor, &small, &files.path().join("warm.txt"), None).await;
        let (_, small_growth_kib) =
            round_trip(&patient, &doctor, &small, &files.path().join("small-saved.txt"), None).await;
        let progress: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let seen = Arc::clone(&progress);
        let report: Progress = Arc::new(move |done, total| seen.lock().unwrap().push((done, total)));
        let saved = files.path().join("saved.jpg");
        let (attachment, growth_kib) = round_trip(&patient, &doctor, &original, &saved, Some(report)).await;
        assert_eq!(attachment.file_name, "rash.jpg", "{name}");
        assert_eq!(attachment.media_type, "image/jpeg", "{name}");
        assert_eq!(attachment.file_len, FILE_LEN, "{name}");
        assert_eq!(file_digest(&saved), file_digest(&original), "{name}: byte for byte");

        let reports = progress.lock().unwrap().clone();
        let blob_len = caremesh_crypto::attachment::blob_len(FILE_LEN);
        assert!(reports.len() >= 20, "{name}: progress in pieces: {}", reports.len());
        assert_eq!(
            reports.last(),
            Some(&(blob_len, blob_len)),
            "{name}: progress ends at the total"
        );
        assert!(
            reports.windows(2).all(|w| w[0].0 < w[1].0),
            "{name}: progress only grows"
        );

        // Upload, storage and download in this one process: the pieces in flight, not the file.
        eprintln!(
            "{name}: resident-memory peak growth while sending and saving: 2 MiB file +{small_growth_kib:?} KiB, \
             {} MiB file +{growth_kib:?} KiB",
            FILE_LEN / MIB
        );
        if let (Some(small_growth_kib), Some(growth_kib)) = (small_growth_kib, growth_kib) {
            assert!(
                growth_kib < FILE_LEN / 1024 / 2,
                "{name}: the peak grew by {growth_kib} KiB moving a {} MiB file",
                FILE_LEN / MIB
            );
            assert!(
                growth_kib < small_growth_kib + 10 * 1024,
                "{name}: memory grows with the file: +{small_growth_kib} KiB for 2 MiB, +{growth_kib} KiB for {} MiB",
                FILE_LEN / MIB
            );
        }

        // Storage holds the blob, not the file.
        let store = store(&mesh).await;
        let id = uuid::Uuid::parse_str(&attachment.attachment_id).unwrap();
        assert_eq!(store.len(id).await.unwrap(), blob_len, "{name}: the blob is stored");
        let needle = marker.as_bytes();
        match &backend {
            Backend::Postgres(_) => {
                let db = mesh.database(Service::Messaging).await;
                let schema = &mesh.config(Service::Messaging).database.schema;
                let row = db
                    .query_one_raw(Statement::from_sql_and_values(
                        sea_orm::DbBackend::Postgres,
                        format!(
                            "SELECT count(*) AS pieces, count(*) FILTER (WHERE position($1::bytea IN data) > 0) AS found \
                             FROM \"{schema}\".blob_pieces"
                        ),
                        [needle.to_vec().into()],
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                let pieces: i64 = row.try_get("", "pieces").unwrap();
                let found: i64 = row.try_get("", "found").unwrap();
                assert!(pieces >= 20, "{name}: the blob is in rows: {pieces}");
                assert_eq!(found, 0, "{name}: no piece holds the file's marker");
            }
            _ => {
                let blob_dir = store.files_dir().unwrap().to_owned();
                assert!(
                    blob_dir.join(format!("{id}.blob")).exists(),
                    "{name}: the blob is a file"
                );
            }
        }
        for file in caremesh_testkit::files_under(&mesh.dir()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "{name}: {} holds the file's plaintext marker",
                file.display()
            );
        }
        mesh.shutdown().await;
    }
}

/// Sends `file` from the patient to the doctor, who saves it at `out`: the attachment, and how
/// much the process's resident-memory peak grew meanwhile (None where the peak cannot be reset).
async fn round_trip(
    patient: &Party,
    doctor: &Party,
    file: &std::path::Path,
    out: &std::path::Path,
    progress: Option<Progress>,
) -> (caremesh_crypto::v2::AttachmentRef, Option<u64>) {
    let before_kib = memory_kib("VmRSS:");
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let sent = patient
        .messenger
        .send_file(
            &patient.user.session,
            &doctor.user.user_id,
            file,
            "the rash this morning",
            None,
            progress,
        )
        .await
        .unwrap();
    let opened = doctor
        .messenger
        .get(&doctor.user.session, &sent.message_id)
        .await
        .unwrap();
    let Content::Attachment { caption, attachment } = opened.content else {
        panic!("the doctor sees an attachment");
    };
    assert_eq!(caption, b"the rash this morning");
    let len = doctor
        .messenger
        .save_attachment(&doctor.user.session, &attachment, out, None)
        .await
        .unwrap();
    assert_eq!(len, attachment.file_len);
    let growth = peak_reset.then(|| memory_kib("VmHWM:").saturating_sub(before_kib));
    (attachment, growth)
}
