//! Mesh load benchmark (issue #8). Starts the five real services in this process (the test kit:
//! real mTLS, a temporary PKI, a fresh database) and drives them through the SDK with many
//! simulated patients and doctors and one auditor, in a configurable mix, for a fixed time:
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
//! a login rotation: within one 30 s step each user logs in at most once; when every user has had
//! its turn the clock moves on 30 s. That ages access tokens, so a background task refreshes every
//! session that expires within 5 minutes of the mesh clock.
//!
//! Run: `cargo bench -p caremesh-testkit --bench mesh` (SQLite, and PostgreSQL as well when
//! `CAREMESH_TEST_DATABASE_URL` is set). Settings (environment): `BENCH_PATIENTS` (24),
//! `BENCH_DOCTORS` (8), `BENCH_WORKERS` (32), `BENCH_SECONDS` (20), `BENCH_WARMUP_SECONDS` (3),
//! `BENCH_ECHO_SECONDS` (5), `BENCH_MIX` (`login=1,message=5,record_write=2,record_read=4,audit_query=1`),
//! `BENCH_BACKENDS` (`sqlite`, `postgres` or both, default: every backend available),
//! `BENCH_JSON` (output path).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use caremesh_proto::audit::v1 as audit_pb;
use caremesh_runtime::clock::{Clock, ManualClock};
use caremesh_sdk::SdkError;
use caremesh_sdk::auth::{Code, LoginStep, Role, Session};
use caremesh_sdk::messaging::Messenger;
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::echo::EchoServer;
use caremesh_testkit::{Backend, TestMesh, TestUser, backends, totp_code};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const DEFAULT_MIX: &str = "login=1,message=5,record_write=2,record_read=4,audit_query=1";
const RECORD_POLICY: &str = r#""role:doctor" and "dept:cardiology""#;
const OBSERVATION: &[u8] = br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},"valueQuantity":{"value":72,"unit":"/min"}}"#;
/// Records kept for reads; later writes replace a random one.
const MAX_RECORDS: usize = 20_000;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Op {
    Login,
    Message,
    RecordWrite,
    RecordRead,
    AuditQuery,
}

const OPS: [Op; 5] = [Op::Login, Op::Message, Op::RecordWrite, Op::RecordRead, Op::AuditQuery];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Message => "message",
            Op::RecordWrite => "record_write",
            Op::RecordRead => "record_read",
            Op::AuditQuery => "audit_query",
        }
    }
}

/// `login=1,message=5,...`: relative weights; operations not named get weight 0.
fn parse_mix(text: &str) -> Vec<(Op, u32)> {
    let mut mix: Vec<(Op, u32)> = OPS.iter().map(|op| (*op, 0)).collect();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .unwrap_or_else(|| panic!("BENCH_MIX: {part:?} is not name=weight"));
        let op = OPS.iter().find(|op| op.name() == name.trim()).unwrap_or_else(|| {
            panic!(
                "BENCH_MIX: unknown operation {name:?} (known: {})",
                OPS.map(Op::name).join(", ")
            )
        });
        let weight: u32 = weight
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("BENCH_MIX: weight {weight:?} is not a whole number"));
        mix.iter_mut().find(|(o, _)| o == op).unwrap().1 = weight;
    }
    assert!(
        mix.iter().any(|(_, weight)| *weight > 0),
        "BENCH_MIX has no operation with a weight"
    );
    mix
}

fn mix_text(mix: &[(Op, u32)]) -> String {
    mix.iter()
        .map(|(op, weight)| format!("{}={weight}", op.name()))
        .collect::<Vec<_>>()
        .join(",")
}

/// xorshift64*: enough to pick operations and users without another dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn pick(&mut self, mix: &[(Op, u32)]) -> Op {
        let total: u32 = mix.iter().map(|(_, weight)| weight).sum();
        let mut ticket = (self.next() % u64::from(total)) as u32;
        for (op, weight) in mix {
            if ticket < *weight {
                return *op;
            }
            ticket -= weight;
        }
        mix[0].0
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (Linux >= 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_owned(), |kib| format!("{:.0} MiB", kib as f64 / 1024.0))
}

/// One simulated person: credentials for the login rotation, a session kept fresh, a device.
struct Actor {
    user: TestUser,
    session: RwLock<Session>,
    messenger: Option<Messenger>,
    _dir: Option<tempfile::TempDir>,
}

