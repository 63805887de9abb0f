//! The client side: a tonic channel over caremesh's own rustls connector (tonic's TLS stays off so
//! that no second crypto provider enters the build). TLS 1.3, the CA from our files (re-read when
//! they change), our client certificate when we have one, and a check of the server's SPIFFE id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::{ReloadingMaterial, SpiffeId, TlsError, spiffe_id_of};

/// Where to connect and whom to expect there.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`; the host is also the TLS server name.
    pub authority: String,
    /// The SPIFFE id the server must present, e.g. `spiffe://caremesh.local/svc/audit-svc`.
    /// `None` accepts any certificate the CA signed.
    pub expected_peer: Option<SpiffeId>,
}

impl Target {
    /// Parses `https://host:port`, `http://host:port` or `host:port`.
    pub fn parse(endpoint: &str, expected_peer: Option<SpiffeId>) -> Result<Self, TlsError> {
        let authority = endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let valid = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(TlsError::Endpoint(endpoint.to_owned()));
        }
        Ok(Self {
            authority: authority.to_owned(),
            expected_peer,
        })
    }

    fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Timeouts for a channel.
#[derive(Clone, Copy, Debug)]
pub struct ChannelOptions {
    pub connect_timeout: Duration,
    /// Per-call deadline; `None` for channels that carry long-lived streams.
    pub request_timeout: Option<Duration>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
        }
    }
}

/// A lazily connecting channel: nothing is dialled until the first call, and a dropped connection
/// is re-established (with a fresh handshake, so rotated certificates apply) on the next call.
pub fn channel(target: Target, material: Arc<ReloadingMaterial>, options: ChannelOptions) -> Result<Channel, TlsError> {
    let mut endpoint = Endpoint::from_shared(format!("http://{}", target.authority))
        .map_err(|_| TlsError::Endpoint(target.authority.clone()))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(timeout) = options.request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let server_name =
        ServerName::try_from(target.host().to_owned()).map_err(|_| TlsError::ServerName(target.host().to_owned()))?;
    Ok(endpoint.connect_with_connector_lazy(MeshConnector {
        target: Arc::new(target),
        server_name,
        material,
    }))
}

/// Builds the client config for one connection from the material as it is now.
pub fn client_config(material: &ReloadingMaterial) -> Result<Arc<ClientConfig>, TlsError> {
    let loaded = material.current();
    let builder = ClientConfig::builder_with_provider(Arc::clone(material.provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(Arc::clone(&loaded.server_verifier));
    let mut config = match &loaded.certified_key {
        Some(key) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(Arc::clone(key)))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Clone)]
struct MeshConnector {
    target: Arc<Target>,
    server_name: ServerName<'static>,
    material: Arc<ReloadingMaterial>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, TlsError>> + Send>>;

impl tower_service::Service<Uri> for MeshConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = TlsError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let config = client_config(&this.material)?;
            let tcp = TcpStream::connect(&this.target.authority).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config)
                .connect(this.server_name.clone(), tcp)
                .await?;
            if let Some(expected) = &this.target.expected_peer {
                let actual = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(spiffe_id_of);
                if actual.as_ref() != Some(expected) {
                    return Err(TlsError::WrongPeer {
                        expected: expected.to_string(),
                        actual: actual.map(|id| id.to_string()),
                    });
                }
            }
            Ok(TokioIo::new(tls))
        })
    }
}
