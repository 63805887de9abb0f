//! The gRPC adapter of messaging-svc: unpack the request, call the domain, map the result.
//! Every user-facing RPC authenticates its caller by access token first.

use caremesh_proto::messaging::v1 as pb;
use caremesh_proto::messaging::v1::key_directory_service_server::{KeyDirectoryService, KeyDirectoryServiceServer};
use caremesh_proto::messaging::v1::messaging_internal_service_server::{
    MessagingInternalService, MessagingInternalServiceServer,
};
use caremesh_proto::messaging::v1::messaging_service_server::{MessagingService, MessagingServiceServer};
use caremesh_runtime::attachments::AttachmentView;
use caremesh_runtime::auth::Principal;
use caremesh_runtime::grpc::{append_each, close_when_revoked, peer_identity, to_status};
use caremesh_runtime::time::to_timestamp;
use caremesh_runtime::{Error, MeshRouter, ServiceRuntime};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::domain::{Caller, MessagingDomain};
use crate::fanout::Fanout;
use crate::keys::identity_proto;
use crate::messages::{ConversationTarget, MessageView, Order, SendContent};
use crate::storage::{KIND_GROUP, identity_key, one_time_prekey, signed_prekey};

pub fn router(runtime: &ServiceRuntime, domain: MessagingDomain) -> MeshRouter {
    let api = Api {
        domain,
        runtime: runtime.clone(),
    };
    MeshRouter::new()
        .with(KeyDirectoryServiceServer::new(api.clone()))
        .with(MessagingServiceServer::new(api.clone()))
        .with(MessagingInternalServiceServer::new(api))
}

#[derive(Clone, Debug)]
struct Api {
    domain: MessagingDomain,
    runtime: ServiceRuntime,
}

impl Api {
    async fn signed_in<T>(&self, request: &Request<T>) -> Result<(Principal, Caller), Error> {
        let principal = self.runtime.authenticate(request).await?;
        let source = peer_identity(request).and_then(|peer| peer.remote_addr);
        let caller = Caller::user(&principal, source);
        Ok((principal, caller))
    }
}

fn identity_message(row: &identity_key::Model) -> pb::IdentityKey {
    pb::IdentityKey {
        create_time: Some(to_timestamp(row.created_at)),
        ..identity_proto(row)
    }
}

fn signed_prekey_message(row: &signed_prekey::Model) -> pb::SignedPrekey {
    pb::SignedPrekey {
        key_id: row.key_id.clone(),
        public_key: row.public_key.clone(),
        signature: row.signature.clone(),
        create_time: Some(to_timestamp(row.created_at)),
    }
}

fn one_time_prekey_message(row: &one_time_prekey::Model) -> pb::OneTimePrekey {
    pb::OneTimePrekey {
        key_id: row.key_id.clone(),
        public_key: row.public_key.clone(),
    }
}

fn message_message(view: &MessageView) -> pb::Message {
    let row = &view.row;
    let group = view.is_group();
    // Group messages carry no receipts (readers are not known in advance).
    let receipts = if group {
        Vec::new()
    } else {
        vec![pb::MessageReceipt {
            user_id: row.recipient_user_id.clone(),
            deliver_time: row.delivered_at.map(to_timestamp),
            read_time: row.read_at.map(to_timestamp),
        }]
    };
    pb::Message {
        message_id: row.message_id.clone(),
        conversation_id: row.conversation_id.clone(),
        sender_user_id: row.sender_user_id.clone(),
        kind: if group {
            pb::MessageKind::Group
        } else {
            pb::MessageKind::Direct
        }
        .into(),
        recipient_user_id: row.recipient_user_id.clone(),
        policy: row.policy.clone(),
        envelope: view.envelope(),
        group_envelope: view.group_envelope(),
        create_time: Some(to_timestamp(row.created_at)),
        expire_time: row.expire_at.map(to_timestamp),
        state: if row.recalled_at.is_some() {
            pb::MessageState::Recalled
        } else {
            pb::MessageState::Active
        }
        .into(),
        recall_time: row.recalled_at.map(to_timestamp),
        receipts,
        protocol_version: u32::try_from(row.protocol_version).unwrap_or(1),
        sender_device_id: row.sender_device_id.clone(),
        device_ciphertext: view
            .copies
            .device_ciphertext
            .as_deref()
            .and_then(|bytes| pb::DeviceCiphertext::decode(bytes).ok()),
        archive: view.copies.archive.as_deref().and_then(|bytes| {
            pb::ArchiveCopy::decode(bytes).ok().map(|archive| pb::ArchiveCopy {
                owner_user_id: view.viewer.clone(),
                ..archive
            })
        }),
    }
}

