//! The caremesh client SDK. Applications and `carectl` talk to the mesh only through it.
//!
//! [`Client`] holds one lazily connected channel per service, over TLS 1.3 with the mesh CA as
//! the trust anchor and each server's SPIFFE id checked. Users connect without a client
//! certificate (they authenticate with tokens); operators may present theirs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caremesh_tls::client::{ChannelOptions, Target};
use caremesh_tls::{ReloadingMaterial, TlsError, TlsFiles};
use futures::future::join_all;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use caremesh_proto as proto;
pub use caremesh_tls::ServiceName;

pub mod abe;
pub mod attachments;
pub mod audit;
pub mod auth;
pub mod devices;
pub mod group;
pub mod messaging;
mod opened;
pub mod profile;
pub mod record_attachments;
pub mod records;
pub mod sesame;
mod wire;

/// What went wrong, for a person: a refused call says the server's code, reason and message.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("TLS setup: {0}")]
    Tls(#[from] TlsError),
    #[error("{}", describe_status(.0))]
    Status(tonic::Status),
    #[error("unexpected answer from the server: {0}")]
    Protocol(&'static str),
    #[error("no endpoint configured for {0}")]
    NoEndpoint(ServiceName),
    #[error("{0}")]
    Local(String),
}

/// Whether a call failed for a reason that retrying may cure: the service is unavailable, or the
/// connection closed under a request before it was sent (hyper cancels it; tonic reports
/// CANCELLED, which no caremesh server sends).
pub fn is_transient(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Cancelled => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

impl From<tonic::Status> for SdkError {
    fn from(status: tonic::Status) -> Self {
        if status.code() == tonic::Code::Cancelled && is_transient(&status) {
            return SdkError::Status(tonic::Status::unavailable(format!(
                "the connection closed before the request was sent ({}); retry",
                status.message()
            )));
        }
        SdkError::Status(status)
    }
}

impl SdkError {
    /// The gRPC code of a refused call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            SdkError::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// The stable reason (`google.rpc.ErrorInfo.reason`) of a refused call.
    pub fn reason(&self) -> Option<String> {
        use tonic_types::StatusExt;
        match self {
            SdkError::Status(status) => status.get_details_error_info().map(|info| info.reason),
            _ => None,
        }
    }
}

fn describe_status(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let reason = status
        .get_details_error_info()
        .map(|info| format!(" [{}]", info.reason))
        .unwrap_or_default();
    let mut text = format!("{:?}{reason}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// How to reach the mesh.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The mesh CA certificate (PEM).
    pub ca: PathBuf,
    /// An operator or service certificate and key, when the caller has one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// `host:port` per service.
    pub endpoints: BTreeMap<ServiceName, String>,
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Every service on `host` at its standard port.
    pub fn new(ca: impl Into<PathBuf>, host: &str) -> Self {
        Self {
            ca: ca.into(),
            identity: None,
            endpoints: ServiceName::ALL
                .into_iter()
                .map(|service| (service, format!("{host}:{}", service.default_port())))
                .collect(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    pub fn with_endpoint(mut self, service: ServiceName, endpoint: impl Into<String>) -> Self {
        self.endpoints.insert(service, endpoint.into());
        self
    }
}

/// A connection to the mesh: one channel per service.
#[derive(Clone, Debug)]
pub struct Client {
    channels: BTreeMap<ServiceName, (String, Channel)>,
}

impl Client {
    /// Sets up the channels; nothing is dialled until the first call.
    pub fn connect(options: &ConnectOptions) -> Result<Self, SdkError> {
        caremesh_tls::install_crypto_provider();
        let files = match &options.identity {
            Some((cert, key)) => TlsFiles::with_identity(&options.ca, cert, key),
            None => TlsFiles::ca_only(&options.ca),
        };
        let material: Arc<ReloadingMaterial> = ReloadingMaterial::load(files)?;
        let channel_options = ChannelOptions {
            connect_timeout: options.connect_timeout,
            request_timeout: None,
        };
        let mut channels = BTreeMap::new();
        for (service, endpoint) in &options.endpoints {
            let target = Target::parse(endpoint, Some(service.spiffe_id()))?;
            let channel = caremesh_tls::client::channel(target, Arc::clone(&material), channel_options)?;
            channels.insert(*service, (endpoint.clone(), channel));
        }
        Ok(Self { channels })
    }

    /// The channel to `service`, for the generated clients in [`proto`].
    pub fn channel(&self, service: ServiceName) -> Option<Channel> {
        self.channels.get(&service).map(|(_, channel)| channel.clone())
    }

    fn require(&self, service: ServiceName) -> Result<Channel, SdkError> {
        self.channel(service).ok_or(SdkError::NoEndpoint(service))
    }

    /// Health of every service, checked concurrently.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        join_all(self.channels.iter().map(|(service, (endpoint, channel))| async move {
            let started = Instant::now();
            let health = check(channel.clone()).await;
            ServiceStatus {
                service: *service,
                endpoint: endpoint.clone(),
                health,
                latency: started.elapsed(),
            }
        }))
        .await
    }
}

async fn check(channel: Channel) -> Health {
    let request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(Duration::from_secs(10), HealthClient::new(channel).check(request)).await {
        Err(_) => Health::Unreachable("no answer within 10s".to_owned()),
        Ok(Err(status)) => Health::Unreachable(describe_status(&status)),
        Ok(Ok(response)) => match response.get_ref().status() {
            ServingStatus::Serving => Health::Serving,
            other => Health::NotServing(other.as_str_name().to_owned()),
        },
    }
}

/// One service's answer to a health check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServiceStatus {
    #[serde(serialize_with = "service_name")]
    pub service: ServiceName,
    pub endpoint: String,
    pub health: Health,
    #[serde(serialize_with = "millis")]
    pub latency: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum Health {
    Serving,
    NotServing(String),
    Unreachable(String),
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
}

fn service_name<S: serde::Serializer>(service: &ServiceName, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(service.as_str())
}
