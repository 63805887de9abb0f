//! auth-svc through the real services: registration, MFA, login, sessions and tokens (verified by
//! another service), throttling and lockout, administration, and the audit trail of it all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caremesh_proto::audit::v1::AuditOutcome;
use caremesh_proto::records::v1::ListRecordsRequest;
use caremesh_proto::records::v1::records_service_client::RecordsServiceClient;
use caremesh_runtime::clock::Clock;
use caremesh_sdk::SdkError;
use caremesh_sdk::auth::{Code, LoginStep, Role, Session};
use caremesh_testkit::{Caller, Service, TestMesh, TestUser, eventually, totp_code};
use tonic::Code as Status;

/// Calls a user-facing RPC of records-svc with `token`: UNAUTHENTICATED means the token was
/// refused; any other answer (a list, or PERMISSION_DENIED for roles that read no records) that it
/// was accepted.
async fn records_answer(mesh: &TestMesh, token: &str) -> tonic::Status {
    let mut client = RecordsServiceClient::new(mesh.channel(Service::Records, Caller::Anonymous));
    let mut request = tonic::Request::new(ListRecordsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match client.list_records(request).await {
        Ok(_) => tonic::Status::ok("accepted"),
        Err(status) => status,
    }
}

fn reason(error: &SdkError) -> String {
    error.reason().unwrap_or_default()
}

#[tokio::test]
async fn register_enroll_login_with_mfa_refresh_use_elsewhere_and_log_out() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let password = "vellum orbit cactus lantern";
    let user = client
        .register("jane.doe", password, Role::Patient, "Jane Doe")
        .await
        .unwrap();
    assert_eq!(
        user.status(),
        caremesh_proto::auth::v1::UserStatus::Active,
        "patients are active at once"
    );
    assert!(user.derived_attributes.contains(&format!("patient:{}", user.user_id)));

    // Without MFA the login gives an AAL1 session that may only enroll MFA.
    let LoginStep::Done(aal1) = client.login("jane.doe", password).await.unwrap() else {
        panic!("no MFA yet");
    };
    assert_eq!(aal1.aal, 1);
    let enrollment = client.enroll_totp(&aal1).await.unwrap();
    assert!(
        enrollment
            .otpauth_uri
            .starts_with("otpauth://totp/caremesh:jane.doe?secret=")
    );
    let secret = data_encoding_decode(&enrollment.secret);
    let wrong = client.confirm_totp(&aal1, "000000").await.unwrap_err();
    assert_eq!(wrong.code(), Some(Status::InvalidArgument));
    let (codes, upgraded) = client
        .confirm_totp(&aal1, &totp_code(&secret, mesh.clock().now()))
        .await
        .unwrap();
    assert_eq!(codes.len(), 10);
    assert_eq!(upgraded.unwrap().aal, 2);

    // Two-step login: password, then the current TOTP code.
    mesh.advance(30);
    let LoginStep::SecondFactor { challenge } = client.login("jane.doe", password).await.unwrap() else {
        panic!("MFA is enrolled");
    };
    let session = client
        .complete_login(&challenge, Code::Totp(totp_code(&secret, mesh.clock().now())))
        .await
        .unwrap();
    assert_eq!(session.aal, 2);
    assert!(session.access_expires_at <= mesh.clock().now() + chrono::TimeDelta::minutes(10));
    let me = client.whoami(&session).await.unwrap();
    assert_eq!(me.user.unwrap().username, "jane.doe");

    // Another service verifies the token locally with auth-svc's published keys.
    assert_ne!(
        records_answer(&mesh, &session.access_token).await.code(),
        Status::Unauthenticated
    );

    let refreshed = client.refresh(&session).await.unwrap();
    assert_ne!(refreshed.refresh_token, session.refresh_token, "refresh tokens rotate");
    assert_eq!(refreshed.session_id, session.session_id);
    assert_ne!(
        records_answer(&mesh, &refreshed.access_token).await.code(),
        Status::Unauthenticated
    );

    client.logout(&refreshed).await.unwrap();
    let after = client.refresh(&refreshed).await.unwrap_err();
    assert_eq!(after.code(), Some(Status::Unauthenticated));
    assert_eq!(
        client.whoami(&refreshed).await.unwrap_err().code(),
        Some(Status::Unauthenticated)
    );
}

