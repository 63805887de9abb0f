//! The gRPC adapter of records-svc: unpack the request, call the domain, map the result.
//! RPCs whose behaviour belongs to a later issue answer UNIMPLEMENTED and say what is missing.

use caremesh_proto::records::v1 as pb;
use caremesh_proto::records::v1::records_service_server::{RecordsService, RecordsServiceServer};
use caremesh_runtime::grpc::PendingRpc;
use caremesh_runtime::{MeshRouter, ServiceRuntime};
use tonic::{Request, Response, Status};

const PENDING: &str = "encrypted records arrive with the ABE and records issue (#5)";

pub fn router(runtime: &ServiceRuntime) -> MeshRouter {
    let pending = PendingRpc::new(runtime);
    MeshRouter::new().with(RecordsServiceServer::new(RecordsApi {
        pending: pending.clone(),
    }))
}

/// `RecordsService`.
#[derive(Clone, Debug)]
pub struct RecordsApi {
    pending: PendingRpc,
}

#[tonic::async_trait]
impl RecordsService for RecordsApi {
    async fn create_record(
        &self,
        request: Request<pb::CreateRecordRequest>,
    ) -> Result<Response<pb::CreateRecordResponse>, Status> {
        self.pending
            .answer(&request, "RecordsService.CreateRecord", PENDING)
            .await
    }

    async fn get_record(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        self.pending.answer(&request, "RecordsService.GetRecord", PENDING).await
    }

    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        self.pending
            .answer(&request, "RecordsService.ListRecords", PENDING)
            .await
    }

    async fn update_record(
        &self,
        request: Request<pb::UpdateRecordRequest>,
    ) -> Result<Response<pb::UpdateRecordResponse>, Status> {
        self.pending
            .answer(&request, "RecordsService.UpdateRecord", PENDING)
            .await
    }

    async fn list_record_versions(
        &self,
        request: Request<pb::ListRecordVersionsRequest>,
    ) -> Result<Response<pb::ListRecordVersionsResponse>, Status> {
        self.pending
            .answer(&request, "RecordsService.ListRecordVersions", PENDING)
            .await
    }

    async fn mark_entered_in_error(
        &self,
        request: Request<pb::MarkEnteredInErrorRequest>,
    ) -> Result<Response<pb::MarkEnteredInErrorResponse>, Status> {
        self.pending
            .answer(&request, "RecordsService.MarkEnteredInError", PENDING)
            .await
    }
}
