//! Group messages (issue #5): messages addressed by an ABE policy, sent by doctors and nurses and
//! visible to everyone whose token attributes satisfy the policy. The server checks the policy,
//! the envelope's structure, that the encapsulated key was made for the declared policy, and the
//! sender's signature with their registered identity key; it never sees content (members open it
//! with their ABE keys).
//!
//! Visibility is decided per caller from their token's attributes: listings first find the stored
//! group policies the caller satisfies (an incremental cache of the distinct policies), then query
//! `kind = group AND policy IN (...)` next to the caller's direct messages, so pages keep one
//! order over one server sequence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use caremesh_abe::Policy;
use caremesh_crypto::policy_envelope::{GroupMessage, POLICY_ENVELOPE_VERSION, encapsulated_policy};
use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_proto::messaging::v1 as pb;
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use chrono::TimeDelta;
use prost::Message as _;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, Set};
use sha2::{Digest, Sha256};

use crate::domain::{Audited, Caller, MessagingDomain, check_uuid_v7};
use crate::keys::identity_proto;
use crate::messages::{DeviceCopies, MessageView, check_envelope, check_lifespan, check_sealed_body, resend};
use crate::storage::{GROUP_LOG, KIND_GROUP, delivery, message};

/// Largest CP-ABE encapsulation accepted (a 64-attribute policy needs about 10 KiB).
pub const MAX_ENCAPSULATED_KEY_LEN: usize = 64 * 1024;
const MAX_PARAMS_VERSION_LEN: usize = 128;
const SIGNATURE_LEN: usize = 64;
/// Parsed policies kept for visibility checks (cleared beyond this).
const MAX_CACHED_POLICIES: usize = 100_000;

/// The distinct policies of stored group messages, parsed, and how far `messages` was scanned.
/// Group messages get their sequence numbers under one lock (the group delivery log's), so they
/// commit in sequence order and scanning only rows after `scanned_to` misses none.
#[derive(Debug, Default)]
pub(crate) struct GroupPolicies {
    scanned_to: i64,
    known: BTreeMap<String, Option<Arc<Policy>>>,
}

/// A group conversation's id: one per policy (its canonical form), opaque to clients.
pub fn group_conversation_id(canonical_policy: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"caremesh-group-conversation-v1");
    hasher.update(canonical_policy.as_bytes());
    let digest = hasher.finalize();
    format!("gm-{}", hex::encode(digest.get(..16).unwrap_or_default()))
}

/// Checks a declared policy with the SDK's parser; returns its canonical form.
fn check_group_policy(policy: &str) -> Result<String, Error> {
    if policy.trim().is_empty() {
        return Err(Error::invalid_argument(
            "POLICY_REQUIRED",
            "group.policy is required, e.g. \"role:doctor\" and \"dept:cardiology\"",
        ));
    }
    let check = caremesh_abe::check_policy(policy, None);
    match check.error {
        Some(problem) => {
            let mut message = format!("group.policy is not a valid policy: {}", problem.message);
            if !problem.expected.is_empty() {
                message.push_str(&format!(" (expected {})", problem.expected));
            }
            Err(Error::invalid_argument(problem.reason, message)
                .with_metadata("position", problem.position.to_string())
                .with_metadata("expected", problem.expected))
        }
        None if check.valid => Ok(check.canonical),
        None => Err(Error::invalid_argument(
            "INVALID_POLICY",
            "group.policy is not a valid policy, e.g. \"role:doctor\" and \"dept:cardiology\"",
        )),
    }
}