fn data_encoding_decode(secret: &str) -> Vec<u8> {
    data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_totp_code_works_once_and_a_recovery_code_works_once() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let user = mesh.patient().await;
    mesh.advance(30);
    let code = totp_code(&user.totp_secret, mesh.clock().now());
    let LoginStep::SecondFactor { challenge } = client.login(&user.username, &user.password).await.unwrap() else {
        panic!()
    };
    client
        .complete_login(&challenge, Code::Totp(code.clone()))
        .await
        .unwrap();
    // The same code again, within its validity window: refused as a replay.
    let LoginStep::SecondFactor { challenge } = client.login(&user.username, &user.password).await.unwrap() else {
        panic!()
    };
    let replay = client.complete_login(&challenge, Code::Totp(code)).await.unwrap_err();
    assert_eq!(replay.code(), Some(Status::Unauthenticated));
    assert_eq!(reason(&replay), "INVALID_CODE");

    let recovery = user.recovery_codes[0].clone();
    let session = client
        .complete_login(&challenge, Code::Recovery(recovery.clone()))
        .await
        .unwrap();
    assert_eq!(session.aal, 2);
    let LoginStep::SecondFactor { challenge } = client.login(&user.username, &user.password).await.unwrap() else {
        panic!()
    };
    let again = client
        .complete_login(&challenge, Code::Recovery(recovery))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "INVALID_CODE");
    let me = client.whoami(&session).await.unwrap();
    assert_eq!(me.recovery_codes_remaining, 9);
}

#[tokio::test]
async fn reusing_a_refresh_token_revokes_the_whole_session() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let user = mesh.patient().await;
    let first = user.session.clone();
    let second = client.refresh(&first).await.unwrap();
    // Someone replays the spent token: the session ends for everyone holding it.
    let reuse = client.refresh(&first).await.unwrap_err();
    assert_eq!(reason(&reuse), "REFRESH_TOKEN_REUSED");
    let legit = client.refresh(&second).await.unwrap_err();
    assert_eq!(reason(&legit), "SESSION_REVOKED");

    let log = mesh.audit_log().await;
    let audited = eventually(Duration::from_secs(10), || async {
        log.events()
            .await
            .unwrap()
            .into_iter()
            .find(|event| event.outcome_reason == "REFRESH_TOKEN_REUSE")
    })
    .await;
    assert!(audited.is_some(), "the reuse is in the audit log");
}

#[tokio::test]
async fn sessions_end_after_the_idle_timeout_and_the_absolute_lifetime() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let user = mesh.patient().await;
    mesh.advance(29 * 60);
    let kept = client.refresh(&user.session).await.unwrap();
    mesh.advance(31 * 60);
    let idle = client.refresh(&kept).await.unwrap_err();
    assert_eq!(reason(&idle), "SESSION_EXPIRED");

    let user = mesh.patient().await;
    let mut session = user.session.clone();
    for _ in 0..25 {
        mesh.advance(29 * 60);
        match client.refresh(&session).await {
            Ok(next) => session = next,
            Err(error) => {
                assert_eq!(reason(&error), "SESSION_EXPIRED");
                return;
            }
        }
    }
    panic!("a session outlived its 12-hour lifetime");
}

