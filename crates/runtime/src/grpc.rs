//! The gRPC edge of the runtime: the one place where domain [`Error`]s become gRPC statuses, the
//! per-RPC peer allowlist for internal services, and helpers for reading who called.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use caremesh_tls::{PeerIdentity, SpiffeId};
use futures::future::{Either, Ready, ready};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, ErrorCode};

/// A server stream that ends with the refusal once `revoked` resolves (see
/// [`crate::ServiceRuntime::until_revoked`]): a revoked session or disabled account keeps no live
/// stream open.
pub fn close_when_revoked<T: Send + 'static>(
    stream: futures::stream::BoxStream<'static, Result<T, tonic::Status>>,
    revoked: futures::future::BoxFuture<'static, Error>,
) -> futures::stream::BoxStream<'static, Result<T, tonic::Status>> {
    use futures::StreamExt;
    futures::stream::unfold(Some((stream, revoked)), |open| async move {
        let (mut stream, mut revoked) = open?;
        tokio::select! {
            biased;
            refusal = &mut revoked => Some((Err(to_status(refusal)), None)),
            item = stream.next() => item.map(|item| (item, Some((stream, revoked)))),
        }
    })
    .boxed()
}

/// Applies `append` to each piece of a client-streamed upload in turn and returns what the last
/// piece's append returned (INVALID_ARGUMENT `NO_PIECES` for a stream without one).
pub async fn append_each<P, V, F, Fut>(mut pieces: tonic::Streaming<P>, mut append: F) -> Result<V, tonic::Status>
where
    F: FnMut(P) -> Fut,
    Fut: std::future::Future<Output = Result<V, Error>>,
{
    let mut last = None;
    while let Some(piece) = pieces.message().await? {
        last = Some(append(piece).await.map_err(to_status)?);
    }
    last.ok_or_else(|| {
        to_status(Error::invalid_argument(
            "NO_PIECES",
            "the upload stream ended before its first piece: send at least one",
        ))
    })
}

/// The `ErrorInfo.domain` of every caremesh error.
pub const ERROR_DOMAIN: &str = "caremesh.local";

/// Maps a domain error to a gRPC status with a `google.rpc.ErrorInfo` (and `RetryInfo` when the
/// caller should wait). Internal errors are logged with their cause under a reference id; the
/// caller gets the reference, never the cause.
pub fn to_status(error: Error) -> tonic::Status {
    let code = match error.code() {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::Aborted => tonic::Code::Aborted,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Unimplemented => tonic::Code::Unimplemented,
        ErrorCode::Internal => tonic::Code::Internal,
    };
    let message = match error.code() {
        ErrorCode::Internal => {
            let reference = uuid::Uuid::now_v7();
            tracing::error!(%reference, %error, "internal error");
            format!("internal error (reference {reference}); the service log has the details")
        }
        ErrorCode::Unavailable => {
            tracing::warn!(%error, "dependency unavailable");
            error.message().to_owned()
        }
        _ => error.message().to_owned(),
    };
    let message = printable(&message);
    let metadata: HashMap<String, String> = error.metadata().iter().cloned().collect();
    let mut details = ErrorDetails::with_error_info(error.reason(), ERROR_DOMAIN, metadata);
    if let Some(delay) = error.retry_after() {
        details.set_retry_info(Some(delay));
    }
    tonic::Status::with_error_details(code, message, details)
}

/// Longest message a status carries, in characters. Messages may quote what the caller sent; a
/// bounded, printable message always fits in the response headers.
pub const MAX_STATUS_MESSAGE_CHARS: usize = 512;

/// `message` shortened to [`MAX_STATUS_MESSAGE_CHARS`] with control characters (terminal escape
/// sequences included) replaced by `\u{FFFD}`.
fn printable(message: &str) -> String {
    let mut out: String = message
        .chars()
        .take(MAX_STATUS_MESSAGE_CHARS)
        .map(|character| if character.is_control() { '\u{FFFD}' } else { character })
        .collect();
    if message.chars().nth(MAX_STATUS_MESSAGE_CHARS).is_some() {
        out.push('…');
    }
    out
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        to_status(error)
    }
}

