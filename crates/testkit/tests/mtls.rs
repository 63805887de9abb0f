//! Mutual TLS and the internal-RPC allowlist, through the real services.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use caremesh_proto::audit::v1::audit_internal_service_client::AuditInternalServiceClient;
use caremesh_proto::audit::v1::{AuditAction, AuditOutcome, IngestEventsRequest};
use caremesh_proto::auth::v1::GetUserAttributesRequest;
use caremesh_proto::auth::v1::auth_internal_service_client::AuthInternalServiceClient;
use caremesh_runtime::outbox::Outbox;
use caremesh_testkit::{Caller, Service, TestMesh};
use caremesh_tls::client::{ChannelOptions, Target};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn records_event() -> caremesh_proto::audit::v1::AuditEvent {
    let outbox = Outbox::new(
        Service::Records,
        std::sync::Arc::new(caremesh_runtime::clock::SystemClock),
    );
    let mut event = outbox.new_event();
    event.set_action(AuditAction::Read);
    event.set_outcome(AuditOutcome::Success);
    event.operation = "mtls-test".to_owned();
    event
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_cannot_connect() {
    let mesh = TestMesh::start().await;
    for service in Service::ALL {
        let channel = mesh.channel(service, Caller::Impostor(Service::Records));
        let error = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect_err("the handshake must fail");
        // TLS 1.3 clients learn of the rejection when they read the server's alert, so the call
        // fails either while connecting or on its first read, with the CA as the reason.
        let detail = format!("{error:?}");
        assert!(
            matches!(error.code(), Code::Unavailable | Code::Unknown)
                && (detail.contains("UnknownCA")
                    || detail.contains("BadCertificate")
                    || error.code() == Code::Unavailable),
            "{service}: {detail}"
        );
    }
    // The same call with the genuine certificate works.
    let channel = mesh.channel(Service::Audit, Caller::Service(Service::Records));
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn internal_rpcs_accept_only_their_allowed_service_identities() {
    let mesh = TestMesh::start().await;
    let ingest = |caller| {
        let mut client = AuditInternalServiceClient::new(mesh.channel(Service::Audit, caller));
        async move {
            client
                .ingest_events(IngestEventsRequest {
                    events: vec![records_event()],
                })
                .await
        }
    };
    assert_eq!(
        ingest(Caller::Anonymous).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let denied = ingest(Caller::Operator).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("operator/admin"), "{}", denied.message());
    let accepted = ingest(Caller::Service(Service::Records)).await.unwrap().into_inner();
    assert_eq!(accepted.accepted, 1);

    // An allowed service may not ingest events in another service's name.
    let forged = ingest(Caller::Service(Service::Messaging)).await.unwrap_err();
    assert_eq!(forged.code(), Code::PermissionDenied);

    // Per-method rules: GetUserAttributes is for abe-authority-svc and records-svc only.
    let attributes = |caller| {
        let mut client = AuthInternalServiceClient::new(mesh.channel(Service::Auth, caller));
        async move {
            client
                .get_user_attributes(GetUserAttributesRequest::default())
                .await
                .unwrap_err()
        }
    };
    assert_eq!(
        attributes(Caller::Service(Service::Messaging)).await.code(),
        Code::PermissionDenied
    );
    assert_eq!(attributes(Caller::Operator).await.code(), Code::PermissionDenied);
    assert_eq!(attributes(Caller::Anonymous).await.code(), Code::Unauthenticated);
    // records-svc passes the allowlist and reaches the handler, which checks its input...
    let allowed = attributes(Caller::Service(Service::Records)).await;
    assert_eq!(allowed.code(), Code::InvalidArgument);
    // ...and answers for a real user.
    let patient = mesh.patient().await;
    let mut client = AuthInternalServiceClient::new(mesh.channel(Service::Auth, Caller::Service(Service::Records)));
    let answer = client
        .get_user_attributes(GetUserAttributesRequest {
            user_id: patient.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.attributes.contains(&format!("patient:{}", patient.user_id)));
}

#[tokio::test]
async fn a_client_refuses_a_server_with_the_wrong_identity() {
    let mesh = TestMesh::start().await;
    // Dial auth-svc's address but expect audit-svc: the certificate is valid, the identity is not.
    let material = caremesh_tls::ReloadingMaterial::load(mesh.caller_files(Caller::Service(Service::Records))).unwrap();
    let target = Target::parse(
        &mesh.grpc_addr(Service::Auth).to_string(),
        Some(Service::Audit.spiffe_id()),
    )
    .unwrap();
    let channel = caremesh_tls::client::channel(target, material, ChannelOptions::default()).unwrap();
    let error = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
}
