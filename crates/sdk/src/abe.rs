//! Attribute keys on the device (DESIGN.md §4): the CP-ABE public parameters (fetched once per
//! version), user keys issued by abe-authority-svc and sealed to this device's identity key
//! (opened here and kept in the device state, sealed at rest like the other device secrets), and
//! emergency access.
//!
//! A key holds the attributes auth-svc had for the user when it was issued; when a policy needs
//! an attribute the stored keys lack (new attributes, expiry, an emergency grant), a fresh key is
//! asked for once before giving up.

use std::sync::Arc;

use caremesh_abe::{Policy, PublicParams, UserKey};
use caremesh_crypto::policy_envelope::open_user_key;
use caremesh_proto::abe::v1 as pb;
use caremesh_proto::abe::v1::abe_service_client::AbeServiceClient;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::auth::Session;
use crate::messaging::{Messenger, crypto, local};
use crate::{SdkError, ServiceName};

/// The public parameters with their version.
#[derive(Clone, Debug)]
pub struct CachedParams {
    pub version: String,
    pub params: Arc<PublicParams>,
}

/// An opened attribute key as the device keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredAttributeKey {
    key_id: String,
    params_version: String,
    attributes: Vec<String>,
    expires_at: DateTime<Utc>,
    /// The serialized ABE user key (hex); the whole device state is sealed at rest.
    key_hex: String,
}

impl Drop for StoredAttributeKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_hex);
    }
}

/// What a key holds, for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeKeyInfo {
    pub key_id: String,
    pub attributes: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// A granted emergency access.
#[derive(Clone, Debug)]
pub struct EmergencyAccess {
    pub grant: pb::EmergencyGrant,
    pub key: AttributeKeyInfo,
}

fn abe_error(what: &str, error: caremesh_abe::AbeError) -> SdkError {
    SdkError::Local(format!("{what}: {error}"))
}

impl Messenger {
    fn abe_api(&self) -> Result<AbeServiceClient<Channel>, SdkError> {
        Ok(AbeServiceClient::new(self.client.require(ServiceName::AbeAuthority)?))
    }

    /// The ABE public parameters (cached; checked against the authority's version when asked
    /// with `refresh`).
    pub async fn public_params(&self, session: &Session) -> Result<CachedParams, SdkError> {
        if let Some(cached) = self.abe_params.lock().ok().and_then(|params| params.clone()) {
            return Ok(cached);
        }
        let response = self
            .abe_api()?
            .get_public_parameters(session.request(pb::GetPublicParametersRequest::default())?)
            .await?
            .into_inner();
        let params = PublicParams::from_bytes(&response.public_parameters)
            .map_err(|error| abe_error("the authority's public parameters", error))?;
        let cached = CachedParams {
            version: response.version,
            params: Arc::new(params),
        };
        if let Ok(mut slot) = self.abe_params.lock() {
            *slot = Some(cached.clone());
        }
        Ok(cached)
    }

    /// Asks the authority for a key with the user's current attributes and keeps it; older keys
    /// with attributes the user no longer has are dropped.
    pub async fn refresh_attribute_key(&self, session: &Session) -> Result<AttributeKeyInfo, SdkError> {
        let identity_key_id = self.lock()?.keys.identity().key_id().to_owned();
        let response = self
            .abe_api()?
            .issue_user_key(session.request(pb::IssueUserKeyRequest { identity_key_id })?)
            .await?
            .into_inner();
        self.keep(response.user_key.ok_or(SdkError::Protocol("no key in the answer"))?)
    }

