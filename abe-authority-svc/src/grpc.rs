//! The gRPC adapter of abe-authority-svc: unpack the request, call the domain, map the result.
//! RPCs whose behaviour belongs to a later issue answer UNIMPLEMENTED and say what is missing.

use caremesh_proto::abe::v1 as pb;
use caremesh_proto::abe::v1::abe_service_server::{AbeService, AbeServiceServer};
use std::sync::Arc;

use caremesh_runtime::auth::{TokenVerifier, bearer_token};
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::grpc::PendingRpc;
use caremesh_runtime::time::to_timestamp;
use caremesh_runtime::{MeshRouter, ServiceRuntime};
use tonic::{Request, Response, Status};

use crate::authority::{Authority, check_policy};

const PENDING: &str = "issuing ABE keys needs the caller's X25519 identity key from messaging-svc's key directory; it arrives with the records issue (#5)";

pub fn router(runtime: &ServiceRuntime, authority: Authority) -> MeshRouter {
    MeshRouter::new().with(AbeServiceServer::new(AbeApi {
        pending: PendingRpc::new(runtime),
        tokens: Arc::clone(&runtime.tokens),
        clock: Arc::clone(&runtime.clock),
        authority,
    }))
}

/// `AbeService`.
#[derive(Clone, Debug)]
pub struct AbeApi {
    pending: PendingRpc,
    tokens: Arc<dyn TokenVerifier>,
    clock: SharedClock,
    authority: Authority,
}

impl AbeApi {
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.tokens
            .verify(bearer_token(request.metadata())?, self.clock.now())
            .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl AbeService for AbeApi {
    async fn get_public_parameters(
        &self,
        request: Request<pb::GetPublicParametersRequest>,
    ) -> Result<Response<pb::GetPublicParametersResponse>, Status> {
        self.authenticate(&request).await?;
        let published = self.authority.published();
        let not_modified = request.get_ref().known_version == published.version;
        Ok(Response::new(pb::GetPublicParametersResponse {
            version: published.version.clone(),
            scheme: "FAME-CP-ABE/BLS12-381/v1".to_owned(),
            public_parameters: if not_modified {
                Vec::new()
            } else {
                published.public_params.clone()
            },
            create_time: Some(to_timestamp(published.created_at)),
            not_modified,
            cache_ttl: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        }))
    }

    async fn issue_user_key(
        &self,
        request: Request<pb::IssueUserKeyRequest>,
    ) -> Result<Response<pb::IssueUserKeyResponse>, Status> {
        self.pending.answer(&request, "AbeService.IssueUserKey", PENDING).await
    }

    async fn validate_policy(
        &self,
        request: Request<pb::ValidatePolicyRequest>,
    ) -> Result<Response<pb::ValidatePolicyResponse>, Status> {
        self.authenticate(&request).await?;
        let body = request.into_inner();
        let patient = Some(body.record_patient_id.as_str()).filter(|id| !id.is_empty());
        let check = check_policy(&body.policy, patient);
        Ok(Response::new(pb::ValidatePolicyResponse {
            valid: check.valid,
            canonical_policy: check.canonical,
            attributes: check.attributes,
            depth: check.depth,
            error: check.error.map(|problem| pb::PolicyError {
                reason: problem.reason,
                position: problem.position,
                expected: problem.expected,
                message: problem.message,
            }),
        }))
    }

    async fn request_emergency_access(
        &self,
        request: Request<pb::RequestEmergencyAccessRequest>,
    ) -> Result<Response<pb::RequestEmergencyAccessResponse>, Status> {
        self.pending
            .answer(&request, "AbeService.RequestEmergencyAccess", PENDING)
            .await
    }
}
