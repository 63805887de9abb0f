//! Names for the access report: actors' usernames and display names from auth-svc
//! (`AuthInternalService.BatchGetUserProfiles`, which admits audit-svc). Best effort: when auth-svc
//! cannot answer, the report is still served, without names.

use std::collections::HashMap;

use caremesh_proto::auth::v1::BatchGetUserProfilesRequest;
use caremesh_proto::auth::v1::auth_internal_service_client::AuthInternalServiceClient;
use caremesh_runtime::MeshChannel;

/// At most this many ids per call (auth-svc's limit).
const BATCH: usize = 100;

/// A user's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub username: String,
    pub display_name: String,
}

/// Looks names up in auth-svc.
#[derive(Clone, Debug)]
pub struct Directory {
    auth: MeshChannel,
}

impl Directory {
    pub fn new(auth: MeshChannel) -> Self {
        Self { auth }
    }

    /// The names of `user_ids` that auth-svc knows; unknown ids (and all of them when auth-svc
    /// is unreachable) are left out.
    pub async fn names(&self, user_ids: &[String]) -> HashMap<String, Names> {
        let mut found = HashMap::new();
        for chunk in user_ids.chunks(BATCH) {
            let request = BatchGetUserProfilesRequest {
                user_ids: chunk.to_vec(),
            };
            match AuthInternalServiceClient::new(self.auth.clone())
                .batch_get_user_profiles(request)
                .await
            {
                Ok(response) => {
                    for profile in response.into_inner().profiles {
                        found.insert(
                            profile.user_id,
                            Names {
                                username: profile.username,
                                display_name: profile.display_name,
                            },
                        );
                    }
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "auth-svc name lookup failed; access report without names");
                    return found;
                }
            }
        }
        found
    }
}
