//! Revocations that take effect before the access tokens they concern expire. Tokens are
//! verified locally and live up to ten minutes, so every service polls auth-svc's revocation feed
//! (`AuthInternalService.PollRevocations`, over mTLS) every [`POLL_INTERVAL`]:
//! - a token of a revoked session (logout, admin revocation, disabled account, reused refresh
//!   token) is refused, UNAUTHENTICATED;
//! - a token issued at or before an attribute's removal no longer carries it, so policies checked
//!   on the server stop being satisfied.
//!
//! Fails closed: when the feed could not be read for [`MAX_STALENESS`], every token is refused
//! (UNAVAILABLE) rather than honoured while it might be revoked. A restarted service reads every
//! revocation that still matters on its first poll (auth-svc keeps them in its database).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use caremesh_proto::auth::v1::auth_internal_service_client::AuthInternalServiceClient;
use caremesh_proto::auth::v1::{PollRevocationsRequest, PollRevocationsResponse};
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::{Error, MeshChannel, time};

/// How often the feed is read: a revocation takes effect on every service within about this.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long the feed may go unread before tokens are refused.
pub const MAX_STALENESS: Duration = Duration::from_secs(10);

/// Each poll asks from this long before the previous answer's time, so that a revocation whose
/// transaction committed after a poll read past its time is still seen.
const OVERLAP: TimeDelta = TimeDelta::seconds(10);

/// At most this many answers make up one read (an answer is cut at auth-svc's size limit).
const MAX_PAGES: usize = 100;

/// What is known to be revoked.
#[derive(Debug, Default)]
struct Known {
    /// Revoked sessions and when they were revoked.
    sessions: HashMap<String, DateTime<Utc>>,
    /// Per user: attributes removed, and when.
    removed: HashMap<String, Vec<(String, DateTime<Utc>)>>,
    /// Where the next poll starts.
    next_since: Option<DateTime<Utc>>,
    /// When the feed was last read in full.
    read_at: Option<Instant>,
}

impl Known {
    /// Adds an answer's entries; returns whether anything new was learnt.
    fn merge(&mut self, answer: &PollRevocationsResponse) -> bool {
        let mut learnt = false;
        for revoked in &answer.sessions {
            let Some(at) = revoked.revoke_time.as_ref().and_then(time::from_timestamp) else {
                continue;
            };
            learnt |= self.sessions.insert(revoked.session_id.clone(), at).is_none();
        }
        for removal in &answer.removed_attributes {
            let Some(at) = removal.remove_time.as_ref().and_then(time::from_timestamp) else {
                continue;
            };
            let removals = self.removed.entry(removal.user_id.clone()).or_default();
            if !removals.contains(&(removal.attribute.clone(), at)) {
                removals.push((removal.attribute.clone(), at));
                learnt = true;
            }
        }
        learnt
    }

    /// Forgets what no live token can predate any more.
    fn prune(&mut self, oldest: DateTime<Utc>) {
        self.sessions.retain(|_, at| *at >= oldest);
        self.removed.retain(|_, removals| {
            removals.retain(|(_, at)| *at >= oldest);
            !removals.is_empty()
        });
    }

    /// `principal` as the feed has it: refused if its session was revoked, without the attributes
    /// removed at or after its token was issued.
    fn apply(&self, mut principal: Principal) -> Result<Principal, Error> {
        if self.sessions.contains_key(&principal.session_id) {
            return Err(session_revoked());
        }
        if let Some(removals) = self.removed.get(&principal.user_id) {
            principal.attributes.retain(|attribute| {
                !removals
                    .iter()
                    .any(|(removed, at)| removed == attribute && principal.issued_at <= at.timestamp())
            });
        }
        Ok(principal)
    }
}

fn session_revoked() -> Error {
    Error::unauthenticated(
        "SESSION_REVOKED",
        "this session has ended (signed out, revoked by an admin, or the account was disabled): log in again",
    )
}

fn attributes_changed() -> Error {
    Error::unauthenticated(
        "ATTRIBUTES_CHANGED",
        "an admin changed your attributes: refresh your access token and open the stream again",
    )
}

/// The feed as one service sees it.
#[derive(Debug)]
pub struct RevocationFeed {
    client: AuthInternalServiceClient<MeshChannel>,
    known: RwLock<Known>,
    /// One read at a time; a caller that waited for another's read uses it.
    reading: tokio::sync::Mutex<()>,
    /// Bumped whenever something new is revoked, for long-lived streams.
    changed: tokio::sync::watch::Sender<u64>,
}

