//! Group messages (issue #5) through the real services: doctors and nurses address messages by an
//! ABE policy; exactly the users whose attributes satisfy it see them (inbox, GetMessage,
//! conversations, live stream with resume, across replicas on PostgreSQL) and open them with an
//! ABE key; bad policies, envelopes and signatures are refused with reasons; recall, idempotency.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{MasterKey, Policy, PublicParams};
use caremesh_crypto::DeviceKeys;
use caremesh_crypto::policy_envelope::{
    GroupMessage, POLICY_ENVELOPE_VERSION, group_content_aad, open_under_policy, seal_under_policy,
};
use caremesh_proto::abe::v1::GetPublicParametersRequest;
use caremesh_proto::abe::v1::abe_service_client::AbeServiceClient;
use caremesh_proto::messaging::v1 as pb;
use caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient;
use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use caremesh_sdk::auth::Role;
use caremesh_testkit::{Backend, Caller, Service, TestMesh, TestUser, backends};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, Statement};
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// A change to a group envelope.
type Tamper = fn(&mut pb::GroupEnvelope);

const CARDIOLOGY_DOCTORS: &str = r#""role:doctor" and "dept:cardiology""#;
const CARDIOLOGY_NURSES: &str = r#""role:nurse" and "dept:cardiology""#;

/// A user with device keys published in messaging-svc's key directory.
struct Member {
    user: TestUser,
    keys: DeviceKeys,
}

