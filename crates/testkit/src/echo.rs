//! The bare baseline the benchmarks measure next to caremesh in the same run: tonic's health
//! service answering a unary call with a 1 KB request, served through the runtime's rustls server
//! config and accept loop and called through the SDK's connector. The same TLS as the mesh, no
//! caremesh logic, so a ratio to it means something on a noisy machine.

use caremesh_runtime::config::tls_files;
use caremesh_tls::client::{ChannelOptions, Target};
use caremesh_tls::{ReloadingMaterial, TlsFiles};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::{Service, TestMesh};

/// A running echo server and a warmed-up channel to it.
pub struct EchoServer {
    /// The channel to call it on (share it between tasks like the SDK shares its channels).
    pub channel: Channel,
    /// The request to send: a health check naming a 1 KB service.
    pub request: HealthCheckRequest,
    stop: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoServer {
    /// Starts the server with messaging-svc's certificate and warms the channel with `warm_up`
    /// calls.
    pub async fn start(mesh: &TestMesh, warm_up: usize) -> Self {
        let material = ReloadingMaterial::load(tls_files(mesh.pki().dir(), Service::Messaging)).expect("TLS material");
        let config = caremesh_tls::server::server_config(material).expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (reporter, service) = tonic_health::server::health_reporter();
        let request = HealthCheckRequest {
            service: "x".repeat(1024),
        };
        reporter
            .set_service_status(request.service.clone(), tonic_health::ServingStatus::Serving)
            .await;
        let stop = CancellationToken::new();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    caremesh_tls::server::accept(listener, config),
                    stop.clone().cancelled_owned(),
                ),
        );
        let client_material = ReloadingMaterial::load(TlsFiles::ca_only(mesh.pki().ca_cert())).expect("CA");
        let target = Target::parse(&addr.to_string(), Some(Service::Messaging.spiffe_id())).expect("target");
        let channel =
            caremesh_tls::client::channel(target, client_material, ChannelOptions::default()).expect("channel");
        let mut warm = HealthClient::new(channel.clone());
        for _ in 0..warm_up {
            warm.check(request.clone()).await.expect("echo");
        }
        Self {
            channel,
            request,
            stop,
            server,
        }
    }

    /// A client on the shared channel.
    pub fn client(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}
