//! audit-svc benchmark. Prints, from one run on this machine:
//! - append throughput (events per second) through `EventLog::ingest` (the production path:
//!   dedup, leaf hashes, tree nodes, alert rules, one transaction per 1000-event batch) while the
//!   checkpointer signs a checkpoint every second, on SQLite and, when
//!   `CAREMESH_TEST_DATABASE_URL` is set, PostgreSQL (goal: 20,000/s on SQLite on 2 cores);
//! - inclusion-proof latency at the final tree size (goal: under 5 ms at 1 million events), and
//!   consistency-proof latency;
//! - full offline verification speed (`audit_svc::verify::verify_log`);
//! - the baseline, measured in the same run on the same database and connection settings: the
//!   same encoded events stored as bare rows (primary key and payload, no dedup, indexes, tree
//!   or alerts) in one multi-row INSERT per 1000-event batch, so the append rate can be read as
//!   a share of what the storage alone does on this machine.
//!
//! Run: `cargo bench -p caremesh-testkit --bench audit` (`AUDIT_BENCH_EVENTS`, default 1000000,
//! sets the SQLite size; PostgreSQL appends a tenth of it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_svc::checkpoints::Checkpointer;
use audit_svc::log::EventLog;
use caremesh_proto::audit::v1::{AuditAction, AuditActor, AuditEvent, AuditOutcome};
use caremesh_runtime::ServiceName;
use caremesh_runtime::clock::{SharedClock, SystemClock};
use caremesh_runtime::config::DatabaseConfig;
use caremesh_runtime::kek::Kek;
use caremesh_runtime::outbox::Outbox;
use tokio_util::sync::CancellationToken;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn events(outbox: &Outbox, n: usize, salt: usize) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            let mut event = outbox.new_event();
            event.set_action(AuditAction::Read);
            event.set_outcome(AuditOutcome::Success);
            event.operation = "/caremesh.records.v1.RecordsService/GetRecord".to_owned();
            event.entity_type = "Record".to_owned();
            event.entity_id = uuid::Uuid::now_v7().to_string();
            event.patient_id = format!("0190b0a0-0000-7000-8000-{:012}", (i * 7919 + salt) % 50_000);
            event.purpose_of_use = "TREAT".to_owned();
            event.actor = Some(AuditActor {
                user_id: format!("0190b0a0-0000-7000-9000-{:012}", (i + salt) % 200),
                role: "doctor".to_owned(),
                session_id: uuid::Uuid::now_v7().to_string(),
                source_address: format!("10.0.{}.{}:443", i % 200, salt % 200),
                ..AuditActor::default()
            });
            event
        })
        .collect()
}

async fn bench(name: &str, database: DatabaseConfig, total: usize) {
    let db = caremesh_runtime::db::connect_and_migrate::<audit_svc::storage::Migrator>(&database)
        .await
        .unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let kek = Kek::from_bytes(&[42u8; 32]);
    let log = EventLog::new(db.clone(), clock.clone());
    let checkpoints = Checkpointer::open(db.clone(), clock.clone(), &kek, "bench.caremesh.local/audit")
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let signer = tokio::spawn(checkpoints.clone().run(Duration::from_secs(1), stop.clone()));
    let outbox = Outbox::new(ServiceName::Records, clock.clone());
    let caller = ServiceName::Records.spiffe_id();

    // Build batches ahead so that only ingestion is timed.
    let batch = 1000;
    let started = Instant::now();
    let mut appended = 0usize;
    let mut timed = Duration::ZERO;
    while appended < total {
        let n = batch.min(total - appended);
        let batch_events = events(&outbox, n, appended);
        let t = Instant::now();
        let result = log.ingest(&caller, &batch_events).await.unwrap();
        timed += t.elapsed();
        assert_eq!(result.accepted as usize, n);
        appended += n;
        if appended.is_multiple_of(100_000) {
            eprintln!("  {name}: {appended} events...");
        }
    }
    let wall = started.elapsed();
    stop.cancel();
    signer.await.unwrap();
    let latest = checkpoints.create().await.unwrap();
    println!(
        "{name}: appended {total} events in {:.1} s of ingest ({:.0} events/s; {:.0}/s including building the events), {} checkpoints signed meanwhile at 1/s",
        timed.as_secs_f64(),
        total as f64 / timed.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        {
            use sea_orm::{EntityTrait, PaginatorTrait};
            audit_svc::storage::checkpoint::Entity::find().count(&db).await.unwrap()
        }
    );

    // Proof latency at the final size, through the same code the RPCs use.
    let reader = audit_svc::reader::Reader {
        log: log.clone(),
        checkpoints: checkpoints.clone(),
        outbox: outbox.clone(),
        names: None,
    };
    let size = latest.tree_size;
    let mut samples = Vec::new();
    let mut consistency = Vec::new();
    for i in 0..200u64 {
        let index = (i * 4_999_963) % size;
        let t = Instant::now();
        let proof = reader.leaf_proof(index, size).await.unwrap();
        samples.push(t.elapsed());
        assert!(!proof.is_empty());
        let first = 1 + (i * 7_777_777) % size;
        let t = Instant::now();
        reader.consistency_proof(first, size).await.unwrap();
        consistency.push(t.elapsed());
    }
    println!(
        "{name}: inclusion proof at {size} events: median {:.3} ms, max {:.3} ms; consistency proof median {:.3} ms",
        median(samples.clone()).as_secs_f64() * 1000.0,
        samples.iter().max().unwrap().as_secs_f64() * 1000.0,
        median(consistency).as_secs_f64() * 1000.0,
    );

    let t = Instant::now();
    let report = audit_svc::verify::verify_log(&db, &kek).await.unwrap();
    let took = t.elapsed();
    println!(
        "{name}: full verification of {} events, {} nodes, {} checkpoints in {:.1} s ({:.0} events/s)",
        report.tree_size,
        report.nodes_checked,
        report.checkpoints_checked,
        took.as_secs_f64(),
        report.tree_size as f64 / took.as_secs_f64()
    );
}