fn order(value: i32) -> Order {
    match pb::SortOrder::try_from(value) {
        Ok(pb::SortOrder::OldestFirst) => Order::OldestFirst,
        _ => Order::NewestFirst,
    }
}

#[tonic::async_trait]
impl KeyDirectoryService for Api {
    async fn publish_key_bundle(
        &self,
        request: Request<pb::PublishKeyBundleRequest>,
    ) -> Result<Response<pb::PublishKeyBundleResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let (changed, count) = self
            .domain
            .publish_bundle(&principal, body.identity_key, body.signed_prekey, body.one_time_prekeys)
            .await?;
        Ok(Response::new(pb::PublishKeyBundleResponse {
            identity_key_changed: changed,
            one_time_prekey_count: count,
        }))
    }

    async fn rotate_signed_prekey(
        &self,
        request: Request<pb::RotateSignedPrekeyRequest>,
    ) -> Result<Response<pb::RotateSignedPrekeyResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let stored = self
            .domain
            .rotate_signed_prekey(&principal, request.into_inner().signed_prekey)
            .await?;
        Ok(Response::new(pb::RotateSignedPrekeyResponse {
            signed_prekey: Some(signed_prekey_message(&stored)),
        }))
    }

    async fn upload_one_time_prekeys(
        &self,
        request: Request<pb::UploadOneTimePrekeysRequest>,
    ) -> Result<Response<pb::UploadOneTimePrekeysResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let count = self
            .domain
            .upload_prekeys(&principal, request.into_inner().one_time_prekeys)
            .await?;
        Ok(Response::new(pb::UploadOneTimePrekeysResponse {
            one_time_prekey_count: count,
        }))
    }

    async fn get_prekey_stock(
        &self,
        request: Request<pb::GetPrekeyStockRequest>,
    ) -> Result<Response<pb::GetPrekeyStockResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let stock = self.domain.prekey_stock(&principal).await?;
        Ok(Response::new(pb::GetPrekeyStockResponse {
            one_time_prekey_count: stock.one_time_prekeys,
            low_watermark: stock.low_watermark,
            identity_key_id: stock.identity_key_id,
            signed_prekey_id: stock.signed_prekey.key_id.clone(),
            signed_prekey_create_time: Some(to_timestamp(stock.signed_prekey.created_at)),
        }))
    }

    async fn fetch_key_bundle(
        &self,
        request: Request<pb::FetchKeyBundleRequest>,
    ) -> Result<Response<pb::FetchKeyBundleResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let user_id = request.into_inner().user_id;
        let bundle = self.domain.fetch_bundle(&principal, &user_id).await?;
        Ok(Response::new(pb::FetchKeyBundleResponse {
            bundle: Some(pb::KeyBundle {
                user_id,
                identity_key: Some(identity_message(&bundle.identity)),
                signed_prekey: Some(signed_prekey_message(&bundle.signed_prekey)),
                one_time_prekey: bundle.one_time_prekey.as_ref().map(one_time_prekey_message),
            }),
        }))
    }

    async fn get_identity_key(
        &self,
        request: Request<pb::GetIdentityKeyRequest>,
    ) -> Result<Response<pb::GetIdentityKeyResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let row = self.domain.identity(&principal, &body.user_id, &body.key_id).await?;
        Ok(Response::new(pb::GetIdentityKeyResponse {
            user_id: row.user_id.clone(),
            identity_key: Some(identity_message(&row)),
            current: row.current,
        }))
    }

    async fn publish_device(
        &self,
        request: Request<pb::PublishDeviceRequest>,
    ) -> Result<Response<pb::PublishDeviceResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let stock = self
            .domain
            .publish_device(&principal, &caller, request.into_inner())
            .await?;
        Ok(Response::new(pb::PublishDeviceResponse { stock: Some(stock) }))
    }

    async fn upload_device_prekeys(
        &self,
        request: Request<pb::UploadDevicePrekeysRequest>,
    ) -> Result<Response<pb::UploadDevicePrekeysResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let stock = self
            .domain
            .upload_device_prekeys(&principal, &caller, request.into_inner())
            .await?;
        Ok(Response::new(pb::UploadDevicePrekeysResponse { stock: Some(stock) }))
    }

    async fn update_device_list(
        &self,
        request: Request<pb::UpdateDeviceListRequest>,
    ) -> Result<Response<pb::UpdateDeviceListResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let (list, removed) = self
            .domain
            .update_device_list(
                &principal,
                &caller,
                body.version,
                body.device_ids,
                &body.signature,
                &body.history_key_id,
            )
            .await?;
        Ok(Response::new(pb::UpdateDeviceListResponse {
            device_list: Some(list),
            removed_device_ids: removed,
        }))
    }

    async fn get_device_list(
        &self,
        request: Request<pb::GetDeviceListRequest>,
    ) -> Result<Response<pb::GetDeviceListResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let user_id = request.into_inner().user_id;
        Ok(Response::new(self.domain.device_list(&principal, &user_id).await?))
    }

    async fn fetch_device_bundles(
        &self,
        request: Request<pb::FetchDeviceBundlesRequest>,
    ) -> Result<Response<pb::FetchDeviceBundlesResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let bundles = self
            .domain
            .fetch_device_bundles(&principal, &body.user_id, &body.device_ids)
            .await?;
        Ok(Response::new(bundles))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let removed = self
            .domain
            .remove_device(&principal, &caller, &body.user_id, &body.device_id)
            .await?;
        Ok(Response::new(pb::RemoveDeviceResponse {
            admin_removed_device_ids: removed,
        }))
    }

    async fn create_device_link(
        &self,
        request: Request<pb::CreateDeviceLinkRequest>,
    ) -> Result<Response<pb::CreateDeviceLinkResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let link = self
            .domain
            .create_device_link(&principal, &caller, request.into_inner())
            .await?;
        Ok(Response::new(pb::CreateDeviceLinkResponse { link: Some(link) }))
    }

    async fn list_device_links(
        &self,
        request: Request<pb::ListDeviceLinksRequest>,
    ) -> Result<Response<pb::ListDeviceLinksResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let (links, next_page_token) = self
            .domain
            .device_links(&principal, body.page_size, &body.page_token)
            .await?;
        Ok(Response::new(pb::ListDeviceLinksResponse { links, next_page_token }))
    }

    async fn approve_device_link(
        &self,
        request: Request<pb::ApproveDeviceLinkRequest>,
    ) -> Result<Response<pb::ApproveDeviceLinkResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let (link, list) = self
            .domain
            .approve_device_link(&principal, &caller, request.into_inner())
            .await?;
        Ok(Response::new(pb::ApproveDeviceLinkResponse {
            link: Some(link),
            device_list: Some(list),
        }))
    }

    async fn get_device_link(
        &self,
        request: Request<pb::GetDeviceLinkRequest>,
    ) -> Result<Response<pb::GetDeviceLinkResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let link = self
            .domain
            .device_link(&principal, &request.into_inner().link_id)
            .await?;
        Ok(Response::new(pb::GetDeviceLinkResponse { link: Some(link) }))
    }
}

