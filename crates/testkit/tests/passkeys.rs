//! Passkeys (issue #17) through the real services, with the test kit's software authenticator
//! playing the browser: registration (the first second factor brings recovery codes and an AAL2
//! session), list, rename and removal; passwordless sign-in and the passkey as a login's second
//! factor; answers for another origin or relying party, without user verification, replayed, or
//! from a cloned authenticator, each refused and audited (the clone also alerts auditors); and the
//! per-role policy that requires passkeys. Every scenario runs on SQLite, and on PostgreSQL when
//! `CAREMESH_TEST_DATABASE_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use caremesh_proto::audit::v1::{AlertKind, AuditEvent, AuditOutcome, ListAlertsRequest};
use caremesh_proto::auth::v1::auth_service_client::AuthServiceClient;
use caremesh_proto::auth::v1::{self as pb, SecondFactor};
use caremesh_runtime::clock::Clock;
use caremesh_sdk::SdkError;
use caremesh_sdk::auth::{Code, LoginStep, PasskeyRegistered, Role, Session};
use caremesh_testkit::webauthn::{AuthenticatorError, SoftAuthenticator};
use caremesh_testkit::{Caller, Service, TestMesh, TestUser, backends, eventually, totp_code};
use serde_json::Value;
use tonic::Code as Status;

const PASSWORD: &str = "vellum orbit cactus lantern";

/// Runs `scenario` on a fresh mesh with `settings` on every backend. A scenario that hangs (an
/// RPC that never answers) fails after two minutes.
async fn on_every_backend(settings: &[(&str, &str)], scenario: impl AsyncFn(&TestMesh)) {
    for backend in backends() {
        let mut builder = TestMesh::builder().backend(backend);
        for (key, value) in settings {
            builder = builder.setting(key, value);
        }
        let mesh = builder.start().await;
        if tokio::time::timeout(Duration::from_secs(120), scenario(&mesh))
            .await
            .is_err()
        {
            panic!(
                "{}: the scenario did not finish within two minutes",
                mesh.backend().name()
            );
        }
        mesh.shutdown().await;
    }
}

/// `result` must be a refusal with `code` and the ErrorInfo reason `reason`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, SdkError>, code: Status, reason: &str, context: &str) {
    match result {
        Ok(value) => panic!("{context}: accepted ({value:?}), expected {code:?} {reason}"),
        Err(error) => assert_eq!(
            (error.code(), error.reason().unwrap_or_default().as_str()),
            (Some(code), reason),
            "{context}: {error}"
        ),
    }
}

/// The `publicKey` member of a ceremony's options JSON.
fn public_key(options_json: &[u8]) -> Value {
    let options: Value = serde_json::from_slice(options_json).expect("options are JSON");
    options["publicKey"].clone()
}