impl RevocationFeed {
    pub fn new(auth: MeshChannel) -> Self {
        Self {
            client: AuthInternalServiceClient::new(auth),
            known: RwLock::new(Known::default()),
            reading: tokio::sync::Mutex::new(()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    fn read_within(&self, age: Duration) -> bool {
        self.known
            .read()
            .ok()
            .and_then(|known| known.read_at)
            .is_some_and(|read_at| read_at.elapsed() < age)
    }

    /// Reads the feed from where the last read left off.
    pub async fn read(&self) -> Result<(), Error> {
        let _one_at_a_time = self.reading.lock().await;
        // Someone else read it while we waited.
        if self.read_within(POLL_INTERVAL / 2) {
            return Ok(());
        }
        let started = Instant::now();
        let mut since = self.known.read().ok().and_then(|known| known.next_since);
        let mut learnt = false;
        let mut oldest = None;
        let mut next_since = None;
        for _ in 0..MAX_PAGES {
            let answer = self
                .client
                .clone()
                .poll_revocations(PollRevocationsRequest {
                    since: since.map(time::to_timestamp),
                })
                .await
                .map_err(|status| {
                    Error::unavailable(
                        "REVOCATIONS_UNAVAILABLE",
                        format!("cannot read the revocation feed from auth-svc: {}", status.message()),
                    )
                })?
                .into_inner();
            let server_time = answer.server_time.as_ref().and_then(time::from_timestamp);
            let retention = answer
                .retention
                .as_ref()
                .map_or(TimeDelta::zero(), |retention| TimeDelta::seconds(retention.seconds));
            if let Ok(mut known) = self.known.write() {
                learnt |= known.merge(&answer);
            }
            if next_since.is_none() {
                next_since = server_time.map(|at| at - OVERLAP);
                oldest = server_time.map(|at| at - retention);
            }
            match answer.more_since.as_ref().and_then(time::from_timestamp) {
                Some(more) => since = Some(more),
                None => break,
            }
        }
        if let Ok(mut known) = self.known.write() {
            if let Some(oldest) = oldest {
                known.prune(oldest);
            }
            known.next_since = next_since.or(known.next_since);
            known.read_at = Some(started);
        }
        if learnt {
            self.changed.send_modify(|version| *version = version.wrapping_add(1));
        }
        Ok(())
    }

    /// Reads the feed every [`POLL_INTERVAL`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            match self.read().await {
                Ok(()) if failing => {
                    tracing::info!("revocation feed readable again");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    tracing::warn!(%error, "revocation feed not read; tokens are refused if this lasts");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// `principal` after the revocations: refused if its session ended, without removed
    /// attributes. Reads the feed first if it has not been read for [`MAX_STALENESS`].
    pub async fn check(&self, principal: Principal) -> Result<Principal, Error> {
        if !self.read_within(MAX_STALENESS) {
            self.read().await.map_err(|error| {
                tracing::warn!(%error, "refusing a token: revocations unknown");
                Error::unavailable(
                    "REVOCATIONS_UNKNOWN",
                    "cannot check whether your session was revoked right now: try again in a few seconds",
                )
            })?;
        }
        self.known
            .read()
            .map_err(|_| Error::internal("revocations", "lock poisoned"))?
            .apply(principal)
    }

    /// Resolves, with the refusal, once `principal`'s session is revoked or one of its
    /// attributes removed: long-lived streams end with it (a stream that chose what to deliver by
    /// the attributes must not go on delivering by the old ones).
    pub fn until_revoked(self: &Arc<Self>, principal: Principal) -> BoxFuture<'static, Error> {
        let feed = Arc::clone(self);
        Box::pin(async move {
            let mut changes = feed.changed.subscribe();
            loop {
                let refused = feed
                    .known
                    .read()
                    .ok()
                    .and_then(|known| match known.apply(principal.clone()) {
                        Err(refusal) => Some(refusal),
                        Ok(seen) if seen.attributes != principal.attributes => Some(attributes_changed()),
                        Ok(_) => None,
                    });
                if let Some(refusal) = refused {
                    return refusal;
                }
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caremesh_proto::auth::v1::{RemovedAttribute, RevokedSession};

    fn principal(session_id: &str, issued_at: i64) -> Principal {
        Principal {
            user_id: "u1".to_owned(),
            role: "doctor".to_owned(),
            attributes: vec!["role:doctor".to_owned(), "dept:cardiology".to_owned()],
            session_id: session_id.to_owned(),
            aal: 2,
            issued_at,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 500_000_000).unwrap()
    }

    fn answer(sessions: &[(&str, i64)], removals: &[(&str, i64)]) -> PollRevocationsResponse {
        PollRevocationsResponse {
            sessions: sessions
                .iter()
                .map(|(id, seconds)| RevokedSession {
                    session_id: (*id).to_owned(),
                    user_id: "u1".to_owned(),
                    revoke_time: Some(time::to_timestamp(at(*seconds))),
                })
                .collect(),
            removed_attributes: removals
                .iter()
                .map(|(attribute, seconds)| RemovedAttribute {
                    user_id: "u1".to_owned(),
                    attribute: (*attribute).to_owned(),
                    remove_time: Some(time::to_timestamp(at(*seconds))),
                })
                .collect(),
            ..PollRevocationsResponse::default()
        }
    }

    #[test]
    fn a_revoked_session_is_refused_and_others_pass() {
        let mut known = Known::default();
        assert!(known.merge(&answer(&[("s1", 100)], &[])));
        assert!(
            !known.merge(&answer(&[("s1", 100)], &[])),
            "merging twice learns nothing"
        );
        let refusal = known.apply(principal("s1", 50)).unwrap_err();
        assert_eq!(refusal.reason(), "SESSION_REVOKED");
        assert_eq!(known.apply(principal("s2", 50)).unwrap(), principal("s2", 50));
    }

    #[test]
    fn a_removed_attribute_leaves_tokens_issued_up_to_its_removal() {
        let mut known = Known::default();
        known.merge(&answer(&[], &[("dept:cardiology", 100)]));
        for issued_at in [40, 100] {
            let seen = known.apply(principal("s1", issued_at)).unwrap();
            assert_eq!(seen.attributes, ["role:doctor"], "issued at {issued_at}");
        }
        // Issued after the removal (the attribute was given back): kept.
        let later = known.apply(principal("s1", 101)).unwrap();
        assert_eq!(later.attributes, ["role:doctor", "dept:cardiology"]);
    }

    #[test]
    fn entries_older_than_the_retention_are_forgotten() {
        let mut known = Known::default();
        known.merge(&answer(&[("old", 10), ("new", 1000)], &[("dept:cardiology", 10)]));
        known.prune(at(500));
        assert!(known.apply(principal("old", 5)).is_ok());
        assert!(known.apply(principal("new", 5)).is_err());
        assert!(known.removed.is_empty());
    }
}
