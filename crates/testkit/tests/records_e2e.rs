//! Records, group messages and emergency access end to end, as users do it through the SDK:
//! attribute keys issued by abe-authority-svc (attributes from auth-svc, sealed to the device's
//! identity key), records sealed, signed and opened on the device, server-side enforcement by
//! records-svc, break-glass access with its audit alert and its end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use caremesh_proto::audit::v1 as audit_pb;
use caremesh_proto::messaging::v1 as msg_pb;
use caremesh_proto::records::v1 as pb;
use caremesh_sdk::auth::{Role, Session};
use caremesh_sdk::messaging::{Content, Messenger};
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::{TestMesh, TestUser, backends, eventually};
use tonic::Code;

async fn device(mesh: &TestMesh, session: &Session) -> (Messenger, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let messenger = Messenger::open(mesh.sdk(), dir.path(), "default", session)
        .await
        .unwrap();
    (messenger, dir)
}

const OBSERVATION: &[u8] = br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},"valueQuantity":{"value":72,"unit":"/min"}}"#;

fn code_of(result: Result<impl std::fmt::Debug, caremesh_sdk::SdkError>) -> Option<Code> {
    result.err().and_then(|error| error.code())
}

#[tokio::test]
async fn cardiology_records_open_for_cardiology_and_the_patient_only() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let cardiologist = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let oncologist = mesh.staff(Role::Doctor, &["dept:oncology"]).await;
        let (cardio, _c) = device(&mesh, &cardiologist.session).await;
        let (onco, _o) = device(&mesh, &oncologist.session).await;
        let (own, _p) = device(&mesh, &patient.session).await;

        let record = cardio
            .create_record(
                &cardiologist.session,
                NewRecord {
                    patient_id: &patient.user_id,
                    kind: "Observation",
                    policy: r#""role:doctor" and "dept:cardiology""#,
                    content: OBSERVATION,
                },
            )
            .await
            .unwrap();
        assert_eq!(record.version, 1);
        assert!(record.policy.contains(&format!("patient:{}", patient.user_id)));

        let read = cardio
            .read_record(&cardiologist.session, &record.record_id, 0)
            .await
            .unwrap();
        assert_eq!(read.content.as_slice(), OBSERVATION, "{}", backend.name());

        // The server refuses the oncologist before any ciphertext leaves it...
        let refused = onco.read_record(&oncologist.session, &record.record_id, 0).await;
        assert_eq!(code_of(refused), Some(Code::PermissionDenied));
        // ...and given the raw ciphertext, the oncologist's real attribute key cannot open it.
        let full = read.record.clone();
        let info = onco.refresh_attribute_key(&oncologist.session).await.unwrap();
        assert!(info.attributes.contains(&"dept:oncology".to_owned()));
        let opened = onco.open_record(&oncologist.session, &full).await;
        let error = opened.expect_err("the oncologist opened a cardiology record");
        assert!(error.to_string().contains("do not satisfy"), "{error}");

        // The patient reads their own record.
        let mine = own.read_record(&patient.session, &record.record_id, 0).await.unwrap();
        assert_eq!(mine.content.as_slice(), OBSERVATION);
        let (listed, _) = own
            .list_records(&patient.session, pb::ListRecordsRequest::default())
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].envelope.is_none(), "lists are metadata only by default");

        // An edit is a new, chained version that the reader verifies and opens.
        let edited = br#"{"resourceType":"Observation","status":"amended","valueQuantity":{"value":74,"unit":"/min"}}"#;
        let v2 = cardio
            .edit_record(&cardiologist.session, &record.record_id, edited, None, None)
            .await
            .unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.previous_version_hash, record.version_hash);
        let latest = own.read_record(&patient.session, &record.record_id, 0).await.unwrap();
        assert_eq!(latest.content.as_slice(), edited);
        let first = own.read_record(&patient.session, &record.record_id, 1).await.unwrap();
        assert_eq!(first.content.as_slice(), OBSERVATION);

        // The patient's access report names the cardiologist's reads, and the oncologist's refusal
        // is in the log with the patient id.
        let report = eventually(Duration::from_secs(10), || async {
            let report = mesh
                .sdk()
                .access_report(&patient.session, audit_pb::ListPatientAccessesRequest::default())
                .await
                .ok()?;
            let refused = report.accesses.iter().any(|access| {
                access.actor_user_id == oncologist.user_id && access.outcome() == audit_pb::AuditOutcome::Denied
            });
            let read = report
                .accesses
                .iter()
                .any(|access| access.actor_user_id == cardiologist.user_id);
            (refused && read).then_some(report)
        })
        .await;
        assert!(
            report.is_some(),
            "{}: accesses missing from the patient's report",
            backend.name()
        );
        mesh.shutdown().await;
    }
}

async fn inbox(messenger: &Messenger, session: &Session) -> Vec<caremesh_sdk::messaging::Opened> {
    let request = msg_pb::ListInboxRequest {
        page_size: 50,
        ..msg_pb::ListInboxRequest::default()
    };
    messenger.inbox(session, request).await.unwrap().0
}