/// Checks a group envelope's structure and that its encapsulated key is for `canonical_policy`.
fn check_group_envelope(envelope: &pb::GroupEnvelope, canonical_policy: &str) -> Result<(), Error> {
    let bad = |problem: String| Error::invalid_argument("INVALID_ENVELOPE", format!("group.envelope: {problem}"));
    if envelope.version != POLICY_ENVELOPE_VERSION {
        return Err(bad(format!(
            "version must be {POLICY_ENVELOPE_VERSION}, got {}",
            envelope.version
        )));
    }
    if envelope.params_version.is_empty() || envelope.params_version.len() > MAX_PARAMS_VERSION_LEN {
        return Err(bad(format!(
            "params_version must name the ABE public parameters used (1 to {MAX_PARAMS_VERSION_LEN} bytes, from \
             AbeService.GetPublicParameters)"
        )));
    }
    check_uuid_v7(&envelope.sender_identity_key_id, "sender_identity_key_id")
        .map_err(|_| bad("sender_identity_key_id must be a canonical UUIDv7 (your identity key id)".to_owned()))?;
    check_sealed_body(&envelope.nonce, &envelope.ciphertext).map_err(bad)?;
    if envelope.encapsulated_key.is_empty() || envelope.encapsulated_key.len() > MAX_ENCAPSULATED_KEY_LEN {
        return Err(bad(format!(
            "encapsulated_key must be 1 to {MAX_ENCAPSULATED_KEY_LEN} bytes (the CP-ABE encapsulation of the data key)"
        )));
    }
    if envelope.signature.len() != SIGNATURE_LEN {
        return Err(Error::invalid_argument(
            "BAD_SIGNATURE",
            "group.envelope.signature must be a 64-byte Ed25519 signature by your identity key",
        ));
    }
    let encapsulated = encapsulated_policy(&envelope.encapsulated_key)
        .map_err(|error| bad(format!("encapsulated_key is not a valid CP-ABE encapsulation: {error}")))?;
    if encapsulated.canonical() != canonical_policy {
        return Err(Error::invalid_argument(
            "POLICY_MISMATCH",
            "group.envelope.encapsulated_key was made for another policy than group.policy: encapsulate the data \
             key under the policy you declare",
        ));
    }
    Ok(())
}

