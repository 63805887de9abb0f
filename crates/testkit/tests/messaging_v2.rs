//! Messaging protocol v2 (docs/protocol.md) through the real services and the SDK, as real
//! clients use it: users with several devices (the first one opened, the others linked with the
//! code that the new device shows), Sesame fan-out in both directions, every device holding the
//! whole conversation, a device linked later reading earlier history through the archive copies,
//! removal of a device (no ciphertext for it, its next open refused), live delivery to every
//! device, notices of a contact's added device, a send interrupted on the wire and resent on the
//! next open without a key used twice, and no plaintext at rest or in the logs. Each test runs on
//! SQLite and, when CAREMESH_TEST_DATABASE_URL is set, on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use caremesh_proto::messaging::v1 as pb;
use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use caremesh_sdk::auth::{Role, Session};
use caremesh_sdk::messaging::{Content, Messenger, Opened};
use caremesh_testkit::{Backend, Caller, Service, TestMesh, TestUser, backends, eventually};
use futures::StreamExt;
use pb::list_conversation_messages_request::Target;
use sea_orm::{ConnectionTrait, Statement};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a step that involves the services may take before the test gives up.
const STEP: Duration = Duration::from_secs(30);

/// One device of a user: its messenger, the session it signed in with, and where its state is.
struct Device {
    /// For assertion messages: "jane's phone".
    label: String,
    messenger: Messenger,
    session: Session,
    dir: tempfile::TempDir,
    profile: String,
    id: String,
}

/// The user's first device: opening a fresh profile creates the account identity, the device
/// keys and the first signed device list.
async fn first_device(mesh: &TestMesh, user: &TestUser, label: &str, profile: &str) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let messenger = Messenger::open(mesh.sdk(), dir.path(), profile, &user.session)
        .await
        .unwrap_or_else(|error| panic!("{}: opening {label} failed: {error}", mesh.backend().name()));
    let id = messenger.device_id().unwrap();
    Device {
        label: label.to_owned(),
        messenger,
        session: user.session.clone(),
        dir,
        profile: profile.to_owned(),
        id,
    }
}

/// Links a new device of `user` as a person would: the new device signs in on its own, starts the
/// link (in a task of its own, as it waits for the approval) and shows a code; the user types that
/// code on `approver`, which approves the link.
async fn link_device(mesh: &TestMesh, user: &TestUser, approver: &Device, label: &str, profile: &str) -> Device {
    let name = mesh.backend().name();
    let session = mesh.login_with_totp(user).await;
    let dir = tempfile::tempdir().unwrap();
    let (shown_tx, shown_rx) = tokio::sync::oneshot::channel::<(String, String)>();
    let linking = {
        let client = mesh.sdk();
        let path = dir.path().to_owned();
        let profile = profile.to_owned();
        let session = session.clone();
        tokio::spawn(async move {
            Messenger::link(client, &path, &profile, &session, move |code, qr| {
                let _ = shown_tx.send((code.to_owned(), qr.to_owned()));
            })
            .await
        })
    };
    let (code, qr) = match tokio::time::timeout(STEP, shown_rx).await {
        Ok(Ok(shown)) => shown,
        Ok(Err(_)) => {
            // The link failed before it showed a code: say why.
            let error = linking
                .await
                .expect("link task")
                .expect_err("no code shown, yet linked");
            panic!("{name}: linking {label} failed before it showed a code: {error}");
        }
        Err(_) => panic!("{name}: {label} showed no code within {STEP:?}"),
    };
    assert_eq!(code.len(), 19, "{name}: the code reads XXXX-XXXX-XXXX-XXXX: {code}");
    assert_eq!(code.matches('-').count(), 3, "{name}: {code}");
    assert!(
        qr.starts_with("caremesh-link:") && qr.ends_with(&code),
        "{name}: the QR text carries the link and the code: {qr}"
    );
    let approved = approver
        .messenger
        .approve_link(&approver.session, &code)
        .await
        .unwrap_or_else(|error| panic!("{name}: {} could not approve {label}: {error}", approver.label));
    let messenger = tokio::time::timeout(STEP, linking)
        .await
        .unwrap_or_else(|_| panic!("{name}: {label} was not linked within {STEP:?} of the approval"))
        .expect("link task")
        .unwrap_or_else(|error| panic!("{name}: linking {label} failed after the approval: {error}"));
    let id = messenger.device_id().unwrap();
    assert_eq!(id, approved, "{name}: the approved device is the one that was linked");
    Device {
        label: label.to_owned(),
        messenger,
        session,
        dir,
        profile: profile.to_owned(),
        id,
    }
}

async fn send(from: &Device, to: &str, text: &str) -> pb::Message {
    from.messenger
        .send(&from.session, to, text.as_bytes(), None)
        .await
        .unwrap_or_else(|error| panic!("{} could not send {text:?}: {error}", from.label))
}

/// The whole conversation of `device` with `peer`, opened.
async fn conversation(device: &Device, peer: &str) -> Vec<Opened> {
    device
        .messenger
        .history(
            &device.session,
            Target::PeerUserId(peer.to_owned()),
            pb::SortOrder::OldestFirst,
        )
        .await
        .unwrap_or_else(|error| panic!("{}: the conversation does not list: {error}", device.label))
}