    /// Break-glass access to `patient_id`'s records: the grant and a key with
    /// `emergency:<patient_id>`, kept on the device. The caller must refresh its session so its
    /// access token carries the attribute too (records-svc checks both).
    pub async fn request_emergency_access(
        &self,
        session: &Session,
        patient_id: &str,
        reason: &str,
        duration: Option<std::time::Duration>,
    ) -> Result<EmergencyAccess, SdkError> {
        let identity_key_id = self.lock()?.keys.identity().key_id().to_owned();
        let response = self
            .abe_api()?
            .request_emergency_access(session.request(pb::RequestEmergencyAccessRequest {
                patient_id: patient_id.to_owned(),
                reason: reason.to_owned(),
                duration: duration.map(|duration| prost_types::Duration {
                    seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
                identity_key_id,
            })?)
            .await?
            .into_inner();
        let key = self.keep(response.user_key.ok_or(SdkError::Protocol("no key in the answer"))?)?;
        Ok(EmergencyAccess {
            grant: response.grant.ok_or(SdkError::Protocol("no grant in the answer"))?,
            key,
        })
    }

    fn keep(&self, issued: pb::UserKey) -> Result<AttributeKeyInfo, SdkError> {
        let sealed = issued
            .sealed_key
            .as_ref()
            .ok_or(SdkError::Protocol("the key is not sealed to this device"))?;
        if issued.user_id != self.user_id() {
            return Err(SdkError::Protocol("the authority issued a key for another user"));
        }
        let expires_at = issued
            .expire_time
            .as_ref()
            .and_then(|time| DateTime::from_timestamp(time.seconds, 0))
            .ok_or(SdkError::Protocol("the key has no expiry"))?;
        let bytes = {
            let state = self.lock()?;
            open_user_key(state.keys.identity(), &issued.user_id, &issued.key_id, sealed)
                .map_err(|error| crypto("opening the issued attribute key", error))?
        };
        // Check it parses before keeping it.
        let key = UserKey::from_bytes(&bytes).map_err(|error| abe_error("the issued attribute key", error))?;
        let info = AttributeKeyInfo {
            key_id: issued.key_id.clone(),
            attributes: key.attributes().to_vec(),
            expires_at,
        };
        {
            let mut state = self.lock()?;
            let now = Utc::now();
            // The new key holds every attribute the user still has: an older key with one it
            // lacks (removed by an admin) goes, so this device cannot open with it any more.
            state.attribute_keys.retain(|stored| {
                stored.expires_at > now
                    && stored
                        .attributes
                        .iter()
                        .all(|attribute| info.attributes.contains(attribute))
            });
            if let Ok(mut parsed) = self.parsed_keys.lock() {
                parsed.retain(|key_id, _| state.attribute_keys.iter().any(|stored| &stored.key_id == key_id));
            }
            state.attribute_keys.push(StoredAttributeKey {
                key_id: issued.key_id,
                params_version: issued.params_version,
                attributes: info.attributes.clone(),
                expires_at,
                key_hex: hex::encode(bytes.as_slice()),
            });
        }
        self.persist()?;
        Ok(info)
    }

    /// The unexpired keys this device holds.
    pub fn attribute_keys(&self) -> Result<Vec<AttributeKeyInfo>, SdkError> {
        let now = Utc::now();
        Ok(self
            .lock()?
            .attribute_keys
            .iter()
            .filter(|stored| stored.expires_at > now)
            .map(|stored| AttributeKeyInfo {
                key_id: stored.key_id.clone(),
                attributes: stored.attributes.clone(),
                expires_at: stored.expires_at,
            })
            .collect())
    }

    fn stored_key_for(&self, policy: &Policy, params_version: &str) -> Result<Option<Arc<UserKey>>, SdkError> {
        let now = Utc::now();
        let found = self
            .lock()?
            .attribute_keys
            .iter()
            .rev()
            .find(|stored| {
                stored.expires_at > now
                    && stored.params_version == params_version
                    && policy.is_satisfied_by(&stored.attributes)
            })
            .map(|stored| (stored.key_id.clone(), Zeroizing::new(stored.key_hex.clone())));
        let Some((key_id, hex_key)) = found else {
            return Ok(None);
        };
        if let Some(parsed) = self.parsed_keys.lock().ok().and_then(|keys| keys.get(&key_id).cloned()) {
            return Ok(Some(parsed));
        }
        // Parsing checks every point (on the curve, in the subgroup): done once per key.
        let bytes =
            Zeroizing::new(hex::decode(hex_key.as_str()).map_err(|error| local("a stored attribute key", error))?);
        let key = Arc::new(UserKey::from_bytes(&bytes).map_err(|error| abe_error("a stored attribute key", error))?);
        if let Ok(mut keys) = self.parsed_keys.lock() {
            keys.insert(key_id, Arc::clone(&key));
        }
        Ok(Some(key))
    }

    /// A key of this device whose attributes satisfy `policy`, asking the authority for a fresh
    /// one when none does.
    pub(crate) async fn key_for(
        &self,
        session: &Session,
        policy: &Policy,
        params_version: &str,
    ) -> Result<Arc<UserKey>, SdkError> {
        if let Some(key) = self.stored_key_for(policy, params_version)? {
            return Ok(key);
        }
        self.refresh_attribute_key(session).await?;
        self.stored_key_for(policy, params_version)?.ok_or_else(|| {
            SdkError::Local(format!(
                "your attributes do not satisfy the policy {}",
                policy.canonical()
            ))
        })
    }
}