#[tokio::test]
async fn other_services_refuse_expired_tampered_foreign_and_alg_swapped_tokens() {
    let mesh = TestMesh::start().await;
    let user = mesh.patient().await;
    let token = user.session.access_token.clone();
    assert_ne!(records_answer(&mesh, &token).await.code(), Status::Unauthenticated);

    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

    // Tampered: raise the role, keep the signature.
    claims["role"] = "admin".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = format!("cmt1.{forged_payload}.{}", parts[2]);
    // Signed with a key auth-svc never published, under the real key id.
    let foreign_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let foreign: caremesh_token::Claims = serde_json::from_value(claims.clone()).unwrap();
    let foreign = caremesh_token::sign(&foreign, &foreign_key).unwrap();
    // JWT-style alg swaps.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let hs256 = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
        parts[1],
        parts[2]
    );
    for (what, bad) in [
        ("tampered", tampered),
        ("foreign key", foreign),
        ("alg none", none),
        ("alg HS256", hs256),
    ] {
        let status = records_answer(&mesh, &bad).await;
        assert_eq!(status.code(), Status::Unauthenticated, "{what}");
        assert!(status.message().contains("not valid"), "{what}: {}", status.message());
    }

    // Expired: ten minutes and a second later.
    mesh.advance(601);
    let expired = records_answer(&mesh, &token).await;
    assert_eq!(expired.code(), Status::Unauthenticated);
    assert!(expired.message().contains("expired"), "{}", expired.message());
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_old_tokens_until_they_expire() {
    let mesh = TestMesh::start().await;
    let admin = mesh.admin().await.session.clone();
    let user = mesh.patient().await;
    let old = user.session.access_token.clone();
    assert_ne!(records_answer(&mesh, &old).await.code(), Status::Unauthenticated);

    let key = mesh.sdk().admin_rotate_signing_key(&admin).await.unwrap();
    let fresh = mesh.sdk().refresh(&user.session).await.unwrap();
    let kid = caremesh_token::peek_key_id(&fresh.access_token).unwrap();
    assert_eq!(kid, key.key_id, "new tokens use the new key");
    assert_ne!(
        records_answer(&mesh, &fresh.access_token).await.code(),
        Status::Unauthenticated,
        "new key fetched"
    );
    assert_ne!(
        records_answer(&mesh, &old).await.code(),
        Status::Unauthenticated,
        "old key still valid"
    );
}

#[tokio::test]
async fn a_pending_doctor_cannot_get_an_aal2_token() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let password = "vellum orbit cactus lantern";
    let doctor = client
        .register("dr.pending", password, Role::Doctor, "Dr Pending")
        .await
        .unwrap();
    assert_eq!(doctor.status(), caremesh_proto::auth::v1::UserStatus::Pending);
    let LoginStep::Done(session) = client.login("dr.pending", password).await.unwrap() else {
        panic!()
    };
    assert_eq!(session.aal, 1);
    let enrollment = client.enroll_totp(&session).await.unwrap();
    let secret = data_encoding_decode(&enrollment.secret);
    let (_, upgraded) = client
        .confirm_totp(&session, &totp_code(&secret, mesh.clock().now()))
        .await
        .unwrap();
    assert!(upgraded.is_none(), "no AAL2 session while pending");
    mesh.advance(30);
    let LoginStep::SecondFactor { challenge } = client.login("dr.pending", password).await.unwrap() else {
        panic!()
    };
    let session = client
        .complete_login(&challenge, Code::Totp(totp_code(&secret, mesh.clock().now())))
        .await
        .unwrap();
    assert_eq!(
        session.aal, 1,
        "the second factor does not lift a pending account to AAL2"
    );
    let refused = client.regenerate_recovery_codes(&session).await.unwrap_err();
    assert_eq!(reason(&refused), "MFA_REQUIRED");

    // Approved, the same doctor gets AAL2 with attributes in the token.
    let admin = mesh.admin().await.session.clone();
    client
        .admin_approve(&admin, "dr.pending", &["dept:cardiology".to_owned()])
        .await
        .unwrap();
    mesh.advance(30);
    let LoginStep::SecondFactor { challenge } = client.login("dr.pending", password).await.unwrap() else {
        panic!()
    };
    let session = client
        .complete_login(&challenge, Code::Totp(totp_code(&secret, mesh.clock().now())))
        .await
        .unwrap();
    assert_eq!(session.aal, 2);
    let me = client.whoami(&session).await.unwrap();
    assert!(me.token_attributes.contains(&"dept:cardiology".to_owned()));
    assert!(me.token_attributes.contains(&"role:doctor".to_owned()));
}

