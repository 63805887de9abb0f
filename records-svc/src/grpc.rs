//! The gRPC adapter of records-svc: unpack the request, call the domain, map the result.
//! Every RPC authenticates its caller by access token first.

use caremesh_proto::records::v1 as pb;
use caremesh_proto::records::v1::records_service_server::{RecordsService, RecordsServiceServer};
use caremesh_runtime::attachments::AttachmentView;
use caremesh_runtime::auth::Principal;
use caremesh_runtime::grpc::{append_each, close_when_revoked, peer_identity, to_status};
use caremesh_runtime::time::to_timestamp;
use caremesh_runtime::{Error, MeshRouter, ServiceRuntime};
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

use crate::domain::{Caller, RecordsDomain};
use crate::records::{CreateInput, ListInput, Stored, UpdateInput};

pub fn router(runtime: &ServiceRuntime, domain: RecordsDomain) -> MeshRouter {
    MeshRouter::new().with(RecordsServiceServer::new(RecordsApi {
        domain,
        runtime: runtime.clone(),
    }))
}

/// `RecordsService`.
#[derive(Clone, Debug)]
pub struct RecordsApi {
    domain: RecordsDomain,
    runtime: ServiceRuntime,
}

impl RecordsApi {
    async fn signed_in<T>(&self, request: &Request<T>) -> Result<(Principal, Caller), Error> {
        let principal = self.runtime.authenticate(request).await?;
        let source = peer_identity(request).and_then(|peer| peer.remote_addr);
        let caller = Caller::user(&principal, source);
        Ok((principal, caller))
    }
}

fn full_view(view: i32, default_full: bool) -> bool {
    match pb::RecordView::try_from(view) {
        Ok(pb::RecordView::Full) => true,
        Ok(pb::RecordView::Basic) => false,
        _ => default_full,
    }
}

fn record_message(stored: &Stored, full: bool) -> pb::Record {
    let row = &stored.version;
    let entered_in_error = row.entered_in_error_reason.as_ref().map(|reason| pb::EnteredInError {
        reason: reason.clone(),
        mark_time: row.entered_in_error_at.map(to_timestamp),
        marked_by_user_id: row.entered_in_error_by.clone().unwrap_or_default(),
    });
    pb::Record {
        record_id: row.record_id.clone(),
        patient_id: row.patient_id.clone(),
        kind: row.kind.clone(),
        version: row.version,
        policy: row.policy.clone(),
        envelope: full.then(|| stored.envelope()),
        author_user_id: row.author_user_id.clone(),
        author_identity_key_id: row.author_identity_key_id.clone(),
        author_signature: row.author_signature.clone(),
        previous_version_hash: row.previous_version_hash.clone(),
        version_hash: row.version_hash.clone(),
        entered_in_error,
        create_time: Some(to_timestamp(stored.head.created_at)),
        update_time: Some(to_timestamp(row.created_at)),
        etag: stored.head.etag.clone(),
    }
}