impl MessagingDomain {
    /// Sends a group message; `Ok((view, duplicate))`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_group(
        &self,
        principal: &Principal,
        caller: &Caller,
        message_id: String,
        policy: String,
        envelope: Option<pb::GroupEnvelope>,
        sender_copy: Option<pb::Envelope>,
        lifespan: Option<Duration>,
    ) -> Result<(MessageView, bool), Error> {
        check_uuid_v7(&message_id, "message_id")?;
        let audited = |outcome| Audited {
            action: AuditAction::Create,
            operation: "SendMessage",
            entity_type: "message",
            entity_id: &message_id,
            patient_id: "",
            outcome,
            reason: "",
            ..Audited::default()
        };
        if !matches!(principal.role.as_str(), "doctor" | "nurse") {
            let error = Error::permission_denied(
                "ROLE_CANNOT_SEND_GROUP",
                format!(
                    "only doctors and nurses send group (policy-addressed) messages; you are {}: send a direct \
                     message instead",
                    principal.role
                ),
            );
            return Err(self.denied(caller, audited(AuditOutcome::Denied), error).await);
        }
        let canonical = check_group_policy(&policy)?;
        let envelope = envelope.ok_or_else(|| {
            Error::invalid_argument(
                "ENVELOPE_REQUIRED",
                "group.envelope is required: the content sealed under the policy and signed",
            )
        })?;
        check_group_envelope(&envelope, &canonical)?;
        if let Some(copy) = &sender_copy {
            check_envelope(copy, "sender_copy")?;
        }
        check_lifespan(lifespan)?;

        let own = self
            .current_identity(&self.db, &principal.user_id)
            .await?
            .ok_or_else(|| {
                Error::failed_precondition("KEYS_NOT_PUBLISHED", "publish your key bundle before sending")
            })?;
        let copy_mismatch = sender_copy.as_ref().is_some_and(|copy| {
            copy.sender_identity_key_id != own.key_id || copy.recipient_identity_key_id != own.key_id
        });
        if envelope.sender_identity_key_id != own.key_id || copy_mismatch {
            return Err(Error::failed_precondition(
                "SENDER_KEY_MISMATCH",
                "the envelopes are not made with your current identity key: republish your keys or sign and seal again",
            ));
        }
        let identity = caremesh_crypto::verify_identity(&identity_proto(&own), &own.user_id)
            .map_err(|error| Error::internal("stored identity key no longer verifies", error))?;
        GroupMessage {
            message_id: &message_id,
            sender_user_id: &principal.user_id,
            policy: &policy,
            envelope: &envelope,
        }
        .verify(&identity)
        .map_err(|_| {
            Error::invalid_argument(
                "BAD_SIGNATURE",
                "group.envelope.signature does not verify with your registered identity key: sign the message id, \
                 your user id, the policy exactly as sent and the whole envelope (caremesh-group-message-v1)",
            )
        })?;

        let group_bytes = envelope.encode_to_vec();
        let sender_bytes = sender_copy.map(|copy| copy.encode_to_vec());
        let now = self.now();
        let (_turn, txn) = self.begin_write().await?;
        // Also orders group messages' sequence numbers (see `GroupPolicies`).
        self.order_deliveries(&txn, GROUP_LOG).await?;
        if let Some(existing) = message::Entity::find()
            .filter(message::Column::MessageId.eq(message_id.clone()))
            .one(&txn)
            .await?
        {
            let same = existing.sender_user_id == principal.user_id
                && existing.kind == KIND_GROUP
                && existing.policy == policy
                && existing.group_envelope.as_deref() == Some(group_bytes.as_slice())
                && existing.sender_envelope == sender_bytes;
            return resend(existing, same, &principal.user_id);
        }
        let expire_at = lifespan
            .and_then(|lifespan| TimeDelta::from_std(lifespan).ok())
            .map(|lifespan| now + lifespan);
        let row = message::ActiveModel {
            message_id: Set(message_id.clone()),
            conversation_id: Set(group_conversation_id(&canonical)),
            sender_user_id: Set(principal.user_id.clone()),
            recipient_user_id: Set(String::new()),
            recipient_envelope: Set(None),
            sender_envelope: Set(sender_bytes),
            created_at: Set(now),
            expire_at: Set(expire_at),
            recalled_at: Set(None),
            delivered_at: Set(None),
            read_at: Set(None),
            kind: Set(KIND_GROUP.to_owned()),
            policy: Set(policy),
            group_envelope: Set(Some(group_bytes)),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        delivery::ActiveModel {
            user_id: Set(GROUP_LOG.to_owned()),
            message_id: Set(message_id.clone()),
            kind: Set("message".to_owned()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        self.audit(&txn, caller, audited(AuditOutcome::Success)).await?;
        self.notify_in(&txn, GROUP_LOG).await?;
        txn.commit().await?;
        self.notify_local(GROUP_LOG);
        self.outbox.wake_relay();
        Ok((
            MessageView {
                row,
                viewer: principal.user_id.clone(),
                copies: DeviceCopies::default(),
            },
            false,
        ))
    }

    /// Whether `attributes` satisfy `policy` (a stored group message's).
    pub(crate) fn policy_satisfied(&self, policy: &str, attributes: &[String]) -> bool {
        let Ok(mut cache) = self.group_policies.lock() else {
            return Policy::parse(policy).is_ok_and(|parsed| parsed.is_satisfied_by(attributes));
        };
        if cache.known.len() > MAX_CACHED_POLICIES {
            cache.known.clear();
            cache.scanned_to = 0;
        }
        cache
            .known
            .entry(policy.to_owned())
            .or_insert_with(|| Policy::parse(policy).ok().map(Arc::new))
            .as_ref()
            .is_some_and(|parsed| parsed.is_satisfied_by(attributes))
    }

    /// Whether the caller may see a message: its sender or recipient, or for a group message
    /// someone whose attributes satisfy its policy.
    pub(crate) fn may_see(&self, row: &message::Model, user_id: &str, attributes: &[String]) -> bool {
        if row.sender_user_id == user_id {
            return true;
        }
        if row.kind == KIND_GROUP {
            self.policy_satisfied(&row.policy, attributes)
        } else {
            row.recipient_user_id == user_id
        }
    }

    /// The policies of stored group messages that `attributes` satisfy.
    pub(crate) async fn satisfied_policies(&self, attributes: &[String]) -> Result<Vec<String>, Error> {
        let latest = message::Entity::find()
            .select_only()
            .column_as(message::Column::Seq.max(), "max")
            .filter(message::Column::Kind.eq(KIND_GROUP))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten()
            .unwrap_or(0);
        let scanned_to = self.group_policies.lock().map_or(0, |cache| cache.scanned_to);
        if latest > scanned_to {
            let found: Vec<String> = message::Entity::find()
                .select_only()
                .column(message::Column::Policy)
                .distinct()
                .filter(message::Column::Kind.eq(KIND_GROUP))
                .filter(message::Column::Seq.gt(scanned_to))
                .filter(message::Column::Seq.lte(latest))
                .into_tuple()
                .all(&self.db)
                .await?;
            let parsed: Vec<(String, Option<Arc<Policy>>)> = found
                .into_iter()
                .map(|policy| {
                    let parsed = Policy::parse(&policy).ok().map(Arc::new);
                    (policy, parsed)
                })
                .collect();
            if let Ok(mut cache) = self.group_policies.lock() {
                if cache.known.len() > MAX_CACHED_POLICIES {
                    cache.known.clear();
                    cache.scanned_to = 0;
                }
                // Advance only if the cache still covers everything up to where this scan
                // started (it may have been cleared meanwhile).
                if cache.scanned_to >= scanned_to {
                    cache.scanned_to = cache.scanned_to.max(latest);
                }
                for (policy, parsed) in parsed {
                    cache.known.entry(policy).or_insert(parsed);
                }
            }
        }
        let cache = self
            .group_policies
            .lock()
            .map_err(|_| Error::internal("group policy cache", "poisoned lock"))?;
        Ok(cache
            .known
            .iter()
            .filter(|(_, parsed)| parsed.as_ref().is_some_and(|parsed| parsed.is_satisfied_by(attributes)))
            .map(|(policy, _)| policy.clone())
            .collect())
    }

    /// The condition "a group message the caller may read" (not their own), or `None` when they
    /// satisfy no stored policy.
    pub(crate) async fn group_condition(&self, principal: &Principal) -> Result<Option<Condition>, Error> {
        let policies = self.satisfied_policies(&principal.attributes).await?;
        if policies.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            Condition::all()
                .add(message::Column::Kind.eq(KIND_GROUP))
                .add(message::Column::Policy.is_in(policies)),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policies_are_refused_with_the_parsers_reason() {
        assert_eq!(
            check_group_policy(r#""role:doctor" and "dept:cardiology""#).unwrap(),
            caremesh_abe::Policy::parse(r#""role:doctor" and "dept:cardiology""#)
                .unwrap()
                .canonical()
        );
        let garbage = check_group_policy("role:doctor and").unwrap_err();
        assert_eq!(garbage.reason(), "UNQUOTED_ATTRIBUTE");
        assert!(garbage.message().contains("group.policy"), "{}", garbage.message());
        let deep = check_group_policy(&format!("{}\"a:1\"{}", "(".repeat(40), ")".repeat(40))).unwrap_err();
        assert_eq!(deep.reason(), "POLICY_TOO_DEEP");
        assert_eq!(check_group_policy("  ").unwrap_err().reason(), "POLICY_REQUIRED");
    }

    #[test]
    fn group_conversations_are_per_policy() {
        assert_ne!(group_conversation_id("\"a:1\""), group_conversation_id("\"a:2\""));
        assert!(group_conversation_id("\"a:1\"").starts_with("gm-"));
    }
}
