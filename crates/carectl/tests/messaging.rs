//! `carectl msg` and `carectl contacts` against the real services: a patient and a doctor
//! exchange end-to-end encrypted messages, read the conversation, check safety numbers, recall.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::carectl;

use caremesh_sdk::auth::Role;
use caremesh_sdk::profile::ProfileStore;
use caremesh_testkit::TestMesh;

#[tokio::test]
async fn a_patient_and_a_doctor_message_each_other_with_carectl() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let store = ProfileStore::new(home.path());
    store.save("patient", &patient.session).unwrap();
    store.save("doctor", &doctor.session).unwrap();

    // The doctor's device publishes its keys on first use.
    let run = carectl(&mesh, home.path(), "doctor", &["--json", "msg", "inbox"], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json(), serde_json::json!([]));

    let run = carectl(
        &mesh,
        home.path(),
        "patient",
        &["--json", "msg", "send", &doctor.username, "my ankle is swollen"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let first = run.json()["message_id"].as_str().unwrap().to_owned();
    let run = carectl(
        &mesh,
        home.path(),
        "patient",
        &["msg", "send", &doctor.username],
        "from stdin\n",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);

    let run = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "msg", "read", &patient.username],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let texts: Vec<String> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, vec!["my ankle is swollen".to_owned(), "from stdin\n".to_owned()]);
    // People read names, not ids.
    let run = carectl(&mesh, home.path(), "doctor", &["msg", "read", &patient.username], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("from {}: my ankle is swollen", patient.username)),
        "{}",
        run.stdout
    );

    let a = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "contacts", "verify", &patient.username],
        "",
    )
    .await;
    let b = carectl(
        &mesh,
        home.path(),
        "patient",
        &["--json", "contacts", "verify", &doctor.username],
        "",
    )
    .await;
    assert!(a.ok && b.ok, "{}{}", a.stderr, b.stderr);
    assert_eq!(a.json()["safety_number"], b.json()["safety_number"]);

    let run = carectl(&mesh, home.path(), "patient", &["--json", "msg", "recall", &first], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()["state"], "MESSAGE_STATE_RECALLED");
    let run = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "msg", "read", &patient.username],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()[0]["text"], "(recalled)");

    // A patient cannot write to a patient.
    let other = mesh.patient().await;
    store.save("other", &other.session).unwrap();
    let run = carectl(&mesh, home.path(), "other", &["msg", "inbox"], "").await;
    assert!(run.ok, "{}", run.stderr);
    let run = carectl(
        &mesh,
        home.path(),
        "patient",
        &["msg", "send", &other.user_id, "hi"],
        "",
    )
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("PermissionDenied"), "{}", run.stderr);
    mesh.shutdown().await;
}
