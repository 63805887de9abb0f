//! Fault injection (issue #8): services killed and restarted while clients send messages, write
//! and read records and log in; audit-svc down for a while; PostgreSQL restarted under the mesh.
//! Clients must see UNAVAILABLE (and nothing else) while something is down and recover on their
//! own; afterwards every acknowledged message and record exists exactly once, every audit event
//! they produced is in audit-svc exactly once, and the audit log verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "faults/cluster.rs"]
mod cluster;
#[path = "faults/load.rs"]
mod load;

use std::time::{Duration, Instant};

use caremesh_testkit::{Backend, Service, TEST_DATABASE_URL_ENV, TestMesh, backends};
use sea_orm::{ConnectionTrait, TransactionTrait};

use load::{Fixture, Load, Tally, check_exactly_once, drain_outboxes, outbox_lengths, service_databases};

/// How long a client may take to succeed again at everything after a fault ends.
const RECOVERY: Duration = Duration::from_secs(20);

fn postgres_url() -> Option<String> {
    std::env::var(TEST_DATABASE_URL_ENV).ok().filter(|url| !url.is_empty())
}

/// Sends the services' warnings and errors to a file, to show the cause of an INTERNAL answer.
fn log_to_file() -> Option<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("caremesh-faults-test-{}.log", std::process::id()));
    let file = std::fs::File::create(&path).ok()?;
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init()
        .ok()
        .map(|()| path)
}

fn summary(tally: &Tally) -> String {
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for error in &tally.errors {
        let key = format!("{:?} {:?}", error.code, error.reason.as_deref().unwrap_or("-"));
        *reasons.entry(key).or_default() += 1;
    }
    format!(
        "{} acknowledged ({} messages, {} records), {} errors {:?}",
        tally.acknowledged(),
        tally.messages.len(),
        tally.records.len(),
        tally.errors.len(),
        reasons
    )
}

