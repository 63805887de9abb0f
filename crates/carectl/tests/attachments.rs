//! `carectl msg send --attach`, `carectl msg save`, `carectl records attach` and
//! `carectl records save` against the real services: a patient sends a photo to a doctor, who
//! saves it; the doctor attaches a letter to the patient's record, which the patient saves. Each
//! file arrives byte for byte under its own name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::carectl;

use caremesh_sdk::auth::Role;
use caremesh_sdk::profile::ProfileStore;
use caremesh_testkit::TestMesh;

/// A file of `len` bytes that differ from one another (not all zeros).
fn write_file(dir: &std::path::Path, name: &str, len: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn files_go_with_messages_and_records_and_come_back_whole() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:dermatology"]).await;
    let store = ProfileStore::new(home.path());
    store.save("patient", &patient.session).unwrap();
    store.save("doctor", &doctor.session).unwrap();
    let run = carectl(&mesh, home.path(), "doctor", &["--json", "msg", "inbox"], "").await;
    assert!(run.ok, "{}", run.stderr);

    // A photo with a message.
    let photo = write_file(files.path(), "rash.jpg", 1_500_000);
    let photo_path = photo.display().to_string();
    let sent = carectl(
        &mesh,
        home.path(),
        "patient",
        &[
            "--json",
            "msg",
            "send",
            &doctor.username,
            "it spread overnight",
            "--attach",
            &photo_path,
        ],
        "",
    )
    .await;
    assert!(sent.ok, "{}", sent.stderr);
    let message_id = sent.json()["message_id"].as_str().unwrap().to_owned();
    let saved_dir = tempfile::tempdir().unwrap();
    let out = saved_dir.path().display().to_string();
    let saved = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "msg", "save", &message_id, "--out", &out],
        "",
    )
    .await;
    assert!(saved.ok, "{}", saved.stderr);
    let saved_path = saved_dir.path().join("rash.jpg");
    assert_eq!(saved.json()["path"], saved_path.display().to_string());
    assert_eq!(std::fs::read(&saved_path).unwrap(), std::fs::read(&photo).unwrap());
    // Never over an existing file.
    let again = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["msg", "save", &message_id, "--out", &out],
        "",
    )
    .await;
    assert!(!again.ok);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);

    // A letter attached to a record.
    let put = carectl(
        &mesh,
        home.path(),
        "doctor",
        &[
            "--json",
            "records",
            "put",
            "--patient",
            &patient.username,
            "--kind",
            "Condition",
            "--policy",
            r#""role:doctor" and "dept:dermatology""#,
            r#"{"resourceType":"Condition","code":{"text":"contact dermatitis"}}"#,
        ],
        "",
    )
    .await;
    assert!(put.ok, "{}", put.stderr);
    let record_id = put.json()["record_id"].as_str().unwrap().to_owned();
    let letter = write_file(files.path(), "letter.pdf", 300_000);
    let letter_path = letter.display().to_string();
    let attached = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "records", "attach", &record_id, &letter_path],
        "",
    )
    .await;
    assert!(attached.ok, "{}", attached.stderr);
    assert_eq!(attached.json()["kind"], "DocumentReference");
    let document_id = attached.json()["record_id"].as_str().unwrap().to_owned();
    let saved = carectl(
        &mesh,
        home.path(),
        "patient",
        &["--json", "records", "save", &document_id, "--out", &out],
        "",
    )
    .await;
    assert!(saved.ok, "{}", saved.stderr);
    let saved_letter = saved_dir.path().join("letter.pdf");
    assert_eq!(std::fs::read(&saved_letter).unwrap(), std::fs::read(&letter).unwrap());

    // The patient's list shows the DocumentReference beside the record.
    let list = carectl(&mesh, home.path(), "patient", &["--json", "records", "list"], "").await;
    assert!(list.ok, "{}", list.stderr);
    let kinds: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"DocumentReference".to_owned()), "{kinds:?}");
    mesh.shutdown().await;
}
