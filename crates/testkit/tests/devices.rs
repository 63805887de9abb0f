//! The protocol v2 device directory of messaging-svc (docs/protocol.md §3.2, §4, §5.1, §8) through
//! the real services: devices published and listed, bundles that verify with
//! `caremesh_crypto::v2`, one-time keys handed out once (also concurrently) and the last-resort
//! ML-KEM key after them, signed device lists (bad signature, wrong version, dropped devices),
//! admin removal, device linking, and refusals of malformed input. On SQLite and, when
//! CAREMESH_TEST_DATABASE_URL is set, on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashSet;

use caremesh_crypto::v2::{
    DeviceBundle, DeviceKeyKind, DeviceList, DeviceSecrets, HistoryKeyRing, KemPrekeyPublic, LinkRequest, PendingLink,
    Provisioning, PublishedKey, SealedProvisioning, verify_device_bundle,
};
use caremesh_crypto::{IdentityKeyPair, IdentityPublicKey, SignedPrekey};
use caremesh_proto::messaging::v1 as pb;
use caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient;
use caremesh_sdk::auth::{Role, Session};
use caremesh_testkit::{Backend, Caller, Service, TestMesh, TestUser, backends};
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;
use tonic::transport::Channel;

type Keys = KeyDirectoryServiceClient<Channel>;

fn keys(mesh: &TestMesh) -> Keys {
    KeyDirectoryServiceClient::new(mesh.channel(Service::Messaging, Caller::Anonymous))
}

fn random32() -> [u8; 32] {
    *caremesh_crypto::primitives::random_array::<32>().unwrap()
}

/// A user's account identity, reproducible (the provisioning message takes one by value).
struct Account {
    user: TestUser,
    key_id: String,
    seed: [u8; 32],
    dh: [u8; 32],
}

impl Account {
    fn identity(&self) -> IdentityKeyPair {
        IdentityKeyPair::from_secrets(&self.key_id, &self.seed, &self.dh).unwrap()
    }

    fn public(&self) -> IdentityPublicKey {
        self.identity().public()
    }

    fn id(&self) -> &str {
        &self.user.user_id
    }

    fn session(&self) -> &Session {
        &self.user.session
    }

    /// Signs device list `version` of `device_ids`.
    fn list(&self, version: u64, device_ids: &[&str]) -> pb::UpdateDeviceListRequest {
        let list = DeviceList::new(
            self.id(),
            &self.key_id,
            version,
            device_ids.iter().map(|id| (*id).to_owned()),
        )
        .unwrap();
        pb::UpdateDeviceListRequest {
            version,
            device_ids: list.device_ids().to_vec(),
            signature: list.sign(&self.identity()).unwrap().to_vec(),
            ..Default::default()
        }
    }
}

/// A user with a published identity (PublishKeyBundle, as every v2 device list is signed by it).
async fn account(mesh: &TestMesh, user: TestUser) -> Account {
    let account = Account {
        user,
        key_id: caremesh_crypto::new_id(),
        seed: random32(),
        dh: random32(),
    };
    let identity = account.identity();
    let request = pb::PublishKeyBundleRequest {
        identity_key: Some(identity.to_proto(account.id()).unwrap()),
        signed_prekey: Some(SignedPrekey::generate(&identity, account.id()).unwrap().to_proto()),
        one_time_prekeys: Vec::new(),
    };
    keys(mesh)
        .publish_key_bundle(account.session().request(request).unwrap())
        .await
        .unwrap();
    account
}

fn signed(key: PublishedKey) -> pb::SignedDeviceKey {
    pb::SignedDeviceKey {
        key_id: key.key_id,
        public_key: key.public_key,
        signature: key.signature,
    }
}

fn one_time(key: PublishedKey) -> pb::OneTimePrekey {
    pb::OneTimePrekey {
        key_id: key.key_id,
        public_key: key.public_key,
    }
}

