//! `carectl status` against the real services.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use caremesh_testkit::{Service, TestMesh};

/// Runs carectl without blocking the runtime the mesh is served on.
async fn carectl(mesh: &TestMesh, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_carectl"));
    command.arg("--ca").arg(mesh.pki().ca_cert());
    for service in Service::ALL {
        command
            .arg("--endpoint")
            .arg(format!("{service}={}", mesh.grpc_addr(service)));
    }
    command.args(args).output().await.unwrap()
}

#[tokio::test]
async fn status_reports_every_service_and_fails_when_one_is_down() {
    let mut mesh = TestMesh::start().await;
    let output = carectl(&mesh, &["--json", "status"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let statuses: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let statuses = statuses.as_array().unwrap();
    assert_eq!(statuses.len(), 5);
    for status in statuses {
        assert_eq!(status["health"]["state"], "serving", "{status}");
    }

    mesh.stop_service(Service::Records).await;
    let output = carectl(&mesh, &["status"]).await;
    assert!(
        !output.status.success(),
        "a service is down: carectl must say so in its exit code"
    );
    let table = String::from_utf8_lossy(&output.stdout);
    let records = table.lines().find(|line| line.starts_with("records-svc")).unwrap();
    assert!(records.contains("UNREACHABLE"), "{table}");
    let auth = table.lines().find(|line| line.starts_with("auth-svc")).unwrap();
    assert!(auth.contains("SERVING"), "{table}");
}

#[test]
fn an_unknown_service_in_endpoint_is_refused_with_the_valid_names() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_carectl"))
        .args(["--endpoint", "billing-svc=localhost:1", "status"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("audit-svc"), "{stderr}");
}
