//! The caremesh load generator (issue #8). Many simulated patients and doctors and one auditor
//! drive a running mesh through the SDK over mTLS, as people do, in a configurable mix of
//! operations ([`mix::Op`]: logins, 1:1 messages, record writes and reads, audit queries) for a
//! fixed time, with a progress line on stderr. [`run`] returns a [`Report`]: per operation
//! throughput, p50/p99/p999 latency and errors by code; a bare tonic unary echo measured in the
//! same run with the same TLS configuration (the baseline, [`echo`]); and the peak memory of the
//! services' processes ([`memory`]).
//!
//! What differs between the two ways of running it is a [`Target`]:
//! - `caremesh bench` drives a mesh started by `caremesh up` (or the service binaries): real
//!   time, the bootstrap admin, the dev PKI under the data directory, memory read from the
//!   services' processes ([`mesh::running_mesh`]);
//! - the mesh benchmark (`cargo bench -p caremesh-testkit --bench mesh`) drives the test kit's
//!   mesh in its own process on a manual clock, so its memory figure includes the load generator.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use caremesh_sdk::auth::Session;
use caremesh_sdk::{Client, ConnectOptions, SdkError};
use futures::{StreamExt, TryStreamExt};

pub mod echo;
pub mod login;
pub mod memory;
pub mod mesh;
pub mod mix;
pub mod report;
pub mod stats;
pub mod users;

mod driver;

pub use driver::{OBSERVATION, RECORD_POLICY};
pub use echo::{EchoFigures, EchoServer, EchoTls};
pub use login::{SystemTotpClock, TotpClock};
pub use memory::{MemoryProbe, Pid, Process};
pub use mix::{DEFAULT_MIX, Mix, Op};
pub use report::Report;

use crate::driver::{Actor, Shared};
use crate::login::Rotation;
use crate::users::Provisioner;

/// The attributes every simulated doctor is approved with.
pub const DOCTOR_ATTRIBUTES: &[&str] = &["dept:cardiology"];

/// A mesh to drive, and how to drive it.
#[derive(Clone)]
pub struct Target {
    /// Names the run in the table and the progress line (`sqlite`, `caremesh up`, ...).
    pub label: String,
    /// Endpoints, CA and (optionally) a client certificate: every simulated device connects
    /// with its own [`Client`] from these.
    pub connect: ConnectOptions,
    /// An admin session, to approve doctors and create the auditor.
    pub admin: Session,
    /// The time the mesh checks TOTP codes against.
    pub clock: Arc<dyn TotpClock>,
    /// How the services' memory is read.
    pub memory: MemoryProbe,
    /// The TLS of the echo baseline (the same configuration as the mesh).
    pub echo: EchoTls,
    /// Prefix of every username this run creates (unique per run).
    pub prefix: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .field("connect", &self.connect)
            .field("memory", &self.memory)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How much load, for how long.
#[derive(Clone, Debug)]
pub struct Settings {
    pub patients: usize,
    pub doctors: usize,
    /// Concurrent worker tasks (a closed loop each: no pacing).
    pub workers: usize,
    pub seconds: u64,
    pub warmup_seconds: u64,
    pub echo_seconds: u64,
    pub mix: Mix,
    /// A progress line on stderr every second.
    pub progress: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            patients: 24,
            doctors: 8,
            workers: 32,
            seconds: 20,
            warmup_seconds: 3,
            echo_seconds: 5,
            mix: Mix::default(),
            progress: true,
        }
    }
}

/// Why a run could not complete (errors of single operations are counted, not returned).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what}: {source}")]
    Sdk {
        what: &'static str,
        #[source]
        source: SdkError,
    },
    #[error(transparent)]
    Echo(#[from] echo::EchoError),
    #[error("a load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Setup(String),
}

fn context(what: &'static str) -> impl Fn(SdkError) -> LoadError {
    move |source| LoadError::Sdk { what, source }
}

