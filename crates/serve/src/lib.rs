//! Runs the whole mesh in one process. `caremesh up` uses it on the embedded default (SQLite files
//! and a dev PKI under one data directory); the testkit uses [`serve_service`] to start services
//! one by one on port-0 listeners.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use caremesh_pki::PkiLayout;
use caremesh_runtime::config::{EnvSource, ServiceConfig, keys, service_key};
use caremesh_runtime::db;
use caremesh_runtime::entry::ServiceSettings;
use caremesh_runtime::kek::Kek;
use caremesh_runtime::{Listeners, ServiceName, StartError};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

/// The operator identity `caremesh up` creates for grpcurl and admin tools.
pub const OPERATOR: &str = "admin";

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("dev PKI in {dir}: {source}")]
    Pki { dir: PathBuf, source: caremesh_pki::Error },
    #[error(transparent)]
    Kek(#[from] caremesh_runtime::kek::KekError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{service} did not report SERVING on {addr} within {timeout:?}")]
    NotReady {
        service: ServiceName,
        addr: SocketAddr,
        timeout: Duration,
    },
}

/// Runs `config.service` until `shutdown` completes; its own settings come from `env`.
pub async fn serve_service(
    config: ServiceConfig,
    env: &dyn EnvSource,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    async fn run<C: ServiceSettings, F: Future<Output = Result<(), StartError>>>(
        config: ServiceConfig,
        env: &dyn EnvSource,
        serve: impl FnOnce(C) -> F,
    ) -> Result<(), StartError> {
        let service = config.service;
        let config = C::with_env(config, env).map_err(|source| StartError::Config { service, source })?;
        serve(config).await
    }
    match config.service {
        ServiceName::Auth => run(config, env, |c| auth_svc::serve(c, listeners, shutdown)).await,
        ServiceName::Messaging => run(config, env, |c| messaging_svc::serve(c, listeners, shutdown)).await,
        ServiceName::AbeAuthority => run(config, env, |c| abe_authority_svc::serve(c, listeners, shutdown)).await,
        ServiceName::Records => run(config, env, |c| records_svc::serve(c, listeners, shutdown)).await,
        ServiceName::Audit => run(config, env, |c| audit_svc::serve(c, listeners, shutdown)).await,
    }
}

/// auth-svc's passkey settings for the web app served at `https://{host}:{port}`, where
/// passkeys are bound. An IP address cannot be a WebAuthn relying party: a mesh served on one
/// gets none, and passkeys then need `CAREMESH_AUTH_WEBAUTHN_RP_ID` and `..._ORIGIN` naming a host.
pub fn webauthn_env(host: &str, port: u16) -> caremesh_runtime::config::MapEnv {
    let env = caremesh_runtime::config::MapEnv::default();
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return env;
    }
    env.set(auth_svc::settings::WEBAUTHN_RP_ID, host.to_owned())
        .set(auth_svc::settings::WEBAUTHN_ORIGIN, format!("https://{host}:{port}"))
}

/// Brings `config.service`'s database schema up to date without serving.
pub async fn migrate_service(config: &ServiceConfig) -> Result<(), sea_orm::DbErr> {
    let database = &config.database;
    let db = match config.service {
        ServiceName::Auth => db::connect_and_migrate::<auth_svc::storage::Migrator>(database).await?,
        ServiceName::Messaging => db::connect_and_migrate::<messaging_svc::storage::Migrator>(database).await?,
        ServiceName::AbeAuthority => db::connect_and_migrate::<abe_authority_svc::storage::Migrator>(database).await?,
        ServiceName::Records => db::connect_and_migrate::<records_svc::storage::Migrator>(database).await?,
        ServiceName::Audit => db::connect_and_migrate::<audit_svc::storage::Migrator>(database).await?,
    };
    db.close().await
}

/// Where the embedded default keeps things.
#[derive(Clone, Debug)]
pub struct EmbeddedLayout {
    pub data_dir: PathBuf,
    pub pki: PkiLayout,
    pub kek_file: PathBuf,
}