/// A message as the test expects every device of both users to read it.
#[derive(Clone, Debug)]
struct Sent {
    message_id: String,
    text: String,
}

impl Sent {
    fn of(message: &pb::Message, text: &str) -> Self {
        Self {
            message_id: message.message_id.clone(),
            text: text.to_owned(),
        }
    }
}

fn by_id(opened: &[Opened]) -> BTreeMap<String, &Opened> {
    opened
        .iter()
        .map(|item| (item.message.message_id.clone(), item))
        .collect()
}

/// `device`'s history with `peer` holds exactly `expected`, each opened with its text.
async fn assert_reads_all(name: &str, device: &Device, peer: &str, expected: &[Sent]) -> Vec<Opened> {
    let opened = conversation(device, peer).await;
    let found = by_id(&opened);
    for sent in expected {
        let item = found.get(&sent.message_id).unwrap_or_else(|| {
            panic!(
                "{name}: {} does not list {:?} ({}) at all",
                device.label, sent.text, sent.message_id
            )
        });
        assert_eq!(
            item.content,
            Content::Plain(sent.text.clone().into_bytes()),
            "{name}: {} reads {:?} as {:?} (protocol {}, own ciphertext: {}, archive copy: {})",
            device.label,
            sent.text,
            item.content.text(),
            item.message.protocol_version,
            item.message.device_ciphertext.is_some(),
            item.message.archive.is_some(),
        );
        assert_eq!(
            item.message.protocol_version, 2,
            "{name}: {} {:?} is a v2 message",
            device.label, sent.text
        );
    }
    assert_eq!(
        opened.len(),
        expected.len(),
        "{name}: {} lists {:?}, expected {:?}",
        device.label,
        opened.iter().map(|item| item.content.text()).collect::<Vec<_>>(),
        expected.iter().map(|sent| &sent.text).collect::<Vec<_>>(),
    );
    opened
}

/// ListConversationMessages as `device_id` of `session`'s user, straight from the API.
async fn raw_conversation(
    mesh: &TestMesh,
    session: &Session,
    peer: &str,
    device_id: &str,
) -> Result<Vec<pb::Message>, tonic::Status> {
    let mut api = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    api.list_conversation_messages(
        session
            .request(pb::ListConversationMessagesRequest {
                target: Some(Target::PeerUserId(peer.to_owned())),
                page_size: 500,
                page_token: String::new(),
                order: pb::SortOrder::OldestFirst.into(),
                device_id: device_id.to_owned(),
            })
            .unwrap(),
    )
    .await
    .map(|response| response.into_inner().messages)
}

/// The two-devices-each conversation of tests 1 and 6: jane's phone and laptop, house's desk and
/// pager, four messages in both directions from different devices, every device reading all of
/// them; then jane's tablet, linked afterwards (approved from the laptop), reads the earlier ones
/// through the archive copies and gets the next one on its own ciphertext.
struct TwoDevicesEach {
    jane: Vec<Device>,
    house: Vec<Device>,
    sent: Vec<Sent>,
}

