//! What every service runs on: [`ServiceRuntime::start`] loads TLS material, the key-encryption
//! key and the database (migrated); [`ServiceRuntime::serve`] serves the service's gRPC routes on
//! the mTLS port (native gRPC and gRPC-Web, with health, reflection, trace context and the peer
//! allowlist) and health on the plaintext ops port, runs the audit relay and the revocation feed's
//! poller, and drains in-flight calls on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use caremesh_tls::client::{ChannelOptions, Target};
use caremesh_tls::{ReloadingMaterial, TlsError};
use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

use crate::auth::{KeySetVerifier, Principal, TokenVerifier, bearer_token};
use crate::clock::SharedClock;
use crate::config::ServiceConfig;
use crate::grpc::{ForwardedClientLayer, PeerPolicy, PeerPolicyLayer};
use crate::kek::{Kek, KekError};
use crate::outbox::Outbox;
use crate::revocation::RevocationFeed;
use crate::telemetry::{TraceContextInterceptor, TraceContextLayer};
use crate::{ServiceName, db};

/// A channel to another mesh service: mTLS with our service certificate, the peer's SPIFFE id
/// checked, trace context injected into every call.
pub type MeshChannel = InterceptedService<Channel, TraceContextInterceptor>;

/// How long in-flight calls may take to finish after shutdown is signalled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{service}: TLS material: {source}")]
    Tls { service: ServiceName, source: TlsError },
    #[error("{service}: key-encryption key: {source}")]
    Kek { service: ServiceName, source: KekError },
    #[error("{service}: database: {source}")]
    Database { service: ServiceName, source: DbErr },
    #[error("{service}: cannot bind {addr}: {source}")]
    Bind {
        service: ServiceName,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{service}: reflection: {message}")]
    Reflection { service: ServiceName, message: String },
    #[error("{service}: configuration: {source}")]
    Config {
        service: ServiceName,
        source: crate::config::ConfigError,
    },
    #[error("{service}: start-up failed: {source}")]
    Init { service: ServiceName, source: crate::Error },
    #[error("{service}: server failed: {source}")]
    Serve {
        service: ServiceName,
        source: tonic::transport::Error,
    },
}

/// The two listeners of a service.
#[derive(Debug)]
pub struct Listeners {
    /// mTLS gRPC.
    pub grpc: TcpListener,
    /// Plaintext, health only.
    pub ops: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &ServiceConfig) -> Result<Self, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                service: config.service,
                addr,
                source,
            })
        };
        Ok(Self {
            grpc: bind(config.listen).await?,
            ops: bind(config.ops_listen).await?,
        })
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.local_addr().ok()
    }
}

/// The gRPC services one caremesh service exposes, with their names for health and reflection.
#[derive(Debug, Default)]
pub struct MeshRouter {
    routes: Routes,
    names: Vec<&'static str>,
}

impl MeshRouter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with<S>(mut self, service: S) -> Self
    where
        S: tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    pub fn service_names(&self) -> &[&'static str] {
        &self.names
    }
}

/// The shared state of a running service.
#[derive(Debug, Clone)]
pub struct ServiceRuntime {
    pub config: ServiceConfig,
    pub db: DatabaseConnection,
    pub clock: SharedClock,
    pub kek: Arc<Kek>,
    pub tls: Arc<ReloadingMaterial>,
    pub outbox: Outbox,
    /// This process's writers to `db`, in turn (see [`db::Writer`]): the relay and the service
    /// share it.
    pub writer: db::Writer,
    /// Verifies users' access tokens with auth-svc's published keys.
    pub tokens: Arc<dyn TokenVerifier>,
    /// auth-svc's revocation feed, which `tokens` applies; [`ServiceRuntime::serve`] polls it.
    pub revocations: Arc<RevocationFeed>,
    shutdown: CancellationToken,
}

impl ServiceRuntime {
    /// Loads TLS material and the key-encryption key, connects to the database and migrates it
    /// with `M`.
    pub async fn start<M: MigratorTrait>(config: ServiceConfig) -> Result<Self, StartError> {
        caremesh_tls::install_crypto_provider();
        let service = config.service;
        let tls = ReloadingMaterial::load(config.tls.clone()).map_err(|source| StartError::Tls { service, source })?;
        let kek = Kek::load(&config.kek_file).map_err(|source| StartError::Kek { service, source })?;
        let db = db::connect_and_migrate::<M>(&config.database)
            .await
            .map_err(|source| StartError::Database { service, source })?;
        let clock = Arc::clone(&config.clock);
        let auth = mesh_channel(&config, &tls, ServiceName::Auth, ChannelOptions::default())?;
        let verifier = KeySetVerifier::new(auth);
        Ok(Self {
            outbox: Outbox::new(service, Arc::clone(&clock)),
            writer: db::Writer::new(db.clone()),
            revocations: verifier.revocations(),
            tokens: Arc::new(verifier),
            config,
            db,
            clock,
            kek: Arc::new(kek),
            tls,
            shutdown: CancellationToken::new(),
        })
    }

