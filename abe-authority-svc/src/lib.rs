//! abe-authority-svc: the CP-ABE authority: public parameters, the sealed master key, user-key issuance, policy validation, emergency access.
//!
//! [`serve`] runs it on a pair of listeners until a shutdown future completes; `caremesh up`, the
//! `abe-authority-svc` binary and the integration tests all start it that way.

pub mod authority;
mod grpc;
pub mod issuance;
mod peers;
pub mod settings;
pub mod storage;

use std::future::Future;

use caremesh_runtime::config::{ConfigError, EnvSource, ServiceConfig};
use caremesh_runtime::entry::ServiceSettings;
use caremesh_runtime::grpc::PeerPolicy;
use caremesh_runtime::{Listeners, ServiceName, ServiceRuntime, StartError};

pub const SERVICE: ServiceName = ServiceName::AbeAuthority;

/// abe-authority-svc's configuration: the mesh settings every service has (its own settings join them here).
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh: ServiceConfig,
    pub abe: settings::AbeSettings,
}

impl ServiceSettings for Config {
    const SERVICE: ServiceName = SERVICE;

    fn with_env(mesh: ServiceConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        Ok(Self {
            mesh,
            abe: settings::AbeSettings::from_env(env)?,
        })
    }

    fn mesh(&self) -> &ServiceConfig {
        &self.mesh
    }
}

/// Runs abe-authority-svc on `listeners` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let runtime = ServiceRuntime::start::<storage::Migrator>(config.mesh).await?;
    let authority = authority::Authority::start(&runtime)
        .await
        .map_err(|source| StartError::Init {
            service: SERVICE,
            source,
        })?;
    let auth = runtime.channel(ServiceName::Auth, Default::default())?;
    let messaging = runtime.channel(ServiceName::Messaging, Default::default())?;
    let issuer = issuance::Issuer {
        authority,
        peers: peers::Peers::new(auth, messaging),
        writer: runtime.writer.clone(),
        outbox: runtime.outbox.clone(),
        clock: std::sync::Arc::clone(&runtime.clock),
        settings: config.abe,
    };
    let router = grpc::router(&runtime, issuer);
    runtime.serve(router, peer_policy(), listeners, shutdown).await
}

/// Which mesh identities may call abe-authority-svc's internal RPCs (all others are refused).
pub fn peer_policy() -> PeerPolicy {
    PeerPolicy::new()
}