impl EmbeddedLayout {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            pki: PkiLayout::new(data_dir.join("pki")),
            kek_file: data_dir.join("kek.key"),
        }
    }

    /// Creates what is missing: the dev PKI (CA, one certificate per service, the operator
    /// certificate, the web origin's certificate) and the key-encryption key. Existing files are kept.
    pub fn prepare(&self, extra_dns: &[String]) -> Result<Prepared, MeshError> {
        let services = ServiceName::ALL.map(ServiceName::as_str);
        let report =
            caremesh_pki::init(self.pki.dir(), &services, &[OPERATOR], extra_dns).map_err(|source| MeshError::Pki {
                dir: self.pki.dir().to_owned(),
                source,
            })?;
        // The web origin's HTTPS certificate (`web.crt`, `localhost`), next to the others.
        let web = caremesh_pki::init_web(self.pki.dir(), extra_dns).map_err(|source| MeshError::Pki {
            dir: self.pki.dir().to_owned(),
            source,
        })?;
        let (_, kek_created) = Kek::load_or_generate(&self.kek_file)?;
        Ok(Prepared {
            pki_created: report.created_anything() || web.created_anything(),
            kek_created,
        })
    }

    /// The configuration of every service in this layout, with environment overrides applied.
    pub fn configs(&self, env: &dyn caremesh_runtime::config::EnvSource) -> Result<Vec<ServiceConfig>, MeshError> {
        let env = LayoutEnv { layout: self, env };
        ServiceName::ALL
            .into_iter()
            .map(|service| {
                ServiceConfig::from_env(service, &env)
                    .map_err(|source| MeshError::Start(StartError::Config { service, source }))
            })
            .collect()
    }
}

/// The layout's data directory as the default, under whatever the environment says.
struct LayoutEnv<'a> {
    layout: &'a EmbeddedLayout,
    env: &'a dyn caremesh_runtime::config::EnvSource,
}

impl caremesh_runtime::config::EnvSource for LayoutEnv<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.env
            .get(key)
            .or_else(|| (key == keys::DATA_DIR).then(|| self.layout.data_dir.display().to_string()))
    }
}

/// What [`EmbeddedLayout::prepare`] created.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    pub pki_created: bool,
    pub kek_created: bool,
}

/// Binds every service's listeners (failing fast if a port is taken).
pub async fn bind_all(configs: &[ServiceConfig]) -> Result<Vec<Listeners>, StartError> {
    let mut listeners = Vec::with_capacity(configs.len());
    for config in configs {
        listeners.push(Listeners::bind(config).await?);
    }
    Ok(listeners)
}

/// Runs every service until `shutdown` is cancelled. If one fails, the others are stopped too.
pub async fn run_mesh(
    services: Vec<(ServiceConfig, Listeners)>,
    env: &dyn EnvSource,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let tasks = services.into_iter().map(|(config, listeners)| {
        let shutdown = shutdown.clone();
        async move {
            let result = serve_service(config, env, listeners, shutdown.clone().cancelled_owned()).await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        }
    });
    join_all(tasks)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .map(|_| ())
}

/// Waits until the plaintext health endpoint at `ops_addr` reports SERVING.
pub async fn wait_ready(service: ServiceName, ops_addr: SocketAddr, timeout: Duration) -> Result<(), MeshError> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let deadline = tokio::time::Instant::now() + timeout;
    let host = match ops_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let url = format!("http://{host}:{}", ops_addr.port());
    loop {
        let serving = async {
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .ok()?
                .connect()
                .await
                .ok()?;
            let response = HealthClient::new(channel)
                .check(HealthCheckRequest { service: String::new() })
                .await
                .ok()?;
            Some(response.get_ref().status() == ServingStatus::Serving)
        }
        .await;
        if serving == Some(true) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(MeshError::NotReady {
                service,
                addr: ops_addr,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Where auth-svc wrote the first administrator's credentials, if it has.
pub fn bootstrap_admin_file(data_dir: &Path) -> Option<PathBuf> {
    Some(auth_svc::bootstrap_file(data_dir)).filter(|path| path.exists())
}

/// `CAREMESH_<SERVICE>_LISTEN` etc. for documentation and error messages.
pub fn listen_key(service: ServiceName) -> String {
    service_key(service, keys::LISTEN_SUFFIX)
}
