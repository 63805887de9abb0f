//! What records-svc asks messaging-svc: an author's registered identity key
//! (`MessagingInternalService.BatchGetIdentityKeys`), verified with `caremesh-crypto`. This is an
//! outbound adapter, so it speaks tonic; the domain sees [`IdentityPublicKey`]s and [`Error`]s only.

use caremesh_crypto::IdentityPublicKey;
use caremesh_proto::messaging::v1::BatchGetIdentityKeysRequest;
use caremesh_proto::messaging::v1::messaging_internal_service_client::MessagingInternalServiceClient;
use caremesh_runtime::{Error, MeshChannel};

#[derive(Debug)]
pub struct Identities {
    messaging: MeshChannel,
}

impl Identities {
    pub fn new(messaging: MeshChannel) -> Self {
        Self { messaging }
    }

    /// `user_id`'s current registered identity key, or `None` when they have published none.
    pub async fn current(&self, user_id: &str) -> Result<Option<IdentityPublicKey>, Error> {
        let response = MessagingInternalServiceClient::new(self.messaging.clone())
            .batch_get_identity_keys(BatchGetIdentityKeysRequest {
                user_ids: vec![user_id.to_owned()],
            })
            .await
            .map_err(|status| {
                tracing::warn!(code = ?status.code(), message = status.message(), "messaging-svc identity lookup failed");
                Error::unavailable(
                    "MESSAGING_UNAVAILABLE",
                    "cannot look up your registered identity key with messaging-svc right now; retry shortly",
                )
            })?
            .into_inner();
        let Some(identity) = response
            .identity_keys
            .into_iter()
            .find(|found| found.user_id == user_id)
            .and_then(|found| found.identity_key)
        else {
            return Ok(None);
        };
        caremesh_crypto::verify_identity(&identity, user_id)
            .map(Some)
            .map_err(|_| {
                Error::failed_precondition(
                    "IDENTITY_KEY_INVALID",
                    "your registered identity key does not verify: publish your device keys again",
                )
            })
    }
}