#[tonic::async_trait]
impl MessagingService for Api {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let content = match body.content {
            Some(pb::send_message_request::Content::Direct(direct)) => SendContent::Direct {
                recipient: direct.recipient_user_id,
                envelope: direct.envelope,
            },
            Some(pb::send_message_request::Content::Group(group)) => SendContent::Group {
                policy: group.policy,
                envelope: group.envelope,
            },
            None => SendContent::Missing,
        };
        let lifespan = match body.lifespan {
            None => None,
            Some(duration) => Some(caremesh_runtime::time::from_duration(&duration).ok_or_else(|| {
                to_status(Error::invalid_argument(
                    "INVALID_LIFESPAN",
                    "lifespan must be a positive duration between 1 minute and 366 days",
                ))
            })?),
        };
        let fanout = if body.device_ciphertexts.is_empty() {
            None
        } else {
            Some(Fanout {
                sender_device_id: body.sender_device_id,
                ciphertexts: body.device_ciphertexts,
                archive: body.archive,
            })
        };
        let (view, duplicate) = self
            .domain
            .send(
                &principal,
                &caller,
                body.message_id,
                content,
                body.sender_copy,
                lifespan,
                fanout,
            )
            .await?;
        Ok(Response::new(pb::SendMessageResponse {
            message: Some(message_message(&view)),
            duplicate,
        }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        self.domain.check_own_device(&principal, &body.device_id).await?;
        let mut view = self.domain.get(&principal, &caller, &body.message_id).await?;
        self.domain
            .attach_copies(std::slice::from_mut(&mut view), &body.device_id)
            .await?;
        Ok(Response::new(pb::GetMessageResponse {
            message: Some(message_message(&view)),
        }))
    }

    async fn list_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        self.domain.check_own_device(&principal, &body.device_id).await?;
        let mut page = self
            .domain
            .inbox(
                &principal,
                &caller,
                body.page_size,
                &body.page_token,
                order(body.order),
                body.unread_only,
            )
            .await?;
        self.domain.attach_copies(&mut page.items, &body.device_id).await?;
        Ok(Response::new(pb::ListInboxResponse {
            messages: page.items.iter().map(message_message).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let page = self
            .domain
            .conversations(&principal, &caller, body.page_size, &body.page_token)
            .await?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page
                .items
                .iter()
                .map(|view| pb::Conversation {
                    conversation_id: view.conversation_id.clone(),
                    kind: if view.last.kind == KIND_GROUP {
                        pb::MessageKind::Group
                    } else {
                        pb::MessageKind::Direct
                    }
                    .into(),
                    peer_user_id: view.peer_user_id.clone(),
                    policy: view.last.policy.clone(),
                    last_message_id: view.last.message_id.clone(),
                    last_message_time: Some(to_timestamp(view.last.created_at)),
                    unread_count: view.unread,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_conversation_messages(
        &self,
        request: Request<pb::ListConversationMessagesRequest>,
    ) -> Result<Response<pb::ListConversationMessagesResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let target = match body.target {
            Some(pb::list_conversation_messages_request::Target::ConversationId(id)) => ConversationTarget::Id(id),
            Some(pb::list_conversation_messages_request::Target::PeerUserId(peer)) => ConversationTarget::Peer(peer),
            None => ConversationTarget::Id(String::new()),
        };
        self.domain.check_own_device(&principal, &body.device_id).await?;
        let mut page = self
            .domain
            .conversation(
                &principal,
                &caller,
                target,
                body.page_size,
                &body.page_token,
                order(body.order),
            )
            .await?;
        self.domain.attach_copies(&mut page.items, &body.device_id).await?;
        Ok(Response::new(pb::ListConversationMessagesResponse {
            messages: page.items.iter().map(message_message).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type SubscribeStream = BoxStream<'static, Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        self.domain.check_own_device(&principal, &body.device_id).await?;
        let receiver = self
            .domain
            .subscribe(&principal, &caller, &body.cursor, body.device_id)
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|item| {
            item.map(|item| pb::SubscribeResponse {
                message: Some(message_message(&item.view)),
                cursor: item.cursor,
            })
            .map_err(to_status)
        });
        let revoked = self.runtime.until_revoked(&principal);
        Ok(Response::new(close_when_revoked(stream.boxed(), revoked)))
    }

    async fn send_receipts(
        &self,
        request: Request<pb::SendReceiptsRequest>,
    ) -> Result<Response<pb::SendReceiptsResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let read = match pb::ReceiptType::try_from(body.r#type) {
            Ok(pb::ReceiptType::Delivered) => false,
            Ok(pb::ReceiptType::Read) => true,
            _ => {
                return Err(to_status(Error::invalid_argument(
                    "RECEIPT_TYPE_REQUIRED",
                    "type must be RECEIPT_TYPE_DELIVERED or RECEIPT_TYPE_READ",
                )));
            }
        };
        let updated = self.domain.receipts(&principal, &body.message_ids, read).await?;
        Ok(Response::new(pb::SendReceiptsResponse { updated }))
    }

    async fn recall_message(
        &self,
        request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let view = self
            .domain
            .recall(&principal, &caller, &request.into_inner().message_id)
            .await?;
        Ok(Response::new(pb::RecallMessageResponse {
            message: Some(message_message(&view)),
        }))
    }

    async fn store_archive_copy(
        &self,
        request: Request<pb::StoreArchiveCopyRequest>,
    ) -> Result<Response<pb::StoreArchiveCopyResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let stored = self
            .domain
            .store_archive_copy(&principal, &caller, &body.message_id, body.archive)
            .await?;
        Ok(Response::new(pb::StoreArchiveCopyResponse { stored }))
    }

    async fn create_attachment(
        &self,
        request: Request<pb::CreateAttachmentRequest>,
    ) -> Result<Response<pb::CreateAttachmentResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let view = self
            .domain
            .create_attachment(
                &principal,
                &caller,
                &body.attachment_id,
                &body.message_id,
                body.blob_length,
            )
            .await?;
        Ok(Response::new(pb::CreateAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    async fn upload_attachment(
        &self,
        request: Request<tonic::Streaming<pb::UploadAttachmentRequest>>,
    ) -> Result<Response<pb::UploadAttachmentResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let (domain, principal) = (&self.domain, &principal);
        let view = append_each(request.into_inner(), move |piece| async move {
            domain
                .upload_attachment_piece(principal, &piece.attachment_id, piece.offset, &piece.data)
                .await
        })
        .await?;
        Ok(Response::new(pb::UploadAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    async fn append_attachment(
        &self,
        request: Request<pb::AppendAttachmentRequest>,
    ) -> Result<Response<pb::AppendAttachmentResponse>, Status> {
        let (principal, _) = self.signed_in(&request).await?;
        let piece = request.into_inner();
        let view = self
            .domain
            .upload_attachment_piece(&principal, &piece.attachment_id, piece.offset, &piece.data)
            .await?;
        Ok(Response::new(pb::AppendAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::GetAttachmentResponse>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let view = self
            .domain
            .attachment(&principal, &caller, &request.into_inner().attachment_id)
            .await?;
        Ok(Response::new(pb::GetAttachmentResponse {
            attachment: Some(attachment_message(&view)),
        }))
    }

    type DownloadAttachmentStream = BoxStream<'static, Result<pb::DownloadAttachmentResponse, Status>>;

    async fn download_attachment(
        &self,
        request: Request<pb::DownloadAttachmentRequest>,
    ) -> Result<Response<Self::DownloadAttachmentStream>, Status> {
        let (principal, caller) = self.signed_in(&request).await?;
        let body = request.into_inner();
        let pieces = self
            .domain
            .download_attachment(&principal, &caller, &body.attachment_id, body.offset)
            .await?
            .map(|piece| {
                piece
                    .map(|(offset, data)| pb::DownloadAttachmentResponse { offset, data })
                    .map_err(to_status)
            });
        let revoked = self.runtime.until_revoked(&principal);
        Ok(Response::new(close_when_revoked(pieces.boxed(), revoked)))
    }
}

fn attachment_message(view: &AttachmentView) -> pb::Attachment {
    let row = &view.row;
    pb::Attachment {
        attachment_id: row.attachment_id.clone(),
        message_id: row.parent_id.clone(),
        owner_user_id: row.owner_user_id.clone(),
        blob_length: view.blob_len(),
        stored_length: view.stored_len,
        complete: row.complete,
        create_time: Some(to_timestamp(row.created_at)),
    }
}

#[tonic::async_trait]
impl MessagingInternalService for Api {
    async fn batch_get_identity_keys(
        &self,
        request: Request<pb::BatchGetIdentityKeysRequest>,
    ) -> Result<Response<pb::BatchGetIdentityKeysResponse>, Status> {
        let rows = self.domain.batch_identities(&request.into_inner().user_ids).await?;
        Ok(Response::new(pb::BatchGetIdentityKeysResponse {
            identity_keys: rows
                .iter()
                .map(|row| pb::UserIdentityKey {
                    user_id: row.user_id.clone(),
                    identity_key: Some(identity_message(row)),
                })
                .collect(),
        }))
    }
}
