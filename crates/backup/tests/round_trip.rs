//! Backup and restore end to end: a running mesh with real users, an end-to-end encrypted
//! message, one with an attachment, an ABE-encrypted record and audit events is backed up while
//! it serves, restored into a fresh mesh's empty databases (SQLite and PostgreSQL, in every
//! direction CAREMESH_TEST_DATABASE_URL allows); every user logs in again, the message and the
//! record open on their devices, the attachment saves byte for byte, and the restored audit log
//! verifies. Damaged archives are refused before anything is written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use caremesh_backup::{BackupError, tables};
use caremesh_runtime::config::ServiceConfig;
use caremesh_runtime::kek::Kek;
use caremesh_sdk::auth::Role;
use caremesh_sdk::messaging::{Content, Messenger};
use caremesh_sdk::proto::messaging::v1::{ListInboxRequest, MessageKind};
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::{Backend, Service, TestMesh, backends, eventually};

const RECORD: &[u8] = br#"{"resourceType":"Condition","code":{"text":"hypertension"}}"#;

fn configs(mesh: &TestMesh) -> Vec<ServiceConfig> {
    Service::ALL
        .into_iter()
        .map(|service| mesh.config(service).clone())
        .collect()
}

/// Tables holding rows, per service (to prove a refused restore wrote nothing).
async fn written_tables(mesh: &TestMesh) -> Vec<String> {
    let mut written = Vec::new();
    for service in Service::ALL {
        let db = mesh.database(service).await;
        for table in tables::tables(&db).await.unwrap() {
            written.push(format!("{}/{table}", service.as_str()));
        }
    }
    written
}

