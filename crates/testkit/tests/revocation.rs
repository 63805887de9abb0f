//! Revocation that takes effect now, through the real services on SQLite and PostgreSQL: an
//! admin removing an attribute, revoking a session or disabling an account is felt by every
//! service within 2 seconds of real time (the feed is polled every 0.5 s), not when the access
//! tokens expire; live streams of a disabled user, or of one who lost an attribute, close; a restarted service still refuses what
//! was revoked before it started; the ABE authority issues no key for a removed attribute, and
//! the device drops the old key at its next refresh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use caremesh_proto::audit::v1 as audit_pb;
use caremesh_proto::auth::v1::auth_service_client::AuthServiceClient;
use caremesh_proto::messaging::v1 as msg_pb;
use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use caremesh_proto::records::v1 as rec_pb;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use caremesh_sdk::SdkError;
use caremesh_sdk::auth::{Role, Session};
use caremesh_sdk::messaging::Messenger;
use caremesh_sdk::records::NewRecord;
use caremesh_testkit::{Caller, Service, TestMesh, backends};
use futures::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

/// How soon a revocation must be felt, in real time.
const PROMPTLY: Duration = Duration::from_secs(2);

const OBSERVATION: &[u8] = br#"{"resourceType":"Observation","status":"final","code":{"text":"heart rate"}}"#;

async fn device(mesh: &TestMesh, session: &Session) -> (Messenger, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let messenger = Messenger::open(mesh.sdk(), dir.path(), "default", session)
        .await
        .unwrap();
    (messenger, dir)
}

fn code_of<T: std::fmt::Debug>(result: &Result<T, SdkError>) -> Option<Code> {
    result.as_ref().err().and_then(SdkError::code)
}

