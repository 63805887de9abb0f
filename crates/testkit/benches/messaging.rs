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
//! `BENCH_MESSAGES` to change the load, `BENCH_FLOOR_MESSAGES` for the crypto floor's messages
//! per thread).
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

/// CPU time (user + system) this process has used so far, where the OS tells (Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
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

/// What the cryptography alone allows on this machine, measured in the same run. Per message: the
/// recipient's bundle is verified (identity binding and signed-prekey signature: two Ed25519
/// verifications), the message is sealed to the recipient (fresh ephemeral key; DH with the
/// identity, signed and one-time prekey) and to the sender's own keys (fresh ephemeral key, three
/// DHs), and the recipient opens it (four DHs): 13 X25519 operations, 2 Ed25519 verifications,
/// 3 HKDF and 3 AES-256-GCM of 1 KB. No network, no storage, no server: one OS thread per core,
/// each with its own sender and recipient keys.
struct CryptoFloor {
    threads: usize,
    /// Messages per second, all cores.
    rate: f64,
    /// The same without the two signature checks, as the SDK does while a contact's identity key
    /// and signed prekey are unchanged ([`caremesh_crypto::VerifiedBundle::verify_next`]).
    rate_unverified: f64,
    /// Single-thread costs, in microseconds: one X25519 key generation, one Ed25519 verification.
    x25519_us: f64,
    ed25519_verify_us: f64,
}

fn crypto_floor(messages_per_thread: usize) -> CryptoFloor {
    use caremesh_crypto::{DeviceKeys, MessageContext, new_id, open, seal, seal_to_self, verify_bundle};
    use caremesh_proto::messaging::v1 as pb;
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let body = vec![b'm'; 1024];
    // Returns messages per second over all threads (each thread times its own loop).
    let run = |verify_each: bool| {
        let elapsed: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let body = &body;
                    scope.spawn(move || {
                        let sender_id = new_id();
                        let recipient_id = new_id();
                        let mut sender = DeviceKeys::generate(&sender_id).unwrap();
                        let mut recipient = DeviceKeys::generate(&recipient_id).unwrap();
                        let published = recipient.publish_request(0).unwrap();
                        let sender_identity =
                            caremesh_crypto::verify_identity(&sender.identity_proto().unwrap(), &sender_id).unwrap();
                        // One-time prekeys are made ahead of time by the recipient's device.
                        let mut prekeys = Vec::with_capacity(messages_per_thread);
                        while prekeys.len() < messages_per_thread {
                            let batch = (messages_per_thread - prekeys.len()).min(100);
                            prekeys.extend(recipient.top_up_request(batch).unwrap().one_time_prekeys);
                        }
                        let bundles: Vec<pb::KeyBundle> = prekeys
                            .into_iter()
                            .map(|prekey| pb::KeyBundle {
                                user_id: recipient_id.clone(),
                                identity_key: published.identity_key.clone(),
                                signed_prekey: published.signed_prekey.clone(),
                                one_time_prekey: Some(prekey),
                            })
                            .collect();
                        let preverified: Vec<_> = if verify_each {
                            Vec::new()
                        } else {
                            bundles
                                .iter()
                                .map(|bundle| verify_bundle(bundle, &recipient_id).unwrap())
                                .collect()
                        };
                        let started = Instant::now();
                        for (index, bundle) in bundles.iter().enumerate() {
                            let verified = if verify_each {
                                verify_bundle(bundle, &recipient_id).unwrap()
                            } else {
                                preverified[index].clone()
                            };
                            let message_id = new_id();
                            let context = MessageContext {
                                sender_user_id: &sender_id,
                                recipient_user_id: &recipient_id,
                                message_id: &message_id,
                            };
                            let envelope = seal(sender.identity(), &context, &verified, body).unwrap();
                            std::hint::black_box(seal_to_self(&sender, &context, body).unwrap());
                            let opened = open(&mut recipient, &sender_identity, &context, &envelope).unwrap();
                            assert_eq!(opened.len(), body.len());
                        }
                        let elapsed = started.elapsed();
                        drop(sender.publish_request(0));
                        elapsed
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        let slowest = elapsed.into_iter().max().unwrap_or_default();
        (threads * messages_per_thread) as f64 / slowest.as_secs_f64()
    };
    let rate = run(true);
    let rate_unverified = run(false);
    // Primitive costs on one thread: a one-time prekey is one X25519 key generation (a scalar
    // multiplication, the same work as a DH); an identity check is one Ed25519 verification.
    let mut keys = DeviceKeys::generate(&new_id()).unwrap();
    let started = Instant::now();
    keys.top_up_request(100).unwrap();
    let x25519_us = started.elapsed().as_secs_f64() * 1e6 / 100.0;
    let user_id = new_id();
    let identity = DeviceKeys::generate(&user_id).unwrap().identity_proto().unwrap();
    let rounds = 500;
    let started = Instant::now();
    for _ in 0..rounds {
        caremesh_crypto::verify_identity(&identity, &user_id).unwrap();
    }
    let ed25519_verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    CryptoFloor {
        threads,
        rate,
        rate_unverified,
        x25519_us,
        ed25519_verify_us,
    }
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

    let floor_messages = env_number("BENCH_FLOOR_MESSAGES", 400).max(1);
    let floor = tokio::task::spawn_blocking(move || crypto_floor(floor_messages))
        .await
        .unwrap();
    let echo_max = echo(&mesh, conversations, per_task * 4, None).await;
    let cpu_before = process_cpu();
    let max = messaging(&pairs, per_task, None).await;
    // Everything in this process (SDK, all five services, SQLite) per message at the maximum rate.
    let cpu_per_message = cpu_before
        .zip(process_cpu())
        .map(|(before, after)| after.saturating_sub(before).as_secs_f64() * 1000.0 / (conversations * per_task) as f64);
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
    if let Some(cpu) = cpu_per_message {
        println!("  CPU per message at max (whole process: SDK, services, database) {cpu:.2} ms");
    }
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
        "  crypto floor, no network ({} threads) {:>8.0} msg/s   = {:.1} % of the echo (bundle signatures checked each time)",
        floor.threads,
        floor.rate,
        floor.rate / echo_max.rate * 100.0
    );
    println!(
        "  crypto floor, signatures reused      {:>8.0} msg/s   = {:.1} % of the echo (as the SDK does; X25519 {:.0} us, Ed25519 verify {:.0} us)",
        floor.rate_unverified,
        floor.rate_unverified / echo_max.rate * 100.0,
        floor.x25519_us,
        floor.ed25519_verify_us
    );
    println!(
        "  messaging / echo rate                {:>8.1} %       goal >= {:.0} %: {}",
        share * 100.0,
        goal * 100.0,
        verdict(share >= goal)
    );
    println!(
        "  messaging / crypto floor (reused)    {:>8.1} %",
        max.rate / floor.rate_unverified * 100.0
    );
    drop(pairs);
    mesh.shutdown().await;
}
