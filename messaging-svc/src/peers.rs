//! What messaging-svc asks auth-svc: users' roles and account states (for who may write to whom),
//! cached briefly. This is an outbound adapter, so it speaks tonic; the domain sees [`Profile`]s
//! and [`Error`]s only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caremesh_proto::auth::v1::auth_internal_service_client::AuthInternalServiceClient;
use caremesh_proto::auth::v1::{BatchGetUserProfilesRequest, Role, UserStatus};
use caremesh_runtime::grpc::from_peer_status;
use caremesh_runtime::{Error, MeshChannel};

/// A user as messaging-svc needs to know them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// `patient`, `doctor`, `nurse`, `admin`, `auditor`.
    pub role: &'static str,
    pub active: bool,
}

#[derive(Debug)]
pub struct Profiles {
    auth: MeshChannel,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Profile, Instant)>>,
}

impl Profiles {
    pub fn new(auth: MeshChannel, ttl: Duration) -> Self {
        Self {
            auth,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The profile of `user_id`, or `None` when auth-svc knows no such user.
    pub async fn get(&self, user_id: &str) -> Result<Option<Profile>, Error> {
        if let Ok(cache) = self.cache.lock()
            && let Some((profile, fetched)) = cache.get(user_id)
            && fetched.elapsed() < self.ttl
        {
            return Ok(Some(profile.clone()));
        }
        let response = AuthInternalServiceClient::new(self.auth.clone())
            .batch_get_user_profiles(BatchGetUserProfilesRequest {
                user_ids: vec![user_id.to_owned()],
            })
            .await
            .map_err(|status| from_peer_status("auth-svc", &status))?
            .into_inner();
        let Some(found) = response.profiles.into_iter().find(|profile| profile.user_id == user_id) else {
            return Ok(None);
        };
        let profile = Profile {
            role: match found.role() {
                Role::Patient => "patient",
                Role::Doctor => "doctor",
                Role::Nurse => "nurse",
                Role::Admin => "admin",
                Role::Auditor => "auditor",
                Role::Unspecified => "unspecified",
            },
            active: found.status() == UserStatus::Active,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(user_id.to_owned(), (profile.clone(), Instant::now()));
        }
        Ok(Some(profile))
    }
}
