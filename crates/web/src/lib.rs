//! The web app's one HTTPS origin (issue #15). [`serve`] accepts browsers on one TLS listener
//! (HTTP/1.1 or HTTP/2, no client certificate) and answers every request from one of two places:
//!
//! - **gRPC-Web** (`content-type: application/grpc-web*`, `POST /<package>.<Service>/<Method>`):
//!   proxied, streaming both ways, to the service that owns the protobuf package
//!   ([`proxy`]). `*InternalService` paths are refused here with PERMISSION_DENIED.
//! - **everything else** (`GET`/`HEAD`): the app's static files from [`WebConfig::root`], with an
//!   `index.html` fallback for the app's routes, or a built-in page saying how to build the app
//!   when the directory does not exist ([`static_files`]).
//!
//! Every response, proxied ones included, carries the security headers of [`headers`]. The origin
//! is same-origin only: nothing here (nor in the services) answers CORS, so no
//! `Access-Control-Allow-Origin` is ever sent, and a gRPC-Web request whose `Origin` is another
//! host is refused.
//!
//! Nothing about a request's content is logged: no bodies, no headers (the bearer token is one),
//! no query strings; at debug level only the method path and the status. Health data never passes
//! through a log line.
//!
//! ```no_run
//! # async fn run() -> Result<(), caremesh_web::WebError> {
//! use caremesh_runtime::config::ProcessEnv;
//! let config = caremesh_web::WebConfig::from_env(&ProcessEnv)?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(caremesh_web::WebError::Io)?;
//! caremesh_web::serve(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod config;
pub mod headers;
pub mod proxy;
pub mod static_files;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use caremesh_tls::{ReloadingMaterial, TlsError};
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::transport::server::Connected;

pub use config::WebConfig;

/// How long open requests (streams included) may take to finish after shutdown is signalled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web origin TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("web origin configuration: {0}")]
    Config(#[from] caremesh_runtime::config::ConfigError),
    #[error("web origin: {0}")]
    Io(std::io::Error),
}

/// The request handler shared by every connection.
#[derive(Debug)]
struct App {
    proxy: proxy::Proxy,
    files: static_files::StaticFiles,
}

impl App {
    async fn handle(&self, request: Request<Incoming>, client: Option<SocketAddr>) -> Response<Body> {
        let mut response = if proxy::is_grpc_web(&request) {
            self.proxy.forward(request, client).await
        } else if request.method() == Method::GET || request.method() == Method::HEAD {
            self.files.respond(request.method(), request.uri().path()).await
        } else if proxy::is_grpc(&request) {
            // Native gRPC belongs on the services' own ports; this origin is for browsers.
            plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "use gRPC-Web here\n")
        } else {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD, POST"));
            response
        };
        headers::apply(response.headers_mut());
        response
    }
}

/// A short `text/plain` response.
fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(bytes::Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the web origin on `listener` until `shutdown` completes, then lets open requests finish
/// (bounded by a timeout).
pub async fn serve(
    listener: TcpListener,
    config: WebConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WebError> {
    caremesh_tls::install_crypto_provider();
    let material = ReloadingMaterial::load(config.tls.clone())?;
    let tls = caremesh_tls::server::public_server_config(material)?;
    let app = Arc::new(App {
        proxy: proxy::Proxy::new(&config)?,
        files: static_files::StaticFiles::new(&config.root),
    });
    if !app.files.is_built() {
        tracing::warn!(root = %config.root.display(), "the web app is not built: serving the built-in page");
    }
    let mut incoming = caremesh_tls::server::accept(listener, tls);
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    tracing::info!(listen = %config.listen, "web origin serving");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = incoming.next() => match accepted {
                Some(Ok(stream)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&app), stop.clone()));
                }
                Some(Err(error)) => tracing::debug!(%error, "web origin: accept failed"),
                None => break,
            },
            Some(_finished) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Stop accepting, ask every connection to finish what it has open, then wait (bounded).
    drop(incoming);
    stop.cancel();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("web origin: open requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
        connections.shutdown().await;
    }
    tracing::info!("web origin stopped");
    Ok(())
}

async fn serve_connection(stream: caremesh_tls::server::MeshStream, app: Arc<App>, stop: CancellationToken) {
    let client = stream.connect_info().remote_addr;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(app.handle(request, client).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(Some(128));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "web origin: connection ended with an error");
    }
}
