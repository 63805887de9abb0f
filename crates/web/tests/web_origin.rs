//! The web origin against the real services (the test kit's mesh, real TLS): gRPC-Web calls
//! framed by hand over HTTPS (HTTP/1.1 and HTTP/2, as browsers send them), server streaming
//! through the proxy, internal RPCs refused, static files with their headers, SPA fallback and
//! path traversal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use caremesh_proto::audit::v1 as audit_pb;
use caremesh_proto::auth::v1 as auth_pb;
use caremesh_sdk::auth::Role;
use caremesh_testkit::{Service, TestMesh};
use caremesh_web::WebConfig;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;

const GRPC_WEB: &str = "application/grpc-web+proto";

/// The web origin, serving on a port-0 listener in front of `mesh`.
struct Web {
    addr: SocketAddr,
    ca: std::path::PathBuf,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), caremesh_web::WebError>>,
}

impl Web {
    async fn start(mesh: &TestMesh, root: &Path) -> Self {
        caremesh_pki::init_web(mesh.pki().dir(), &[]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = WebConfig::new(mesh.pki().dir());
        config.listen = listener.local_addr().unwrap();
        config.root = root.to_owned();
        for service in Service::ALL {
            config.upstreams.insert(service, mesh.grpc_addr(service).to_string());
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(caremesh_web::serve(
            listener,
            config.clone(),
            stop.clone().cancelled_owned(),
        ));
        Self {
            addr: config.listen,
            ca: mesh.pki().ca_cert(),
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the web origin stops")
            .unwrap()
            .unwrap();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Http {
    One,
    Two,
}

/// One request on a fresh HTTPS connection to `addr`, verified against `ca` as `localhost`.
async fn send(addr: SocketAddr, ca: &Path, http: Http, request: Request<Full<Bytes>>) -> Response<Incoming> {
    send_from(IpAddr::V4(Ipv4Addr::LOCALHOST), addr, ca, http, request).await
}

/// [`send`] from the local address `from` (any of 127.0.0.0/8 on loopback: a browser elsewhere).
async fn send_from(
    from: IpAddr,
    addr: SocketAddr,
    ca: &Path,
    http: Http,
    request: Request<Full<Bytes>>,
) -> Response<Incoming> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match http {
        Http::One => b"http/1.1".to_vec(),
        Http::Two => b"h2".to_vec(),
    }];
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let io = TokioIo::new(tls);
    match http {
        Http::One => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        }
        Http::Two => {
            let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        }
    }
}

/// A gRPC-Web request for `path` carrying `message`, as connect-web's binary transport sends it.
fn grpc_web_request(addr: SocketAddr, http: Http, path: &str) -> http::request::Builder {
    let builder = Request::builder()
        .method("POST")
        .header("content-type", GRPC_WEB)
        .header("x-grpc-web", "1")
        .header("accept", GRPC_WEB);
    match http {
        Http::One => builder.uri(path).header("host", format!("localhost:{}", addr.port())),
        Http::Two => builder.uri(format!("https://localhost:{}{path}", addr.port())),
    }
}

/// 1 flag byte (0: message), 4-byte big-endian length, the protobuf.
fn frame(message: &impl Message) -> Full<Bytes> {
    let encoded = message.encode_to_vec();
    let mut out = Vec::with_capacity(5 + encoded.len());
    out.push(0);
    out.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&encoded);
    Full::new(Bytes::from(out))
}

/// The messages and trailers of a gRPC-Web response, read from `buffer` as far as it is complete.
#[derive(Debug, Default)]
struct Parsed {
    messages: Vec<Bytes>,
    trailers: Option<HashMap<String, String>>,
}

fn parse_frames(buffer: &mut BytesMut, parsed: &mut Parsed) {
    while buffer.len() >= 5 {
        let flag = buffer[0];
        let length = u32::from_be_bytes(buffer[1..5].try_into().unwrap()) as usize;
        if buffer.len() < 5 + length {
            return;
        }
        buffer.advance(5);
        let payload = buffer.split_to(length).freeze();
        if flag & 0x80 != 0 {
            let text = std::str::from_utf8(&payload).unwrap();
            let trailers = text
                .split("\r\n")
                .filter(|line| !line.is_empty())
                .map(|line| {
                    let (name, value) = line.split_once(':').unwrap();
                    (name.trim().to_ascii_lowercase(), value.trim().to_owned())
                })
                .collect();
            parsed.trailers = Some(trailers);
        } else {
            assert_eq!(flag, 0, "uncompressed messages only");
            parsed.messages.push(payload);
        }
    }
}

/// The status of a finished call: from the trailers frame, or from the headers (trailers-only).
fn grpc_status(headers: &HeaderMap, parsed: &Parsed) -> (i32, String) {
    let from_headers = headers.get("grpc-status").map(|status| {
        let message = headers
            .get("grpc-message")
            .map(|value| percent_decode(value.to_str().unwrap()))
            .unwrap_or_default();
        (status.to_str().unwrap().parse().unwrap(), message)
    });
    from_headers.unwrap_or_else(|| {
        let trailers = parsed.trailers.as_ref().expect("a trailers frame");
        (
            trailers["grpc-status"].parse().unwrap(),
            trailers
                .get("grpc-message")
                .map(|m| percent_decode(m))
                .unwrap_or_default(),
        )
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A unary gRPC-Web call: (HTTP headers, status code, message, decoded reply if any).
async fn unary<Reply: Message + Default>(
    web: &Web,
    http: Http,
    path: &str,
    request: &impl Message,
    bearer: Option<&str>,
) -> (HeaderMap, i32, String, Option<Reply>) {
    let mut builder = grpc_web_request(web.addr, http, path);
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    unary_request(web, IpAddr::V4(Ipv4Addr::LOCALHOST), builder, request).await
}

/// A unary gRPC-Web call built by `builder`, sent from the local address `from`.
async fn unary_request<Reply: Message + Default>(
    web: &Web,
    from: IpAddr,
    builder: http::request::Builder,
    request: &impl Message,
) -> (HeaderMap, i32, String, Option<Reply>) {
    let response = send_from(
        from,
        web.addr,
        &web.ca,
        Http::Two,
        builder.body(frame(request)).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (parts, body) = response.into_parts();
    let mut buffer = BytesMut::from(&body.collect().await.unwrap().to_bytes()[..]);
    let mut parsed = Parsed::default();
    parse_frames(&mut buffer, &mut parsed);
    assert!(buffer.is_empty(), "trailing bytes in the response");
    let (code, message) = grpc_status(&parts.headers, &parsed);
    let reply = parsed
        .messages
        .first()
        .map(|bytes| Reply::decode(bytes.clone()).unwrap());
    (parts.headers, code, message, reply)
}

fn assert_security_headers(headers: &HeaderMap) {
    for (name, value) in caremesh_web::headers::SECURITY_HEADERS {
        assert_eq!(
            headers.get(*name).map(|v| v.to_str().unwrap()),
            Some(*value),
            "{name} on every response"
        );
    }
    assert!(
        headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'; script-src 'self'; style-src 'self';")
    );
    assert_eq!(headers.get("strict-transport-security").unwrap(), "max-age=31536000");
    assert!(headers.get("access-control-allow-origin").is_none(), "no CORS");
}

#[tokio::test]
async fn login_and_whoami_through_the_web_origin() {
    let mesh = TestMesh::start().await;
    let root = tempfile::tempdir().unwrap();
    let web = Web::start(&mesh, root.path()).await;
    let username = format!("webpatient-{}", &uuid_suffix());
    let password = "vellum orbit cactus lantern 7f3a".to_owned();
    mesh.sdk()
        .register(&username, &password, Role::Patient, "Web Patient")
        .await
        .unwrap();

    // The native answer to a wrong password, to compare with.
    let native = auth_pb::auth_service_client::AuthServiceClient::new(
        mesh.channel(Service::Auth, caremesh_testkit::Caller::Anonymous),
    )
    .login(auth_pb::LoginRequest {
        username: username.clone(),
        password: "wrong password entirely".to_owned(),
    })
    .await
    .unwrap_err();
    assert_eq!(native.code(), tonic::Code::Unauthenticated);

    for http in [Http::One, Http::Two] {
        let wrong = auth_pb::LoginRequest {
            username: username.clone(),
            password: "wrong password entirely".to_owned(),
        };
        let (headers, code, message, _) =
            unary::<auth_pb::LoginResponse>(&web, http, "/caremesh.auth.v1.AuthService/Login", &wrong, None).await;
        assert_eq!(code, 16, "{http:?}: UNAUTHENTICATED");
        assert_eq!(message, native.message(), "{http:?}: the service's own message");
        assert!(
            headers
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("application/grpc-web")
        );
        assert_security_headers(&headers);
    }

    let login = auth_pb::LoginRequest {
        username: username.clone(),
        password: password.clone(),
    };
    let (headers, code, _, reply) =
        unary::<auth_pb::LoginResponse>(&web, Http::One, "/caremesh.auth.v1.AuthService/Login", &login, None).await;
    assert_eq!(code, 0);
    assert_security_headers(&headers);
    let Some(auth_pb::login_response::Outcome::Tokens(tokens)) = reply.unwrap().outcome else {
        panic!("no MFA yet: tokens straight away");
    };

    for http in [Http::One, Http::Two] {
        let (headers, code, message, reply) = unary::<auth_pb::WhoAmIResponse>(
            &web,
            http,
            "/caremesh.auth.v1.AuthService/WhoAmI",
            &auth_pb::WhoAmIRequest {},
            Some(&tokens.access_token),
        )
        .await;
        assert_eq!((code, message.as_str()), (0, ""), "{http:?}");
        assert_security_headers(&headers);
        assert_eq!(reply.unwrap().user.unwrap().username, username);
    }
    // Without the token: the service refuses.
    let (_, code, _, _) = unary::<auth_pb::WhoAmIResponse>(
        &web,
        Http::Two,
        "/caremesh.auth.v1.AuthService/WhoAmI",
        &auth_pb::WhoAmIRequest {},
        None,
    )
    .await;
    assert_eq!(code, 16);
    web.stop().await;
}

/// auth-svc throttles sign-ins per address: through the web origin, the address is each browser's
/// own (forwarded by the origin, believed from its certificate only), so one browser's burst does
/// not lock the others out, and a browser cannot claim another address.
#[tokio::test]
async fn sign_in_throttles_count_each_browser_not_the_origin() {
    let mesh = TestMesh::builder()
        // 9 a minute: a burst of 3 (auth-svc allows a third of the minute at once).
        .setting(auth_svc::settings::LOGIN_RATE_PER_MINUTE, "9")
        .start()
        .await;
    let root = tempfile::tempdir().unwrap();
    let web = Web::start(&mesh, root.path()).await;
    let login = |from: IpAddr, claim: Option<&str>| {
        let mut builder = grpc_web_request(web.addr, Http::Two, "/caremesh.auth.v1.AuthService/Login");
        if let Some(address) = claim {
            builder = builder
                .header(caremesh_web::proxy::CLIENT_ADDRESS_HEADER, address)
                .header("x-forwarded-for", address);
        }
        let request = auth_pb::LoginRequest {
            username: format!("nobody-{}", uuid_suffix()),
            password: "not a password anyone has".to_owned(),
        };
        let web = &web;
        async move {
            let (_, code, message, _) = unary_request::<auth_pb::LoginResponse>(web, from, builder, &request).await;
            (code, message)
        }
    };
    let first: IpAddr = "127.0.0.2".parse().unwrap();
    let second: IpAddr = "127.0.0.3".parse().unwrap();
    for _ in 0..3 {
        let (code, message) = login(first, None).await;
        assert_eq!(code, 16, "a wrong password: UNAUTHENTICATED, not {message}");
    }
    let (code, message) = login(first, None).await;
    assert_eq!(code, 8, "the fourth sign-in from one browser is throttled: {message}");
    // Claiming another browser's address does not help: the origin drops the claim.
    assert_eq!(login(first, Some("127.0.0.3:40000")).await.0, 8);
    // Another browser, through the same origin, has its own bucket.
    assert_eq!(login(second, None).await.0, 16, "a second browser is not throttled");
    web.stop().await;
}

#[tokio::test]
async fn internal_and_unknown_rpcs_and_other_origins_are_refused() {
    let mesh = TestMesh::start().await;
    let root = tempfile::tempdir().unwrap();
    let web = Web::start(&mesh, root.path()).await;
    for http in [Http::One, Http::Two] {
        for path in [
            "/caremesh.audit.v1.AuditInternalService/IngestEvents",
            "/caremesh.auth.v1.AuthInternalService/GetUserAttributes",
        ] {
            let (headers, code, _, reply) =
                unary::<auth_pb::WhoAmIResponse>(&web, http, path, &auth_pb::WhoAmIRequest {}, None).await;
            assert_eq!(code, 7, "{http:?} {path}: PERMISSION_DENIED");
            assert!(reply.is_none());
            assert_security_headers(&headers);
        }
        let (_, code, _, _) = unary::<auth_pb::WhoAmIResponse>(
            &web,
            http,
            "/grpc.health.v1.Health/Check",
            &auth_pb::WhoAmIRequest {},
            None,
        )
        .await;
        assert_eq!(code, 12, "UNIMPLEMENTED: not a caremesh user-facing service");
    }

    // Another site's page calling this origin: refused, and no CORS grant.
    let request = grpc_web_request(web.addr, Http::One, "/caremesh.auth.v1.AuthService/WhoAmI")
        .header("origin", "https://evil.example")
        .body(frame(&auth_pb::WhoAmIRequest {}))
        .unwrap();
    let response = send(web.addr, &web.ca, Http::One, request).await;
    assert_security_headers(response.headers());
    assert_eq!(response.headers().get("grpc-status").unwrap(), "7");
    // A CORS preflight gets no grant either.
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/caremesh.auth.v1.AuthService/WhoAmI")
        .header("host", format!("localhost:{}", web.addr.port()))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(web.addr, &web.ca, Http::One, preflight).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_security_headers(response.headers());
    // Its own origin is fine.
    let request = grpc_web_request(web.addr, Http::One, "/caremesh.auth.v1.AuthService/WhoAmI")
        .header("origin", format!("https://localhost:{}", web.addr.port()))
        .body(frame(&auth_pb::WhoAmIRequest {}))
        .unwrap();
    let response = send(web.addr, &web.ca, Http::One, request).await;
    assert_eq!(response.headers().get("grpc-status").unwrap(), "16", "reached auth-svc");

    // The services speak gRPC-Web themselves (over HTTP/1.1 too) and still refuse internal RPCs
    // to callers without a service certificate.
    let auth = mesh.grpc_addr(Service::Auth);
    let direct = Web {
        addr: auth,
        ca: mesh.pki().ca_cert(),
        stop: CancellationToken::new(),
        task: tokio::spawn(async { Ok(()) }),
    };
    let wrong = auth_pb::LoginRequest {
        username: "nobody-here".to_owned(),
        password: "wrong password entirely".to_owned(),
    };
    let (headers, code, _, _) =
        unary::<auth_pb::LoginResponse>(&direct, Http::One, "/caremesh.auth.v1.AuthService/Login", &wrong, None).await;
    assert_eq!(code, 16);
    assert!(headers.get("access-control-allow-origin").is_none());
    let (_, code, message, _) = unary::<auth_pb::WhoAmIResponse>(
        &direct,
        Http::One,
        "/caremesh.auth.v1.AuthInternalService/GetUserAttributes",
        &auth_pb::WhoAmIRequest {},
        None,
    )
    .await;
    assert_eq!(code, 16, "no service certificate: {message}");
    web.stop().await;
}

#[tokio::test]
async fn a_server_stream_delivers_items_while_it_is_open() {
    let mesh = TestMesh::builder()
        .setting(audit_svc::settings::FAILED_LOGIN_ACCOUNT_THRESHOLD, "3")
        .start()
        .await;
    let root = tempfile::tempdir().unwrap();
    let web = Web::start(&mesh, root.path()).await;
    let auditor = mesh.created(Role::Auditor).await;
    let victim = mesh.patient().await;

    // HTTP/1.1, as a browser may: the stream arrives chunk by chunk.
    let request = grpc_web_request(web.addr, Http::One, "/caremesh.audit.v1.AuditService/StreamAlerts")
        .header("authorization", format!("Bearer {}", auditor.session.access_token))
        .body(frame(&audit_pb::StreamAlertsRequest::default()))
        .unwrap();
    let response = send(web.addr, &web.ca, Http::One, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(response.headers());
    assert!(response.headers().get("grpc-status").is_none(), "the stream is open");
    let mut body = response.into_body();

    // Failed logins for one account raise an alert while the stream is open.
    let sdk = mesh.sdk();
    for _ in 0..3 {
        let _refused = sdk
            .login(&victim.username, "not the password at all")
            .await
            .unwrap_err();
    }
    let mut buffer = BytesMut::new();
    let mut parsed = Parsed::default();
    let alert = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let frame = body.frame().await.expect("the stream stays open").unwrap();
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
                parse_frames(&mut buffer, &mut parsed);
                if let Some(message) = parsed.messages.first() {
                    return audit_pb::StreamAlertsResponse::decode(message.clone()).unwrap();
                }
                assert!(
                    parsed.trailers.is_none(),
                    "the stream ended early: {:?}",
                    parsed.trailers
                );
            }
        }
    })
    .await
    .expect("an alert arrives while the stream is open");
    let alert = alert.alert.unwrap();
    assert_eq!(alert.actor_user_id, victim.user_id);
    assert!(parsed.trailers.is_none(), "still open after the first item");
    drop(body);
    web.stop().await;
}

#[tokio::test]
async fn static_files_spa_fallback_caching_and_no_traversal() {
    let mesh = TestMesh::start().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "not for the web").unwrap();
    let root = outside.path().join("dist");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><title>caremesh</title>").unwrap();
    std::fs::write(root.join("assets/app-3f9a1c.js"), "export const x = 1;\n").unwrap();
    std::fs::write(root.join("manifest.webmanifest"), "{}").unwrap();
    std::fs::write(root.join(".env"), "SECRET=1").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    let web = Web::start(&mesh, &root).await;

    let get = |path: &str| {
        Request::builder()
            .uri(path)
            .header("host", format!("localhost:{}", web.addr.port()))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let fetch = |path: &'static str| {
        let request = get(path);
        let (addr, ca) = (web.addr, web.ca.clone());
        async move {
            let response = send(addr, &ca, Http::One, request).await;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            assert_security_headers(&parts.headers);
            (parts.status, parts.headers, body)
        }
    };

    let (status, headers, body) = fetch("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(&body[..], b"<!doctype html><title>caremesh</title>");

    for route in ["/inbox", "/records/0193b7a2-1c2d/edit"] {
        let (status, headers, body) = fetch(route).await;
        assert_eq!(status, StatusCode::OK, "{route}: index.html");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(&body[..], b"<!doctype html><title>caremesh</title>");
    }

    let (status, headers, body) = fetch("/assets/app-3f9a1c.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(headers["content-length"], "20");
    assert_eq!(&body[..], b"export const x = 1;\n");

    let (status, headers, _) = fetch("/manifest.webmanifest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/manifest+json");

    for missing in ["/missing.js", "/assets/missing", "/.env", "/leak.txt"] {
        let (status, _, body) = fetch(missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert!(!body.starts_with(b"SECRET") && !body.starts_with(b"not for the web"));
    }
    for traversal in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
    ] {
        let (status, _, body) = fetch(traversal).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{traversal}: {status}"
        );
        assert!(!body.starts_with(b"not for the web"), "{traversal} leaked a file");
    }

    // HEAD: the headers, no body.
    let mut head = get("/assets/app-3f9a1c.js");
    *head.method_mut() = http::Method::HEAD;
    let response = send(web.addr, &web.ca, Http::Two, {
        let mut request = head;
        *request.uri_mut() = format!("https://localhost:{}/assets/app-3f9a1c.js", web.addr.port())
            .parse()
            .unwrap();
        request.headers_mut().remove("host");
        request
    })
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "20");
    assert_security_headers(response.headers());
    web.stop().await;

    // No app directory: the built-in page says how to build it.
    let web = Web::start(&mesh, &outside.path().join("no-such-dir")).await;
    let request = Request::builder()
        .uri("/")
        .header("host", format!("localhost:{}", web.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(web.addr, &web.ca, Http::One, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(response.headers());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let page = std::str::from_utf8(&body).unwrap();
    assert!(page.contains("not built"), "{page}");
    assert!(page.contains("npm --prefix web"));
    assert!(
        !page.contains("<script") && !page.contains("style="),
        "the page passes the CSP"
    );
    web.stop().await;
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