/// Turns the status a mesh peer answered into a domain error for our own caller. A refusal the
/// caller can act on (bad argument, unknown id, precondition, conflict) keeps its code, reason
/// and message; anything else means the peer could not do its part now: UNAVAILABLE naming the
/// peer, with the peer's answer logged, not passed on.
pub fn from_peer_status(peer: &'static str, status: &tonic::Status) -> Error {
    let reason = status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .filter(|reason| !reason.is_empty())
        .unwrap_or_else(|| "PEER_REFUSED".to_owned());
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::InvalidArgument => Error::invalid_argument(reason, message),
        tonic::Code::NotFound => Error::not_found(reason, message),
        tonic::Code::FailedPrecondition => Error::failed_precondition(reason, message),
        tonic::Code::AlreadyExists => Error::already_exists(reason, message),
        tonic::Code::Aborted => Error::aborted(reason, message),
        code => {
            tracing::warn!(peer, ?code, message = status.message(), "a mesh peer failed a call");
            Error::unavailable(
                "PEER_UNAVAILABLE",
                format!("{peer} cannot answer right now; retry shortly"),
            )
        }
    }
}

/// The identity of whoever is on the other end of the call's connection.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
    request.extensions().get::<PeerIdentity>()
}

/// The SPIFFE id of the calling service (internal RPCs, behind the [`PeerPolicy`]).
pub fn caller_spiffe_id<T>(request: &tonic::Request<T>) -> Result<SpiffeId, Error> {
    peer_identity(request)
        .and_then(|peer| peer.spiffe_id.clone())
        .ok_or_else(|| {
            Error::unauthenticated(
                "MESH_IDENTITY_REQUIRED",
                "this is an internal RPC: call it over mutual TLS with a caremesh service certificate",
            )
        })
}

/// Which mesh identities may call which internal RPCs.
///
/// A gRPC service whose name ends in `InternalService` is closed by default: only the SPIFFE ids
/// allowed here (per method, or for every method with `"*"`) get through, checked against the
/// client certificate verified in the TLS handshake. Other services are open at this layer and
/// authenticate callers by access token.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// `package.Service` -> method (or `*`) -> allowed ids.
    rules: HashMap<String, HashMap<String, Vec<SpiffeId>>>,
}

impl PeerPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `peers` to call `method` (or `"*"`: every method) of `grpc_service`
    /// (fully qualified, e.g. `caremesh.audit.v1.AuditInternalService`).
    pub fn allow(mut self, grpc_service: &str, method: &str, peers: impl IntoIterator<Item = SpiffeId>) -> Self {
        self.rules
            .entry(grpc_service.to_owned())
            .or_default()
            .entry(method.to_owned())
            .or_default()
            .extend(peers);
        self
    }

    /// Decides a call to `path` (`/package.Service/Method`) from `peer`.
    pub fn check(&self, path: &str, peer: Option<&SpiffeId>) -> Result<(), Error> {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, method) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let rules = self.rules.get(service);
        if rules.is_none() && !service.ends_with("InternalService") {
            return Ok(());
        }
        let allowed: Vec<&SpiffeId> = rules
            .into_iter()
            .flat_map(|methods| methods.get(method).into_iter().chain(methods.get("*")).flatten())
            .collect();
        let Some(peer) = peer else {
            return Err(Error::unauthenticated(
                "MESH_IDENTITY_REQUIRED",
                format!("{path} is an internal RPC: call it over mutual TLS with a caremesh service certificate"),
            ));
        };
        if allowed.contains(&peer) {
            Ok(())
        } else {
            Err(
                Error::permission_denied("PEER_NOT_ALLOWED", format!("{peer} may not call {path}"))
                    .with_metadata("peer", peer.as_str()),
            )
        }
    }
}