async fn two_devices_each(mesh: &TestMesh, jane: &TestUser, house: &TestUser, tag: &str) -> TwoDevicesEach {
    let name = mesh.backend().name();
    let phone = first_device(mesh, jane, "jane's phone", "phone").await;
    let desk = first_device(mesh, house, "house's desk", "desk").await;
    let laptop = link_device(mesh, jane, &phone, "jane's laptop", "laptop").await;
    let pager = link_device(mesh, house, &desk, "house's pager", "pager").await;
    for (device, count) in [(&phone, 2), (&laptop, 2), (&desk, 2), (&pager, 2)] {
        let listed = device.messenger.devices(&device.session).await.unwrap();
        assert_eq!(listed.len(), count, "{name}: {} lists {listed:?}", device.label);
        assert!(
            listed
                .iter()
                .any(|info| info.device_id == device.id && info.this_device && !info.admin_removed),
            "{name}: {} is in its own list: {listed:?}",
            device.label
        );
    }

    let mut sent = Vec::new();
    for (from, to, text) in [
        (
            &phone,
            &house.user_id,
            format!("m1 from jane's phone: chest pain {tag}"),
        ),
        (
            &pager,
            &jane.user_id,
            format!("m2 from house's pager: since when? {tag}"),
        ),
        (
            &laptop,
            &house.user_id,
            format!("m3 from jane's laptop: since tuesday {tag}"),
        ),
        (
            &desk,
            &jane.user_id,
            format!("m4 from house's desk: come in tomorrow at 9 {tag}"),
        ),
    ] {
        let message = send(from, to, &text).await;
        assert_eq!(message.protocol_version, 2, "{name}: {} sends protocol v2", from.label);
        assert_eq!(
            message.sender_device_id, from.id,
            "{name}: the sending device of {text:?} is recorded"
        );
        sent.push(Sent::of(&message, &text));
    }

    // Every device reads every message: its own sent ones (kept locally), the ones of the user's
    // other device and the peer's, each on its own ciphertext.
    for (device, peer) in [
        (&phone, &house.user_id),
        (&laptop, &house.user_id),
        (&desk, &jane.user_id),
        (&pager, &jane.user_id),
    ] {
        let opened = assert_reads_all(name, device, peer, &sent).await;
        for item in &opened {
            let own_send = item.message.sender_device_id == device.id;
            let for_device = item
                .message
                .device_ciphertext
                .as_ref()
                .map(|ciphertext| ciphertext.recipient_device_id.clone());
            if own_send {
                assert_eq!(
                    for_device, None,
                    "{name}: {} has no ciphertext of what it sent itself",
                    device.label
                );
            } else {
                assert_eq!(
                    for_device.as_deref(),
                    Some(device.id.as_str()),
                    "{name}: {} reads {:?} on its own ciphertext",
                    device.label,
                    item.content.text()
                );
            }
        }
    }
    // Read twice: opened messages stay readable (a ratchet message key works once).
    assert_reads_all(name, &laptop, &house.user_id, &sent).await;

    // A device linked later reads the earlier history from the archive copies.
    let tablet = link_device(mesh, jane, &laptop, "jane's tablet", "tablet").await;
    let history = assert_reads_all(name, &tablet, &house.user_id, &sent).await;
    for item in &history {
        assert!(
            item.message.device_ciphertext.is_none(),
            "{name}: the tablet has no ciphertext of {:?}, sent before it was linked",
            item.content.text()
        );
        assert!(
            item.message.archive.is_some(),
            "{name}: {:?} comes with jane's archive copy",
            item.content.text()
        );
    }
    // And the next message on its own ciphertext, as every other device.
    let text = format!("m5 from house's desk: bring your results {tag}");
    let message = send(&desk, &jane.user_id, &text).await;
    sent.push(Sent::of(&message, &text));
    let history = assert_reads_all(name, &tablet, &house.user_id, &sent).await;
    let newest = by_id(&history)[&message.message_id].message.clone();
    assert_eq!(
        newest
            .device_ciphertext
            .as_ref()
            .map(|ciphertext| ciphertext.recipient_device_id.as_str()),
        Some(tablet.id.as_str()),
        "{name}: the tablet gets its own ciphertext once it is in jane's list"
    );
    for device in [&phone, &laptop] {
        assert_reads_all(name, device, &house.user_id, &sent).await;
    }
    for device in [&desk, &pager] {
        assert_reads_all(name, device, &jane.user_id, &sent).await;
    }
    TwoDevicesEach {
        jane: vec![phone, laptop, tablet],
        house: vec![desk, pager],
        sent,
    }
}

/// 1. Two devices each, messages both ways from different devices: every device of both users
/// holds the whole conversation; a third device linked later reads it from the archive.
#[tokio::test]
async fn every_device_of_both_users_holds_the_whole_conversation() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let run = two_devices_each(&mesh, &jane, &house, "").await;
        assert_eq!(run.jane.len(), 3);
        assert_eq!(run.house.len(), 2);
        assert_eq!(run.sent.len(), 5);
        drop(run);
        mesh.shutdown().await;
    }
}

/// 2. A removed device gets no ciphertext of what is sent after its removal and cannot open its
/// profile again; the user's remaining devices read on.
#[tokio::test]
async fn a_removed_device_reads_nothing_sent_after_its_removal() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let phone = first_device(&mesh, &jane, "jane's phone", "phone").await;
        let desk = first_device(&mesh, &house, "house's desk", "desk").await;
        let laptop = link_device(&mesh, &jane, &phone, "jane's laptop", "laptop").await;
        let tablet = link_device(&mesh, &jane, &phone, "jane's tablet", "tablet").await;

        // Sessions to all three of jane's devices exist before the removal.
        let text = "before the removal";
        let before = vec![Sent::of(&send(&desk, &jane.user_id, text).await, text)];
        for device in [&phone, &laptop, &tablet] {
            assert_reads_all(name, device, &house.user_id, &before).await;
        }
        desk.messenger.take_device_notices().unwrap();

        phone
            .messenger
            .remove_device(&phone.session, &laptop.id)
            .await
            .unwrap_or_else(|error| panic!("{name}: removing the laptop failed: {error}"));
        let listed: Vec<String> = phone
            .messenger
            .devices(&phone.session)
            .await
            .unwrap()
            .into_iter()
            .map(|info| info.device_id)
            .collect();
        assert!(
            !listed.contains(&laptop.id),
            "{name}: the laptop left the list: {listed:?}"
        );
        assert_eq!(listed.len(), 2, "{name}: {listed:?}");
        let refused = phone
            .messenger
            .remove_device(&phone.session, &phone.id)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("cannot remove itself"),
            "{name}: {refused}"
        );

        let text = "after the removal";
        let after_message = send(&desk, &jane.user_id, text).await;
        let after = Sent::of(&after_message, text);
        let all = vec![before[0].clone(), after.clone()];
        // The remover first: it holds the new history key, so jane's archive copy is under it.
        assert_reads_all(name, &phone, &house.user_id, &all).await;
        assert_reads_all(name, &tablet, &house.user_id, &all).await;
        let notices = desk.messenger.take_device_notices().unwrap();
        assert!(
            notices.iter().any(|notice| notice.contains(&jane.user_id)
                && notice.contains("removed")
                && notice.contains(&laptop.id)),
            "{name}: house is told that jane removed the laptop: {notices:?}"
        );

        // The removed device is no longer one of jane's devices: no ciphertext is asked for it
        // (messaging-svc refuses it as a device, docs/protocol.md §10), not even by its own app.
        let refused = raw_conversation(&mesh, &laptop.session, &house.user_id, &laptop.id)
            .await
            .expect_err("the removed laptop listed the conversation as a device");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}: {refused:?}");
        let refused = laptop
            .messenger
            .history(
                &laptop.session,
                Target::PeerUserId(house.user_id.clone()),
                pb::SortOrder::OldestFirst,
            )
            .await
            .expect_err("the removed laptop listed the conversation");
        assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{name}: {refused}");
        // Still signed in as jane, it may fetch jane's archive copies; the one of the message sent
        // after the removal is under the new history key, which it does not have.
        assert_removed_device_cannot_open(name, &mesh, &laptop, &house.user_id, &before[0], &after).await;

        // Its next start is refused, saying why.
        let Device {
            messenger,
            session,
            dir,
            profile,
            ..
        } = laptop;
        drop(messenger);
        let refused = Messenger::open(mesh.sdk(), dir.path(), &profile, &session)
            .await
            .expect_err("the removed laptop opened again");
        assert!(
            refused.to_string().contains("removed"),
            "{name}: the refusal says the device was removed: {refused}"
        );
        // The remaining devices go on in both directions.
        let text = "the remaining devices still send";
        let reply = Sent::of(&send(&tablet, &house.user_id, text).await, text);
        let all = vec![before[0].clone(), after, reply];
        assert_reads_all(name, &desk, &jane.user_id, &all).await;
        assert_reads_all(name, &phone, &house.user_id, &all).await;
        mesh.shutdown().await;
    }
}

