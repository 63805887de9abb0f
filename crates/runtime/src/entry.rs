//! What every service binary's `main` does, so that each `main.rs` is one line: install the crypto
//! provider, read the config from the environment, set up telemetry, bind, serve until Ctrl-C or
//! SIGTERM, flush traces.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use crate::config::{ConfigError, EnvSource, ProcessEnv, ServiceConfig};
use crate::telemetry::{self, LogFormat};
use crate::{Listeners, ServiceName, StartError};

/// Environment variable choosing the log format (`text` or `json`).
pub const LOG_FORMAT_ENV: &str = "CAREMESH_LOG_FORMAT";

/// A service's configuration: the mesh part every service has, plus its own settings.
pub trait ServiceSettings: Sized + Send + 'static {
    const SERVICE: ServiceName;

    /// The service's settings on top of `mesh`, its own ones read from `env`.
    fn with_env(mesh: ServiceConfig, env: &dyn EnvSource) -> Result<Self, ConfigError>;

    fn mesh(&self) -> &ServiceConfig;

    /// Everything from `env`.
    fn from_env(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        Self::with_env(ServiceConfig::from_env(Self::SERVICE, env)?, env)
    }
}

/// A future that completes on Ctrl-C or SIGTERM.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Completes on Ctrl-C, or SIGTERM (how Kubernetes and Docker stop a container).
pub fn shutdown_signal() -> ShutdownSignal {
    Box::pin(async {
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let sigterm = async {
                match term.as_mut() {
                    Some(term) => {
                        term.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = sigterm => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    })
}

pub fn log_format(env: &dyn EnvSource) -> LogFormat {
    match env.get(LOG_FORMAT_ENV).as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

/// Runs one service as a process.
pub async fn run<C, F, Fut>(serve: F) -> ExitCode
where
    C: ServiceSettings,
    F: FnOnce(C, Listeners, ShutdownSignal) -> Fut,
    Fut: Future<Output = Result<(), StartError>>,
{
    caremesh_tls::install_crypto_provider();
    let env = ProcessEnv;
    let config = match C::from_env(&env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}: configuration error: {error}", C::SERVICE);
            return ExitCode::FAILURE;
        }
    };
    let provider = match telemetry::tracer_provider(config.mesh().otlp_endpoint.as_deref()) {
        Ok(provider) => provider,
        Err(error) => {
            eprintln!("{}: {error}", C::SERVICE);
            return ExitCode::FAILURE;
        }
    };
    let telemetry = telemetry::install(provider, log_format(&env));
    let result = match Listeners::bind(config.mesh()).await {
        Ok(listeners) => serve(config, listeners, shutdown_signal()).await,
        Err(error) => Err(error),
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "service failed");
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
