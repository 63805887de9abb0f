//! records-svc: patient records encrypted under ABE policies, with versioned, signed edits,
//! server-side policy enforcement, and attachment blobs that follow their record's policy.
//!
//! [`serve`] runs it on a pair of listeners until a shutdown future completes; `caremesh up`, the
//! `records-svc` binary and the integration tests all start it that way.

mod attachments;
mod domain;
mod grpc;
mod identities;
mod records;
pub mod storage;
pub mod validate;

use std::future::Future;

use caremesh_runtime::attachments::AttachmentLimits;
use caremesh_runtime::config::{ConfigError, EnvSource, ServiceConfig};
use caremesh_runtime::entry::ServiceSettings;
use caremesh_runtime::grpc::PeerPolicy;
use caremesh_runtime::{Listeners, ServiceName, ServiceRuntime, StartError};

pub const SERVICE: ServiceName = ServiceName::Records;

/// records-svc's configuration: the mesh settings every service has (its own settings join them here).
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh: ServiceConfig,
    /// Record attachments: the largest file, each user's quota, how long an attachment waits for
    /// its record (`CAREMESH_RECORDS_ATTACHMENT_*`).
    pub attachments: AttachmentLimits,
}

impl ServiceSettings for Config {
    const SERVICE: ServiceName = SERVICE;

    fn with_env(mesh: ServiceConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        Ok(Self {
            mesh,
            attachments: AttachmentLimits::from_env(env, SERVICE)?,
        })
    }

    fn mesh(&self) -> &ServiceConfig {
        &self.mesh
    }
}

/// Runs records-svc on `listeners` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let runtime = ServiceRuntime::start::<storage::Migrator>(config.mesh).await?;
    let domain = domain::RecordsDomain::start(&runtime, config.attachments).map_err(|source| StartError::Init {
        service: SERVICE,
        source,
    })?;
    let router = grpc::router(&runtime, domain);
    runtime.serve(router, peer_policy(), listeners, shutdown).await
}

/// Which mesh identities may call records-svc's internal RPCs (it has none: all are refused).
pub fn peer_policy() -> PeerPolicy {
    PeerPolicy::new()
}
