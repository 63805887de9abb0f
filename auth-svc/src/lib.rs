//! auth-svc: accounts, Argon2id passwords, TOTP MFA and recovery codes, sessions and
//! Ed25519-signed tokens, roles and attributes, admin approval.
//!
//! [`serve`] runs it on a pair of listeners until a shutdown future completes; `caremesh up`, the
//! `auth-svc` binary and the integration tests all start it that way.
//!
//! Code map: `grpc` (the adapter) calls the domain: `domain` (shared state and helpers),
//! `accounts`, `sessions`, `mfa`, `passkeys` (WebAuthn), `bootstrap`. Below the domain: `password` (Argon2id, strength),
//! `totp` (RFC 6238), `attributes`, `keys` (signing keys), `secrets`, `throttle`, `storage`.

mod accounts;
mod attributes;
mod bootstrap;
mod domain;
mod emergency;
mod grpc;
mod keys;
mod mfa;
mod passkeys;
pub mod password;
mod revocations;
mod secrets;
mod sessions;
pub mod settings;
pub mod storage;
mod throttle;
pub mod totp;

use std::future::Future;

use caremesh_runtime::config::{ConfigError, EnvSource, ServiceConfig};
use caremesh_runtime::entry::ServiceSettings;
use caremesh_runtime::grpc::PeerPolicy;
use caremesh_runtime::{Listeners, ServiceName, ServiceRuntime, StartError};

pub use bootstrap::{BOOTSTRAP_FILE, BOOTSTRAP_USERNAME, bootstrap_file};
pub use settings::AuthSettings;

pub const SERVICE: ServiceName = ServiceName::Auth;

/// auth-svc's configuration: the mesh settings every service has, and its own.
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh: ServiceConfig,
    pub auth: AuthSettings,
}

impl ServiceSettings for Config {
    const SERVICE: ServiceName = SERVICE;

    fn with_env(mesh: ServiceConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        Ok(Self {
            mesh,
            auth: AuthSettings::from_env(env)?,
        })
    }

    fn mesh(&self) -> &ServiceConfig {
        &self.mesh
    }
}

/// Runs auth-svc on `listeners` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let runtime = ServiceRuntime::start::<storage::Migrator>(config.mesh).await?;
    let init = |source| StartError::Init {
        service: SERVICE,
        source,
    };
    let domain = domain::AuthDomain::start(&runtime, config.auth).await.map_err(init)?;
    domain.ensure_admin(&runtime.config.data_dir).await.map_err(init)?;
    let router = grpc::router(&runtime, domain);
    runtime.serve(router, peer_policy(), listeners, shutdown).await
}

/// Which mesh identities may call auth-svc's internal RPCs (all others are refused).
pub fn peer_policy() -> PeerPolicy {
    PeerPolicy::new()
        .allow(
            "caremesh.auth.v1.AuthInternalService",
            "GetUserAttributes",
            [ServiceName::AbeAuthority, ServiceName::Records].map(ServiceName::spiffe_id),
        )
        .allow(
            "caremesh.auth.v1.AuthInternalService",
            "BatchGetUserProfiles",
            [
                ServiceName::Messaging,
                ServiceName::Records,
                ServiceName::AbeAuthority,
                ServiceName::Audit,
            ]
            .map(ServiceName::spiffe_id),
        )
        .allow(
            "caremesh.auth.v1.AuthInternalService",
            "GrantEmergencyAttribute",
            [ServiceName::AbeAuthority].map(ServiceName::spiffe_id),
        )
        .allow(
            "caremesh.auth.v1.AuthInternalService",
            "PollRevocations",
            ServiceName::ALL.map(ServiceName::spiffe_id),
        )
}
