//! messaging-svc: the public-key directory and end-to-end encrypted messages: inbox, history, live delivery, receipts, recall, group messages by attribute policy.
//!
//! [`serve`] runs it on a pair of listeners until a shutdown future completes; `caremesh up`, the
//! `messaging-svc` binary and the integration tests all start it that way.

mod attachments;
mod devices;
mod domain;
mod fanout;
mod group_commit;
mod groups;
mod grpc;
mod keys;
mod messages;
mod peers;
pub mod settings;
pub mod storage;

use std::future::Future;

use caremesh_runtime::config::{ConfigError, EnvSource, ServiceConfig};
use caremesh_runtime::entry::ServiceSettings;
use caremesh_runtime::grpc::PeerPolicy;
use caremesh_runtime::{Listeners, ServiceName, ServiceRuntime, StartError};

pub use domain::conversation_id;
pub use settings::MessagingSettings;

pub const SERVICE: ServiceName = ServiceName::Messaging;

/// messaging-svc's configuration: the mesh settings every service has, and its own.
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh: ServiceConfig,
    pub messaging: MessagingSettings,
}

impl ServiceSettings for Config {
    const SERVICE: ServiceName = SERVICE;

    fn with_env(mesh: ServiceConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        Ok(Self {
            mesh,
            messaging: MessagingSettings::from_env(env)?,
        })
    }

    fn mesh(&self) -> &ServiceConfig {
        &self.mesh
    }
}

/// Runs messaging-svc on `listeners` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let runtime = ServiceRuntime::start::<storage::Migrator>(config.mesh).await?;
    let domain = domain::MessagingDomain::start(&runtime, config.messaging)
        .await
        .map_err(|source| StartError::Init {
            service: SERVICE,
            source,
        })?;
    let router = grpc::router(&runtime, domain);
    runtime.serve(router, peer_policy(), listeners, shutdown).await
}

/// Which mesh identities may call messaging-svc's internal RPCs (all others are refused).
pub fn peer_policy() -> PeerPolicy {
    PeerPolicy::new().allow(
        "caremesh.messaging.v1.MessagingInternalService",
        "BatchGetIdentityKeys",
        [ServiceName::AbeAuthority, ServiceName::Records].map(ServiceName::spiffe_id),
    )
}
