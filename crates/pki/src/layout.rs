//! Names of the files inside a PKI directory.

use std::path::{Path, PathBuf};

/// The files of a PKI directory:
///
/// | file | contents |
/// |---|---|
/// | `ca.crt`, `ca.key` | the CA certificate and private key |
/// | `<service>.crt`, `<service>.key` | a service's certificate and key (e.g. `auth-svc.crt`) |
/// | `operator-<name>.crt`, `operator-<name>.key` | an operator's client certificate and key |
/// | `web.crt`, `web.key` | the web origin's server certificate and key (`localhost`, no SPIFFE id) |
///
/// Certificates are PEM (`CERTIFICATE`), keys are PEM PKCS#8 (`PRIVATE KEY`), mode 0600.
///
/// The methods only join paths; they do not validate names (see
/// [`validate_service_name`](crate::validate_service_name) and
/// [`validate_operator_name`](crate::validate_operator_name), which [`init`](crate::init) applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiLayout {
    dir: PathBuf,
}

impl PkiLayout {
    /// The layout of the PKI directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The PKI directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/ca.crt`
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `<dir>/ca.key`
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// `<dir>/<service>.crt`
    pub fn service_cert(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.crt"))
    }

    /// `<dir>/<service>.key`
    pub fn service_key(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.key"))
    }

    /// `<dir>/web.crt`: the web origin's HTTPS certificate.
    pub fn web_cert(&self) -> PathBuf {
        self.dir.join("web.crt")
    }

    /// `<dir>/web.key`
    pub fn web_key(&self) -> PathBuf {
        self.dir.join("web.key")
    }

    /// `<dir>/operator-<name>.crt`
    pub fn operator_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("operator-{name}.crt"))
    }

    /// `<dir>/operator-<name>.key`
    pub fn operator_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("operator-{name}.key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let l = PkiLayout::new("/p");
        assert_eq!(l.dir(), Path::new("/p"));
        assert_eq!(l.ca_cert(), Path::new("/p/ca.crt"));
        assert_eq!(l.ca_key(), Path::new("/p/ca.key"));
        assert_eq!(l.service_cert("auth-svc"), Path::new("/p/auth-svc.crt"));
        assert_eq!(l.service_key("auth-svc"), Path::new("/p/auth-svc.key"));
        assert_eq!(l.operator_cert("alice"), Path::new("/p/operator-alice.crt"));
        assert_eq!(l.operator_key("alice"), Path::new("/p/operator-alice.key"));
        assert_eq!(l.web_cert(), Path::new("/p/web.crt"));
        assert_eq!(l.web_key(), Path::new("/p/web.key"));
    }
}