/// Each service in turn is stopped and started again (on the same address) while the clients
/// keep working; they see only UNAVAILABLE and recover without new clients.
async fn restart_each_service_under_load(backend: Backend) {
    let name = backend.name();
    let mut mesh = TestMesh::builder().backend(backend).start().await;
    let fixture = Fixture::new(&mesh, 2).await;
    let mut total = Tally::default();
    let mut problems = Vec::new();
    for service in Service::ALL {
        let started = Instant::now();
        let address = mesh.grpc_addr(service);
        let load = Load::start(&fixture);
        tokio::time::sleep(Duration::from_millis(600)).await;
        mesh.stop_service(service).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        mesh.start_service(service).await;
        assert_eq!(
            mesh.grpc_addr(service),
            address,
            "{service} came back on another address"
        );
        let epoch = load.mark();
        let recovered = load.wait_all_succeeded(epoch, RECOVERY).await;
        let tally = load.finish().await;
        eprintln!(
            "{name}: {service} restarted: {} in {:.1?}",
            summary(&tally),
            started.elapsed()
        );
        if let Err(problem) = recovered {
            problems.push(format!("{service} restarted: clients did not recover: {problem}"));
        }
        for wrong in tally.not_unavailable() {
            problems.push(format!("{service} restarted: a client saw {wrong}"));
        }
        // The clients call these directly, so they must have noticed the outage.
        let direct = matches!(service, Service::Auth | Service::Messaging | Service::Records);
        if direct && tally.errors.is_empty() {
            problems.push(format!("{service} restarted: no client noticed it was down"));
        }
        total.absorb(tally);
        for problem in check_exactly_once(&mesh, &fixture, &total).await {
            problems.push(format!("after restarting {service}: {problem}"));
        }
    }
    mesh.shutdown().await;
    assert!(
        problems.is_empty(),
        "{name}: {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_restarted_under_load_on_sqlite() {
    restart_each_service_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_restarted_under_load_on_postgres() {
    let Some(url) = postgres_url() else {
        eprintln!("note: {TEST_DATABASE_URL_ENV} is not set; the PostgreSQL run is skipped");
        return;
    };
    restart_each_service_under_load(Backend::Postgres(url)).await;
}

/// With audit-svc down, the other services keep answering and their outboxes grow; started
/// again, every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_down_for_a_while_loses_and_duplicates_nothing() {
    for backend in backends() {
        let name = backend.name();
        let mut mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let fixture = Fixture::new(&mesh, 2).await;
        drain_outboxes(&mesh, Duration::from_secs(20)).await.unwrap();
        let dbs = service_databases(&mesh).await;
        let load = Load::start(&fixture);
        tokio::time::sleep(Duration::from_millis(300)).await;
        mesh.stop_service(Service::Audit).await;

        // Everything still works...
        let epoch = load.mark();
        let worked = load.wait_all_succeeded(epoch, RECOVERY).await;
        // ...and the events wait in the outboxes, more and more of them.
        let first = outbox_lengths(&dbs).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let second = outbox_lengths(&dbs).await;
        mesh.start_service(Service::Audit).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tally = load.finish().await;
        eprintln!(
            "{name}: audit down: {}; outboxes {first:?} then {second:?}",
            summary(&tally)
        );

        let mut problems = Vec::new();
        if let Err(problem) = worked {
            problems.push(format!("with audit-svc down: {problem}"));
        }
        for error in &tally.errors {
            problems.push(format!(
                "audit-svc is not on the request path, yet a client saw {error}"
            ));
        }
        for service in [Service::Auth, Service::Messaging, Service::Records] {
            let (first, second) = (first[&service], second[&service]);
            if !(first > 0 && second > first) {
                problems.push(format!(
                    "{service}'s outbox did not grow while audit-svc was down: {first} then {second}"
                ));
            }
        }
        problems.extend(check_exactly_once(&mesh, &fixture, &tally).await);
        mesh.shutdown().await;
        assert!(
            problems.is_empty(),
            "{name}: {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

/// A private PostgreSQL cluster (never the shared server) stopped for longer than the services'
/// connection timeout and started again under load: clients see UNAVAILABLE naming the database,
/// and the same service processes recover on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_load_is_unavailable_then_recovers() {
    if postgres_url().is_none() {
        eprintln!("note: {TEST_DATABASE_URL_ENV} is not set; the PostgreSQL restart test is skipped");
        return;
    }
    let log_file = log_to_file();
    let cluster = match cluster::Cluster::start().await {
        Ok(cluster) => cluster,
        Err(reason) => {
            eprintln!("SKIPPED: cannot run a private PostgreSQL cluster here: {reason}");
            return;
        }
    };
    let mesh = TestMesh::builder()
        .backend(Backend::Postgres(cluster.url()))
        .start()
        .await;
    let fixture = Fixture::new(&mesh, 2).await;
    let load = Load::start(&fixture);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Make sure calls are inside the database when it goes: hold each writing service's outbox
    // table locked, so that their transactions queue up behind the lock, then stop the server
    // (its fast shutdown terminates every session, the waiting ones too).
    let mut locks = Vec::new();
    for service in [Service::Auth, Service::Messaging, Service::Records] {
        let db = mesh.database(service).await;
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("LOCK TABLE audit_outbox IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        locks.push((txn, db));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.stop_server().await.unwrap();
    drop(locks);
    // Longer than the pool's 5 s acquire timeout, so that calls fail instead of only waiting.
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster
        .start_server()
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", cluster.server_log()));
    let epoch = load.mark();
    let recovered = load.wait_all_succeeded(epoch, Duration::from_secs(30)).await;
    let tally = load.finish().await;
    eprintln!("postgres restarted: {}", summary(&tally));

    let mut problems = Vec::new();
    if let Err(problem) = recovered {
        problems.push(format!("after PostgreSQL came back: {problem}"));
    }
    if tally.errors.is_empty() {
        problems.push("no client noticed that PostgreSQL was down".to_owned());
    }
    for wrong in tally.not_unavailable() {
        problems.push(format!("with PostgreSQL down a client saw {wrong}"));
    }
    // What the services logged for the INTERNAL answers (their cause stays in the log).
    let log = log_file.as_deref().map(std::fs::read_to_string).and_then(Result::ok);
    if let Some(path) = &log_file {
        let _ = std::fs::remove_file(path);
    }
    for error in tally
        .errors
        .iter()
        .filter(|error| error.code == Some(tonic::Code::Internal))
    {
        let reference = error.message.split("reference ").nth(1).and_then(|rest| rest.get(..36));
        if let (Some(reference), Some(log)) = (reference, &log) {
            for line in log.lines().filter(|line| line.contains(reference)) {
                problems.push(format!("  the service logged: {line}"));
            }
        }
    }
    let names_database = |message: &str| message.to_lowercase().contains("database");
    for error in &tally.errors {
        // A peer whose database is down answers UNAVAILABLE naming its database; its caller
        // passes that on as UNAVAILABLE naming the peer (`... with messaging-svc right now`).
        let names_peer = Service::ALL.iter().any(|peer| error.message.contains(peer.as_str()));
        if error.code == Some(tonic::Code::Unavailable) && !names_peer && !names_database(&error.message) {
            problems.push(format!("UNAVAILABLE without naming the database: {error}"));
        }
    }
    if !tally.errors.iter().any(|error| names_database(&error.message)) {
        problems.push("no error named the database".to_owned());
    }
    // The same processes serve again: no restart.
    for service in Service::ALL {
        if let Err(error) = caremesh_serve::wait_ready(service, mesh.ops_addr(service), Duration::from_secs(10)).await {
            problems.push(format!("{service} is not SERVING after PostgreSQL came back: {error}"));
        }
    }
    problems.extend(check_exactly_once(&mesh, &fixture, &tally).await);
    mesh.shutdown().await;
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    drop(cluster);
}
