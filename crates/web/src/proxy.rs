//! gRPC-Web through the web origin: each request goes, as it is, to the service that owns its
//! protobuf package, and the answer comes back as the service sends it. The services translate
//! gRPC-Web themselves (tonic-web in `caremesh_runtime::ServiceRuntime::serve`), so this is a
//! plain streaming HTTP/2 proxy: request and response bodies pass frame by frame under HTTP/2
//! flow control (nothing is buffered whole, memory per call is bounded by the window sizes), and
//! a server stream (messaging `Subscribe`, audit `StreamAlerts`) reaches the browser item by item.
//!
//! | path prefix | service |
//! |---|---|
//! | `/caremesh.auth.v1.` | auth-svc |
//! | `/caremesh.messaging.v1.` | messaging-svc |
//! | `/caremesh.abe.v1.` | abe-authority-svc |
//! | `/caremesh.records.v1.` | records-svc |
//! | `/caremesh.audit.v1.` | audit-svc |
//!
//! Refused here, with a gRPC-Web status and without contacting any service:
//! - any `*InternalService` path: PERMISSION_DENIED. Users never reach internal RPCs through the
//!   web origin (the services refuse them too: their peer allowlist wants a service certificate);
//! - another package: UNIMPLEMENTED;
//! - an `Origin` naming another host: PERMISSION_DENIED (same origin only).
//!
//! **The proxy authenticates as the web origin, and forwards the browser's address.** Towards the
//! services it presents the web certificate (`web.crt`: serverAuth for browsers, clientAuth with
//! the SPIFFE id `spiffe://caremesh.local/web/caremesh-web`). It is not a service: no internal RPC
//! allows that id, and the services authenticate every call it carries by the user's bearer token,
//! as they do a browser's. What the id buys is one thing: each call carries the browser's TCP
//! address in [`CLIENT_ADDRESS_HEADER`], and the services believe that header from this peer only
//! (`caremesh_runtime::grpc::ForwardedClientLayer`), so auth-svc's per-address throttles and the
//! `source` of audit events see the browser, not the origin. Any `X-Forwarded-For`, `Forwarded`,
//! `X-Real-IP` or client-address header a browser sends is dropped here. Taking the origin over
//! would let an attacker claim other addresses (defeating per-address throttles; per-account
//! lockout still holds), nothing more.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use caremesh_runtime::ServiceName;
use caremesh_tls::client::{ChannelOptions, Target};
use caremesh_tls::{ReloadingMaterial, TlsError};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt;

use crate::WebConfig;

/// Which service owns each protobuf package.
const PACKAGES: &[(&str, ServiceName)] = &[
    ("caremesh.auth.v1.", ServiceName::Auth),
    ("caremesh.messaging.v1.", ServiceName::Messaging),
    ("caremesh.abe.v1.", ServiceName::AbeAuthority),
    ("caremesh.records.v1.", ServiceName::Records),
    ("caremesh.audit.v1.", ServiceName::Audit),
];

/// Request headers that describe one connection or claim a client address: not forwarded.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "cookie",
    CLIENT_ADDRESS_HEADER,
];

/// The header that carries the browser's address (`ip:port`) to the services. Set by the proxy
/// from the TCP connection; the services trust it only from the web origin's certificate.
pub const CLIENT_ADDRESS_HEADER: &str = caremesh_runtime::grpc::CLIENT_ADDRESS_HEADER;

/// Whether `request` is gRPC-Web (binary or text, by its content type).
pub fn is_grpc_web<B>(request: &Request<B>) -> bool {
    content_type(request).is_some_and(|value| value.starts_with("application/grpc-web"))
}

/// Whether `request` is native gRPC.
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    content_type(request).is_some_and(|value| value == "application/grpc" || value.starts_with("application/grpc+"))
}

fn content_type<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
}

