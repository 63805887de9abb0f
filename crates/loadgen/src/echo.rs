//! The bare baseline the benchmarks measure next to caremesh in the same run: tonic's health
//! service answering a unary call with a 1 KB request, served through the runtime's rustls server
//! config and accept loop and called through the SDK's connector. The same TLS as the mesh, no
//! caremesh logic, so a ratio to it means something on a noisy machine. It runs in the load
//! generator's process with a service certificate of the mesh's PKI.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use caremesh_runtime::ServiceName;
use caremesh_tls::client::{ChannelOptions, Target};
use caremesh_tls::{ReloadingMaterial, TlsError, TlsFiles};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::stats::{Latencies, ms};

/// The TLS the echo server and its client use.
#[derive(Clone, Debug)]
pub struct EchoTls {
    /// The server's certificate, key and CA (a service's files from the mesh's PKI).
    pub server: TlsFiles,
    /// The CA the client trusts.
    pub ca: PathBuf,
    /// The service whose certificate the server presents (the client checks its SPIFFE id).
    pub identity: ServiceName,
}

/// Why the echo could not run.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("echo TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("echo listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("echo call: {0}")]
    Call(#[from] tonic::Status),
    #[error("echo task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running echo server and a warmed-up channel to it.
#[derive(Debug)]
pub struct EchoServer {
    /// The channel to call it on (share it between tasks like the SDK shares its channels).
    pub channel: Channel,
    /// The request to send: a health check naming a 1 KB service.
    pub request: HealthCheckRequest,
    stop: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoServer {
    /// Starts the server on a port-0 loopback listener and warms the channel with `warm_up` calls.
    pub async fn start(tls: &EchoTls, warm_up: usize) -> Result<Self, EchoError> {
        caremesh_tls::install_crypto_provider();
        let material = ReloadingMaterial::load(tls.server.clone())?;
        let config = caremesh_tls::server::server_config(material)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
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
        let echo = async {
            let client_material = ReloadingMaterial::load(TlsFiles::ca_only(&tls.ca))?;
            let target = Target::parse(&addr.to_string(), Some(tls.identity.spiffe_id()))?;
            let channel = caremesh_tls::client::channel(target, client_material, ChannelOptions::default())?;
            let mut warm = HealthClient::new(channel.clone());
            for _ in 0..warm_up {
                warm.check(request.clone()).await?;
            }
            Ok::<_, EchoError>(channel)
        };
        match echo.await {
            Ok(channel) => Ok(Self {
                channel,
                request,
                stop,
                server,
            }),
            Err(error) => {
                stop.cancel();
                let _ = server.await;
                Err(error)
            }
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

/// What the baseline measured.
#[derive(Clone, Debug)]
pub struct EchoFigures {
    pub tasks: usize,
    pub seconds: u64,
    pub count: usize,
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl EchoFigures {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "tasks": self.tasks,
            "seconds": self.seconds,
            "count": self.count,
            "ops_per_second": self.rate,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "p999_ms": ms(self.p999),
        })
    }
}

/// Calls the echo from `tasks` concurrent tasks on one shared channel for `seconds`, in a closed
/// loop (as in the messaging bench).
pub async fn drive(tls: &EchoTls, tasks: usize, seconds: u64) -> Result<EchoFigures, EchoError> {
    let echo = EchoServer::start(tls, 200).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let mut client = echo.client();
            let request = echo.request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    client.check(request.clone()).await?;
                    latencies.push(sent.elapsed());
                }
                Ok::<_, tonic::Status>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failure = None;
    for handle in handles {
        match handle.await {
            Ok(Ok(part)) => latencies.extend(part),
            Ok(Err(status)) => failure = Some(EchoError::Call(status)),
            Err(error) => failure = Some(EchoError::Task(error)),
        }
    }
    let elapsed = started.elapsed();
    echo.stop().await;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let latencies = Latencies::sorted(latencies);
    Ok(EchoFigures {
        tasks,
        seconds,
        count: latencies.len(),
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: latencies.percentile(0.5),
        p99: latencies.percentile(0.99),
        p999: latencies.percentile(0.999),
    })
}
