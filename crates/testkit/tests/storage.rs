//! Storage on every backend: migrations are idempotent, each service owns its own database or
//! schema, and the outbox keeps rows in event order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::clock::SystemClock;
use caremesh_runtime::outbox::{Outbox, entity as outbox_entity};
use caremesh_testkit::{Service, TestMesh, backends};
use sea_orm::{EntityTrait, QueryOrder};

#[tokio::test]
async fn migrations_rerun_cleanly_and_services_do_not_share_tables() {
    for backend in backends() {
        let mesh = TestMesh::builder().backend(backend.clone()).start().await;
        // A second migration run (a restart, or `caremesh migrate`) changes nothing.
        for service in Service::ALL {
            caremesh_serve::migrate_service(mesh.config(service)).await.unwrap();
        }
        // Stop the relays' consumer so rows stay where they were written.
        let mut mesh = mesh;
        mesh.stop_service(Service::Audit).await;

        let auth = Outbox::new(Service::Auth, Arc::new(SystemClock));
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut event = auth.new_event();
            event.set_action(AuditAction::Execute);
            event.set_outcome(AuditOutcome::Denied);
            event.operation = "login".to_owned();
            ids.push(event.event_id.clone());
            auth.record(&mesh.database(Service::Auth).await, &event).await.unwrap();
        }
        let auth_rows = outbox_entity::Entity::find()
            .order_by_asc(outbox_entity::Column::EventId)
            .all(&mesh.database(Service::Auth).await)
            .await
            .unwrap();
        assert_eq!(
            auth_rows.iter().map(|row| row.event_id.clone()).collect::<Vec<_>>(),
            ids,
            "{}: key order is write order",
            backend.name()
        );
        let messaging_rows = outbox_entity::Entity::find()
            .all(&mesh.database(Service::Messaging).await)
            .await
            .unwrap();
        assert!(
            messaging_rows.is_empty(),
            "{}: messaging-svc sees only its own outbox",
            backend.name()
        );
        mesh.shutdown().await;
    }
}
