//! audit-svc through the real services: the Merkle tree's proofs and signed checkpoints, offline
//! verification catching tampering done directly in the database (both backends), idempotent
//! ingestion, the patient access report, auditor queries, and the alert rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use audit_svc::settings as audit_settings;
use audit_svc::storage::{event as event_row, tree_state};
use audit_svc::verify::{VerifyError, verify_log};
use caremesh_proto::audit::v1::audit_internal_service_client::AuditInternalServiceClient;
use caremesh_proto::audit::v1::audit_service_client::AuditServiceClient;
use caremesh_proto::audit::v1::{
    self as pb, AlertKind, AuditAction, AuditActor, AuditEvent, AuditOutcome, IngestEventsRequest,
};
use caremesh_runtime::clock::{Clock, SharedClock};
use caremesh_runtime::kek::Kek;
use caremesh_runtime::outbox::Outbox;
use caremesh_sdk::auth::Role;
use caremesh_testkit::{Caller, Service, TestMesh, TestUser, backends, eventually};
use caremesh_tlog::checkpoint::NoteVerifier;
use prost::Message;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set, TransactionTrait};
use tonic::Code;
use tonic::transport::Channel;

fn audit_client(mesh: &TestMesh) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(mesh.channel(Service::Audit, Caller::Anonymous))
}

fn clock(mesh: &TestMesh) -> SharedClock {
    Arc::new(mesh.clock().clone())
}

