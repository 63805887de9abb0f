//! `carectl records`, `carectl emergency` and `carectl msg send --policy` against the real
//! services: a cardiologist writes, edits and marks a record, the patient reads it, an emergency
//! doctor breaks the glass, and a group message reaches the cardiology team.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::carectl;

use caremesh_sdk::auth::Role;
use caremesh_sdk::profile::ProfileStore;
use caremesh_testkit::TestMesh;

const HEART_RATE: &str =
    r#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},"valueQuantity":{"value":72}}"#;

#[tokio::test]
async fn records_emergency_access_and_group_messages_with_carectl() {
    let mesh = TestMesh::start().await;
    let home = tempfile::tempdir().unwrap();
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let colleague = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let er = mesh.staff(Role::Doctor, &["dept:emergency"]).await;
    let store = ProfileStore::new(home.path());
    for (profile, user) in [
        ("patient", &patient),
        ("doctor", &doctor),
        ("colleague", &colleague),
        ("er", &er),
    ] {
        store.save(profile, &user.session).unwrap();
    }
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
            "Observation",
            "--policy",
            r#""role:doctor" and "dept:cardiology""#,
            HEART_RATE,
        ],
        "",
    )
    .await;
    assert!(put.ok, "{}", put.stderr);
    let record_id = put.json()["record_id"].as_str().unwrap().to_owned();

    // Content that does not match the kind is refused on the client with a useful message.
    let wrong = carectl(
        &mesh,
        home.path(),
        "doctor",
        &[
            "records",
            "put",
            "--patient",
            &patient.username,
            "--kind",
            "Condition",
            HEART_RATE,
        ],
        "",
    )
    .await;
    assert!(!wrong.ok);
    assert!(wrong.stderr.contains("--kind Observation"), "{}", wrong.stderr);

    let get = carectl(
        &mesh,
        home.path(),
        "patient",
        &["--json", "records", "get", &record_id],
        "",
    )
    .await;
    assert!(get.ok, "{}", get.stderr);
    assert_eq!(get.json()["content"]["valueQuantity"]["value"], 72);

    let list = carectl(&mesh, home.path(), "patient", &["--json", "records", "list"], "").await;
    assert!(list.ok, "{}", list.stderr);
    assert_eq!(list.json().as_array().unwrap().len(), 1);

    let amended = r#"{"resourceType":"Observation","status":"amended","valueQuantity":{"value":75}}"#;
    let edit = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "records", "edit", &record_id],
        amended,
    )
    .await;
    assert!(edit.ok, "{}", edit.stderr);
    assert_eq!(edit.json()["version"], 2);
    let stale = carectl(
        &mesh,
        home.path(),
        "doctor",
        &[
            "records",
            "edit",
            &record_id,
            "--etag",
            put.json()["etag"].as_str().unwrap(),
            amended,
        ],
        "",
    )
    .await;
    assert!(!stale.ok);
    assert!(stale.stderr.contains("Aborted"), "{}", stale.stderr);

    let history = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "records", "history", &record_id],
        "",
    )
    .await;
    assert!(history.ok, "{}", history.stderr);
    let versions: Vec<i64> = history
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, &[2, 1]);

    let mark = carectl(
        &mesh,
        home.path(),
        "doctor",
        &[
            "--json",
            "records",
            "entered-in-error",
            &record_id,
            "--version",
            "1",
            "--reason",
            "DUPLICATE",
        ],
        "",
    )
    .await;
    assert!(mark.ok, "{}", mark.stderr);
    assert_eq!(mark.json()["entered_in_error"], "DUPLICATE");

    // The emergency doctor is refused, breaks the glass, then reads.
    let refused = carectl(&mesh, home.path(), "er", &["records", "get", &record_id], "").await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("PermissionDenied"), "{}", refused.stderr);
    let glass = carectl(
        &mesh,
        home.path(),
        "er",
        &[
            "--json",
            "emergency",
            &patient.username,
            "--reason",
            "unresponsive on arrival",
        ],
        "",
    )
    .await;
    assert!(glass.ok, "{}", glass.stderr);
    assert!(glass.json()["grant_id"].is_string());
    let read = carectl(&mesh, home.path(), "er", &["--json", "records", "get", &record_id], "").await;
    assert!(read.ok, "{}", read.stderr);
    assert_eq!(read.json()["content"]["status"], "amended");

    // A group message to the cardiology team.
    let policy = r#""role:doctor" and "dept:cardiology""#;
    let inbox = carectl(&mesh, home.path(), "colleague", &["--json", "msg", "inbox"], "").await; // publishes keys
    assert!(inbox.ok, "{}", inbox.stderr);
    let sent = carectl(
        &mesh,
        home.path(),
        "doctor",
        &["--json", "msg", "send", "--policy", policy, "handover at 7pm"],
        "",
    )
    .await;
    assert!(sent.ok, "{}", sent.stderr);
    let inbox = carectl(&mesh, home.path(), "colleague", &["--json", "msg", "inbox"], "").await;
    assert!(inbox.ok, "{}", inbox.stderr);
    let texts: Vec<String> = inbox
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, &["handover at 7pm".to_owned()]);
    let er_inbox = carectl(&mesh, home.path(), "er", &["--json", "msg", "inbox"], "").await;
    assert!(er_inbox.ok, "{}", er_inbox.stderr);
    assert_eq!(er_inbox.json(), serde_json::json!([]));
    mesh.shutdown().await;
}