/// Tower layer enforcing a [`PeerPolicy`] before any handler runs.
#[derive(Clone, Debug)]
pub struct PeerPolicyLayer(Arc<PeerPolicy>);

impl PeerPolicyLayer {
    pub fn new(policy: PeerPolicy) -> Self {
        Self(Arc::new(policy))
    }
}

impl<S> tower_layer::Layer<S> for PeerPolicyLayer {
    type Service = PeerPolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerPolicyService {
            inner,
            policy: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PeerPolicyService<S> {
    inner: S,
    policy: Arc<PeerPolicy>,
}

impl<S, B> tower_service::Service<http::Request<B>> for PeerPolicyService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|identity| identity.spiffe_id.as_ref());
        match self.policy.check(request.uri().path(), peer) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(error) => {
                tracing::info!(path = %request.uri().path(), peer = ?peer.map(SpiffeId::as_str), reason = error.reason(), "internal RPC refused");
                Either::Left(ready(Ok(to_status(error).into_http())))
            }
        }
    }
}

/// The header in which the web origin forwards the browser's address (`ip:port`).
pub const CLIENT_ADDRESS_HEADER: &str = "x-caremesh-client-address";

/// Makes a call that the web origin forwards the browser's own: when the connection's client
/// certificate is the web origin's ([`caremesh_tls::web_origin_spiffe_id`]), the call's
/// [`PeerIdentity`] becomes the browser's address from [`CLIENT_ADDRESS_HEADER`] with no mesh
/// identity, exactly what a browser connecting directly would get. From any other peer the header
/// is removed unread, so nobody else can claim an address.
///
/// It runs before the [`PeerPolicyLayer`], so the web origin's certificate opens no internal RPC.
#[derive(Clone, Debug)]
pub struct ForwardedClientLayer {
    web_origin: SpiffeId,
}

impl ForwardedClientLayer {
    pub fn new() -> Self {
        Self {
            web_origin: caremesh_tls::web_origin_spiffe_id(),
        }
    }
}

impl Default for ForwardedClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower_layer::Layer<S> for ForwardedClientLayer {
    type Service = ForwardedClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardedClientService {
            inner,
            web_origin: self.web_origin.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ForwardedClientService<S> {
    inner: S,
    web_origin: SpiffeId,
}

impl<S, B> tower_service::Service<http::Request<B>> for ForwardedClientService<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        forwarded_client(&mut request, &self.web_origin);
        self.inner.call(request)
    }
}