impl Actor {
    fn session(&self) -> Session {
        self.session.read().unwrap().clone()
    }
}

/// Hands out (user, TOTP code) so that auth-svc never sees a replayed step: each user gets at
/// most one turn per 30 s step and has at most one login in flight (so its logins complete in
/// step order); when every user has had its turn the clock moves on 30 s, but only once no login
/// handed out in the previous step is still in flight (a code is accepted one step late, not two).
struct LoginRotation {
    clock: ManualClock,
    next: usize,
    step: u64,
    busy: Vec<bool>,
    in_flight_current: usize,
    in_flight_previous: usize,
    advances: u64,
    waits: u64,
}

/// A login handed out by the rotation; gives the user back when dropped.
struct LoginTurn<'a> {
    shared: &'a Shared,
    index: usize,
    step: u64,
    code: String,
}

impl Drop for LoginTurn<'_> {
    fn drop(&mut self) {
        let mut rotation = self.shared.rotation.lock().unwrap();
        rotation.busy[self.index] = false;
        if self.step == rotation.step {
            rotation.in_flight_current -= 1;
        } else if self.step + 1 == rotation.step {
            rotation.in_flight_previous -= 1;
        }
    }
}

struct Shared {
    client: caremesh_sdk::Client,
    patients: Vec<Actor>,
    doctors: Vec<Actor>,
    auditor: Actor,
    records: RwLock<Vec<(String, usize)>>,
    rotation: Mutex<LoginRotation>,
    mix: Vec<(Op, u32)>,
    body: Vec<u8>,
    done: AtomicU64,
    failed: AtomicU64,
    error_samples: Mutex<HashSet<String>>,
}

impl Shared {
    fn login_users(&self) -> usize {
        self.patients.len() + self.doctors.len() + 1
    }

    fn login_user(&self, index: usize) -> &Actor {
        if index < self.patients.len() {
            &self.patients[index]
        } else if index < self.patients.len() + self.doctors.len() {
            &self.doctors[index - self.patients.len()]
        } else {
            &self.auditor
        }
    }

    fn all(&self) -> impl Iterator<Item = &Actor> {
        self.patients
            .iter()
            .chain(self.doctors.iter())
            .chain(std::iter::once(&self.auditor))
    }

    /// The next user's turn, waiting (outside the lock) while the rotation cannot hand one out.
    async fn next_login(&self) -> LoginTurn<'_> {
        loop {
            if let Some(turn) = self.try_login() {
                return turn;
            }
            self.rotation.lock().unwrap().waits += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn try_login(&self) -> Option<LoginTurn<'_>> {
        let mut rotation = self.rotation.lock().unwrap();
        loop {
            while rotation.next < self.login_users() && rotation.busy[rotation.next] {
                rotation.next += 1;
            }
            if rotation.next < self.login_users() {
                break;
            }
            if rotation.in_flight_previous > 0 {
                return None;
            }
            rotation.clock.advance(chrono::TimeDelta::seconds(30));
            rotation.step = caremesh_runtime::clock::Clock::now(&rotation.clock).timestamp() as u64 / 30;
            rotation.in_flight_previous = rotation.in_flight_current;
            rotation.in_flight_current = 0;
            rotation.advances += 1;
            rotation.next = 0;
            if rotation.busy.iter().all(|busy| *busy) {
                return None;
            }
        }
        let index = rotation.next;
        rotation.next += 1;
        rotation.busy[index] = true;
        rotation.in_flight_current += 1;
        let code = totp_code(&self.login_user(index).user.totp_secret, rotation.clock.now());
        Some(LoginTurn {
            shared: self,
            index,
            step: rotation.step,
            code,
        })
    }
}

fn error_kind(error: &SdkError) -> String {
    match (error.code(), error) {
        (Some(code), _) => format!("{code:?}"),
        (None, SdkError::Local(_)) => "local".to_owned(),
        (None, SdkError::Protocol(_)) => "protocol".to_owned(),
        (None, SdkError::Tls(_)) => "tls".to_owned(),
        (None, _) => "other".to_owned(),
    }
}

