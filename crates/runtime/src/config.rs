//! Typed service configuration with `CAREMESH_*` environment overrides.
//!
//! Values are read through an [`EnvSource`], so tests hand in a [`MapEnv`] and never touch the
//! process environment. [`ServiceConfig::embedded`] is the layout `caremesh up` uses: everything
//! under one data directory (SQLite files, the dev PKI, the key-encryption key).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use caremesh_tls::TlsFiles;

use crate::ServiceName;
use crate::clock::{SharedClock, SystemClock};

/// Names of the environment variables. Per-service ones take the service's
/// [`ServiceName::env_prefix`], e.g. `CAREMESH_AUTH_LISTEN`.
pub mod keys {
    /// Root of the embedded layout (default `./data`).
    pub const DATA_DIR: &str = "CAREMESH_DATA_DIR";
    /// A `postgres://` URL switches every service to PostgreSQL (one schema per service);
    /// unset means SQLite files under the data directory.
    pub const DATABASE_URL: &str = "CAREMESH_DATABASE_URL";
    /// Prefix of each service's PostgreSQL schema name (default none: `auth`, `audit`, ...).
    pub const DATABASE_SCHEMA_PREFIX: &str = "CAREMESH_DATABASE_SCHEMA_PREFIX";
    /// Directory holding `ca.crt` and `<service>.crt` / `<service>.key` (default `<data>/pki`).
    pub const TLS_DIR: &str = "CAREMESH_TLS_DIR";
    /// The key-encryption key file (default `<data>/kek.key`).
    pub const KEK_FILE: &str = "CAREMESH_KEK_FILE";
    /// OTLP/gRPC collector; unset means no trace export.
    pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// Suffixes of per-service variables.
    pub const LISTEN_SUFFIX: &str = "LISTEN";
    pub const OPS_LISTEN_SUFFIX: &str = "OPS_LISTEN";
    pub const ENDPOINT_SUFFIX: &str = "ENDPOINT";
}

/// Where configuration values come from.
pub trait EnvSource: Send + Sync {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|value| !value.is_empty())
    }
}

/// A fixed map of values: for tests and for embedding.
#[derive(Clone, Debug, Default)]
pub struct MapEnv(HashMap<String, String>);

impl MapEnv {
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }
}

impl EnvSource for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}={value:?} is invalid: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// Which database a service uses.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://...`.
    pub url: String,
    /// The PostgreSQL schema this service owns (ignored for SQLite, where each service has its
    /// own file).
    pub schema: String,
}

impl DatabaseConfig {
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// The audit outbox relay's pacing.
#[derive(Clone, Copy, Debug)]
pub struct RelayConfig {
    pub batch_size: u64,
    /// How often the relay looks for events when nothing woke it.
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    /// Upper bound of the retry backoff while audit-svc is unreachable.
    pub max_backoff: Duration,
    /// After a new event wakes the relay, how long it waits for more before shipping: one batch
    /// per burst instead of one call (and one outbox write) per event.
    pub linger: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            linger: Duration::from_millis(100),
        }
    }
}

/// Everything the runtime needs to run one service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub service: ServiceName,
    /// The mTLS gRPC listener.
    pub listen: SocketAddr,
    /// The plaintext listener that serves health only (Kubernetes probes).
    pub ops_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
    pub database: DatabaseConfig,
    pub kek_file: PathBuf,
    /// How to reach the other services: `host:port` (or `https://host:port`) per service.
    pub peers: BTreeMap<ServiceName, String>,
    pub relay: RelayConfig,
    pub otlp_endpoint: Option<String>,
    /// Time, as a parameter (tests pass a manual clock).
    pub clock: SharedClock,
}