/// The credential ids a descriptor list (`allowCredentials`, `excludeCredentials`) names.
fn descriptor_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list of credential descriptors")
        .iter()
        .map(|descriptor| descriptor["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Registers a passkey held by `authenticator` in `session`.
async fn add_passkey(
    mesh: &TestMesh,
    session: &Session,
    authenticator: &mut SoftAuthenticator,
    name: &str,
) -> PasskeyRegistered {
    let client = mesh.sdk();
    let ceremony = client.start_passkey_registration(session).await.unwrap();
    let credential = authenticator.create(&ceremony.options_json).unwrap();
    client
        .finish_passkey_registration(session, &ceremony, credential, name)
        .await
        .unwrap()
}

/// A patient (TOTP, from the test kit) who then registered a passkey on a new authenticator.
async fn patient_with_passkey(mesh: &TestMesh) -> (TestUser, SoftAuthenticator) {
    let user = mesh.patient().await;
    let mut authenticator = SoftAuthenticator::new();
    let registered = add_passkey(mesh, &user.session, &mut authenticator, "laptop").await;
    assert!(
        registered.recovery_codes.is_empty() && registered.upgraded.is_none(),
        "TOTP was the first second factor: no new codes, no new session"
    );
    (user, authenticator)
}

/// A passwordless sign-in answered by `authenticator`.
async fn passkey_login(mesh: &TestMesh, authenticator: &mut SoftAuthenticator) -> Result<Session, SdkError> {
    let client = mesh.sdk();
    let ceremony = client.start_passkey_login().await?;
    let answer = authenticator
        .get(&ceremony.options_json)
        .expect("the authenticator answers");
    client.finish_passkey_login(&ceremony, answer).await
}

/// The password step through the RPC itself (the SDK's `login` keeps only the challenge token):
/// the MFA challenge with its factors and passkey options.
async fn password_step(mesh: &TestMesh, username: &str, password: &str) -> pb::MfaChallenge {
    let response = AuthServiceClient::new(mesh.channel(Service::Auth, Caller::Anonymous))
        .login(pb::LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    match response.outcome {
        Some(pb::login_response::Outcome::MfaChallenge(challenge)) => challenge,
        other => panic!("expected an MFA challenge for {username}, got {other:?}"),
    }
}

/// The factors a challenge offers, in enum order.
fn factors(challenge: &pb::MfaChallenge) -> Vec<SecondFactor> {
    let mut factors: Vec<SecondFactor> = challenge.factors().collect();
    factors.sort_by_key(|factor| *factor as i32);
    factors
}

/// Password, then `authenticator`'s assertion as the second factor.
async fn passkey_second_factor(
    mesh: &TestMesh,
    user: &TestUser,
    authenticator: &mut SoftAuthenticator,
) -> Result<Session, SdkError> {
    let challenge = password_step(mesh, &user.username, &user.password).await;
    assert!(
        factors(&challenge).contains(&SecondFactor::Passkey),
        "a passkey is offered"
    );
    let answer = authenticator
        .get(&challenge.passkey_request_options_json)
        .expect("the authenticator answers");
    mesh.sdk()
        .complete_login(&challenge.challenge_token, Code::Passkey(answer))
        .await
}

/// The latest audit event of `operation` with `outcome` and `reason` (by `actor`, when given),
/// once audit-svc has it.
async fn audited(
    mesh: &TestMesh,
    operation: &str,
    outcome: AuditOutcome,
    reason: &str,
    actor: Option<&str>,
) -> AuditEvent {
    let log = mesh.audit_log().await;
    eventually(Duration::from_secs(15), || async {
        log.events().await.unwrap().into_iter().rev().find(|event| {
            event.operation == operation
                && event.outcome() == outcome
                && event.outcome_reason == reason
                && actor.is_none_or(|actor| event.actor.as_ref().is_some_and(|who| who.user_id == actor))
        })
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{}: no audit event {operation} {outcome:?} {reason:?} by {actor:?}",
            mesh.backend().name()
        )
    })
}

#[tokio::test]
async fn a_first_passkey_brings_recovery_codes_and_aal2_and_passkeys_are_listed_renamed_and_removed() {
    on_every_backend(&[], registration_and_management).await;
}

async fn registration_and_management(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let user = client
        .register("pat.passkey", PASSWORD, Role::Patient, "Pat Passkey")
        .await
        .unwrap();
    let LoginStep::Done(aal1) = client.login("pat.passkey", PASSWORD).await.unwrap() else {
        panic!("no second factor yet");
    };
    assert_eq!(aal1.aal, 1);

    // No second factor yet: AAL1 may register the first passkey.
    let ceremony = client.start_passkey_registration(&aal1).await.unwrap();
    let options = public_key(&ceremony.options_json);
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["user"]["name"], "pat.passkey");
    assert_eq!(options["attestation"], "none");
    assert_eq!(options["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(
        options["authenticatorSelection"]["residentKey"], "required",
        "discoverable, for passwordless sign-in"
    );
    assert!(ceremony.expires_at.unwrap() > mesh.clock().now());
    let mut laptop = SoftAuthenticator::new();
    let credential = laptop.create(&ceremony.options_json).unwrap();
    let first = client
        .finish_passkey_registration(&aal1, &ceremony, credential, "work laptop")
        .await
        .unwrap();
    assert_eq!(first.recovery_codes.len(), 10, "{backend}: the first second factor");
    let aal2 = first
        .upgraded
        .clone()
        .expect("an active account's first second factor upgrades the session");
    assert_eq!((aal2.aal, aal2.user_id.as_str()), (2, user.user_id.as_str()));
    assert_eq!(first.passkey.name, "work laptop");
    assert_eq!(
        first.passkey.credential_id,
        SoftAuthenticator::encode_id(&laptop.credential_ids()[0])
    );
    assert_eq!(first.passkey.sign_count, 0);
    assert!(first.passkey.last_use_time.is_none());
    assert!(!first.passkey.backup_eligible && !first.passkey.backup_state);
    let me = client.whoami(&aal2).await.unwrap();
    assert_eq!(me.aal(), pb::AssuranceLevel::Aal2);
    assert_eq!(me.recovery_codes_remaining, 10);

    // Another passkey: the options exclude the first, so one authenticator registers once.
    let ceremony = client.start_passkey_registration(&aal2).await.unwrap();
    assert_eq!(
        descriptor_ids(&public_key(&ceremony.options_json)["excludeCredentials"]),
        vec![first.passkey.credential_id.clone()]
    );
    assert_eq!(laptop.create(&ceremony.options_json), Err(AuthenticatorError::Excluded));
    let mut phone = SoftAuthenticator::new();
    phone.set_backup(true, true);
    let credential = phone.create(&ceremony.options_json).unwrap();
    let second = client
        .finish_passkey_registration(&aal2, &ceremony, credential, "phone")
        .await
        .unwrap();
    assert!(second.recovery_codes.is_empty(), "the existing codes stay");
    assert!(second.upgraded.is_none());
    assert!(second.passkey.backup_eligible && second.passkey.backup_state);

    let listed = client.list_passkeys(&aal2).await.unwrap();
    assert!(!listed.passkey_required);
    let names: Vec<&str> = listed.passkeys.iter().map(|passkey| passkey.name.as_str()).collect();
    assert_eq!(names, ["work laptop", "phone"], "{backend}: oldest first");
    // A page at a time (AIP-158): one, then the other, then no next page.
    let mut auth = AuthServiceClient::new(mesh.channel(Service::Auth, Caller::Anonymous));
    let page = |page_token: String| pb::ListPasskeysRequest {
        page_size: 1,
        page_token,
    };
    let first_page = auth
        .list_passkeys(aal2.request(page(String::new())).unwrap())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.passkeys.len(), 1, "{backend}");
    assert!(!first_page.next_page_token.is_empty(), "{backend}: a second page");
    let last = auth
        .list_passkeys(aal2.request(page(first_page.next_page_token)).unwrap())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.passkeys[0].name, "phone", "{backend}");
    assert!(last.next_page_token.is_empty(), "{backend}: the last page");

    // Rename: a name of 1 to 64 characters, only one's own passkeys.
    let phone_id = second.passkey.passkey_id.clone();
    let renamed = client.rename_passkey(&aal2, &phone_id, "old phone").await.unwrap();
    assert_eq!(
        (renamed.passkey_id.as_str(), renamed.name.as_str()),
        (phone_id.as_str(), "old phone")
    );
    let long = "x".repeat(65);
    for bad in ["", "   ", long.as_str()] {
        assert_refused(
            client.rename_passkey(&aal2, &phone_id, bad).await,
            Status::InvalidArgument,
            "INVALID_PASSKEY_NAME",
            &format!("name {bad:?}"),
        );
    }
    let stranger = mesh.patient().await;
    assert_refused(
        client.rename_passkey(&stranger.session, &phone_id, "mine now").await,
        Status::NotFound,
        "PASSKEY_NOT_FOUND",
        "someone else's passkey",
    );
    assert_refused(
        client.remove_passkey(&stranger.session, &phone_id).await,
        Status::NotFound,
        "PASSKEY_NOT_FOUND",
        "someone else's passkey",
    );
    let listed = client.list_passkeys(&aal2).await.unwrap();
    assert_eq!(listed.passkeys[1].name, "old phone");

    client.remove_passkey(&aal2, &phone_id).await.unwrap();
    let listed = client.list_passkeys(&aal2).await.unwrap();
    let ids: Vec<&str> = listed
        .passkeys
        .iter()
        .map(|passkey| passkey.passkey_id.as_str())
        .collect();
    assert_eq!(ids, [first.passkey.passkey_id.as_str()]);
    assert_refused(
        client.remove_passkey(&aal2, &phone_id).await,
        Status::NotFound,
        "PASSKEY_NOT_FOUND",
        "removed twice",
    );

    // Audited, each naming the passkey (the outbox keeps order: the removal comes last).
    let removed = audited(mesh, "passkey_remove", AuditOutcome::Success, "", Some(&user.user_id)).await;
    assert_eq!(removed.entity_id, phone_id);
    let events = mesh.audit_log().await.events().await.unwrap();
    let by_user = |operation: &str| -> Vec<String> {
        events
            .iter()
            .filter(|event| {
                event.operation == operation
                    && event.outcome() == AuditOutcome::Success
                    && event.actor.as_ref().is_some_and(|actor| actor.user_id == user.user_id)
            })
            .map(|event| event.entity_id.clone())
            .collect()
    };
    assert_eq!(
        by_user("passkey_register"),
        [first.passkey.passkey_id.clone(), phone_id.clone()]
    );
    assert_eq!(by_user("passkey_rename"), [phone_id.as_str()]);
}