#[tonic::async_trait]
impl RecordsService for RecordsApi {
    async fn create_record(
        &self,
        request: Request<pb::CreateRecordRequest>,
    ) -> Result<Response<pb::CreateRecordResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let input = CreateInput {
            record_id: body.record_id,
            patient_id: body.patient_id,
            kind: body.kind,
            policy: body.policy,
            envelope: body.envelope,
            author_identity_key_id: body.author_identity_key_id,
            author_signature: body.author_signature,
        };
        let (stored, _duplicate) = self.domain.create(&principal, &caller, input).await?;
        Ok(Response::new(pb::CreateRecordResponse {
            record: Some(record_message(&stored, true)),
        }))
    }

    async fn get_record(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let stored = self
            .domain
            .get(&principal, &caller, &body.record_id, body.version)
            .await?;
        Ok(Response::new(pb::GetRecordResponse {
            record: Some(record_message(&stored, full_view(body.view, true))),
        }))
    }

    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let full = full_view(body.view, false);
        let input = ListInput {
            patient_id: body.patient_id,
            kind: body.kind,
            page_size: body.page_size,
            page_token: body.page_token,
            include_entered_in_error: body.include_entered_in_error,
        };
        let page = self.domain.list(&principal, &caller, input).await?;
        Ok(Response::new(pb::ListRecordsResponse {
            records: page.items.iter().map(|stored| record_message(stored, full)).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_record(
        &self,
        request: Request<pb::UpdateRecordRequest>,
    ) -> Result<Response<pb::UpdateRecordResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let input = UpdateInput {
            record_id: body.record_id,
            etag: body.etag,
            version: body.version,
            policy: body.policy,
            envelope: body.envelope,
            previous_version_hash: body.previous_version_hash,
            author_identity_key_id: body.author_identity_key_id,
            author_signature: body.author_signature,
        };
        let stored = self.domain.update(&principal, &caller, input).await?;
        Ok(Response::new(pb::UpdateRecordResponse {
            record: Some(record_message(&stored, true)),
        }))
    }

    async fn list_record_versions(
        &self,
        request: Request<pb::ListRecordVersionsRequest>,
    ) -> Result<Response<pb::ListRecordVersionsResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let full = full_view(body.view, false);
        let page = self
            .domain
            .versions(&principal, &caller, &body.record_id, body.page_size, &body.page_token)
            .await?;
        Ok(Response::new(pb::ListRecordVersionsResponse {
            versions: page.items.iter().map(|stored| record_message(stored, full)).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn mark_entered_in_error(
        &self,
        request: Request<pb::MarkEnteredInErrorRequest>,
    ) -> Result<Response<pb::MarkEnteredInErrorResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let stored = self
            .domain
            .mark_entered_in_error(
                &principal,
                &caller,
                &body.record_id,
                body.version,
                &body.etag,
                &body.reason,
            )
            .await?;
        Ok(Response::new(pb::MarkEnteredInErrorResponse {
            record: Some(record_message(&stored, false)),
        }))
    }

    async fn create_record_attachment(
        &self,
        request: Request<pb::CreateRecordAttachmentRequest>,
    ) -> Result<Response<pb::CreateRecordAttachmentResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let view = self
            .domain
            .create_attachment(
                &principal,
                &caller,
                &body.attachment_id,
                &body.record_id,
                body.blob_length,
            )
            .await?;
        Ok(Response::new(pb::CreateRecordAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    async fn upload_record_attachment(
        &self,
        request: Request<tonic::Streaming<pb::UploadRecordAttachmentRequest>>,
    ) -> Result<Response<pb::UploadRecordAttachmentResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let (domain, principal) = (&self.domain, &principal);
        let view = append_each(request.into_inner(), move |piece| async move {
            domain
                .upload_attachment_piece(principal, &piece.attachment_id, piece.offset, &piece.data)
                .await
        })
        .await?;
        Ok(Response::new(pb::UploadRecordAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    async fn append_record_attachment(
        &self,
        request: Request<pb::AppendRecordAttachmentRequest>,
    ) -> Result<Response<pb::AppendRecordAttachmentResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let piece = request.into_inner();
        let view = self
            .domain
            .upload_attachment_piece(&principal, &piece.attachment_id, piece.offset, &piece.data)
            .await?;
        Ok(Response::new(pb::AppendRecordAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    async fn get_record_attachment(
        &self,
        request: Request<pb::GetRecordAttachmentRequest>,
    ) -> Result<Response<pb::GetRecordAttachmentResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let view = self
            .domain
            .attachment(&principal, &caller, &request.into_inner().attachment_id)
            .await?;
        Ok(Response::new(pb::GetRecordAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    type DownloadRecordAttachmentStream = BoxStream<'static, Result<pb::DownloadRecordAttachmentResponse, Status>>;

    async fn download_record_attachment(
        &self,
        request: Request<pb::DownloadRecordAttachmentRequest>,
    ) -> Result<Response<Self::DownloadRecordAttachmentStream>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let pieces = self
            .domain
            .download_attachment(&principal, &caller, &body.attachment_id, body.offset)
            .await?
            .map(|piece| {
                piece
                    .map(|(offset, data)| pb::DownloadRecordAttachmentResponse { offset, data })
                    .map_err(to_status)
            });
        let revoked = self.runtime.until_revoked(&principal);
        Ok(Response::new(close_when_revoked(pieces.boxed(), revoked)))
    }
}

fn attachment_message(view: &AttachmentView) -> pb::RecordAttachment {
    let row = &view.row;
    pb::RecordAttachment {
        attachment_id: row.attachment_id.clone(),
        record_id: row.parent_id.clone(),
        owner_user_id: row.owner_user_id.clone(),
        blob_length: view.blob_len(),
        stored_length: view.stored_len,
        complete: row.complete,
        create_time: Some(to_timestamp(row.created_at)),
    }
}