/// `removed` (a device removed after it read `before`) fetches jane's archive copies as the user
/// it is still signed in as: the copy of `after` is under a newer history key than the one of
/// `before`, and does not open on it.
async fn assert_removed_device_cannot_open(
    name: &str,
    mesh: &TestMesh,
    removed: &Device,
    peer: &str,
    before: &Sent,
    after: &Sent,
) {
    let messages = raw_conversation(mesh, &removed.session, peer, "").await.unwrap();
    let find = |sent: &Sent| {
        messages
            .iter()
            .find(|message| message.message_id == sent.message_id)
            .unwrap_or_else(|| panic!("{name}: the conversation lists {:?}", sent.text))
            .clone()
    };
    let (old, new) = (find(before), find(after));
    assert!(
        new.device_ciphertext.is_none(),
        "{name}: no device ciphertext without a device"
    );
    let old_key = old.archive.as_ref().map(|copy| copy.history_key_id.clone());
    let new_key = new.archive.as_ref().map(|copy| copy.history_key_id.clone());
    assert!(
        new_key.is_some(),
        "{name}: jane's archive copy of {:?} is stored",
        after.text
    );
    assert_ne!(
        old_key, new_key,
        "{name}: jane's archive copy of {:?} is under the history key drawn at the removal",
        after.text
    );
    let opened = removed.messenger.open_message(&removed.session, &new).await;
    assert!(
        !matches!(
            opened,
            Ok(Opened {
                content: Content::Plain(_),
                ..
            })
        ),
        "{name}: {} read {:?}, sent after its removal, from jane's archive copy",
        removed.label,
        after.text
    );
}

async fn next_item(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> pb::SubscribeResponse {
    tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("an item within 15 s")
        .expect("stream open")
        .expect("item")
}

/// 3. Live delivery: both of jane's devices watching get house's new message, each its own copy.
#[tokio::test]
async fn every_watching_device_gets_its_own_copy_live() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let phone = first_device(&mesh, &jane, "jane's phone", "phone").await;
        let desk = first_device(&mesh, &house, "house's desk", "desk").await;
        let laptop = link_device(&mesh, &jane, &phone, "jane's laptop", "laptop").await;

        let mut streams = Vec::new();
        for device in [&phone, &laptop] {
            let stream = device
                .messenger
                .watch(&device.session, "")
                .await
                .unwrap_or_else(|error| panic!("{name}: {} cannot watch: {error}", device.label));
            streams.push((device, stream));
        }
        let text = "live: your results are in";
        let sent = send(&desk, &jane.user_id, text).await;
        let mut ciphertexts = Vec::new();
        for (device, stream) in &mut streams {
            let item = loop {
                let item = next_item(stream).await;
                if item
                    .message
                    .as_ref()
                    .is_some_and(|message| message.message_id == sent.message_id)
                {
                    break item;
                }
            };
            assert!(!item.cursor.is_empty(), "{name}: every item has a cursor");
            let message = item.message.unwrap();
            let ciphertext = message
                .device_ciphertext
                .clone()
                .unwrap_or_else(|| panic!("{name}: {} got the message live without its ciphertext", device.label));
            assert_eq!(
                ciphertext.recipient_device_id, device.id,
                "{name}: {} gets the ciphertext for itself",
                device.label
            );
            assert_eq!(ciphertext.sender_device_id, desk.id, "{name}");
            let opened = device
                .messenger
                .open_message(&device.session, &message)
                .await
                .unwrap_or_else(|error| panic!("{name}: {} cannot open it: {error}", device.label));
            assert_eq!(
                opened.content,
                Content::Plain(text.as_bytes().to_vec()),
                "{name}: {} reads it",
                device.label
            );
            ciphertexts.push(ciphertext.ciphertext);
        }
        assert_ne!(
            ciphertexts[0], ciphertexts[1],
            "{name}: each device has a ciphertext of its own"
        );
        drop(streams);
        mesh.shutdown().await;
    }
}

