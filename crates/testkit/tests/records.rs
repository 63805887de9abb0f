//! records-svc through the real services: records sealed under ABE policies and signed by their
//! authors are created, read, listed, versioned, marked entered-in-error; the server enforces the
//! policy on top of the cryptography, refuses bad input with clear statuses, audits reads, writes
//! and denials, and lets exactly one of two concurrent edits win (also across two replicas).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use caremesh_crypto::DeviceKeys;
use caremesh_crypto::policy_envelope::{
    POLICY_ENVELOPE_VERSION, RecordVersion, encapsulated_policy, record_content_aad, seal_under_policy,
};
use caremesh_proto::abe::v1::GetPublicParametersRequest;
use caremesh_proto::abe::v1::abe_service_client::AbeServiceClient;
use caremesh_proto::audit::v1::{AuditAction, AuditEvent, AuditOutcome};
use caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient;
use caremesh_proto::records::v1 as pb;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use caremesh_sdk::auth::Role;
use caremesh_testkit::{Backend, Caller, Service, TestMesh, TestUser, backends, eventually};
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// A clinician with published device keys (so their signatures can be checked).
struct Author {
    user: TestUser,
    device: DeviceKeys,
}

/// What a test needs to seal records: the authority's public parameters.
struct Sealer {
    params: caremesh_abe::PublicParams,
    version: String,
}

fn client(mesh: &TestMesh) -> RecordsServiceClient<Channel> {
    RecordsServiceClient::new(mesh.channel(Service::Records, Caller::Anonymous))
}

async fn publish(mesh: &TestMesh, user: &TestUser) -> DeviceKeys {
    let mut device = DeviceKeys::generate(&user.user_id).unwrap();
    let request = device.publish_request(5).unwrap();
    KeyDirectoryServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous))
        .publish_key_bundle(user.session.request(request).unwrap())
        .await
        .unwrap();
    device
}

async fn author(mesh: &TestMesh, role: Role, attributes: &[&str]) -> Author {
    let user = mesh.staff(role, attributes).await;
    let device = publish(mesh, &user).await;
    Author { user, device }
}

async fn sealer(mesh: &TestMesh, user: &TestUser) -> Sealer {
    let answer = AbeServiceClient::new(mesh.channel(Service::AbeAuthority, Caller::Anonymous))
        .get_public_parameters(user.session.request(GetPublicParametersRequest::default()).unwrap())
        .await
        .unwrap()
        .into_inner();
    Sealer {
        params: caremesh_abe::PublicParams::from_bytes(&answer.public_parameters).unwrap(),
        version: answer.version,
    }
}

