//! The client load the fault tests run while they break things: staff workers sending messages
//! and writing and reading records through the SDK, a login worker signing in with a password,
//! and the checks afterwards that every acknowledged operation happened exactly once, in the
//! service's own storage and in the audit log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caremesh_proto::audit::v1::AuditOutcome;
use caremesh_proto::messaging::v1 as msg_pb;
use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use caremesh_proto::records::v1 as rec_pb;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use caremesh_runtime::outbox::entity as outbox_entity;
use caremesh_sdk::SdkError;
use caremesh_sdk::auth::{LoginStep, Role, Session};
use caremesh_sdk::messaging::Messenger;
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::{Caller, Service, TestMesh, TestUser, eventually};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use tokio::task::JoinHandle;

pub const OBSERVATION: &[u8] =
    br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},"valueQuantity":{"value":72,"unit":"/min"}}"#;
const POLICY: &str = r#""role:doctor" and "dept:cardiology""#;

/// What a client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Send,
    CreateRecord,
    ReadRecord,
    Login,
}

const STAFF_OPS: [Op; 3] = [Op::Send, Op::CreateRecord, Op::ReadRecord];

/// A failed call as the client saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub op: Op,
    pub code: Option<tonic::Code>,
    pub reason: Option<String>,
    /// The status message (the whole error text when there is no status).
    pub message: String,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {:?} [{}] {}",
            self.op,
            self.code,
            self.reason.as_deref().unwrap_or("-"),
            self.message
        )
    }
}

fn seen(op: Op, error: &SdkError) -> Seen {
    let message = match error {
        SdkError::Status(status) => status.message().to_owned(),
        other => other.to_string(),
    };
    Seen {
        op,
        code: error.code(),
        reason: error.reason(),
        message,
    }
}

/// What the clients were told: acknowledged ids, and every error.
#[derive(Debug, Default)]
pub struct Tally {
    pub messages: Vec<String>,
    pub records: Vec<String>,
    /// Acknowledged reads per record.
    pub reads: BTreeMap<String, usize>,
    /// Acknowledged logins per user id.
    pub logins: BTreeMap<String, usize>,
    pub errors: Vec<Seen>,
    /// Per (worker, op): the newest epoch in which an attempt that started then succeeded.
    succeeded: BTreeMap<(usize, Op), u64>,
}

impl Tally {
    pub fn absorb(&mut self, other: Tally) {
        self.messages.extend(other.messages);
        self.records.extend(other.records);
        for (record, reads) in other.reads {
            *self.reads.entry(record).or_default() += reads;
        }
        for (user, logins) in other.logins {
            *self.logins.entry(user).or_default() += logins;
        }
        self.errors.extend(other.errors);
    }

    pub fn acknowledged(&self) -> usize {
        self.messages.len()
            + self.records.len()
            + self.reads.values().sum::<usize>()
            + self.logins.values().sum::<usize>()
    }

    /// Errors other than UNAVAILABLE, one per line.
    pub fn not_unavailable(&self) -> Vec<String> {
        self.errors
            .iter()
            .filter(|error| error.code != Some(tonic::Code::Unavailable))
            .map(ToString::to_string)
            .collect()
    }
}

/// A doctor with a device.
pub struct Staff {
    pub user: TestUser,
    pub messenger: Arc<Messenger>,
    _dir: tempfile::TempDir,
}

/// The users the load acts as.
pub struct Fixture {
    pub patient: TestUser,
    pub staff: Vec<Staff>,
    /// Registered patients without MFA: a password login is complete in one step.
    pub login_users: Vec<(String, String, String)>,
    pub sdk: caremesh_sdk::Client,
}