#[tokio::test]
async fn a_passwordless_sign_in_gives_aal2_and_aal1_to_a_pending_user() {
    on_every_backend(&[], passwordless).await;
}

async fn passwordless(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let (user, mut authenticator) = patient_with_passkey(mesh).await;

    let ceremony = client.start_passkey_login().await.unwrap();
    let options = public_key(&ceremony.options_json);
    assert_eq!(options["allowCredentials"], serde_json::json!([]), "no user is named");
    assert_eq!(options["userVerification"], "required");
    assert_eq!(options["rpId"], "localhost");
    let answer = authenticator.get(&ceremony.options_json).unwrap();
    let session = client.finish_passkey_login(&ceremony, answer).await.unwrap();
    assert_eq!(
        (session.aal, session.user_id.as_str(), session.role.as_str()),
        (2, user.user_id.as_str(), "patient"),
        "{backend}"
    );
    assert_ne!(session.session_id, user.session.session_id, "a session of its own");
    let me = client.whoami(&session).await.unwrap();
    assert_eq!(me.user.unwrap().username, user.username);
    let listed = client.list_passkeys(&session).await.unwrap();
    assert_eq!(listed.passkeys[0].sign_count, 1, "the counter is recorded");
    assert_eq!(
        listed.passkeys[0].last_use_time.as_ref().map(|time| time.seconds),
        Some(mesh.clock().now().timestamp())
    );
    audited(mesh, "login_passkey", AuditOutcome::Success, "", Some(&user.user_id)).await;

    // A pending doctor's first passkey gives recovery codes but no AAL2, and its sign-in AAL1;
    // with a second factor in place, another registration needs AAL2.
    client
        .register("dr.waiting", PASSWORD, Role::Doctor, "Dr Waiting")
        .await
        .unwrap();
    let LoginStep::Done(pending) = client.login("dr.waiting", PASSWORD).await.unwrap() else {
        panic!("no second factor yet");
    };
    let mut key = SoftAuthenticator::new();
    let registered = add_passkey(mesh, &pending, &mut key, "security key").await;
    assert_eq!(registered.recovery_codes.len(), 10);
    assert!(registered.upgraded.is_none(), "no AAL2 while pending");
    assert_refused(
        client.start_passkey_registration(&pending).await,
        Status::PermissionDenied,
        "MFA_REQUIRED",
        "a second passkey at AAL1",
    );
    let session = passkey_login(mesh, &mut key).await.unwrap();
    assert_eq!(session.aal, 1, "{backend}: pending users stay at AAL1");
}

