//! Protocol v2 at the device level: several devices per user with fan-out, out-of-order
//! delivery and loss, replays, tampering with any byte, a lost session and its re-handshake, a
//! crash between saving and sending, linking a device that then reads the history, and device
//! list changes. The directory is a small in-memory stand-in that hands out one-time keys once;
//! the real one is messaging-svc (tested through the services in crates/testkit).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use caremesh_crypto::v2::archive::ArchiveContext;
use caremesh_crypto::v2::*;
use caremesh_crypto::{CryptoError, IdentityKeyPair, new_id};
use zeroize::Zeroizing;

/// What the key directory holds for one device.
struct Published {
    signed_prekey: PublishedKey,
    last_resort: PublishedKey,
    one_time: Vec<PublishedKey>,
    kem_one_time: Vec<PublishedKey>,
}

struct Device {
    secrets: DeviceSecrets,
    sessions: SessionStore,
    inbox: Vec<(String, String, RatchetMessage)>,
}

struct User {
    user_id: String,
    identity: IdentityKeyPair,
    list: DeviceList,
    list_signature: [u8; 64],
    devices: BTreeMap<String, Device>,
    directory: BTreeMap<String, Published>,
    history: HistoryKeyRing,
}

impl User {
    fn new(devices: usize) -> Self {
        let user_id = new_id();
        let identity = IdentityKeyPair::generate().unwrap();
        let mut user = Self {
            list: DeviceList::new(&user_id, identity.key_id(), 1, [new_id()]).unwrap(),
            list_signature: [0; 64],
            user_id,
            identity,
            devices: BTreeMap::new(),
            directory: BTreeMap::new(),
            history: HistoryKeyRing::generate().unwrap(),
        };
        let mut ids = Vec::new();
        for _ in 0..devices {
            ids.push(user.add_device(DeviceSecrets::generate().unwrap()));
        }
        user.list = DeviceList::new(&user.user_id, user.identity.key_id(), 1, ids).unwrap();
        user.list_signature = user.list.sign(&user.identity).unwrap();
        user
    }

    fn add_device(&mut self, mut secrets: DeviceSecrets) -> String {
        let (one_time, kem_one_time) = secrets.new_one_time_prekeys(&self.identity, &self.user_id, 3).unwrap();
        let published = Published {
            signed_prekey: secrets.signed_prekey(&self.identity, &self.user_id).unwrap(),
            last_resort: secrets.last_resort_prekey(&self.identity, &self.user_id).unwrap(),
            one_time,
            kem_one_time,
        };
        let device_id = secrets.device_id().to_owned();
        self.directory.insert(device_id.clone(), published);
        self.devices.insert(
            device_id.clone(),
            Device {
                secrets,
                sessions: SessionStore::default(),
                inbox: Vec::new(),
            },
        );
        device_id
    }

    fn device_ids(&self) -> Vec<String> {
        self.list.device_ids().to_vec()
    }

    /// A bundle as the directory serves it: one-time keys are handed out once.
    fn fetch_bundle(&mut self, device_id: &str) -> DeviceBundle {
        let published = self.directory.get_mut(device_id).unwrap();
        let kem = match published.kem_one_time.pop() {
            Some(key) => (key, DeviceKeyKind::KemOneTime),
            None => (published.last_resort.clone(), DeviceKeyKind::KemLastResort),
        };
        DeviceBundle {
            user_id: self.user_id.clone(),
            device_id: device_id.to_owned(),
            signed_prekey: published.signed_prekey.clone(),
            kem_prekey: Some(KemPrekeyPublic {
                key_id: kem.0.key_id,
                kind: kem.1,
                public_key: kem.0.public_key,
                signature: kem.0.signature,
            }),
            one_time_prekey: published.one_time.pop(),
        }
    }
}