impl Fixture {
    pub async fn new(mesh: &TestMesh, staff: usize) -> Fixture {
        let patient = mesh.patient().await;
        // The patient's device publishes the keys the doctors send to.
        let patient_dir = tempfile::tempdir().unwrap();
        Messenger::open(mesh.sdk(), patient_dir.path(), "default", &patient.session)
            .await
            .unwrap();
        let mut doctors = Vec::new();
        for _ in 0..staff {
            let user = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
            let dir = tempfile::tempdir().unwrap();
            let messenger = Messenger::open(mesh.sdk(), dir.path(), "default", &user.session)
                .await
                .unwrap();
            // Warm the caches (ABE parameters and attribute key) the way a device in use has them.
            let record = messenger
                .create_record(&user.session, new_record(&patient.user_id))
                .await
                .unwrap();
            messenger
                .read_record(&user.session, &record.record_id, 0)
                .await
                .unwrap();
            doctors.push(Staff {
                user,
                messenger: Arc::new(messenger),
                _dir: dir,
            });
        }
        let sdk = mesh.sdk();
        let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
        let username = format!("login-{suffix}");
        let password = format!("vellum orbit cactus lantern {suffix}");
        sdk.register(&username, &password, Role::Patient, "Login Patient")
            .await
            .unwrap();
        let LoginStep::Done(session) = sdk.login(&username, &password).await.unwrap() else {
            panic!("a patient without MFA logs in in one step");
        };
        Fixture {
            patient,
            staff: doctors,
            login_users: vec![(username, password, session.user_id)],
            sdk,
        }
    }
}

fn new_record(patient_id: &str) -> NewRecord<'_> {
    NewRecord {
        patient_id,
        kind: "Observation",
        policy: POLICY,
        content: OBSERVATION,
    }
}

struct Shared {
    stop: AtomicBool,
    epoch: AtomicU64,
    tally: Mutex<Tally>,
}

/// Client tasks running until [`Load::finish`].
pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    workers: Vec<(usize, Vec<Op>)>,
}

/// The pause between a worker's calls, and after a failure before it retries.
const PAUSE: Duration = Duration::from_millis(25);
const RETRY_AFTER: Duration = Duration::from_millis(50);

impl Load {
    pub fn start(fixture: &Fixture) -> Load {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            tally: Mutex::new(Tally::default()),
        });
        let mut tasks = Vec::new();
        let mut workers = Vec::new();
        for (worker, staff) in fixture.staff.iter().enumerate() {
            workers.push((worker, STAFF_OPS.to_vec()));
            let shared = Arc::clone(&shared);
            let messenger = Arc::clone(&staff.messenger);
            let session = staff.user.session.clone();
            let patient_id = fixture.patient.user_id.clone();
            tasks.push(tokio::spawn(async move {
                staff_worker(worker, shared, messenger, session, patient_id).await;
            }));
        }
        for (index, (username, password, user_id)) in fixture.login_users.iter().enumerate() {
            let worker = fixture.staff.len() + index;
            workers.push((worker, vec![Op::Login]));
            let shared = Arc::clone(&shared);
            let sdk = fixture.sdk.clone();
            let (username, password, user_id) = (username.clone(), password.clone(), user_id.clone());
            tasks.push(tokio::spawn(async move {
                login_worker(worker, shared, sdk, username, password, user_id).await;
            }));
        }
        Load { shared, tasks, workers }
    }

    /// Starts a new epoch: [`Load::wait_all_succeeded`] then waits for calls started from now on.
    pub fn mark(&self) -> u64 {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits until every worker has had every one of its operations succeed in a call started in
    /// epoch `epoch` or later; `Err` names the ones that did not within `timeout`.
    pub async fn wait_all_succeeded(&self, epoch: u64, timeout: Duration) -> Result<(), String> {
        let missing = || {
            let tally = self.shared.tally.lock().unwrap();
            self.workers
                .iter()
                .flat_map(|(worker, ops)| ops.iter().map(move |op| (*worker, *op)))
                .filter(|key| tally.succeeded.get(key).is_none_or(|done| *done < epoch))
                .collect::<Vec<_>>()
        };
        let done = eventually(timeout, || async { missing().is_empty().then_some(()) }).await;
        done.ok_or_else(|| format!("no success after the fault for (worker, op) {:?}", missing()))
    }

    /// Stops the clients (each finishes its call in flight) and returns what they were told.
    pub async fn finish(self) -> Tally {
        self.shared.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("load task");
        }
        std::mem::take(&mut *self.shared.tally.lock().unwrap())
    }
}