#[tokio::test]
async fn a_passkey_answers_the_second_factor_of_a_password_login() {
    on_every_backend(&[], second_factor).await;
}

async fn second_factor(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let (user, mut authenticator) = patient_with_passkey(mesh).await;

    let challenge = password_step(mesh, &user.username, &user.password).await;
    assert_eq!(
        factors(&challenge),
        [SecondFactor::Totp, SecondFactor::RecoveryCode, SecondFactor::Passkey]
    );
    let options = public_key(&challenge.passkey_request_options_json);
    assert_eq!(
        descriptor_ids(&options["allowCredentials"]),
        [SoftAuthenticator::encode_id(&authenticator.credential_ids()[0])],
        "the options name the user's passkeys"
    );
    assert_eq!(options["userVerification"], "required");
    let answer = authenticator.get(&challenge.passkey_request_options_json).unwrap();
    let session = client
        .complete_login(&challenge.challenge_token, Code::Passkey(answer.clone()))
        .await
        .unwrap();
    assert_eq!((session.aal, session.user_id.as_str()), (2, user.user_id.as_str()));
    audited(
        mesh,
        "login_second_factor",
        AuditOutcome::Success,
        "PASSKEY",
        Some(&user.user_id),
    )
    .await;
    // The challenge is spent.
    assert_refused(
        client
            .complete_login(&challenge.challenge_token, Code::Passkey(answer))
            .await,
        Status::Unauthenticated,
        "CHALLENGE_INVALID",
        "a used challenge",
    );

    // A user whose only second factor is a passkey is offered no TOTP.
    client
        .register("only.passkey", PASSWORD, Role::Patient, "Only Passkey")
        .await
        .unwrap();
    let LoginStep::Done(aal1) = client.login("only.passkey", PASSWORD).await.unwrap() else {
        panic!("no second factor yet");
    };
    let mut key = SoftAuthenticator::new();
    let registered = add_passkey(mesh, &aal1, &mut key, "key").await;
    let challenge = password_step(mesh, "only.passkey", PASSWORD).await;
    assert_eq!(
        factors(&challenge),
        [SecondFactor::RecoveryCode, SecondFactor::Passkey],
        "{backend}"
    );
    let answer = key.get(&challenge.passkey_request_options_json).unwrap();
    let session = client
        .complete_login(&challenge.challenge_token, Code::Passkey(answer))
        .await
        .unwrap();
    assert_eq!(session.aal, 2);
    // And a recovery code still works for them.
    let challenge = password_step(mesh, "only.passkey", PASSWORD).await;
    let session = client
        .complete_login(
            &challenge.challenge_token,
            Code::Recovery(registered.recovery_codes[0].clone()),
        )
        .await
        .unwrap();
    assert_eq!(session.aal, 2);

    // Without passkeys nothing is offered.
    let plain = mesh.patient().await;
    let challenge = password_step(mesh, &plain.username, &plain.password).await;
    assert_eq!(factors(&challenge), [SecondFactor::Totp, SecondFactor::RecoveryCode]);
    assert!(challenge.passkey_request_options_json.is_empty());
}