/// An event as `service` would emit it.
fn event(mesh: &TestMesh, service: Service, actor: &str, patient: &str) -> AuditEvent {
    let mut event = Outbox::new(service, clock(mesh)).new_event();
    event.set_action(AuditAction::Read);
    event.set_outcome(AuditOutcome::Success);
    event.operation = "/caremesh.records.v1.RecordsService/GetRecord".to_owned();
    event.entity_type = "Record".to_owned();
    event.entity_id = uuid::Uuid::now_v7().to_string();
    event.patient_id = patient.to_owned();
    event.purpose_of_use = "TREAT".to_owned();
    event.actor = Some(AuditActor {
        user_id: actor.to_owned(),
        role: "doctor".to_owned(),
        source_address: "10.1.2.3:40000".to_owned(),
        ..AuditActor::default()
    });
    event
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Ships `events` as `service`'s relay does.
async fn ingest(mesh: &TestMesh, service: Service, events: Vec<AuditEvent>) -> pb::IngestEventsResponse {
    let mut client = AuditInternalServiceClient::new(mesh.channel(Service::Audit, Caller::Service(service)));
    client
        .ingest_events(IngestEventsRequest { events })
        .await
        .unwrap()
        .into_inner()
}

async fn create_checkpoint(mesh: &TestMesh, auditor: &TestUser) -> pb::Checkpoint {
    audit_client(mesh)
        .create_checkpoint(auditor.session.request(pb::CreateCheckpointRequest {}).unwrap())
        .await
        .unwrap()
        .into_inner()
        .checkpoint
        .unwrap()
}

fn flip(hash: &mut [u8]) {
    hash[3] ^= 0x10;
}

fn to_hash(bytes: &[u8]) -> caremesh_tlog::Hash {
    bytes.try_into().unwrap()
}

#[tokio::test]
async fn inclusion_and_consistency_proofs_verify_for_many_sizes_and_fail_when_altered() {
    let mesh = TestMesh::start().await;
    let auditor = mesh.created(Role::Auditor).await;
    let patient = mesh.patient().await;
    let mut client = audit_client(&mesh);

    let key = client
        .get_verification_key(patient.session.request(pb::GetVerificationKeyRequest {}).unwrap())
        .await
        .unwrap()
        .into_inner();
    let verifier = NoteVerifier::parse(&key.verifier_key).unwrap();
    assert_eq!(verifier.public_key().to_vec(), key.public_key);
    assert_eq!(key.key_name, key.origin);

    let mut previous: Option<pb::Checkpoint> = None;
    let mut proven_sizes = BTreeSet::new();
    // Batches of 1, 2, 3, ... events: many tree sizes, most of them not powers of two (the
    // services' own events arrive in between, too).
    for batch in 1..=14usize {
        let events: Vec<AuditEvent> = (0..batch)
            .map(|_| event(&mesh, Service::Records, &id(), &id()))
            .collect();
        ingest(&mesh, Service::Records, events.clone()).await;
        let checkpoint = create_checkpoint(&mesh, &auditor).await;
        let opened = verifier
            .open_checkpoint(&checkpoint.signed_note, Some(&key.origin))
            .unwrap();
        assert_eq!(opened.size, checkpoint.tree_size);
        assert_eq!(opened.root.to_vec(), checkpoint.root_hash);
        proven_sizes.insert(checkpoint.tree_size);

        // Inclusion of every event of the batch, by id, against this checkpoint.
        for event in &events {
            let proof = client
                .get_inclusion_proof(
                    auditor
                        .session
                        .request(pb::GetInclusionProofRequest {
                            leaf: Some(pb::get_inclusion_proof_request::Leaf::EventId(event.event_id.clone())),
                            tree_size: checkpoint.tree_size,
                        })
                        .unwrap(),
                )
                .await
                .unwrap()
                .into_inner();
            let entry = proof.entry.unwrap();
            assert_eq!(AuditEvent::decode(entry.leaf_value.as_slice()).unwrap(), *event);
            let leaf = caremesh_tlog::leaf_hash(&entry.leaf_value);
            assert_eq!(leaf.to_vec(), entry.leaf_hash);
            let hashes: Vec<caremesh_tlog::Hash> = proof.hashes.iter().map(|h| to_hash(h)).collect();
            let root = to_hash(&checkpoint.root_hash);
            caremesh_tlog::verify_inclusion(&leaf, entry.leaf_index, checkpoint.tree_size, &hashes, &root).unwrap();
            for i in 0..hashes.len() {
                let mut bad = hashes.clone();
                flip(&mut bad[i]);
                assert!(
                    caremesh_tlog::verify_inclusion(&leaf, entry.leaf_index, checkpoint.tree_size, &bad, &root)
                        .is_err()
                );
            }
            let mut bad_leaf = leaf;
            flip(&mut bad_leaf);
            assert!(
                caremesh_tlog::verify_inclusion(&bad_leaf, entry.leaf_index, checkpoint.tree_size, &hashes, &root)
                    .is_err()
            );
        }

        // Consistency with every earlier size proven so far, against this checkpoint.
        if let Some(previous) = &previous {
            {
                let first_root = client
                    .get_checkpoint(
                        patient
                            .session
                            .request(pb::GetCheckpointRequest {
                                tree_size: previous.tree_size,
                            })
                            .unwrap(),
                    )
                    .await
                    .unwrap()
                    .into_inner()
                    .checkpoint
                    .unwrap();
                let proof = client
                    .get_consistency_proof(
                        patient
                            .session
                            .request(pb::GetConsistencyProofRequest {
                                first_tree_size: first_root.tree_size,
                                second_tree_size: checkpoint.tree_size,
                            })
                            .unwrap(),
                    )
                    .await
                    .unwrap()
                    .into_inner();
                let hashes: Vec<caremesh_tlog::Hash> = proof.hashes.iter().map(|h| to_hash(h)).collect();
                let (r1, r2) = (to_hash(&first_root.root_hash), to_hash(&checkpoint.root_hash));
                caremesh_tlog::verify_consistency(first_root.tree_size, checkpoint.tree_size, &hashes, &r1, &r2)
                    .unwrap();
                for i in 0..hashes.len() {
                    let mut bad = hashes.clone();
                    flip(&mut bad[i]);
                    assert!(
                        caremesh_tlog::verify_consistency(first_root.tree_size, checkpoint.tree_size, &bad, &r1, &r2)
                            .is_err()
                    );
                }
                let mut bad_root = r1;
                flip(&mut bad_root);
                if first_root.tree_size != checkpoint.tree_size {
                    assert!(
                        caremesh_tlog::verify_consistency(
                            first_root.tree_size,
                            checkpoint.tree_size,
                            &hashes,
                            &bad_root,
                            &r2
                        )
                        .is_err()
                    );
                }
            }
        }
        previous = Some(checkpoint);
    }
    assert!(proven_sizes.len() >= 10, "sizes proven: {proven_sizes:?}");
    assert!(proven_sizes.iter().any(|size| !size.is_power_of_two()));

    // Consistency proofs between every pair of sizes proven above.
    let sizes: Vec<u64> = proven_sizes.iter().copied().collect();
    let mut roots = std::collections::BTreeMap::new();
    for size in &sizes {
        let checkpoint = client
            .get_checkpoint(
                patient
                    .session
                    .request(pb::GetCheckpointRequest { tree_size: *size })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner()
            .checkpoint
            .unwrap();
        roots.insert(*size, to_hash(&checkpoint.root_hash));
    }
    for (i, first) in sizes.iter().enumerate() {
        for second in &sizes[i..] {
            let proof = client
                .get_consistency_proof(
                    patient
                        .session
                        .request(pb::GetConsistencyProofRequest {
                            first_tree_size: *first,
                            second_tree_size: *second,
                        })
                        .unwrap(),
                )
                .await
                .unwrap()
                .into_inner();
            let hashes: Vec<caremesh_tlog::Hash> = proof.hashes.iter().map(|h| to_hash(h)).collect();
            caremesh_tlog::verify_consistency(*first, *second, &hashes, &roots[first], &roots[second]).unwrap();
        }
    }

    // Bad requests get clear statuses.
    let too_far = client
        .get_consistency_proof(
            patient
                .session
                .request(pb::GetConsistencyProofRequest {
                    first_tree_size: u64::MAX / 4,
                    second_tree_size: 0,
                })
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(too_far.code(), Code::InvalidArgument);
    let missing = client
        .get_checkpoint(
            patient
                .session
                .request(pb::GetCheckpointRequest { tree_size: 999_999 })
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A patient may not fetch other people's events through inclusion proofs.
    let denied = client
        .get_inclusion_proof(
            patient
                .session
                .request(pb::GetInclusionProofRequest {
                    leaf: Some(pb::get_inclusion_proof_request::Leaf::LeafIndex(0)),
                    tree_size: 0,
                })
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unauthenticated = client
        .get_checkpoint(pb::GetCheckpointRequest { tree_size: 0 })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);

    // The background checkpointer signs the latest events without being asked.
    let extra = event(&mesh, Service::Records, &id(), &id());
    ingest(&mesh, Service::Records, vec![extra]).await;
    let log = mesh.audit_log().await;
    let size = log.tree_size().await.unwrap();
    let signed = eventually(Duration::from_secs(10), || async {
        let latest = audit_client(&mesh)
            .get_checkpoint(
                patient
                    .session
                    .request(pb::GetCheckpointRequest { tree_size: 0 })
                    .unwrap(),
            )
            .await
            .unwrap()
            .into_inner()
            .checkpoint
            .unwrap();
        (latest.tree_size >= size).then_some(latest)
    })
    .await;
    assert!(signed.is_some(), "no checkpoint covers the newest event");

    // And the export streams the checkpoint first, then entries whose proofs verify.
    let mut stream = client
        .export_events(
            auditor
                .session
                .request(pb::ExportEventsRequest {
                    start_index: 0,
                    end_index: 0,
                    include_proofs: true,
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    let Some(pb::export_events_response::Item::Checkpoint(head)) = stream.message().await.unwrap().unwrap().item else {
        panic!("the export starts with its checkpoint");
    };
    let root = to_hash(&head.root_hash);
    let mut exported = 0u64;
    while let Some(item) = stream.message().await.unwrap() {
        let Some(pb::export_events_response::Item::Entry(entry)) = item.item else {
            panic!("only entries follow the checkpoint");
        };
        let log_entry = entry.entry.unwrap();
        assert_eq!(log_entry.leaf_index, exported);
        let hashes: Vec<caremesh_tlog::Hash> = entry.inclusion_proof.iter().map(|h| to_hash(h)).collect();
        caremesh_tlog::verify_inclusion(
            &caremesh_tlog::leaf_hash(&log_entry.leaf_value),
            log_entry.leaf_index,
            head.tree_size,
            &hashes,
            &root,
        )
        .unwrap();
        exported += 1;
    }
    assert_eq!(exported, head.tree_size);
    mesh.shutdown().await;
}

async fn stored_row(db: &sea_orm::DatabaseConnection, index: i64) -> event_row::Model {
    event_row::Entity::find()
        .filter(event_row::Column::LeafIndex.eq(index))
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

async fn set_leaf_index<C: sea_orm::ConnectionTrait>(db: &C, seq: i64, index: i64) {
    let mut row = event_row::Entity::find_by_id(seq)
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    row.leaf_index = Set(Some(index));
    row.update(db).await.unwrap();
}

/// A row exactly as audit-svc would store `event` at `index` (a forger who knows the schema).
fn forged_row(event: &AuditEvent, index: i64) -> event_row::ActiveModel {
    let payload = event.encode_to_vec();
    let actor = event.actor.clone().unwrap_or_default();
    event_row::ActiveModel {
        seq: sea_orm::ActiveValue::NotSet,
        event_id: Set(event.event_id.clone()),
        recorded_at: Set(caremesh_runtime::time::from_timestamp(event.recorded_at.as_ref().unwrap()).unwrap()),
        ingested_at: Set(chrono::Utc::now()),
        service: Set(event.service.clone()),
        actor_user_id: Set(actor.user_id),
        patient_id: Set(event.patient_id.clone()),
        action: Set(event.action),
        outcome: Set(event.outcome),
        leaf_index: Set(Some(index)),
        leaf_hash: Set(Some(caremesh_tlog::leaf_hash(&payload).to_vec())),
        payload: Set(payload),
        operation: Set(event.operation.clone()),
        entity_type: Set(event.entity_type.clone()),
        entity_id: Set(event.entity_id.clone()),
        source_address: Set(String::new()),
        emergency: Set(event.emergency),
    }
}

#[tokio::test]
async fn verify_detects_edited_deleted_reordered_and_inserted_events_on_every_backend() {
    for backend in backends() {
        let name = backend.name();
        let mut mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let auditor = mesh.created(Role::Auditor).await;
        let events: Vec<AuditEvent> = (0..37).map(|_| event(&mesh, Service::Records, &id(), &id())).collect();
        ingest(&mesh, Service::Records, events).await;
        create_checkpoint(&mesh, &auditor).await;
        mesh.stop_service(Service::Audit).await;
        let db = mesh.database(Service::Audit).await;
        let kek = Kek::load(&mesh.config(Service::Audit).kek_file).unwrap();
        // With the service stopped, sign a checkpoint of everything (as the service would).
        audit_svc::checkpoints::Checkpointer::open(db.clone(), clock(&mesh), &kek, "caremesh.local/audit")
            .await
            .unwrap()
            .create()
            .await
            .unwrap();
        let report = verify_log(&db, &kek).await.unwrap();
        assert!(report.tree_size >= 37, "{name}");
        assert!(report.checkpoints_checked >= 1, "{name}");

        // The operator's export: the checkpoint, then every event with a proof that verifies.
        let mut out = Vec::new();
        let written = audit_svc::verify::export_jsonl(&db, &mut out).await.unwrap();
        assert_eq!(written, report.tree_size, "{name}");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let head = &lines[0]["checkpoint"];
        let root = to_hash(&unhex(head["root_hash"].as_str().unwrap()));
        assert_eq!(head["tree_size"].as_u64().unwrap(), report.tree_size);
        for line in &lines[1..] {
            use base64::Engine as _;
            let leaf = base64::engine::general_purpose::STANDARD
                .decode(line["leaf_value"].as_str().unwrap())
                .unwrap();
            let proof: Vec<caremesh_tlog::Hash> = line["inclusion_proof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| to_hash(&unhex(h.as_str().unwrap())))
                .collect();
            caremesh_tlog::verify_inclusion(
                &caremesh_tlog::leaf_hash(&leaf),
                line["leaf_index"].as_u64().unwrap(),
                report.tree_size,
                &proof,
                &root,
            )
            .unwrap();
        }

        // Edit: another patient in the stored bytes.
        let original = stored_row(&db, 10).await;
        let mut edited = AuditEvent::decode(original.payload.as_slice()).unwrap();
        edited.patient_id = id();
        let mut row = original.clone().into_active_model();
        row.payload = Set(edited.encode_to_vec());
        row.update(&db).await.unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(
            matches!(error, VerifyError::LeafHashMismatch { index: 10, .. }),
            "{name}: {error}"
        );
        // ... and with the leaf hash recomputed to match, the stored tree no longer does.
        let mut row = stored_row(&db, 10).await.into_active_model();
        row.leaf_hash = Set(Some(caremesh_tlog::leaf_hash(&edited.encode_to_vec()).to_vec()));
        row.patient_id = Set(edited.patient_id.clone());
        row.update(&db).await.unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(
            matches!(error, VerifyError::NodeMismatch { level: 1, index: 5, .. }),
            "{name}: {error}"
        );
        // ... and a query column changed alone is caught too.
        original
            .clone()
            .into_active_model()
            .reset_all()
            .update(&db)
            .await
            .unwrap();
        let mut row = stored_row(&db, 10).await.into_active_model();
        row.patient_id = Set(id());
        row.update(&db).await.unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(
            matches!(error, VerifyError::ColumnMismatch { index: 10, .. }),
            "{name}: {error}"
        );
        original
            .clone()
            .into_active_model()
            .reset_all()
            .update(&db)
            .await
            .unwrap();
        verify_log(&db, &kek).await.unwrap();

        // Delete.
        let deleted = stored_row(&db, 7).await;
        event_row::Entity::delete_by_id(deleted.seq).exec(&db).await.unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(
            matches!(error, VerifyError::MissingLeaf { index: 7 }),
            "{name}: {error}"
        );
        event_row::Entity::insert(deleted.clone().into_active_model().reset_all())
            .exec_without_returning(&db)
            .await
            .unwrap();
        verify_log(&db, &kek).await.unwrap();

        // Delete the newest event and shrink the tree to hide it: the signed checkpoint catches it.
        let size = report.tree_size as i64;
        let last = stored_row(&db, size - 1).await;
        event_row::Entity::delete_by_id(last.seq).exec(&db).await.unwrap();
        let mut state = tree_state::Entity::find_by_id(1)
            .one(&db)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        state.size = Set(size - 1);
        state.update(&db).await.unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::ExtraNode { .. } | VerifyError::CheckpointBeyondLog { .. }
            ),
            "{name}: {error}"
        );
        event_row::Entity::insert(last.clone().into_active_model().reset_all())
            .exec_without_returning(&db)
            .await
            .unwrap();
        let mut state = tree_state::Entity::find_by_id(1)
            .one(&db)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        state.size = Set(size);
        state.update(&db).await.unwrap();
        verify_log(&db, &kek).await.unwrap();

        // Reorder: swap two events' positions.
        let (a, b) = (stored_row(&db, 3).await, stored_row(&db, 4).await);
        let txn = db.begin().await.unwrap();
        set_leaf_index(&txn, a.seq, -1).await;
        set_leaf_index(&txn, b.seq, 3).await;
        set_leaf_index(&txn, a.seq, 4).await;
        txn.commit().await.unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(
            matches!(error, VerifyError::NodeMismatch { level: 1, index: 1, .. }),
            "{name}: {error}"
        );
        set_leaf_index(&db, a.seq, -1).await;
        set_leaf_index(&db, b.seq, 4).await;
        set_leaf_index(&db, a.seq, 3).await;
        verify_log(&db, &kek).await.unwrap();

        // Insert: a forged event appended after the last leaf.
        let forged = event(&mesh, Service::Records, &id(), &id());
        event_row::Entity::insert(forged_row(&forged, size))
            .exec_without_returning(&db)
            .await
            .unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(matches!(error, VerifyError::BeyondTree { .. }), "{name}: {error}");
        event_row::Entity::delete_many()
            .filter(event_row::Column::EventId.eq(forged.event_id.as_str()))
            .exec(&db)
            .await
            .unwrap();
        verify_log(&db, &kek).await.unwrap();

        // Insert in the middle: the later events shifted up by one.
        let mut moved = Vec::new();
        for index in (20..size).rev() {
            let row = stored_row(&db, index).await;
            set_leaf_index(&db, row.seq, index + 1).await;
            moved.push(row.seq);
        }
        let forged = event(&mesh, Service::Records, &id(), &id());
        event_row::Entity::insert(forged_row(&forged, 20))
            .exec_without_returning(&db)
            .await
            .unwrap();
        let error = verify_log(&db, &kek).await.unwrap_err();
        assert!(
            matches!(error, VerifyError::BeyondTree { .. } | VerifyError::NodeMismatch { .. }),
            "{name}: {error}"
        );
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn an_event_delivered_twice_appears_once() {
    let mesh = TestMesh::start().await;
    let events: Vec<AuditEvent> = (0..5).map(|_| event(&mesh, Service::Records, &id(), &id())).collect();
    let first = ingest(&mesh, Service::Records, events.clone()).await;
    assert_eq!((first.accepted, first.duplicates), (5, 0));
    let log = mesh.audit_log().await;
    let size = log.tree_size().await.unwrap();
    // The relay retries after a lost answer, and a batch repeats an event.
    let mut again = events.clone();
    again.push(events[0].clone());
    let second = ingest(&mesh, Service::Records, again).await;
    assert_eq!((second.accepted, second.duplicates), (0, 6));
    let fresh = event(&mesh, Service::Records, &id(), &id());
    let third = ingest(&mesh, Service::Records, vec![fresh.clone(), fresh.clone()]).await;
    assert_eq!((third.accepted, third.duplicates), (1, 1));
    let stored = log.events().await.unwrap();
    for event in events.iter().chain([&fresh]) {
        assert_eq!(stored.iter().filter(|e| e.event_id == event.event_id).count(), 1);
    }
    assert!(log.tree_size().await.unwrap() <= size + 1 + 20, "no duplicate leaves");
    assert_eq!(log.tree_size().await.unwrap(), log.event_count().await.unwrap());
    mesh.shutdown().await;
}

/// A full batch goes into one multi-row statement (17 columns x 1000 rows of bind parameters):
/// stored whole on both backends, idempotent when sent again, and one event more is refused.
#[tokio::test]
async fn a_full_batch_is_stored_in_one_call_on_every_backend() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend).start().await;
        let events: Vec<AuditEvent> = (0..audit_svc::log::MAX_BATCH)
            .map(|i| event(&mesh, Service::Records, &id(), &format!("patient-{}", i % 37)))
            .collect();
        let stored = ingest(&mesh, Service::Records, events.clone()).await;
        assert_eq!((stored.accepted, stored.duplicates), (1000, 0));
        let again = ingest(&mesh, Service::Records, events.clone()).await;
        assert_eq!((again.accepted, again.duplicates), (0, 1000));
        let extra = event(&mesh, Service::Records, &id(), &id());
        let mut too_many = events;
        too_many.push(extra.clone());
        let mut client =
            AuditInternalServiceClient::new(mesh.channel(Service::Audit, Caller::Service(Service::Records)));
        let refused = client
            .ingest_events(IngestEventsRequest { events: too_many })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("at most 1000"), "{}", refused.message());
        let log = mesh.audit_log().await;
        let stored = log.events().await.unwrap();
        assert!(
            stored.iter().all(|e| e.event_id != extra.event_id),
            "nothing of the refused batch is stored"
        );
        assert_eq!(log.tree_size().await.unwrap(), log.event_count().await.unwrap());
        mesh.shutdown().await;
    }
}

async fn accesses(
    mesh: &TestMesh,
    user: &TestUser,
    patient_id: &str,
    include_own: bool,
) -> Result<Vec<pb::PatientAccess>, tonic::Status> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit_client(mesh)
            .list_patient_accesses(
                user.session
                    .request(pb::ListPatientAccessesRequest {
                        patient_id: patient_id.to_owned(),
                        page_size: 2,
                        page_token: token.clone(),
                        include_own,
                        ..Default::default()
                    })
                    .unwrap(),
            )
            .await?
            .into_inner();
        all.extend(page.accesses);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_patient_sees_exactly_the_accesses_to_their_own_records() {
    let mesh = TestMesh::start().await;
    let alice = mesh.patient().await;
    let bob = mesh.patient().await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let auditor = mesh.created(Role::Auditor).await;

    // Written by records-svc in its own transactions, shipped by its relay.
    let records = Outbox::new(Service::Records, clock(&mesh));
    let db = mesh.database(Service::Records).await;
    let mut written = Vec::new();
    for (actor, patient, emergency) in [
        (&doctor.user_id, &alice.user_id, false),
        (&doctor.user_id, &alice.user_id, true),
        (&doctor.user_id, &bob.user_id, false),
        (&alice.user_id, &alice.user_id, false),
    ] {
        let mut event = event(&mesh, Service::Records, actor, patient);
        event.emergency = emergency;
        if emergency {
            event.purpose_of_use = "ETREAT".to_owned();
        }
        let txn = db.begin().await.unwrap();
        records.record(&txn, &event).await.unwrap();
        txn.commit().await.unwrap();
        written.push(event);
    }
    let log = mesh.audit_log().await;
    let arrived = eventually(Duration::from_secs(15), || async {
        let stored = log.events().await.unwrap();
        written
            .iter()
            .all(|w| stored.iter().any(|s| s.event_id == w.event_id))
            .then_some(())
    })
    .await;
    assert!(arrived.is_some(), "events never arrived");

    let ids = |list: &[pb::PatientAccess]| list.iter().map(|a| a.event_id.clone()).collect::<BTreeSet<_>>();
    let alice_sees = accesses(&mesh, &alice, "", false).await.unwrap();
    assert_eq!(ids(&alice_sees), ids_of(&written[..2]));
    let emergency = alice_sees.iter().find(|a| a.emergency).unwrap();
    assert_eq!(emergency.purpose_of_use, "ETREAT");
    assert_eq!(emergency.actor_user_id, doctor.user_id);
    assert_eq!(emergency.actor_role, "doctor");
    assert_eq!(emergency.actor_username, doctor.username);
    assert_eq!(emergency.actor_display_name, "Test Clinician");
    let with_own = accesses(&mesh, &alice, &alice.user_id, true).await.unwrap();
    assert!(ids(&with_own).is_superset(&ids_of(&[written[0].clone(), written[1].clone(), written[3].clone()])));
    assert!(!ids(&with_own).contains(&written[2].event_id));

    // Nobody else's: not Bob's, not through another id, not for the doctor.
    let denied = accesses(&mesh, &alice, &bob.user_id, false).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = accesses(&mesh, &doctor, &alice.user_id, false).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bob_sees = accesses(&mesh, &bob, "", false).await.unwrap();
    assert_eq!(ids(&bob_sees), ids_of(&written[2..3]));

    // Auditors may ask for any patient.
    let for_auditor = accesses(&mesh, &auditor, &bob.user_id, false).await.unwrap();
    assert!(ids(&for_auditor).contains(&written[2].event_id));
    mesh.shutdown().await;
}

fn ids_of(events: &[AuditEvent]) -> BTreeSet<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

async fn query(
    mesh: &TestMesh,
    user: &TestUser,
    request: pb::QueryEventsRequest,
) -> Result<Vec<pb::LogEntry>, tonic::Status> {
    let mut all = Vec::new();
    let mut request = request;
    request.page_size = 3;
    loop {
        let page = audit_client(mesh)
            .query_events(user.session.request(request.clone()).unwrap())
            .await?
            .into_inner();
        all.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}

fn entry_ids(entries: &[pb::LogEntry]) -> BTreeSet<String> {
    entries
        .iter()
        .map(|e| e.event.as_ref().unwrap().event_id.clone())
        .collect()
}

#[tokio::test]
async fn an_auditor_query_finds_events_by_each_filter_and_nobody_else_may_query() {
    let mesh = TestMesh::start().await;
    let auditor = mesh.created(Role::Auditor).await;
    let doctor = mesh.staff(Role::Doctor, &["dept:cardiology"]).await;
    let patient = mesh.patient().await;

    let (actor, patient_id) = (id(), id());
    let now = mesh.clock().now();
    let long_ago = now - chrono::TimeDelta::days(400);
    let mut events = Vec::new();
    for i in 0..7 {
        let mut e = event(&mesh, Service::Records, &actor, &patient_id);
        if i == 0 {
            e.set_action(AuditAction::Delete);
        }
        if i == 1 {
            e.set_outcome(AuditOutcome::Error);
            e.outcome_reason = "STALE_ETAG".to_owned();
        }
        if i == 2 {
            e.emergency = true;
        }
        if i == 3 {
            e.recorded_at = Some(caremesh_runtime::time::to_timestamp(long_ago));
            e.operation = "/caremesh.records.v1.RecordsService/ListRecords".to_owned();
        }
        events.push(e);
    }
    let mut other = event(&mesh, Service::Records, &id(), &id());
    other.entity_type = "Message".to_owned();
    events.push(other.clone());
    ingest(&mesh, Service::Records, events.clone()).await;

    let ours = ids_of(&events[..7]);
    let by = |request: pb::QueryEventsRequest| {
        let mesh = &mesh;
        let auditor = &auditor;
        async move { entry_ids(&query(mesh, auditor, request).await.unwrap()) }
    };
    let records = Service::Records.spiffe_id().to_string();
    assert_eq!(
        by(pb::QueryEventsRequest {
            patient_id: patient_id.clone(),
            service: records.clone(),
            ..Default::default()
        })
        .await,
        ours
    );
    assert_eq!(
        by(pb::QueryEventsRequest {
            actor_user_id: actor.clone(),
            ..Default::default()
        })
        .await,
        ours
    );
    let deletes = by(pb::QueryEventsRequest {
        actor_user_id: actor.clone(),
        action: AuditAction::Delete as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(deletes, ids_of(&events[0..1]));
    let errors = by(pb::QueryEventsRequest {
        patient_id: patient_id.clone(),
        service: records.clone(),
        outcome: AuditOutcome::Error as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(errors, ids_of(&events[1..2]));
    let emergencies = by(pb::QueryEventsRequest {
        actor_user_id: actor.clone(),
        emergency_only: true,
        ..Default::default()
    })
    .await;
    assert_eq!(emergencies, ids_of(&events[2..3]));
    let old = by(pb::QueryEventsRequest {
        patient_id: patient_id.clone(),
        service: records.clone(),
        end_time: Some(caremesh_runtime::time::to_timestamp(now - chrono::TimeDelta::days(1))),
        ..Default::default()
    })
    .await;
    assert_eq!(old, ids_of(&events[3..4]));
    let recent = by(pb::QueryEventsRequest {
        patient_id: patient_id.clone(),
        actor_user_id: actor.clone(),
        start_time: Some(caremesh_runtime::time::to_timestamp(now - chrono::TimeDelta::days(1))),
        ..Default::default()
    })
    .await;
    assert_eq!(recent.len(), 6);
    let by_operation = by(pb::QueryEventsRequest {
        operation: "/caremesh.records.v1.RecordsService/ListRecords".to_owned(),
        actor_user_id: actor.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_operation, ids_of(&events[3..4]));
    let by_entity = by(pb::QueryEventsRequest {
        entity_id: events[5].entity_id.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_entity, ids_of(&events[5..6]));
    let by_type = by(pb::QueryEventsRequest {
        entity_type: "Message".to_owned(),
        actor_user_id: other.actor.as_ref().unwrap().user_id.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_type, ids_of(&[other]));

    // Oldest first is log order; newest first the reverse.
    let oldest = query(
        &mesh,
        &auditor,
        pb::QueryEventsRequest {
            actor_user_id: actor.clone(),
            order: pb::SortOrder::OldestFirst as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let newest = query(
        &mesh,
        &auditor,
        pb::QueryEventsRequest {
            actor_user_id: actor.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let forward: Vec<u64> = oldest.iter().map(|e| e.leaf_index).collect();
    let mut backward: Vec<u64> = newest.iter().map(|e| e.leaf_index).collect();
    backward.reverse();
    assert_eq!(forward, backward);
    assert!(forward.windows(2).all(|w| w[0] < w[1]));

    // A page token only continues the query it came from.
    let first = audit_client(&mesh)
        .query_events(
            auditor
                .session
                .request(pb::QueryEventsRequest {
                    actor_user_id: actor.clone(),
                    page_size: 2,
                    ..Default::default()
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    for (token, filter) in [
        (first.next_page_token.clone(), patient_id.clone()),
        ("garbage".to_owned(), String::new()),
    ] {
        let error = audit_client(&mesh)
            .query_events(
                auditor
                    .session
                    .request(pb::QueryEventsRequest {
                        actor_user_id: actor.clone(),
                        patient_id: filter,
                        page_token: token,
                        ..Default::default()
                    })
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    // Non-auditors may not query.
    for user in [&doctor, &patient] {
        let error = audit_client(&mesh)
            .query_events(user.session.request(pb::QueryEventsRequest::default()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied, "{}", user.username);
        let error = audit_client(&mesh)
            .list_alerts(user.session.request(pb::ListAlertsRequest::default()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::PermissionDenied);
    }
    let error = audit_client(&mesh)
        .query_events(pb::QueryEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);

    // Every query is audited, granted or denied.
    let log = mesh.audit_log().await;
    let audited = eventually(Duration::from_secs(15), || async {
        let stored = log.events().await.unwrap();
        let granted = stored.iter().any(|e| {
            e.operation.ends_with("/QueryEvents")
                && e.actor.as_ref().unwrap().user_id == auditor.user_id
                && e.outcome == AuditOutcome::Success as i32
                && e.patient_id == patient_id
        });
        let denied = stored.iter().any(|e| {
            e.operation.ends_with("/QueryEvents")
                && e.actor.as_ref().unwrap().user_id == doctor.user_id
                && e.outcome == AuditOutcome::Denied as i32
        });
        (granted && denied).then_some(())
    })
    .await;
    assert!(audited.is_some(), "queries were not audited");
    mesh.shutdown().await;
}

fn login_failure(mesh: &TestMesh, account: &str, source: &str) -> AuditEvent {
    let mut event = Outbox::new(Service::Auth, clock(mesh)).new_event();
    event.set_action(AuditAction::Execute);
    event.set_outcome(AuditOutcome::Denied);
    event.outcome_reason = "WRONG_PASSWORD".to_owned();
    event.operation = "login".to_owned();
    event.entity_type = "User".to_owned();
    event.entity_id = account.to_owned();
    event.actor = Some(AuditActor {
        user_id: account.to_owned(),
        source_address: source.to_owned(),
        ..AuditActor::default()
    });
    event
}

async fn alerts(mesh: &TestMesh, auditor: &TestUser) -> Vec<pb::Alert> {
    audit_client(mesh)
        .list_alerts(auditor.session.request(pb::ListAlertsRequest::default()).unwrap())
        .await
        .unwrap()
        .into_inner()
        .alerts
}

#[tokio::test]
async fn each_alert_rule_fires_on_its_pattern_and_not_on_normal_traffic() {
    let mesh = TestMesh::builder()
        .setting(audit_settings::FAILED_LOGIN_ACCOUNT_THRESHOLD, "3")
        .setting(audit_settings::FAILED_LOGIN_SOURCE_THRESHOLD, "4")
        .setting(audit_settings::DENIAL_THRESHOLD, "3")
        .setting(audit_settings::MANY_PATIENTS_THRESHOLD, "3")
        .start()
        .await;
    let auditor = mesh.created(Role::Auditor).await;
    let mut stream = audit_client(&mesh)
        .stream_alerts(auditor.session.request(pb::StreamAlertsRequest::default()).unwrap())
        .await
        .unwrap()
        .into_inner();

    // Normal traffic: a couple of typos, a doctor reading two patients many times, one denial.
    let (account, doctor, snoop, denied) = (id(), id(), id(), id());
    let (alice, bob) = (id(), id());
    let mut normal = vec![
        login_failure(&mesh, &account, "10.0.0.1:1000"),
        login_failure(&mesh, &account, "10.0.0.2:1000"),
    ];
    ingest(&mesh, Service::Auth, std::mem::take(&mut normal)).await;
    for i in 0..6 {
        normal.push(event(
            &mesh,
            Service::Records,
            &doctor,
            if i % 2 == 0 { &alice } else { &bob },
        ));
    }
    let mut refusal = event(&mesh, Service::Records, &denied, &alice);
    refusal.set_outcome(AuditOutcome::Denied);
    normal.push(refusal.clone());
    ingest(&mesh, Service::Records, normal).await;
    assert!(alerts(&mesh, &auditor).await.is_empty(), "normal traffic raised alerts");

    // Failed-login burst for one account (the third failure, from yet another host).
    ingest(
        &mesh,
        Service::Auth,
        vec![login_failure(&mesh, &account, "10.0.0.3:1000")],
    )
    .await;
    // Failed-login burst from one host against four different accounts.
    let from_one_host: Vec<AuditEvent> = (0..4)
        .map(|i| login_failure(&mesh, &id(), &format!("192.0.2.7:{}", 5000 + i)))
        .collect();
    ingest(&mesh, Service::Auth, from_one_host).await;
    // A denial burst.
    let mut refusals = Vec::new();
    for _ in 0..2 {
        let mut r = refusal.clone();
        r.event_id = id();
        refusals.push(r);
    }
    ingest(&mesh, Service::Records, refusals).await;
    // One actor reading many patients.
    let snooping: Vec<AuditEvent> = (0..3).map(|_| event(&mesh, Service::Records, &snoop, &id())).collect();
    ingest(&mesh, Service::Records, snooping).await;
    // An emergency access.
    let mut emergency = event(&mesh, Service::Records, &doctor, &alice);
    emergency.emergency = true;
    emergency.purpose_of_use = "ETREAT".to_owned();
    ingest(&mesh, Service::Records, vec![emergency.clone()]).await;

    let raised = alerts(&mesh, &auditor).await;
    let kinds: Vec<AlertKind> = raised.iter().map(|a| a.kind()).collect();
    for kind in [
        AlertKind::FailedLoginBurstAccount,
        AlertKind::FailedLoginBurstSource,
        AlertKind::DenialBurst,
        AlertKind::ManyPatientsAccessed,
        AlertKind::EmergencyAccess,
    ] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kind:?} in {kinds:?}");
    }
    let by_kind = |kind: AlertKind| raised.iter().find(|a| a.kind() == kind).unwrap();
    assert_eq!(by_kind(AlertKind::FailedLoginBurstAccount).actor_user_id, account);
    assert_eq!(by_kind(AlertKind::FailedLoginBurstAccount).event_count, 3);
    assert_eq!(by_kind(AlertKind::FailedLoginBurstSource).source_address, "192.0.2.7");
    assert_eq!(by_kind(AlertKind::DenialBurst).actor_user_id, denied);
    assert_eq!(by_kind(AlertKind::ManyPatientsAccessed).actor_user_id, snoop);
    assert_eq!(by_kind(AlertKind::EmergencyAccess).patient_id, alice);
    assert_eq!(
        by_kind(AlertKind::EmergencyAccess).event_ids,
        vec![emergency.event_id.clone()]
    );
    assert_eq!(by_kind(AlertKind::EmergencyAccess).severity(), pb::AlertSeverity::High);

    // A continuing burst does not raise a second alert in the same window.
    ingest(
        &mesh,
        Service::Auth,
        vec![login_failure(&mesh, &account, "10.0.0.4:1000")],
    )
    .await;
    let kinds: Vec<AlertKind> = alerts(&mesh, &auditor).await.iter().map(|a| a.kind()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AlertKind::FailedLoginBurstAccount)
            .count(),
        1
    );

    // The stream delivered all five, in order, and resumes after a cursor without repeats.
    let mut streamed = Vec::new();
    while streamed.len() < 5 {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("alert stream stalled")
            .unwrap()
            .unwrap();
        streamed.push(item);
    }
    let ids: BTreeSet<String> = streamed
        .iter()
        .map(|i| i.alert.as_ref().unwrap().alert_id.clone())
        .collect();
    assert_eq!(ids, raised.iter().map(|a| a.alert_id.clone()).collect());
    let mut resumed = audit_client(&mesh)
        .stream_alerts(
            auditor
                .session
                .request(pb::StreamAlertsRequest {
                    cursor: streamed[2].cursor.clone(),
                    kinds: vec![],
                })
                .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    for expected in &streamed[3..] {
        let item = resumed.message().await.unwrap().unwrap();
        assert_eq!(item.alert, expected.alert);
    }

    // Non-auditors may not follow alerts.
    let patient = mesh.patient().await;
    let error = audit_client(&mesh)
        .stream_alerts(patient.session.request(pb::StreamAlertsRequest::default()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    mesh.shutdown().await;
}

#[tokio::test]
async fn the_sdk_verifies_checkpoints_consistency_and_inclusion() {
    let mesh = TestMesh::start().await;
    let auditor = mesh.created(Role::Auditor).await;
    let patient = mesh.patient().await;
    let sdk = mesh.sdk();

    ingest(
        &mesh,
        Service::Records,
        vec![event(&mesh, Service::Records, &id(), &id())],
    )
    .await;
    create_checkpoint(&mesh, &auditor).await;
    let first = sdk.audit_verify(&patient.session, None).await.unwrap();
    assert!(first.latest.tree_size > 0);
    assert_eq!(first.previous_size, None);
    let mine = event(&mesh, Service::Records, &id(), &patient.user_id);
    ingest(
        &mesh,
        Service::Records,
        vec![mine.clone(), event(&mesh, Service::Records, &id(), &id())],
    )
    .await;
    create_checkpoint(&mesh, &auditor).await;
    let second = sdk.audit_verify(&patient.session, Some(&first.latest)).await.unwrap();
    assert_eq!(second.previous_size, Some(first.latest.tree_size));
    assert!(second.latest.tree_size > first.latest.tree_size);

    // A trusted checkpoint the log does not extend (a forked or rewritten log) is refused.
    let mut forked = first.latest.clone();
    forked.root_hash = hex_flip(&forked.root_hash);
    let error = sdk.audit_verify(&patient.session, Some(&forked)).await.unwrap_err();
    assert!(error.to_string().contains("INTEGRITY"), "{error}");
    // So is a different pinned key.
    let mut other_key = first.latest.clone();
    other_key.verifier_key = caremesh_tlog::checkpoint::NoteSigner::new(
        "caremesh.local/audit",
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
    )
    .unwrap()
    .verifier()
    .to_text();
    assert!(sdk.audit_verify(&patient.session, Some(&other_key)).await.is_err());

    // The patient proves an event about them is in the log; not someone else's.
    let verifier = sdk.audit_verifier(&patient.session).await.unwrap();
    let entry = sdk
        .audit_prove_event(&patient.session, &verifier, &mine.event_id, 0)
        .await
        .unwrap();
    assert_eq!(entry.event.unwrap().event_id, mine.event_id);
    mesh.shutdown().await;
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_flip(hex_text: &str) -> String {
    let mut chars: Vec<char> = hex_text.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}