fn forwarded_client<B>(request: &mut http::Request<B>, web_origin: &SpiffeId) {
    let forwarded = request.headers_mut().remove(CLIENT_ADDRESS_HEADER);
    let Some(peer) = request.extensions_mut().get_mut::<PeerIdentity>() else {
        return;
    };
    if peer.spiffe_id.as_ref() == Some(web_origin) {
        peer.spiffe_id = None;
        peer.remote_addr = forwarded
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceName;

    fn policy() -> PeerPolicy {
        PeerPolicy::new()
            .allow(
                "caremesh.auth.v1.AuthInternalService",
                "GetUserAttributes",
                [ServiceName::Records.spiffe_id()],
            )
            .allow(
                "caremesh.audit.v1.AuditInternalService",
                "*",
                ServiceName::ALL.map(ServiceName::spiffe_id),
            )
    }

    #[test]
    fn internal_services_are_closed_unless_allowed() {
        let policy = policy();
        let records = ServiceName::Records.spiffe_id();
        let messaging = ServiceName::Messaging.spiffe_id();
        let path = "/caremesh.auth.v1.AuthInternalService/GetUserAttributes";
        assert!(policy.check(path, Some(&records)).is_ok());
        assert_eq!(
            policy.check(path, Some(&messaging)).unwrap_err().code(),
            ErrorCode::PermissionDenied
        );
        assert_eq!(policy.check(path, None).unwrap_err().code(), ErrorCode::Unauthenticated);
        let unlisted = "/caremesh.auth.v1.AuthInternalService/SomethingNew";
        assert_eq!(
            policy.check(unlisted, Some(&records)).unwrap_err().code(),
            ErrorCode::PermissionDenied
        );
        let unknown_internal = "/caremesh.x.v1.XInternalService/Y";
        assert!(policy.check(unknown_internal, Some(&records)).is_err());
        assert!(
            policy
                .check("/caremesh.audit.v1.AuditInternalService/IngestEvents", Some(&messaging))
                .is_ok()
        );
    }

    #[test]
    fn user_facing_services_pass_this_layer() {
        assert!(policy().check("/caremesh.auth.v1.AuthService/Login", None).is_ok());
    }

    #[test]
    fn status_messages_are_bounded_and_printable() {
        let echoed = format!("record_id must be a UUIDv7, got \"{}\x1b[31m\0\"", "x".repeat(1 << 20));
        let status = to_status(Error::invalid_argument("INVALID_ID", echoed));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().chars().count() <= MAX_STATUS_MESSAGE_CHARS + 1);
        assert!(status.message().starts_with("record_id must be a UUIDv7"));
        assert!(!status.message().chars().any(char::is_control));
    }

    #[test]
    fn statuses_carry_error_info_and_hide_internal_causes() {
        let status =
            to_status(Error::aborted("ETAG_MISMATCH", "the record changed; re-read it").with_metadata("etag", "7"));
        assert_eq!(status.code(), tonic::Code::Aborted);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "ETAG_MISMATCH");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("etag").map(String::as_str), Some("7"));

        let status = to_status(Error::internal("x", std::io::Error::other("secret detail")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret detail"));
        assert!(status.message().contains("reference"));

        let status = to_status(Error::resource_exhausted(
            "RATE_LIMITED",
            "too many attempts",
            std::time::Duration::from_secs(3),
        ));
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(std::time::Duration::from_secs(3))
        );
    }

    fn forwarded(peer: Option<SpiffeId>, header: Option<&str>) -> (Option<PeerIdentity>, bool) {
        let mut builder = http::Request::builder().uri("/caremesh.auth.v1.AuthService/Login");
        if let Some(value) = header {
            builder = builder.header(CLIENT_ADDRESS_HEADER, value);
        }
        let mut request = builder
            .extension(PeerIdentity {
                remote_addr: Some("10.0.0.9:4430".parse().unwrap()),
                spiffe_id: peer,
            })
            .body(())
            .unwrap();
        forwarded_client(&mut request, &caremesh_tls::web_origin_spiffe_id());
        let kept = request.headers().contains_key(CLIENT_ADDRESS_HEADER);
        (request.extensions().get::<PeerIdentity>().cloned(), kept)
    }

    #[test]
    fn the_web_origin_speaks_for_the_browser_and_nobody_else_can() {
        let (peer, kept) = forwarded(Some(caremesh_tls::web_origin_spiffe_id()), Some("192.0.2.7:51000"));
        let peer = peer.unwrap();
        assert_eq!(peer.remote_addr, Some("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(peer.spiffe_id, None, "a forwarded call carries no mesh identity");
        assert!(!kept);

        // Without a readable address the browser's address is unknown, not the origin's.
        let (peer, _) = forwarded(Some(caremesh_tls::web_origin_spiffe_id()), Some("not an address"));
        assert_eq!(peer.unwrap().remote_addr, None);

        // An anonymous client or a service claiming an address is ignored, and the header dropped.
        for claimant in [None, Some(ServiceName::Records.spiffe_id())] {
            let (peer, kept) = forwarded(claimant.clone(), Some("192.0.2.7:51000"));
            let peer = peer.unwrap();
            assert_eq!(peer.remote_addr, Some("10.0.0.9:4430".parse().unwrap()));
            assert_eq!(peer.spiffe_id, claimant);
            assert!(!kept);
        }
    }
}