/// How a forged answer differs from the real authenticator's, and the audit reason it gets.
struct Forgery {
    what: &'static str,
    tamper: fn(&mut SoftAuthenticator),
    audit_reason: &'static str,
}

const FORGERIES: [Forgery; 3] = [
    Forgery {
        what: "another origin",
        tamper: |authenticator| authenticator.set_origin("https://evil.example"),
        audit_reason: "PASSKEY_WRONG_ORIGIN",
    },
    Forgery {
        what: "another relying party id",
        tamper: |authenticator| authenticator.claim_rp_id(Some("evil.example")),
        audit_reason: "PASSKEY_WRONG_RP_ID",
    },
    Forgery {
        what: "no user verification",
        tamper: |authenticator| authenticator.set_user_verified(false),
        audit_reason: "PASSKEY_NOT_VERIFIED",
    },
];

#[tokio::test]
async fn answers_for_another_origin_or_relying_party_or_unverified_are_refused_and_audited() {
    on_every_backend(&[], forged_answers).await;
}

async fn forged_answers(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let (user, authenticator) = patient_with_passkey(mesh).await;
    for Forgery {
        what,
        tamper,
        audit_reason,
    } in FORGERIES
    {
        let context = format!("{backend}: {what}");
        // The same key, answering as a phishing page (or an unverifying authenticator) would.
        let mut forged = authenticator.clone();
        tamper(&mut forged);
        assert_refused(
            passkey_login(mesh, &mut forged).await,
            Status::Unauthenticated,
            "PASSKEY_REFUSED",
            &format!("{context}, passwordless"),
        );
        audited(
            mesh,
            "login_passkey",
            AuditOutcome::Denied,
            audit_reason,
            Some(&user.user_id),
        )
        .await;
        assert_refused(
            passkey_second_factor(mesh, &user, &mut forged).await,
            Status::Unauthenticated,
            "PASSKEY_REFUSED",
            &format!("{context}, second factor"),
        );
        audited(
            mesh,
            "login_second_factor",
            AuditOutcome::Denied,
            audit_reason,
            Some(&user.user_id),
        )
        .await;

        let mut fresh = SoftAuthenticator::new();
        tamper(&mut fresh);
        let ceremony = client.start_passkey_registration(&user.session).await.unwrap();
        let credential = fresh.create(&ceremony.options_json).unwrap();
        assert_refused(
            client
                .finish_passkey_registration(&user.session, &ceremony, credential, "forged")
                .await,
            Status::Unauthenticated,
            "PASSKEY_REFUSED",
            &format!("{context}, registration"),
        );
        audited(
            mesh,
            "passkey_register",
            AuditOutcome::Denied,
            audit_reason,
            Some(&user.user_id),
        )
        .await;
    }
    // Nothing forged was stored or counted: the real authenticator signs in with its next count.
    let listed = client.list_passkeys(&user.session).await.unwrap();
    assert_eq!(listed.passkeys.len(), 1, "{backend}: no forged registration stored");
    assert_eq!(listed.passkeys[0].sign_count, 0);
    let session = passkey_login(mesh, &mut authenticator.clone()).await.unwrap();
    assert_eq!(session.aal, 2);
}

#[tokio::test]
async fn passkeys_answer_only_the_configured_relying_party() {
    on_every_backend(
        &[
            (auth_svc::settings::WEBAUTHN_RP_ID, "care.example.org"),
            (auth_svc::settings::WEBAUTHN_ORIGIN, "https://care.example.org"),
        ],
        configured_relying_party,
    )
    .await;
}

async fn configured_relying_party(mesh: &TestMesh) {
    let client = mesh.sdk();
    let user = mesh.patient().await;
    let ceremony = client.start_passkey_registration(&user.session).await.unwrap();
    assert_eq!(public_key(&ceremony.options_json)["rp"]["id"], "care.example.org");
    // The default origin is not this deployment's.
    let mut elsewhere = SoftAuthenticator::new();
    let credential = elsewhere.create(&ceremony.options_json).unwrap();
    assert_refused(
        client
            .finish_passkey_registration(&user.session, &ceremony, credential, "elsewhere")
            .await,
        Status::Unauthenticated,
        "PASSKEY_REFUSED",
        "the default origin",
    );
    let mut here = SoftAuthenticator::with_origin("https://care.example.org");
    add_passkey(mesh, &user.session, &mut here, "here").await;
    let session = passkey_login(mesh, &mut here).await.unwrap();
    assert_eq!(session.user_id, user.user_id);
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    on_every_backend(&[], replays).await;
}