/// Creates the users, seeds one record per patient, warms up, then runs the load and the echo
/// baseline, measuring the services' memory around the load.
pub async fn run(target: &Target, settings: &Settings) -> Result<Report, LoadError> {
    let label = target.label.as_str();
    let patients = settings.patients.max(1);
    let doctors = settings.doctors.max(1);
    let workers = settings.workers.max(1);
    let setup_started = Instant::now();
    eprintln!(
        "[{label}] creating {patients} patients, {doctors} doctors and 1 auditor (username prefix {})",
        target.prefix
    );
    let client = Client::connect(&target.connect).map_err(context("connecting"))?;
    let provisioner = Provisioner {
        client: &client,
        admin: &target.admin,
        clock: target.clock.as_ref(),
        prefix: &target.prefix,
    };
    let device = || Client::connect(&target.connect).map_err(context("connecting a device"));
    // A few at a time: each user costs several Argon2id hashes.
    let provisioner = &provisioner;
    let patient_actors: Vec<Actor> = futures::stream::iter(0..patients)
        .map(|index| async move {
            let account = provisioner
                .patient(index)
                .await
                .map_err(context("creating a patient"))?;
            Actor::new(device()?, account, true)
                .await
                .map_err(context("opening a patient's device"))
        })
        .buffered(4)
        .try_collect()
        .await?;
    let doctor_actors: Vec<Actor> = futures::stream::iter(0..doctors)
        .map(|index| async move {
            let account = provisioner
                .doctor(index, DOCTOR_ATTRIBUTES)
                .await
                .map_err(context("creating a doctor"))?;
            Actor::new(device()?, account, true)
                .await
                .map_err(context("opening a doctor's device"))
        })
        .buffered(4)
        .try_collect()
        .await?;
    let auditor = provisioner.auditor().await.map_err(context("creating the auditor"))?;
    let auditor = Actor::new(device()?, auditor, false)
        .await
        .map_err(context("the auditor"))?;
    let last_steps = patient_actors
        .iter()
        .chain(doctor_actors.iter())
        .chain(std::iter::once(&auditor))
        .map(|actor| actor.account.last_step)
        .collect();
    let shared = Arc::new(Shared {
        client,
        clock: Arc::clone(&target.clock),
        patients: patient_actors,
        doctors: doctor_actors,
        auditor,
        records: RwLock::new(Vec::new()),
        rotation: Mutex::new(Rotation::new(last_steps)),
        body: vec![b'm'; 1024],
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        error_samples: Mutex::new(Default::default()),
    });
    // One record per patient, so reads have something to read from the start.
    let seeded: Vec<(String, usize)> = futures::stream::iter(0..patients)
        .map(|index| {
            let shared = Arc::clone(&shared);
            async move {
                let doctor = shared
                    .doctors
                    .get(index % shared.doctors.len())
                    .ok_or_else(|| LoadError::Setup("no doctor".to_owned()))?;
                let record_id = shared
                    .write_record(doctor, index)
                    .await
                    .map_err(context("seeding a record"))?;
                Ok::<_, LoadError>((record_id, index))
            }
        })
        .buffered(4)
        .try_collect()
        .await?;
    write(&shared.records).extend(seeded);
    let setup = setup_started.elapsed();
    eprintln!(
        "[{label}] setup took {:.1} s; warm-up {} s",
        setup.as_secs_f64(),
        settings.warmup_seconds
    );
    if settings.warmup_seconds > 0 {
        // No logins in the warm-up: on real time they would spend the users' current TOTP
        // step, and a measured run shorter than a step would then have none.
        let warmup_mix = settings.mix.without(Op::Login).unwrap_or_else(|| settings.mix.clone());
        let warmup = driver::load(
            &shared,
            &warmup_mix,
            &format!("{label} warm-up"),
            workers,
            settings.warmup_seconds,
            settings.progress,
        )
        .await?;
        let errors: u64 = warmup.stats.values().map(stats::OpStats::error_count).sum();
        if errors > 0 {
            eprintln!("[{label}] warm-up: {errors} errors (not counted in the results)");
        }
    }
    lock(&shared.error_samples).clear();

    let mut memory = target.memory.after_setup();
    let (advances_before, waits_before, unavailable_before) = {
        let rotation = lock(&shared.rotation);
        (rotation.advances, rotation.waits, rotation.unavailable)
    };
    eprintln!(
        "[{label}] load: {workers} workers for {} s, mix {}",
        settings.seconds, settings.mix
    );
    let phase = driver::load(
        &shared,
        &settings.mix,
        label,
        workers,
        settings.seconds.max(1),
        settings.progress,
    )
    .await?;
    target.memory.after_load(&mut memory);
    let logins = {
        let rotation = lock(&shared.rotation);
        report::LoginRationing {
            movable_clock: target.clock.movable(),
            clock_advances: rotation.advances - advances_before,
            waits: rotation.waits - waits_before,
            unavailable: rotation.unavailable - unavailable_before,
        }
    };
    eprintln!(
        "[{label}] echo baseline: {workers} tasks for {} s",
        settings.echo_seconds.max(1)
    );
    let echo = echo::drive(&target.echo, workers, settings.echo_seconds.max(1)).await?;
    let (operations, total) = Report::summarize(&phase.stats, phase.elapsed);
    Ok(Report {
        label: label.to_owned(),
        patients,
        doctors,
        workers,
        mix: settings.mix.clone(),
        elapsed: phase.elapsed,
        operations,
        total,
        echo,
        memory_scope: target.memory.scope.clone(),
        memory,
        logins,
        session_refreshes: phase.refreshed,
        setup,
    })
}

/// Writes `value` as pretty JSON to `path`, creating its directory.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// A default JSON path: `$CARGO_TARGET_DIR/<name>` or `target/<name>` under `workspace`.
pub fn target_dir_file(workspace: &std::path::Path, name: &str) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"))
        .join(name)
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
