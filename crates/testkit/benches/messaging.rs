//! messaging-svc load benchmark for protocol v2 (`docs/protocol.md`). Each conversation is a
//! patient and a doctor with two devices each (the second linked from the first). A patient's
//! phone sends 1 KB messages; a message counts as delivered when the doctor's two devices and the
//! patient's tablet (Sesame fan-out) have each received it on their live stream and opened it.
//! Printed next to a bare tonic unary call with the same TLS configuration (the runtime's rustls
//! server config and acceptor, the SDK's connector, 1 KB request) measured in the same run.
//!
//! Phases per backend (SQLite, and PostgreSQL when `CAREMESH_TEST_DATABASE_URL` is set):
//! 1. first contact: the first message of every conversation (device lists fetched, PQXDH with
//!    each of the three other devices, then the message), all conversations at once;
//! 2. steady state at the maximum rate: every conversation sends back to back on established
//!    sessions;
//! 3. steady state at half that rate, paced: the latency goal (p99 < 25 ms) is judged here.
//!
//! Goals (issue #14): steady state at least 20% of the echo's rate on SQLite, 15% on PostgreSQL,
//! with two devices per user; p99 under 25 ms at half the maximum rate.
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
use caremesh_testkit::{Backend, TestMesh, backends};
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

/// What the cryptography of one steady-state message allows on this machine, measured in the
/// same run: the sender's device encrypts for three devices (three Double Ratchet steps: HMAC
/// chain, HKDF, AES-256-GCM of 1 KB) and seals the archive copy; the three devices decrypt. No
/// network, no storage: one OS thread per core, each with its own four devices and established
/// sessions. Messages flow one way, so no DH ratchet step (no X25519) happens in the loop.
struct CryptoFloor {
    threads: usize,
    /// Messages per second, all cores.
    rate: f64,
    /// One PQXDH handshake with its first message (initiator and responder), microseconds.
    handshake_us: f64,
}

