//! The bare baseline the benchmarks measure next to caremesh in the same run: tonic's health
//! service answering a unary call with a 1 KB request, served through the runtime's rustls server
//! config and accept loop and called through the SDK's connector. The one implementation lives
//! in `caremesh-loadgen` (`caremesh bench` runs it too); this starts it with a [`TestMesh`]'s PKI.

use std::ops::Deref;

use caremesh_runtime::config::tls_files;

use crate::{Service, TestMesh};

/// A running echo server and a warmed-up channel to it (its `channel`, `request` and `client()`
/// are `caremesh_loadgen::EchoServer`'s).
pub struct EchoServer(caremesh_loadgen::EchoServer);

impl EchoServer {
    /// The echo's TLS for `mesh`: messaging-svc's certificate, the mesh CA.
    pub fn tls(mesh: &TestMesh) -> caremesh_loadgen::EchoTls {
        caremesh_loadgen::EchoTls {
            server: tls_files(mesh.pki().dir(), Service::Messaging),
            ca: mesh.pki().ca_cert(),
            identity: Service::Messaging,
        }
    }

    /// Starts the server with messaging-svc's certificate and warms the channel with `warm_up`
    /// calls.
    pub async fn start(mesh: &TestMesh, warm_up: usize) -> Self {
        Self(
            caremesh_loadgen::EchoServer::start(&Self::tls(mesh), warm_up)
                .await
                .expect("echo server"),
        )
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.0.stop().await;
    }
}

impl Deref for EchoServer {
    type Target = caremesh_loadgen::EchoServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
