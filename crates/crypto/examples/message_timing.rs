//! The Rust side of the web benchmark (`web/bench/run.mjs`): the same protocol v2 operations the
//! browser page times (`web/bench/bench.ts`), on one thread, so the two can be read side by side:
//! a PQXDH handshake with its first message, and 1 KiB ratchet messages encrypted and decrypted,
//! on one chain and with a DH ratchet step each. Prints one JSON line.
//!
//! `cargo run --release -p caremesh-crypto --example message_timing`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use caremesh_crypto::v2::*;
use caremesh_crypto::{IdentityKeyPair, new_id};
use zeroize::Zeroizing;

struct Side {
    user_id: String,
    identity: IdentityKeyPair,
    device: DeviceSecrets,
    sessions: SessionStore,
}

impl Side {
    fn new() -> Self {
        Self {
            user_id: new_id(),
            identity: IdentityKeyPair::generate().unwrap(),
            device: DeviceSecrets::generate().unwrap(),
            sessions: SessionStore::default(),
        }
    }

    fn peer(&self) -> PeerDevice {
        PeerDevice {
            user_id: self.user_id.clone(),
            device_id: self.device.device_id().to_owned(),
        }
    }
}

/// `to` opens `message` from `from`.
fn deliver(from: &Side, to: &mut Side, message_id: &str, message: &RatchetMessage) {
    let user_id = to.user_id.clone();
    to.sessions
        .decrypt(
            &to.identity,
            &user_id,
            &mut to.device,
            &from.user_id,
            &from.identity.public(),
            message_id,
            message,
            &mut OsRatchetKeys,
        )
        .unwrap();
}

/// A fresh pair with a session both ways (the handshake and first message timed).
fn pair(plaintext: &[u8]) -> (Side, Side, f64) {
    let (mut alice, mut bob) = (Side::new(), Side::new());
    let published = (
        bob.device.signed_prekey(&bob.identity, &bob.user_id).unwrap(),
        bob.device.last_resort_prekey(&bob.identity, &bob.user_id).unwrap(),
    );
    let list = DeviceList::new(
        &bob.user_id,
        bob.identity.key_id(),
        1,
        [bob.device.device_id().to_owned()],
    )
    .unwrap();
    let started = Instant::now();
    let bundle = DeviceBundle {
        user_id: bob.user_id.clone(),
        device_id: bob.device.device_id().to_owned(),
        signed_prekey: published.0,
        kem_prekey: Some(KemPrekeyPublic {
            key_id: published.1.key_id.clone(),
            kind: DeviceKeyKind::KemLastResort,
            public_key: published.1.public_key.clone(),
            signature: published.1.signature.clone(),
        }),
        one_time_prekey: None,
    };
    let verified = verify_device_bundle(&bundle, &bob.identity.public(), &list).unwrap();
    let alice_device = alice.device.device_id().to_owned();
    let alice_user = alice.user_id.clone();
    alice
        .sessions
        .start(
            &alice.identity,
            &alice_user,
            &alice_device,
            &verified,
            &mut OsRatchetKeys,
        )
        .unwrap();
    let message_id = new_id();
    let first = alice.sessions.encrypt(&bob.peer(), &message_id, plaintext).unwrap();
    deliver(&alice, &mut bob, &message_id, &first);
    let handshake_ms = started.elapsed().as_secs_f64() * 1e3;
    (alice, bob, handshake_ms)
}

fn main() {
    let plaintext = Content::Message(Zeroizing::new(vec![b'm'; 1024])).encode().unwrap();
    let handshakes: Vec<f64> = (0..5).map(|_| pair(&plaintext).2).collect();
    let (mut alice, mut bob, _) = pair(&plaintext);

    let same_chain = 500;
    let started = Instant::now();
    for _ in 0..same_chain {
        let message_id = new_id();
        let message = alice.sessions.encrypt(&bob.peer(), &message_id, &plaintext).unwrap();
        deliver(&alice, &mut bob, &message_id, &message);
    }
    let same_chain_ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(same_chain);

    let steps = 200;
    let started = Instant::now();
    for i in 0..steps {
        let message_id = new_id();
        if i % 2 == 0 {
            let message = bob.sessions.encrypt(&alice.peer(), &message_id, &plaintext).unwrap();
            deliver(&bob, &mut alice, &message_id, &message);
        } else {
            let message = alice.sessions.encrypt(&bob.peer(), &message_id, &plaintext).unwrap();
            deliver(&alice, &mut bob, &message_id, &message);
        }
    }
    let step_ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(steps);

    println!(
        "{{\"handshake_ms\": {:.3}, \"same_chain_ms\": {:.4}, \"dh_step_ms\": {:.4}}}",
        handshakes.iter().sum::<f64>() / handshakes.len() as f64,
        same_chain_ms,
        step_ms
    );
}
