//! Identity and TLS for the caremesh mesh, shared by the services (through `caremesh-runtime`)
//! and the SDK.
//!
//! - [`ServiceName`], [`SpiffeId`]: the five services, their SPIFFE ids and standard ports.
//! - [`install_crypto_provider`]: the one rustls crypto provider (ring), installed at start-up;
//!   every config is also built with it explicitly, so nothing depends on the process default.
//! - [`TlsFiles`] / [`ReloadingMaterial`]: certificate, key and CA read from PEM files and re-read
//!   when the files change, so rotated certificates apply to new connections without a restart.
//! - [`server`]: the TLS 1.3 server config (client certificates verified against the mesh CA when
//!   offered, optional for users) and the accepted stream that carries the peer's SPIFFE id.
//! - [`client`]: a tonic [`Channel`](tonic::transport::Channel) over our own rustls connector that
//!   checks the server's SPIFFE id, with or without a client certificate.

pub mod client;
mod identity;
mod material;
pub mod server;
mod service;

pub use identity::{PeerIdentity, SpiffeId, spiffe_id_of};
pub use material::{IdentityFiles, Loaded, ReloadingMaterial, TlsFiles};
pub use service::{ServiceName, TRUST_DOMAIN, WEB_ORIGIN_SPIFFE_PATH, operator_spiffe_id, web_origin_spiffe_id};

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider every caremesh TLS object is built with.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide rustls provider. Idempotent: a second call (or a provider
/// installed earlier by the same binary) is not an error. Call it first thing in every binary.
pub fn install_crypto_provider() {
    // An Err means a provider is already installed, which is what we want.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// Errors reading TLS material or setting up a connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("invalid TLS material: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("invalid endpoint {0:?}: expected host:port or https://host:port")]
    Endpoint(String),
    #[error("server presented identity {actual:?}, expected {expected}")]
    WrongPeer { expected: String, actual: Option<String> },
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
}
