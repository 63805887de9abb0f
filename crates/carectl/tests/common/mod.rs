//! Running the real `carectl` binary against a test mesh, shared by the CLI tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Stdio;

use caremesh_testkit::{Service, TestMesh};
use tokio::io::AsyncWriteExt;

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|_| panic!("not JSON: {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs carectl with `args`, feeding `stdin`, without blocking the runtime the mesh runs on.
pub async fn carectl(mesh: &TestMesh, home: &Path, profile: &str, args: &[&str], stdin: &str) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_carectl"));
    command
        .arg("--ca")
        .arg(mesh.pki().ca_cert())
        .arg("--home")
        .arg(home)
        .args(["--profile", profile]);
    for service in Service::ALL {
        command
            .arg("--endpoint")
            .arg(format!("{service}={}", mesh.grpc_addr(service)));
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts carectl with `args` and leaves it running (for commands that wait, like `device link`).
pub fn spawn_carectl(mesh: &TestMesh, home: &Path, profile: &str, args: &[&str]) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_carectl"));
    command
        .arg("--ca")
        .arg(mesh.pki().ca_cert())
        .arg("--home")
        .arg(home)
        .args(["--profile", profile]);
    for service in Service::ALL {
        command
            .arg("--endpoint")
            .arg(format!("{service}={}", mesh.grpc_addr(service)));
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}