/// 4. After jane links a new device, house's next send tells house about it.
#[tokio::test]
async fn a_contacts_new_device_is_noticed_on_the_next_send() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let phone = first_device(&mesh, &jane, "jane's phone", "phone").await;
        let desk = first_device(&mesh, &house, "house's desk", "desk").await;

        send(&desk, &jane.user_id, "first contact").await;
        let notices = desk.messenger.take_device_notices().unwrap();
        assert!(
            notices.is_empty(),
            "{name}: a first sight of jane's devices is no change: {notices:?}"
        );

        let laptop = link_device(&mesh, &jane, &phone, "jane's laptop", "laptop").await;
        assert!(
            desk.messenger.take_device_notices().unwrap().is_empty(),
            "{name}: nothing is noticed before house talks to jane again"
        );
        let text = "second contact";
        let second = Sent::of(&send(&desk, &jane.user_id, text).await, text);
        let notices = desk.messenger.take_device_notices().unwrap();
        assert_eq!(notices.len(), 1, "{name}: one change: {notices:?}");
        assert!(
            notices[0].contains(&jane.user_id) && notices[0].contains("added") && notices[0].contains(&laptop.id),
            "{name}: the notice names jane and her added device {}: {notices:?}",
            laptop.id
        );
        assert!(
            desk.messenger.take_device_notices().unwrap().is_empty(),
            "{name}: a notice is taken once"
        );
        send(&desk, &jane.user_id, "third contact").await;
        assert!(
            desk.messenger.take_device_notices().unwrap().is_empty(),
            "{name}: an unchanged list makes no notice"
        );
        // The new device got the message that made the notice.
        let opened = conversation(&laptop, &house.user_id).await;
        let item = by_id(&opened).get(&second.message_id).map(|item| item.content.clone());
        assert_eq!(item, Some(Content::Plain(text.as_bytes().to_vec())), "{name}");
        mesh.shutdown().await;
    }
}

/// How a [`Relay`] interrupts the send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// The request never reaches the server: the connection closes in the middle of it.
    Request,
    /// The server gets the whole request (and stores the message), the answer never comes back.
    Answer,
}

/// A TCP relay between an SDK client and messaging-svc (TLS passes through it untouched). Once
/// armed, it counts the bytes the client sends; a send's request (with a large body) crosses
/// `threshold`, the small key directory calls before it do not. Then it cuts as told; once down,
/// every connection is closed and new ones are closed at once, as if the service had gone away.
struct Relay {
    addr: SocketAddr,
    armed: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    holding: Arc<AtomicBool>,
    crossed: Arc<tokio::sync::Notify>,
    cut: Cut,
    threshold: usize,
    down: CancellationToken,
}

