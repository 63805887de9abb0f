//! The gRPC adapter of audit-svc: unpack the request, authenticate the caller, call the domain
//! ([`crate::reader`], [`crate::log`], [`crate::checkpoints`]), map the result.

use caremesh_proto::audit::v1 as pb;
use caremesh_proto::audit::v1::audit_internal_service_server::{AuditInternalService, AuditInternalServiceServer};
use caremesh_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use caremesh_runtime::grpc::{caller_spiffe_id, peer_identity};
use caremesh_runtime::{MeshRouter, ServiceRuntime};
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::log::EventLog;
use crate::reader::{Caller, Reader};

pub fn router(runtime: &ServiceRuntime, reader: Reader) -> MeshRouter {
    let log = reader.log.clone();
    MeshRouter::new()
        .with(AuditServiceServer::new(AuditApi {
            runtime: runtime.clone(),
            reader,
            shutdown: runtime.shutdown_token(),
        }))
        .with(AuditInternalServiceServer::new(AuditInternalApi { log }))
}

/// `AuditService`.
#[derive(Clone, Debug)]
pub struct AuditApi {
    runtime: ServiceRuntime,
    reader: Reader,
    shutdown: CancellationToken,
}

impl AuditApi {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let principal = self.runtime.authenticate(request).await?;
        let source_address = peer_identity(request)
            .and_then(|peer| peer.remote_addr)
            .map(|addr| addr.to_string())
            .unwrap_or_default();
        Ok(Caller {
            principal,
            source_address,
        })
    }

    /// Any authenticated user at AAL2.
    async fn user<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.caller(request).await?;
        caller.principal.require_aal2()?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_events(
        &self,
        request: Request<pb::QueryEventsRequest>,
    ) -> Result<Response<pb::QueryEventsResponse>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(
            self.reader.query_events(&caller, request.get_ref()).await?,
        ))
    }

    async fn list_patient_accesses(
        &self,
        request: Request<pb::ListPatientAccessesRequest>,
    ) -> Result<Response<pb::ListPatientAccessesResponse>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(
            self.reader.list_patient_accesses(&caller, request.get_ref()).await?,
        ))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        self.user(&request).await?;
        let checkpoint = self.reader.checkpoints.get(request.get_ref().tree_size).await?;
        Ok(Response::new(pb::GetCheckpointResponse {
            checkpoint: Some(checkpoint),
        }))
    }

    async fn create_checkpoint(
        &self,
        request: Request<pb::CreateCheckpointRequest>,
    ) -> Result<Response<pb::CreateCheckpointResponse>, Status> {
        let caller = self.caller(&request).await?;
        let checkpoint = self.reader.create_checkpoint(&caller).await?;
        Ok(Response::new(pb::CreateCheckpointResponse {
            checkpoint: Some(checkpoint),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(
            self.reader.inclusion_proof(&caller, request.get_ref()).await?,
        ))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        self.user(&request).await?;
        let request = request.get_ref();
        Ok(Response::new(
            self.reader
                .consistency_proof(request.first_tree_size, request.second_tree_size)
                .await?,
        ))
    }

    async fn get_verification_key(
        &self,
        request: Request<pb::GetVerificationKeyRequest>,
    ) -> Result<Response<pb::GetVerificationKeyResponse>, Status> {
        self.user(&request).await?;
        Ok(Response::new(self.reader.verification_key()))
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(
            self.reader.list_alerts(&caller, request.get_ref()).await?,
        ))
    }

    type StreamAlertsStream = BoxStream<'static, Result<pb::StreamAlertsResponse, Status>>;

    async fn stream_alerts(
        &self,
        request: Request<pb::StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        let caller = self.caller(&request).await?;
        let revoked = self.runtime.until_revoked(&caller.principal);
        let mut cursor = self.reader.start_alert_stream(&caller, request.get_ref()).await?;
        let kinds = request.into_inner().kinds;
        let reader = self.reader.clone();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match reader.alerts_after(cursor, &kinds).await {
                    Ok(batch) => {
                        for item in batch {
                            if let Some(next) = item.cursor.strip_prefix('a').and_then(|seq| seq.parse().ok()) {
                                cursor = next;
                            }
                            if tx.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = tx.send(Err(caremesh_runtime::grpc::to_status(error))).await;
                        return;
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    () = reader.wait_for_alerts() => {}
                }
            }
        });
        let alerts = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(Response::new(caremesh_runtime::grpc::close_when_revoked(
            alerts, revoked,
        )))
    }

    type ExportEventsStream = BoxStream<'static, Result<pb::ExportEventsResponse, Status>>;

    async fn export_events(
        &self,
        request: Request<pb::ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        let caller = self.caller(&request).await?;
        let (checkpoint, start, end) = self.reader.start_export(&caller, request.get_ref()).await?;
        let proofs = request.get_ref().include_proofs;
        let size = checkpoint.tree_size;
        let reader = self.reader.clone();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let first = pb::ExportEventsResponse {
                item: Some(pb::export_events_response::Item::Checkpoint(checkpoint)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut at = start;
            while at < end && !shutdown.is_cancelled() {
                match reader.export_page(at, end, size, proofs).await {
                    Ok(page) if page.is_empty() => return,
                    Ok(page) => {
                        at += page.len() as u64;
                        for entry in page {
                            let item = pb::ExportEventsResponse {
                                item: Some(pb::export_events_response::Item::Entry(entry)),
                            };
                            if tx.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = tx.send(Err(caremesh_runtime::grpc::to_status(error))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// `AuditInternalService`: ingestion from the services' outbox relays.
#[derive(Clone, Debug)]
pub struct AuditInternalApi {
    log: EventLog,
}

#[tonic::async_trait]
impl AuditInternalService for AuditInternalApi {
    async fn ingest_events(
        &self,
        request: Request<pb::IngestEventsRequest>,
    ) -> Result<Response<pb::IngestEventsResponse>, Status> {
        let caller = caller_spiffe_id(&request)?;
        let ingested = self.log.ingest(&caller, &request.get_ref().events).await?;
        Ok(Response::new(pb::IngestEventsResponse {
            accepted: ingested.accepted,
            duplicates: ingested.duplicates,
        }))
    }
}
