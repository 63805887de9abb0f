//! Development PKI for the caremesh mesh.
//!
//! Every caremesh service talks mutual TLS 1.3 (DESIGN.md §3.2): a service certificate carries DNS
//! SANs and the URI SAN `spiffe://caremesh.local/svc/<service>`, an operator certificate carries
//! `spiffe://caremesh.local/operator/<name>`. This crate generates and loads a small development
//! PKI with those identities: one self-signed ECDSA P-256 CA and leaf certificates issued by it.
//!
//! It is meant for `caremesh pki init`, `caremesh up` (which calls [`init`] at every start; it is
//! idempotent and never overwrites a file) and the tests. Production deployments use cert-manager or
//! the hospital's CA instead; nothing in the services depends on this crate at run time.
//!
//! ```no_run
//! # fn main() -> Result<(), caremesh_pki::Error> {
//! use caremesh_pki::{PkiLayout, init};
//! let dir = std::path::Path::new("data/pki");
//! let report = init(dir, &["auth-svc", "audit-svc"], &["admin"], &[])?;
//! println!("created {} files", report.created.len());
//! let layout = PkiLayout::new(dir);
//! assert!(layout.service_cert("auth-svc").exists());
//! # Ok(())
//! # }
//! ```
//!
//! Only the `ring` crypto backend is used (rcgen and x509-parser are built with `ring`).

mod ca;
mod error;
mod fsutil;
mod init;
mod layout;

pub use ca::{CertificateAuthority, IssuedCert, LeafSpec, PrivateKeyPem};
pub use error::{Error, Result};
pub use init::{InitReport, init, init_web};
pub use layout::PkiLayout;

/// The SPIFFE trust domain of the mesh.
pub const TRUST_DOMAIN: &str = "caremesh.local";

/// Common name of the CA that [`init`] generates.
pub const DEV_CA_COMMON_NAME: &str = "caremesh development CA";

/// The SPIFFE id of a service: `spiffe://caremesh.local/svc/<service>`.
pub fn service_spiffe_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/svc/{service}")
}

/// The SPIFFE id of an operator: `spiffe://caremesh.local/operator/<name>`.
pub fn operator_spiffe_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/operator/{name}")
}

/// The SPIFFE id of the web origin: `spiffe://caremesh.local/web/caremesh-web`. Its certificate
/// authenticates it to the services as the one client whose forwarded browser address they believe.
pub fn web_origin_spiffe_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/web/caremesh-web")
}

/// Checks a service name: it becomes a DNS SAN, a SPIFFE path segment and a file name, so it must
/// be a DNS label (lowercase ASCII letters, digits and `-`, not starting or ending with `-`, at most
/// 63 characters), e.g. `auth-svc`.
pub fn validate_service_name(service: &str) -> Result<()> {
    let reason = if service.is_empty() {
        Some("it is empty")
    } else if service.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !service
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase ASCII letters, digits and '-' are allowed")
    } else if service.starts_with('-') || service.ends_with('-') {
        Some("it must not start or end with '-'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            kind: "service",
            name: service.to_owned(),
            reason,
        }),
    }
}

/// Checks an operator name: it becomes a SPIFFE path segment and part of a file name, so it may
/// contain ASCII letters, digits, `.`, `_` and `-`, must not start with `.` or `-`, and has at most
/// 64 characters, e.g. `alice`.
pub fn validate_operator_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("it must not start with '.' or '-'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            kind: "operator",
            name: name.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        assert_eq!(service_spiffe_id("auth-svc"), "spiffe://caremesh.local/svc/auth-svc");
        assert_eq!(operator_spiffe_id("alice"), "spiffe://caremesh.local/operator/alice");
    }

    #[test]
    fn names() {
        for ok in ["auth-svc", "a", "records-svc2"] {
            validate_service_name(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "Auth", "a/b", "..", "a.b", &"x".repeat(64)] {
            assert!(validate_service_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["alice", "Bob.Smith", "ops_1", "a-b"] {
            validate_operator_name(ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "-x", "a/b", "a b", "é"] {
            assert!(validate_operator_name(bad).is_err(), "{bad:?}");
        }
    }
}
