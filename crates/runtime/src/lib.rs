//! The mesh runtime: everything a caremesh service needs besides its own domain, used by all five
//! services the same way (see `ARCHITECTURE.md`).
//!
//! - [`auth`]: users authenticated by bearer token, verified locally with auth-svc's keys.
//! - [`revocation`]: auth-svc's revocation feed, polled, so revoked sessions and removed
//!   attributes take effect within a second on every service.
//! - [`config`]: typed configuration, `CAREMESH_*` overrides through an injectable source.
//! - [`mesh`]: start a service (TLS, key-encryption key, migrated database) and serve it over mTLS
//!   with health, reflection, the peer allowlist and graceful shutdown.
//! - [`grpc`]: domain errors to gRPC statuses (the one mapping), peer allowlist, caller identity.
//! - [`error`]: the tonic-free error type of domain code.
//! - [`outbox`]: audit events written in the caller's transaction and relayed to audit-svc.
//! - [`telemetry`]: tracing, OTLP export, W3C trace context across calls.
//! - [`entry`]: the body of every service binary's `main`.
//! - [`blob`], [`attachments`]: encrypted attachment blobs (files or PostgreSQL rows) and their
//!   bookkeeping: owner, parent, quota, two-phase deletion.
//! - [`db`], [`kek`], [`clock`], [`time`]: storage, secrets at rest, time as a parameter.

pub mod attachments;
pub mod auth;
pub mod blob;
pub mod clock;
pub mod config;
pub mod db;
pub mod entry;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod kek;
pub mod mesh;
pub mod migration;
pub mod outbox;
pub mod revocation;
pub mod telemetry;
pub mod time;

pub use caremesh_tls as tls;
pub use caremesh_tls::{ServiceName, TRUST_DOMAIN, operator_spiffe_id};
pub use error::{Error, ErrorCode, Result};
pub use mesh::{Listeners, MeshChannel, MeshRouter, ServiceRuntime, StartError};