/// Runs one operation; `started` is reset when the operation had to wait for the login rotation
/// (a limit of the bench's manual clock, not of the mesh).
async fn execute(shared: &Shared, op: Op, rng: &mut Rng, started: &mut Instant) -> Result<(), SdkError> {
    match op {
        Op::Login => {
            let turn = shared.next_login().await;
            *started = Instant::now();
            let actor = shared.login_user(turn.index);
            let step = shared.client.login(&actor.user.username, &actor.user.password).await?;
            let LoginStep::SecondFactor { challenge } = step else {
                return Err(SdkError::Local(
                    "the password step did not ask for a second factor".to_owned(),
                ));
            };
            shared
                .client
                .complete_login(&challenge, Code::Totp(turn.code.clone()))
                .await?;
        }
        Op::Message => {
            let patient = &shared.patients[rng.below(shared.patients.len())];
            let doctor = &shared.doctors[rng.below(shared.doctors.len())];
            let (from, to) = if rng.coin() {
                (patient, doctor)
            } else {
                (doctor, patient)
            };
            from.messenger
                .as_ref()
                .unwrap()
                .send(&from.session(), &to.user.user_id, &shared.body, None)
                .await?;
        }
        Op::RecordWrite => {
            let patient_index = rng.below(shared.patients.len());
            let doctor = &shared.doctors[rng.below(shared.doctors.len())];
            let record = doctor
                .messenger
                .as_ref()
                .unwrap()
                .create_record(
                    &doctor.session(),
                    NewRecord {
                        patient_id: &shared.patients[patient_index].user.user_id,
                        kind: "Observation",
                        policy: RECORD_POLICY,
                        content: OBSERVATION,
                    },
                )
                .await?;
            let mut records = shared.records.write().unwrap();
            if records.len() < MAX_RECORDS {
                records.push((record.record_id, patient_index));
            } else {
                let slot = rng.below(records.len());
                records[slot] = (record.record_id, patient_index);
            }
        }
        Op::RecordRead => {
            let (record_id, patient_index) = {
                let records = shared.records.read().unwrap();
                records[rng.below(records.len())].clone()
            };
            let reader = if rng.coin() {
                &shared.patients[patient_index]
            } else {
                &shared.doctors[rng.below(shared.doctors.len())]
            };
            let opened = reader
                .messenger
                .as_ref()
                .unwrap()
                .read_record(&reader.session(), &record_id, 0)
                .await?;
            if opened.content.as_slice() != OBSERVATION {
                return Err(SdkError::Local("a record read back different content".to_owned()));
            }
        }
        Op::AuditQuery => {
            let patient = &shared.patients[rng.below(shared.patients.len())];
            shared
                .client
                .audit_query(
                    &shared.auditor.session(),
                    audit_pb::QueryEventsRequest {
                        page_size: 50,
                        patient_id: patient.user.user_id.clone(),
                        order: audit_pb::SortOrder::NewestFirst.into(),
                        ..audit_pb::QueryEventsRequest::default()
                    },
                )
                .await?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct OpStats {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

async fn worker(shared: Arc<Shared>, seed: u64, deadline: Instant) -> BTreeMap<Op, OpStats> {
    let mut rng = Rng::new(seed);
    let mut stats: BTreeMap<Op, OpStats> = BTreeMap::new();
    while Instant::now() < deadline {
        let op = rng.pick(&shared.mix);
        let mut started = Instant::now();
        let result = execute(&shared, op, &mut rng, &mut started).await;
        let elapsed = started.elapsed();
        let entry = stats.entry(op).or_default();
        match result {
            Ok(()) => {
                entry.latencies.push(elapsed);
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                let kind = error_kind(&error);
                if shared
                    .error_samples
                    .lock()
                    .unwrap()
                    .insert(format!("{} {kind}", op.name()))
                {
                    eprintln!("  first {kind} error on {}: {error}", op.name());
                }
                *entry.errors.entry(kind).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    stats
}

/// Keeps every session's access token valid on the mesh clock (logins move that clock on).
async fn refresher(shared: Arc<Shared>, clock: ManualClock, stop: CancellationToken) -> u64 {
    let mut refreshed = 0;
    while !stop.is_cancelled() {
        let now = clock.now();
        for actor in shared.all() {
            let session = actor.session();
            if session.expires_within(now, chrono::TimeDelta::minutes(5)) {
                match shared.client.refresh(&session).await {
                    Ok(fresh) => {
                        *actor.session.write().unwrap() = fresh;
                        refreshed += 1;
                    }
                    Err(error) => eprintln!("  refresh failed for {}: {error}", actor.user.username),
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    refreshed
}

/// A progress line on stderr every second.
async fn progress(shared: Arc<Shared>, label: String, seconds: u64, stop: CancellationToken) {
    let started = Instant::now();
    let mut last = shared.done.load(Ordering::Relaxed);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let done = shared.done.load(Ordering::Relaxed);
        eprintln!(
            "  [{label}] {:>3.0}/{seconds} s  ops {done:>7}  errors {:>5}  now {:>6} ops/s",
            started.elapsed().as_secs_f64(),
            shared.failed.load(Ordering::Relaxed),
            done - last
        );
        last = done;
    }
}

struct Phase {
    elapsed: Duration,
    stats: BTreeMap<Op, OpStats>,
    refreshed: u64,
}

async fn load(shared: &Arc<Shared>, clock: &ManualClock, label: &str, workers: usize, seconds: u64) -> Phase {
    shared.done.store(0, Ordering::Relaxed);
    shared.failed.store(0, Ordering::Relaxed);
    let stop = CancellationToken::new();
    let refresh = tokio::spawn(refresher(Arc::clone(shared), clock.clone(), stop.clone()));
    let ticker = tokio::spawn(progress(Arc::clone(shared), label.to_owned(), seconds, stop.clone()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..workers)
        .map(|index| tokio::spawn(worker(Arc::clone(shared), index as u64 + 1, deadline)))
        .collect();
    let mut stats: BTreeMap<Op, OpStats> = BTreeMap::new();
    for task in tasks {
        for (op, part) in task.await.unwrap() {
            let entry = stats.entry(op).or_default();
            entry.latencies.extend(part.latencies);
            for (kind, count) in part.errors {
                *entry.errors.entry(kind).or_default() += count;
            }
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    let _ = ticker.await;
    let refreshed = refresh.await.unwrap();
    Phase {
        elapsed,
        stats,
        refreshed,
    }
}

struct Echo {
    count: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

/// The bare baseline: tonic's health service (a unary call with a 1 KB request) served through
/// the same rustls server config and accept loop as the services, called like the SDK calls,
/// from `tasks` concurrent tasks for `seconds` (as in the messaging bench).
async fn echo(mesh: &TestMesh, tasks: usize, seconds: u64) -> Echo {
    let echo = EchoServer::start(mesh, 200).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let mut client = echo.client();
            let request = echo.request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    client.check(request.clone()).await.unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.unwrap());
    }
    let elapsed = started.elapsed();
    echo.stop().await;
    latencies.sort();
    Echo {
        count: latencies.len(),
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
    }
}

async fn actor(mesh: &TestMesh, user: TestUser, device: bool) -> Actor {
    let (messenger, dir) = if device {
        let dir = tempfile::tempdir().unwrap();
        let messenger = Messenger::open(mesh.sdk(), dir.path(), "default", &user.session)
            .await
            .unwrap();
        (Some(messenger), Some(dir))
    } else {
        (None, None)
    };
    Actor {
        session: RwLock::new(user.session.clone()),
        user,
        messenger,
        _dir: dir,
    }
}

fn json_path() -> PathBuf {
    if let Ok(path) = std::env::var("BENCH_JSON") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    target.join("bench-mesh.json")
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name")
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines().find_map(|line| {
            line.strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
    });
    json!({
        "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "cpu_model": cpu,
        "memory_kib": memory_kib,
        "os": std::env::consts::OS,
    })
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
                "machine": machine(),
                "backends": results,
            });
            let path = json_path();
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
            eprintln!("wrote {}", path.display());
        }
    });
}

async fn run(backend: &Backend) -> serde_json::Value {
    let patients = env_number("BENCH_PATIENTS", 24).max(1);
    let doctors = env_number("BENCH_DOCTORS", 8).max(1);
    let workers = env_number("BENCH_WORKERS", 32).max(1);
    let seconds = env_number("BENCH_SECONDS", 20).max(1) as u64;
    let warmup = env_number("BENCH_WARMUP_SECONDS", 3) as u64;
    let echo_seconds = env_number("BENCH_ECHO_SECONDS", 5).max(1) as u64;
    let mix = parse_mix(&std::env::var("BENCH_MIX").unwrap_or_else(|_| DEFAULT_MIX.to_owned()));
    let label = backend.name();

    let rss_before = proc_status_kib("VmRSS");
    let setup_started = Instant::now();
    eprintln!("[{label}] starting the mesh and creating {patients} patients, {doctors} doctors, 1 auditor");
    let mesh = TestMesh::builder().backend(backend.clone()).start().await;
    mesh.admin().await;
    let mesh_ref = &mesh;
    // Users are created a few at a time (each costs several Argon2id hashes).
    let patient_actors: Vec<Actor> = futures::stream::iter(0..patients)
        .map(|_| async move { actor(mesh_ref, mesh_ref.patient().await, true).await })
        .buffered(4)
        .collect()
        .await;
    let doctor_actors: Vec<Actor> = futures::stream::iter(0..doctors)
        .map(|_| async move {
            let user = mesh_ref.staff(Role::Doctor, &["dept:cardiology"]).await;
            actor(mesh_ref, user, true).await
        })
        .buffered(4)
        .collect()
        .await;
    let auditor = actor(&mesh, mesh.created(Role::Auditor).await, false).await;
    let clock = mesh.clock().clone();
    let shared = Arc::new(Shared {
        client: mesh.sdk(),
        patients: patient_actors,
        doctors: doctor_actors,
        auditor,
        records: RwLock::new(Vec::new()),
        // Starts "exhausted": the first login moves the clock past the steps used at enrollment.
        rotation: Mutex::new(LoginRotation {
            clock: clock.clone(),
            next: usize::MAX,
            step: 0,
            busy: vec![false; patients + doctors + 1],
            in_flight_current: 0,
            in_flight_previous: 0,
            advances: 0,
            waits: 0,
        }),
        mix: mix.clone(),
        body: vec![b'm'; 1024],
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        error_samples: Mutex::new(HashSet::new()),
    });
    // One record per patient, so reads have something to read from the start.
    let seeded: Vec<(String, usize)> = futures::stream::iter(0..patients)
        .map(|index| {
            let shared = Arc::clone(&shared);
            async move {
                let doctor = &shared.doctors[index % shared.doctors.len()];
                let record = doctor
                    .messenger
                    .as_ref()
                    .unwrap()
                    .create_record(
                        &doctor.session(),
                        NewRecord {
                            patient_id: &shared.patients[index].user.user_id,
                            kind: "Observation",
                            policy: RECORD_POLICY,
                            content: OBSERVATION,
                        },
                    )
                    .await
                    .unwrap();
                (record.record_id, index)
            }
        })
        .buffered(4)
        .collect()
        .await;
    shared.records.write().unwrap().extend(seeded);
    let setup = setup_started.elapsed();
    eprintln!("[{label}] setup took {:.1} s; warm-up {warmup} s", setup.as_secs_f64());
    if warmup > 0 {
        load(&shared, &clock, &format!("{label} warm-up"), workers, warmup).await;
    }
    shared.error_samples.lock().unwrap().clear();

    let rss_after_setup = proc_status_kib("VmRSS");
    let peak_reset = reset_peak_rss();
    let (advances_before, waits_before) = {
        let rotation = shared.rotation.lock().unwrap();
        (rotation.advances, rotation.waits)
    };
    eprintln!(
        "[{label}] load: {workers} workers for {seconds} s, mix {}",
        mix_text(&mix)
    );
    let phase = load(&shared, &clock, label, workers, seconds).await;
    let peak_during_load = proc_status_kib("VmHWM");
    let (advances, waits) = {
        let rotation = shared.rotation.lock().unwrap();
        (rotation.advances - advances_before, rotation.waits - waits_before)
    };
    eprintln!("[{label}] echo baseline: {workers} tasks for {echo_seconds} s");
    let baseline = echo(&mesh, workers, echo_seconds).await;

    // The table.
    let elapsed = phase.elapsed.as_secs_f64();
    println!();
    println!(
        "mesh load benchmark on {label}: {patients} patients, {doctors} doctors, 1 auditor, {workers} workers, {:.1} s, mix {}",
        elapsed,
        mix_text(&mix)
    );
    println!(
        "  {:<14} {:>8} {:>9} {:>9} {:>9} {:>9}  errors",
        "operation", "count", "ops/s", "p50 ms", "p99 ms", "p999 ms"
    );
    let mut operations = serde_json::Map::new();
    let mut total_ok = 0usize;
    let mut total_errors = 0u64;
    let mut all_latencies = Vec::new();
    for op in OPS {
        let Some(stats) = phase.stats.get(&op) else {
            continue;
        };
        let mut latencies = stats.latencies.clone();
        latencies.sort();
        let errors: u64 = stats.errors.values().sum();
        total_ok += latencies.len();
        total_errors += errors;
        all_latencies.extend_from_slice(&latencies);
        let rate = latencies.len() as f64 / elapsed;
        let (p50, p99, p999) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
        );
        let error_text = if stats.errors.is_empty() {
            "-".to_owned()
        } else {
            stats
                .errors
                .iter()
                .map(|(kind, count)| format!("{kind}: {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  {:<14} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}  {error_text}",
            op.name(),
            latencies.len(),
            rate,
            ms(p50),
            ms(p99),
            ms(p999)
        );
        operations.insert(
            op.name().to_owned(),
            json!({
                "count": latencies.len(),
                "ops_per_second": rate,
                "p50_ms": ms(p50),
                "p99_ms": ms(p99),
                "p999_ms": ms(p999),
                "errors": stats.errors,
            }),
        );
    }
    all_latencies.sort();
    let total_rate = total_ok as f64 / elapsed;
    println!(
        "  {:<14} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}  {total_errors} errors",
        "all",
        total_ok,
        total_rate,
        ms(percentile(&all_latencies, 0.5)),
        ms(percentile(&all_latencies, 0.99)),
        ms(percentile(&all_latencies, 0.999))
    );
    println!(
        "  bare tonic unary echo, same TLS, {workers} tasks, 1 KB: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
        baseline.rate,
        ms(baseline.p50),
        ms(baseline.p99),
        ms(baseline.p999)
    );
    let ratio = total_rate / baseline.rate;
    println!("  mesh ops/s / echo ops/s: {:.2} %", ratio * 100.0);
    println!(
        "  memory (one process: the five services and the load generator): peak RSS during the load {}{}, RSS before the mesh started {}, after setup {}",
        mib(peak_during_load),
        if peak_reset {
            ""
        } else {
            " (peak since process start: VmHWM could not be reset)"
        },
        mib(rss_before),
        mib(rss_after_setup)
    );
    println!(
        "  setup {:.1} s; the mesh clock moved {advances} x 30 s for logins ({waits} 2 ms waits for a login turn, not timed); {} session refreshes",
        setup.as_secs_f64(),
        phase.refreshed
    );

    let result = json!({
        "backend": label,
        "patients": patients,
        "doctors": doctors,
        "auditors": 1,
        "workers": workers,
        "seconds": elapsed,
        "mix": mix_text(&mix),
        "operations": operations,
        "total": {
            "count": total_ok,
            "errors": total_errors,
            "ops_per_second": total_rate,
            "p50_ms": ms(percentile(&all_latencies, 0.5)),
            "p99_ms": ms(percentile(&all_latencies, 0.99)),
            "p999_ms": ms(percentile(&all_latencies, 0.999)),
        },
        "echo_baseline": {
            "tasks": workers,
            "seconds": echo_seconds,
            "count": baseline.count,
            "ops_per_second": baseline.rate,
            "p50_ms": ms(baseline.p50),
            "p99_ms": ms(baseline.p99),
            "p999_ms": ms(baseline.p999),
        },
        "mesh_to_echo_ratio": ratio,
        "memory": {
            "scope": "one process: the five services and the load generator",
            "peak_rss_during_load_kib": peak_during_load,
            "peak_reset_before_load": peak_reset,
            "rss_before_mesh_kib": rss_before,
            "rss_after_setup_kib": rss_after_setup,
        },
        "clock_advances": advances,
        "login_turn_waits": waits,
        "session_refreshes": phase.refreshed,
        "setup_seconds": setup.as_secs_f64(),
    });
    drop(shared);
    mesh.shutdown().await;
    result
}