async fn replays(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let (user, mut authenticator) = patient_with_passkey(mesh).await;

    let ceremony = client.start_passkey_login().await.unwrap();
    let answer = authenticator.get(&ceremony.options_json).unwrap();
    client.finish_passkey_login(&ceremony, answer).await.unwrap();
    let replay = authenticator.last_assertion().unwrap();
    // The same ceremony again: it was taken by the first finish.
    assert_refused(
        client.finish_passkey_login(&ceremony, replay.clone()).await,
        Status::Unauthenticated,
        "CEREMONY_INVALID",
        &format!("{backend}: the same ceremony"),
    );
    // A new ceremony: the answer signs another challenge.
    let fresh = client.start_passkey_login().await.unwrap();
    assert_refused(
        client.finish_passkey_login(&fresh, replay.clone()).await,
        Status::Unauthenticated,
        "PASSKEY_REFUSED",
        &format!("{backend}: another ceremony"),
    );
    audited(
        mesh,
        "login_passkey",
        AuditOutcome::Denied,
        "PASSKEY_WRONG_CHALLENGE",
        Some(&user.user_id),
    )
    .await;
    // Nor does it answer a login challenge.
    let challenge = password_step(mesh, &user.username, &user.password).await;
    assert_refused(
        client
            .complete_login(&challenge.challenge_token, Code::Passkey(replay))
            .await,
        Status::Unauthenticated,
        "PASSKEY_REFUSED",
        &format!("{backend}: as a second factor"),
    );
    audited(
        mesh,
        "login_second_factor",
        AuditOutcome::Denied,
        "PASSKEY_WRONG_CHALLENGE",
        Some(&user.user_id),
    )
    .await;
    // A ceremony token is no login challenge and the other way round.
    let ceremony = client.start_passkey_login().await.unwrap();
    let answer = authenticator.get(&ceremony.options_json).unwrap();
    assert_refused(
        client.complete_login(&ceremony.token, Code::Passkey(answer)).await,
        Status::Unauthenticated,
        "CHALLENGE_INVALID",
        "a ceremony token as a login challenge",
    );
    // The real authenticator still signs in.
    passkey_login(mesh, &mut authenticator).await.unwrap();
}

#[tokio::test]
async fn a_counter_that_goes_back_is_refused_audited_and_alerts_auditors() {
    on_every_backend(&[], cloned_authenticator).await;
}

async fn cloned_authenticator(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let auditor = mesh.created(Role::Auditor).await;
    let (user, mut authenticator) = patient_with_passkey(mesh).await;
    let credential = authenticator.credential_ids()[0].clone();
    let mut clone = authenticator.clone();

    passkey_login(mesh, &mut authenticator).await.unwrap();
    assert_eq!(authenticator.counter(&credential), Some(1));
    // The clone answers with the same counter: at or below the stored one.
    assert_refused(
        passkey_login(mesh, &mut clone).await,
        Status::Unauthenticated,
        "PASSKEY_COUNTER_REGRESSION",
        &format!("{backend}: passwordless with a clone"),
    );
    let passkey_id = client.list_passkeys(&user.session).await.unwrap().passkeys[0]
        .passkey_id
        .clone();
    let event = audited(
        mesh,
        "login_passkey",
        AuditOutcome::Denied,
        "PASSKEY_COUNTER_REGRESSION",
        Some(&user.user_id),
    )
    .await;
    assert_eq!(event.entity_id, passkey_id);
    let cloned_alerts = || async {
        let alerts = client
            .audit_alerts(&auditor.session, ListAlertsRequest::default())
            .await
            .unwrap()
            .alerts;
        alerts
            .into_iter()
            .filter(|alert| alert.kind() == AlertKind::ClonedAuthenticator && alert.actor_user_id == user.user_id)
            .collect::<Vec<_>>()
    };
    let alert = eventually(Duration::from_secs(15), || async { cloned_alerts().await.pop() })
        .await
        .unwrap_or_else(|| panic!("{backend}: no cloned-authenticator alert"));
    assert_eq!(alert.event_ids, [event.event_id.as_str()]);
    let listed = client.list_passkeys(&user.session).await.unwrap();
    assert_eq!(listed.passkeys[0].sign_count, 1, "the refused use is not recorded");

    // The same as a second factor, with the counter set back; every regression alerts.
    authenticator.set_counter(&credential, 0);
    assert_refused(
        passkey_second_factor(mesh, &user, &mut authenticator).await,
        Status::Unauthenticated,
        "PASSKEY_COUNTER_REGRESSION",
        &format!("{backend}: second factor with the counter set back"),
    );
    audited(
        mesh,
        "login_second_factor",
        AuditOutcome::Denied,
        "PASSKEY_COUNTER_REGRESSION",
        Some(&user.user_id),
    )
    .await;
    let alerts = eventually(Duration::from_secs(15), || async {
        let alerts = cloned_alerts().await;
        (alerts.len() == 2).then_some(alerts)
    })
    .await;
    assert!(alerts.is_some(), "{backend}: a second cloned-authenticator alert");

    // Counting on upward from above the stored value signs in again.
    authenticator.set_counter(&credential, 5);
    passkey_login(mesh, &mut authenticator).await.unwrap();
    let listed = client.list_passkeys(&user.session).await.unwrap();
    assert_eq!(listed.passkeys[0].sign_count, 6);
}

