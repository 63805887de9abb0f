//! Certificates are re-read from disk: replacing a service's files changes what new connections
//! see, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use caremesh_pki::CertificateAuthority;
use caremesh_testkit::{Service, TestMesh};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// The certificate a fresh TLS connection to `service` is shown.
async fn presented_certificate(mesh: &TestMesh, service: Service) -> CertificateDer<'static> {
    let material =
        caremesh_tls::ReloadingMaterial::load(caremesh_tls::TlsFiles::ca_only(mesh.pki().ca_cert())).unwrap();
    let config = caremesh_tls::client::client_config(&material).unwrap();
    let tcp = TcpStream::connect(mesh.grpc_addr(service)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

#[tokio::test]
async fn replacing_certificate_files_changes_the_certificate_new_connections_see() {
    let mesh = TestMesh::start().await;
    let before = presented_certificate(&mesh, Service::Records).await;
    assert_eq!(
        before,
        presented_certificate(&mesh, Service::Records).await,
        "stable until rotated"
    );

    let pki = mesh.pki();
    let ca = CertificateAuthority::load(&pki.ca_cert(), &pki.ca_key()).unwrap();
    let renewed = ca.issue_service(Service::Records.as_str(), &[]).unwrap();
    renewed
        .write(&pki.service_cert("records-svc"), &pki.service_key("records-svc"))
        .unwrap();

    let after = presented_certificate(&mesh, Service::Records).await;
    assert_ne!(before, after, "the rotated certificate is presented");
    assert_eq!(&after, renewed.cert_der());

    // The rotated service still works as a mesh client and server.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        mesh.channel(Service::Records, caremesh_testkit::Caller::Service(Service::Audit)),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_half_written_certificate_keeps_the_previous_one_in_service() {
    let mesh = TestMesh::start().await;
    let before = presented_certificate(&mesh, Service::Auth).await;
    std::fs::write(
        mesh.pki().service_cert("auth-svc"),
        "-----BEGIN CERTIFICATE-----\ntrunc",
    )
    .unwrap();
    assert_eq!(before, presented_certificate(&mesh, Service::Auth).await);
}