#[tokio::test]
async fn unknown_usernames_and_wrong_passwords_are_indistinguishable() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let user = mesh.patient().await;
    let unknown = client
        .login("nobody-here", "vellum orbit cactus lantern")
        .await
        .unwrap_err();
    let wrong = client
        .login(&user.username, "vellum orbit cactus lantern")
        .await
        .unwrap_err();
    let (SdkError::Status(unknown), SdkError::Status(wrong)) = (unknown, wrong) else {
        panic!("both are refusals")
    };
    assert_eq!(unknown.code(), wrong.code());
    assert_eq!(unknown.message(), wrong.message());
    use tonic_types::StatusExt;
    let info = |status: &tonic::Status| {
        status
            .get_details_error_info()
            .map(|info| (info.reason, info.domain, info.metadata))
    };
    assert_eq!(info(&unknown), info(&wrong));

    // Both do one Argon2id check of the same cost. The two are measured alternately, so both see
    // the same load from whatever else runs; without the decoy check an unknown username would
    // answer 6 to 12 times faster than a wrong password, far outside the bound below.
    let mut unknown_times = Vec::new();
    let mut wrong_times = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let _ = client.login("nobody-here", "some other password").await;
        unknown_times.push(started.elapsed());
        let started = Instant::now();
        let _ = client.login(&user.username, "some other password").await;
        wrong_times.push(started.elapsed());
    }
    unknown_times.sort();
    wrong_times.sort();
    let (unknown_time, wrong_time) = (unknown_times[5], wrong_times[5]);
    let (fast, slow) = if unknown_time < wrong_time {
        (unknown_time, wrong_time)
    } else {
        (wrong_time, unknown_time)
    };
    assert!(
        slow.as_secs_f64() < fast.as_secs_f64() * 2.5,
        "unknown user {unknown_time:?} vs wrong password {wrong_time:?}"
    );
}

#[tokio::test]
async fn weak_passwords_are_refused_with_a_reason() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    for (password, says) in [
        ("short", "at least 12"),
        ("password123456", "too easy to guess"),
        ("alice.smith-is-great", "username"),
    ] {
        let error = client
            .register("alice.smith", password, Role::Patient, "Alice")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(Status::InvalidArgument), "{password}");
        assert_eq!(reason(&error), "WEAK_PASSWORD");
        assert!(error.to_string().contains(says), "{password}: {error}");
    }
    let error = client
        .register("alice.smith", "vellum orbit cactus lantern", Role::Admin, "Alice")
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(Status::PermissionDenied),
        "admins are created by admins"
    );
}

#[tokio::test]
async fn an_account_locks_after_the_limit_and_an_admin_unlocks_it() {
    let mesh = TestMesh::builder()
        .setting(auth_svc::settings::LOCKOUT_THRESHOLD, "3")
        .start()
        .await;
    let client = mesh.sdk();
    let user = mesh.patient().await;
    for _ in 0..3 {
        let error = client
            .login(&user.username, "not the password at all")
            .await
            .unwrap_err();
        assert_eq!(reason(&error), "INVALID_CREDENTIALS");
    }
    // Locked: even the right password is refused now, and says why.
    let locked = client.login(&user.username, &user.password).await.unwrap_err();
    assert_eq!(locked.code(), Some(Status::PermissionDenied));
    assert_eq!(reason(&locked), "ACCOUNT_LOCKED");
    // The wrong password still gets the generic answer (no hint that the account exists).
    let wrong = client
        .login(&user.username, "not the password at all")
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");

    let admin = mesh.admin().await.session.clone();
    let unlocked = client.admin_unlock(&admin, &user.username).await.unwrap();
    assert!(!unlocked.locked);
    mesh.login_with_totp(&user).await;
}

