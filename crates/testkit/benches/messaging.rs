//! messaging-svc load benchmark. Sends and receives 1 KB end-to-end encrypted messages through
//! the SDK (fetch bundle, X3DH seal twice, SendMessage over TLS 1.3; the recipient's live stream
//! delivers and the recipient's SDK opens) with many concurrent conversations, and prints
//! messages per second and p50/p99 send-to-delivery latency, next to a bare tonic unary call with
//! the same TLS configuration (the runtime's rustls server config and acceptor, the SDK's
//! connector, 1 KB request) measured in the same run.
//!
//! Phases per backend (SQLite, and PostgreSQL when `CAREMESH_TEST_DATABASE_URL` is set):
//! 1. maximum rate: every conversation sends back to back;
//! 2. half that rate, paced: the latency goal (p99 < 25 ms) is judged here.
//!
//! Goals (issue #4): messaging at least 40% of the echo's rate on SQLite, 30% on PostgreSQL.
//!
//! Run: `cargo bench -p caremesh-testkit --bench messaging` (env `BENCH_CONVERSATIONS`,
//! `BENCH_MESSAGES` to change the load).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caremesh_sdk::auth::Role;
use caremesh_sdk::messaging::Messenger;
use caremesh_testkit::echo::EchoServer;
use caremesh_testkit::{Backend, Service, TestMesh, backends};
use futures::StreamExt;
use tokio::sync::Mutex;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort();
    Figures {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for backend in backends() {
            run(backend).await;
        }
    });
}

/// The bare baseline ([`EchoServer`]) driven like the messaging load.
async fn echo(mesh: &TestMesh, conversations: usize, per_task: usize, pace: Option<Duration>) -> Figures {
    let echo = EchoServer::start(mesh, 50).await;
    let started = Instant::now();
    let tasks = (0..conversations).map(|task| {
        let mut client = echo.client();
        let offset = pace
            .map(|pace| pace * task as u32 / conversations as u32)
            .unwrap_or_default();
        let request = echo.request.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            let begin = Instant::now() + offset;
            for index in 0..per_task {
                if let Some(pace) = pace {
                    tokio::time::sleep_until((begin + pace * index as u32).into()).await;
                }
                let sent = Instant::now();
                client.check(request.clone()).await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        })
    });
    let latencies: Vec<Duration> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    let elapsed = started.elapsed();
    echo.stop().await;
    figures(latencies, elapsed)
}

struct Pair {
    sender: Arc<Messenger>,
    sender_session: caremesh_sdk::auth::Session,
    recipient: Arc<Messenger>,
    recipient_session: caremesh_sdk::auth::Session,
    recipient_id: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn messaging(pairs: &[Pair], per_task: usize, pace: Option<Duration>) -> Figures {
    let body = vec![b'm'; 1024];
    // Subscribe first, then send; latency is send start to the recipient having opened it.
    let mut receivers = Vec::new();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    for pair in pairs {
        let mut stream = pair.recipient.watch(&pair.recipient_session, "").await.unwrap();
        let recipient = Arc::clone(&pair.recipient);
        let session = pair.recipient_session.clone();
        receivers.push(tokio::spawn(async move {
            let mut arrived = Vec::with_capacity(per_task);
            while arrived.len() < per_task {
                let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
                    .await
                    .expect("delivery within 60 s")
                    .unwrap()
                    .unwrap();
                let message = item.message.unwrap();
                let opened = recipient.open_message(&session, &message).await.unwrap();
                assert_eq!(
                    opened.content,
                    caremesh_sdk::messaging::Content::Plain(vec![b'm'; 1024])
                );
                arrived.push((message.message_id, Instant::now()));
            }
            arrived
        }));
    }
    let started = Instant::now();
    let count = pairs.len();
    let senders = pairs.iter().enumerate().map(|(task, pair)| {
        // Paced senders are spread evenly over the interval, not in lockstep.
        let offset = pace.map(|pace| pace * task as u32 / count as u32).unwrap_or_default();
        let sender = Arc::clone(&pair.sender);
        let session = pair.sender_session.clone();
        let recipient_id = pair.recipient_id.clone();
        let body = body.clone();
        let sent_at = Arc::clone(&sent_at);
        tokio::spawn(async move {
            let begin = Instant::now() + offset;
            for index in 0..per_task {
                if let Some(pace) = pace {
                    tokio::time::sleep_until((begin + pace * index as u32).into()).await;
                }
                let start = Instant::now();
                let message = sender.send(&session, &recipient_id, &body, None).await.unwrap();
                sent_at.lock().await.insert(message.message_id, start);
            }
        })
    });
    futures::future::join_all(senders).await;
    let mut latencies = Vec::new();
    for receiver in receivers {
        for (message_id, arrived) in receiver.await.unwrap() {
            let start = sent_at.lock().await.get(&message_id).copied().unwrap();
            latencies.push(arrived.saturating_duration_since(start));
        }
    }
    figures(latencies, started.elapsed())
}

/// Where one unloaded send spends its time: an authenticated read-only call, the bundle fetch
/// (a write: it consumes a one-time prekey), the whole SDK send, and send-to-delivery.
async fn breakdown(mesh: &TestMesh, pair: &Pair) {
    use caremesh_proto::messaging::v1 as pb;
    use caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient;
    let channel = mesh.sdk().channel(Service::Messaging).unwrap();
    let mut keys = KeyDirectoryServiceClient::new(channel);
    let runs = 30;
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2].as_secs_f64() * 1000.0
    };
    let mut stock = Vec::new();
    let mut fetch = Vec::new();
    let mut send = Vec::new();
    let mut deliver = Vec::new();
    let mut stream = pair.recipient.watch(&pair.recipient_session, "").await.unwrap();
    for _ in 0..runs {
        let started = Instant::now();
        keys.get_prekey_stock(pair.sender_session.request(pb::GetPrekeyStockRequest {}).unwrap())
            .await
            .unwrap();
        stock.push(started.elapsed());
        let started = Instant::now();
        keys.fetch_key_bundle(
            pair.sender_session
                .request(pb::FetchKeyBundleRequest {
                    user_id: pair.recipient_id.clone(),
                })
                .unwrap(),
        )
        .await
        .unwrap();
        fetch.push(started.elapsed());
        let started = Instant::now();
        pair.sender
            .send(&pair.sender_session, &pair.recipient_id, &[b'm'; 1024], None)
            .await
            .unwrap();
        send.push(started.elapsed());
        stream.next().await.unwrap().unwrap();
        deliver.push(started.elapsed());
    }
    println!(
        "  unloaded medians: GetPrekeyStock {:.2} ms, FetchKeyBundle {:.2} ms, SDK send {:.2} ms, send->delivered {:.2} ms",
        median(stock),
        median(fetch),
        median(send),
        median(deliver)
    );
}

