//! W3C trace context crosses service-to-service calls: the audit relay's span in records-svc and
//! audit-svc's server span for the call it makes share one trace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_runtime::clock::SystemClock;
use caremesh_runtime::outbox::Outbox;
use caremesh_testkit::{Service, TestMesh, capture_spans, eventually};
use opentelemetry::Value;

#[tokio::test]
async fn a_trace_started_in_one_service_continues_in_the_service_it_calls() {
    let spans = capture_spans();
    let mesh = TestMesh::start().await;
    let outbox = Outbox::new(Service::Records, Arc::new(SystemClock));
    let mut event = outbox.new_event();
    event.set_action(AuditAction::Read);
    event.set_outcome(AuditOutcome::Success);
    event.operation = "trace-test".to_owned();
    outbox
        .record(&mesh.database(Service::Records).await, &event)
        .await
        .unwrap();

    let pair = eventually(Duration::from_secs(15), || async {
        let finished = spans.get_finished_spans().unwrap();
        let relay = finished.iter().find(|span| span.name == "audit.relay.ship")?.clone();
        let server = finished
            .iter()
            .find(|span| {
                span.name == "grpc.server"
                    && span.span_context.trace_id() == relay.span_context.trace_id()
                    && span.attributes.iter().any(|kv| {
                        kv.key.as_str() == "rpc.method"
                            && kv.value == Value::from("/caremesh.audit.v1.AuditInternalService/IngestEvents")
                    })
            })?
            .clone();
        Some((relay, server))
    })
    .await;
    let (relay, server) = pair.expect("the relay's call produced a server span in the same trace");
    assert!(relay.span_context.trace_id() != opentelemetry::trace::TraceId::INVALID);
    let service = server
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "service")
        .unwrap();
    assert_eq!(service.value, Value::from("audit-svc"));
    assert_eq!(
        server.parent_span_id,
        relay.span_context.span_id(),
        "the server span is the relay call's child"
    );
}