async fn round_trip(source: Backend, target: Backend) {
    let label = format!("{} -> {}", source.name(), target.name());
    let mesh = TestMesh::builder().backend(source).start().await;
    let admin = mesh.admin().await.clone();
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let users = vec![admin, patient.clone(), mesh.patient().await, doctor.clone()];
    // Devices live on the clients, not in the backup: they open what the restored mesh serves.
    let (patient_dir, doctor_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let patient_device = Messenger::open(mesh.sdk(), patient_dir.path(), "default", &patient.session)
        .await
        .unwrap();
    let doctor_device = Messenger::open(mesh.sdk(), doctor_dir.path(), "default", &doctor.session)
        .await
        .unwrap();
    let message = doctor_device
        .send(&doctor.session, &patient.user_id, b"your results are fine", None)
        .await
        .unwrap();
    // An attachment of more than one blob piece (files on SQLite, rows on PostgreSQL).
    let letter: Vec<u8> = (0..1_600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let letter_path = patient_dir.path().join("discharge-letter.pdf");
    std::fs::write(&letter_path, &letter).unwrap();
    let with_file = doctor_device
        .send_file(
            &doctor.session,
            &patient.user_id,
            &letter_path,
            "your letter",
            None,
            None,
        )
        .await
        .unwrap();
    std::fs::remove_file(&letter_path).unwrap();
    let record = doctor_device
        .create_record(
            &doctor.session,
            NewRecord {
                patient_id: &patient.user_id,
                kind: "Condition",
                policy: r#""role:doctor" and "dept:cardiology""#,
                content: RECORD,
            },
        )
        .await
        .unwrap();
    drop((patient_device, doctor_device));
    let log = mesh.audit_log().await;
    let events = eventually(Duration::from_secs(20), || async {
        let count = log.event_count().await.ok()?;
        (count >= 3).then_some(count)
    })
    .await
    .expect("audit events reach the log");

    // Backed up while every service keeps running.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("caremesh.backup");
    let kek = mesh.config(Service::Auth).kek_file.clone();
    let report = caremesh_backup::backup(&configs(&mesh), &kek, &archive).await.unwrap();
    assert_eq!(report.sha256.len(), 64);
    assert_eq!(report.services.len(), 5, "{label}");
    assert!(
        report.services.iter().any(|s| s.service == "auth-svc" && s.rows > 0),
        "{label}: {report:?}"
    );

    // A fresh mesh under the same KEK, its services held back so their databases stay empty.
    let mut builder = TestMesh::builder().backend(target).kek_from(&kek);
    for service in Service::ALL {
        builder = builder.hold_back(service);
    }
    let mut restored = builder.start().await;
    let targets = configs(&restored);
    let restored_kek = restored.config(Service::Auth).kek_file.clone();

    // Damaged archives: refused with a clear error, nothing written.
    let bytes = std::fs::read(&archive).unwrap();
    let truncated = dir.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let corrupted = dir.path().join("corrupted.backup");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&corrupted, &flipped).unwrap();
    for bad in [&truncated, &corrupted] {
        let error = caremesh_backup::restore(&targets, &restored_kek, bad, false)
            .await
            .unwrap_err();
        assert!(matches!(error, BackupError::Archive { .. }), "{label}: {error}");
        assert!(error.to_string().contains("corrupted or truncated"), "{label}: {error}");
    }
    assert!(
        written_tables(&restored).await.is_empty(),
        "{label}: a refused restore wrote nothing"
    );
    // Another KEK cannot open it.
    let other_kek = dir.path().join("other.key");
    std::fs::write(&other_kek, format!("{}\n", "ab".repeat(32))).unwrap();
    let error = caremesh_backup::restore(&targets, &other_kek, &archive, false)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("different key-encryption key"),
        "{label}: {error}"
    );

    let restore = caremesh_backup::restore(&targets, &restored_kek, &archive, false)
        .await
        .unwrap();
    assert_eq!(restore.services, report.services, "{label}: every row restored");

    // Non-empty now: refused unless forced.
    let error = caremesh_backup::restore(&targets, &restored_kek, &archive, false)
        .await
        .unwrap_err();
    assert!(matches!(error, BackupError::NotEmpty { .. }), "{label}: {error}");
    assert!(error.to_string().contains("--force"), "{label}: {error}");
    let forced = caremesh_backup::restore(&targets, &restored_kek, &archive, true)
        .await
        .unwrap();
    assert_eq!(forced.services, report.services, "{label}");

    for service in Service::ALL {
        restored.start_service(service).await;
    }
    // The source mesh's clock ran ahead with every TOTP login: move past its last used step.
    restored.advance(24 * 3600);
    for user in &users {
        let session = restored.login_with_totp(user).await;
        assert_eq!(
            session.user_id, user.session.user_id,
            "{label}: {} logs in",
            user.username
        );
    }
    let restored_events = restored.audit_log().await.event_count().await.unwrap();
    assert!(
        restored_events >= events,
        "{label}: {restored_events} < {events} audit events"
    );

    // The message and the record open on their devices against the restored mesh.
    let patient_session = restored.login_with_totp(&patient).await;
    let doctor_session = restored.login_with_totp(&doctor).await;
    let patient_device = Messenger::open(restored.sdk(), patient_dir.path(), "default", &patient_session)
        .await
        .unwrap();
    let doctor_device = Messenger::open(restored.sdk(), doctor_dir.path(), "default", &doctor_session)
        .await
        .unwrap();
    let (inbox, _) = patient_device
        .inbox(&patient_session, ListInboxRequest::default())
        .await
        .unwrap();
    let opened = inbox
        .iter()
        .find(|item| item.message.message_id == message.message_id && item.message.kind() == MessageKind::Direct)
        .unwrap_or_else(|| panic!("{label}: the message is restored"));
    assert_eq!(
        opened.content,
        Content::Plain(b"your results are fine".to_vec()),
        "{label}"
    );
    let opened = inbox
        .iter()
        .find(|item| item.message.message_id == with_file.message_id)
        .unwrap_or_else(|| panic!("{label}: the message with the attachment is restored"));
    let Content::Attachment { attachment, .. } = &opened.content else {
        panic!(
            "{label}: the restored message names its attachment: {:?}",
            opened.content
        );
    };
    let saved = patient_dir.path().join("restored-letter.pdf");
    patient_device
        .save_attachment(&patient_session, attachment, &saved, None)
        .await
        .unwrap_or_else(|error| panic!("{label}: the restored attachment opens: {error}"));
    assert!(
        std::fs::read(&saved).unwrap() == letter,
        "{label}: the attachment is restored byte for byte"
    );
    for (device, session) in [(&patient_device, &patient_session), (&doctor_device, &doctor_session)] {
        let read = device.read_record(session, &record.record_id, 0).await.unwrap();
        assert_eq!(read.content.as_slice(), RECORD, "{label}: the record opens");
    }

    // `caremesh audit verify` on the restored log: recomputed tree, every checkpoint checked.
    restored.stop_service(Service::Audit).await;
    let audit_db = restored.database(Service::Audit).await;
    let report = audit_svc::verify::verify_log(&audit_db, &Kek::load(&restored_kek).unwrap())
        .await
        .unwrap_or_else(|error| panic!("{label}: the restored audit log does not verify: {error}"));
    assert!(report.tree_size >= events, "{label}");

    restored.shutdown().await;
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_into_empty_databases_and_every_user_logs_in() {
    let backends = backends();
    for source in &backends {
        for target in &backends {
            round_trip(source.clone(), target.clone()).await;
        }
    }
}