#[tokio::test]
async fn failed_logins_are_delayed_with_growing_backoff_and_sources_are_rate_limited() {
    let mesh = TestMesh::builder()
        .setting(auth_svc::settings::BACKOFF_AFTER, "2")
        .start()
        .await;
    let client = mesh.sdk();
    for _ in 0..3 {
        let _ = client.login("mallory-target", "guess guess guess").await;
    }
    let delayed = client.login("mallory-target", "guess guess guess").await.unwrap_err();
    assert_eq!(delayed.code(), Some(Status::ResourceExhausted));
    assert_eq!(reason(&delayed), "LOGIN_BACKOFF");
    let SdkError::Status(status) = &delayed else { panic!() };
    use tonic_types::StatusExt;
    assert!(
        status.get_details_retry_info().unwrap().retry_delay.is_some(),
        "tells when to retry"
    );
    mesh.advance(2);
    assert_eq!(
        reason(&client.login("mallory-target", "guess guess guess").await.unwrap_err()),
        "INVALID_CREDENTIALS"
    );
    // The next failure waits twice as long: still held back after one second, free after two.
    let delayed = client.login("mallory-target", "guess guess guess").await.unwrap_err();
    assert_eq!(reason(&delayed), "LOGIN_BACKOFF");
    mesh.advance(1);
    assert_eq!(
        reason(&client.login("mallory-target", "x").await.unwrap_err()),
        "LOGIN_BACKOFF"
    );
    mesh.advance(1);
    assert_eq!(
        reason(&client.login("mallory-target", "x").await.unwrap_err()),
        "INVALID_CREDENTIALS"
    );

    let limited = TestMesh::builder()
        .setting(auth_svc::settings::LOGIN_RATE_PER_MINUTE, "3")
        .start()
        .await;
    let client = limited.sdk();
    let mut exhausted = None;
    for _ in 0..5 {
        if let Err(error) = client.login("someone", "whatever whatever").await
            && error.code() == Some(Status::ResourceExhausted)
        {
            exhausted = Some(error);
            break;
        }
    }
    assert_eq!(reason(&exhausted.expect("the source is limited")), "RATE_LIMITED");
}

