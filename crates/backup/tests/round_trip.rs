//! Backup and restore end to end: a running mesh with real users and audit events is backed up
//! while it serves, restored into a fresh mesh's empty databases (SQLite and PostgreSQL, in every
//! direction CAREMESH_TEST_DATABASE_URL allows), and every user logs in again. Damaged archives
//! are refused before anything is written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use caremesh_backup::{BackupError, tables};
use caremesh_runtime::config::ServiceConfig;
use caremesh_testkit::{Backend, Service, TestMesh, backends, eventually};

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
    let users = vec![admin, mesh.patient().await, mesh.patient().await];
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