impl Relay {
    async fn start(upstream: SocketAddr, cut: Cut, threshold: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Self {
            addr: listener.local_addr().unwrap(),
            armed: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicUsize::new(0)),
            holding: Arc::new(AtomicBool::new(false)),
            crossed: Arc::new(tokio::sync::Notify::new()),
            cut,
            threshold,
            down: CancellationToken::new(),
        };
        let shared = relay.shared();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if shared.down.is_cancelled() {
                    drop(client);
                    continue;
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        shared.pipe(client, server).await;
                    }
                });
            }
        });
        relay
    }

    fn shared(&self) -> Shared {
        Shared {
            armed: Arc::clone(&self.armed),
            sent: Arc::clone(&self.sent),
            holding: Arc::clone(&self.holding),
            crossed: Arc::clone(&self.crossed),
            cut: self.cut,
            threshold: self.threshold,
            down: self.down.clone(),
        }
    }

    /// Counts from now on.
    fn arm(&self) {
        self.sent.store(0, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones.
    fn go_down(&self) {
        self.down.cancel();
    }
}

#[derive(Clone)]
struct Shared {
    armed: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    holding: Arc<AtomicBool>,
    crossed: Arc<tokio::sync::Notify>,
    cut: Cut,
    threshold: usize,
    down: CancellationToken,
}

impl Shared {
    async fn pipe(&self, client: TcpStream, server: TcpStream) {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let upward = async {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let read = tokio::select! {
                    () = self.down.cancelled() => return,
                    read = client_read.read(&mut buffer) => read,
                };
                let Ok(read) = read else { return };
                if read == 0 {
                    let _ = server_write.shutdown().await;
                    return;
                }
                if self.armed.load(Ordering::SeqCst)
                    && self.sent.fetch_add(read, Ordering::SeqCst) + read > self.threshold
                    && !self.holding.swap(true, Ordering::SeqCst)
                {
                    self.crossed.notify_one();
                    if self.cut == Cut::Request {
                        // The chunk that crosses is not forwarded: the request stays incomplete.
                        self.down.cancel();
                        return;
                    }
                }
                if server_write.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        };
        let downward = async {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let read = tokio::select! {
                    () = self.down.cancelled() => return,
                    read = server_read.read(&mut buffer) => read,
                };
                let Ok(read) = read else { return };
                if read == 0 {
                    let _ = client_write.shutdown().await;
                    return;
                }
                if self.holding.load(Ordering::SeqCst) {
                    // The answer (and everything after it) is held back until the relay goes down.
                    self.down.cancelled().await;
                    return;
                }
                if client_write.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        };
        tokio::join!(upward, downward);
    }
}

/// The messages of house's inbox on `desk`, straight from the API (not opened).
async fn raw_inbox(mesh: &TestMesh, desk: &Device) -> Vec<pb::Message> {
    let mut api = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    api.list_inbox(
        desk.session
            .request(pb::ListInboxRequest {
                page_size: 500,
                order: pb::SortOrder::OldestFirst.into(),
                device_id: desk.id.clone(),
                ..Default::default()
            })
            .unwrap(),
    )
    .await
    .unwrap()
    .into_inner()
    .messages
}

/// The one message of `inbox` that is not in `known`.
fn newest(inbox: &[pb::Message], known: &[Sent]) -> pb::Message {
    let mut new = inbox
        .iter()
        .filter(|message| known.iter().all(|sent| sent.message_id != message.message_id));
    let found = new.next().expect("a new message").clone();
    assert!(new.next().is_none(), "one new message");
    found
}

/// A body large enough that the send's request crosses the relay's threshold on its own.
fn large(text: &str) -> String {
    format!("{text} {}", "x".repeat(64 * 1024))
}

/// Reopens `device`'s profile (a restart), through `client`.
async fn reopen(device: Device, client: caremesh_sdk::Client) -> Device {
    let Device {
        label,
        messenger,
        session,
        dir,
        profile,
        id,
    } = device;
    drop(messenger);
    let messenger = Messenger::open(client, dir.path(), &profile, &session)
        .await
        .unwrap_or_else(|error| panic!("{label} does not open again: {error}"));
    assert_eq!(messenger.device_id().unwrap(), id, "{label} is the same device");
    Device {
        label,
        messenger,
        session,
        dir,
        profile,
        id,
    }
}

/// 5. A send saved but interrupted is resent, with the very same ciphertexts, when the device
/// starts again: when messaging-svc was stopped (the send is sealed from the remembered device
/// lists, saved, and fails), when the request was lost on the wire (the message then arrives with
/// the restart), and when only the answer was lost (the resend is a duplicate, stored once). No
/// message key is used twice.
#[tokio::test]
async fn an_interrupted_send_is_resent_on_the_next_open_without_reusing_a_key() {
    for backend in backends() {
        let name = backend.name();
        let mut mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let desk = first_device(&mesh, &house, "house's desk", "desk").await;
        let mut phone = first_device(&mesh, &jane, "jane's phone", "phone").await;
        let mut expected = Vec::new();
        let text = "hello before anything goes wrong";
        expected.push(Sent::of(&send(&phone, &house.user_id, text).await, text));

        // messaging-svc stopped: the send is sealed from the remembered device lists and saved,
        // then fails; the device "crashes" right after, and its next open sends it.
        mesh.stop_service(Service::Messaging).await;
        let while_stopped = "sent while messaging-svc was stopped";
        let refused = phone
            .messenger
            .send(&phone.session, &house.user_id, while_stopped.as_bytes(), None)
            .await
            .expect_err("a send while messaging-svc is stopped");
        assert_eq!(refused.code(), Some(tonic::Code::Unavailable), "{name}: {refused}");
        mesh.start_service(Service::Messaging).await;
        assert_eq!(
            raw_inbox(&mesh, &desk).await.len(),
            1,
            "{name}: nothing arrived while stopped"
        );
        phone = reopen(phone, mesh.sdk()).await;
        let inbox = raw_inbox(&mesh, &desk).await;
        assert_eq!(inbox.len(), 2, "{name}: the saved send went out with the next open");
        expected.push(Sent::of(&newest(&inbox, &expected), while_stopped));

        // The request lost on the way.
        let relay = Relay::start(mesh.grpc_addr(Service::Messaging), Cut::Request, 24 * 1024).await;
        phone = reopen(phone, mesh.sdk_via(Service::Messaging, relay.addr)).await;
        relay.arm();
        let lost = large("the request of this one was lost");
        let failed = phone
            .messenger
            .send(&phone.session, &house.user_id, lost.as_bytes(), None)
            .await
            .expect_err("the relay cut the request");
        eprintln!("{name}: the send with its request cut failed with: {failed}");
        assert!(relay.holding.load(Ordering::SeqCst), "{name}: the cut was in the send");
        assert_eq!(
            raw_inbox(&mesh, &desk).await.len(),
            2,
            "{name}: the cut request did not reach the server"
        );
        // The device "crashes" right after the failure and starts again (without the relay).
        phone = reopen(phone, mesh.sdk()).await;
        let inbox = raw_inbox(&mesh, &desk).await;
        assert_eq!(inbox.len(), 3, "{name}: the saved send went out with the restart");
        let resent = newest(&inbox, &expected);
        expected.push(Sent::of(&resent, &lost));

        // The answer lost on the way back: the server has the message, the device does not know.
        let relay = Relay::start(mesh.grpc_addr(Service::Messaging), Cut::Answer, 24 * 1024).await;
        phone = reopen(phone, mesh.sdk_via(Service::Messaging, relay.addr)).await;
        relay.arm();
        let unanswered = large("the answer to this one was lost");
        let (failed, stored) = tokio::join!(
            phone
                .messenger
                .send(&phone.session, &house.user_id, unanswered.as_bytes(), None),
            async {
                let (mesh, desk, expected) = (&mesh, &desk, &expected);
                let stored = eventually(STEP, move || async move {
                    let inbox = raw_inbox(mesh, desk).await;
                    (inbox.len() == 4).then(|| newest(&inbox, expected))
                })
                .await;
                relay.go_down();
                stored
            }
        );
        let stored = stored.unwrap_or_else(|| panic!("{name}: the server did not store the unanswered send"));
        let failed = failed.expect_err("the relay held the answer back");
        eprintln!("{name}: the send without its answer failed with: {failed}");
        phone = reopen(phone, mesh.sdk()).await;
        let inbox = raw_inbox(&mesh, &desk).await;
        assert_eq!(
            inbox
                .iter()
                .filter(|message| message.message_id == stored.message_id)
                .count(),
            1,
            "{name}: the resend is a duplicate, stored once"
        );
        assert_eq!(inbox.len(), 4, "{name}");
        expected.push(Sent::of(&stored, &unanswered));

        // The ratchet goes on after the saved sends.
        let text = "and one more after both restarts";
        expected.push(Sent::of(&send(&phone, &house.user_id, text).await, text));
        let opened = assert_reads_all(name, &desk, &jane.user_id, &expected).await;
        assert_reads_all(name, &phone, &house.user_id, &expected).await;
        let mut positions = HashSet::new();
        for item in &opened {
            let ciphertext = item
                .message
                .device_ciphertext
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: the desk has its ciphertext of {:?}", item.content.text()));
            assert!(
                positions.insert((
                    ciphertext.sender_device_id.clone(),
                    ciphertext.ratchet_public_key.clone(),
                    ciphertext.message_number
                )),
                "{name}: a message key was used twice: {:?} at chain position {}",
                item.content.text(),
                ciphertext.message_number
            );
        }
        mesh.shutdown().await;
    }
}

/// Sends every log line of this test process (debug level and up) to a file, for the scan below.
fn log_to_file() -> Option<PathBuf> {
    let path = std::env::temp_dir().join(format!("caremesh-messaging-v2-test-{}.log", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init()
        .ok()
        .map(|()| path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Every row of every table of the mesh's PostgreSQL schemas, as text.
async fn postgres_rows(mesh: &TestMesh) -> Vec<String> {
    let mut rows = Vec::new();
    for service in [
        Service::Auth,
        Service::Messaging,
        Service::AbeAuthority,
        Service::Records,
        Service::Audit,
    ] {
        let schema = mesh.config(service).database.schema.clone();
        let db = mesh.database(service).await;
        let backend = db.get_database_backend();
        let tables = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = $1",
                [schema.clone().into()],
            ))
            .await
            .unwrap();
        for table in tables {
            let table: String = table.try_get("", "name").unwrap();
            let found = db
                .query_all_raw(Statement::from_string(
                    backend,
                    format!("SELECT CAST(t AS text) AS row FROM \"{schema}\".\"{table}\" AS t"),
                ))
                .await
                .unwrap();
            for row in found {
                rows.push(row.try_get::<String>("", "row").unwrap());
            }
        }
    }
    rows
}

/// 6. After the two-devices-each run (linking, fan-out, archive copies) with a marker in every
/// message, the marker is nowhere at rest (the mesh's files, its databases, the devices' sealed
/// state) and in no log line.
#[tokio::test]
async fn no_plaintext_at_rest_or_in_logs_after_a_multi_device_run() {
    let log_file = log_to_file();
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let marker = format!("MARKER-{}", uuid::Uuid::now_v7().simple());
        let run = two_devices_each(&mesh, &jane, &house, &marker).await;
        assert!(run.sent.iter().all(|sent| sent.text.contains(&marker)));
        let needles = [marker.as_bytes().to_vec(), hex(marker.as_bytes()).into_bytes()];

        let mut files = caremesh_testkit::files_under(&mesh.dir());
        for device in run.jane.iter().chain(&run.house) {
            device.messenger.flush().unwrap();
            files.extend(caremesh_testkit::files_under(device.dir.path()));
        }
        if let Some(log_file) = &log_file {
            assert!(std::fs::metadata(log_file).unwrap().len() > 0, "logs were captured");
            files.push(log_file.clone());
        } else {
            eprintln!("note: a tracing subscriber was already installed; logs not scanned");
        }
        for file in &files {
            let bytes = std::fs::read(file).unwrap_or_default();
            for needle in &needles {
                assert!(
                    !contains(&bytes, needle),
                    "{name}: {} contains message text",
                    file.display()
                );
            }
        }
        assert!(files.len() > 10, "{name}: {} files scanned", files.len());
        if let Backend::Postgres(_) = &backend {
            let rows = postgres_rows(&mesh).await;
            assert!(!rows.is_empty(), "{name}: rows were scanned");
            for row in &rows {
                for needle in &needles {
                    assert!(
                        !contains(row.as_bytes(), needle),
                        "{name}: a database row contains message text: {row:.200}"
                    );
                }
            }
        }
        drop(run);
        mesh.shutdown().await;
    }
    if let Some(log_file) = &log_file {
        let _ = std::fs::remove_file(log_file);
    }
}

/// A send that the server refuses for good (here: a lifespan out of range, and a patient writing
/// to a patient) is not sent again by the next open, and does not stop the device from opening.
#[tokio::test]
async fn a_send_the_server_refuses_does_not_block_the_next_open() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let other = mesh.patient().await;
        let desk = first_device(&mesh, &house, "house's desk", "desk").await;
        let _other = first_device(&mesh, &other, "another patient's phone", "phone").await;
        let mut phone = first_device(&mesh, &jane, "jane's phone", "phone").await;
        let refused = phone
            .messenger
            .send(
                &phone.session,
                &house.user_id,
                b"too short-lived",
                Some(Duration::from_secs(5)),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument), "{name}: {refused}");
        let refused = phone
            .messenger
            .send(&phone.session, &other.user_id, b"patient to patient", None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{name}: {refused}");
        phone = reopen(phone, mesh.sdk()).await;
        phone = reopen(phone, mesh.sdk()).await;
        let text = "still works";
        let sent = vec![Sent::of(&send(&phone, &house.user_id, text).await, text)];
        assert_reads_all(name, &desk, &jane.user_id, &sent).await;
        mesh.shutdown().await;
    }
}