/// Stores `total` encoded events as bare rows, batch by batch, and returns events per second.
async fn baseline(database: &DatabaseConfig, total: usize) -> f64 {
    use prost::Message;
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait, Value};
    let db = caremesh_runtime::db::connect(database).await.unwrap();
    let backend = db.get_database_backend();
    let blob = if backend == sea_orm::DbBackend::Postgres {
        "BYTEA"
    } else {
        "BLOB"
    };
    db.execute_unprepared(&format!(
        "CREATE TABLE bench_baseline (event_id TEXT PRIMARY KEY, payload {blob} NOT NULL)"
    ))
    .await
    .unwrap();
    let outbox = Outbox::new(ServiceName::Records, Arc::new(SystemClock));
    let mut timed = Duration::ZERO;
    let mut stored = 0;
    while stored < total {
        let n = 1000.min(total - stored);
        let rows = events(&outbox, n, stored);
        let mut values = Vec::with_capacity(2 * n);
        let mut placeholders = Vec::with_capacity(n);
        for (i, event) in rows.iter().enumerate() {
            placeholders.push(match backend {
                sea_orm::DbBackend::Postgres => format!("(${}, ${})", 2 * i + 1, 2 * i + 2),
                _ => "(?, ?)".to_owned(),
            });
            values.push(Value::from(event.event_id.clone()));
            values.push(Value::from(event.encode_to_vec()));
        }
        let sql = format!(
            "INSERT INTO bench_baseline (event_id, payload) VALUES {}",
            placeholders.join(", ")
        );
        let t = Instant::now();
        let txn = db.begin().await.unwrap();
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        timed += t.elapsed();
        stored += n;
    }
    total as f64 / timed.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let total: usize = std::env::var("AUDIT_BENCH_EVENTS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
        let sqlite = DatabaseConfig {
            url,
            schema: String::new(),
        };
        bench("sqlite", sqlite.clone(), total).await;
        let bare = baseline(&sqlite, total).await;
        println!("sqlite: baseline, the same events as bare rows in 1000-row transactions: {bare:.0} events/s");
        if let Ok(url) = std::env::var("CAREMESH_TEST_DATABASE_URL") {
            let schema = format!("bench_audit_{}", std::process::id());
            let postgres = DatabaseConfig {
                url: url.clone(),
                schema: schema.clone(),
            };
            let size = (total / 10).max(1000);
            bench("postgresql", postgres.clone(), size).await;
            let bare = baseline(&postgres, size).await;
            println!("postgresql: baseline, the same events as bare rows in 1000-row transactions: {bare:.0} events/s");
            use sea_orm::ConnectionTrait;
            let admin = sea_orm::Database::connect(url.as_str()).await.unwrap();
            admin
                .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .unwrap();
        }
    });
}
