//! `carectl` account and admin commands, as a person (or a script) runs them, against the real
//! services: register, log in, enroll MFA, log in with a code, who am I, admin approval, logout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::carectl;

fn base32(secret: &str) -> Vec<u8> {
    data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).unwrap()
}

use caremesh_runtime::clock::Clock;
use caremesh_testkit::{TestMesh, totp_code};

#[tokio::test]
async fn a_patient_registers_enrolls_mfa_and_signs_in_with_carectl() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let password = "vellum orbit cactus lantern\n";
    let run = carectl(
        &mesh,
        home.path(),
        "alice",
        &["register", "alice.w", "--password-stdin"],
        password,
    )
    .await;
    assert!(run.ok, "{}", run.stderr);

    let run = carectl(
        &mesh,
        home.path(),
        "alice",
        &["--json", "login", "alice.w", "--password-stdin"],
        password,
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()["aal"], 1);
    let session_file = home.path().join("alice.session.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&session_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(home.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    let run = carectl(&mesh, home.path(), "alice", &["--json", "mfa", "enroll"], "").await;
    assert!(run.ok, "{}", run.stderr);
    let secret = base32(run.json()["secret"].as_str().unwrap());
    let code = totp_code(&secret, mesh.clock().now());
    let run = carectl(&mesh, home.path(), "alice", &["--json", "mfa", "confirm", &code], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()["recovery_codes"].as_array().unwrap().len(), 10);
    assert_eq!(run.json()["aal"], 2);

    let run = carectl(&mesh, home.path(), "alice", &["--json", "whoami"], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()["username"], "alice.w");
    assert_eq!(run.json()["aal"], "ASSURANCE_LEVEL_AAL2");

    // A later login in a script: password on stdin, code as a flag.
    mesh.advance(30);
    let code = totp_code(&secret, mesh.clock().now());
    let run = carectl(
        &mesh,
        home.path(),
        "alice",
        &["--json", "login", "alice.w", "--password-stdin", "--totp", &code],
        password,
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()["aal"], 2);

    let run = carectl(&mesh, home.path(), "alice", &["logout"], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert!(!session_file.exists());
    let run = carectl(&mesh, home.path(), "alice", &["whoami"], "").await;
    assert!(!run.ok);
    assert!(run.stderr.contains("not signed in"), "{}", run.stderr);
}

#[tokio::test]
async fn an_admin_approves_a_doctor_with_carectl_and_wrong_input_is_explained() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let admin = mesh.admin().await.clone();
    mesh.advance(30);
    let code = totp_code(&admin.totp_secret, mesh.clock().now());
    let run = carectl(
        &mesh,
        home.path(),
        "admin",
        &["login", "admin", "--password-stdin", "--totp", &code],
        &format!("{}\n", admin.password),
    )
    .await;
    assert!(run.ok, "{}", run.stderr);

    let run = carectl(
        &mesh,
        home.path(),
        "doc",
        &["register", "dr.grey", "--role", "doctor", "--password-stdin"],
        "vellum orbit cactus lantern\n",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.contains("approval"), "{}", run.stdout);

    let run = carectl(&mesh, home.path(), "admin", &["--json", "admin", "pending"], "").await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|user| user["username"] == "dr.grey")
    );

    let run = carectl(
        &mesh,
        home.path(),
        "admin",
        &["admin", "approve", "dr.grey", "--attr", "department:x"],
        "",
    )
    .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("INVALID_ATTRIBUTE") && run.stderr.contains("unknown namespace"),
        "{}",
        run.stderr
    );

    let run = carectl(
        &mesh,
        home.path(),
        "admin",
        &["--json", "admin", "approve", "dr.grey", "--attr", "dept:cardiology"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.json()["status"], "USER_STATUS_ACTIVE");
    assert_eq!(run.json()["attributes"][0], "dept:cardiology");

    // A patient's session cannot do admin work, and carectl says why.
    let run = carectl(&mesh, home.path(), "doc", &["admin", "pending"], "").await;
    assert!(!run.ok);
    assert!(run.stderr.contains("not signed in"), "{}", run.stderr);

    let run = carectl(
        &mesh,
        home.path(),
        "x",
        &["register", "bad name!", "--password-stdin"],
        "vellum orbit cactus lantern\n",
    )
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("INVALID_USERNAME"), "{}", run.stderr);
}
