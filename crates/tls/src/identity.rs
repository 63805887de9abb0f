//! SPIFFE identities read from X.509 certificates (the URI SAN `spiffe://caremesh.local/...`).

use std::fmt;
use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A SPIFFE id such as `spiffe://caremesh.local/svc/audit-svc`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Wraps a string that starts with `spiffe://`; anything else is not a SPIFFE id.
    pub fn parse(uri: &str) -> Option<Self> {
        uri.starts_with("spiffe://").then(|| Self(uri.to_owned()))
    }

    /// `spiffe://<trust_domain>/<path>`.
    pub fn from_parts(trust_domain: &str, path: &str) -> Self {
        Self(format!("spiffe://{trust_domain}/{path}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is on the other end of an accepted connection: a request extension on every call.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub remote_addr: Option<SocketAddr>,
    /// The SPIFFE id of the client certificate, when the client presented one (verified against
    /// the mesh CA during the handshake). Users connect without one.
    pub spiffe_id: Option<SpiffeId>,
}

/// The first SPIFFE URI SAN of a DER certificate, if it has one.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => SpiffeId::parse(uri),
        _ => None,
    })
}