/// The service that owns the gRPC service named in `path`, or why it is refused.
pub fn route(path: &str) -> Result<ServiceName, Refusal> {
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
    let (Some(grpc_service), Some(method), None) = (segments.next(), segments.next(), segments.next()) else {
        return Err(Refusal::Unknown);
    };
    if grpc_service.is_empty() || method.is_empty() {
        return Err(Refusal::Unknown);
    }
    if grpc_service.ends_with("InternalService") {
        return Err(Refusal::Internal);
    }
    PACKAGES
        .iter()
        .find(|(package, _)| {
            grpc_service
                .strip_prefix(package)
                .is_some_and(|name| !name.is_empty() && !name.contains('.'))
        })
        .map(|(_, service)| *service)
        .ok_or(Refusal::Unknown)
}

/// Why a gRPC-Web request was not proxied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An `*InternalService`: PERMISSION_DENIED.
    Internal,
    /// Not a caremesh user-facing service: UNIMPLEMENTED.
    Unknown,
    /// `Origin` is another site: PERMISSION_DENIED.
    CrossOrigin,
}

/// One lazily connected channel per service.
#[derive(Debug)]
pub struct Proxy {
    channels: BTreeMap<ServiceName, Channel>,
}

impl Proxy {
    /// Channels to every service in `config.upstreams`, over TLS with the web certificate (see the
    /// module header).
    pub fn new(config: &WebConfig) -> Result<Self, TlsError> {
        let material = ReloadingMaterial::load(config.tls.clone())?;
        let mut channels = BTreeMap::new();
        for service in ServiceName::ALL {
            let endpoint = config
                .upstreams
                .get(&service)
                .cloned()
                .unwrap_or_else(|| format!("localhost:{}", service.default_port()));
            let target = Target::parse(&endpoint, Some(service.spiffe_id()))?;
            let channel =
                caremesh_tls::client::channel(target, std::sync::Arc::clone(&material), ChannelOptions::default())?;
            channels.insert(service, channel);
        }
        Ok(Self { channels })
    }

    /// Proxies one gRPC-Web request (or refuses it). `client` is the browser's TCP address.
    pub async fn forward(&self, request: Request<Incoming>, client: Option<SocketAddr>) -> Response<Body> {
        let reply_type = reply_content_type(&request);
        if request.method() != Method::POST {
            return status(
                tonic::Code::Unimplemented,
                "gRPC-Web calls are POST requests",
                reply_type,
            );
        }
        let path = request.uri().path().to_owned();
        let service = match route(&path).and_then(|service| same_origin(&request).map(|()| service)) {
            Ok(service) => service,
            Err(refusal) => {
                tracing::debug!(%path, ?refusal, "web origin: gRPC-Web call refused");
                let (code, message) = match refusal {
                    Refusal::Internal => (
                        tonic::Code::PermissionDenied,
                        "internal RPCs are not reachable through the web origin",
                    ),
                    Refusal::Unknown => (tonic::Code::Unimplemented, "no such service at this origin"),
                    Refusal::CrossOrigin => (
                        tonic::Code::PermissionDenied,
                        "cross-origin calls are not allowed: this origin serves its own web app only",
                    ),
                };
                return status(code, message, reply_type);
            }
        };
        let Some(channel) = self.channels.get(&service).cloned() else {
            return status(tonic::Code::Unavailable, "service not configured", reply_type);
        };
        let version = request.version();
        let (mut parts, body) = request.into_parts();
        for name in DROPPED_REQUEST_HEADERS {
            parts.headers.remove(*name);
        }
        if let Some(value) = client.and_then(|addr| HeaderValue::from_str(&addr.to_string()).ok()) {
            parts.headers.insert(CLIENT_ADDRESS_HEADER, value);
        }
        // The channel adds the service's scheme and authority; the path is all that is kept.
        parts.uri = match Uri::builder().path_and_query(path.as_str()).build() {
            Ok(uri) => uri,
            Err(_) => return status(tonic::Code::InvalidArgument, "invalid path", reply_type),
        };
        parts.version = Version::HTTP_2;
        let upstream = Request::from_parts(parts, Body::new(body));
        match channel.oneshot(upstream).await {
            Ok(mut response) => {
                *response.version_mut() = version;
                tracing::debug!(%path, %service, status = %response.status(), "web origin: proxied");
                response
            }
            Err(error) => {
                tracing::warn!(%service, %error, "web origin: service unreachable");
                status(
                    tonic::Code::Unavailable,
                    "the service is unavailable; retry shortly",
                    reply_type,
                )
            }
        }
    }
}

