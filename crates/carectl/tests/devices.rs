//! `carectl device` against the real services: a second profile of a patient is linked as a new
//! device (code shown, approved on the first device), reads the earlier conversation, shows up in
//! `device list` and in the doctor's notices, and is removed again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{carectl, spawn_carectl};

use caremesh_sdk::auth::Role;
use caremesh_sdk::profile::ProfileStore;
use caremesh_testkit::TestMesh;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

fn texts(run: &common::Run) -> Vec<String> {
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_second_profile_is_linked_reads_the_history_and_is_removed() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &[]).await;
    let store = ProfileStore::new(home.path());
    store.save("phone", &patient.session).unwrap();
    store.save("tablet", &patient.session).unwrap();
    store.save("doctor", &doctor.session).unwrap();

    // Someone who never signed in on a device cannot be written to yet.
    let run = carectl(
        &mesh,
        home.path(),
        "phone",
        &["msg", "send", &doctor.username, "too early"],
        "",
    )
    .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("has no device for end-to-end messages yet"),
        "{}",
        run.stderr
    );
    let run = carectl(&mesh, home.path(), "doctor", &["msg", "inbox"], "").await;
    assert!(run.ok, "{}", run.stderr);
    let run = carectl(
        &mesh,
        home.path(),
        "phone",
        &["msg", "send", &doctor.username, "before the tablet"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let run = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["msg", "send", &patient.username, "noted"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);

    // The phone reads the reply: its first reader archives it for the patient's other devices.
    let run = carectl(
        &mesh,
        home.path(),
        "phone",
        &["--json", "msg", "read", &doctor.username],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(texts(&run), vec!["before the tablet".to_owned(), "noted".to_owned()]);

    // A profile of a user who has a device already must be linked, not given a new identity.
    let run = carectl(&mesh, home.path(), "tablet", &["msg", "inbox"], "").await;
    assert!(!run.ok);
    assert!(run.stderr.contains("device link"), "{}", run.stderr);

    let mut link = spawn_carectl(&mesh, home.path(), "tablet", &["--json", "device", "link"]);
    let mut lines = BufReader::new(link.stdout.take().unwrap()).lines();
    let shown: serde_json::Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let code = shown["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 19, "XXXX-XXXX-XXXX-XXXX: {code}");
    assert!(shown["qr"].as_str().unwrap().starts_with("caremesh-link:"));

    // A wrong code approves nothing.
    let run = carectl(
        &mesh,
        home.path(),
        "phone",
        &["device", "approve", "0000-0000-0000-0000"],
        "",
    )
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("matches no pending device link"), "{}", run.stderr);
    let run = carectl(&mesh, home.path(), "phone", &["--json", "device", "approve", &code], "").await;
    assert!(run.ok, "{}", run.stderr);
    let tablet_id = run.json()["device_id"].as_str().unwrap().to_owned();

    let status = tokio::time::timeout(std::time::Duration::from_secs(30), link.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    link.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert!(status.success(), "{stderr}");
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
    }
    let linked: serde_json::Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(linked["device_id"], tablet_id.as_str());

    // The tablet reads what was said before it existed (archive copies).
    let run = carectl(
        &mesh,
        home.path(),
        "tablet",
        &["--json", "msg", "read", &doctor.username],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(texts(&run), vec!["before the tablet".to_owned(), "noted".to_owned()]);

    let run = carectl(&mesh, home.path(), "tablet", &["--json", "device", "list"], "").await;
    assert!(run.ok, "{}", run.stderr);
    let devices = run.json();
    assert_eq!(devices.as_array().unwrap().len(), 2);
    let this: Vec<&serde_json::Value> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["this_device"] == true)
        .collect();
    assert_eq!(this.len(), 1);
    assert_eq!(this[0]["device_id"], tablet_id.as_str());

    // The doctor is told that the patient added a device, and both patient devices get the reply.
    let run = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["msg", "send", &patient.username, "to both"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("added a device ({tablet_id})")),
        "{}",
        run.stderr
    );
    for profile in ["phone", "tablet"] {
        let run = carectl(
            &mesh,
            home.path(),
            profile,
            &["--json", "msg", "read", &doctor.username],
            "",
        )
        .await;
        assert!(run.ok, "{profile}: {}", run.stderr);
        assert_eq!(texts(&run).last().unwrap(), "to both", "{profile}");
    }

    // The phone removes the tablet, which then refuses to run and gets nothing new.
    let run = carectl(&mesh, home.path(), "phone", &["device", "remove", &tablet_id], "").await;
    assert!(run.ok, "{}", run.stderr);
    let run = carectl(&mesh, home.path(), "tablet", &["msg", "inbox"], "").await;
    assert!(!run.ok);
    assert!(run.stderr.contains("removed"), "{}", run.stderr);
    let run = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["msg", "send", &patient.username, "after removal"],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("removed a device ({tablet_id})")),
        "{}",
        run.stderr
    );
    let run = carectl(
        &mesh,
        home.path(),
        "phone",
        &["--json", "msg", "read", &doctor.username],
        "",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(texts(&run).last().unwrap(), "after removal");
    mesh.shutdown().await;
}
