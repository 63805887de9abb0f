//! Health on both ports and reflection (v1 and v1alpha) on every service, as grpcurl and
//! Kubernetes probes use them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use caremesh_testkit::{Caller, Service, TestMesh};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn every_service_is_serving_on_its_tls_port_and_its_plaintext_ops_port() {
    let mesh = TestMesh::start().await;
    for service in Service::ALL {
        for caller in [Caller::Anonymous, Caller::Operator] {
            let status = HealthClient::new(mesh.channel(service, caller))
                .check(HealthCheckRequest::default())
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "{service} main port as {caller:?}");
        }
        let ops = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.ops_addr(service)))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = HealthClient::new(ops)
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service} ops port");
    }
}

#[tokio::test]
async fn each_grpc_service_reports_its_own_health_and_unknown_ones_are_not_found() {
    let mesh = TestMesh::start().await;
    let mut client = HealthClient::new(mesh.channel(Service::Audit, Caller::Anonymous));
    let status = client
        .check(HealthCheckRequest {
            service: "caremesh.audit.v1.AuditService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    let missing = client
        .check(HealthCheckRequest {
            service: "caremesh.auth.v1.AuthService".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        missing.code(),
        Code::NotFound,
        "auth's service is not served by audit-svc"
    );
}

#[tokio::test]
async fn the_ops_port_serves_health_only() {
    let mesh = TestMesh::start().await;
    let ops = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.ops_addr(Service::Audit)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = caremesh_proto::audit::v1::audit_service_client::AuditServiceClient::new(ops);
    let error = client
        .query_events(caremesh_proto::audit::v1::QueryEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Code::Unimplemented,
        "no caremesh RPC on the plaintext port"
    );
}

/// grpcurl (`grpcurl -plaintext localhost:50155 grpc.health.v1.Health/Check`) needs reflection
/// on the ops port too: it lists health and reflection, nothing of caremesh's.
#[tokio::test]
async fn the_ops_port_serves_reflection_for_health() {
    let mesh = TestMesh::start().await;
    let ops = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.ops_addr(Service::Audit)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = v1::ServerReflectionClient::new(ops);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response: v1::ServerReflectionResponse = stream.message().await.unwrap().unwrap();
    let Some(v1::MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|service| service.name).collect();
    assert!(names.contains("grpc.health.v1.Health"), "{names:?}");
    assert!(!names.iter().any(|name| name.starts_with("caremesh.")), "{names:?}");
}

mod v1 {
    pub use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    pub use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    pub use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    pub use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
}

mod v1alpha {
    pub use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    pub use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    pub use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    pub use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};
}

async fn ask_v1(mesh: &TestMesh, service: Service, request: v1::MessageRequest) -> v1::MessageResponse {
    let mut client = v1::ServerReflectionClient::new(mesh.channel(service, Caller::Operator));
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response: v1::ServerReflectionResponse = stream.message().await.unwrap().unwrap();
    response.message_response.unwrap()
}

async fn ask_v1alpha(mesh: &TestMesh, service: Service, request: v1alpha::MessageRequest) -> v1alpha::MessageResponse {
    let mut client = v1alpha::ServerReflectionClient::new(mesh.channel(service, Caller::Operator));
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response: v1alpha::ServerReflectionResponse = stream.message().await.unwrap().unwrap();
    response.message_response.unwrap()
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_caremesh_service_across_the_mesh() {
    let mesh = TestMesh::start().await;
    let mut listed_v1 = BTreeSet::new();
    let mut listed_v1alpha = BTreeSet::new();
    for service in Service::ALL {
        let v1::MessageResponse::ListServicesResponse(list) =
            ask_v1(&mesh, service, v1::MessageRequest::ListServices(String::new())).await
        else {
            panic!("{service}: not a list answer");
        };
        let names: BTreeSet<String> = list.service.into_iter().map(|service| service.name).collect();
        assert!(names.contains("grpc.health.v1.Health"), "{service}: {names:?}");
        listed_v1.extend(names.into_iter().filter(|name| name.starts_with("caremesh.")));

        let v1alpha::MessageResponse::ListServicesResponse(list) =
            ask_v1alpha(&mesh, service, v1alpha::MessageRequest::ListServices(String::new())).await
        else {
            panic!("{service}: not a list answer");
        };
        listed_v1alpha.extend(
            list.service
                .into_iter()
                .map(|service| service.name)
                .filter(|name| name.starts_with("caremesh.")),
        );
    }
    let expected: BTreeSet<String> = caremesh_proto::SERVICE_NAMES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    assert_eq!(listed_v1, expected);
    assert_eq!(listed_v1alpha, expected);
}

#[tokio::test]
async fn reflection_describes_caremesh_health_and_error_detail_symbols() {
    let mesh = TestMesh::start().await;
    for symbol in [
        "caremesh.records.v1.RecordsService",
        "caremesh.audit.v1.AuditEvent",
        "grpc.health.v1.Health",
        "google.rpc.ErrorInfo",
    ] {
        let answer = ask_v1(
            &mesh,
            Service::Records,
            v1::MessageRequest::FileContainingSymbol(symbol.to_owned()),
        )
        .await;
        let v1::MessageResponse::FileDescriptorResponse(files) = answer else {
            panic!("{symbol}: {answer:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty(), "{symbol}");
    }
}
