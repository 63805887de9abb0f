//! The audit outbox: an event written in a service's transaction reaches audit-svc exactly once,
//! also when audit-svc was down when the event was written. Runs on every storage backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use caremesh_proto::audit::v1::audit_internal_service_client::AuditInternalServiceClient;
use caremesh_proto::audit::v1::{AuditAction, AuditActor, AuditEvent, AuditOutcome, IngestEventsRequest};
use caremesh_runtime::clock::SystemClock;
use caremesh_runtime::outbox::{Outbox, entity as outbox_entity};
use caremesh_testkit::{Caller, Service, TestMesh, backends, eventually};
use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};

fn event(outbox: &Outbox) -> AuditEvent {
    let mut event = outbox.new_event();
    event.set_action(AuditAction::Read);
    event.set_outcome(AuditOutcome::Success);
    event.operation = "/caremesh.records.v1.RecordsService/GetRecord".to_owned();
    event.entity_type = "Record".to_owned();
    event.patient_id = "0190b0a0-0000-7000-8000-000000000001".to_owned();
    event.actor = Some(AuditActor {
        user_id: "0190b0a0-0000-7000-8000-0000000000aa".to_owned(),
        role: "doctor".to_owned(),
        ..AuditActor::default()
    });
    event
}

async fn event_ids(log: &audit_svc::log::EventLog) -> Vec<String> {
    log.events()
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_id)
        .collect()
}

async fn outbox_len(mesh: &TestMesh, service: Service) -> u64 {
    outbox_entity::Entity::find()
        .count(&mesh.database(service).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_written_while_audit_is_down_arrives_exactly_once_after_it_starts() {
    for backend in backends() {
        let mut mesh = TestMesh::builder()
            .backend(backend.clone())
            .hold_back(Service::Audit)
            .start()
            .await;
        let records = Outbox::new(Service::Records, Arc::new(SystemClock));
        let db = mesh.database(Service::Records).await;

        // Written in a committed transaction, and one in a rolled-back transaction.
        let kept = event(&records);
        let txn = db.begin().await.unwrap();
        records.record(&txn, &kept).await.unwrap();
        txn.commit().await.unwrap();
        let discarded = event(&records);
        let txn = db.begin().await.unwrap();
        records.record(&txn, &discarded).await.unwrap();
        txn.rollback().await.unwrap();

        // audit-svc is down: the relay keeps retrying and the event waits in the outbox.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(outbox_len(&mesh, Service::Records).await, 1, "{}", backend.name());

        mesh.start_service(Service::Audit).await;
        let delivered = eventually(Duration::from_secs(15), || async {
            let empty = outbox_len(&mesh, Service::Records).await == 0;
            empty.then_some(())
        })
        .await;
        assert!(delivered.is_some(), "{}: outbox never drained", backend.name());
        let log = mesh.audit_log().await;
        let ids = event_ids(&log).await;
        assert_eq!(
            ids.iter().filter(|id| **id == kept.event_id).count(),
            1,
            "{}",
            backend.name()
        );
        assert!(
            !ids.contains(&discarded.event_id),
            "{}: rolled back, never shipped",
            backend.name()
        );
        let total = log.event_count().await.unwrap();

        // The same event delivered again (a relay that crashed before deleting its row) is
        // recognised as a duplicate.
        let mut client =
            AuditInternalServiceClient::new(mesh.channel(Service::Audit, Caller::Service(Service::Records)));
        let again = client
            .ingest_events(IngestEventsRequest {
                events: vec![kept.clone(), kept.clone()],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((again.accepted, again.duplicates), (0, 2), "{}", backend.name());
        assert_eq!(log.event_count().await.unwrap(), total, "{}", backend.name());
        mesh.shutdown().await;
    }
}

#[tokio::test]
async fn events_from_every_service_arrive_and_a_bad_batch_stores_nothing() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        let mut written = Vec::new();
        for service in Service::ALL {
            let outbox = Outbox::new(service, Arc::new(SystemClock));
            let db = mesh.database(service).await;
            let event = event(&outbox);
            outbox.record(&db, &event).await.unwrap();
            written.push(event.event_id);
        }
        let log = mesh.audit_log().await;
        let all_arrived = eventually(Duration::from_secs(15), || async {
            let ids = event_ids(&log).await;
            written.iter().all(|id| ids.contains(id)).then_some(())
        })
        .await;
        assert!(all_arrived.is_some(), "{}", backend.name());

        // One invalid event refuses the whole batch: the valid one beside it is not stored either.
        let outbox = Outbox::new(Service::Records, Arc::new(SystemClock));
        let valid = event(&outbox);
        let mut invalid = event(&outbox);
        invalid.set_outcome(AuditOutcome::Unspecified);
        let mut client =
            AuditInternalServiceClient::new(mesh.channel(Service::Audit, Caller::Service(Service::Records)));
        let error = client
            .ingest_events(IngestEventsRequest {
                events: vec![valid.clone(), invalid.clone()],
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains("outcome"), "{}", error.message());
        let ids = event_ids(&log).await;
        assert!(
            !ids.contains(&valid.event_id) && !ids.contains(&invalid.event_id),
            "{}: nothing half-written",
            backend.name()
        );

        // And an invalid event cannot even enter an outbox.
        let db = mesh.database(Service::Records).await;
        let mut invalid = event(&outbox);
        invalid.event_id = "not-a-uuid".to_owned();
        assert!(outbox.record(&db, &invalid).await.is_err());
        mesh.shutdown().await;
    }
}
