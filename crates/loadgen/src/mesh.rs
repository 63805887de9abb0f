//! A mesh started by `caremesh up` (or by the service binaries), as `caremesh bench` drives it:
//! - the SDK connects with the dev PKI's CA under the data directory (no client certificate, as
//!   users connect);
//! - the admin is the bootstrap admin from `<data dir>/bootstrap-admin.txt`;
//! - TOTP codes follow real time;
//! - memory is read from the process whose id `caremesh up` writes to `<data dir>/caremesh.pid`,
//!   or from the processes named with `--service-pid name=PID`;
//! - the echo baseline runs in the load generator's process with messaging-svc's certificate
//!   from the same PKI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use caremesh_runtime::ServiceName;
use caremesh_runtime::config::tls_files;
use caremesh_sdk::{Client, ConnectOptions};

use crate::echo::EchoTls;
use crate::login::SystemTotpClock;
use crate::memory::{MemoryProbe, Pid, Process};
use crate::users::{BootstrapAdmin, run_prefix};
use crate::{LoadError, Target, context};

/// The file in the data directory where `caremesh up` keeps its process id while it runs.
pub const PID_FILE: &str = "caremesh.pid";

/// `<data dir>/caremesh.pid`.
pub fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.join(PID_FILE)
}

/// Parses `name=PID` (as `--service-pid` takes it).
pub fn parse_service_pid(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=PID"))?;
    let pid = pid.trim().parse().map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok((name.trim().to_owned(), pid))
}

/// Where a running mesh is and how to measure it.
#[derive(Clone, Debug)]
pub struct RunningMesh {
    /// The data directory `caremesh up` runs with.
    pub data_dir: PathBuf,
    /// The dev PKI (`<data dir>/pki` unless `CAREMESH_TLS_DIR` says otherwise).
    pub pki_dir: PathBuf,
    /// Every service's endpoint.
    pub connect: ConnectOptions,
    /// The bootstrap admin's credentials file.
    pub admin_file: PathBuf,
    /// Processes to measure; empty: the one in `<data dir>/caremesh.pid`.
    pub service_pids: Vec<(String, u32)>,
}

impl RunningMesh {
    /// The embedded default under `data_dir`: every service on 127.0.0.1 at its standard port.
    pub fn embedded(data_dir: &Path) -> Self {
        let pki_dir = data_dir.join("pki");
        Self {
            connect: ConnectOptions::new(pki_dir.join("ca.crt"), "127.0.0.1"),
            pki_dir,
            admin_file: BootstrapAdmin::file(data_dir),
            data_dir: data_dir.to_owned(),
            service_pids: Vec::new(),
        }
    }

    /// How the services' memory is read: the named processes, else the process in the pid file.
    pub fn memory_probe(&self) -> MemoryProbe {
        if !self.service_pids.is_empty() {
            return MemoryProbe {
                scope: "the services' processes; the load generator and the echo run in another".to_owned(),
                processes: self
                    .service_pids
                    .iter()
                    .map(|(name, pid)| Process {
                        name: name.clone(),
                        pid: Pid::Of(*pid),
                        rss_before_kib: None,
                    })
                    .collect(),
            };
        }
        let file = pid_file(&self.data_dir);
        match std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            Some(pid) => MemoryProbe {
                scope: "the five services in one process; the load generator and the echo run in another".to_owned(),
                processes: vec![Process {
                    name: "caremesh up".to_owned(),
                    pid: Pid::Of(pid),
                    rss_before_kib: None,
                }],
            },
            None => MemoryProbe::none(&format!(
                "no process id in {} (is `caremesh up` running with this data directory?) and no --service-pid",
                file.display()
            )),
        }
    }
}

/// The [`Target`] for a running mesh: reads the bootstrap admin's file and logs in as the admin.
pub async fn running_mesh(mesh: &RunningMesh) -> Result<Target, LoadError> {
    let text = std::fs::read_to_string(&mesh.admin_file).map_err(|error| {
        LoadError::Setup(format!(
            "cannot read the bootstrap admin's credentials from {} ({error}): `caremesh up` writes them \
             there on its first start; point --admin-file at your copy",
            mesh.admin_file.display()
        ))
    })?;
    let admin = BootstrapAdmin::parse(&text).map_err(LoadError::Setup)?;
    let client = Client::connect(&mesh.connect).map_err(context("connecting"))?;
    let clock = Arc::new(SystemTotpClock);
    let session = admin
        .login(&client, clock.as_ref())
        .await
        .map_err(context("logging in as the bootstrap admin"))?;
    Ok(Target {
        label: "caremesh up".to_owned(),
        connect: mesh.connect.clone(),
        admin: session,
        clock,
        memory: mesh.memory_probe(),
        echo: EchoTls {
            server: tls_files(&mesh.pki_dir, ServiceName::Messaging),
            ca: mesh.pki_dir.join("ca.crt"),
            identity: ServiceName::Messaging,
        },
        prefix: run_prefix(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_pids_parse() {
        assert_eq!(parse_service_pid("auth-svc=42").unwrap(), ("auth-svc".to_owned(), 42));
        assert!(parse_service_pid("auth-svc").is_err());
        assert!(parse_service_pid("auth-svc=x").is_err());
    }

    #[test]
    fn without_a_pid_file_memory_is_not_measured_and_the_reason_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let probe = RunningMesh::embedded(dir.path()).memory_probe();
        assert!(probe.processes.is_empty());
        assert!(probe.scope.contains("caremesh.pid"));
        std::fs::write(pid_file(dir.path()), "1234\n").unwrap();
        let probe = RunningMesh::embedded(dir.path()).memory_probe();
        assert_eq!(probe.processes[0].pid, Pid::Of(1234));
    }
}
