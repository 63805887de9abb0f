//! abe-authority-svc through the real services: the authority is set up once with its master key
//! sealed, serves its public parameters to signed-in users, and validates policies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use caremesh_proto::abe::v1::abe_service_client::AbeServiceClient;
use caremesh_proto::abe::v1::{GetPublicParametersRequest, ValidatePolicyRequest};
use caremesh_testkit::{Caller, Service, TestMesh, backends};
use sea_orm::EntityTrait;

#[tokio::test]
async fn public_parameters_are_served_to_signed_in_users_and_survive_restarts() {
    for backend in backends() {
        let mut mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let mut client = AbeServiceClient::new(mesh.channel(Service::AbeAuthority, Caller::Anonymous));
        let refused = client
            .get_public_parameters(GetPublicParametersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);

        let answer = client
            .get_public_parameters(patient.session.request(GetPublicParametersRequest::default()).unwrap())
            .await
            .unwrap()
            .into_inner();
        let params = caremesh_abe::PublicParams::from_bytes(&answer.public_parameters).unwrap();
        let again = client
            .get_public_parameters(
                patient
                    .session
                    .request(GetPublicParametersRequest {
                        known_version: answer.version.clone(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner();
        assert!(again.not_modified && again.public_parameters.is_empty());

        // The master key is stored sealed, opens with the operator's key-encryption key, and
        // belongs to the published parameters.
        let row = abe_authority_svc::storage::authority::Entity::find()
            .one(&mesh.database(Service::AbeAuthority).await)
            .await
            .unwrap()
            .unwrap();
        let kek = caremesh_runtime::kek::Kek::load(&mesh.config(Service::AbeAuthority).kek_file).unwrap();
        let master = kek
            .open(&format!("abe/master-key/{}", row.version), &row.sealed_master_key)
            .unwrap();
        let master = caremesh_abe::MasterKey::from_bytes(&master).unwrap();
        assert_eq!(master.public_params().to_bytes(), params.to_bytes());
        assert!(
            !row.sealed_master_key
                .windows(32)
                .any(|window| master.to_bytes().windows(32).any(|part| part == window)),
            "{}: no plaintext master key material at rest",
            backend.name()
        );

        mesh.stop_service(Service::AbeAuthority).await;
        mesh.start_service(Service::AbeAuthority).await;
        let mut client = AbeServiceClient::new(mesh.channel(Service::AbeAuthority, Caller::Anonymous));
        let after = client
            .get_public_parameters(patient.session.request(GetPublicParametersRequest::default()).unwrap())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(after.version, answer.version, "{}: set up once", backend.name());
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn policies_are_validated_with_helpful_errors() {
    let mesh = TestMesh::start().await;
    let doctor = mesh.staff(caremesh_sdk::auth::Role::Doctor, &["dept:cardiology"]).await;
    let mut client = AbeServiceClient::new(mesh.channel(Service::AbeAuthority, Caller::Anonymous));
    let mut check = async |policy: &str, patient: &str| {
        client
            .validate_policy(
                doctor
                    .session
                    .request(ValidatePolicyRequest {
                        policy: policy.to_owned(),
                        record_patient_id: patient.to_owned(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner()
    };
    let flat = check(r#""role:doctor" and "dept:cardiology" and "org:st-mary""#, "").await;
    assert!(flat.valid, "flat n-ary and works");
    assert_eq!(flat.attributes.len(), 3);

    let garbage = check("role:doctor and (", "").await;
    assert!(!garbage.valid);
    let error = garbage.error.unwrap();
    assert_eq!(error.reason, "UNQUOTED_ATTRIBUTE");
    assert!(error.message.contains("byte 0"), "{}", error.message);

    let deep = check(&format!("{}\"dept:x\"{}", "(".repeat(100), ")".repeat(100)), "").await;
    assert_eq!(deep.error.unwrap().reason, "POLICY_TOO_DEEP");
    let huge = (0..100)
        .map(|i| format!("\"dept:d{i}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    let huge = check(&huge, "").await;
    assert_eq!(huge.error.unwrap().reason, "TOO_MANY_ATTRIBUTES");
    let mixed = check(r#""a:1" and "b:2" or "c:3""#, "").await;
    assert_eq!(mixed.error.unwrap().reason, "MIXED_OPERATORS");

    let missing = check(r#""role:doctor" and "dept:cardiology""#, "p-1").await;
    assert_eq!(missing.error.unwrap().reason, "MISSING_PATIENT_CLAUSE");
    let complete = check(
        r#"("role:doctor" and "dept:cardiology") or "patient:p-1" or "emergency:p-1""#,
        "p-1",
    )
    .await;
    assert!(complete.valid, "{:?}", complete.error);
    assert_eq!(complete.depth, 1);
}
