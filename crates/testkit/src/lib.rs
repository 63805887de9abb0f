//! The caremesh test kit: [`TestMesh`] starts the real services in this process on port-0
//! listeners, with real mutual TLS from a temporary dev PKI and a fresh database per mesh
//! (SQLite files in a temporary directory, or PostgreSQL schemas with a unique prefix when
//! `CAREMESH_TEST_DATABASE_URL` is set), and hands out clients as any caller: anonymous, a
//! service, the operator, or an impostor with a certificate from another CA.
//!
//! Test code: failing loudly is the point, so it may unwrap.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use caremesh_pki::{CertificateAuthority, PkiLayout};
use caremesh_runtime::clock::{ManualClock, SharedClock};
use caremesh_runtime::config::{DatabaseConfig, MapEnv, RelayConfig, ServiceConfig, tls_files};
use caremesh_runtime::{Listeners, ServiceName, StartError};
use caremesh_tls::client::{ChannelOptions, Target};
use caremesh_tls::{ReloadingMaterial, TlsFiles};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use caremesh_runtime::ServiceName as Service;

/// Set this to a PostgreSQL URL to run storage tests on PostgreSQL as well as SQLite.
pub const TEST_DATABASE_URL_ENV: &str = "CAREMESH_TEST_DATABASE_URL";

/// Which database a mesh runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// SQLite, plus PostgreSQL when `CAREMESH_TEST_DATABASE_URL` is set: storage tests loop over these.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    match std::env::var(TEST_DATABASE_URL_ENV) {
        Ok(url) if !url.is_empty() => backends.push(Backend::Postgres(url)),
        _ => eprintln!("note: {TEST_DATABASE_URL_ENV} is not set; this test runs on SQLite only"),
    }
    backends
}

/// Who a test client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// TLS without a client certificate (how users connect).
    Anonymous,
    /// A service's own certificate.
    Service(ServiceName),
    /// The operator certificate (`spiffe://caremesh.local/operator/admin`).
    Operator,
    /// A certificate naming `service` but issued by a CA the mesh does not trust.
    Impostor(ServiceName),
}

enum State {
    /// Bound but not serving (a service held back, to start later).
    Held(Listeners),
    Running {
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), StartError>>,
    },
    Stopped,
}

struct Slot {
    config: ServiceConfig,
    grpc_addr: SocketAddr,
    ops_addr: SocketAddr,
    state: State,
}

pub mod echo;
mod second_instance;
mod users;
pub mod webauthn;

pub use second_instance::SecondInstance;
pub use users::{TestUser, totp_code};
pub use webauthn::SoftAuthenticator;

/// Service settings the test kit starts every mesh with: throttles high enough that a test
/// suite from one address is not mistaken for an attack (tests of the throttles lower them).
const TEST_SETTINGS: &[(&str, &str)] = &[
    (auth_svc::settings::LOGIN_RATE_PER_MINUTE, "1000000"),
    (auth_svc::settings::REGISTER_RATE_PER_MINUTE, "1000000"),
    (auth_svc::settings::BACKOFF_AFTER, "100"),
];

/// Builds a [`TestMesh`].
#[derive(Debug)]
pub struct TestMeshBuilder {
    backend: Backend,
    held_back: Vec<ServiceName>,
    settings: Vec<(String, String)>,
    kek_from: Option<PathBuf>,
}

