//! `caremesh up` as a newcomer runs it: a fresh directory, the embedded default, all five
//! services healthy, a clean stop on Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caremesh_sdk::{Client, ConnectOptions, Health, ServiceName};

/// Free ports, found by binding port 0 (the listeners are dropped before the mesh binds them).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

#[tokio::test]
async fn caremesh_up_runs_the_whole_mesh_on_the_embedded_default_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(10);
    let mut command = Command::new(env!("CARGO_BIN_EXE_caremesh"));
    command
        .args(["up", "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env_remove("CAREMESH_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (index, service) in ServiceName::ALL.into_iter().enumerate() {
        let prefix = service.env_prefix();
        command
            .env(
                format!("CAREMESH_{prefix}_LISTEN"),
                format!("127.0.0.1:{}", ports[index]),
            )
            .env(
                format!("CAREMESH_{prefix}_OPS_LISTEN"),
                format!("127.0.0.1:{}", ports[index + 5]),
            )
            .env(
                format!("CAREMESH_{prefix}_ENDPOINT"),
                format!("127.0.0.1:{}", ports[index]),
            );
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    // Keep reading stdout to the end, so the mesh can still print while it stops.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(60)) {
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops the mesh") {
            break;
        }
    }
    let ready_after = started.elapsed();
    assert!(banner.contains("embedded default"), "{banner}");
    assert!(banner.contains("grpcurl -cacert"), "{banner}");
    assert!(banner.contains("operator-admin.crt"), "{banner}");
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

    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "caremesh up exited with {exit:?} after Ctrl-C");
    let rest: Vec<String> = lines_rx.try_iter().collect();
    assert!(rest.iter().any(|line| line == "stopped."), "{rest:?}");
}