/// Calls `attempt` until it returns `Some`, for at most `within`; returns the value and how long
/// it took.
async fn until<T, F, Fut>(within: Duration, mut attempt: F) -> Option<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(value) = attempt().await {
            return Some((value, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// One call to each of the five services with `session`'s access token.
async fn call_every_service(mesh: &TestMesh, session: &Session) -> Vec<(Service, Result<(), tonic::Status>)> {
    let auth = AuthServiceClient::new(mesh.channel(Service::Auth, Caller::Anonymous))
        .who_am_i(session.request(caremesh_proto::auth::v1::WhoAmIRequest {}).unwrap())
        .await
        .map(drop);
    let messaging = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous))
        .list_conversations(session.request(msg_pb::ListConversationsRequest::default()).unwrap())
        .await
        .map(drop);
    let records = RecordsServiceClient::new(mesh.channel(Service::Records, Caller::Anonymous))
        .list_records(session.request(rec_pb::ListRecordsRequest::default()).unwrap())
        .await
        .map(drop);
    let abe = caremesh_proto::abe::v1::abe_service_client::AbeServiceClient::new(
        mesh.channel(Service::AbeAuthority, Caller::Anonymous),
    )
    .get_public_parameters(
        session
            .request(caremesh_proto::abe::v1::GetPublicParametersRequest::default())
            .unwrap(),
    )
    .await
    .map(drop);
    let audit = caremesh_proto::audit::v1::audit_service_client::AuditServiceClient::new(
        mesh.channel(Service::Audit, Caller::Anonymous),
    )
    .get_verification_key(session.request(audit_pb::GetVerificationKeyRequest {}).unwrap())
    .await
    .map(drop);
    vec![
        (Service::Auth, auth),
        (Service::Messaging, messaging),
        (Service::Records, records),
        (Service::AbeAuthority, abe),
        (Service::Audit, audit),
    ]
}

/// Whether every service refuses `session` as revoked.
async fn refused_everywhere(mesh: &TestMesh, session: &Session) -> bool {
    call_every_service(mesh, session).await.iter().all(|(_, result)| {
        result
            .as_ref()
            .err()
            .is_some_and(|status| status.code() == Code::Unauthenticated && reason(status) == "SESSION_REVOKED")
    })
}

#[tokio::test]
async fn a_doctor_loses_a_record_within_two_seconds_of_the_attribute_removal() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend).start().await;
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let (device, _dir) = self::device(&mesh, &doctor.session).await;
        let record = device
            .create_record(
                &doctor.session,
                NewRecord {
                    patient_id: &patient.user_id,
                    kind: "Observation",
                    policy: r#""role:doctor" and "dept:cardiology""#,
                    content: OBSERVATION,
                },
            )
            .await
            .unwrap();
        let colleague = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let (colleague_device, _colleague_dir) = self::device(&mesh, &colleague.session).await;
        let group = colleague_device
            .send_group(
                &colleague.session,
                r#""role:doctor" and "dept:cardiology""#,
                b"handover at 7pm",
                None,
            )
            .await
            .unwrap();
        let read = device.read_record(&doctor.session, &record.record_id, 0).await.unwrap();
        assert_eq!(read.content.as_slice(), OBSERVATION, "{name}");
        let held = device.attribute_keys().unwrap();
        assert!(
            held.iter()
                .any(|key| key.attributes.contains(&"dept:cardiology".to_owned()))
        );

        let mut live = device.watch(&doctor.session, "").await.unwrap();

        // The admin takes dept:cardiology away; the doctor's access token (valid for minutes
        // more) still lists it, but the servers stop honouring it.
        let admin = mesh.admin().await;
        mesh.sdk()
            .admin_set_attributes(&admin.session, &doctor.username, &[])
            .await
            .unwrap();
        let (_, took) = until(PROMPTLY, || async {
            let result = device.read_record(&doctor.session, &record.record_id, 0).await;
            (code_of(&result) == Some(Code::PermissionDenied)).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{name}: the record was still readable {PROMPTLY:?} after the removal"));
        println!("{name}: record refused {took:?} after the attribute's removal");

        // The group message addressed to cardiology is no longer the doctor's either (each
        // service reads the feed on its own, so this may come a little after the record).
        let mut messages = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
        let get = msg_pb::GetMessageRequest {
            message_id: group.message_id.clone(),
            ..Default::default()
        };
        let (status, took) = until(PROMPTLY, || {
            let request = doctor.session.request(get.clone()).unwrap();
            let mut messages = messages.clone();
            async move { messages.get_message(request).await.err() }
        })
        .await
        .unwrap_or_else(|| panic!("{name}: the group message was still readable {PROMPTLY:?} after the removal"));
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status:?}");
        assert_eq!(reason(&status), "POLICY_NOT_SATISFIED", "{name}");
        println!("{name}: group message refused {took:?} after the attribute's removal");
        let colleague_reads = messages
            .get_message(colleague.session.request(get.clone()).unwrap())
            .await;
        assert!(
            colleague_reads.is_ok(),
            "{name}: the colleague lost it too: {colleague_reads:?}"
        );

        // The live stream chose group messages by the old attributes: it ends, to be reopened
        // with a refreshed token.
        let ended = tokio::time::timeout(PROMPTLY, live.next())
            .await
            .unwrap_or_else(|_| panic!("{name}: the live stream went on after the attribute's removal"));
        let status = match ended {
            Some(Err(status)) => status,
            other => panic!("{name}: the live stream gave {other:?}"),
        };
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert_eq!(reason(&status), "ATTRIBUTES_CHANGED", "{name}");

        // The authority issues no key with the removed attribute, and the device drops its old key.
        let fresh = device.refresh_attribute_key(&doctor.session).await.unwrap();
        assert!(
            !fresh.attributes.contains(&"dept:cardiology".to_owned()),
            "{name}: {fresh:?}"
        );
        let held = device.attribute_keys().unwrap();
        assert!(
            held.iter()
                .all(|key| !key.attributes.contains(&"dept:cardiology".to_owned())),
            "{name}: the device kept a key with the removed attribute: {held:?}"
        );

        // Given back, the attribute counts again once the doctor's token is refreshed.
        mesh.advance(1);
        mesh.sdk()
            .admin_set_attributes(&admin.session, &doctor.username, &["dept:cardiology".to_owned()])
            .await
            .unwrap();
        mesh.advance(1);
        let refreshed = mesh.sdk().refresh(&doctor.session).await.unwrap();
        let again = device.read_record(&refreshed, &record.record_id, 0).await.unwrap();
        assert_eq!(again.content.as_slice(), OBSERVATION, "{name}");
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn a_revoked_session_is_refused_by_every_service_and_after_a_restart() {
    for backend in backends() {
        let name = backend.name();
        let mut mesh = TestMesh::builder().backend(backend).start().await;
        let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let other = mesh.login_with_totp(&doctor).await;
        let accepted = |service: Service, result: &Result<(), tonic::Status>, when: &str| {
            let refused = result
                .as_ref()
                .err()
                .filter(|status| status.code() == Code::Unauthenticated);
            assert!(refused.is_none(), "{name}: {service} {when}: {result:?}");
        };
        for (service, result) in call_every_service(&mesh, &doctor.session).await {
            accepted(service, &result, "before any revocation");
        }

        // Sign out of one session: that one ends everywhere, the other goes on.
        mesh.sdk().logout(&other).await.unwrap();
        let (_, took) = until(PROMPTLY, || async {
            refused_everywhere(&mesh, &other).await.then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{name}: a signed-out session was still accepted after {PROMPTLY:?}"));
        println!("{name}: signed-out session refused by all five services {took:?} after logout");
        for (service, result) in call_every_service(&mesh, &doctor.session).await {
            accepted(service, &result, "with the session still open");
        }

        // The admin revokes the doctor's sessions.
        let admin = mesh.admin().await;
        mesh.sdk().admin_revoke(&admin.session, &doctor.username).await.unwrap();
        until(PROMPTLY, || async {
            refused_everywhere(&mesh, &doctor.session).await.then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{name}: a revoked session was still accepted after {PROMPTLY:?}"));

        // Restarted services read the revocations again before they accept a token: the first
        // call after the restart is already refused.
        for service in [Service::Records, Service::Auth] {
            mesh.stop_service(service).await;
        }
        for service in [Service::Auth, Service::Records] {
            mesh.start_service(service).await;
        }
        let status = RecordsServiceClient::new(mesh.channel(Service::Records, Caller::Anonymous))
            .list_records(doctor.session.request(rec_pb::ListRecordsRequest::default()).unwrap())
            .await
            .expect_err("a restarted records-svc accepted a revoked session");
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert_eq!(reason(&status), "SESSION_REVOKED", "{name}: {status:?}");
        assert!(
            status.message().contains("log in again"),
            "{name}: {}",
            status.message()
        );
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn a_disabled_users_live_streams_are_closed() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend).start().await;
        let patient = mesh.patient().await;
        let auditor = mesh.created(Role::Auditor).await;
        let (device, _dir) = device(&mesh, &patient.session).await;
        let mut inbox = device.watch(&patient.session, "").await.unwrap();
        let mut alerts = mesh.sdk().follow_alerts(&auditor.session, "").await.unwrap();

        let admin = mesh.admin().await;
        for user in [&patient, &auditor] {
            mesh.sdk()
                .admin_set_disabled(&admin.session, &user.username, true)
                .await
                .unwrap();
        }
        let closed = |what: &'static str, item: Option<Result<String, tonic::Status>>| {
            let status = match item {
                Some(Err(status)) => status,
                other => panic!("{name}: the {what} stream gave {other:?} instead of ending"),
            };
            assert_eq!(status.code(), Code::Unauthenticated, "{name}: {what}: {status:?}");
            assert_eq!(reason(&status), "SESSION_REVOKED", "{name}: {what}");
        };
        let started = Instant::now();
        let item = tokio::time::timeout(PROMPTLY, inbox.next())
            .await
            .unwrap_or_else(|_| panic!("{name}: the disabled patient's inbox stream stayed open"));
        closed("inbox", item.map(|item| item.map(|item| item.cursor)));
        let item = tokio::time::timeout(PROMPTLY.saturating_sub(started.elapsed()), alerts.next())
            .await
            .unwrap_or_else(|_| panic!("{name}: the disabled auditor's alert stream stayed open"));
        closed("alerts", item.map(|item| item.map(|item| item.cursor)));
        println!(
            "{name}: both streams closed {:?} after the accounts were disabled",
            started.elapsed()
        );
        assert!(
            inbox.next().await.is_none(),
            "{name}: the inbox stream went on after its error"
        );
        mesh.shutdown().await;
    }
}
