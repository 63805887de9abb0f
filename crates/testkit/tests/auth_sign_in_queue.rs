//! auth-svc's Argon2id queue through the real services: with one hash at a time and one caller
//! allowed to wait, a burst of logins gets some RESOURCE_EXHAUSTED answers that say to try again,
//! and the logins that got a turn succeed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use caremesh_sdk::SdkError;
use caremesh_sdk::auth::LoginStep;
use caremesh_testkit::TestMesh;
use tonic::Code as Status;

#[tokio::test]
async fn a_burst_of_logins_beyond_the_queue_is_refused_and_the_rest_succeed() {
    let mesh = TestMesh::builder()
        .setting(auth_svc::settings::ARGON2_CONCURRENCY, "1")
        .setting(auth_svc::settings::ARGON2_QUEUE, "1")
        // A costlier hash keeps each turn long enough for the burst to pile up behind it.
        .setting(auth_svc::settings::ARGON2_ITERATIONS, "6")
        .start()
        .await;
    let users = [mesh.patient().await, mesh.patient().await];
    let client = mesh.sdk();

    let (mut succeeded, mut refused) = (0, 0);
    // Each burst is 24 logins at once over one connection; one hashes, one waits, the others
    // find the queue full. A few bursts in case the machine serves one slower than it arrives.
    for _ in 0..5 {
        let logins = (0..24).map(|attempt| {
            let user = &users[attempt % users.len()];
            client.login(&user.username, &user.password)
        });
        for outcome in futures::future::join_all(logins).await {
            match outcome {
                Ok(LoginStep::SecondFactor { .. }) => succeeded += 1,
                Ok(LoginStep::Done(_)) => panic!("these users have MFA"),
                Err(error) => {
                    assert_eq!(error.code(), Some(Status::ResourceExhausted), "{error}");
                    assert_eq!(error.reason().as_deref(), Some("TOO_MANY_SIGN_INS"));
                    let SdkError::Status(status) = &error else {
                        panic!("{error}")
                    };
                    assert_eq!(
                        status.message(),
                        "too many sign-ins at once; try again in a few seconds"
                    );
                    use tonic_types::StatusExt;
                    assert!(
                        status.get_details_retry_info().unwrap().retry_delay.is_some(),
                        "tells when to retry"
                    );
                    refused += 1;
                }
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(
        refused > 0,
        "the queue is bounded ({succeeded} logins succeeded, none refused)"
    );
    assert!(succeeded >= 2, "the logins that got a turn succeeded ({succeeded})");

    // Unknown usernames (decoy checks) wait in the same queue and are refused the same way.
    let mut decoys_refused = 0;
    for _ in 0..5 {
        let unknown: Vec<String> = (0..24).map(|attempt| format!("nobody-{attempt}")).collect();
        let logins = unknown
            .iter()
            .map(|username| client.login(username, "no such password here"));
        for outcome in futures::future::join_all(logins).await {
            let error = outcome.expect_err("unknown users cannot log in");
            match error.code() {
                Some(Status::ResourceExhausted) => decoys_refused += 1,
                Some(Status::Unauthenticated) => {}
                other => panic!("unexpected {other:?}: {error}"),
            }
        }
        if decoys_refused > 0 {
            break;
        }
    }
    assert!(decoys_refused > 0, "decoy checks go through the same bounded queue");

    // Once the burst has passed, logins are served again.
    assert!(matches!(
        client.login(&users[0].username, &users[0].password).await.unwrap(),
        LoginStep::SecondFactor { .. }
    ));
    mesh.shutdown().await;
}