#[tokio::test]
async fn admin_rpcs_need_an_admin_with_mfa() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let patient = mesh.patient().await;
    let refused = client.admin_pending(&patient.session).await.unwrap_err();
    assert_eq!(refused.code(), Some(Status::PermissionDenied));
    assert_eq!(reason(&refused), "ROLE_NOT_ALLOWED");
    let auditor = mesh.created(Role::Auditor).await;
    assert_eq!(
        reason(&client.admin_pending(&auditor.session).await.unwrap_err()),
        "ROLE_NOT_ALLOWED"
    );

    let admin = mesh.admin().await.session.clone();
    client
        .register("nurse.joy", "vellum orbit cactus lantern", Role::Nurse, "Nurse Joy")
        .await
        .unwrap();
    let pending = client.admin_pending(&admin).await.unwrap();
    assert!(pending.iter().any(|user| user.username == "nurse.joy"));
    let bad = client
        .admin_approve(&admin, "nurse.joy", &["role:admin".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(
        reason(&bad),
        "INVALID_ATTRIBUTE",
        "derived namespaces cannot be assigned"
    );
    client
        .admin_approve(&admin, "nurse.joy", &["dept:er".to_owned()])
        .await
        .unwrap();
    assert!(
        client
            .admin_pending(&admin)
            .await
            .unwrap()
            .iter()
            .all(|user| user.username != "nurse.joy")
    );

    // A stale etag is ABORTED.
    let user = client.admin_get_user(&admin, "nurse.joy").await.unwrap();
    client
        .admin_set_attributes(&admin, "nurse.joy", &["dept:icu".to_owned()])
        .await
        .unwrap();
    let mut admin_client = caremesh_proto::auth::v1::auth_admin_service_client::AuthAdminServiceClient::new(
        mesh.channel(Service::Auth, Caller::Anonymous),
    );
    let stale = admin_client
        .update_user_attributes(
            admin
                .request(caremesh_proto::auth::v1::UpdateUserAttributesRequest {
                    user_id: user.user_id.clone(),
                    attributes: vec!["dept:er".to_owned()],
                    etag: user.etag.clone(),
                })
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Status::Aborted);

    // Disabling ends sessions and refuses logins.
    let nurse_session = {
        let LoginStep::Done(session) = client.login("nurse.joy", "vellum orbit cactus lantern").await.unwrap() else {
            panic!()
        };
        session
    };
    client.admin_set_disabled(&admin, "nurse.joy", true).await.unwrap();
    assert_eq!(
        reason(&client.refresh(&nurse_session).await.unwrap_err()),
        "SESSION_REVOKED"
    );
    let disabled = client
        .login("nurse.joy", "vellum orbit cactus lantern")
        .await
        .unwrap_err();
    assert_eq!(reason(&disabled), "ACCOUNT_DISABLED");
    client.admin_set_disabled(&admin, "nurse.joy", false).await.unwrap();
    assert!(client.login("nurse.joy", "vellum orbit cactus lantern").await.is_ok());

    let revoked = client.admin_revoke(&admin, &patient.username).await.unwrap();
    assert!(revoked >= 1);
    assert_eq!(
        reason(&client.refresh(&patient.session).await.unwrap_err()),
        "SESSION_REVOKED"
    );
}

#[tokio::test]
async fn every_login_attempt_and_admin_action_is_audited() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let user: TestUser = mesh.patient().await;
    let _ = client.login(&user.username, "wrong wrong wrong").await;
    let _ = client.login("ghost-user", "wrong wrong wrong").await;
    let admin: Session = mesh.admin().await.session.clone();
    client.admin_revoke(&admin, &user.username).await.unwrap();

    let log = mesh.audit_log().await;
    let wanted = [
        ("login", AuditOutcome::Success, ""),
        ("login", AuditOutcome::Denied, "WRONG_PASSWORD"),
        ("login", AuditOutcome::Denied, "UNKNOWN_USERNAME"),
        ("login_second_factor", AuditOutcome::Success, "TOTP"),
        ("register", AuditOutcome::Success, ""),
        ("mfa_confirm", AuditOutcome::Success, ""),
        ("admin_revoke_sessions", AuditOutcome::Success, ""),
    ];
    let events = eventually(Duration::from_secs(15), || async {
        let events = log.events().await.unwrap();
        wanted
            .iter()
            .all(|(operation, outcome, reason)| {
                events.iter().any(|event| {
                    event.operation == *operation && event.outcome() == *outcome && event.outcome_reason == *reason
                })
            })
            .then_some(events)
    })
    .await
    .expect("all audited");
    let denied = events
        .iter()
        .find(|event| event.outcome_reason == "WRONG_PASSWORD")
        .unwrap();
    assert_eq!(denied.actor.as_ref().unwrap().user_id, user.user_id);
    assert!(
        !denied.actor.as_ref().unwrap().source_address.is_empty(),
        "source address recorded"
    );
    for event in &events {
        let text = format!("{event:?}");
        assert!(!text.contains(&user.password), "no password in the audit log");
    }
}

#[tokio::test]
async fn the_bootstrap_admin_file_is_private_and_written_once() {
    let mesh = TestMesh::start().await;
    let file = auth_svc::bootstrap_file(&mesh.dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let before = std::fs::read(&file).unwrap();
    let admin = mesh.admin().await;
    assert_eq!(admin.session.aal, 2);
    let mut mesh = mesh;
    mesh.stop_service(Service::Auth).await;
    mesh.start_service(Service::Auth).await;
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "an existing admin means no new credentials"
    );
}
