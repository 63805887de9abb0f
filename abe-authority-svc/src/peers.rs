//! What abe-authority-svc asks its mesh peers: a user's attributes and account state from
//! auth-svc (never what the client claims), the user's registered identity key from
//! messaging-svc's directory, and the recording of emergency grants with auth-svc. This is the
//! outbound adapter, so it speaks tonic; the domain sees plain values and [`Error`]s.

use caremesh_crypto::{IdentityPublicKey, verify_identity};
use caremesh_proto::auth::v1::auth_internal_service_client::AuthInternalServiceClient;
use caremesh_proto::auth::v1::{GetUserAttributesRequest, GrantEmergencyAttributeRequest, Role, UserStatus};
use caremesh_proto::messaging::v1::BatchGetIdentityKeysRequest;
use caremesh_proto::messaging::v1::messaging_internal_service_client::MessagingInternalServiceClient;
use caremesh_runtime::grpc::from_peer_status;
use caremesh_runtime::time::{from_timestamp, to_timestamp};
use caremesh_runtime::{Error, MeshChannel};
use chrono::{DateTime, Utc};

/// A user's attributes as auth-svc reports them.
#[derive(Clone, Debug)]
pub struct UserAttributes {
    pub role: Role,
    pub active: bool,
    /// Permanent attributes, sorted.
    pub attributes: Vec<String>,
    /// Emergency attributes with the end of their grant.
    pub temporary: Vec<(String, DateTime<Utc>)>,
    pub etag: String,
}

#[derive(Clone, Debug)]
pub struct Peers {
    auth: MeshChannel,
    messaging: MeshChannel,
}

impl Peers {
    pub fn new(auth: MeshChannel, messaging: MeshChannel) -> Self {
        Self { auth, messaging }
    }

    pub async fn user_attributes(&self, user_id: &str) -> Result<UserAttributes, Error> {
        let response = AuthInternalServiceClient::new(self.auth.clone())
            .get_user_attributes(GetUserAttributesRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(|status| from_peer_status("auth-svc", &status))?
            .into_inner();
        Ok(UserAttributes {
            role: response.role(),
            active: response.status() == UserStatus::Active,
            temporary: response
                .temporary_attributes
                .into_iter()
                .filter_map(|temporary| {
                    let expires = temporary.expire_time.as_ref().and_then(from_timestamp)?;
                    Some((temporary.attribute, expires))
                })
                .collect(),
            attributes: response.attributes,
            etag: response.etag,
        })
    }

    /// The user's registered identity key, its binding signature verified; `None` when the user
    /// has published none.
    pub async fn identity_key(&self, user_id: &str) -> Result<Option<IdentityPublicKey>, Error> {
        let response = MessagingInternalServiceClient::new(self.messaging.clone())
            .batch_get_identity_keys(BatchGetIdentityKeysRequest {
                user_ids: vec![user_id.to_owned()],
            })
            .await
            .map_err(|status| from_peer_status("messaging-svc", &status))?
            .into_inner();
        let Some(found) = response
            .identity_keys
            .into_iter()
            .find(|entry| entry.user_id == user_id)
            .and_then(|entry| entry.identity_key)
        else {
            return Ok(None);
        };
        verify_identity(&found, user_id).map(Some).map_err(|error| {
            Error::failed_precondition(
                "IDENTITY_KEY_INVALID",
                format!("the registered identity key does not verify ({error}); publish your device keys again"),
            )
        })
    }

    /// Records the grant with auth-svc; returns the attribute it grants.
    pub async fn grant_emergency_attribute(
        &self,
        grant_id: &str,
        user_id: &str,
        patient_id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<String, Error> {
        Ok(AuthInternalServiceClient::new(self.auth.clone())
            .grant_emergency_attribute(GrantEmergencyAttributeRequest {
                grant_id: grant_id.to_owned(),
                user_id: user_id.to_owned(),
                patient_id: patient_id.to_owned(),
                expire_time: Some(to_timestamp(expires_at)),
            })
            .await
            .map_err(|status| from_peer_status("auth-svc", &status))?
            .into_inner()
            .attribute)
    }
}
