//! The load itself: worker tasks in a closed loop (draw an operation by the mix, run it through
//! the SDK, time it, draw again) until a deadline, a task that keeps every session's access token
//! fresh, and a progress line on stderr every second.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use caremesh_proto::audit::v1 as audit_pb;
use caremesh_sdk::auth::{Code, LoginStep, Session};
use caremesh_sdk::messaging::Messenger;
use caremesh_sdk::records::NewRecord;
use caremesh_sdk::{Client, SdkError};
use tokio_util::sync::CancellationToken;

use crate::login::{Next, Rotation, TotpClock, Turn, totp_code};
use crate::mix::{Mix, Op, Rng};
use crate::stats::{OpStats, error_kind};
use crate::users::Account;
use crate::{lock, read, write};

/// The policy every record is written under.
pub const RECORD_POLICY: &str = r#""role:doctor" and "dept:cardiology""#;
/// What every record holds.
pub const OBSERVATION: &[u8] = br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},"valueQuantity":{"value":72,"unit":"/min"}}"#;
/// Records kept for reads; later writes replace a random one.
const MAX_RECORDS: usize = 20_000;

/// One simulated person: credentials for the login rotation, a session kept fresh, a device.
pub(crate) struct Actor {
    pub account: Account,
    pub session: RwLock<Session>,
    pub messenger: Option<Messenger>,
    pub _dir: Option<tempfile::TempDir>,
}

impl Actor {
    /// `device`: with its own messaging device (its own keys, its own connections).
    pub async fn new(client: Client, account: Account, device: bool) -> Result<Self, SdkError> {
        let (messenger, dir) = if device {
            let dir = tempfile::tempdir()
                .map_err(|error| SdkError::Local(format!("a temporary directory for device keys: {error}")))?;
            let messenger = Messenger::open(client, dir.path(), "default", &account.session).await?;
            (Some(messenger), Some(dir))
        } else {
            (None, None)
        };
        Ok(Self {
            session: RwLock::new(account.session.clone()),
            account,
            messenger,
            _dir: dir,
        })
    }

    pub fn session(&self) -> Session {
        read(&self.session).clone()
    }

    pub fn messenger(&self) -> Result<&Messenger, SdkError> {
        self.messenger
            .as_ref()
            .ok_or_else(|| SdkError::Local(format!("{} has no device", self.account.username)))
    }
}

/// Everything the workers share.
pub(crate) struct Shared {
    pub client: Client,
    pub clock: Arc<dyn TotpClock>,
    pub patients: Vec<Actor>,
    pub doctors: Vec<Actor>,
    pub auditor: Actor,
    pub records: RwLock<Vec<(String, usize)>>,
    pub rotation: Mutex<Rotation>,
    pub body: Vec<u8>,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub error_samples: Mutex<HashSet<String>>,
}

fn pick<'a, T>(items: &'a [T], rng: &mut Rng, what: &str) -> Result<&'a T, SdkError> {
    items
        .get(rng.below(items.len()))
        .ok_or_else(|| SdkError::Local(format!("no {what} to pick from")))
}

impl Shared {
    /// Everyone in the login rotation: patients, doctors, the auditor.
    pub fn all(&self) -> impl Iterator<Item = &Actor> {
        self.patients
            .iter()
            .chain(self.doctors.iter())
            .chain(std::iter::once(&self.auditor))
    }

    fn login_user(&self, index: usize) -> Option<&Actor> {
        self.all().nth(index)
    }

