//! `caremesh up` as a newcomer runs it: a fresh directory, the embedded default, all five
//! services healthy, a clean stop on Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use caremesh_sdk::{Client, ConnectOptions, Health, ServiceName};

#[tokio::test]
async fn caremesh_up_runs_the_whole_mesh_on_the_embedded_default_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let ports = common::free_ports(10);
    let started = Instant::now();
    let common::Up {
        mut child,
        lines: lines_rx,
        banner,
    } = common::start_up(dir.path(), &dir.path().join("data"), &ports, |_| {});
    let ready_after = started.elapsed();
    assert!(banner.contains("embedded default"), "{banner}");
    assert!(banner.contains("grpcurl -cacert"), "{banner}");
    assert!(banner.contains("operator-admin.crt"), "{banner}");
    assert!(banner.contains("web app: https://localhost:"), "{banner}");
    assert!(ready_after < Duration::from_secs(20), "ready after {ready_after:?}");
    let data = dir.path().join("data");
    for file in ["pki/ca.crt", "pki/operator-admin.key", "kek.key", "auth.db", "audit.db"] {
        assert!(data.join(file).exists(), "{file} was not created");
    }

    let mut options = ConnectOptions::new(data.join("pki/ca.crt"), "127.0.0.1");
    for (index, service) in ServiceName::ALL.into_iter().enumerate() {
        options = options.with_endpoint(service, format!("127.0.0.1:{}", ports[index]));
    }
    let statuses = Client::connect(&options).unwrap().status().await;
    assert_eq!(statuses.len(), 5);
    for status in &statuses {
        assert_eq!(status.health, Health::Serving, "{status:?}");
    }

    common::interrupt(&child);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "caremesh up exited with {exit:?} after Ctrl-C");
    let rest: Vec<String> = lines_rx.try_iter().collect();
    assert!(rest.iter().any(|line| line == "stopped."), "{rest:?}");
}
