//! The gRPC adapter of abe-authority-svc: unpack the request, call the domain, map the result.

use caremesh_proto::abe::v1 as pb;
use caremesh_proto::abe::v1::abe_service_server::{AbeService, AbeServiceServer};
use std::sync::Arc;

use caremesh_runtime::auth::{Principal, TokenVerifier, bearer_token};
use caremesh_runtime::clock::SharedClock;
use caremesh_runtime::time::to_timestamp;
use caremesh_runtime::{Error, MeshRouter, ServiceRuntime};
use tonic::{Request, Response, Status};

use caremesh_abe::check_policy;

use crate::issuance::{EmergencyRequest, IssuedKey, Issuer};

pub fn router(runtime: &ServiceRuntime, issuer: Issuer) -> MeshRouter {
    MeshRouter::new().with(AbeServiceServer::new(AbeApi {
        tokens: Arc::clone(&runtime.tokens),
        clock: Arc::clone(&runtime.clock),
        issuer,
    }))
}

/// `AbeService`.
#[derive(Clone, Debug)]
pub struct AbeApi {
    tokens: Arc<dyn TokenVerifier>,
    clock: SharedClock,
    issuer: Issuer,
}

impl AbeApi {
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        Ok(self
            .tokens
            .verify(bearer_token(request.metadata())?, self.clock.now())
            .await?)
    }
}

fn source_address<T>(request: &Request<T>) -> String {
    request.remote_addr().map(|addr| addr.to_string()).unwrap_or_default()
}

fn user_key_message(key: IssuedKey) -> pb::UserKey {
    pb::UserKey {
        key_id: key.key_id,
        user_id: key.user_id,
        attributes: key.attributes,
        params_version: key.params_version,
        issue_time: Some(to_timestamp(key.issued_at)),
        expire_time: Some(to_timestamp(key.expires_at)),
        attributes_etag: key.attributes_etag,
        sealed_key: Some(key.sealed),
    }
}

#[tonic::async_trait]
impl AbeService for AbeApi {
    async fn get_public_parameters(
        &self,
        request: Request<pb::GetPublicParametersRequest>,
    ) -> Result<Response<pb::GetPublicParametersResponse>, Status> {
        self.authenticate(&request).await?;
        let published = self.issuer.authority.published();
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
        let principal = self.authenticate(&request).await?;
        let key = self
            .issuer
            .issue_user_key(
                &principal,
                &source_address(&request),
                &request.get_ref().identity_key_id,
            )
            .await?;
        Ok(Response::new(pb::IssueUserKeyResponse {
            user_key: Some(user_key_message(key)),
        }))
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
        let principal = self.authenticate(&request).await?;
        let source = source_address(&request);
        let body = request.into_inner();
        let duration = match body.duration {
            None => None,
            Some(duration) => Some(
                caremesh_runtime::time::from_duration(&duration)
                    .ok_or_else(|| Error::invalid_argument("INVALID_DURATION", "the duration must be positive"))?,
            ),
        };
        let (grant, key) = self
            .issuer
            .request_emergency_access(
                &principal,
                &source,
                EmergencyRequest {
                    patient_id: &body.patient_id,
                    reason: &body.reason,
                    duration,
                    identity_key_id: &body.identity_key_id,
                },
            )
            .await?;
        Ok(Response::new(pb::RequestEmergencyAccessResponse {
            grant: Some(pb::EmergencyGrant {
                grant_id: grant.grant_id,
                user_id: grant.user_id,
                patient_id: grant.patient_id,
                reason: grant.reason,
                create_time: Some(to_timestamp(grant.created_at)),
                expire_time: Some(to_timestamp(grant.expires_at)),
            }),
            user_key: Some(user_key_message(key)),
        }))
    }
}