/// The PublishDevice request of `device` with `count` new one-time keys of each kind.
fn publish_request(account: &Account, device: &mut DeviceSecrets, count: usize) -> pb::PublishDeviceRequest {
    let identity = account.identity();
    let (x25519, kem) = device.new_one_time_prekeys(&identity, account.id(), count).unwrap();
    pb::PublishDeviceRequest {
        device_id: device.device_id().to_owned(),
        signed_prekey: Some(signed(device.signed_prekey(&identity, account.id()).unwrap())),
        last_resort_prekey: Some(signed(device.last_resort_prekey(&identity, account.id()).unwrap())),
        one_time_prekeys: x25519.into_iter().map(one_time).collect(),
        kem_one_time_prekeys: kem.into_iter().map(signed).collect(),
    }
}

async fn publish(
    mesh: &TestMesh,
    account: &Account,
    device: &mut DeviceSecrets,
    count: usize,
) -> Result<pb::DevicePrekeyStock, tonic::Status> {
    let request = publish_request(account, device, count);
    keys(mesh)
        .publish_device(account.session().request(request).unwrap())
        .await
        .map(|response| response.into_inner().stock.unwrap())
}

async fn update_list(
    mesh: &TestMesh,
    account: &Account,
    request: pb::UpdateDeviceListRequest,
) -> Result<pb::UpdateDeviceListResponse, tonic::Status> {
    keys(mesh)
        .update_device_list(account.session().request(request).unwrap())
        .await
        .map(tonic::Response::into_inner)
}