impl TestMeshBuilder {
    /// Uses a copy of the key-encryption key at `path` instead of a fresh one (e.g. to restore
    /// another mesh's backup into this one).
    pub fn kek_from(mut self, path: &std::path::Path) -> Self {
        self.kek_from = Some(path.to_owned());
        self
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Binds `service`'s ports but does not start it; [`TestMesh::start_service`] does later.
    pub fn hold_back(mut self, service: ServiceName) -> Self {
        self.held_back.push(service);
        self
    }

    /// Sets a service setting (`CAREMESH_AUTH_LOCKOUT_THRESHOLD`, ...) for this mesh.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    pub async fn start(self) -> TestMesh {
        caremesh_tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki = PkiLayout::new(dir.path().join("pki"));
        let services = ServiceName::ALL.map(ServiceName::as_str);
        caremesh_pki::init(pki.dir(), &services, &[caremesh_serve::OPERATOR], &[]).expect("dev PKI");
        let kek_file = dir.path().join("kek.key");
        if let Some(source) = &self.kek_from {
            std::fs::copy(source, &kek_file).expect("copy the key-encryption key");
        }
        caremesh_runtime::kek::Kek::load_or_generate(&kek_file).expect("key-encryption key");
        let schema_prefix = format!("t{}_", &uuid::Uuid::now_v7().simple().to_string()[20..]);

        let mut bound = BTreeMap::new();
        for service in ServiceName::ALL {
            let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let ops = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            bound.insert(service, Listeners { grpc, ops });
        }
        let peers: BTreeMap<ServiceName, String> = bound
            .iter()
            .map(|(service, listeners)| (*service, listeners.grpc_addr().expect("address").to_string()))
            .collect();

        let clock = ManualClock::new(chrono::Utc::now());
        let shared_clock: SharedClock = Arc::new(clock.clone());
        let mut env = MapEnv::default();
        for (key, value) in TEST_SETTINGS {
            env = env.set(*key, *value);
        }
        for (key, value) in &self.settings {
            env = env.set(key.clone(), value.clone());
        }
        let mut slots = BTreeMap::new();
        for (service, listeners) in bound {
            let mut config = ServiceConfig::embedded(service, dir.path());
            config.listen = listeners.grpc_addr().expect("address");
            config.ops_listen = listeners.ops_addr().expect("address");
            config.tls = tls_files(pki.dir(), service);
            config.kek_file = kek_file.clone();
            config.peers = peers.clone();
            config.relay = RelayConfig {
                batch_size: 500,
                poll_interval: Duration::from_millis(50),
                request_timeout: Duration::from_secs(2),
                max_backoff: Duration::from_millis(200),
                linger: Duration::from_millis(10),
            };
            if let Backend::Postgres(url) = &self.backend {
                config.database = DatabaseConfig {
                    url: url.clone(),
                    schema: format!("{schema_prefix}{}", service.database_name()),
                };
            }
            config.clock = Arc::clone(&shared_clock);
            slots.insert(
                service,
                Slot {
                    grpc_addr: config.listen,
                    ops_addr: config.ops_listen,
                    config,
                    state: State::Held(listeners),
                },
            );
        }
        let mut mesh = TestMesh {
            dir,
            pki,
            backend: self.backend,
            schema_prefix,
            slots,
            env: Arc::new(env),
            clock,
            admin: tokio::sync::OnceCell::new(),
        };
        for service in ServiceName::ALL {
            if !self.held_back.contains(&service) {
                mesh.start_service(service).await;
            }
        }
        mesh
    }
}

/// The five services running in this process. Dropping it stops them.
pub struct TestMesh {
    dir: tempfile::TempDir,
    pki: PkiLayout,
    backend: Backend,
    schema_prefix: String,
    slots: BTreeMap<ServiceName, Slot>,
    env: Arc<MapEnv>,
    clock: ManualClock,
    admin: tokio::sync::OnceCell<TestUser>,
}