/// Sends `body` from `from`'s device to every device of `to` and to `from`'s other devices
/// (Sesame fan-out), starting sessions where there are none. Returns the message id.
fn send(users: &mut [User], from: usize, device_id: &str, to: usize, body: &[u8]) -> String {
    let message_id = new_id();
    let plaintext = Content::Message(Zeroizing::new(body.to_vec())).encode().unwrap();
    let mut targets: Vec<(usize, String)> = users[to].device_ids().into_iter().map(|d| (to, d)).collect();
    if from != to {
        targets.extend(
            users[from]
                .device_ids()
                .into_iter()
                .filter(|d| d != device_id)
                .map(|d| (from, d)),
        );
    }
    for (target, target_device) in targets {
        let peer = PeerDevice {
            user_id: users[target].user_id.clone(),
            device_id: target_device.clone(),
        };
        let needs_session = !users[from].devices[device_id].sessions.can_send_to(&peer);
        if needs_session {
            let bundle = users[target].fetch_bundle(&target_device);
            let verified =
                verify_device_bundle(&bundle, &users[target].identity.public(), &users[target].list).unwrap();
            let sender = &mut users[from];
            let device = sender.devices.get_mut(device_id).unwrap();
            device
                .sessions
                .start(
                    &sender.identity,
                    &sender.user_id,
                    device_id,
                    &verified,
                    &mut OsRatchetKeys,
                )
                .unwrap();
        }
        let sender = &mut users[from];
        let message = sender
            .devices
            .get_mut(device_id)
            .unwrap()
            .sessions
            .encrypt(&peer, &message_id, &plaintext)
            .unwrap();
        let sender_user = sender.user_id.clone();
        users[target]
            .devices
            .get_mut(&target_device)
            .unwrap()
            .inbox
            .push((sender_user, message_id.clone(), message));
    }
    message_id
}

/// Opens a message on a device of `users[to]`, sent by a device of `users[from]`.
fn open(
    users: &mut [User],
    to: usize,
    device_id: &str,
    from: usize,
    message_id: &str,
    message: &RatchetMessage,
) -> Result<Content, CryptoError> {
    let sender_user_id = users[from].user_id.clone();
    let sender_identity = users[from].identity.public();
    let user = &mut users[to];
    let device = user.devices.get_mut(device_id).unwrap();
    let plaintext = device.sessions.decrypt(
        &user.identity,
        &user.user_id,
        &mut device.secrets,
        &sender_user_id,
        &sender_identity,
        message_id,
        message,
        &mut OsRatchetKeys,
    )?;
    Content::decode(&plaintext)
}

