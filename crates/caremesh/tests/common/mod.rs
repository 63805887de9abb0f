//! What the binary's tests share: free ports, and a real `caremesh up` started on them in a
//! fresh data directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use caremesh_sdk::ServiceName;

/// Free ports, found by binding port 0 (the listeners are dropped before the mesh binds them).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

/// Points `command` (`caremesh up`, or a client of it) at `ports`: the five gRPC ports, then the
/// five ops ports, in `ServiceName::ALL` order; the embedded default (no database URL).
pub fn mesh_env(command: &mut Command, ports: &[u16]) {
    command
        .env_remove("CAREMESH_DATABASE_URL")
        .env_remove("CAREMESH_DATA_DIR");
    for (index, service) in ServiceName::ALL.into_iter().enumerate() {
        let prefix = service.env_prefix();
        let grpc = format!("127.0.0.1:{}", ports[index]);
        command
            .env(format!("CAREMESH_{prefix}_LISTEN"), &grpc)
            .env(
                format!("CAREMESH_{prefix}_OPS_LISTEN"),
                format!("127.0.0.1:{}", ports[index + 5]),
            )
            .env(format!("CAREMESH_{prefix}_ENDPOINT"), &grpc);
    }
    // The web origin on a port of its own choosing (it prints it), never the default 8443.
    command.env("CAREMESH_WEB_LISTEN", "127.0.0.1:0");
}

/// A running `caremesh up`.
pub struct Up {
    pub child: Child,
    /// Its stdout, line by line, read to the end (so it can still print while it stops).
    pub lines: Receiver<String>,
    /// What it printed up to its "Ctrl-C stops the mesh" line.
    pub banner: String,
}

/// Starts `caremesh up --data-dir <data>` in `dir` on `ports` (with `configure`'s extra
/// settings) and waits up to 60 s for its banner.
pub fn start_up(dir: &Path, data: &Path, ports: &[u16], configure: impl FnOnce(&mut Command)) -> Up {
    let mut command = Command::new(env!("CARGO_BIN_EXE_caremesh"));
    command
        .args(["up", "--data-dir"])
        .arg(data)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    mesh_env(&mut command, ports);
    configure(&mut command);
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    // Drains stdout to the end even when nobody reads `lines` any more: a closed pipe would
    // make the mesh's last prints fail.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut banner = String::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops the mesh") {
            return Up { child, lines, banner };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("caremesh up did not come up:\n{banner}");
}

/// Sends Ctrl-C (SIGINT) to `child`.
pub fn interrupt(child: &Child) {
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
}