fn standard_policy(patient: &str) -> String {
    format!(r#"("role:doctor" and "dept:cardiology") or "patient:{patient}" or "emergency:{patient}""#)
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Sealer {
    fn envelope(&self, record_id: &str, patient: &str, kind: &str, version: i64, policy: &str) -> pb::RecordEnvelope {
        let parsed = caremesh_abe::Policy::parse(policy).unwrap();
        let aad = record_content_aad(record_id, patient, kind, version).unwrap();
        let content = format!(r#"{{"resourceType":"{kind}","status":"final","version":{version}}}"#);
        let sealed = seal_under_policy(&self.params, &parsed, &aad, content.as_bytes()).unwrap();
        pb::RecordEnvelope {
            version: POLICY_ENVELOPE_VERSION,
            params_version: self.version.clone(),
            encapsulated_key: sealed.encapsulated_key,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        }
    }

    fn create(
        &self,
        author: &Author,
        record_id: &str,
        patient: &str,
        kind: &str,
        policy: &str,
    ) -> pb::CreateRecordRequest {
        let envelope = self.envelope(record_id, patient, kind, 1, policy);
        signed_create(author, record_id, patient, kind, policy, envelope)
    }

    fn update(&self, author: &Author, latest: &pb::Record, policy: &str) -> pb::UpdateRecordRequest {
        let version = latest.version + 1;
        let envelope = self.envelope(&latest.record_id, &latest.patient_id, &latest.kind, version, policy);
        let identity = author.device.identity();
        let signature = RecordVersion {
            record_id: &latest.record_id,
            patient_id: &latest.patient_id,
            kind: &latest.kind,
            version,
            policy,
            envelope: &envelope,
            author_user_id: &author.user.user_id,
            author_identity_key_id: identity.key_id(),
            previous_version_hash: &latest.version_hash,
        }
        .sign(identity)
        .unwrap();
        pb::UpdateRecordRequest {
            record_id: latest.record_id.clone(),
            etag: latest.etag.clone(),
            version,
            policy: policy.to_owned(),
            envelope: Some(envelope),
            previous_version_hash: latest.version_hash.clone(),
            author_identity_key_id: identity.key_id().to_owned(),
            author_signature: signature.to_vec(),
        }
    }
}

fn signed_create(
    author: &Author,
    record_id: &str,
    patient: &str,
    kind: &str,
    policy: &str,
    envelope: pb::RecordEnvelope,
) -> pb::CreateRecordRequest {
    let identity = author.device.identity();
    let signature = RecordVersion {
        record_id,
        patient_id: patient,
        kind,
        version: 1,
        policy,
        envelope: &envelope,
        author_user_id: &author.user.user_id,
        author_identity_key_id: identity.key_id(),
        previous_version_hash: &[],
    }
    .sign(identity)
    .unwrap();
    pb::CreateRecordRequest {
        record_id: record_id.to_owned(),
        patient_id: patient.to_owned(),
        kind: kind.to_owned(),
        policy: policy.to_owned(),
        envelope: Some(envelope),
        author_identity_key_id: identity.key_id().to_owned(),
        author_signature: signature.to_vec(),
    }
}

async fn create(
    mesh: &TestMesh,
    author: &Author,
    request: pb::CreateRecordRequest,
) -> Result<pb::Record, tonic::Status> {
    client(mesh)
        .create_record(author.user.session.request(request).unwrap())
        .await
        .map(|answer| answer.into_inner().record.unwrap())
}

async fn get(mesh: &TestMesh, user: &TestUser, record_id: &str, version: i64) -> Result<pb::Record, tonic::Status> {
    client(mesh)
        .get_record(
            user.session
                .request(pb::GetRecordRequest {
                    record_id: record_id.to_owned(),
                    version,
                    view: pb::RecordView::Unspecified.into(),
                })
                .unwrap(),
        )
        .await
        .map(|answer| answer.into_inner().record.unwrap())
}

async fn list(
    mesh: &TestMesh,
    user: &TestUser,
    request: pb::ListRecordsRequest,
) -> Result<pb::ListRecordsResponse, tonic::Status> {
    client(mesh)
        .list_records(user.session.request(request).unwrap())
        .await
        .map(tonic::Response::into_inner)
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

async fn wait_for_events(mesh: &TestMesh, check: impl Fn(&[AuditEvent]) -> bool) -> Vec<AuditEvent> {
    let log = mesh.audit_log().await;
    eventually(Duration::from_secs(15), || {
        let log = log.clone();
        let check = &check;
        async move {
            let events = log.events().await.ok()?;
            check(&events).then_some(events)
        }
    })
    .await
    .expect("the audit events arrive in audit-svc's log")
}

#[tokio::test]
async fn records_are_created_read_and_refused_by_policy() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let name = backend.name();
        let cardiology = author(&mesh, Role::Doctor, &["dept:cardiology", "org:st-mary", "ward:w1"]).await;
        let oncology = author(&mesh, Role::Doctor, &["dept:oncology"]).await;
        let patient = mesh.patient().await;
        let p = patient.user_id.clone();
        let sealer = sealer(&mesh, &cardiology.user).await;
        let policy = standard_policy(&p);

        // The cardiology doctor creates and reads a record.
        let record_id = new_id();
        let request = sealer.create(&cardiology, &record_id, &p, "Observation", &policy);
        let created = create(&mesh, &cardiology, request.clone()).await.unwrap();
        assert_eq!(
            (created.version, created.policy.as_str()),
            (1, policy.as_str()),
            "{name}"
        );
        assert_eq!(created.author_user_id, cardiology.user.user_id);
        assert!(created.previous_version_hash.is_empty());
        assert_eq!(created.version_hash.len(), 32);
        assert!(!created.etag.is_empty());
        let read = get(&mesh, &cardiology.user, &record_id, 0).await.unwrap();
        assert_eq!(read.envelope, request.envelope, "{name}: full view by default");
        assert_eq!(read.etag, created.etag);

        // Idempotent by record id: the same content again returns the stored record; other
        // content under the same id is ALREADY_EXISTS.
        let again = create(&mesh, &cardiology, request.clone()).await.unwrap();
        assert_eq!(again, created, "{name}: idempotent create");
        let other = sealer.create(&cardiology, &record_id, &p, "Observation", &policy);
        let refused = create(&mesh, &cardiology, other).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{name}: {refused:?}");

        // The oncology doctor is refused, and the refusal is audited.
        let refused = get(&mesh, &oncology.user, &record_id, 0).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}: {refused:?}");
        assert_eq!(reason(&refused), "POLICY_NOT_SATISFIED");
        // ... and cannot open the content either: the ciphertext is bound to the policy that
        // oncology attributes do not satisfy.
        let encapsulated = encapsulated_policy(&read.envelope.as_ref().unwrap().encapsulated_key).unwrap();
        assert!(!encapsulated.is_satisfied_by(&["role:doctor", "dept:oncology"]));
        assert!(encapsulated.is_satisfied_by(&["role:doctor", "dept:cardiology"]));

        // The patient reads their own record and lists their own records without naming themselves.
        let own = get(&mesh, &patient, &record_id, 0).await.unwrap();
        assert_eq!(own.record_id, record_id);
        let listed = list(&mesh, &patient, pb::ListRecordsRequest::default()).await.unwrap();
        assert_eq!(listed.records.len(), 1, "{name}");
        assert!(listed.records[0].envelope.is_none(), "{name}: basic view by default");
        // Another patient gets nothing of it.
        let stranger = mesh.patient().await;
        let refused = get(&mesh, &stranger, &record_id, 0).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let listed = list(
            &mesh,
            &stranger,
            pb::ListRecordsRequest {
                patient_id: p.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(listed.records.is_empty(), "{name}: unreadable records are left out");

        // Admins and auditors are refused.
        let admin = mesh.admin().await;
        let refused = get(&mesh, admin, &record_id, 0).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}");
        assert_eq!(reason(&refused), "ROLE_CANNOT_READ_RECORDS");
        let refused = list(
            &mesh,
            admin,
            pb::ListRecordsRequest {
                patient_id: p.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let auditor = mesh.created(Role::Auditor).await;
        let refused = get(&mesh, &auditor, &record_id, 0).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);

        // The oncology doctor cannot write under a policy they do not satisfy.
        let refused = create(
            &mesh,
            &oncology,
            sealer.create(&oncology, &new_id(), &p, "Condition", &policy),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}");

        // A bad signature (one flipped byte; another author's key) is INVALID_ARGUMENT.
        let mut tampered = sealer.create(&cardiology, &new_id(), &p, "Observation", &policy);
        tampered.author_signature[0] ^= 1;
        let refused = create(&mesh, &cardiology, tampered).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{name}: {refused:?}");
        assert_eq!(reason(&refused), "BAD_SIGNATURE");
        let forged = sealer.create(&oncology, &new_id(), &p, "Observation", &policy);
        let refused = create(&mesh, &cardiology, forged).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{name}: {refused:?}");
        assert_eq!(reason(&refused), "BAD_SIGNATURE");
        // An author without published keys is told to publish them.
        let keyless = Author {
            user: mesh.staff(Role::Nurse, &["dept:cardiology"]).await,
            device: DeviceKeys::generate("someone-else").unwrap(),
        };
        let nurse_policy = format!(r#""role:nurse" or "patient:{p}" or "emergency:{p}""#);
        let refused = create(
            &mesh,
            &keyless,
            sealer.create(&keyless, &new_id(), &p, "Observation", &nurse_policy),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{name}: {refused:?}");
        assert!(refused.message().contains("publish"), "{}", refused.message());

        // Policies: the mandatory clauses, garbage, too deep, too many attributes, and an
        // encapsulated key made for another policy.
        let without_clauses = r#""role:doctor" and "dept:cardiology""#;
        let refused = create(
            &mesh,
            &cardiology,
            sealer.create(&cardiology, &new_id(), &p, "Observation", without_clauses),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{name}");
        assert_eq!(reason(&refused), "MISSING_PATIENT_CLAUSE");
        assert!(
            refused.message().contains(&format!("patient:{p}")),
            "{}",
            refused.message()
        );
        let valid_envelope = sealer.envelope(&new_id(), &p, "Observation", 1, &policy);
        for (bad_policy, expected_reason) in [
            ("role:doctor and (".to_owned(), "UNQUOTED_ATTRIBUTE"),
            (
                format!(
                    "{}\"dept:x\"{} or \"patient:{p}\" or \"emergency:{p}\"",
                    "(".repeat(40),
                    ")".repeat(40)
                ),
                "POLICY_TOO_DEEP",
            ),
            (
                (0..100)
                    .map(|i| format!("\"dept:d{i}\""))
                    .collect::<Vec<_>>()
                    .join(" or "),
                "TOO_MANY_ATTRIBUTES",
            ),
            (r#""a:1" and "b:2" or "c:3""#.to_owned(), "MIXED_OPERATORS"),
            (
                format!("\"patient:{p}\" or \"emergency:{p}\" or \"role:nurse\""),
                "POLICY_MISMATCH",
            ),
        ] {
            let id = new_id();
            let request = signed_create(&cardiology, &id, &p, "Observation", &bad_policy, valid_envelope.clone());
            let refused = create(&mesh, &cardiology, request).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{name}: {bad_policy}");
            assert_eq!(reason(&refused), expected_reason, "{name}: {}", refused.message());
            assert!(refused.message().len() > 20, "a helpful message: {}", refused.message());
        }

        // Other bad input.
        let mut bad_kind = sealer.create(&cardiology, &new_id(), &p, "Observation", &policy);
        bad_kind.kind = "Bloodwork".to_owned();
        let refused = create(&mesh, &cardiology, bad_kind).await.unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (tonic::Code::InvalidArgument, "INVALID_KIND")
        );
        let mut bad_nonce = sealer.create(&cardiology, &new_id(), &p, "Observation", &policy);
        bad_nonce.envelope.as_mut().unwrap().nonce.pop();
        let refused = create(&mesh, &cardiology, bad_nonce).await.unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (tonic::Code::InvalidArgument, "INVALID_ENVELOPE")
        );
        let mut bad_id = sealer.create(&cardiology, &new_id(), &p, "Observation", &policy);
        bad_id.record_id = "not-a-uuid".to_owned();
        let refused = create(&mesh, &cardiology, bad_id).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);

        // A flat n-ary policy with the mandatory clauses works (and is enforced: one more
        // attribute the doctor lacks and they may not write under it).
        let flat_id = new_id();
        let lacking = format!(
            r#"("role:doctor" and "dept:cardiology" and "org:st-mary" and "ward:w1" and "team:t9") or "patient:{p}" or "emergency:{p}""#
        );
        let refused = create(
            &mesh,
            &cardiology,
            sealer.create(&cardiology, &flat_id, &p, "Condition", &lacking),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}: {refused:?}");
        let flat = format!(
            r#"("role:doctor" and "dept:cardiology" and "org:st-mary" and "ward:w1") or "patient:{p}" or "emergency:{p}""#
        );
        let flat_record = create(
            &mesh,
            &cardiology,
            sealer.create(&cardiology, &flat_id, &p, "Condition", &flat),
        )
        .await
        .unwrap();
        assert_eq!(flat_record.policy, flat);
        get(&mesh, &patient, &flat_id, 0).await.unwrap();

        // Pagination: five more records, listed two at a time, newest first, no duplicates.
        let mut ids = vec![record_id.clone(), flat_id.clone()];
        for _ in 0..3 {
            mesh.advance(1);
            let id = new_id();
            create(
                &mesh,
                &cardiology,
                sealer.create(&cardiology, &id, &p, "MedicationRequest", &policy),
            )
            .await
            .unwrap();
            ids.push(id);
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(
                &mesh,
                &cardiology.user,
                pb::ListRecordsRequest {
                    patient_id: p.clone(),
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(page.records.len() <= 2);
            seen.extend(page.records.iter().map(|record| record.record_id.clone()));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(seen.len(), 5, "{name}: {seen:?}");
        assert_eq!(seen[..3], expected[..3], "{name}: most recently updated first");
        let mut sorted_seen = seen.clone();
        sorted_seen.sort();
        let mut sorted_ids = ids.clone();
        sorted_ids.sort();
        assert_eq!(sorted_seen, sorted_ids);
        let by_kind = list(
            &mesh,
            &cardiology.user,
            pb::ListRecordsRequest {
                patient_id: p.clone(),
                kind: "MedicationRequest".to_owned(),
                view: pb::RecordView::Full.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(by_kind.records.len(), 3);
        assert!(by_kind.records.iter().all(|record| record.envelope.is_some()));
        let refused = list(
            &mesh,
            &cardiology.user,
            pb::ListRecordsRequest {
                patient_id: p.clone(),
                page_token: "garbage".to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);

        // The audit log has the create, the reads and the refusals, with the patient id and no
        // ciphertext.
        let events = wait_for_events(&mesh, |events| {
            let records: Vec<_> = events.iter().filter(|event| event.entity_type == "record").collect();
            records.iter().any(|event| {
                event.operation == "GetRecord"
                    && event.outcome() == AuditOutcome::Denied
                    && event
                        .actor
                        .as_ref()
                        .is_some_and(|actor| actor.user_id == oncology.user.user_id)
            }) && records
                .iter()
                .any(|event| event.operation == "CreateRecord" && event.outcome() == AuditOutcome::Success)
                && records.iter().any(|event| {
                    event.operation == "GetRecord"
                        && event.outcome() == AuditOutcome::Success
                        && event.actor.as_ref().is_some_and(|actor| actor.user_id == p)
                })
                && records.iter().any(|event| {
                    event.operation == "GetRecord"
                        && event.actor.as_ref().is_some_and(|actor| actor.role == "admin")
                        && event.outcome() == AuditOutcome::Denied
                })
        })
        .await;
        let denial = events
            .iter()
            .find(|event| {
                event.operation == "GetRecord"
                    && event.outcome() == AuditOutcome::Denied
                    && event
                        .actor
                        .as_ref()
                        .is_some_and(|actor| actor.user_id == oncology.user.user_id)
            })
            .unwrap();
        assert_eq!(denial.patient_id, p, "{name}");
        assert_eq!(denial.entity_id, record_id);
        assert_eq!(denial.action(), AuditAction::Read);
        assert_eq!(denial.outcome_reason, "POLICY_NOT_SATISFIED");
        assert!(!denial.emergency);
        mesh.shutdown().await;
    }
}

async fn update(
    mesh: &TestMesh,
    author: &Author,
    request: pb::UpdateRecordRequest,
) -> Result<pb::Record, tonic::Status> {
    client(mesh)
        .update_record(author.user.session.request(request).unwrap())
        .await
        .map(|answer| answer.into_inner().record.unwrap())
}

fn records_channel(mesh: &TestMesh, addr: std::net::SocketAddr) -> Channel {
    let material = caremesh_tls::ReloadingMaterial::load(mesh.caller_files(Caller::Anonymous)).unwrap();
    let target = caremesh_tls::client::Target::parse(&addr.to_string(), Some(Service::Records.spiffe_id())).unwrap();
    caremesh_tls::client::channel(target, material, caremesh_tls::client::ChannelOptions::default()).unwrap()
}

#[tokio::test]
async fn versions_chain_concurrent_edits_abort_and_marks_change_the_etag() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let name = backend.name();
        let cardiology = author(&mesh, Role::Doctor, &["dept:cardiology"]).await;
        let nurse = author(&mesh, Role::Nurse, &["dept:cardiology"]).await;
        let patient = mesh.patient().await;
        let p = patient.user_id.clone();
        let sealer = sealer(&mesh, &cardiology.user).await;
        let policy = standard_policy(&p);
        let record_id = new_id();
        let v1 = create(
            &mesh,
            &cardiology,
            sealer.create(&cardiology, &record_id, &p, "AllergyIntolerance", &policy),
        )
        .await
        .unwrap();

        // Version 2, then two concurrent edits on top of it with the same etag, sent to two
        // replicas: exactly one wins, the other is ABORTED.
        mesh.advance(1);
        let v2 = update(&mesh, &cardiology, sealer.update(&cardiology, &v1, &policy))
            .await
            .unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.previous_version_hash, v1.version_hash, "{name}");
        assert_ne!(v2.etag, v1.etag);
        let second = mesh.start_second_instance(Service::Records).await;
        let first_request = sealer.update(&cardiology, &v2, &policy);
        let second_request = sealer.update(&cardiology, &v2, &policy);
        let mut one = client(&mesh);
        let mut two = RecordsServiceClient::new(records_channel(&mesh, second.grpc_addr));
        let (a, b) = tokio::join!(
            one.update_record(cardiology.user.session.request(first_request.clone()).unwrap()),
            two.update_record(cardiology.user.session.request(second_request).unwrap()),
        );
        let outcomes = [
            a.map(|answer| answer.into_inner().record.unwrap()),
            b.map(|answer| answer.into_inner().record.unwrap()),
        ];
        let winners: Vec<_> = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).collect();
        let losers: Vec<_> = outcomes.iter().filter_map(|outcome| outcome.as_ref().err()).collect();
        assert_eq!(winners.len(), 1, "{name}: exactly one edit wins: {losers:?}");
        assert_eq!(losers[0].code(), tonic::Code::Aborted, "{name}: {:?}", losers[0]);
        let v3 = winners[0].clone();
        assert_eq!(v3.version, 3);
        second.stop().await;

        // A stale etag is ABORTED; a wrong version or previous hash is refused with a message.
        let refused = update(&mesh, &cardiology, first_request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Aborted, "{name}");
        let mut wrong_version = sealer.update(&cardiology, &v3, &policy);
        wrong_version.version = 7;
        let refused = update(&mesh, &cardiology, wrong_version).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{name}");
        assert!(refused.message().contains('4'), "{}", refused.message());
        let mut wrong_hash = sealer.update(&cardiology, &v3, &policy);
        wrong_hash.previous_version_hash = v1.version_hash.clone();
        let refused = update(&mesh, &cardiology, wrong_hash).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{name}");
        assert_eq!(reason(&refused), "PREVIOUS_HASH_MISMATCH");

        // A nurse may update it under a policy naming nurses (they must satisfy the current one:
        // they do not), so they are refused; the doctor widens the policy, then the nurse writes.
        let wider = format!(
            r#"("role:doctor" and "dept:cardiology") or ("role:nurse" and "dept:cardiology") or "patient:{p}" or "emergency:{p}""#
        );
        let refused = update(&mesh, &nurse, sealer.update(&nurse, &v3, &wider))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}");
        mesh.advance(1);
        let v4 = update(&mesh, &cardiology, sealer.update(&cardiology, &v3, &wider))
            .await
            .unwrap();
        let v5 = update(&mesh, &nurse, sealer.update(&nurse, &v4, &wider)).await.unwrap();
        assert_eq!(v5.author_user_id, nurse.user.user_id);

        // History: newest first, paginated, each version's previous hash the next older one's hash.
        let mut versions = Vec::new();
        let mut token = String::new();
        loop {
            let page = client(&mesh)
                .list_record_versions(
                    cardiology
                        .user
                        .session
                        .request(pb::ListRecordVersionsRequest {
                            record_id: record_id.clone(),
                            page_size: 2,
                            page_token: token.clone(),
                            view: pb::RecordView::Unspecified.into(),
                        })
                        .unwrap(),
                )
                .await
                .unwrap()
                .into_inner();
            assert!(page.versions.iter().all(|version| version.envelope.is_none()));
            versions.extend(page.versions);
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let numbers: Vec<i64> = versions.iter().map(|version| version.version).collect();
        assert_eq!(numbers, vec![5, 4, 3, 2, 1], "{name}");
        for pair in versions.windows(2) {
            assert_eq!(
                pair[0].previous_version_hash, pair[1].version_hash,
                "{name}: hash chain"
            );
        }
        assert!(versions.iter().all(|version| version.etag == v5.etag));
        let old = get(&mesh, &cardiology.user, &record_id, 2).await.unwrap();
        assert_eq!(old.version_hash, v2.version_hash);
        let missing = get(&mesh, &cardiology.user, &record_id, 9).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);

        // Entered-in-error: version 5 is marked; the etag changes; the version stays stored and
        // listed in the history; the record leaves the default listing.
        let mark = |version: i64, etag: &str, reason: &str| pb::MarkEnteredInErrorRequest {
            record_id: record_id.clone(),
            version,
            etag: etag.to_owned(),
            reason: reason.to_owned(),
        };
        let refused = client(&mesh)
            .mark_entered_in_error(
                cardiology
                    .user
                    .session
                    .request(mark(5, &v5.etag, "wrong patient"))
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (tonic::Code::InvalidArgument, "INVALID_REASON")
        );
        let refused = client(&mesh)
            .mark_entered_in_error(patient.session.request(mark(5, &v5.etag, "WRONG_PATIENT")).unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::PermissionDenied,
            "{name}: patients do not write"
        );
        let marked = client(&mesh)
            .mark_entered_in_error(
                cardiology
                    .user
                    .session
                    .request(mark(5, &v5.etag, "WRONG_PATIENT"))
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner()
            .record
            .unwrap();
        assert_ne!(marked.etag, v5.etag, "{name}: the mark changes the etag");
        let mark_info = marked.entered_in_error.clone().unwrap();
        assert_eq!(mark_info.reason, "WRONG_PATIENT");
        assert_eq!(mark_info.marked_by_user_id, cardiology.user.user_id);
        let refused = client(&mesh)
            .mark_entered_in_error(cardiology.user.session.request(mark(4, &v5.etag, "DUPLICATE")).unwrap())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Aborted, "{name}: the old etag is stale");
        let refused = update(&mesh, &cardiology, sealer.update(&cardiology, &v5, &wider))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Aborted, "{name}");
        let read = get(&mesh, &cardiology.user, &record_id, 0).await.unwrap();
        assert_eq!(read.version, 5);
        assert!(read.entered_in_error.is_some());
        assert!(read.envelope.is_some(), "{name}: still stored");
        let listed = list(
            &mesh,
            &cardiology.user,
            pb::ListRecordsRequest {
                patient_id: p.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(
            listed.records.is_empty(),
            "{name}: entered-in-error latest versions are left out"
        );
        let listed = list(
            &mesh,
            &cardiology.user,
            pb::ListRecordsRequest {
                patient_id: p.clone(),
                include_entered_in_error: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(listed.records.len(), 1);
        assert_eq!(listed.records[0].etag, marked.etag);

        // A correction on top of the marked version brings it back.
        let v6 = update(&mesh, &cardiology, sealer.update(&cardiology, &read, &wider))
            .await
            .unwrap();
        assert_eq!(v6.version, 6);
        assert!(v6.entered_in_error.is_none());

        let events = wait_for_events(&mesh, |events| {
            events
                .iter()
                .any(|event| event.operation == "MarkEnteredInError" && event.outcome() == AuditOutcome::Success)
                && events
                    .iter()
                    .filter(|event| event.operation == "UpdateRecord" && event.outcome() == AuditOutcome::Success)
                    .count()
                    >= 5
                && events.iter().any(|event| event.operation == "ListRecordVersions")
        })
        .await;
        let marked_event = events
            .iter()
            .find(|event| event.operation == "MarkEnteredInError" && event.outcome() == AuditOutcome::Success)
            .unwrap();
        assert_eq!(marked_event.patient_id, p);
        assert_eq!(marked_event.action(), AuditAction::Update);
        assert_eq!(marked_event.entity_id, record_id);
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn patients_reads_are_not_emergencies_and_a_second_factor_is_required() {
    let backend = Backend::Sqlite;
    let mesh = TestMesh::builder().backend(backend).start().await;
    let cardiology = author(&mesh, Role::Doctor, &["dept:cardiology"]).await;
    let patient = mesh.patient().await;
    let p = patient.user_id.clone();
    let sealer = sealer(&mesh, &cardiology.user).await;
    let record_id = new_id();
    create(
        &mesh,
        &cardiology,
        sealer.create(&cardiology, &record_id, &p, "Observation", &standard_policy(&p)),
    )
    .await
    .unwrap();
    // The patient's own access is not an emergency one.
    get(&mesh, &patient, &record_id, 0).await.unwrap();
    let events = wait_for_events(&mesh, |events| {
        events
            .iter()
            .any(|event| event.operation == "GetRecord" && event.patient_id == p)
    })
    .await;
    let read = events
        .iter()
        .find(|event| event.operation == "GetRecord" && event.patient_id == p)
        .unwrap();
    assert!(!read.emergency);
    assert_eq!(read.purpose_of_use, "PATRQT");
    // No session at all: UNAUTHENTICATED.
    let refused = client(&mesh)
        .get_record(pb::GetRecordRequest {
            record_id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // A session without a second factor (AAL1) is refused.
    let username = format!("aal1-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let password = format!(
        "vellum orbit cactus lantern {}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    let sdk = mesh.sdk();
    sdk.register(&username, &password, Role::Patient, "No MFA")
        .await
        .unwrap();
    let caremesh_sdk::auth::LoginStep::Done(session) = sdk.login(&username, &password).await.unwrap() else {
        panic!("no MFA enrolled: tokens straight away");
    };
    let refused = client(&mesh)
        .list_records(session.request(pb::ListRecordsRequest::default()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&refused), "MFA_REQUIRED");
    mesh.shutdown().await;
}