    /// A login turn: waits (untimed) while a movable clock catches up; `None` when every user has
    /// logged in during this step of real time.
    async fn next_login(&self) -> Option<Turn<'_>> {
        loop {
            let next = lock(&self.rotation).try_next(self.clock.as_ref());
            match next {
                Next::Turn { index, step } => return Some(Turn::new(&self.rotation, index, step)),
                Next::Unavailable => return None,
                Next::Wait => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    /// A doctor writes an Observation for patient `patient_index`.
    pub async fn write_record(&self, doctor: &Actor, patient_index: usize) -> Result<String, SdkError> {
        let patient = self
            .patients
            .get(patient_index)
            .ok_or_else(|| SdkError::Local("no such patient".to_owned()))?;
        let record = doctor
            .messenger()?
            .create_record(
                &doctor.session(),
                NewRecord {
                    patient_id: &patient.account.user_id,
                    kind: "Observation",
                    policy: RECORD_POLICY,
                    content: OBSERVATION,
                },
            )
            .await?;
        Ok(record.record_id)
    }
}

/// What a worker did with one draw.
enum Outcome {
    Done,
    /// A login was drawn but no user had an unused TOTP step (real time): not run, not timed.
    Skipped,
}

/// Runs one operation; `started` is reset after waiting for a login turn (a limit of TOTP, not
/// of the mesh).
async fn execute(shared: &Shared, op: Op, rng: &mut Rng, started: &mut Instant) -> Result<Outcome, SdkError> {
    match op {
        Op::Login => {
            let Some(turn) = shared.next_login().await else {
                return Ok(Outcome::Skipped);
            };
            *started = Instant::now();
            let actor = shared
                .login_user(turn.index)
                .ok_or_else(|| SdkError::Local("no such user".to_owned()))?;
            let code = totp_code(&actor.account.totp_secret, turn.step)?;
            let step = shared
                .client
                .login(&actor.account.username, &actor.account.password)
                .await?;
            let LoginStep::SecondFactor { challenge } = step else {
                return Err(SdkError::Local(
                    "the password step did not ask for a second factor".to_owned(),
                ));
            };
            shared.client.complete_login(&challenge, Code::Totp(code)).await?;
            drop(turn);
        }
        Op::Message => {
            let patient = pick(&shared.patients, rng, "patient")?;
            let doctor = pick(&shared.doctors, rng, "doctor")?;
            let (from, to) = if rng.coin() {
                (patient, doctor)
            } else {
                (doctor, patient)
            };
            from.messenger()?
                .send(&from.session(), &to.account.user_id, &shared.body, None)
                .await?;
        }
        Op::RecordWrite => {
            let patient_index = rng.below(shared.patients.len());
            let doctor = pick(&shared.doctors, rng, "doctor")?;
            let record_id = shared.write_record(doctor, patient_index).await?;
            let mut records = write(&shared.records);
            if records.len() < MAX_RECORDS {
                records.push((record_id, patient_index));
            } else {
                let slot = rng.below(records.len());
                if let Some(entry) = records.get_mut(slot) {
                    *entry = (record_id, patient_index);
                }
            }
        }
        Op::RecordRead => {
            let (record_id, patient_index) = {
                let records = read(&shared.records);
                pick(&records, rng, "record")?.clone()
            };
            let reader = if rng.coin() {
                shared
                    .patients
                    .get(patient_index)
                    .ok_or_else(|| SdkError::Local("no such patient".to_owned()))?
            } else {
                pick(&shared.doctors, rng, "doctor")?
            };
            let opened = reader
                .messenger()?
                .read_record(&reader.session(), &record_id, 0)
                .await?;
            if opened.content.as_slice() != OBSERVATION {
                return Err(SdkError::Local("a record read back different content".to_owned()));
            }
        }
        Op::AuditQuery => {
            let patient = pick(&shared.patients, rng, "patient")?;
            shared
                .client
                .audit_query(
                    &shared.auditor.session(),
                    audit_pb::QueryEventsRequest {
                        page_size: 50,
                        patient_id: patient.account.user_id.clone(),
                        order: audit_pb::SortOrder::NewestFirst.into(),
                        ..audit_pb::QueryEventsRequest::default()
                    },
                )
                .await?;
        }
    }
    Ok(Outcome::Done)
}

async fn worker(shared: Arc<Shared>, mix: Arc<Mix>, seed: u64, deadline: Instant) -> BTreeMap<Op, OpStats> {
    let mut rng = Rng::new(seed);
    let mut stats: BTreeMap<Op, OpStats> = BTreeMap::new();
    while Instant::now() < deadline {
        let op = rng.pick(&mix);
        let mut started = Instant::now();
        let result = execute(&shared, op, &mut rng, &mut started).await;
        let elapsed = started.elapsed();
        match result {
            Ok(Outcome::Done) => {
                stats.entry(op).or_default().latencies.push(elapsed);
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Skipped) => {
                // A short pause, so a worker that keeps drawing unavailable logins does not spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => {
                let kind = error_kind(&error);
                if lock(&shared.error_samples).insert(format!("{} {kind}", op.name())) {
                    eprintln!("  first {kind} error on {}: {error}", op.name());
                }
                *stats.entry(op).or_default().errors.entry(kind).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    stats
}

/// Keeps every session's access token valid on the mesh's clock (a moved clock ages them).
async fn refresher(shared: Arc<Shared>, stop: CancellationToken) -> u64 {
    let mut refreshed = 0;
    while !stop.is_cancelled() {
        let now = shared.clock.now();
        for actor in shared.all() {
            let session = actor.session();
            if session.expires_within(now, chrono::TimeDelta::minutes(5)) {
                match shared.client.refresh(&session).await {
                    Ok(fresh) => {
                        *write(&actor.session) = fresh;
                        refreshed += 1;
                    }
                    Err(error) => eprintln!("  refresh failed for {}: {error}", actor.account.username),
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
            done.saturating_sub(last)
        );
        last = done;
    }
}

/// One timed phase.
pub(crate) struct Phase {
    pub elapsed: Duration,
    pub stats: BTreeMap<Op, OpStats>,
    pub refreshed: u64,
}

/// `workers` tasks for `seconds`, with the refresher and (if `show_progress`) the progress line.
pub(crate) async fn load(
    shared: &Arc<Shared>,
    mix: &Mix,
    label: &str,
    workers: usize,
    seconds: u64,
    show_progress: bool,
) -> Result<Phase, tokio::task::JoinError> {
    shared.done.store(0, Ordering::Relaxed);
    shared.failed.store(0, Ordering::Relaxed);
    let stop = CancellationToken::new();
    let refresh = tokio::spawn(refresher(Arc::clone(shared), stop.clone()));
    let ticker =
        show_progress.then(|| tokio::spawn(progress(Arc::clone(shared), label.to_owned(), seconds, stop.clone())));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mix = Arc::new(mix.clone());
    let tasks: Vec<_> = (0..workers)
        .map(|index| tokio::spawn(worker(Arc::clone(shared), Arc::clone(&mix), index as u64 + 1, deadline)))
        .collect();
    let mut stats: BTreeMap<Op, OpStats> = BTreeMap::new();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(part) => {
                for (op, part) in part {
                    stats.entry(op).or_default().merge(part);
                }
            }
            Err(error) => failure = Some(error),
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    let refreshed = refresh.await?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Phase {
        elapsed,
        stats,
        refreshed,
    })
}