impl ServiceConfig {
    /// The embedded default layout under `data_dir`: SQLite, the dev PKI in `<data>/pki`, peers on
    /// localhost at their standard ports, listening on loopback.
    pub fn embedded(service: ServiceName, data_dir: &Path) -> Self {
        let pki = data_dir.join("pki");
        Self {
            service,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, service.default_port())),
            ops_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, service.default_ops_port())),
            data_dir: data_dir.to_owned(),
            tls: tls_files(&pki, service),
            database: DatabaseConfig {
                url: sqlite_url(data_dir, service),
                schema: service.database_name().to_owned(),
            },
            kek_file: data_dir.join("kek.key"),
            peers: ServiceName::ALL
                .into_iter()
                .map(|peer| (peer, format!("localhost:{}", peer.default_port())))
                .collect(),
            relay: RelayConfig::default(),
            otlp_endpoint: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The embedded layout with environment overrides applied.
    pub fn from_env(service: ServiceName, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let data_dir = env
            .get(keys::DATA_DIR)
            .map_or_else(|| PathBuf::from("data"), PathBuf::from);
        let mut config = Self::embedded(service, &data_dir);
        if let Some(dir) = env.get(keys::TLS_DIR) {
            config.tls = tls_files(Path::new(&dir), service);
        }
        if let Some(url) = env.get(keys::DATABASE_URL) {
            config.database.url = url;
        }
        if let Some(prefix) = env.get(keys::DATABASE_SCHEMA_PREFIX) {
            config.database.schema = format!("{prefix}{}", service.database_name());
        }
        if let Some(kek) = env.get(keys::KEK_FILE) {
            config.kek_file = PathBuf::from(kek);
        }
        config.otlp_endpoint = env.get(keys::OTLP_ENDPOINT);
        if let Some(addr) = service_var(env, service, keys::LISTEN_SUFFIX) {
            config.listen = parse_addr(&service_key(service, keys::LISTEN_SUFFIX), &addr)?;
        }
        if let Some(addr) = service_var(env, service, keys::OPS_LISTEN_SUFFIX) {
            config.ops_listen = parse_addr(&service_key(service, keys::OPS_LISTEN_SUFFIX), &addr)?;
        }
        for peer in ServiceName::ALL {
            if let Some(endpoint) = service_var(env, peer, keys::ENDPOINT_SUFFIX) {
                config.peers.insert(peer, endpoint);
            }
        }
        Ok(config)
    }

    /// The endpoint of another service.
    pub fn peer(&self, service: ServiceName) -> String {
        self.peers
            .get(&service)
            .cloned()
            .unwrap_or_else(|| format!("localhost:{}", service.default_port()))
    }
}

/// `CAREMESH_<PREFIX>_<SUFFIX>`.
pub fn service_key(service: ServiceName, suffix: &str) -> String {
    format!("CAREMESH_{}_{suffix}", service.env_prefix())
}

fn service_var(env: &dyn EnvSource, service: ServiceName, suffix: &str) -> Option<String> {
    env.get(&service_key(service, suffix))
}

/// A whole number from `key` within `min..=max`, if set; anything else names the variable and
/// `expected`. Services read their own settings with it.
pub fn bounded_u32(
    env: &dyn EnvSource,
    key: &str,
    min: u32,
    max: u32,
    expected: &'static str,
) -> Result<Option<u32>, ConfigError> {
    let Some(value) = env.get(key) else {
        return Ok(None);
    };
    match value.trim().parse::<u32>() {
        Ok(number) if (min..=max).contains(&number) => Ok(Some(number)),
        _ => Err(ConfigError::Invalid {
            key: key.to_owned(),
            value,
            expected,
        }),
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        expected: "an IP address and port, e.g. 0.0.0.0:50051",
    })
}

/// The TLS files of `service` in a PKI directory laid out by `caremesh pki init`.
pub fn tls_files(pki_dir: &Path, service: ServiceName) -> TlsFiles {
    TlsFiles::with_identity(
        pki_dir.join("ca.crt"),
        pki_dir.join(format!("{service}.crt")),
        pki_dir.join(format!("{service}.key")),
    )
}

fn sqlite_url(data_dir: &Path, service: ServiceName) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join(format!("{}.db", service.database_name())).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_embedded_layout() {
        let env = MapEnv::default()
            .set(keys::DATA_DIR, "/srv/caremesh")
            .set(keys::DATABASE_URL, "postgres://db/caremesh")
            .set("CAREMESH_AUTH_LISTEN", "0.0.0.0:6000")
            .set("CAREMESH_AUDIT_ENDPOINT", "https://audit-svc:50055");
        let config = ServiceConfig::from_env(ServiceName::Auth, &env).unwrap();
        assert_eq!(config.listen, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(config.ops_listen.port(), 50151);
        assert!(config.database.is_postgres());
        assert_eq!(config.database.schema, "auth");
        assert_eq!(config.kek_file, PathBuf::from("/srv/caremesh/kek.key"));
        assert_eq!(config.tls.ca, PathBuf::from("/srv/caremesh/pki/ca.crt"));
        assert_eq!(config.peer(ServiceName::Audit), "https://audit-svc:50055");
        assert_eq!(config.peer(ServiceName::Records), "localhost:50054");
    }

    #[test]
    fn a_bad_address_names_the_variable_and_the_expected_form() {
        let env = MapEnv::default().set("CAREMESH_RECORDS_OPS_LISTEN", "everywhere");
        let error = ServiceConfig::from_env(ServiceName::Records, &env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("CAREMESH_RECORDS_OPS_LISTEN"), "{error}");
        assert!(error.contains("e.g. 0.0.0.0:50051"), "{error}");
    }
}