async fn run(backend: Backend) {
    let conversations = env_number("BENCH_CONVERSATIONS", 16);
    let per_task = env_number("BENCH_MESSAGES", 50);
    let mesh = TestMesh::builder().backend(backend.clone()).start().await;
    let mut pairs = Vec::new();
    for _ in 0..conversations {
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Doctor, &[]).await;
        let (pd, dd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sender = Messenger::open(mesh.sdk(), pd.path(), "default", &patient.session)
            .await
            .unwrap();
        let recipient = Messenger::open(mesh.sdk(), dd.path(), "default", &doctor.session)
            .await
            .unwrap();
        pairs.push(Pair {
            sender: Arc::new(sender),
            sender_session: patient.session,
            recipient: Arc::new(recipient),
            recipient_session: doctor.session,
            recipient_id: doctor.user_id,
            _dirs: (pd, dd),
        });
    }
    // Warm-up (connections, caches, profile lookups).
    messaging(&pairs, 2, None).await;
    breakdown(&mesh, &pairs[0]).await;

    let echo_max = echo(&mesh, conversations, per_task * 4, None).await;
    let max = messaging(&pairs, per_task, None).await;
    let half_rate = max.rate / 2.0;
    let pace = Duration::from_secs_f64(conversations as f64 / half_rate);
    let half = messaging(&pairs, per_task, Some(pace)).await;
    let echo_half = echo(&mesh, conversations, per_task, Some(pace)).await;

    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let goal = if matches!(backend, Backend::Sqlite) { 0.40 } else { 0.30 };
    let share = max.rate / echo_max.rate;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "messaging benchmark on {} ({conversations} conversations x {per_task} messages of 1 KB)",
        backend.name()
    );
    println!(
        "  bare tonic unary (same TLS), max     {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        echo_max.rate,
        ms(echo_max.p50),
        ms(echo_max.p99)
    );
    println!(
        "  messaging send->deliver, max         {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        max.rate,
        ms(max.p50),
        ms(max.p99)
    );
    println!(
        "  messaging at half max rate           {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms   goal p99 < 25 ms: {}",
        half.rate,
        ms(half.p50),
        ms(half.p99),
        verdict(half.p99 < Duration::from_millis(25))
    );
    println!(
        "  bare tonic unary at the same pace    {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        echo_half.rate,
        ms(echo_half.p50),
        ms(echo_half.p99)
    );
    println!(
        "  messaging / echo rate                {:>8.1} %       goal >= {:.0} %: {}",
        share * 100.0,
        goal * 100.0,
        verdict(share >= goal)
    );
    drop(pairs);
    mesh.shutdown().await;
}
