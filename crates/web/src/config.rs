//! The web origin's settings, from the environment like the services' own:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CAREMESH_WEB_LISTEN` | `127.0.0.1:8443` | the HTTPS listener |
//! | `CAREMESH_WEB_ROOT` | `web/dist` (relative to the working directory) | the built app |
//! | `CAREMESH_TLS_DIR` | `<data dir>/pki` | `ca.crt`, `web.crt`, `web.key` |
//! | `CAREMESH_<SERVICE>_ENDPOINT` | `localhost:<standard port>` | where each service is reached |

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use caremesh_runtime::ServiceName;
use caremesh_runtime::config::{ConfigError, EnvSource, keys, service_key};
use caremesh_tls::TlsFiles;

/// `CAREMESH_WEB_LISTEN`: the HTTPS listener.
pub const WEB_LISTEN: &str = "CAREMESH_WEB_LISTEN";
/// `CAREMESH_WEB_ROOT`: the directory of the built web app.
pub const WEB_ROOT: &str = "CAREMESH_WEB_ROOT";
/// The default port of the web origin.
pub const DEFAULT_PORT: u16 = 8443;
/// The default app directory, relative to the working directory.
pub const DEFAULT_ROOT: &str = "web/dist";

#[derive(Clone, Debug)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// The built app (`index.html`, `assets/...`).
    pub root: PathBuf,
    /// The origin's server certificate and key, and the CA the services' certificates chain to.
    pub tls: TlsFiles,
    /// `host:port` of each service's gRPC port.
    pub upstreams: BTreeMap<ServiceName, String>,
}

impl WebConfig {
    /// The defaults for a PKI directory laid out by `caremesh pki init` (`web.crt`, `web.key`,
    /// `ca.crt`), services on localhost at their standard ports.
    pub fn new(pki_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            root: PathBuf::from(DEFAULT_ROOT),
            tls: TlsFiles::with_identity(pki_dir.join("ca.crt"), pki_dir.join("web.crt"), pki_dir.join("web.key")),
            upstreams: ServiceName::ALL
                .into_iter()
                .map(|service| (service, format!("localhost:{}", service.default_port())))
                .collect(),
        }
    }

    /// The defaults with `CAREMESH_DATA_DIR`, `CAREMESH_TLS_DIR`, `CAREMESH_WEB_LISTEN`,
    /// `CAREMESH_WEB_ROOT` and `CAREMESH_<SERVICE>_ENDPOINT` applied.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let data_dir = env
            .get(keys::DATA_DIR)
            .map_or_else(|| PathBuf::from("data"), PathBuf::from);
        let pki_dir = env
            .get(keys::TLS_DIR)
            .map_or_else(|| data_dir.join("pki"), PathBuf::from);
        let mut config = Self::new(&pki_dir);
        if let Some(value) = env.get(WEB_LISTEN) {
            config.listen = value.parse().map_err(|_| ConfigError::Invalid {
                key: WEB_LISTEN.to_owned(),
                value: value.clone(),
                expected: "an IP address and port, e.g. 127.0.0.1:8443",
            })?;
        }
        if let Some(root) = env.get(WEB_ROOT) {
            config.root = PathBuf::from(root);
        }
        for service in ServiceName::ALL {
            if let Some(endpoint) = env.get(&service_key(service, keys::ENDPOINT_SUFFIX)) {
                config.upstreams.insert(service, endpoint);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use caremesh_runtime::config::MapEnv;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let config = WebConfig::from_env(&MapEnv::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(config.root, Path::new("web/dist"));
        assert_eq!(config.tls.ca, Path::new("data/pki/ca.crt"));
        assert_eq!(config.upstreams[&ServiceName::Audit], "localhost:50055");

        let env = MapEnv::default()
            .set(WEB_LISTEN, "0.0.0.0:9443")
            .set(WEB_ROOT, "/srv/web")
            .set(keys::TLS_DIR, "/etc/caremesh/tls")
            .set("CAREMESH_AUTH_ENDPOINT", "auth-svc:50051");
        let config = WebConfig::from_env(&env).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9443".parse().unwrap());
        assert_eq!(config.root, Path::new("/srv/web"));
        assert_eq!(config.tls.ca, Path::new("/etc/caremesh/tls/ca.crt"));
        assert_eq!(config.upstreams[&ServiceName::Auth], "auth-svc:50051");

        let bad = MapEnv::default().set(WEB_LISTEN, "localhost");
        assert!(WebConfig::from_env(&bad).is_err());
    }
}
