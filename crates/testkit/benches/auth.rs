//! auth-svc benchmark. Prints, from one run on this machine:
//! - login latency (password step, over mTLS through the real services) next to the raw
//!   Argon2id verification time with the same parameters: the goal is that the hash is at least
//!   90% of a login, i.e. the service adds little on top of the deliberate cost;
//! - access-token verifications per second on one core: a token the runtime's verifier sees for
//!   the first time (the remembered-token cache misses: digest, signature check, insert; the goal,
//!   at least 30,000 per second per core, is judged here), a token it has verified before (what
//!   a client's later calls cost), the bare token check and Ed25519 alone.
//!
//! Run: `cargo bench -p caremesh-testkit --bench auth`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use auth_svc::password::{self, HashCost};
use caremesh_runtime::auth::TokenVerifier;
use caremesh_runtime::clock::Clock;
use caremesh_sdk::auth::{LoginStep, Role};
use caremesh_testkit::TestMesh;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let mesh = TestMesh::start().await;
    let client = mesh.sdk();
    let password = "vellum orbit cactus lantern";
    client
        .register("bench.user", password, Role::Patient, "Bench")
        .await
        .unwrap();

    // Warm up connections and caches.
    for _ in 0..3 {
        client.login("bench.user", password).await.unwrap();
    }
    const RUNS: usize = 40;
    let mut logins = Vec::with_capacity(RUNS);
    let mut session = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let LoginStep::Done(done) = client.login("bench.user", password).await.unwrap() else {
            panic!("no MFA enrolled for the bench user");
        };
        logins.push(started.elapsed());
        session = Some(done);
    }
    let stored = password::hash(password, HashCost::OWASP_MINIMUM).unwrap();
    let mut hashes = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        assert!(password::verify(password, &stored));
        hashes.push(started.elapsed());
    }
    let (login, hash) = (median(logins), median(hashes));
    let share = hash.as_secs_f64() / login.as_secs_f64();

    // Token verification on this (single) thread.
    let session = session.unwrap();
    let verifier = caremesh_runtime::auth::KeySetVerifier::new(tonic::service::interceptor::InterceptedService::new(
        mesh.channel(
            caremesh_testkit::Service::Auth,
            caremesh_testkit::Caller::Service(caremesh_testkit::Service::Records),
        ),
        caremesh_runtime::telemetry::TraceContextInterceptor,
    ));
    let now = mesh.clock().now();
    verifier.verify(&session.access_token, now).await.unwrap();
    let iterations = 100_000u32;
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(
            verifier
                .verify(std::hint::black_box(&session.access_token), now)
                .await
                .unwrap(),
        );
    }
    let runtime_rate = f64::from(iterations) / started.elapsed().as_secs_f64();

    let kid = caremesh_token::peek_key_id(&session.access_token).unwrap();
    let keys = client_keys(&mesh).await;
    let key = keys.iter().find(|(id, _)| *id == kid).unwrap().1;
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(
            caremesh_token::verify(
                std::hint::black_box(&session.access_token),
                |_| Some(key),
                now.timestamp(),
            )
            .unwrap(),
        );
    }
    let bare_rate = f64::from(iterations) / started.elapsed().as_secs_f64();

    // First sight: distinct tokens (signed here, as auth-svc would, with a key of our own)
    // through the cache the runtime's verifier uses, at its capacity, so every one misses.
    let first_sight_rate = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let kid = caremesh_token::key_id(&key.verifying_key());
        let public = key.verifying_key();
        let now = now.timestamp();
        let tokens: Vec<String> = (0..iterations)
            .map(|n| {
                let claims = caremesh_token::Claims {
                    kid: kid.clone(),
                    sub: format!("0190b0a0-0000-7000-8000-{n:012}"),
                    role: "doctor".to_owned(),
                    attrs: vec!["role:doctor".to_owned(), "dept:cardiology".to_owned()],
                    sid: format!("0190b0a0-0000-7000-8001-{n:012}"),
                    aal: 2,
                    iat: now,
                    exp: now + 600,
                };
                caremesh_token::sign(&claims, &key).unwrap()
            })
            .collect();
        let remembered = caremesh_token::VerifiedTokens::new(caremesh_runtime::auth::VERIFIED_TOKENS);
        let keys = std::sync::RwLock::new(std::collections::HashMap::from([(kid, public)]));
        let lookup = |kid: &str| keys.read().unwrap().get(kid).copied();
        let started = Instant::now();
        for token in &tokens {
            std::hint::black_box(remembered.verify(std::hint::black_box(token), lookup, now).unwrap());
        }
        f64::from(iterations) / started.elapsed().as_secs_f64()
    };

    // The floor under any token check: one Ed25519 signature verification.
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let message = session.access_token.as_bytes();
    let signature = ed25519_dalek::Signer::sign(&signing, message);
    let public = signing.verifying_key();
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(public.verify_strict(std::hint::black_box(message), &signature).is_ok());
    }
    let ed25519_rate = f64::from(iterations) / started.elapsed().as_secs_f64();

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!("auth-svc benchmark ({RUNS} logins, {iterations} verifications; medians)");
    println!(
        "  login, password step, over mTLS   {:>9.2} ms",
        login.as_secs_f64() * 1000.0
    );
    println!(
        "  raw Argon2id verify (m=19 MiB, t=2) {:>7.2} ms   baseline, same run",
        hash.as_secs_f64() * 1000.0
    );
    println!(
        "  hash share of login                {:>8.1} %    goal >= 90 %: {}",
        share * 100.0,
        verdict(share >= 0.9)
    );
    println!(
        "  token verifications, first sight   {:>9.0} /s per core   goal >= 30000: {}",
        first_sight_rate,
        verdict(first_sight_rate >= 30_000.0)
    );
    println!(
        "  token verifications, seen before   {:>9.0} /s per core   (runtime verifier, remembered token)",
        runtime_rate
    );
    println!("  token verifications, bare check    {:>9.0} /s per core", bare_rate);
    println!(
        "  Ed25519 verify alone               {:>9.0} /s per core   baseline, same run",
        ed25519_rate
    );
    mesh.shutdown().await;
}

async fn client_keys(mesh: &TestMesh) -> Vec<(String, ed25519_dalek::VerifyingKey)> {
    use caremesh_proto::auth::v1::GetVerificationKeysRequest;
    use caremesh_proto::auth::v1::auth_service_client::AuthServiceClient;
    let mut client =
        AuthServiceClient::new(mesh.channel(caremesh_testkit::Service::Auth, caremesh_testkit::Caller::Anonymous));
    let keys = client
        .get_verification_keys(GetVerificationKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    keys.into_iter()
        .map(|key| {
            let bytes: [u8; 32] = key.public_key.as_slice().try_into().unwrap();
            (key.key_id, ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap())
        })
        .collect()
}
