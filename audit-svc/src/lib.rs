//! audit-svc: the tamper-evident audit trail: ingestion from every service's outbox, Merkle tree, signed checkpoints, proofs, queries, access reports, alerts.
//!
//! [`serve`] runs it on a pair of listeners until a shutdown future completes; `caremesh up`, the
//! `audit-svc` binary and the integration tests all start it that way.

pub mod alerts;
pub mod checkpoints;
mod grpc;
pub mod log;
pub mod names;
pub mod reader;
pub mod settings;
pub mod storage;
mod tree;
pub mod verify;

use std::future::Future;

use caremesh_runtime::config::{ConfigError, EnvSource, ServiceConfig};
use caremesh_runtime::entry::ServiceSettings;
use caremesh_runtime::grpc::PeerPolicy;
use caremesh_runtime::{Listeners, ServiceName, ServiceRuntime, StartError};

pub const SERVICE: ServiceName = ServiceName::Audit;

/// audit-svc's configuration: the mesh settings every service has (its own settings join them here).
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh: ServiceConfig,
    pub audit: settings::AuditSettings,
}

impl ServiceSettings for Config {
    const SERVICE: ServiceName = SERVICE;

    fn with_env(mesh: ServiceConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        Ok(Self {
            mesh,
            audit: settings::AuditSettings::from_env(env)?,
        })
    }

    fn mesh(&self) -> &ServiceConfig {
        &self.mesh
    }
}

/// Runs audit-svc on `listeners` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let runtime = ServiceRuntime::start::<storage::Migrator>(config.mesh).await?;
    let settings = config.audit;
    let interval = settings.checkpoint_interval;
    let origin = settings.origin.clone();
    let log = log::EventLog::with_settings(runtime.db.clone(), runtime.clock.clone(), settings);
    let start_error = |error: caremesh_runtime::Error| StartError::Database {
        service: SERVICE,
        source: sea_orm::DbErr::Custom(format!("{}: {}", error.reason(), error.message())),
    };
    log.integrate_untreed().await.map_err(start_error)?;
    let checkpoints = checkpoints::Checkpointer::open(runtime.db.clone(), runtime.clock.clone(), &runtime.kek, &origin)
        .await
        .map_err(start_error)?;
    tokio::spawn(checkpoints.clone().run(interval, runtime.shutdown_token()));
    let auth = runtime.channel(ServiceName::Auth, Default::default())?;
    let reader = reader::Reader {
        log,
        checkpoints,
        outbox: runtime.outbox.clone(),
        names: Some(names::Directory::new(auth)),
    };
    let router = grpc::router(&runtime, reader);
    runtime.serve(router, peer_policy(), listeners, shutdown).await
}

/// Which mesh identities may call audit-svc's internal RPCs (all others are refused).
pub fn peer_policy() -> PeerPolicy {
    PeerPolicy::new().allow(
        "caremesh.audit.v1.AuditInternalService",
        "*",
        [
            ServiceName::Auth,
            ServiceName::Messaging,
            ServiceName::AbeAuthority,
            ServiceName::Records,
            ServiceName::Audit,
        ]
        .map(ServiceName::spiffe_id),
    )
}