fn crypto_floor(messages_per_thread: usize) -> CryptoFloor {
    use caremesh_crypto::v2::archive::ArchiveContext;
    use caremesh_crypto::v2::*;
    use caremesh_crypto::{IdentityKeyPair, new_id};
    use zeroize::Zeroizing;

    struct Side {
        user_id: String,
        identity: IdentityKeyPair,
        device: DeviceSecrets,
        sessions: SessionStore,
        published: (PublishedKey, PublishedKey),
    }
    let side = |user_id: &str, identity: &IdentityKeyPair| {
        let device = DeviceSecrets::generate().unwrap();
        let published = (
            device.signed_prekey(identity, user_id).unwrap(),
            device.last_resort_prekey(identity, user_id).unwrap(),
        );
        Side {
            user_id: user_id.to_owned(),
            identity: serde_json::from_value(serde_json::to_value(identity).unwrap()).unwrap(),
            device,
            sessions: SessionStore::default(),
            published,
        }
    };
    fn bundle(target: &Side, list: &DeviceList) -> VerifiedDeviceBundle {
        let bundle = DeviceBundle {
            user_id: target.user_id.clone(),
            device_id: target.device.device_id().to_owned(),
            signed_prekey: target.published.0.clone(),
            kem_prekey: Some(KemPrekeyPublic {
                key_id: target.published.1.key_id.clone(),
                kind: DeviceKeyKind::KemLastResort,
                public_key: target.published.1.public_key.clone(),
                signature: target.published.1.signature.clone(),
            }),
            one_time_prekey: None,
        };
        verify_device_bundle(&bundle, &target.identity.public(), list).unwrap()
    }
    fn deliver(sender: &Side, target: &mut Side, message_id: &str, message: &RatchetMessage) -> usize {
        let sender_identity = sender.identity.public();
        let plaintext = target
            .sessions
            .decrypt(
                &target.identity,
                &target.user_id.clone(),
                &mut target.device,
                &sender.user_id,
                &sender_identity,
                message_id,
                message,
                &mut OsRatchetKeys,
            )
            .unwrap();
        plaintext.len()
    }

    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let body = Content::Message(Zeroizing::new(vec![b'm'; 1024]));
    let plaintext = body.encode().unwrap();
    let results: Vec<(Duration, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let plaintext = &plaintext;
                let body = &body;
                scope.spawn(move || {
                    let (patient, doctor) = (new_id(), new_id());
                    let (patient_identity, doctor_identity) = (
                        IdentityKeyPair::generate().unwrap(),
                        IdentityKeyPair::generate().unwrap(),
                    );
                    let mut phone = side(&patient, &patient_identity);
                    let mut others = [
                        side(&doctor, &doctor_identity),
                        side(&doctor, &doctor_identity),
                        side(&patient, &patient_identity),
                    ];
                    let lists: Vec<DeviceList> = others
                        .iter()
                        .map(|other| {
                            DeviceList::new(
                                &other.user_id,
                                other.identity.key_id(),
                                1,
                                [other.device.device_id().to_owned()],
                            )
                            .unwrap()
                        })
                        .collect();
                    let history = HistoryKeyRing::generate().unwrap();
                    let phone_device = phone.device.device_id().to_owned();
                    // First contact: handshakes with the three devices and the first message.
                    let started = Instant::now();
                    let message_id = new_id();
                    for (other, list) in others.iter_mut().zip(&lists) {
                        let verified = bundle(other, list);
                        phone
                            .sessions
                            .start(&phone.identity, &patient, &phone_device, &verified, &mut OsRatchetKeys)
                            .unwrap();
                        let peer = PeerDevice {
                            user_id: other.user_id.clone(),
                            device_id: other.device.device_id().to_owned(),
                        };
                        let message = phone.sessions.encrypt(&peer, &message_id, plaintext).unwrap();
                        assert_eq!(deliver(&phone, other, &message_id, &message), plaintext.len());
                    }
                    let handshake = started.elapsed() / 3;
                    // Steady state.
                    let peers: Vec<PeerDevice> = others
                        .iter()
                        .map(|other| PeerDevice {
                            user_id: other.user_id.clone(),
                            device_id: other.device.device_id().to_owned(),
                        })
                        .collect();
                    let started = Instant::now();
                    for _ in 0..messages_per_thread {
                        let message_id = new_id();
                        let context = ArchiveContext {
                            owner_user_id: &patient,
                            message_id: &message_id,
                            sender_user_id: &patient,
                            sender_device_id: &phone_device,
                            recipient_user_id: &doctor,
                        };
                        std::hint::black_box(ArchiveCopy::seal(&history, &context, body).unwrap());
                        for (other, peer) in others.iter_mut().zip(&peers) {
                            let message = phone.sessions.encrypt(peer, &message_id, plaintext).unwrap();
                            assert_eq!(deliver(&phone, other, &message_id, &message), plaintext.len());
                        }
                    }
                    (started.elapsed(), handshake)
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let slowest = results.iter().map(|(elapsed, _)| *elapsed).max().unwrap_or_default();
    let handshake = results
        .iter()
        .map(|(_, handshake)| *handshake)
        .max()
        .unwrap_or_default();
    CryptoFloor {
        threads,
        rate: (threads * messages_per_thread) as f64 / slowest.as_secs_f64(),
        handshake_us: handshake.as_secs_f64() * 1e6,
    }
}

/// One conversation: the patient's phone (which sends) and tablet, the doctor's two devices.
struct Conversation {
    phone: Arc<Messenger>,
    patient_session: caremesh_sdk::auth::Session,
    doctor_id: String,
    /// The three devices that receive each message, with their user's session.
    receivers: Vec<(Arc<Messenger>, caremesh_sdk::auth::Session)>,
    _dirs: Vec<tempfile::TempDir>,
}

/// A user's first device and a second one linked from it.
async fn two_devices(
    mesh: &TestMesh,
    session: &caremesh_sdk::auth::Session,
    dirs: &mut Vec<tempfile::TempDir>,
) -> (Messenger, Messenger) {
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Messenger::open(mesh.sdk(), first_dir.path(), "default", session)
        .await
        .unwrap();
    let (code_tx, code_rx) = tokio::sync::oneshot::channel();
    let link = {
        let (client, dir, session) = (mesh.sdk(), second_dir.path().to_owned(), session.clone());
        tokio::spawn(async move {
            Messenger::link(client, &dir, "default", &session, move |code, _| {
                let _ = code_tx.send(code.to_owned());
            })
            .await
            .unwrap()
        })
    };
    let code = code_rx.await.unwrap();
    first.approve_link(session, &code).await.unwrap();
    let second = link.await.unwrap();
    dirs.push(first_dir);
    dirs.push(second_dir);
    (first, second)
}

struct Delivered {
    figures: Figures,
    /// Messages sent.
    count: usize,
}

/// Sends `per_task` messages per conversation (paced or back to back) and waits until every
/// receiving device has opened each; latency is send start to the last device having opened it.
async fn messaging(conversations: &[Conversation], per_task: usize, pace: Option<Duration>) -> Delivered {
    let body = vec![b'm'; 1024];
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut receivers = Vec::new();
    for conversation in conversations {
        for (device, session) in &conversation.receivers {
            let mut stream = device.watch(session, "").await.unwrap();
            let (device, session) = (Arc::clone(device), session.clone());
            receivers.push(tokio::spawn(async move {
                let mut arrived = Vec::with_capacity(per_task);
                while arrived.len() < per_task {
                    let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
                        .await
                        .expect("delivery within 60 s")
                        .unwrap()
                        .unwrap();
                    let message = item.message.unwrap();
                    let opened = device.open_message(&session, &message).await.unwrap();
                    assert_eq!(
                        opened.content,
                        caremesh_sdk::messaging::Content::Plain(vec![b'm'; 1024])
                    );
                    arrived.push((message.message_id, Instant::now()));
                }
                arrived
            }));
        }
    }
    let started = Instant::now();
    let count = conversations.len();
    let senders = conversations.iter().enumerate().map(|(task, conversation)| {
        // Paced senders are spread evenly over the interval, not in lockstep.
        let offset = pace.map(|pace| pace * task as u32 / count as u32).unwrap_or_default();
        let (phone, session) = (Arc::clone(&conversation.phone), conversation.patient_session.clone());
        let (doctor_id, body, sent_at) = (conversation.doctor_id.clone(), body.clone(), Arc::clone(&sent_at));
        tokio::spawn(async move {
            let begin = Instant::now() + offset;
            for index in 0..per_task {
                if let Some(pace) = pace {
                    tokio::time::sleep_until((begin + pace * index as u32).into()).await;
                }
                let start = Instant::now();
                let message = phone.send(&session, &doctor_id, &body, None).await.unwrap();
                sent_at.lock().await.insert(message.message_id, start);
            }
        })
    });
    futures::future::join_all(senders).await;
    let mut last: HashMap<String, Instant> = HashMap::new();
    for receiver in receivers {
        for (message_id, arrived) in receiver.await.unwrap() {
            let entry = last.entry(message_id).or_insert(arrived);
            *entry = (*entry).max(arrived);
        }
    }
    let elapsed = started.elapsed();
    let sent_at = sent_at.lock().await;
    let latencies: Vec<Duration> = last
        .iter()
        .map(|(message_id, arrived)| arrived.saturating_duration_since(sent_at[message_id]))
        .collect();
    Delivered {
        count: latencies.len(),
        figures: figures(latencies, elapsed),
    }
}

async fn run(backend: Backend) {
    let conversation_count = env_number("BENCH_CONVERSATIONS", 16);
    let per_task = env_number("BENCH_MESSAGES", 50);
    let mesh = TestMesh::builder().backend(backend.clone()).start().await;
    let setup = Instant::now();
    let mut conversations = Vec::new();
    for _ in 0..conversation_count {
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Doctor, &[]).await;
        let mut dirs = Vec::new();
        let (phone, tablet) = two_devices(&mesh, &patient.session, &mut dirs).await;
        let (desk, pager) = two_devices(&mesh, &doctor.session, &mut dirs).await;
        conversations.push(Conversation {
            phone: Arc::new(phone),
            patient_session: patient.session.clone(),
            doctor_id: doctor.user_id,
            receivers: vec![
                (Arc::new(desk), doctor.session.clone()),
                (Arc::new(pager), doctor.session),
                (Arc::new(tablet), patient.session),
            ],
            _dirs: dirs,
        });
    }
    println!(
        "set-up: {conversation_count} conversations of 2 users x 2 devices (linked) in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    // 1. First contact (also warms connections and caches for the phases after it).
    let first = messaging(&conversations, 1, None).await;
    messaging(&conversations, 2, None).await;

    let floor_messages = env_number("BENCH_FLOOR_MESSAGES", 400).max(1);
    let floor = tokio::task::spawn_blocking(move || crypto_floor(floor_messages))
        .await
        .unwrap();
    let echo_max = echo(&mesh, conversation_count, per_task * 4, None).await;
    let cpu_before = process_cpu();
    let max = messaging(&conversations, per_task, None).await;
    // Everything in this process (SDK, all five services, SQLite) per message at the maximum rate.
    let cpu_per_message = cpu_before
        .zip(process_cpu())
        .map(|(before, after)| after.saturating_sub(before).as_secs_f64() * 1000.0 / max.count as f64);
    let half_rate = max.figures.rate / 2.0;
    let pace = Duration::from_secs_f64(conversation_count as f64 / half_rate);
    let half = messaging(&conversations, per_task, Some(pace)).await;
    let echo_half = echo(&mesh, conversation_count, per_task, Some(pace)).await;

    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let goal = if matches!(backend, Backend::Sqlite) { 0.20 } else { 0.15 };
    let share = max.figures.rate / echo_max.rate;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let (max, half, first) = (max.figures, half.figures, first.figures);
    println!();
    println!(
        "messaging benchmark (protocol v2) on {} ({conversation_count} conversations x {per_task} messages of 1 KB, \
         each delivered to 3 devices)",
        backend.name()
    );
    println!(
        "  bare tonic unary (same TLS), max     {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        echo_max.rate,
        ms(echo_max.p50),
        ms(echo_max.p99)
    );
    println!(
        "  first contact (PQXDH x3 + message)   {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        first.rate,
        ms(first.p50),
        ms(first.p99)
    );
    println!(
        "  steady state send->3 devices, max    {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        max.rate,
        ms(max.p50),
        ms(max.p99)
    );
    if let Some(cpu) = cpu_per_message {
        println!("  CPU per message at max (whole process: SDK on 4 devices, services, database) {cpu:.2} ms");
    }
    println!(
        "  steady state at half max rate        {:>8.0} msg/s   p50 {:>6.2} ms   p99 {:>6.2} ms   goal p99 < 25 ms: {}",
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
        "  crypto floor, no network ({} threads) {:>8.0} msg/s   = {:.1} % of the echo (3 ratchet messages + archive copy; \
         one PQXDH handshake with its first message {:.0} us)",
        floor.threads,
        floor.rate,
        floor.rate / echo_max.rate * 100.0,
        floor.handshake_us
    );
    println!(
        "  steady state / echo rate             {:>8.1} %       goal >= {:.0} %: {}",
        share * 100.0,
        goal * 100.0,
        verdict(share >= goal)
    );
    println!(
        "  steady state / crypto floor          {:>8.1} %",
        max.rate / floor.rate * 100.0
    );
    drop(conversations);
    mesh.shutdown().await;
}