/// After a removal, a remaining device that reads a contact's new message before it has opened
/// the new history key (sent to it by the remover) must not store the user's archive copy under
/// the old key, which the removed device holds.
#[tokio::test]
async fn a_remaining_device_does_not_archive_under_the_removed_devices_history_key() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let phone = first_device(&mesh, &jane, "jane's phone", "phone").await;
        let desk = first_device(&mesh, &house, "house's desk", "desk").await;
        let laptop = link_device(&mesh, &jane, &phone, "jane's laptop", "laptop").await;
        let tablet = link_device(&mesh, &jane, &phone, "jane's tablet", "tablet").await;
        let text = "before the removal";
        let before = Sent::of(&send(&desk, &jane.user_id, text).await, text);
        for device in [&phone, &laptop, &tablet] {
            assert_reads_all(name, device, &house.user_id, std::slice::from_ref(&before)).await;
        }
        phone.messenger.remove_device(&phone.session, &laptop.id).await.unwrap();
        let text = "after the removal";
        let after = Sent::of(&send(&desk, &jane.user_id, text).await, text);
        // The tablet is the first of jane's devices to read it.
        assert_reads_all(name, &tablet, &house.user_id, &[before.clone(), after.clone()]).await;
        assert_removed_device_cannot_open(name, &mesh, &laptop, &house.user_id, &before, &after).await;
        mesh.shutdown().await;
    }
}