#[tokio::test]
async fn of_two_sign_ins_racing_with_the_same_counter_one_gets_through() {
    on_every_backend(&[], racing_clones).await;
}

async fn racing_clones(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let (user, mut authenticator) = patient_with_passkey(mesh).await;
    let mut clone = authenticator.clone();
    // Both answers carry counter 1, both above the stored 0 when they are checked: only the
    // conditional update can tell them apart.
    let (first, second) = (
        client.start_passkey_login().await.unwrap(),
        client.start_passkey_login().await.unwrap(),
    );
    let (first_answer, second_answer) = (
        authenticator.get(&first.options_json).unwrap(),
        clone.get(&second.options_json).unwrap(),
    );
    let (one, other) = tokio::join!(
        client.finish_passkey_login(&first, first_answer),
        client.finish_passkey_login(&second, second_answer),
    );
    let (won, lost) = match (one, other) {
        (Ok(session), Err(error)) | (Err(error), Ok(session)) => (session, error),
        (one, other) => panic!("{backend}: exactly one may sign in: {one:?} / {other:?}"),
    };
    assert_eq!(won.user_id, user.user_id);
    assert_refused::<()>(
        Err(lost),
        Status::Unauthenticated,
        "PASSKEY_COUNTER_REGRESSION",
        &format!("{backend}: the loser"),
    );
    let listed = client.list_passkeys(&user.session).await.unwrap();
    assert_eq!(listed.passkeys[0].sign_count, 1);
}

#[tokio::test]
async fn a_removed_passkey_cannot_sign_in() {
    on_every_backend(&[], removed_passkey).await;
}

async fn removed_passkey(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let (user, mut authenticator) = patient_with_passkey(mesh).await;
    // A login challenge offered while the passkey existed...
    let offered = password_step(mesh, &user.username, &user.password).await;
    assert!(factors(&offered).contains(&SecondFactor::Passkey));
    let listed = client.list_passkeys(&user.session).await.unwrap();
    client
        .remove_passkey(&user.session, &listed.passkeys[0].passkey_id)
        .await
        .unwrap();
    // ...cannot be answered with it once it is removed.
    let answer = authenticator.get(&offered.passkey_request_options_json).unwrap();
    assert_refused(
        client
            .complete_login(&offered.challenge_token, Code::Passkey(answer))
            .await,
        Status::Unauthenticated,
        "PASSKEY_REFUSED",
        &format!("{backend}: second factor after removal"),
    );
    audited(
        mesh,
        "login_second_factor",
        AuditOutcome::Denied,
        "PASSKEY_UNKNOWN_CREDENTIAL",
        Some(&user.user_id),
    )
    .await;
    assert_refused(
        passkey_login(mesh, &mut authenticator).await,
        Status::Unauthenticated,
        "PASSKEY_REFUSED",
        &format!("{backend}: passwordless after removal"),
    );
    // The claimed user handle proves nothing, so the refusal names no user.
    audited(
        mesh,
        "login_passkey",
        AuditOutcome::Denied,
        "PASSKEY_UNKNOWN_CREDENTIAL",
        None,
    )
    .await;
    let challenge = password_step(mesh, &user.username, &user.password).await;
    assert_eq!(factors(&challenge), [SecondFactor::Totp, SecondFactor::RecoveryCode]);
    assert!(challenge.passkey_request_options_json.is_empty());
}

#[tokio::test]
async fn a_role_that_requires_passkeys_gets_passkeys_and_recovery_codes_only() {
    on_every_backend(&[], role_policy).await;
}

