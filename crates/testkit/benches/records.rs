//! Record read latency end to end (issue #5): a cardiologist reads a record through the SDK —
//! GetRecord over TLS 1.3 (token check, policy check against the token's attributes, the audit
//! event written in the read's transaction), then on the device the author's signature, the
//! version hash, the CP-ABE decapsulation (one multi-pairing) and AES-256-GCM. Printed next to
//! its parts and, as the baseline, the records-svc process's own gRPC health check over the same
//! TLS channel, measured in the same run. Reads are sequential (one reader): this is latency,
//! not throughput (the mesh load benchmark measures throughput).
//!
//! Run: `cargo bench -p caremesh-testkit --bench records` (env `BENCH_READS`, default 300).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::future::Future;
use std::time::{Duration, Instant};

use caremesh_proto::records::v1 as pb;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use caremesh_sdk::auth::Role;
use caremesh_sdk::messaging::Messenger;
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::{Backend, Caller, Service, TestMesh, backends};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CONTENT: &[u8] = br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},"valueQuantity":{"value":72,"unit":"/min"}}"#;

struct Figures {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

async fn measure<F, Fut>(reads: usize, mut operation: F) -> Figures
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..reads / 10 {
        operation().await;
    }
    let mut latencies = Vec::with_capacity(reads);
    for _ in 0..reads {
        let started = Instant::now();
        operation().await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Figures {
        p50: at(0.5),
        p99: at(0.99),
        mean: latencies.iter().sum::<Duration>() / latencies.len() as u32,
    }
}

async fn run(backend: Backend, reads: usize) {
    let mesh = TestMesh::builder().backend(backend.clone()).start().await;
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let dir = tempfile::tempdir().unwrap();
    let device = Messenger::open(mesh.sdk(), dir.path(), "default", &doctor.session)
        .await
        .unwrap();
    let session = doctor.session.clone();
    let record = device
        .create_record(
            &session,
            NewRecord {
                patient_id: &patient.user_id,
                kind: "Observation",
                policy: r#""role:doctor" and "dept:cardiology""#,
                content: CONTENT,
            },
        )
        .await
        .unwrap();
    let full = device.read_record(&session, &record.record_id, 0).await.unwrap().record;

    let channel = mesh.channel(Service::Records, Caller::Anonymous);
    let health = HealthClient::new(channel.clone());
    let echo = measure(reads, || {
        let mut health = health.clone();
        async move {
            health.check(HealthCheckRequest::default()).await.unwrap();
        }
    })
    .await;
    let records = RecordsServiceClient::new(channel);
    let rpc = measure(reads, || {
        let mut records = records.clone();
        let request = session
            .request(pb::GetRecordRequest {
                record_id: record.record_id.clone(),
                ..pb::GetRecordRequest::default()
            })
            .unwrap();
        async move {
            records.get_record(request).await.unwrap();
        }
    })
    .await;
    let local = measure(reads, || async {
        device.open_record(&session, &full).await.unwrap();
    })
    .await;
    let end_to_end = measure(reads, || async {
        device.read_record(&session, &record.record_id, 0).await.unwrap();
    })
    .await;

    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!();
    println!(
        "record read latency, {} backend, {reads} sequential reads",
        backend.name()
    );
    println!("  {:<52} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "mean ms");
    for (name, figures) in [
        ("baseline: records-svc health check, same TLS channel", &echo),
        ("GetRecord RPC (auth, policy check, audit write)", &rpc),
        ("on the device: verify signature + hash, ABE + AES open", &local),
        ("end to end: SDK read_record", &end_to_end),
    ] {
        println!(
            "  {name:<52} {:>9.2} {:>9.2} {:>9.2}",
            ms(figures.p50),
            ms(figures.p99),
            ms(figures.mean)
        );
    }
    println!(
        "  end to end / baseline (p50): {:.1}x",
        end_to_end.p50.as_secs_f64() / echo.p50.as_secs_f64()
    );
    mesh.shutdown().await;
}

fn main() {
    let reads = std::env::var("BENCH_READS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for backend in backends() {
            run(backend, reads).await;
        }
    });
}
