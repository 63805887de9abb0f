//! `carectl passkey` against the real services: passkeys registered with the test kit's software
//! authenticator (registration needs a browser, which carectl is not) are listed, renamed and
//! removed from the command line, and the help says where to add one; an admin requires them for
//! a role.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use caremesh_sdk::profile::ProfileStore;
use caremesh_testkit::{SoftAuthenticator, TestMesh};
use common::carectl;

#[tokio::test]
async fn passkeys_are_listed_renamed_and_removed_with_carectl() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let patient = mesh.patient().await;
    ProfileStore::new(home.path()).save("pat", &patient.session).unwrap();
    let client = mesh.sdk();
    let mut ids = Vec::new();
    for name in ["laptop", "phone"] {
        let ceremony = client.start_passkey_registration(&patient.session).await.unwrap();
        let credential = SoftAuthenticator::new().create(&ceremony.options_json).unwrap();
        let registered = client
            .finish_passkey_registration(&patient.session, &ceremony, credential, name)
            .await
            .unwrap();
        ids.push(registered.passkey.passkey_id);
    }

    let run = carectl(&mesh, home.path(), "pat", &["--json", "passkey", "list"], "").await;
    assert!(run.ok, "{}", run.stderr);
    let listed = run.json();
    assert_eq!(listed["passkey_required"], false);
    let names: Vec<&str> = listed["passkeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|passkey| passkey["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["laptop", "phone"]);
    assert_eq!(listed["passkeys"][1]["passkey_id"], ids[1].as_str());
    assert!(listed["passkeys"][0]["last_use_time"].is_null(), "never used");

    let run = carectl(
        &mesh,
        home.path(),
        "pat",
        &["passkey", "rename", &ids[1], "old phone"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.contains("old phone"), "{}", run.stdout);
    let run = carectl(&mesh, home.path(), "pat", &["passkey", "rename", &ids[1], ""], "").await;
    assert!(!run.ok);
    assert!(run.stderr.contains("INVALID_PASSKEY_NAME"), "{}", run.stderr);

    let run = carectl(&mesh, home.path(), "pat", &["--json", "passkey", "remove", &ids[1]], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()["removed"], true);
    let run = carectl(&mesh, home.path(), "pat", &["passkey", "list"], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("laptop") && !run.stdout.contains("old phone"),
        "{}",
        run.stdout
    );
    let run = carectl(&mesh, home.path(), "pat", &["passkey", "remove", &ids[1]], "").await;
    assert!(!run.ok, "removed twice");
    assert!(run.stderr.contains("PASSKEY_NOT_FOUND"), "{}", run.stderr);

    let run = carectl(&mesh, home.path(), "pat", &["passkey", "--help"], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("browser"),
        "registration needs a browser: {}",
        run.stdout
    );
}

#[tokio::test]
async fn an_admin_requires_passkeys_for_a_role_with_carectl() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let admin = mesh.admin().await;
    ProfileStore::new(home.path()).save("admin", &admin.session).unwrap();

    let run = carectl(&mesh, home.path(), "admin", &["--json", "admin", "policies"], "").await;
    assert!(run.ok, "{}", run.stderr);
    let before = run.json();
    assert_eq!(before.as_array().unwrap().len(), 5, "one policy per role: {before}");
    assert!(
        before
            .as_array()
            .unwrap()
            .iter()
            .all(|policy| policy["passkey_required"] == false)
    );

    let run = carectl(
        &mesh,
        home.path(),
        "admin",
        &["admin", "policy", "doctor", "--passkeys", "required"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("doctor") && run.stdout.contains("required"),
        "{}",
        run.stdout
    );
    let run = carectl(&mesh, home.path(), "admin", &["admin", "policies"], "").await;
    assert!(run.ok, "{}", run.stderr);
    let doctor = run.stdout.lines().find(|line| line.starts_with("doctor")).unwrap();
    assert!(doctor.ends_with("passkeys required"), "{}", run.stdout);
    let nurse = run.stdout.lines().find(|line| line.starts_with("nurse")).unwrap();
    assert!(nurse.ends_with("passkeys optional"), "{}", run.stdout);

    let run = carectl(
        &mesh,
        home.path(),
        "admin",
        &["admin", "policy", "surgeon", "--passkeys", "required"],
        "",
    )
    .await;
    assert!(!run.ok, "an unknown role is refused");
    assert!(run.stderr.contains("unknown role"), "{}", run.stderr);
}