async fn role_policy(mesh: &TestMesh) {
    let backend = mesh.backend().name();
    let client = mesh.sdk();
    let admin = mesh.admin().await.clone();
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let nurse = mesh.staff(Role::Nurse, &[]).await;
    let auditor = mesh.created(Role::Auditor).await;

    // Only admins set policies.
    for (who, session) in [("a doctor", &doctor.session), ("an auditor", &auditor.session)] {
        assert_refused(
            client.admin_set_role_policy(session, Role::Doctor, true).await,
            Status::PermissionDenied,
            "ROLE_NOT_ALLOWED",
            who,
        );
    }
    let policies = client.admin_role_policies(&admin.session).await.unwrap();
    assert!(
        policies
            .iter()
            .all(|policy| !policy.passkey_required && policy.update_time.is_none())
    );
    let policy = client
        .admin_set_role_policy(&admin.session, Role::Doctor, true)
        .await
        .unwrap();
    assert_eq!((policy.role(), policy.passkey_required), (Role::Doctor, true));
    assert!(policy.update_time.is_some());
    let policies = client.admin_role_policies(&admin.session).await.unwrap();
    let required: Vec<(Role, bool)> = policies
        .iter()
        .map(|policy| (policy.role(), policy.passkey_required))
        .collect();
    assert_eq!(
        required,
        [
            (Role::Patient, false),
            (Role::Doctor, true),
            (Role::Nurse, false),
            (Role::Admin, false),
            (Role::Auditor, false)
        ]
    );
    audited(
        mesh,
        "admin_set_role_policy",
        AuditOutcome::Success,
        "PASSKEY_REQUIRED",
        Some(&admin.user_id),
    )
    .await;

    // A doctor without a passkey is told so, and TOTP still works (to register one).
    let listed = client.list_passkeys(&doctor.session).await.unwrap();
    assert!(listed.passkey_required && listed.passkeys.is_empty());
    let challenge = password_step(mesh, &doctor.username, &doctor.password).await;
    assert_eq!(factors(&challenge), [SecondFactor::Totp, SecondFactor::RecoveryCode]);
    let session = mesh.login_with_totp(&doctor).await;
    let mut key = SoftAuthenticator::new();
    let first = add_passkey(mesh, &session, &mut key, "doctor's key").await;

    // With one, only the passkey and recovery codes are offered, and TOTP is refused.
    let challenge = password_step(mesh, &doctor.username, &doctor.password).await;
    assert_eq!(
        challenge.factors().collect::<Vec<_>>(),
        [SecondFactor::Passkey, SecondFactor::RecoveryCode],
        "{backend}"
    );
    mesh.advance(30);
    let code = totp_code(&doctor.totp_secret, mesh.clock().now());
    assert_refused(
        client
            .complete_login(&challenge.challenge_token, Code::Totp(code))
            .await,
        Status::PermissionDenied,
        "PASSKEY_REQUIRED",
        &format!("{backend}: TOTP under the policy"),
    );
    audited(
        mesh,
        "login_second_factor",
        AuditOutcome::Denied,
        "PASSKEY_REQUIRED",
        Some(&doctor.user_id),
    )
    .await;
    let session = passkey_second_factor(mesh, &doctor, &mut key).await.unwrap();
    assert_eq!(session.aal, 2);
    let challenge = password_step(mesh, &doctor.username, &doctor.password).await;
    let by_code = client
        .complete_login(
            &challenge.challenge_token,
            Code::Recovery(doctor.recovery_codes[0].clone()),
        )
        .await
        .unwrap();
    assert_eq!(by_code.aal, 2, "recovery codes still work");

    // The last passkey cannot be removed; with a spare, one can.
    assert_refused(
        client.remove_passkey(&session, &first.passkey.passkey_id).await,
        Status::FailedPrecondition,
        "PASSKEY_REQUIRED",
        "the last passkey",
    );
    let refusal = audited(
        mesh,
        "passkey_remove",
        AuditOutcome::Denied,
        "PASSKEY_REQUIRED",
        Some(&doctor.user_id),
    )
    .await;
    assert_eq!(refusal.entity_id, first.passkey.passkey_id);
    let mut spare = SoftAuthenticator::new();
    let second = add_passkey(mesh, &session, &mut spare, "spare key").await;
    client
        .remove_passkey(&session, &first.passkey.passkey_id)
        .await
        .unwrap();
    assert_refused(
        client.remove_passkey(&session, &second.passkey.passkey_id).await,
        Status::FailedPrecondition,
        "PASSKEY_REQUIRED",
        "the spare is now the last",
    );
    passkey_second_factor(mesh, &doctor, &mut spare).await.unwrap();

    // Other roles are not affected: a nurse with a passkey keeps TOTP.
    let mut nurse_key = SoftAuthenticator::new();
    add_passkey(mesh, &nurse.session, &mut nurse_key, "nurse's key").await;
    let challenge = password_step(mesh, &nurse.username, &nurse.password).await;
    assert_eq!(
        factors(&challenge),
        [SecondFactor::Totp, SecondFactor::RecoveryCode, SecondFactor::Passkey]
    );
    mesh.login_with_totp(&nurse).await;

    // Lifting the policy gives the doctor TOTP back.
    client
        .admin_set_role_policy(&admin.session, Role::Doctor, false)
        .await
        .unwrap();
    assert!(!client.list_passkeys(&session).await.unwrap().passkey_required);
    let challenge = password_step(mesh, &doctor.username, &doctor.password).await;
    assert!(factors(&challenge).contains(&SecondFactor::Totp));
    mesh.login_with_totp(&doctor).await;
}