/// Opens everything in a device's inbox, in order, and returns the bodies.
fn drain(users: &mut [User], to: usize, device_id: &str) -> Vec<Vec<u8>> {
    let inbox = std::mem::take(&mut users[to].devices.get_mut(device_id).unwrap().inbox);
    inbox
        .into_iter()
        .map(|(sender, message_id, message)| {
            let from = users.iter().position(|user| user.user_id == sender).unwrap();
            match open(users, to, device_id, from, &message_id, &message).unwrap() {
                Content::Message(body) => body.to_vec(),
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

#[test]
fn two_devices_each_every_device_holds_the_whole_conversation() {
    let mut users = vec![User::new(2), User::new(2)];
    let (jane, house) = (0, 1);
    let jane_devices = users[jane].device_ids();
    let house_devices = users[house].device_ids();
    let mut expected: BTreeMap<(usize, String), Vec<Vec<u8>>> = BTreeMap::new();
    let rounds: [(usize, &String, usize); 6] = [
        (jane, &jane_devices[0], house),
        (house, &house_devices[1], jane),
        (jane, &jane_devices[1], house),
        (house, &house_devices[0], jane),
        (jane, &jane_devices[0], house),
        (jane, &jane_devices[0], house),
    ];
    for (index, (from, device, to)) in rounds.into_iter().enumerate() {
        let body = format!("message {index} from user {from}").into_bytes();
        send(&mut users, from, device, to, &body);
        for user in [jane, house] {
            for other in users[user].device_ids() {
                if !(user == from && &other == device) {
                    expected.entry((user, other)).or_default().push(body.clone());
                }
            }
        }
        for user in [jane, house] {
            for other in users[user].device_ids() {
                let opened = drain(&mut users, user, &other);
                let held = expected.entry((user, other.clone())).or_default();
                let start = held.len() - opened.len();
                assert_eq!(opened, held[start..], "device {other} of user {user}");
            }
        }
    }
    // Every device saw every message it did not send itself: 6 messages, 4 devices.
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(total, 6 * 3);
    // After the replies, jane's phone no longer attaches a handshake preamble to house's devices.
    let message_id = send(&mut users, jane, &jane_devices[0], house, b"no preamble now");
    let inbox = &users[house].devices[&house_devices[0]].inbox;
    let (_, id, message) = inbox.last().unwrap();
    assert_eq!(id, &message_id);
    assert!(message.header.preamble.is_none());
}

#[test]
fn out_of_order_and_lost_messages_open_and_replays_are_refused() {
    let mut users = vec![User::new(1), User::new(1)];
    let (a, b) = (users[0].device_ids()[0].clone(), users[1].device_ids()[0].clone());
    for index in 0..5 {
        send(&mut users, 0, &a, 1, format!("m{index}").as_bytes());
    }
    let inbox = std::mem::take(&mut users[1].devices.get_mut(&b).unwrap().inbox);
    // Delivered 4, 2, 5; 1 and 3 are late, 3 is lost.
    for index in [3, 1, 4] {
        let (_, id, message) = &inbox[index];
        let body = open(&mut users, 1, &b, 0, id, message).unwrap();
        assert_eq!(body, Content::Message(Zeroizing::new(format!("m{index}").into_bytes())));
    }
    let (_, id, message) = &inbox[1];
    assert_eq!(
        open(&mut users, 1, &b, 0, id, message),
        Err(CryptoError::DuplicateMessage),
        "replay"
    );
    // The first message, with its handshake preamble, arrives last and still opens, once.
    let (_, id, message) = &inbox[0];
    assert!(open(&mut users, 1, &b, 0, id, message).is_ok());
    assert_eq!(
        open(&mut users, 1, &b, 0, id, message),
        Err(CryptoError::DuplicateMessage)
    );
    // The reply works across the gap, and the preamble stops once it is read.
    send(&mut users, 1, &b, 0, b"reply");
    assert_eq!(drain(&mut users, 0, &a), vec![b"reply".to_vec()]);
    send(&mut users, 0, &a, 1, b"after");
    let inbox = &users[1].devices[&b].inbox;
    assert!(inbox.last().unwrap().2.header.preamble.is_none());
    assert_eq!(drain(&mut users, 1, &b), vec![b"after".to_vec()]);
}

#[test]
fn changing_any_byte_of_a_header_or_ciphertext_is_refused() {
    let mut users = vec![User::new(1), User::new(1)];
    let (a, b) = (users[0].device_ids()[0].clone(), users[1].device_ids()[0].clone());
    send(&mut users, 0, &a, 1, b"first, with the handshake");
    send(&mut users, 0, &a, 1, b"second");
    let inbox = std::mem::take(&mut users[1].devices.get_mut(&b).unwrap().inbox);
    let mut refused = 0;
    for (_, id, original) in &inbox {
        let mut variants: Vec<RatchetMessage> = Vec::new();
        for index in 0..original.ciphertext.len() {
            let mut m = original.clone();
            m.ciphertext[index] ^= 0x01;
            variants.push(m);
        }
        for index in 0..32 {
            let mut m = original.clone();
            m.header.dh[index] ^= 0x01;
            variants.push(m);
        }
        let mut m = original.clone();
        m.header.n += 1;
        variants.push(m);
        let mut m = original.clone();
        m.header.pn += 1;
        variants.push(m);
        if let Some(preamble) = &original.header.preamble {
            for index in 0..32 {
                let mut m = original.clone();
                m.header.preamble.as_mut().unwrap().ephemeral_public[index] ^= 0x01;
                variants.push(m);
            }
            for index in (0..preamble.kem_ciphertext.len()).step_by(61) {
                let mut m = original.clone();
                m.header.preamble.as_mut().unwrap().kem_ciphertext[index] ^= 0x01;
                variants.push(m);
            }
            let mut m = original.clone();
            m.header.preamble.as_mut().unwrap().one_time_prekey_id = String::new();
            variants.push(m);
        }
        for variant in variants {
            assert!(open(&mut users, 1, &b, 0, id, &variant).is_err());
            refused += 1;
        }
        // Another message id (the server moving a ciphertext) is refused too.
        assert!(open(&mut users, 1, &b, 0, &new_id(), original).is_err());
    }
    assert!(refused > 100);
    // None of that changed anything: both originals open.
    for (_, id, message) in &inbox {
        assert!(open(&mut users, 1, &b, 0, id, message).is_ok());
    }
}

#[test]
fn a_lost_session_is_reported_and_a_new_handshake_recovers() {
    let mut users = vec![User::new(1), User::new(1)];
    let (a, b) = (users[0].device_ids()[0].clone(), users[1].device_ids()[0].clone());
    send(&mut users, 0, &a, 1, b"hello");
    drain(&mut users, 1, &b);
    send(&mut users, 1, &b, 0, b"hi");
    drain(&mut users, 0, &a);
    // House's device loses its sessions (restored from an old backup, say).
    users[1].devices.get_mut(&b).unwrap().sessions = SessionStore::default();
    send(&mut users, 0, &a, 1, b"lost");
    let (_, id, message) = users[1].devices.get_mut(&b).unwrap().inbox.pop().unwrap();
    assert!(matches!(
        open(&mut users, 1, &b, 0, &id, &message),
        Err(CryptoError::NoSession(_))
    ));
    // House starts a new session; jane's device adopts it and answers in it.
    send(&mut users, 1, &b, 0, b"session reset");
    assert_eq!(drain(&mut users, 0, &a), vec![b"session reset".to_vec()]);
    send(&mut users, 0, &a, 1, b"back");
    assert_eq!(drain(&mut users, 1, &b), vec![b"back".to_vec()]);
}

#[test]
fn a_device_killed_between_saving_and_sending_resumes_without_reusing_a_key() {
    let mut users = vec![User::new(1), User::new(1)];
    let (a, b) = (users[0].device_ids()[0].clone(), users[1].device_ids()[0].clone());
    send(&mut users, 0, &a, 1, b"one");
    drain(&mut users, 1, &b);
    // Encrypt, then save the state together with the pending ciphertext (what the SDK does
    // before anything leaves the device), then "crash": the in-memory state is gone.
    let peer = PeerDevice {
        user_id: users[1].user_id.clone(),
        device_id: b.clone(),
    };
    let message_id = new_id();
    let plaintext = Content::Message(Zeroizing::new(b"two".to_vec())).encode().unwrap();
    let device = users[0].devices.get_mut(&a).unwrap();
    let pending = device.sessions.encrypt(&peer, &message_id, &plaintext).unwrap();
    let saved_sessions = serde_json::to_string(&device.sessions).unwrap();
    let saved_secrets = serde_json::to_string(&device.secrets).unwrap();
    device.sessions = serde_json::from_str(&saved_sessions).unwrap();
    device.secrets = serde_json::from_str(&saved_secrets).unwrap();
    // On restart the saved ciphertext is resent as it is; the next message uses the next key.
    let next = device.sessions.encrypt(&peer, &new_id(), &plaintext).unwrap();
    assert_eq!(next.header.dh, pending.header.dh);
    assert_eq!(
        next.header.n,
        pending.header.n + 1,
        "a new message key, never the pending one"
    );
    assert_ne!(next.ciphertext, pending.ciphertext);
    assert!(open(&mut users, 1, &b, 0, &message_id, &pending).is_ok());
    assert_eq!(
        open(&mut users, 1, &b, 0, &message_id, &pending),
        Err(CryptoError::DuplicateMessage)
    );
}

#[test]
fn a_linked_device_reads_the_history_and_a_removed_one_reads_nothing_new() {
    let jane = User::new(2);
    let house_id = new_id();
    let sender_device = jane.device_ids()[0].clone();
    // Jane's phone archived three sent messages under her history key.
    let mut archive = Vec::new();
    for index in 0..3 {
        let message_id = new_id();
        let body = Content::Message(Zeroizing::new(format!("archived {index}").into_bytes()));
        let context = ArchiveContext {
            owner_user_id: &jane.user_id,
            message_id: &message_id,
            sender_user_id: &jane.user_id,
            sender_device_id: &sender_device,
            recipient_user_id: &house_id,
        };
        archive.push((
            message_id.clone(),
            ArchiveCopy::seal(&jane.history, &context, &body).unwrap(),
            body,
        ));
    }

    // A tablet signs in and asks to be linked; the phone approves after the user typed the code.
    let request = LinkRequest::new(&jane.user_id).unwrap();
    let pending = PendingLink {
        user_id: jane.user_id.clone(),
        device_id: request.device_id().to_owned(),
        ephemeral_public: request.ephemeral_public(),
        commitment: request.commitment().unwrap(),
    };
    // The phone sends its own account identity (a copy through its persisted form).
    let provisioning = Provisioning {
        identity: serde_json::from_value(serde_json::to_value(&jane.identity).unwrap()).unwrap(),
        history: jane.history.clone(),
        approver_device_id: sender_device.clone(),
    };
    let sealed = pending.seal(&request.code(), &provisioning).unwrap();
    let mut tracker = DeviceListTracker::default();
    assert_eq!(tracker.observe(&jane.list).unwrap().added.len(), 2);
    let linked = jane.list.with_device(request.device_id()).unwrap();

    let received = request.open(&sealed).unwrap();
    assert_eq!(received.identity.public(), jane.identity.public());
    for (message_id, copy, body) in &archive {
        let context = ArchiveContext {
            owner_user_id: &jane.user_id,
            message_id,
            sender_user_id: &jane.user_id,
            sender_device_id: &sender_device,
            recipient_user_id: &house_id,
        };
        assert_eq!(&copy.open(&received.history, &context).unwrap(), body);
    }
    let change = tracker.observe(&linked).unwrap();
    assert_eq!(change.added, vec![request.device_id().to_owned()]);
    assert!(change.removed.is_empty());
    // The server replaying the old list is refused.
    assert_eq!(
        tracker.observe(&jane.list),
        Err(CryptoError::DeviceListRollback { offered: 1, seen: 2 })
    );

    // The second phone is removed: the list drops it and the history key rotates.
    let removed_device = jane.device_ids()[1].clone();
    let removed_history = jane.history.clone();
    let after = linked.without_device(&removed_device).unwrap();
    assert_eq!(tracker.observe(&after).unwrap().removed, vec![removed_device]);
    let mut ring = received.history.clone();
    ring.push_current(HistoryKey::generate().unwrap());
    let message_id = new_id();
    let context = ArchiveContext {
        owner_user_id: &jane.user_id,
        message_id: &message_id,
        sender_user_id: &jane.user_id,
        sender_device_id: request.device_id(),
        recipient_user_id: &house_id,
    };
    let body = Content::Message(Zeroizing::new(b"after the removal".to_vec()));
    let copy = ArchiveCopy::seal(&ring, &context, &body).unwrap();
    assert_eq!(copy.open(&ring, &context).unwrap(), body);
    assert!(matches!(
        copy.open(&removed_history, &context),
        Err(CryptoError::UnknownKey { .. })
    ));

    // A wrong code, or a server that swapped the tablet's key, cannot get a provisioning message.
    assert_eq!(
        pending.seal("0000-0000-0000-0000", &provisioning).unwrap_err(),
        CryptoError::LinkCodeMismatch
    );
    let impostor = LinkRequest::new(&jane.user_id).unwrap();
    let swapped = PendingLink {
        ephemeral_public: impostor.ephemeral_public(),
        ..pending.clone()
    };
    assert_eq!(
        swapped.seal(&request.code(), &provisioning).unwrap_err(),
        CryptoError::LinkCodeMismatch
    );
    // And a provisioning message for one link opens on no other.
    assert_eq!(impostor.open(&sealed).unwrap_err(), CryptoError::DecryptionFailed);
}

#[test]
fn bounds_hold() {
    let mut users = vec![User::new(1), User::new(1)];
    let (a, b) = (users[0].device_ids()[0].clone(), users[1].device_ids()[0].clone());
    let peer = PeerDevice {
        user_id: users[1].user_id.clone(),
        device_id: b.clone(),
    };
    send(&mut users, 0, &a, 1, b"start");
    drain(&mut users, 1, &b);
    // A message more than MAX_SKIP ahead is refused, and the ones before the bound still work.
    let plaintext = Content::Message(Zeroizing::new(b"x".to_vec())).encode().unwrap();
    let mut last = None;
    for _ in 0..=MAX_SKIP + 1 {
        let id = new_id();
        let message = users[0]
            .devices
            .get_mut(&a)
            .unwrap()
            .sessions
            .encrypt(&peer, &id, &plaintext)
            .unwrap();
        last = Some((id, message));
    }
    let (id, message) = last.unwrap();
    assert!(matches!(
        open(&mut users, 1, &b, 0, &id, &message),
        Err(CryptoError::TooManySkipped { .. })
    ));
    // Content larger than the limit cannot be encoded.
    let too_big = Content::Message(Zeroizing::new(vec![0; MAX_MESSAGE_BODY_LEN + 1]));
    assert!(matches!(too_big.encode(), Err(CryptoError::PlaintextTooLarge { .. })));
    // A device list of eleven devices cannot be made.
    let eleven = (0..=MAX_DEVICES).map(|_| new_id());
    assert!(DeviceList::new(&users[0].user_id, users[0].identity.key_id(), 1, eleven).is_err());
}
