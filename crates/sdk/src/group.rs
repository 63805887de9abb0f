//! Doctor group messages from the client side: a message addressed to everyone whose attributes
//! satisfy an ABE policy (e.g. `"role:doctor" and "dept:cardiology"`), sealed under the policy
//! (CP-ABE + AES-256-GCM) and signed by the sender; readers verify the signature and open it
//! with an attribute key that satisfies the policy.

use std::time::Duration;

use caremesh_abe::Policy;
use caremesh_crypto::new_id;
use caremesh_crypto::policy_envelope::{
    GroupMessage, POLICY_ENVELOPE_VERSION, group_content_aad, open_under_policy, seal_under_policy,
};
use caremesh_proto::messaging::v1 as pb;
use zeroize::Zeroizing;

use crate::SdkError;
use crate::auth::Session;
use crate::messaging::{Messenger, crypto};

impl Messenger {
    /// Sends `plaintext` to everyone whose attributes satisfy `policy` (doctors and nurses only).
    pub async fn send_group(
        &self,
        session: &Session,
        policy: &str,
        plaintext: &[u8],
        lifespan: Option<Duration>,
    ) -> Result<pb::Message, SdkError> {
        let check = caremesh_abe::check_policy(policy, None);
        if let Some(problem) = check.error {
            return Err(SdkError::Local(format!("the policy is invalid: {}", problem.message)));
        }
        let parsed = Policy::parse(&check.canonical)
            .map_err(|error| SdkError::Local(format!("the policy is invalid: {error}")))?;
        let params = self.public_params(session).await?;
        let message_id = new_id();
        let aad = group_content_aad(&message_id, &session.user_id, &check.canonical)
            .map_err(|error| crypto("binding the message", error))?;
        let sealed = seal_under_policy(&params.params, &parsed, &aad, plaintext)
            .map_err(|error| crypto("sealing the message", error))?;
        let mut envelope = pb::GroupEnvelope {
            version: POLICY_ENVELOPE_VERSION,
            params_version: params.version,
            encapsulated_key: sealed.encapsulated_key,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            sender_identity_key_id: String::new(),
            signature: Vec::new(),
        };
        {
            let state = self.lock()?;
            let identity = state.keys.identity();
            envelope.sender_identity_key_id = identity.key_id().to_owned();
            let signature = GroupMessage {
                message_id: &message_id,
                sender_user_id: &session.user_id,
                policy: &check.canonical,
                envelope: &envelope,
            }
            .sign(identity)
            .map_err(|error| crypto("signing the message", error))?;
            envelope.signature = signature.to_vec();
        }
        let request = pb::SendMessageRequest {
            message_id,
            content: Some(pb::send_message_request::Content::Group(pb::GroupContent {
                policy: check.canonical,
                envelope: Some(envelope),
            })),
            sender_copy: None,
            lifespan: lifespan.and_then(|lifespan| prost_types::Duration::try_from(lifespan).ok()),
            ..Default::default()
        };
        self.submit(session, request).await
    }

    /// Verifies a group message's signature and opens it with a satisfying attribute key.
    pub(crate) async fn open_group(
        &self,
        session: &Session,
        message: &pb::Message,
    ) -> Result<Zeroizing<Vec<u8>>, SdkError> {
        let envelope = message
            .group_envelope
            .as_ref()
            .ok_or(SdkError::Protocol("the group message has no envelope"))?;
        let sender = self
            .sender_identity(session, &message.sender_user_id, &envelope.sender_identity_key_id)
            .await?;
        GroupMessage {
            message_id: &message.message_id,
            sender_user_id: &message.sender_user_id,
            policy: &message.policy,
            envelope,
        }
        .verify(&sender)
        .map_err(|error| crypto("the sender's signature", error))?;
        let policy = Policy::parse(&message.policy)
            .map_err(|error| SdkError::Local(format!("the message's policy: {error}")))?;
        let key = self.key_for(session, &policy, &envelope.params_version).await?;
        let aad = group_content_aad(&message.message_id, &message.sender_user_id, &message.policy)
            .map_err(|error| crypto("binding the message", error))?;
        open_under_policy(
            &key,
            &envelope.encapsulated_key,
            &envelope.nonce,
            &envelope.ciphertext,
            &aad,
        )
        .map_err(|error| crypto("opening the message", error))
    }
}