    /// The verified user behind `request`'s bearer token.
    pub async fn authenticate<T>(&self, request: &tonic::Request<T>) -> Result<Principal, crate::Error> {
        let token = bearer_token(request.metadata())?;
        self.tokens.verify(token, self.clock.now()).await
    }

    /// Resolves once `principal`'s session is revoked: a long-lived stream ends with it
    /// ([`crate::grpc::close_when_revoked`]).
    pub fn until_revoked(&self, principal: &Principal) -> futures::future::BoxFuture<'static, crate::Error> {
        self.revocations.until_revoked(principal.clone())
    }

    pub fn service(&self) -> ServiceName {
        self.config.service
    }

    /// A channel to `peer` (lazily connected; the peer's identity is checked at each handshake).
    pub fn channel(&self, peer: ServiceName, options: ChannelOptions) -> Result<MeshChannel, StartError> {
        mesh_channel(&self.config, &self.tls, peer, options)
    }

    /// Cancelled when the service starts shutting down: long-lived streams and background tasks
    /// watch it so that draining finishes.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until `shutdown` completes, then drains in-flight calls (bounded by a timeout).
    pub async fn serve(
        self,
        router: MeshRouter,
        policy: PeerPolicy,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let service = self.config.service;
        let token = self.shutdown.clone();
        let relay_channel = self.channel(
            ServiceName::Audit,
            ChannelOptions {
                request_timeout: Some(self.config.relay.request_timeout),
                ..ChannelOptions::default()
            },
        )?;
        let relay = self.outbox.relay(self.writer.clone(), relay_channel, self.config.relay);
        let relay_task = tokio::spawn(relay.run(token.child_token()));
        let feed_task = tokio::spawn(Arc::clone(&self.revocations).run(token.child_token()));

        let MeshRouter { routes, names } = router;
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &names {
            health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        // grpcurl needs reflection on every port it is pointed at: the ops port lists health only.
        let ops_reflection = reflection(&[], service)?;
        let reflection = reflection(&names, service)?;
        let tls_config = caremesh_tls::server::server_config(Arc::clone(&self.tls))
            .map_err(|source| StartError::Tls { service, source })?;
        let incoming = caremesh_tls::server::accept(listeners.grpc, tls_config);

        // gRPC-Web (HTTP/1.1 or HTTP/2) besides native gRPC. The translation is the outermost
        // layer, so the trace context, the web origin's forwarded browser address and the peer
        // allowlist see every call as native gRPC, and a refusal reaches a gRPC-Web caller in its
        // own framing. No CORS layer: the web origin is
        // same-origin only, so no response carries Access-Control-Allow-Origin.
        let main = Server::builder()
            .accept_http1(true)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(TraceContextLayer::new(service.as_str()))
            .layer(ForwardedClientLayer::new())
            .layer(PeerPolicyLayer::new(policy))
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection.v1)
            .add_service(reflection.v1alpha)
            .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());
        let ops = Server::builder()
            .add_service(HealthServer::new(HealthService::from_health_reporter(health.clone())))
            .add_service(ops_reflection.v1)
            .add_service(ops_reflection.v1alpha)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.ops), token.clone().cancelled_owned());

        let servers = tokio::spawn(async move { tokio::try_join!(main, ops) });
        tracing::info!(%service, "serving");
        shutdown.await;
        tracing::info!(%service, "shutting down: draining in-flight calls");
        // Tell load balancers first, then stop accepting and drain.
        for name in &names {
            health
                .set_service_status(*name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        token.cancel();
        let _relay_stopped = relay_task.await;
        let _feed_stopped = feed_task.await;
        match tokio::time::timeout(DRAIN_TIMEOUT, servers).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(source))) => Err(StartError::Serve { service, source }),
            Ok(Err(join_error)) => {
                tracing::error!(%service, %join_error, "server task failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(%service, "in-flight calls did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
                Ok(())
            }
        }
    }
}

fn mesh_channel(
    config: &ServiceConfig,
    tls: &Arc<ReloadingMaterial>,
    peer: ServiceName,
    options: ChannelOptions,
) -> Result<MeshChannel, StartError> {
    let service = config.service;
    let target = Target::parse(&config.peer(peer), Some(peer.spiffe_id()))
        .map_err(|source| StartError::Tls { service, source })?;
    let channel = caremesh_tls::client::channel(target, Arc::clone(tls), options)
        .map_err(|source| StartError::Tls { service, source })?;
    Ok(InterceptedService::new(channel, TraceContextInterceptor))
}

struct Reflection<V1, V1Alpha> {
    v1: V1,
    v1alpha: V1Alpha,
}

/// Reflection v1 and v1alpha (grpcurl asks v1 first and falls back only on some errors), with the
/// caremesh, health and error-detail descriptors registered so every message can be described.
fn reflection(
    names: &[&'static str],
    service: ServiceName,
) -> Result<
    Reflection<
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    >,
    StartError,
> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(caremesh_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in names {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let error = |error: tonic_reflection::server::Error| StartError::Reflection {
        service,
        message: error.to_string(),
    };
    Ok(Reflection {
        v1: builder().build_v1().map_err(error)?,
        v1alpha: builder().build_v1alpha().map_err(error)?,
    })
}