impl TestMesh {
    /// All five services on SQLite.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn builder() -> TestMeshBuilder {
        TestMeshBuilder {
            backend: Backend::Sqlite,
            held_back: Vec::new(),
            settings: Vec::new(),
            kek_from: None,
        }
    }

    fn slot(&self, service: ServiceName) -> &Slot {
        self.slots.get(&service).expect("every service has a slot")
    }

    /// Starts a held-back or stopped service on its original ports and waits until it is SERVING.
    pub async fn start_service(&mut self, service: ServiceName) {
        let slot = self.slots.get_mut(&service).expect("slot");
        let listeners = match std::mem::replace(&mut slot.state, State::Stopped) {
            State::Held(listeners) => listeners,
            State::Stopped => Listeners {
                grpc: TcpListener::bind(slot.grpc_addr).await.expect("re-bind"),
                ops: TcpListener::bind(slot.ops_addr).await.expect("re-bind"),
            },
            running @ State::Running { .. } => {
                slot.state = running;
                return;
            }
        };
        let shutdown = CancellationToken::new();
        let config = slot.config.clone();
        let env = Arc::clone(&self.env);
        let stop = shutdown.clone().cancelled_owned();
        let task =
            tokio::spawn(async move { caremesh_serve::serve_service(config, env.as_ref(), listeners, stop).await });
        let ops_addr = slot.ops_addr;
        let ready = caremesh_serve::wait_ready(service, ops_addr, Duration::from_secs(30));
        tokio::pin!(ready);
        let mut task = task;
        tokio::select! {
            ready = &mut ready => ready.unwrap_or_else(|error| panic!("{service} did not start: {error}")),
            // It stopped before becoming ready: show why.
            finished = &mut task => panic!("{service} failed to start: {:?}", finished.expect("service task")),
        }
        slot.state = State::Running { shutdown, task };
    }

    /// Stops a service (draining in-flight calls) and waits until it has stopped.
    pub async fn stop_service(&mut self, service: ServiceName) {
        let slot = self.slots.get_mut(&service).expect("slot");
        if let State::Running { shutdown, task } = std::mem::replace(&mut slot.state, State::Stopped) {
            shutdown.cancel();
            task.await.expect("service task").expect("service stopped cleanly");
        }
    }

    pub fn config(&self, service: ServiceName) -> &ServiceConfig {
        &self.slot(service).config
    }

    pub fn grpc_addr(&self, service: ServiceName) -> SocketAddr {
        self.slot(service).grpc_addr
    }

    pub fn ops_addr(&self, service: ServiceName) -> SocketAddr {
        self.slot(service).ops_addr
    }

    /// The clock every service of this mesh reads: it moves only when a test moves it.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Moves the mesh's time forward.
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::TimeDelta::seconds(seconds));
    }

    pub fn pki(&self) -> &PkiLayout {
        &self.pki
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The TLS files a `caller` presents.
    pub fn caller_files(&self, caller: Caller) -> TlsFiles {
        let ca = self.pki.ca_cert();
        match caller {
            Caller::Anonymous => TlsFiles::ca_only(ca),
            Caller::Service(service) => TlsFiles::with_identity(
                ca,
                self.pki.service_cert(service.as_str()),
                self.pki.service_key(service.as_str()),
            ),
            Caller::Operator => TlsFiles::with_identity(
                ca,
                self.pki.operator_cert(caremesh_serve::OPERATOR),
                self.pki.operator_key(caremesh_serve::OPERATOR),
            ),
            Caller::Impostor(service) => {
                let dir = self.dir.path().join("impostor");
                let cert = dir.join(format!("{service}.crt"));
                let key = dir.join(format!("{service}.key"));
                if !cert.exists() {
                    let foreign = CertificateAuthority::generate("not the caremesh CA").expect("foreign CA");
                    let issued = foreign
                        .issue_service(service.as_str(), &[])
                        .expect("foreign certificate");
                    std::fs::create_dir_all(&dir).expect("impostor dir");
                    issued.write(&cert, &key).expect("write impostor certificate");
                }
                TlsFiles::with_identity(ca, cert, key)
            }
        }
    }

    /// A channel to `service` as `caller` (lazily connected: errors show on the first call).
    pub fn channel(&self, service: ServiceName, caller: Caller) -> Channel {
        let material = ReloadingMaterial::load(self.caller_files(caller)).expect("caller TLS material");
        let target = Target::parse(&self.grpc_addr(service).to_string(), Some(service.spiffe_id())).expect("target");
        caremesh_tls::client::channel(target, material, ChannelOptions::default()).expect("channel")
    }

    /// An SDK client for this mesh, without a client certificate (as users connect).
    pub fn sdk(&self) -> caremesh_sdk::Client {
        let mut options = caremesh_sdk::ConnectOptions::new(self.pki.ca_cert(), "127.0.0.1");
        for service in ServiceName::ALL {
            options = options.with_endpoint(service, self.grpc_addr(service).to_string());
        }
        caremesh_sdk::Client::connect(&options).expect("SDK client")
    }

    /// A direct connection to `service`'s database (to inspect or tamper with storage).
    pub async fn database(&self, service: ServiceName) -> DatabaseConnection {
        caremesh_runtime::db::connect(&self.config(service).database)
            .await
            .expect("database")
    }

    /// audit-svc's event log, read straight from its database.
    pub async fn audit_log(&self) -> audit_svc::log::EventLog {
        audit_svc::log::EventLog::new(
            self.database(ServiceName::Audit).await,
            self.config(ServiceName::Audit).clock.clone(),
        )
    }

    /// Stops every service and, on PostgreSQL, drops this mesh's schemas.
    pub async fn shutdown(mut self) {
        for service in ServiceName::ALL {
            self.stop_service(service).await;
        }
        if let Backend::Postgres(_) = &self.backend {
            let db = self.database(ServiceName::Audit).await;
            for service in ServiceName::ALL {
                let schema = format!("{}{}", self.schema_prefix, service.database_name());
                db.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .expect("drop test schema");
            }
        }
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        for slot in self.slots.values() {
            if let State::Running { shutdown, .. } = &slot.state {
                shutdown.cancel();
            }
        }
    }
}

/// Installs (once per test process) a tracing subscriber whose spans are kept in memory, and
/// returns the exporter holding them.
pub fn capture_spans() -> InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            // Kept for the life of the test process.
            std::mem::forget(caremesh_runtime::telemetry::install(
                provider,
                caremesh_runtime::telemetry::LogFormat::Text,
            ));
            exporter
        })
        .clone()
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir`, recursively (the scans for plaintext at rest read them all).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}