async fn member(mesh: &TestMesh, user: TestUser) -> Member {
    let mut keys = DeviceKeys::generate(&user.user_id).unwrap();
    let mut client = KeyDirectoryServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous));
    client
        .publish_key_bundle(user.session.request(keys.publish_request(5).unwrap()).unwrap())
        .await
        .unwrap();
    // A protocol v2 device too, so that direct messages can reach the member.
    let device = caremesh_crypto::v2::DeviceSecrets::generate().unwrap();
    let list = caremesh_crypto::v2::DeviceList::new(
        &user.user_id,
        keys.identity().key_id(),
        1,
        [device.device_id().to_owned()],
    )
    .unwrap();
    client
        .update_device_list(
            user.session
                .request(pb::UpdateDeviceListRequest {
                    version: 1,
                    device_ids: list.device_ids().to_vec(),
                    signature: list.sign(keys.identity()).unwrap().to_vec(),
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .unwrap();
    let signed = |key: caremesh_crypto::v2::PublishedKey| pb::SignedDeviceKey {
        key_id: key.key_id,
        public_key: key.public_key,
        signature: key.signature,
    };
    client
        .publish_device(
            user.session
                .request(pb::PublishDeviceRequest {
                    device_id: device.device_id().to_owned(),
                    signed_prekey: Some(signed(device.signed_prekey(keys.identity(), &user.user_id).unwrap())),
                    last_resort_prekey: Some(signed(
                        device.last_resort_prekey(keys.identity(), &user.user_id).unwrap(),
                    )),
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .unwrap();
    Member { user, keys }
}

struct Abe {
    params: PublicParams,
    version: String,
}

async fn abe_params(mesh: &TestMesh, user: &TestUser) -> Abe {
    let mut client = AbeServiceClient::new(mesh.channel(Service::AbeAuthority, Caller::Anonymous));
    let answer = client
        .get_public_parameters(user.session.request(GetPublicParametersRequest::default()).unwrap())
        .await
        .unwrap()
        .into_inner();
    Abe {
        params: PublicParams::from_bytes(&answer.public_parameters).unwrap(),
        version: answer.version,
    }
}

/// The authority's master key, from its sealed storage (to issue test user keys directly).
async fn master_key(mesh: &TestMesh) -> MasterKey {
    use sea_orm::EntityTrait;
    let row = abe_authority_svc::storage::authority::Entity::find()
        .one(&mesh.database(Service::AbeAuthority).await)
        .await
        .unwrap()
        .unwrap();
    let kek = caremesh_runtime::kek::Kek::load(&mesh.config(Service::AbeAuthority).kek_file).unwrap();
    let master = kek
        .open(&format!("abe/master-key/{}", row.version), &row.sealed_master_key)
        .unwrap();
    MasterKey::from_bytes(&master).unwrap()
}

fn sign(request: &mut pb::SendMessageRequest, sender: &Member) {
    let Some(pb::send_message_request::Content::Group(group)) = request.content.as_mut() else {
        panic!("a group request");
    };
    let envelope = group.envelope.as_mut().unwrap();
    envelope.signature = Vec::new();
    let signature = GroupMessage {
        message_id: &request.message_id,
        sender_user_id: &sender.user.user_id,
        policy: &group.policy,
        envelope,
    }
    .sign(sender.keys.identity())
    .unwrap();
    envelope.signature = signature.to_vec();
}

/// A signed group message from `sender`, declaring `policy` and encapsulated under `sealed_for`.
fn group_request(abe: &Abe, sender: &Member, policy: &str, sealed_for: &str, body: &[u8]) -> pb::SendMessageRequest {
    let message_id = uuid::Uuid::now_v7().to_string();
    let aad = group_content_aad(&message_id, &sender.user.user_id, policy).unwrap();
    let sealed = seal_under_policy(&abe.params, &Policy::parse(sealed_for).unwrap(), &aad, body).unwrap();
    let mut request = pb::SendMessageRequest {
        message_id,
        content: Some(pb::send_message_request::Content::Group(pb::GroupContent {
            policy: policy.to_owned(),
            envelope: Some(pb::GroupEnvelope {
                version: POLICY_ENVELOPE_VERSION,
                params_version: abe.version.clone(),
                encapsulated_key: sealed.encapsulated_key,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
                sender_identity_key_id: sender.keys.identity().key_id().to_owned(),
                signature: Vec::new(),
            }),
        })),
        sender_copy: None,
        lifespan: None,
        ..Default::default()
    };
    sign(&mut request, sender);
    request
}

fn envelope_mut(request: &mut pb::SendMessageRequest) -> &mut pb::GroupEnvelope {
    match request.content.as_mut() {
        Some(pb::send_message_request::Content::Group(group)) => group.envelope.as_mut().unwrap(),
        _ => panic!("a group request"),
    }
}

fn client(mesh: &TestMesh) -> MessagingServiceClient<Channel> {
    MessagingServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous))
}

async fn send(
    mesh: &TestMesh,
    user: &TestUser,
    request: pb::SendMessageRequest,
) -> Result<pb::SendMessageResponse, tonic::Status> {
    client(mesh)
        .send_message(user.session.request(request).unwrap())
        .await
        .map(tonic::Response::into_inner)
}

async fn inbox(mesh: &TestMesh, user: &TestUser) -> Vec<pb::Message> {
    client(mesh)
        .list_inbox(
            user.session
                .request(pb::ListInboxRequest {
                    page_size: 100,
                    order: pb::SortOrder::OldestFirst.into(),
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
        .messages
}

async fn get(mesh: &TestMesh, user: &TestUser, message_id: &str) -> Result<pb::Message, tonic::Status> {
    client(mesh)
        .get_message(
            user.session
                .request(pb::GetMessageRequest {
                    message_id: message_id.to_owned(),
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .map(|response| response.into_inner().message.unwrap())
}

async fn watch(channel: Channel, user: &TestUser, cursor: &str) -> tonic::Streaming<pb::SubscribeResponse> {
    MessagingServiceClient::new(channel)
        .subscribe(
            user.session
                .request(pb::SubscribeRequest {
                    cursor: cursor.to_owned(),
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
}

async fn next_item(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> pb::SubscribeResponse {
    tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("an item within 15 s")
        .expect("stream open")
        .expect("item")
}

async fn nothing_more(stream: &mut tonic::Streaming<pb::SubscribeResponse>, what: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(700), stream.next()).await {
        panic!("{what}: unexpected stream item {item:?}");
    }
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

fn open(message: &pb::Message, key: &caremesh_abe::UserKey) -> Result<Vec<u8>, caremesh_crypto::CryptoError> {
    let envelope = message.group_envelope.as_ref().unwrap();
    let aad = group_content_aad(&message.message_id, &message.sender_user_id, &message.policy)?;
    open_under_policy(
        key,
        &envelope.encapsulated_key,
        &envelope.nonce,
        &envelope.ciphertext,
        &aad,
    )
    .map(|opened| opened.to_vec())
}

#[tokio::test]
async fn a_group_message_reaches_exactly_the_members() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let alice = member(&mesh, mesh.staff(Role::Doctor, &["dept:cardiology"]).await).await;
        let bob = member(&mesh, mesh.staff(Role::Doctor, &["dept:cardiology"]).await).await;
        let olga = member(&mesh, mesh.staff(Role::Doctor, &["dept:oncology"]).await).await;
        let nina = member(&mesh, mesh.staff(Role::Nurse, &["dept:cardiology"]).await).await;
        let patient = member(&mesh, mesh.patient().await).await;
        let abe = abe_params(&mesh, &alice.user).await;
        let messaging = mesh.channel(Service::Messaging, Caller::Anonymous);

        let mut bob_stream = watch(messaging.clone(), &bob.user, "").await;
        let mut olga_stream = watch(messaging.clone(), &olga.user, "").await;
        let mut patient_stream = watch(messaging.clone(), &patient.user, "").await;

        let request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"ward round at 8");
        let message_id = request.message_id.clone();
        let sent = send(&mesh, &alice.user, request.clone()).await.unwrap();
        assert!(!sent.duplicate);
        let stored = sent.message.unwrap();
        assert_eq!(stored.kind(), pb::MessageKind::Group, "{name}");
        assert_eq!(stored.policy, CARDIOLOGY_DOCTORS);
        assert!(stored.conversation_id.starts_with("gm-"));
        assert!(stored.receipts.is_empty());

        // Idempotent by message id; the same id with other content is refused.
        let again = send(&mesh, &alice.user, request.clone()).await.unwrap();
        assert!(again.duplicate, "{name}");
        assert_eq!(again.message.unwrap().message_id, message_id);
        let mut other = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"different");
        other.message_id = message_id.clone();
        sign(&mut other, &alice);
        let clash = send(&mesh, &alice.user, other).await.unwrap_err();
        assert_eq!(clash.code(), tonic::Code::AlreadyExists, "{name}: {clash:?}");

        // Bob (cardiology doctor) sees it live, in his inbox and by id, and opens it.
        let item = next_item(&mut bob_stream).await;
        let live = item.message.unwrap();
        assert_eq!(live.message_id, message_id, "{name}");
        let bob_key = caremesh_abe::keygen(
            &abe.params,
            &master_key(&mesh).await,
            &["role:doctor", "dept:cardiology"],
            &mut OsRng,
        )
        .unwrap();
        assert_eq!(open(&live, &bob_key).unwrap(), b"ward round at 8");
        let bob_inbox = inbox(&mesh, &bob.user).await;
        assert_eq!(bob_inbox.len(), 1, "{name}");
        assert_eq!(bob_inbox[0].message_id, message_id);
        assert!(bob_inbox[0].group_envelope.is_some());
        let by_id = get(&mesh, &bob.user, &message_id).await.unwrap();
        assert_eq!(open(&by_id, &bob_key).unwrap(), b"ward round at 8");
        // An oncology key does not open it (the server's filter and the cryptography agree).
        let olga_key = caremesh_abe::keygen(
            &abe.params,
            &master_key(&mesh).await,
            &["role:doctor", "dept:oncology"],
            &mut OsRng,
        )
        .unwrap();
        assert!(open(&by_id, &olga_key).is_err());

        // Conversations: one per policy, listed for members and the sender.
        let conversations = client(&mesh)
            .list_conversations(
                bob.user
                    .session
                    .request(pb::ListConversationsRequest::default())
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner()
            .conversations;
        assert_eq!(conversations.len(), 1, "{name}");
        assert_eq!(conversations[0].kind(), pb::MessageKind::Group);
        assert_eq!(conversations[0].policy, CARDIOLOGY_DOCTORS);
        assert_eq!(conversations[0].conversation_id, stored.conversation_id);
        let history = |user: &TestUser| {
            let request = user
                .session
                .request(pb::ListConversationMessagesRequest {
                    target: Some(pb::list_conversation_messages_request::Target::ConversationId(
                        stored.conversation_id.clone(),
                    )),
                    ..Default::default()
                })
                .unwrap();
            let mut client = client(&mesh);
            async move { client.list_conversation_messages(request).await }
        };
        assert_eq!(history(&alice.user).await.unwrap().into_inner().messages.len(), 1);
        assert_eq!(history(&bob.user).await.unwrap().into_inner().messages.len(), 1);

        // Oncology and the patient see nothing.
        for outsider in [&olga, &patient] {
            assert!(inbox(&mesh, &outsider.user).await.is_empty(), "{name}");
            let refused = get(&mesh, &outsider.user, &message_id).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}: {refused:?}");
            let refused = history(&outsider.user).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}: {refused:?}");
        }
        nothing_more(&mut olga_stream, "oncology").await;
        nothing_more(&mut patient_stream, "patient").await;

        // A cardiology nurse writes to the cardiology nurses: not for Bob.
        let nurse_request = group_request(
            &abe,
            &nina,
            CARDIOLOGY_NURSES,
            CARDIOLOGY_NURSES,
            b"night shift handover",
        );
        let nurse_message = nurse_request.message_id.clone();
        send(&mesh, &nina.user, nurse_request).await.unwrap();
        let refused = get(&mesh, &bob.user, &nurse_message).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            get(&mesh, &nina.user, &nurse_message).await.unwrap().message_id,
            nurse_message
        );

        // Group and direct messages share one paginated inbox, in server order.
        let patient_dir = tempfile::tempdir().unwrap();
        let patient_device =
            caremesh_sdk::messaging::Messenger::open(mesh.sdk(), patient_dir.path(), "default", &patient.user.session)
                .await
                .unwrap();
        let direct = patient_device
            .send(&patient.user.session, &bob.user.user_id, b"a question", None)
            .await
            .unwrap();
        let second = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"second");
        let second_id = second.message_id.clone();
        send(&mesh, &alice.user, second).await.unwrap();
        let item = next_item(&mut bob_stream).await;
        assert_eq!(item.message.unwrap().message_id, direct.message_id, "{name}");
        let item = next_item(&mut bob_stream).await;
        assert_eq!(item.message.unwrap().message_id, second_id, "{name}");
        let cursor = item.cursor;
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = client(&mesh)
                .list_inbox(
                    bob.user
                        .session
                        .request(pb::ListInboxRequest {
                            page_size: 1,
                            page_token: token.clone(),
                            order: pb::SortOrder::NewestFirst.into(),
                            ..Default::default()
                        })
                        .unwrap(),
                )
                .await
                .unwrap()
                .into_inner();
            pages.extend(page.messages.into_iter().map(|message| message.message_id));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(
            pages,
            vec![second_id.clone(), direct.message_id.clone(), message_id.clone()],
            "{name}"
        );

        // Resume from a cursor: exactly what came after it.
        drop(bob_stream);
        let third = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"third");
        let third_id = third.message_id.clone();
        send(&mesh, &alice.user, third).await.unwrap();
        let mut bob_stream = watch(messaging.clone(), &bob.user, &cursor).await;
        assert_eq!(
            next_item(&mut bob_stream).await.message.unwrap().message_id,
            third_id,
            "{name}"
        );
        nothing_more(&mut bob_stream, "after resume").await;

        // Recall: only the sender; the ciphertext goes for everyone, members get the tombstone.
        let mut messaging_client = client(&mesh);
        let recall = |user: &TestUser, id: &str| {
            user.session
                .request(pb::RecallMessageRequest {
                    message_id: id.to_owned(),
                })
                .unwrap()
        };
        let refused = messaging_client
            .recall_message(recall(&bob.user, &message_id))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let tombstone = messaging_client
            .recall_message(recall(&alice.user, &message_id))
            .await
            .unwrap()
            .into_inner()
            .message
            .unwrap();
        assert_eq!(tombstone.state(), pb::MessageState::Recalled, "{name}");
        assert!(tombstone.group_envelope.is_none());
        let item = next_item(&mut bob_stream).await.message.unwrap();
        assert_eq!(item.message_id, message_id);
        assert_eq!(item.state(), pb::MessageState::Recalled);
        let recalled = get(&mesh, &bob.user, &message_id).await.unwrap();
        assert!(recalled.group_envelope.is_none(), "{name}");
        let db = mesh.database(Service::Messaging).await;
        let left = count(
            &db,
            &format!(
                "SELECT COUNT(*) AS n FROM messages WHERE message_id = '{message_id}' AND group_envelope IS NOT NULL"
            ),
        )
        .await;
        assert_eq!(left, 0, "{name}: the recalled ciphertext is deleted");
        nothing_more(&mut olga_stream, "oncology after recall").await;

        // Sends, reads, denials and the recall are audited, with ids only (no policy text).
        let log = mesh.audit_log().await;
        let events = caremesh_testkit::eventually(Duration::from_secs(10), || {
            let log = log.clone();
            let message_id = message_id.clone();
            async move {
                let events = log.events().await.ok()?;
                let about = |operation: &str| {
                    events
                        .iter()
                        .any(|event| event.operation == operation && event.entity_id == message_id)
                };
                (about("SendMessage") && about("GetMessage") && about("RecallMessage")).then_some(events)
            }
        })
        .await
        .expect("group message events reach the audit log");
        assert!(
            events
                .iter()
                .all(|event| !format!("{event:?}").contains("dept:cardiology")),
            "{name}: no policy text in audit events"
        );
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn bad_group_messages_are_refused_with_reasons() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let alice = member(&mesh, mesh.staff(Role::Doctor, &["dept:cardiology"]).await).await;
        let patient = member(&mesh, mesh.patient().await).await;
        let admin = mesh.created(Role::Admin).await;
        let abe = abe_params(&mesh, &alice.user).await;

        // Patients (and admins) do not send group messages.
        let request = group_request(&abe, &patient, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"hello doctors");
        let refused = send(&mesh, &patient.user, request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}: {refused:?}");
        let request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
        let refused = send(&mesh, &admin, request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}: {refused:?}");

        // Bad policies: the parser's reason and a message that says what is wrong.
        let cases = [
            ("role:doctor and", "UNQUOTED_ATTRIBUTE"),
            (r#""role:doctor" and"#, "UNEXPECTED_TOKEN"),
            (r#""a:1" and "b:2" or "c:3""#, "MIXED_OPERATORS"),
            ("", "POLICY_REQUIRED"),
        ];
        for (policy, expected) in cases {
            let mut request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
            if let Some(pb::send_message_request::Content::Group(group)) = request.content.as_mut() {
                group.policy = policy.to_owned();
            }
            sign(&mut request, &alice);
            let refused = send(&mesh, &alice.user, request).await.unwrap_err();
            assert_eq!(
                refused.code(),
                tonic::Code::InvalidArgument,
                "{name}: {policy}: {refused:?}"
            );
            assert_eq!(reason(&refused), expected, "{name}: {policy}: {refused:?}");
            assert!(refused.message().contains("policy"), "{}", refused.message());
        }
        let deep = format!("{}\"role:doctor\"{}", "(".repeat(40), ")".repeat(40));
        let mut request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
        if let Some(pb::send_message_request::Content::Group(group)) = request.content.as_mut() {
            group.policy = deep;
        }
        sign(&mut request, &alice);
        let refused = send(&mesh, &alice.user, request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(reason(&refused), "POLICY_TOO_DEEP", "{refused:?}");
        assert!(
            refused.message().contains("deep") || refused.message().contains("nest"),
            "{}",
            refused.message()
        );

        // The encapsulated key must be for the declared policy.
        let request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, r#""role:doctor""#, b"x");
        let refused = send(&mesh, &alice.user, request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(reason(&refused), "POLICY_MISMATCH", "{name}: {refused:?}");
        // The same policy written differently is fine (canonical forms are compared).
        let request = group_request(
            &abe,
            &alice,
            r#"("role:doctor" and "dept:cardiology")"#,
            CARDIOLOGY_DOCTORS,
            b"x",
        );
        send(&mesh, &alice.user, request).await.unwrap();

        // A tampered signature, or a signature over other bytes.
        let mut request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
        envelope_mut(&mut request).signature[5] ^= 1;
        let refused = send(&mesh, &alice.user, request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(reason(&refused), "BAD_SIGNATURE", "{name}: {refused:?}");
        let mut request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
        envelope_mut(&mut request).ciphertext[0] ^= 1;
        let refused = send(&mesh, &alice.user, request).await.unwrap_err();
        assert_eq!(reason(&refused), "BAD_SIGNATURE", "{name}: {refused:?}");

        // Envelope structure.
        let structural: [(&str, Tamper); 5] = [
            ("version", |envelope| envelope.version = 2),
            ("params_version", |envelope| envelope.params_version.clear()),
            ("nonce", |envelope| envelope.nonce.truncate(11)),
            ("encapsulated_key", |envelope| envelope.encapsulated_key.clear()),
            ("ciphertext", |envelope| envelope.ciphertext = vec![0; 256 * 1024 + 1]),
        ];
        for (field, change) in structural {
            let mut request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
            change(envelope_mut(&mut request));
            sign(&mut request, &alice);
            let refused = send(&mesh, &alice.user, request).await.unwrap_err();
            assert_eq!(
                refused.code(),
                tonic::Code::InvalidArgument,
                "{name}: {field}: {refused:?}"
            );
            assert!(refused.message().contains(field), "{field}: {}", refused.message());
        }
        let mut request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
        envelope_mut(&mut request).encapsulated_key[3] ^= 0x40;
        sign(&mut request, &alice);
        let refused = send(&mesh, &alice.user, request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{name}: garbled key: {refused:?}"
        );

        // No published identity: nothing to verify the signature with.
        let stranger = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
        let unpublished = Member {
            keys: DeviceKeys::generate(&stranger.user_id).unwrap(),
            user: stranger,
        };
        let request = group_request(&abe, &unpublished, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"x");
        let refused = send(&mesh, &unpublished.user, request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{name}: {refused:?}");

        // Only the one well-formed message was stored.
        let db = mesh.database(Service::Messaging).await;
        assert_eq!(count(&db, "SELECT COUNT(*) AS n FROM messages").await, 1, "{name}");
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn group_messages_cross_replicas_on_postgresql() {
    let Some(url) = std::env::var(caremesh_testkit::TEST_DATABASE_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!(
            "note: {} is not set; skipping the two-replica PostgreSQL group test",
            caremesh_testkit::TEST_DATABASE_URL_ENV
        );
        return;
    };
    let mesh = TestMesh::builder().backend(Backend::Postgres(url)).start().await;
    let second = mesh.start_second_instance(Service::Messaging).await;
    let alice = member(&mesh, mesh.staff(Role::Doctor, &["dept:cardiology"]).await).await;
    let bob = member(&mesh, mesh.staff(Role::Doctor, &["dept:cardiology"]).await).await;
    let abe = abe_params(&mesh, &alice.user).await;
    // Bob watches through the second replica; Alice sends through the first.
    let via_second = mesh
        .sdk_via(Service::Messaging, second.grpc_addr)
        .channel(Service::Messaging)
        .unwrap();
    let mut stream = watch(via_second, &bob.user, "").await;
    let request = group_request(&abe, &alice, CARDIOLOGY_DOCTORS, CARDIOLOGY_DOCTORS, b"across replicas");
    let id = request.message_id.clone();
    send(&mesh, &alice.user, request).await.unwrap();
    assert_eq!(next_item(&mut stream).await.message.unwrap().message_id, id);
    drop(stream);
    second.stop().await;
    mesh.shutdown().await;
}
