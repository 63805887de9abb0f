//! Mesh load benchmark (issue #8), in-process mode. Starts the five real services in this process
//! (the test kit: real mTLS, a temporary PKI, a fresh database) and drives them with the load
//! generator (`caremesh-loadgen`, which `caremesh bench` also uses against a mesh started by
//! `caremesh up`) through the SDK with many simulated patients and doctors and one auditor, in a
//! configurable mix, for a fixed time:
//! - `login`: password step and TOTP step (a full AAL2 login, two Argon2id-backed RPCs);
//! - `message`: a 1 KB end-to-end encrypted 1:1 message, patient to doctor or doctor to patient
//!   (bundle fetch, X3DH seal twice, SendMessage);
//! - `record_write`: a doctor writes a FHIR Observation for a patient under
//!   `"role:doctor" and "dept:cardiology"` (CP-ABE seal, signature, CreateRecord);
//! - `record_read`: the patient or a doctor reads a record (GetRecord, signature and hash checks,
//!   CP-ABE decrypt);
//! - `audit_query`: the auditor queries the newest 50 events about a patient.
//!
//! Printed and written as JSON (`BENCH_JSON`, default `target/bench-mesh.json`): per operation
//! count, ops/s, p50/p99/p999 latency and errors by gRPC code; a bare tonic unary echo measured in
//! the same run with the same TLS configuration and the same number of concurrent tasks (the
//! baseline, as in the messaging bench); and the process's peak resident memory during the load.
//! The services and the load generator share this process, so the peak includes both.
//!
//! Logins and the manual clock: the test kit's services read a clock that moves only when told,
//! and auth-svc accepts each TOTP time step at most once per user. Every user of the bench is in
//! a login rotation (`caremesh_loadgen::login`): within one 30 s step each user logs in at most
//! once; when every user has had its turn the clock moves on 30 s. That ages access tokens, so a
//! background task refreshes every session that expires within 5 minutes of the mesh clock.
//!
//! Run: `cargo bench -p caremesh-testkit --bench mesh` (SQLite, and PostgreSQL as well when
//! `CAREMESH_TEST_DATABASE_URL` is set). Settings (environment): `BENCH_PATIENTS` (24),
//! `BENCH_DOCTORS` (8), `BENCH_WORKERS` (32), `BENCH_SECONDS` (20), `BENCH_WARMUP_SECONDS` (3),
//! `BENCH_ECHO_SECONDS` (5), `BENCH_MIX` (`login=1,message=5,record_write=2,record_read=4,audit_query=1`),
//! `BENCH_BACKENDS` (`sqlite`, `postgres` or both, default: every backend available),
//! `BENCH_JSON` (output path).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use caremesh_loadgen::memory::{Pid, status_kib};
use caremesh_loadgen::{MemoryProbe, Mix, Process, Settings, Target};
use caremesh_testkit::echo::EchoServer;
use caremesh_testkit::{Backend, Service, TestMesh, backends};
use serde_json::json;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

fn settings() -> Settings {
    let defaults = Settings::default();
    let mix = match std::env::var("BENCH_MIX") {
        Ok(text) => Mix::parse(&text).unwrap_or_else(|error| panic!("BENCH_MIX: {error}")),
        Err(_) => defaults.mix,
    };
    Settings {
        patients: env_number("BENCH_PATIENTS", defaults.patients).max(1),
        doctors: env_number("BENCH_DOCTORS", defaults.doctors).max(1),
        workers: env_number("BENCH_WORKERS", defaults.workers).max(1),
        seconds: env_number("BENCH_SECONDS", 20).max(1) as u64,
        warmup_seconds: env_number("BENCH_WARMUP_SECONDS", 3) as u64,
        echo_seconds: env_number("BENCH_ECHO_SECONDS", 5).max(1) as u64,
        mix,
        progress: true,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    runtime.block_on(async {
        // `BENCH_BACKENDS=postgres` (or `sqlite`) runs one backend: each backend's memory figure is
        // then clean of the other's (the allocator keeps what an earlier mesh used).
        let only = std::env::var("BENCH_BACKENDS").unwrap_or_default();
        let selected = backends()
            .into_iter()
            .filter(|backend| only.is_empty() || only.split(',').any(|name| name.trim() == backend.name()));
        for backend in selected {
            results.push(run(&backend).await);
            let report = json!({
                "benchmark": "mesh",
                "mode": "in-process (test kit, manual clock)",
                "machine": caremesh_loadgen::report::machine(),
                "backends": results,
            });
            let path = std::env::var("BENCH_JSON").map_or_else(
                |_| {
                    caremesh_loadgen::target_dir_file(
                        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")),
                        "bench-mesh.json",
                    )
                },
                std::path::PathBuf::from,
            );
            caremesh_loadgen::write_json(&path, &report).unwrap();
            eprintln!("wrote {}", path.display());
        }
    });
}

async fn run(backend: &Backend) -> serde_json::Value {
    let settings = settings();
    let label = backend.name();
    let rss_before = status_kib(&Pid::This, "VmRSS");
    eprintln!("[{label}] starting the mesh");
    let mesh = TestMesh::builder().backend(backend.clone()).start().await;
    let mut connect = caremesh_sdk::ConnectOptions::new(mesh.pki().ca_cert(), "127.0.0.1");
    for service in Service::ALL {
        connect = connect.with_endpoint(service, mesh.grpc_addr(service).to_string());
    }
    let target = Target {
        label: label.to_owned(),
        connect,
        admin: mesh.admin().await.session.clone(),
        clock: Arc::new(mesh.clock().clone()),
        memory: MemoryProbe {
            scope: "one process: the five services and the load generator".to_owned(),
            processes: vec![Process {
                name: "bench".to_owned(),
                pid: Pid::This,
                rss_before_kib: rss_before,
            }],
        },
        echo: EchoServer::tls(&mesh),
        prefix: caremesh_loadgen::users::run_prefix(),
    };
    let report = caremesh_loadgen::run(&target, &settings).await.unwrap();
    println!();
    print!("{}", report.table());
    let mut result = report.json();
    result["backend"] = json!(label);
    drop(target);
    mesh.shutdown().await;
    result
}
