//! The five services of the mesh: their names, SPIFFE ids, default ports and config prefixes.

use std::fmt;

use crate::SpiffeId;

/// The SPIFFE trust domain of the mesh.
pub const TRUST_DOMAIN: &str = "caremesh.local";

/// One of the five caremesh services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Auth,
    Messaging,
    AbeAuthority,
    Records,
    Audit,
}

impl ServiceName {
    pub const ALL: [ServiceName; 5] = [
        ServiceName::Auth,
        ServiceName::Messaging,
        ServiceName::AbeAuthority,
        ServiceName::Records,
        ServiceName::Audit,
    ];

    /// The name used for certificates, DNS, databases and logs, e.g. `auth-svc`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceName::Auth => "auth-svc",
            ServiceName::Messaging => "messaging-svc",
            ServiceName::AbeAuthority => "abe-authority-svc",
            ServiceName::Records => "records-svc",
            ServiceName::Audit => "audit-svc",
        }
    }

    /// The upper-case infix of this service's environment variables, e.g. `CAREMESH_AUTH_LISTEN`.
    pub const fn env_prefix(self) -> &'static str {
        match self {
            ServiceName::Auth => "AUTH",
            ServiceName::Messaging => "MESSAGING",
            ServiceName::AbeAuthority => "ABE",
            ServiceName::Records => "RECORDS",
            ServiceName::Audit => "AUDIT",
        }
    }

    /// The mTLS gRPC port of DESIGN.md §1.
    pub const fn default_port(self) -> u16 {
        match self {
            ServiceName::Auth => 50051,
            ServiceName::Messaging => 50052,
            ServiceName::AbeAuthority => 50053,
            ServiceName::Records => 50054,
            ServiceName::Audit => 50055,
        }
    }

    /// The plaintext ops (health only) port.
    pub const fn default_ops_port(self) -> u16 {
        self.default_port() + 100
    }

    /// The database schema (PostgreSQL) or file stem (SQLite) this service owns.
    pub const fn database_name(self) -> &'static str {
        match self {
            ServiceName::Auth => "auth",
            ServiceName::Messaging => "messaging",
            ServiceName::AbeAuthority => "abe_authority",
            ServiceName::Records => "records",
            ServiceName::Audit => "audit",
        }
    }

    pub fn spiffe_id(self) -> SpiffeId {
        SpiffeId::from_parts(TRUST_DOMAIN, &format!("svc/{}", self.as_str()))
    }

    /// The service called `name` (e.g. `auth-svc`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|service| service.as_str() == name)
    }

    pub fn from_spiffe_id(id: &SpiffeId) -> Option<Self> {
        Self::ALL.into_iter().find(|service| service.spiffe_id() == *id)
    }
}

/// The SPIFFE id of an operator (grpcurl, `caremesh` admin commands).
pub fn operator_spiffe_id(name: &str) -> SpiffeId {
    SpiffeId::from_parts(TRUST_DOMAIN, &format!("operator/{name}"))
}

/// The SPIFFE id of the web origin (`caremesh web`). It is not a service: no internal RPC allows
/// it. The services believe one thing of it alone, the browser's address it forwards (see
/// `caremesh_runtime::grpc::ForwardedClientLayer`).
pub fn web_origin_spiffe_id() -> SpiffeId {
    SpiffeId::from_parts(TRUST_DOMAIN, WEB_ORIGIN_SPIFFE_PATH)
}

/// The path of [`web_origin_spiffe_id`] (`caremesh_pki` issues the web certificate with it).
pub const WEB_ORIGIN_SPIFFE_PATH: &str = "web/caremesh-web";

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
