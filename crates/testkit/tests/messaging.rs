//! messaging-svc through the real services and the SDK: end-to-end encrypted exchange and history,
//! refusals, no plaintext at rest, tampering, one-time prekeys under concurrency, resumable live
//! delivery (also across two replicas on PostgreSQL), recall, lifespan and identity changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::time::Duration;

use caremesh_proto::messaging::v1 as pb;
use caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient;
use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use caremesh_sdk::auth::Role;
use caremesh_sdk::messaging::{Content, Messenger};
use caremesh_testkit::{Backend, Caller, Service, TestMesh, TestUser, backends, eventually};
use futures::StreamExt;
use pb::list_conversation_messages_request::Target;
use sea_orm::{ConnectionTrait, Statement};

async fn messenger(mesh: &TestMesh, user: &TestUser) -> (Messenger, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let messenger = Messenger::open(mesh.sdk(), dir.path(), "default", &user.session)
        .await
        .unwrap();
    (messenger, dir)
}

fn texts(opened: &[caremesh_sdk::messaging::Opened]) -> Vec<String> {
    opened.iter().map(|item| item.content.text()).collect()
}

async fn raw_inbox(mesh: &TestMesh, user: &TestUser, device_id: &str) -> Vec<pb::Message> {
    let mut client = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    client
        .list_inbox(
            user.session
                .request(pb::ListInboxRequest {
                    page_size: 100,
                    order: pb::SortOrder::OldestFirst.into(),
                    device_id: device_id.to_owned(),
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
        .messages
}

/// Sends every log line of this test process (debug level and up) to a file, for the scan below.
fn log_to_file() -> Option<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("caremesh-messaging-test-{}.log", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init()
        .ok()
        .map(|()| path)
}

#[tokio::test]
async fn patient_and_doctor_exchange_and_read_history_others_cannot() {
    let log_file = log_to_file();
    let mesh = TestMesh::start().await;
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let other = mesh.staff(Role::Doctor, &["dept:oncology"]).await;
    let (p, _pd) = messenger(&mesh, &patient).await;
    let (d, _dd) = messenger(&mesh, &doctor).await;
    let (o, _od) = messenger(&mesh, &other).await;

    let marker = format!("MARKER-{}", uuid::Uuid::now_v7().simple());
    p.send(
        &patient.session,
        &doctor.user_id,
        format!("chest pain {marker}").as_bytes(),
        None,
    )
    .await
    .unwrap();
    p.send(&patient.session, &doctor.user_id, b"since tuesday", None)
        .await
        .unwrap();
    let reply = d
        .send(&doctor.session, &patient.user_id, b"come in tomorrow at 9", None)
        .await
        .unwrap();

    let expected = vec![
        format!("chest pain {marker}"),
        "since tuesday".to_owned(),
        "come in tomorrow at 9".to_owned(),
    ];
    let doctor_view = d
        .history(
            &doctor.session,
            Target::PeerUserId(patient.user_id.clone()),
            pb::SortOrder::OldestFirst,
        )
        .await
        .unwrap();
    assert_eq!(texts(&doctor_view), expected);
    let patient_view = p
        .history(
            &patient.session,
            Target::PeerUserId(doctor.user_id.clone()),
            pb::SortOrder::OldestFirst,
        )
        .await
        .unwrap();
    assert_eq!(texts(&patient_view), expected);
    // Read twice: opened messages stay readable (one-time prekeys are spent after the first open).
    let again = d
        .history(
            &doctor.session,
            Target::PeerUserId(patient.user_id.clone()),
            pb::SortOrder::NewestFirst,
        )
        .await
        .unwrap();
    assert_eq!(texts(&again), expected.iter().rev().cloned().collect::<Vec<_>>());

    // Pagination.
    let (first, token) = d
        .inbox(
            &doctor.session,
            pb::ListInboxRequest {
                page_size: 1,
                order: pb::SortOrder::OldestFirst.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(texts(&first), vec![format!("chest pain {marker}")]);
    let (second, token) = d
        .inbox(
            &doctor.session,
            pb::ListInboxRequest {
                page_size: 1,
                page_token: token,
                order: pb::SortOrder::OldestFirst.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(texts(&second), vec!["since tuesday".to_owned()]);
    assert!(token.is_empty(), "two messages in the inbox, two pages");
    let conversations = d.conversations(&doctor.session).await.unwrap();
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0].peer_user_id, patient.user_id);
    assert_eq!(conversations[0].unread_count, 2);

    // A third user: the server refuses, and the raw envelope does not open on their device.
    let conversation_id = doctor_view[0].message.conversation_id.clone();
    let refused = o
        .history(
            &other.session,
            Target::ConversationId(conversation_id),
            pb::SortOrder::OldestFirst,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{refused}");
    let mut client = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    let denied = client
        .get_message(
            other
                .session
                .request(pb::GetMessageRequest {
                    message_id: reply.message_id.clone(),
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let mut stolen = doctor_view[0].message.clone();
    assert!(stolen.device_ciphertext.is_some() || stolen.archive.is_some());
    stolen.recipient_user_id = other.user_id.clone();
    assert!(o.open_message(&other.session, &stolen).await.is_err());
    stolen.recipient_user_id = doctor.user_id.clone();
    assert!(o.open_message(&other.session, &stolen).await.is_err());

    // Patient to patient is refused.
    let patient2 = mesh.patient().await;
    let (_p2, _p2d) = messenger(&mesh, &patient2).await;
    let refused = p
        .send(&patient.session, &patient2.user_id, b"hello", None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{refused}");

    // Receipts move forward only.
    let ids: Vec<String> = doctor_view
        .iter()
        .filter(|item| item.message.recipient_user_id == doctor.user_id)
        .map(|item| item.message.message_id.clone())
        .collect();
    assert_eq!(d.receipts(&doctor.session, ids.clone(), true).await.unwrap(), 2);
    assert_eq!(d.receipts(&doctor.session, ids.clone(), false).await.unwrap(), 0);
    let conversations = d.conversations(&doctor.session).await.unwrap();
    assert_eq!(conversations[0].unread_count, 0);

    // Audit: sends and reads are recorded, with metadata only.
    let log = mesh.audit_log().await;
    let found = eventually(Duration::from_secs(10), || {
        let log = log.clone();
        async move {
            let events = log.events().await.ok()?;
            let sends = events.iter().filter(|event| event.operation == "SendMessage").count();
            let reads = events
                .iter()
                .filter(|event| event.operation == "ListConversationMessages")
                .count();
            (sends >= 3 && reads >= 3).then_some(events)
        }
    })
    .await
    .expect("send and read events reach the audit log");
    assert!(found.iter().all(|event| !format!("{event:?}").contains(&marker)));

    // No plaintext at rest or in logs: the marker is in no file of the mesh (databases, WAL)
    // and in no log line of this process.
    let mut files = caremesh_testkit::files_under(&mesh.dir());
    if let Some(log_file) = &log_file {
        assert!(std::fs::metadata(log_file).unwrap().len() > 0, "logs were captured");
        files.push(log_file.clone());
    } else {
        eprintln!("note: a tracing subscriber was already installed; logs not scanned");
    }
    let mut scanned = 0;
    for entry in files {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        scanned += 1;
        assert!(
            !bytes.windows(marker.len()).any(|window| window == marker.as_bytes()),
            "{} contains message text",
            entry.display()
        );
    }
    assert!(scanned > 0);
    if let Some(log_file) = &log_file {
        let _ = std::fs::remove_file(log_file);
    }
    mesh.shutdown().await;
}

#[tokio::test]
async fn a_tampered_ciphertext_does_not_open() {
    let mesh = TestMesh::start().await;
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &[]).await;
    let (p, _pd) = messenger(&mesh, &patient).await;
    let (d, _dd) = messenger(&mesh, &doctor).await;
    p.send(&patient.session, &doctor.user_id, b"lab results attached", None)
        .await
        .unwrap();
    let message = raw_inbox(&mesh, &doctor, &d.device_id().unwrap()).await.remove(0);
    assert_eq!(message.protocol_version, 2);
    let original = message.device_ciphertext.clone().unwrap();
    assert!(original.preamble.is_some(), "the first message carries the handshake");
    let mut variants: Vec<pb::DeviceCiphertext> = Vec::new();
    for index in [0, 31] {
        let mut c = original.clone();
        c.ratchet_public_key[index] ^= 1;
        variants.push(c);
    }
    let len = original.ciphertext.len();
    for index in [0, len / 2, len - 1] {
        let mut c = original.clone();
        c.ciphertext[index] ^= 1;
        variants.push(c);
    }
    let mut c = original.clone();
    c.ciphertext.truncate(len - 1);
    variants.push(c);
    let mut c = original.clone();
    c.message_number += 1;
    variants.push(c);
    let mut c = original.clone();
    c.previous_chain_length += 1;
    variants.push(c);
    for field in 0..3 {
        let mut c = original.clone();
        let preamble = c.preamble.as_mut().unwrap();
        match field {
            0 => preamble.ephemeral_public_key[0] ^= 1,
            1 => preamble.kem_ciphertext[0] ^= 1,
            _ => preamble.one_time_prekey_id.clear(),
        }
        variants.push(c);
    }
    for (index, variant) in variants.into_iter().enumerate() {
        let mut tampered = message.clone();
        tampered.device_ciphertext = Some(variant);
        assert!(
            d.open_message(&doctor.session, &tampered).await.is_err(),
            "variant {index} opened"
        );
    }
    // The message id is bound in the associated data: moved to another id, it does not open.
    let mut swapped = message.clone();
    swapped.message_id = uuid::Uuid::now_v7().to_string();
    assert!(d.open_message(&doctor.session, &swapped).await.is_err());
    // The genuine one still opens (failed attempts change nothing).
    let opened = d.open_message(&doctor.session, &message).await.unwrap();
    assert_eq!(opened.content, Content::Plain(b"lab results attached".to_vec()));
    mesh.shutdown().await;
}

#[tokio::test]
async fn a_one_time_prekey_is_never_handed_out_twice() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Doctor, &[]).await;
        let (_p, _pd) = messenger(&mesh, &patient).await; // publishes 100 one-time prekeys
        let fetches = (0..130).map(|_| {
            let mut client = KeyDirectoryServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
            let request = doctor
                .session
                .request(pb::FetchKeyBundleRequest {
                    user_id: patient.user_id.clone(),
                })
                .unwrap();
            async move { client.fetch_key_bundle(request).await }
        });
        let results = futures::future::join_all(fetches).await;
        let mut handed_out = Vec::new();
        for result in results {
            let bundle = result.unwrap().into_inner().bundle.unwrap();
            if let Some(prekey) = bundle.one_time_prekey {
                handed_out.push(prekey.key_id);
            }
        }
        let unique: HashSet<&String> = handed_out.iter().collect();
        assert_eq!(
            unique.len(),
            handed_out.len(),
            "{}: a prekey was handed out twice",
            backend.name()
        );
        assert_eq!(
            handed_out.len(),
            100,
            "{}: every prekey handed out once",
            backend.name()
        );
        mesh.shutdown().await;
    }
}

async fn next_item(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> pb::SubscribeResponse {
    tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("an item within 15 s")
        .expect("stream open")
        .expect("item")
}

#[tokio::test]
async fn a_watcher_that_reconnects_gets_every_message_exactly_once() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Nurse, &[]).await;
        let (p, _pd) = messenger(&mesh, &patient).await;
        let (d, _dd) = messenger(&mesh, &doctor).await;

        let mut stream = d.watch(&doctor.session, "").await.unwrap();
        for index in 0..5 {
            p.send(&patient.session, &doctor.user_id, format!("m{index}").as_bytes(), None)
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = String::new();
        for _ in 0..2 {
            let item = next_item(&mut stream).await;
            let opened = d
                .open_message(&doctor.session, item.message.as_ref().unwrap())
                .await
                .unwrap();
            seen.push(opened.content.text());
            cursor = item.cursor;
        }
        drop(stream);
        for index in 5..10 {
            p.send(&patient.session, &doctor.user_id, format!("m{index}").as_bytes(), None)
                .await
                .unwrap();
        }
        let mut stream = d.watch(&doctor.session, &cursor).await.unwrap();
        for _ in 0..8 {
            let item = next_item(&mut stream).await;
            let opened = d
                .open_message(&doctor.session, item.message.as_ref().unwrap())
                .await
                .unwrap();
            seen.push(opened.content.text());
        }
        let expected: Vec<String> = (0..10).map(|index| format!("m{index}")).collect();
        assert_eq!(seen, expected, "{}", backend.name());
        // Nothing more (no duplicates).
        assert!(
            tokio::time::timeout(Duration::from_millis(500), stream.next())
                .await
                .is_err(),
            "{}: an extra item arrived",
            backend.name()
        );
        let bad = d.watch(&doctor.session, "c1-999999999").await.unwrap_err();
        assert_eq!(bad.code(), Some(tonic::Code::InvalidArgument));
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn two_replicas_on_postgresql_deliver_across_each_other() {
    let Some(url) = std::env::var(caremesh_testkit::TEST_DATABASE_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!(
            "note: {} is not set; skipping the two-replica PostgreSQL delivery test",
            caremesh_testkit::TEST_DATABASE_URL_ENV
        );
        return;
    };
    let mesh = TestMesh::builder().backend(Backend::Postgres(url)).start().await;
    let second = mesh.start_second_instance(Service::Messaging).await;
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &[]).await;
    let (p, _pd) = messenger(&mesh, &patient).await;
    let dir = tempfile::tempdir().unwrap();
    // The doctor is connected to the second replica, the patient to the first.
    let d = Messenger::open(
        mesh.sdk_via(Service::Messaging, second.grpc_addr),
        dir.path(),
        "default",
        &doctor.session,
    )
    .await
    .unwrap();
    let mut doctor_stream = d.watch(&doctor.session, "").await.unwrap();
    let mut patient_stream = p.watch(&patient.session, "").await.unwrap();
    p.send(&patient.session, &doctor.user_id, b"via replica one", None)
        .await
        .unwrap();
    let item = next_item(&mut doctor_stream).await;
    let opened = d
        .open_message(&doctor.session, item.message.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(opened.content.text(), "via replica one");
    d.send(&doctor.session, &patient.user_id, b"via replica two", None)
        .await
        .unwrap();
    let item = next_item(&mut patient_stream).await;
    let opened = p
        .open_message(&patient.session, item.message.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(opened.content.text(), "via replica two");
    drop(doctor_stream);
    drop(patient_stream);
    second.stop().await;
    mesh.shutdown().await;
}

#[tokio::test]
async fn recall_and_lifespan_remove_messages() {
    let mesh = TestMesh::builder()
        .setting("CAREMESH_MESSAGING_PURGE_INTERVAL_SECONDS", "1")
        .start()
        .await;
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &[]).await;
    let (p, _pd) = messenger(&mesh, &patient).await;
    let (d, _dd) = messenger(&mesh, &doctor).await;
    let mut stream = d.watch(&doctor.session, "").await.unwrap();

    let sent = p
        .send(&patient.session, &doctor.user_id, b"please ignore", None)
        .await
        .unwrap();
    let item = next_item(&mut stream).await;
    assert_eq!(item.message.as_ref().unwrap().message_id, sent.message_id);
    // Only the sender may recall.
    assert_eq!(
        d.recall(&doctor.session, &sent.message_id).await.unwrap_err().code(),
        Some(tonic::Code::PermissionDenied)
    );
    let tombstone = p.recall(&patient.session, &sent.message_id).await.unwrap();
    assert_eq!(tombstone.state(), pb::MessageState::Recalled);
    assert!(tombstone.envelope.is_none());
    let item = next_item(&mut stream).await;
    assert_eq!(item.message.as_ref().unwrap().state(), pb::MessageState::Recalled);
    let history = d
        .history(
            &doctor.session,
            Target::PeerUserId(patient.user_id.clone()),
            pb::SortOrder::OldestFirst,
        )
        .await
        .unwrap();
    assert_eq!(history[0].content, Content::Recalled);
    let db = mesh.database(Service::Messaging).await;
    let ciphertexts = count(
        &db,
        "SELECT COUNT(*) AS n FROM messages WHERE recipient_envelope IS NOT NULL OR sender_envelope IS NOT NULL",
    )
    .await;
    assert_eq!(ciphertexts, 0, "the recalled ciphertext is deleted");

    // Lifespan: gone for everyone once it ends.
    let short = p
        .send(
            &patient.session,
            &doctor.user_id,
            b"self-destructing",
            Some(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    assert!(short.expire_time.is_some());
    mesh.advance(121);
    let gone = eventually(Duration::from_secs(10), || {
        let db = db.clone();
        async move { (count(&db, "SELECT COUNT(*) AS n FROM messages").await == 1).then_some(()) }
    })
    .await;
    assert!(gone.is_some(), "the expired message was purged");
    let history = d
        .history(
            &doctor.session,
            Target::PeerUserId(patient.user_id.clone()),
            pb::SortOrder::OldestFirst,
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "only the recalled tombstone is left");
    // A lifespan outside 1 minute to 366 days is refused.
    let refused = p
        .send(&patient.session, &doctor.user_id, b"x", Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    mesh.shutdown().await;
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

#[tokio::test]
async fn a_changed_identity_key_is_refused_until_accepted() {
    let mesh = TestMesh::start().await;
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &[]).await;
    let (p, _pd) = messenger(&mesh, &patient).await;
    let (d, _dd) = messenger(&mesh, &doctor).await;
    d.send(&doctor.session, &patient.user_id, b"first", None).await.unwrap();
    let before = d.contact(&doctor.session, &patient.user_id).await.unwrap();
    assert_eq!(before.trust, "trusted");
    let theirs = p.contact(&patient.session, &doctor.user_id).await.unwrap();
    assert_eq!(
        theirs.safety_number, before.safety_number,
        "both sides see the same number"
    );
    drop(p);

    // The patient reinstalls: a new device identity is published.
    let (p2, _pd2) = messenger(&mesh, &patient).await;
    let refused = d
        .send(&doctor.session, &patient.user_id, b"second", None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("changed"), "{refused}");
    let changed = d.contact(&doctor.session, &patient.user_id).await.unwrap();
    assert_eq!(changed.trust, "changed");
    assert_ne!(changed.safety_number, before.safety_number);
    let accepted = d.accept_identity(&doctor.session, &patient.user_id).await.unwrap();
    assert_eq!(accepted.trust, "trusted");
    d.send(&doctor.session, &patient.user_id, b"second", None)
        .await
        .unwrap();
    let inbox = raw_inbox(&mesh, &patient, &p2.device_id().unwrap()).await;
    let newest = inbox.last().unwrap();
    let opened = p2.open_message(&patient.session, newest).await.unwrap();
    assert_eq!(opened.content.text(), "second");
    mesh.shutdown().await;
}

/// Sending is idempotent by message id: the same request again gets the stored message back (and
/// it is stored once), the same id with other content is refused.
#[tokio::test]
async fn a_resent_message_is_stored_once_and_a_reused_id_is_refused() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Doctor, &[]).await;
        let (_p, _pd) = messenger(&mesh, &patient).await;
        let (_d, _dd) = messenger(&mesh, &doctor).await;
        let mut keys = KeyDirectoryServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
        let mut identity_of = async |user: &TestUser| {
            keys.get_identity_key(
                patient
                    .session
                    .request(pb::GetIdentityKeyRequest {
                        user_id: user.user_id.clone(),
                        key_id: String::new(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner()
            .identity_key
            .unwrap()
            .key_id
        };
        let own = identity_of(&patient).await;
        let theirs = identity_of(&doctor).await;
        // The server checks structure and key ids only; it never opens envelopes.
        let prekey_id = caremesh_crypto::new_id();
        let envelope = |sender: &str, recipient: &str, fill: u8| pb::Envelope {
            version: 1,
            sender_identity_key_id: sender.to_owned(),
            recipient_identity_key_id: recipient.to_owned(),
            recipient_signed_prekey_id: prekey_id.clone(),
            recipient_one_time_prekey_id: String::new(),
            ephemeral_public_key: vec![9; 32],
            nonce: vec![fill; 12],
            ciphertext: vec![fill; 64],
        };
        let message_id = caremesh_crypto::new_id();
        let request = |fill: u8| pb::SendMessageRequest {
            message_id: message_id.clone(),
            content: Some(pb::send_message_request::Content::Direct(pb::DirectContent {
                recipient_user_id: doctor.user_id.clone(),
                envelope: Some(envelope(&own, &theirs, fill)),
            })),
            sender_copy: Some(envelope(&own, &own, fill)),
            lifespan: None,
            ..Default::default()
        };
        let mut api = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
        let first = api
            .send_message(patient.session.request(request(1)).unwrap())
            .await
            .unwrap()
            .into_inner()
            .message
            .unwrap();
        let again = api
            .send_message(patient.session.request(request(1)).unwrap())
            .await
            .unwrap()
            .into_inner()
            .message
            .unwrap();
        assert_eq!(again, first, "{}: the same message again", backend.name());
        let other = api
            .send_message(patient.session.request(request(2)).unwrap())
            .await
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::AlreadyExists, "{}", backend.name());
        let inbox = raw_inbox(&mesh, &doctor, "").await;
        assert_eq!(
            inbox.iter().filter(|message| message.message_id == message_id).count(),
            1,
            "{}: stored once",
            backend.name()
        );

        // Concurrent sends are stored together (group commit): distinct messages each once, in
        // the recipient's log once each, and one message id sent concurrently with two contents
        // is stored once, with the winner's senders answered alike and the others refused.
        let raced_id = caremesh_crypto::new_id();
        let raced = |fill: u8| pb::SendMessageRequest {
            message_id: raced_id.clone(),
            ..request(fill)
        };
        let distinct: Vec<pb::SendMessageRequest> = (0..12)
            .map(|_| pb::SendMessageRequest {
                message_id: caremesh_crypto::new_id(),
                ..request(3)
            })
            .collect();
        let racers = [4u8, 5, 4, 5, 4, 5];
        let requests: Vec<pb::SendMessageRequest> = distinct
            .iter()
            .cloned()
            .chain(racers.iter().map(|fill| raced(*fill)))
            .collect();
        let mut watch = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
        let mut stream = watch
            .subscribe(
                doctor
                    .session
                    .request(pb::SubscribeRequest {
                        cursor: String::new(),
                        ..Default::default()
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner();
        let answers = futures::future::join_all(requests.into_iter().map(|request| {
            let mut api = api.clone();
            let request = patient.session.request(request).unwrap();
            async move {
                api.send_message(request)
                    .await
                    .map(|answer| answer.into_inner().message.unwrap())
            }
        }))
        .await;
        let (distinct_answers, raced_answers) = answers.split_at(distinct.len());
        for (sent, answer) in distinct.iter().zip(distinct_answers) {
            assert_eq!(
                answer.as_ref().unwrap().message_id,
                sent.message_id,
                "{}",
                backend.name()
            );
        }
        let winners: Vec<&pb::Message> = raced_answers.iter().filter_map(|answer| answer.as_ref().ok()).collect();
        assert!(!winners.is_empty(), "{}: one content wins", backend.name());
        assert!(winners.iter().all(|winner| *winner == winners[0]), "{}", backend.name());
        let winning_fill = winners[0].envelope.as_ref().unwrap().nonce[0];
        for (fill, answer) in racers.iter().zip(raced_answers) {
            match answer {
                Ok(_) => assert_eq!(*fill, winning_fill, "{}", backend.name()),
                Err(status) => {
                    assert_ne!(*fill, winning_fill, "{}: {status}", backend.name());
                    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{}", backend.name());
                }
            }
        }
        assert_eq!(
            winners.len(),
            3,
            "{}: every sender of the winning content is answered",
            backend.name()
        );
        let inbox = raw_inbox(&mesh, &doctor, "").await;
        for id in distinct.iter().map(|request| &request.message_id).chain([&raced_id]) {
            assert_eq!(
                inbox.iter().filter(|message| &message.message_id == id).count(),
                1,
                "{}: {id} stored once",
                backend.name()
            );
        }
        // The recipient's live delivery log has each of them once too.
        let mut delivered = Vec::new();
        while delivered.len() < distinct.len() + 1 {
            let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("delivery within 10 s")
                .unwrap()
                .unwrap();
            delivered.push(item.message.unwrap().message_id);
        }
        let extra = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(extra.is_err(), "{}: nothing delivered twice: {extra:?}", backend.name());
        let unique: HashSet<&String> = delivered.iter().collect();
        assert_eq!(unique.len(), delivered.len(), "{}", backend.name());
        assert!(unique.contains(&raced_id), "{}", backend.name());
        mesh.shutdown().await;
    }
}

/// A message sealed with protocol v1 (one X3DH envelope, as clients sent before v2) still opens
/// on the device whose keys it was sealed to, now running the v2 SDK.
#[tokio::test]
async fn a_v1_message_still_opens_on_the_device_it_was_sealed_to() {
    let mesh = TestMesh::start().await;
    let patient = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &[]).await;
    let (d, _dd) = messenger(&mesh, &doctor).await;

    // An old client: v1 keys only, published and used through the raw API.
    let mut old = caremesh_crypto::DeviceKeys::generate(&patient.user_id).unwrap();
    let mut keys = KeyDirectoryServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    keys.publish_key_bundle(patient.session.request(old.publish_request(5).unwrap()).unwrap())
        .await
        .unwrap();
    let bundle = keys
        .fetch_key_bundle(
            patient
                .session
                .request(pb::FetchKeyBundleRequest {
                    user_id: doctor.user_id.clone(),
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
        .bundle
        .unwrap();
    let verified = caremesh_crypto::verify_bundle(&bundle, &doctor.user_id).unwrap();
    let message_id = caremesh_crypto::new_id();
    let context = caremesh_crypto::MessageContext {
        sender_user_id: &patient.user_id,
        recipient_user_id: &doctor.user_id,
        message_id: &message_id,
    };
    let envelope = caremesh_crypto::seal(old.identity(), &context, &verified, b"sealed with v1").unwrap();
    let sender_copy = caremesh_crypto::seal_to_self(&old, &context, b"sealed with v1").unwrap();
    let mut api = MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    api.send_message(
        patient
            .session
            .request(pb::SendMessageRequest {
                message_id: message_id.clone(),
                content: Some(pb::send_message_request::Content::Direct(pb::DirectContent {
                    recipient_user_id: doctor.user_id.clone(),
                    envelope: Some(envelope),
                })),
                sender_copy: Some(sender_copy),
                ..Default::default()
            })
            .unwrap(),
    )
    .await
    .unwrap();

    let history = d
        .history(
            &doctor.session,
            Target::PeerUserId(patient.user_id.clone()),
            pb::SortOrder::OldestFirst,
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].message.protocol_version, 1);
    assert_eq!(history[0].content, Content::Plain(b"sealed with v1".to_vec()));
    mesh.shutdown().await;
}

/// A server that edits a device list (adds a device of its own) or strips the ML-KEM prekeys from
/// a bundle is refused by the client: the list's signature fails, and a bundle without a signed
/// ML-KEM prekey is not used for a weaker handshake. Simulated by editing messaging-svc's tables.
#[tokio::test]
async fn a_server_that_edits_device_lists_or_strips_kem_prekeys_is_refused() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Doctor, &[]).await;
        let (p, _pd) = messenger(&mesh, &patient).await;
        let (d, _dd) = messenger(&mesh, &doctor).await;
        let db = mesh.database(Service::Messaging).await;
        let exec = async |sql: String| {
            db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap();
        };

        // The server swaps the doctor's ML-KEM last-resort prekey for one of its own (and hands
        // out no one-time ML-KEM prekey): the signature does not cover it, so no handshake happens.
        exec(format!(
            "DELETE FROM device_kem_prekeys WHERE user_id = '{}'",
            doctor.user_id
        ))
        .await;
        let forged = caremesh_crypto::primitives::KemSecretKey::from_seed(&[7; 64]).public_key();
        let placeholder = if matches!(backend, Backend::Sqlite) { "?" } else { "$1" };
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            format!(
                "UPDATE device_signed_prekeys SET public_key = {placeholder} WHERE user_id = '{}' \
                 AND kind = 'ml-kem-768-last-resort-prekey'",
                doctor.user_id
            ),
            [forged.into()],
        ))
        .await
        .unwrap();
        let refused = p.send(&patient.session, &doctor.user_id, b"x", None).await.unwrap_err();
        assert!(
            refused.to_string().contains("signature is invalid"),
            "{name}: {refused}"
        );
        // Stripped altogether, the device has no usable bundle at all: still no handshake.
        exec(format!(
            "DELETE FROM device_signed_prekeys WHERE user_id = '{}' AND kind = 'ml-kem-768-last-resort-prekey'",
            doctor.user_id
        ))
        .await;
        let refused = p.send(&patient.session, &doctor.user_id, b"x", None).await.unwrap_err();
        assert!(refused.to_string().contains("no keys for device"), "{name}: {refused}");
        drop(d);

        // The server adds a device of its own to the patient's list (the signature stays the old one).
        let fake = caremesh_crypto::new_id();
        exec(format!(
            "UPDATE device_lists SET device_ids = device_ids || ',{fake}' WHERE user_id = '{}'",
            patient.user_id
        ))
        .await;
        let other_doctor = mesh.staff(Role::Doctor, &[]).await;
        let (o, _od) = messenger(&mesh, &other_doctor).await;
        let refused = o
            .send(&other_doctor.session, &patient.user_id, b"x", None)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("signature"), "{name}: {refused}");
        mesh.shutdown().await;
    }
}

/// Messages delivered out of order and with gaps still open: the doctor's device reads its raw
/// inbox in a shuffled order, leaving two messages for last (skipped message keys). A replayed
/// ciphertext (an opened message's ciphertext under a new id) is refused, a message delivered
/// twice stays one message, and the session goes on.
#[tokio::test]
async fn messages_read_out_of_order_and_with_gaps_still_open() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = mesh.patient().await;
        let doctor = mesh.staff(Role::Doctor, &[]).await;
        let (p, _pd) = messenger(&mesh, &patient).await;
        let (d, _dd) = messenger(&mesh, &doctor).await;
        for index in 0..6 {
            p.send(
                &patient.session,
                &doctor.user_id,
                format!("part {index}").as_bytes(),
                None,
            )
            .await
            .unwrap();
        }
        let inbox = raw_inbox(&mesh, &doctor, &d.device_id().unwrap()).await;
        assert_eq!(inbox.len(), 6, "{name}");
        for index in [4, 1, 5, 0, 3, 2] {
            let opened = d.open_message(&doctor.session, &inbox[index]).await.unwrap();
            assert_eq!(opened.content.text(), format!("part {index}"), "{name}: part {index}");
        }
        // A replayed ciphertext: the server hands an opened message's ciphertext out again
        // under a new message id. Its key is spent and the id is bound in: refused.
        for index in [2, 5] {
            let mut replayed = inbox[index].clone();
            replayed.message_id = uuid::Uuid::now_v7().to_string();
            let refused = d.open_message(&doctor.session, &replayed).await;
            assert!(refused.is_err(), "{name}: replayed part {index} opened: {refused:?}");
        }
        // The same message delivered twice is the same message, not a second one.
        let again = d.open_message(&doctor.session, &inbox[3]).await.unwrap();
        assert_eq!(again.message.message_id, inbox[3].message_id, "{name}");
        assert_eq!(again.content.text(), "part 3", "{name}");
        // And the session goes on.
        p.send(&patient.session, &doctor.user_id, b"part 6", None)
            .await
            .unwrap();
        let inbox = raw_inbox(&mesh, &doctor, &d.device_id().unwrap()).await;
        let mut texts = Vec::new();
        for message in &inbox {
            texts.push(d.open_message(&doctor.session, message).await.unwrap().content.text());
        }
        assert!(texts.contains(&"part 6".to_owned()), "{name}: {texts:?}");
        mesh.shutdown().await;
    }
}