/// An admin removes one of jane's devices: senders leave it out at once (the server reports it
/// removed), and the next of jane's devices to start signs a list without it and rotates the
/// history key, so the removed device can neither open its own next open nor new archive copies.
#[tokio::test]
async fn an_admin_removal_is_completed_by_the_users_next_device() {
    use caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient;
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let jane = mesh.patient().await;
        let house = mesh.staff(Role::Doctor, &[]).await;
        let phone = first_device(&mesh, &jane, "jane's phone", "phone").await;
        let desk = first_device(&mesh, &house, "house's desk", "desk").await;
        let laptop = link_device(&mesh, &jane, &phone, "jane's laptop", "laptop").await;
        let admin = mesh.admin().await;
        let mut keys = KeyDirectoryServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
        keys.remove_device(
            admin
                .session
                .request(pb::RemoveDeviceRequest {
                    user_id: jane.user_id.clone(),
                    device_id: laptop.id.clone(),
                })
                .unwrap(),
        )
        .await
        .unwrap();
        let before = keys
            .get_device_list(
                jane.session
                    .request(pb::GetDeviceListRequest {
                        user_id: jane.user_id.clone(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner();
        let version = before.device_list.as_ref().unwrap().version;
        assert_eq!(before.admin_removed_device_ids, vec![laptop.id.clone()], "{name}");

        // The phone starts again: it drops the laptop from the signed list and rotates the key.
        let phone = reopen(phone, mesh.sdk()).await;
        let after = keys
            .get_device_list(
                jane.session
                    .request(pb::GetDeviceListRequest {
                        user_id: jane.user_id.clone(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner();
        let list = after.device_list.unwrap();
        assert_eq!(list.version, version + 1, "{name}: a new signed list");
        assert_eq!(list.device_ids, vec![phone.id.clone()], "{name}: without the laptop");
        assert_ne!(
            list.history_key_id,
            before.device_list.unwrap().history_key_id,
            "{name}: the history key rotated"
        );
        assert!(after.admin_removed_device_ids.is_empty(), "{name}");

        // A new message reaches the phone only; the laptop cannot start any more.
        let text = "after the admin removed the laptop";
        let sent = vec![Sent::of(&send(&desk, &jane.user_id, text).await, text)];
        assert_reads_all(name, &phone, &house.user_id, &sent).await;
        let refused = Messenger::open(mesh.sdk(), laptop.dir.path(), &laptop.profile, &laptop.session)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("removed"), "{name}: {refused}");
        mesh.shutdown().await;
    }
}