async fn relogin(mesh: &TestMesh, user: &TestUser) -> Session {
    mesh.login_with_totp(user).await
}

#[tokio::test]
async fn emergency_access_opens_records_for_its_window_is_audited_and_alerts() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let cardiologist = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let er_doctor = mesh.staff(Role::Doctor, &["dept:emergency"]).await;
        let nurse = mesh.staff(Role::Nurse, &["dept:emergency"]).await;
        let auditor = mesh.created(Role::Auditor).await;
        let (cardio, _c) = device(&mesh, &cardiologist.session).await;
        let (er, _e) = device(&mesh, &er_doctor.session).await;
        let (nurse_device, _n) = device(&mesh, &nurse.session).await;

        let record = cardio
            .create_record(
                &cardiologist.session,
                NewRecord {
                    patient_id: &patient.user_id,
                    kind: "Observation",
                    policy: r#""role:doctor" and "dept:cardiology""#,
                    content: OBSERVATION,
                },
            )
            .await
            .unwrap();
        let before = er.read_record(&er_doctor.session, &record.record_id, 0).await;
        assert_eq!(code_of(before), Some(Code::PermissionDenied));

        // Nurses and reasonless requests are refused.
        let by_nurse = nurse_device
            .request_emergency_access(&nurse.session, &patient.user_id, "collapsed in the lobby", None)
            .await;
        assert_eq!(code_of(by_nurse), Some(Code::PermissionDenied));
        let no_reason = er
            .request_emergency_access(&er_doctor.session, &patient.user_id, "  ", None)
            .await;
        assert_eq!(code_of(no_reason), Some(Code::InvalidArgument));

        let access = er
            .request_emergency_access(&er_doctor.session, &patient.user_id, "unresponsive on arrival", None)
            .await
            .unwrap();
        assert!(
            access
                .key
                .attributes
                .contains(&format!("emergency:{}", patient.user_id))
        );
        let window = access.grant.expire_time.unwrap().seconds - access.grant.create_time.unwrap().seconds;
        assert_eq!(window, 3600, "the default window is one hour");

        // The old token does not carry the attribute; a refreshed one does, for the window.
        let refreshed = mesh.sdk().refresh(&er_doctor.session).await.unwrap();
        let opened = er.read_record(&refreshed, &record.record_id, 0).await.unwrap();
        assert_eq!(opened.content.as_slice(), OBSERVATION);

        // Audited with the emergency flag, and auditors see the alert.
        let alert = eventually(Duration::from_secs(10), || async {
            let alerts = mesh
                .sdk()
                .audit_alerts(&auditor.session, audit_pb::ListAlertsRequest::default())
                .await
                .ok()?;
            alerts.alerts.into_iter().find(|alert| {
                alert.kind() == audit_pb::AlertKind::EmergencyAccess && alert.actor_user_id == er_doctor.user_id
            })
        })
        .await;
        assert!(alert.is_some(), "{}: no emergency-access alert", backend.name());
        let emergency_read = eventually(Duration::from_secs(10), || async {
            let report = mesh
                .sdk()
                .access_report(&patient.session, audit_pb::ListPatientAccessesRequest::default())
                .await
                .ok()?;
            report.accesses.into_iter().find(|access| {
                access.actor_user_id == er_doctor.user_id && access.emergency && access.entity_id == record.record_id
            })
        })
        .await;
        assert!(
            emergency_read.is_some(),
            "{}: the emergency read is not flagged",
            backend.name()
        );

        // After the window the attribute is gone from new tokens and the server refuses again.
        mesh.advance(3601);
        let later = relogin(&mesh, &er_doctor).await;
        let after = er.read_record(&later, &record.record_id, 0).await;
        assert_eq!(code_of(after), Some(Code::PermissionDenied), "{}", backend.name());
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn group_messages_reach_and_open_for_the_policy_only() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let sender = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let colleague = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let outsider = mesh.staff(Role::Doctor, &["dept:oncology"]).await;
        let (from, _f) = device(&mesh, &sender.session).await;
        let (to, _t) = device(&mesh, &colleague.session).await;
        let (other, _o) = device(&mesh, &outsider.session).await;

        let policy = r#""role:doctor" and "dept:cardiology""#;
        let sent = from
            .send_group(&sender.session, policy, b"handover at 7pm in room 3", None)
            .await
            .unwrap();
        let received = inbox(&to, &colleague.session).await;
        let found = received
            .iter()
            .find(|item| item.message.message_id == sent.message_id)
            .expect("the colleague sees the group message");
        assert_eq!(
            found.content,
            Content::Plain(b"handover at 7pm in room 3".to_vec()),
            "{}",
            backend.name()
        );
        let outside = inbox(&other, &outsider.session).await;
        assert!(outside.iter().all(|item| item.message.message_id != sent.message_id));
        mesh.shutdown().await;
    }
}