/// Refuses a request whose `Origin` is not this origin's own host (browsers send `Origin` on
/// every `fetch` POST, same-origin ones included).
fn same_origin<B>(request: &Request<B>) -> Result<(), Refusal> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let host = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        });
    let origin_host = origin.to_str().ok().and_then(|origin| origin.strip_prefix("https://"));
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(&host) => Ok(()),
        _ => Err(Refusal::CrossOrigin),
    }
}

/// The content type a refusal answers with: the request's own gRPC-Web flavour.
fn reply_content_type<B>(request: &Request<B>) -> &'static str {
    match content_type(request) {
        Some(value) if value.starts_with("application/grpc-web-text") => "application/grpc-web-text+proto",
        _ => "application/grpc-web+proto",
    }
}

/// A trailers-only gRPC-Web answer: HTTP 200, `grpc-status` and `grpc-message` in the headers.
fn status(code: tonic::Code, message: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = tonic::Status::new(code, message).into_http::<Body>();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_package_and_refuses_internal_services() {
        assert_eq!(route("/caremesh.auth.v1.AuthService/Login"), Ok(ServiceName::Auth));
        assert_eq!(
            route("/caremesh.auth.v1.AuthAdminService/ApproveUser"),
            Ok(ServiceName::Auth)
        );
        assert_eq!(
            route("/caremesh.messaging.v1.MessagingService/Subscribe"),
            Ok(ServiceName::Messaging)
        );
        assert_eq!(route("/caremesh.abe.v1.AbeService/X"), Ok(ServiceName::AbeAuthority));
        assert_eq!(route("/caremesh.records.v1.RecordsService/X"), Ok(ServiceName::Records));
        assert_eq!(
            route("/caremesh.audit.v1.AuditService/StreamAlerts"),
            Ok(ServiceName::Audit)
        );
        for internal in [
            "/caremesh.auth.v1.AuthInternalService/GetUserAttributes",
            "/caremesh.audit.v1.AuditInternalService/IngestEvents",
            "/caremesh.messaging.v1.MessagingInternalService/Anything",
            "/other.v1.FooInternalService/Bar",
        ] {
            assert_eq!(route(internal), Err(Refusal::Internal), "{internal}");
        }
        for unknown in [
            "/",
            "/caremesh.auth.v1.AuthService",
            "/caremesh.auth.v1.AuthService/",
            "/caremesh.auth.v1.AuthService/Login/extra",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/caremesh.auth.v1./Login",
            "/caremesh.auth.v1.sub.Service/Login",
            "/caremesh.auth.v2.AuthService/Login",
        ] {
            assert_eq!(route(unknown), Err(Refusal::Unknown), "{unknown}");
        }
    }

    #[test]
    fn origin_must_be_this_host() {
        let request = |origin: Option<&str>| {
            let mut builder = Request::builder().uri("/x").header(header::HOST, "localhost:8443");
            if let Some(origin) = origin {
                builder = builder.header(header::ORIGIN, origin);
            }
            builder.body(()).unwrap_or_default()
        };
        assert_eq!(same_origin(&request(None)), Ok(()));
        assert_eq!(same_origin(&request(Some("https://localhost:8443"))), Ok(()));
        assert_eq!(same_origin(&request(Some("https://LOCALHOST:8443"))), Ok(()));
        for other in [
            "https://evil.example",
            "http://localhost:8443",
            "https://localhost:8444",
            "null",
        ] {
            assert_eq!(same_origin(&request(Some(other))), Err(Refusal::CrossOrigin), "{other}");
        }
    }
}