async fn staff_worker(
    worker: usize,
    shared: Arc<Shared>,
    messenger: Arc<Messenger>,
    session: Session,
    patient_id: String,
) {
    let mut next = 0usize;
    let mut latest_record: Option<String> = None;
    let mut counter = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let op = match (STAFF_OPS[next % STAFF_OPS.len()], &latest_record) {
            (Op::ReadRecord, None) => Op::CreateRecord,
            (op, _) => op,
        };
        let epoch = shared.epoch.load(Ordering::SeqCst);
        counter += 1;
        let outcome = match op {
            Op::Send => {
                let text = format!("worker {worker} message {counter}");
                messenger
                    .send(&session, &patient_id, text.as_bytes(), None)
                    .await
                    .map(|message| Some(message.message_id))
            }
            Op::CreateRecord => messenger
                .create_record(&session, new_record(&patient_id))
                .await
                .map(|record| Some(record.record_id)),
            Op::ReadRecord => {
                let record_id = latest_record.clone().unwrap_or_default();
                match messenger.read_record(&session, &record_id, 0).await {
                    Ok(read) => {
                        assert_eq!(
                            read.content.as_slice(),
                            OBSERVATION,
                            "record {record_id} read back wrong"
                        );
                        Ok(Some(record_id))
                    }
                    Err(error) => Err(error),
                }
            }
            Op::Login => unreachable!("staff workers do not log in"),
        };
        match outcome {
            Ok(id) => {
                let id = id.unwrap_or_default();
                {
                    let mut tally = shared.tally.lock().unwrap();
                    match op {
                        Op::Send => tally.messages.push(id),
                        Op::CreateRecord => {
                            tally.records.push(id.clone());
                            latest_record = Some(id);
                        }
                        Op::ReadRecord => *tally.reads.entry(id).or_default() += 1,
                        Op::Login => {}
                    }
                    let done = tally.succeeded.entry((worker, op)).or_default();
                    *done = (*done).max(epoch);
                }
                next += 1;
                tokio::time::sleep(PAUSE).await;
            }
            Err(error) => {
                // Retry the same kind of operation after a pause.
                shared.tally.lock().unwrap().errors.push(seen(op, &error));
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

async fn login_worker(
    worker: usize,
    shared: Arc<Shared>,
    sdk: caremesh_sdk::Client,
    username: String,
    password: String,
    user_id: String,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let epoch = shared.epoch.load(Ordering::SeqCst);
        match sdk.login(&username, &password).await {
            Ok(LoginStep::Done(session)) => {
                assert_eq!(session.user_id, user_id);
                {
                    let mut tally = shared.tally.lock().unwrap();
                    *tally.logins.entry(user_id.clone()).or_default() += 1;
                    let done = tally.succeeded.entry((worker, Op::Login)).or_default();
                    *done = (*done).max(epoch);
                }
                // Argon2id is expensive: keep the CPU for the services.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(LoginStep::SecondFactor { .. }) => panic!("{username} has no MFA: expected tokens"),
            Err(error) => {
                shared.tally.lock().unwrap().errors.push(seen(Op::Login, &error));
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Rows waiting in each service's audit outbox.
pub async fn outbox_lengths(dbs: &[(Service, DatabaseConnection)]) -> BTreeMap<Service, u64> {
    let mut lengths = BTreeMap::new();
    for (service, db) in dbs {
        let count = outbox_entity::Entity::find().count(db).await.unwrap_or(u64::MAX);
        lengths.insert(*service, count);
    }
    lengths
}

pub async fn service_databases(mesh: &TestMesh) -> Vec<(Service, DatabaseConnection)> {
    let mut dbs = Vec::new();
    for service in Service::ALL {
        dbs.push((service, mesh.database(service).await));
    }
    dbs
}

/// Every outbox empty within `timeout`; `Err` shows what is left.
pub async fn drain_outboxes(mesh: &TestMesh, timeout: Duration) -> Result<(), String> {
    let dbs = service_databases(mesh).await;
    let drained = eventually(timeout, || async {
        outbox_lengths(&dbs).await.values().all(|len| *len == 0).then_some(())
    })
    .await;
    match drained {
        Some(()) => Ok(()),
        None => Err(format!("outboxes never drained: {:?}", outbox_lengths(&dbs).await)),
    }
}

async fn inbox_ids(mesh: &TestMesh, patient: &TestUser) -> Vec<String> {
    let mut client = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_inbox(
                patient
                    .session
                    .request(msg_pb::ListInboxRequest {
                        page_size: 500,
                        page_token: token.clone(),
                        order: msg_pb::SortOrder::OldestFirst.into(),
                        ..Default::default()
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.messages.into_iter().map(|message| message.message_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

async fn record_ids(mesh: &TestMesh, patient: &TestUser) -> Vec<String> {
    let mut client = RecordsServiceClient::new(mesh.channel(Service::Records, Caller::Anonymous));
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_records(
                patient
                    .session
                    .request(rec_pb::ListRecordsRequest {
                        page_size: 100,
                        page_token: token.clone(),
                        ..Default::default()
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.records.into_iter().map(|record| record.record_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

fn counts<'a>(ids: impl IntoIterator<Item = &'a String>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    counts
}

/// Acknowledged ids missing from `stored` or stored more than once, and ids stored twice.
fn exactly_once(what: &str, acknowledged: &[String], stored: &[String]) -> Vec<String> {
    let stored_counts = counts(stored);
    let mut problems = Vec::new();
    for (id, acks) in counts(acknowledged) {
        if acks > 1 {
            problems.push(format!("{what} {id} was acknowledged {acks} times"));
        }
        match stored_counts.get(id).copied().unwrap_or(0) {
            1 => {}
            0 => problems.push(format!("acknowledged {what} {id} is missing")),
            n => problems.push(format!("acknowledged {what} {id} is stored {n} times")),
        }
    }
    for (id, n) in &stored_counts {
        if *n > 1 {
            problems.push(format!("{what} {id} is listed {n} times"));
        }
    }
    problems
}

/// After the load: outboxes drained, every acknowledged message and record listed exactly once,
/// every audit event they produced in the log exactly once, and the log verifies. Returns every
/// problem found.
pub async fn check_exactly_once(mesh: &TestMesh, fixture: &Fixture, tally: &Tally) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(problem) = drain_outboxes(mesh, Duration::from_secs(30)).await {
        problems.push(problem);
    }
    problems.extend(exactly_once(
        "message",
        &tally.messages,
        &inbox_ids(mesh, &fixture.patient).await,
    ));
    problems.extend(exactly_once(
        "record",
        &tally.records,
        &record_ids(mesh, &fixture.patient).await,
    ));

    let events = mesh.audit_log().await.events().await.unwrap();
    for (id, n) in counts(events.iter().map(|event| &event.event_id)) {
        if n > 1 {
            problems.push(format!("audit event {id} is in the log {n} times"));
        }
    }
    let successes = |operation: &str| {
        let mut by_entity: BTreeMap<String, usize> = BTreeMap::new();
        for event in &events {
            if event.operation == operation && event.outcome() == AuditOutcome::Success {
                *by_entity.entry(event.entity_id.clone()).or_default() += 1;
            }
        }
        by_entity
    };
    let sends = successes("SendMessage");
    for id in &tally.messages {
        let n = sends.get(id).copied().unwrap_or(0);
        if n != 1 {
            problems.push(format!(
                "acknowledged message {id} has {n} SendMessage audit events, not 1"
            ));
        }
    }
    let creates = successes("CreateRecord");
    for id in &tally.records {
        let n = creates.get(id).copied().unwrap_or(0);
        if n != 1 {
            problems.push(format!(
                "acknowledged record {id} has {n} CreateRecord audit events, not 1"
            ));
        }
    }
    let reads = successes("GetRecord");
    for (id, acknowledged) in &tally.reads {
        let n = reads.get(id).copied().unwrap_or(0);
        if n < *acknowledged {
            problems.push(format!(
                "record {id}: {acknowledged} acknowledged reads, {n} GetRecord audit events"
            ));
        }
    }
    let logins = successes("login");
    for (user, acknowledged) in &tally.logins {
        let n = logins.get(user).copied().unwrap_or(0);
        if n < *acknowledged {
            problems.push(format!(
                "user {user}: {acknowledged} acknowledged logins, {n} login audit events"
            ));
        }
    }

    // The log verifies (events are appended and treed in one transaction; retried in case a
    // background integration is still running).
    let kek = caremesh_runtime::kek::Kek::load(&mesh.config(Service::Audit).kek_file).unwrap();
    let db = mesh.database(Service::Audit).await;
    let last = Mutex::new(String::new());
    let verified = eventually(Duration::from_secs(10), || async {
        match audit_svc::verify::verify_log(&db, &kek).await {
            Ok(report) => Some(report),
            Err(error) => {
                *last.lock().unwrap() = error.to_string();
                None
            }
        }
    })
    .await;
    match verified {
        Some(report) => {
            if report.tree_size < events.len() as u64 {
                problems.push(format!(
                    "the verified tree has {} leaves but the log {} events",
                    report.tree_size,
                    events.len()
                ));
            }
        }
        None => problems.push(format!("the audit log does not verify: {}", last.lock().unwrap())),
    }
    problems
}