async fn get_list(mesh: &TestMesh, session: &Session, user_id: &str) -> pb::GetDeviceListResponse {
    keys(mesh)
        .get_device_list(
            session
                .request(pb::GetDeviceListRequest {
                    user_id: user_id.to_owned(),
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
}

async fn fetch(
    mesh: &TestMesh,
    session: &Session,
    user_id: &str,
    device_ids: &[&str],
) -> Result<pb::FetchDeviceBundlesResponse, tonic::Status> {
    keys(mesh)
        .fetch_device_bundles(
            session
                .request(pb::FetchDeviceBundlesRequest {
                    user_id: user_id.to_owned(),
                    device_ids: device_ids.iter().map(|id| (*id).to_owned()).collect(),
                })
                .unwrap(),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// What a client does with a fetched list: verify it with the (pinned) identity.
fn verified_list(response: &pb::GetDeviceListResponse, identity: &IdentityPublicKey) -> DeviceList {
    let list = response.device_list.as_ref().unwrap();
    DeviceList::verify(
        &list.user_id,
        identity,
        list.version,
        list.device_ids.clone(),
        &list.signature,
    )
    .unwrap()
}

fn crypto_bundle(user_id: &str, bundle: &pb::DeviceBundle) -> DeviceBundle {
    let spk = bundle.signed_prekey.clone().unwrap();
    let kem = bundle.kem_prekey.clone().unwrap();
    let kem_key = kem.key.unwrap();
    DeviceBundle {
        user_id: user_id.to_owned(),
        device_id: bundle.device_id.clone(),
        signed_prekey: PublishedKey {
            key_id: spk.key_id,
            public_key: spk.public_key,
            signature: spk.signature,
        },
        kem_prekey: Some(KemPrekeyPublic {
            key_id: kem_key.key_id,
            kind: match pb::KemPrekeyKind::try_from(kem.kind).unwrap() {
                pb::KemPrekeyKind::OneTime => DeviceKeyKind::KemOneTime,
                pb::KemPrekeyKind::LastResort => DeviceKeyKind::KemLastResort,
                pb::KemPrekeyKind::Unspecified => panic!("a bundle without an ML-KEM kind"),
            },
            public_key: kem_key.public_key,
            signature: kem_key.signature,
        }),
        one_time_prekey: bundle.one_time_prekey.clone().map(|key| PublishedKey {
            key_id: key.key_id,
            public_key: key.public_key,
            signature: Vec::new(),
        }),
    }
}

/// Verifies every bundle of a fetch as a client would; returns (device, ML-KEM kind, ML-KEM key
/// id, one-time key id) per bundle.
fn verify_bundles(
    response: &pb::FetchDeviceBundlesResponse,
    owner: &Account,
    list: &DeviceList,
) -> Vec<(String, pb::KemPrekeyKind, String, Option<String>)> {
    let identity = caremesh_crypto::verify_identity(response.identity_key.as_ref().unwrap(), owner.id()).unwrap();
    assert!(
        identity.same_keys(&owner.public()),
        "the bundles come with the owner's identity"
    );
    response
        .bundles
        .iter()
        .map(|bundle| {
            verify_device_bundle(&crypto_bundle(owner.id(), bundle), &identity, list)
                .unwrap_or_else(|error| panic!("bundle of {} does not verify: {error}", bundle.device_id));
            let kem = bundle.kem_prekey.clone().unwrap();
            (
                bundle.device_id.clone(),
                kem.kind(),
                kem.key.unwrap().key_id,
                bundle.one_time_prekey.as_ref().map(|key| key.key_id.clone()),
            )
        })
        .collect()
}

async fn count(mesh: &TestMesh, sql: &str) -> i64 {
    let db = mesh.database(Service::Messaging).await;
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Rows of every device key table for one device.
async fn key_rows(mesh: &TestMesh, device_id: &str) -> i64 {
    let mut total = 0;
    for table in ["device_signed_prekeys", "device_one_time_prekeys", "device_kem_prekeys"] {
        total += count(
            mesh,
            &format!("SELECT COUNT(*) AS n FROM {table} WHERE device_id = '{device_id}'"),
        )
        .await;
    }
    total
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn devices_are_published_listed_and_their_one_time_keys_handed_out_once() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = account(&mesh, mesh.patient().await).await;
        let doctor = account(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let mut a = DeviceSecrets::generate().unwrap();
        let mut b = DeviceSecrets::generate().unwrap();
        let (a_id, b_id) = (a.device_id().to_owned(), b.device_id().to_owned());

        // Before the first device list, devices may be published.
        let stock = publish(&mesh, &patient, &mut a, 20).await.unwrap();
        assert_eq!(
            (stock.one_time_prekey_count, stock.kem_one_time_prekey_count),
            (20, 20),
            "{name}"
        );
        publish(&mesh, &patient, &mut b, 1).await.unwrap();
        let stored = update_list(&mesh, &patient, patient.list(1, &[&a_id, &b_id]))
            .await
            .unwrap();
        assert!(stored.removed_device_ids.is_empty(), "{name}");

        // Anyone signed in reads the list; it verifies with the identity.
        let read = get_list(&mesh, doctor.session(), patient.id()).await;
        let list = verified_list(&read, &patient.public());
        assert_eq!(list.version(), 1);
        assert_eq!(list.device_ids(), sorted(&[&a_id, &b_id]).as_slice(), "{name}");
        assert!(read.admin_removed_device_ids.is_empty(), "{name}");

        // Both bundles verify; each carries one-time keys while there are any.
        let first = fetch(&mesh, doctor.session(), patient.id(), &[]).await.unwrap();
        assert_eq!(first.device_list_version, 1);
        let seen = verify_bundles(&first, &patient, &list);
        assert_eq!(seen.len(), 2, "{name}: one bundle per device");
        for (device, kind, _, one_time) in &seen {
            assert_eq!(*kind, pb::KemPrekeyKind::OneTime, "{name}: {device}");
            assert!(one_time.is_some(), "{name}: {device}");
        }
        // b had one of each: now its ML-KEM key is the last-resort one, and no X25519 one-time key.
        let again = fetch(&mesh, doctor.session(), patient.id(), &[&b_id]).await.unwrap();
        let seen_b = verify_bundles(&again, &patient, &list);
        assert_eq!(seen_b.len(), 1);
        assert_eq!(seen_b[0].1, pb::KemPrekeyKind::LastResort, "{name}");
        assert_eq!(
            seen_b[0].2,
            b.last_resort_prekey(&patient.identity(), patient.id()).unwrap().key_id
        );
        assert_eq!(seen_b[0].3, None, "{name}");

        // 30 concurrent fetches of a's 19 remaining keys: each handed out once, then the
        // last-resort key.
        let fetches = (0..30).map(|_| {
            let mesh = &mesh;
            let session = doctor.session();
            let (patient_id, a_id) = (patient.id().to_owned(), a_id.clone());
            async move { fetch(mesh, session, &patient_id, &[&a_id]).await }
        });
        let results = futures::future::join_all(fetches).await;
        let (mut kem_ids, mut one_time_ids, mut last_resort) = (Vec::new(), Vec::new(), 0);
        for result in results {
            let response = result.unwrap();
            let seen = verify_bundles(&response, &patient, &list);
            assert_eq!(seen.len(), 1);
            let (_, kind, kem_id, one_time) = seen.into_iter().next().unwrap();
            match kind {
                pb::KemPrekeyKind::OneTime => kem_ids.push(kem_id),
                _ => last_resort += 1,
            }
            one_time_ids.extend(one_time);
        }
        for (ids, what) in [(&kem_ids, "ML-KEM"), (&one_time_ids, "X25519")] {
            let unique: HashSet<&String> = ids.iter().collect();
            assert_eq!(
                unique.len(),
                ids.len(),
                "{name}: a one-time {what} key was handed out twice"
            );
            assert_eq!(ids.len(), 19, "{name}: every one-time {what} key handed out once");
            let (_, _, first_kem, first_one_time) = seen.iter().find(|seen| seen.0 == a_id).unwrap();
            assert!(
                !ids.contains(first_kem) && !ids.contains(first_one_time.as_ref().unwrap()),
                "{name}: a key of the first fetch was handed out again"
            );
        }
        assert_eq!(last_resort, 11, "{name}");
        let spent = fetch(&mesh, doctor.session(), patient.id(), &[&a_id]).await.unwrap();
        let spent = verify_bundles(&spent, &patient, &list);
        assert_eq!(
            (spent[0].1, spent[0].3.clone()),
            (pb::KemPrekeyKind::LastResort, None),
            "{name}"
        );

        // Topped up, one-time keys are served again.
        let identity = patient.identity();
        let (x25519, kem) = a.new_one_time_prekeys(&identity, patient.id(), 5).unwrap();
        let topped = keys(&mesh)
            .upload_device_prekeys(
                patient
                    .session()
                    .request(pb::UploadDevicePrekeysRequest {
                        device_id: a_id.clone(),
                        one_time_prekeys: x25519.into_iter().map(one_time).collect(),
                        kem_one_time_prekeys: kem.into_iter().map(signed).collect(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner()
            .stock
            .unwrap();
        assert_eq!((topped.one_time_prekey_count, topped.kem_one_time_prekey_count), (5, 5));
        let refilled = fetch(&mesh, doctor.session(), patient.id(), &[&a_id]).await.unwrap();
        let refilled = verify_bundles(&refilled, &patient, &list);
        assert_eq!(refilled[0].1, pb::KemPrekeyKind::OneTime, "{name}");
        assert!(refilled[0].3.is_some(), "{name}");

        // A device that is not in the list cannot publish.
        let mut stray = DeviceSecrets::generate().unwrap();
        let refused = publish(&mesh, &patient, &mut stray, 0).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{name}: {refused:?}");
        assert!(refused.message().contains("device list"), "{refused:?}");

        // Another user's list cannot be fetched by someone who may not write to them.
        let other_patient = account(&mesh, mesh.patient().await).await;
        let refused = fetch(&mesh, other_patient.session(), patient.id(), &[])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{name}: {refused:?}");
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn device_lists_need_a_valid_signature_and_the_next_version_and_dropped_devices_lose_their_keys() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = account(&mesh, mesh.patient().await).await;
        let mut a = DeviceSecrets::generate().unwrap();
        let mut b = DeviceSecrets::generate().unwrap();
        let (a_id, b_id) = (a.device_id().to_owned(), b.device_id().to_owned());

        // The first list is version 1.
        let refused = update_list(&mesh, &patient, patient.list(2, &[&a_id, &b_id]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Aborted, "{name}: {refused:?}");
        assert!(refused.message().contains("version 1"), "{refused:?}");
        update_list(&mesh, &patient, patient.list(1, &[&a_id, &b_id]))
            .await
            .unwrap();
        publish(&mesh, &patient, &mut a, 3).await.unwrap();
        publish(&mesh, &patient, &mut b, 3).await.unwrap();

        // A bad signature: one flipped bit, or signed by another identity.
        let mut tampered = patient.list(2, &[&a_id, &b_id]);
        tampered.signature[10] ^= 1;
        let refused = update_list(&mesh, &patient, tampered).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{name}: {refused:?}");
        let impostor = Account {
            user: patient.user.clone(),
            key_id: patient.key_id.clone(),
            seed: random32(),
            dh: random32(),
        };
        let refused = update_list(&mesh, &patient, impostor.list(2, &[&a_id]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{name}: {refused:?}");
        // The same version again, or one ahead: ABORTED with the current version.
        for version in [1, 3] {
            let refused = update_list(&mesh, &patient, patient.list(version, &[&a_id]))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::Aborted, "{name}: version {version}: {refused:?}");
            assert!(refused.message().contains("version 1"), "{refused:?}");
        }
        // More than ten devices.
        let many: Vec<String> = (0..11).map(|_| caremesh_crypto::new_id()).collect();
        let refused = update_list(
            &mesh,
            &patient,
            pb::UpdateDeviceListRequest {
                version: 2,
                device_ids: many,
                signature: vec![0; 64],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{name}: {refused:?}");
        assert_eq!(
            get_list(&mesh, patient.session(), patient.id())
                .await
                .device_list
                .unwrap()
                .version,
            1
        );

        // Version 2 drops b: its keys are gone, and so is its bundle.
        assert!(key_rows(&mesh, &b_id).await > 0);
        let dropped = update_list(&mesh, &patient, patient.list(2, &[&a_id])).await.unwrap();
        assert_eq!(dropped.removed_device_ids, vec![b_id.clone()], "{name}");
        assert_eq!(dropped.device_list.unwrap().version, 2);
        assert_eq!(key_rows(&mesh, &b_id).await, 0, "{name}: b's keys were deleted");
        let read = get_list(&mesh, patient.session(), patient.id()).await;
        let list = verified_list(&read, &patient.public());
        assert_eq!(list.device_ids(), [a_id.clone()].as_slice());
        let bundles = fetch(&mesh, patient.session(), patient.id(), &[]).await.unwrap();
        let seen = verify_bundles(&bundles, &patient, &list);
        assert_eq!(
            seen.iter().map(|seen| seen.0.clone()).collect::<Vec<_>>(),
            vec![a_id.clone()]
        );
        let refused = fetch(&mesh, patient.session(), patient.id(), &[&b_id])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{name}: {refused:?}");
        // And b cannot come back without a list that names it.
        let refused = publish(&mesh, &patient, &mut b, 0).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{name}: {refused:?}");

        // A new identity discards the list and the device keys its predecessor signed.
        let renewed = account(&mesh, patient.user.clone()).await;
        assert_eq!(key_rows(&mesh, &a_id).await, 0, "{name}");
        let missing = keys(&mesh)
            .get_device_list(
                renewed
                    .session()
                    .request(pb::GetDeviceListRequest {
                        user_id: renewed.id().to_owned(),
                    })
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{name}: {missing:?}");
        update_list(&mesh, &renewed, renewed.list(1, &[&a_id])).await.unwrap();
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn an_admin_removes_a_device_and_its_bundle_is_gone() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = account(&mesh, mesh.patient().await).await;
        let doctor = account(&mesh, mesh.staff(Role::Doctor, &[]).await).await;
        let mut a = DeviceSecrets::generate().unwrap();
        let mut b = DeviceSecrets::generate().unwrap();
        let (a_id, b_id) = (a.device_id().to_owned(), b.device_id().to_owned());
        update_list(&mesh, &patient, patient.list(1, &[&a_id, &b_id]))
            .await
            .unwrap();
        publish(&mesh, &patient, &mut a, 2).await.unwrap();
        publish(&mesh, &patient, &mut b, 2).await.unwrap();

        let remove = |session: &Session, device_id: &str| {
            let request = session
                .request(pb::RemoveDeviceRequest {
                    user_id: patient.id().to_owned(),
                    device_id: device_id.to_owned(),
                })
                .unwrap();
            let mut client = keys(&mesh);
            async move { client.remove_device(request).await.map(tonic::Response::into_inner) }
        };
        // Not an admin: refused, also for the device's own user.
        for session in [doctor.session(), patient.session()] {
            let refused = remove(session, &a_id).await.unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied, "{name}: {refused:?}");
        }
        let admin = mesh.admin().await;
        let refused = remove(&admin.session, &caremesh_crypto::new_id()).await.unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{name}: {refused:?}");
        let removed = remove(&admin.session, &a_id).await.unwrap();
        assert_eq!(removed.admin_removed_device_ids, vec![a_id.clone()], "{name}");
        assert_eq!(key_rows(&mesh, &a_id).await, 0, "{name}: a's keys were deleted");

        let read = get_list(&mesh, doctor.session(), patient.id()).await;
        assert_eq!(read.admin_removed_device_ids, vec![a_id.clone()], "{name}");
        let list = verified_list(&read, &patient.public());
        assert!(
            list.contains(&a_id),
            "the signed list is the user's: the server cannot change it"
        );
        let bundles = fetch(&mesh, doctor.session(), patient.id(), &[]).await.unwrap();
        let seen = verify_bundles(&bundles, &patient, &list);
        assert_eq!(
            seen.iter().map(|seen| seen.0.clone()).collect::<Vec<_>>(),
            vec![b_id.clone()],
            "{name}"
        );
        // The removed device cannot publish again.
        let refused = publish(&mesh, &patient, &mut a, 0).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{name}: {refused:?}");
        // The user's next list drops it, and the mark goes with it.
        let dropped = update_list(&mesh, &patient, patient.list(2, &[&b_id])).await.unwrap();
        assert_eq!(dropped.removed_device_ids, vec![a_id.clone()]);
        assert!(
            get_list(&mesh, doctor.session(), patient.id())
                .await
                .admin_removed_device_ids
                .is_empty()
        );
        mesh.shutdown().await;
    }
}

async fn create_link(
    mesh: &TestMesh,
    session: &Session,
    request: &LinkRequest,
) -> Result<pb::DeviceLink, tonic::Status> {
    keys(mesh)
        .create_device_link(
            session
                .request(pb::CreateDeviceLinkRequest {
                    device_id: request.device_id().to_owned(),
                    ephemeral_public: request.ephemeral_public().to_vec(),
                    commitment: request.commitment().unwrap().to_vec(),
                })
                .unwrap(),
        )
        .await
        .map(|response| response.into_inner().link.unwrap())
}

async fn list_links(mesh: &TestMesh, session: &Session) -> Vec<pb::DeviceLink> {
    keys(mesh)
        .list_device_links(session.request(pb::ListDeviceLinksRequest::default()).unwrap())
        .await
        .unwrap()
        .into_inner()
        .links
}

async fn get_link(mesh: &TestMesh, session: &Session, link_id: &str) -> Result<pb::DeviceLink, tonic::Status> {
    keys(mesh)
        .get_device_link(
            session
                .request(pb::GetDeviceLinkRequest {
                    link_id: link_id.to_owned(),
                })
                .unwrap(),
        )
        .await
        .map(|response| response.into_inner().link.unwrap())
}

async fn approve(
    mesh: &TestMesh,
    session: &Session,
    link_id: &str,
    sealed: &SealedProvisioning,
    list: pb::UpdateDeviceListRequest,
) -> Result<pb::ApproveDeviceLinkResponse, tonic::Status> {
    keys(mesh)
        .approve_device_link(
            session
                .request(pb::ApproveDeviceLinkRequest {
                    link_id: link_id.to_owned(),
                    approver_public: sealed.approver_public.to_vec(),
                    sealed: sealed.sealed.clone(),
                    device_list_version: list.version,
                    device_ids: list.device_ids,
                    device_list_signature: list.signature,
                })
                .unwrap(),
        )
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_new_device_is_linked_and_other_users_cannot_see_or_approve_the_link() {
    for backend in backends() {
        let name = backend.name();
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let patient = account(&mesh, mesh.patient().await).await;
        let other = account(&mesh, mesh.patient().await).await;
        let mut first = DeviceSecrets::generate().unwrap();
        let first_id = first.device_id().to_owned();
        update_list(&mesh, &patient, patient.list(1, &[&first_id]))
            .await
            .unwrap();
        publish(&mesh, &patient, &mut first, 2).await.unwrap();

        // 1. The new device opens a link; the server gets E and C, never the code.
        let request = LinkRequest::new(patient.id()).unwrap();
        let link = create_link(&mesh, patient.session(), &request).await.unwrap();
        assert_eq!(link.state(), pb::DeviceLinkState::Pending, "{name}");
        assert_eq!(link.device_id, request.device_id());
        let expires = link.expire_time.unwrap().seconds - link.create_time.unwrap().seconds;
        assert_eq!(expires, 600, "{name}: pending links live 10 minutes");

        // 2. The existing device finds it by the typed code.
        let pending = list_links(&mesh, patient.session()).await;
        assert_eq!(pending.len(), 1, "{name}");
        let found = &pending[0];
        assert_eq!(found.link_id, link.link_id);
        let pending_link = PendingLink {
            user_id: found.user_id.clone(),
            device_id: found.device_id.clone(),
            ephemeral_public: found.ephemeral_public.clone().try_into().unwrap(),
            commitment: found.commitment.clone().try_into().unwrap(),
        };
        assert!(pending_link.matches(&request.code()), "{name}");

        // Another user sees nothing of it and cannot approve it.
        assert!(list_links(&mesh, other.session()).await.is_empty(), "{name}");
        let hidden = get_link(&mesh, other.session(), &link.link_id).await.unwrap_err();
        assert_eq!(hidden.code(), Code::NotFound, "{name}: {hidden:?}");
        let provisioning = Provisioning {
            identity: patient.identity(),
            history: HistoryKeyRing::generate().unwrap(),
            approver_device_id: first_id.clone(),
        };
        let sealed = pending_link.seal(&request.code(), &provisioning).unwrap();
        let stolen = approve(
            &mesh,
            other.session(),
            &link.link_id,
            &sealed,
            other.list(1, &[request.device_id()]),
        )
        .await
        .unwrap_err();
        assert_eq!(stolen.code(), Code::NotFound, "{name}: {stolen:?}");

        // The list must add exactly the link's device.
        let stray = caremesh_crypto::new_id();
        let wrong = approve(
            &mesh,
            patient.session(),
            &link.link_id,
            &sealed,
            patient.list(2, &[&first_id, request.device_id(), &stray]),
        )
        .await
        .unwrap_err();
        assert_eq!(wrong.code(), Code::InvalidArgument, "{name}: {wrong:?}");
        let wrong = approve(
            &mesh,
            patient.session(),
            &link.link_id,
            &sealed,
            patient.list(3, &[&first_id, request.device_id()]),
        )
        .await
        .unwrap_err();
        assert_eq!(wrong.code(), Code::Aborted, "{name}: {wrong:?}");
        assert_eq!(
            get_link(&mesh, patient.session(), &link.link_id).await.unwrap().state(),
            pb::DeviceLinkState::Pending
        );

        // 3. Approved with the sealed provisioning message and the next list.
        let approved = approve(
            &mesh,
            patient.session(),
            &link.link_id,
            &sealed,
            patient.list(2, &[&first_id, request.device_id()]),
        )
        .await
        .unwrap();
        assert_eq!(approved.link.unwrap().state(), pb::DeviceLinkState::Approved, "{name}");
        assert_eq!(approved.device_list.unwrap().version, 2);
        let again = approve(
            &mesh,
            patient.session(),
            &link.link_id,
            &sealed,
            patient.list(3, &[&first_id, request.device_id()]),
        )
        .await
        .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{name}: {again:?}");
        assert!(
            list_links(&mesh, patient.session()).await.is_empty(),
            "approved links are not pending"
        );

        // 4. The new device polls its link, opens the provisioning message and publishes its keys.
        let polled = get_link(&mesh, patient.session(), &link.link_id).await.unwrap();
        assert_eq!(polled.state(), pb::DeviceLinkState::Approved, "{name}");
        let opened = request
            .open(&SealedProvisioning {
                approver_public: polled.approver_public.clone().try_into().unwrap(),
                sealed: polled.sealed.clone(),
            })
            .unwrap();
        assert!(opened.identity.public().same_keys(&patient.public()), "{name}");
        assert_eq!(opened.approver_device_id, first_id);
        let mut linked = DeviceSecrets::generate_for(request.device_id().to_owned()).unwrap();
        publish(&mesh, &patient, &mut linked, 1).await.unwrap();
        let read = get_list(&mesh, other.session(), patient.id()).await;
        let list = verified_list(&read, &patient.public());
        let bundles = fetch(&mesh, patient.session(), patient.id(), &[]).await.unwrap();
        assert_eq!(verify_bundles(&bundles, &patient, &list).len(), 2, "{name}");

        // At most three pending links; they expire after ten minutes.
        let mut requests = Vec::new();
        for _ in 0..3 {
            let request = LinkRequest::new(patient.id()).unwrap();
            create_link(&mesh, patient.session(), &request).await.unwrap();
            requests.push(request);
        }
        let fourth = LinkRequest::new(patient.id()).unwrap();
        let refused = create_link(&mesh, patient.session(), &fourth).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{name}: {refused:?}");
        let listed = create_link(&mesh, patient.session(), &request).await.unwrap_err();
        assert_eq!(listed.code(), Code::FailedPrecondition, "{name}: {listed:?}");
        let oldest = list_links(&mesh, patient.session()).await[0].link_id.clone();
        mesh.advance(601);
        let session = mesh.login_with_totp(&patient.user).await;
        assert_eq!(
            get_link(&mesh, &session, &oldest).await.unwrap().state(),
            pb::DeviceLinkState::Expired,
            "{name}"
        );
        assert!(list_links(&mesh, &session).await.is_empty(), "{name}");
        create_link(&mesh, &session, &fourth).await.unwrap();
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn malformed_ids_and_keys_are_invalid_argument() {
    let mesh = TestMesh::builder().backend(Backend::Sqlite).start().await;
    let patient = account(&mesh, mesh.patient().await).await;
    let mut device = DeviceSecrets::generate().unwrap();
    let good = publish_request(&patient, &mut device, 1);

    let random: [u8; 16] = random32()[..16].try_into().unwrap();
    let v4 = uuid::Builder::from_random_bytes(random).into_uuid().to_string();
    let mut cases: Vec<(&str, pb::PublishDeviceRequest)> = Vec::new();
    for bad_id in ["not-a-uuid", v4.as_str(), &device.device_id().to_uppercase()] {
        cases.push((
            "device id",
            pb::PublishDeviceRequest {
                device_id: bad_id.to_owned(),
                ..good.clone()
            },
        ));
    }
    let mut short = good.clone();
    short.signed_prekey.as_mut().unwrap().public_key.pop();
    cases.push(("31-byte signed prekey", short));
    let mut short_kem = good.clone();
    short_kem.last_resort_prekey.as_mut().unwrap().public_key.truncate(1000);
    cases.push(("short ML-KEM key", short_kem));
    let mut bad_key_id = good.clone();
    bad_key_id.kem_one_time_prekeys[0].key_id = v4.clone();
    cases.push(("non-UUIDv7 key id", bad_key_id));
    let mut short_one_time = good.clone();
    short_one_time.one_time_prekeys[0].public_key.truncate(16);
    cases.push(("16-byte one-time key", short_one_time));
    let mut swapped = good.clone();
    swapped.last_resort_prekey = good.kem_one_time_prekeys.first().cloned();
    cases.push(("one-time key as last-resort (wrong kind label)", swapped));
    let mut unsigned = good.clone();
    unsigned.signed_prekey.as_mut().unwrap().signature.clear();
    cases.push(("no signature", unsigned));
    let mut missing = good.clone();
    missing.last_resort_prekey = None;
    cases.push(("no last-resort key", missing));
    for (what, request) in cases {
        let refused = keys(&mesh)
            .publish_device(patient.session().request(request).unwrap())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
        assert!(!refused.message().is_empty(), "{what}");
    }
    assert_eq!(key_rows(&mesh, device.device_id()).await, 0, "nothing was stored");
    keys(&mesh)
        .publish_device(patient.session().request(good).unwrap())
        .await
        .unwrap();

    // Links: key lengths and ids.
    let request = LinkRequest::new(patient.id()).unwrap();
    for (device_id, ephemeral, commitment) in [
        (request.device_id().to_owned(), vec![1u8; 31], vec![2u8; 32]),
        (request.device_id().to_owned(), vec![1u8; 32], vec![2u8; 33]),
        (v4.clone(), vec![1u8; 32], vec![2u8; 32]),
    ] {
        let refused = keys(&mesh)
            .create_device_link(
                patient
                    .session()
                    .request(pb::CreateDeviceLinkRequest {
                        device_id,
                        ephemeral_public: ephemeral,
                        commitment,
                    })
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    let refused = get_link(&mesh, patient.session(), "1234").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = fetch(&mesh, patient.session(), patient.id(), &[&v4]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = update_list(
        &mesh,
        &patient,
        pb::UpdateDeviceListRequest {
            version: 1,
            device_ids: vec![v4.clone()],
            signature: vec![0; 64],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    mesh.shutdown().await;
}
