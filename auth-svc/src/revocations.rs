//! The revocation feed (`AuthInternalService.PollRevocations`): what ended before the access
//! tokens that carry it expire. Sessions record when they were revoked; attribute removals are
//! recorded by [`record_removed_attributes`] in the transaction that removes them. Both are read
//! by the time they happened, and only while a token issued before them can still be live
//! ([`caremesh_token::REVOCATION_RETENTION_SECONDS`]); older removals are deleted
//! when new ones are recorded.

use caremesh_runtime::Error;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use crate::domain::AuthDomain;
use crate::storage::{attribute_removal, session};

/// The most entries of each kind one answer carries; a caller that gets this many asks again
/// from the last one's time.
pub const MAX_ENTRIES: u64 = 10_000;

pub fn retention() -> TimeDelta {
    TimeDelta::seconds(caremesh_token::REVOCATION_RETENTION_SECONDS)
}

/// Revocations recorded at or after `since` (or within the retention when `None`).
#[derive(Debug)]
pub struct Revocations {
    pub read_at: DateTime<Utc>,
    /// (session id, user id, revoked at).
    pub sessions: Vec<(String, String, DateTime<Utc>)>,
    pub removed_attributes: Vec<attribute_removal::Model>,
    /// Where to ask again when a list was cut at [`MAX_ENTRIES`].
    pub more_since: Option<DateTime<Utc>>,
}

impl AuthDomain {
    pub async fn revocations(&self, since: Option<DateTime<Utc>>) -> Result<Revocations, Error> {
        let read_at = self.now();
        let oldest = read_at - retention();
        let since = since.map_or(oldest, |since| since.max(oldest));
        let sessions = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .column(session::Column::UserId)
            .column(session::Column::RevokedAt)
            .filter(session::Column::RevokedAt.gte(since))
            .order_by_asc(session::Column::RevokedAt)
            .limit(MAX_ENTRIES)
            .into_tuple::<(String, String, Option<DateTime<Utc>>)>()
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|(id, user_id, at)| at.map(|at| (id, user_id, at)))
            .collect::<Vec<_>>();
        let removed_attributes = attribute_removal::Entity::find()
            .filter(attribute_removal::Column::RemovedAt.gte(since))
            .order_by_asc(attribute_removal::Column::RemovedAt)
            .limit(MAX_ENTRIES)
            .all(&self.db)
            .await?;
        // A cut list resumes at its last entry's time (entries at that time come again).
        let cut_at = |len: usize, last: Option<DateTime<Utc>>| last.filter(|_| len as u64 >= MAX_ENTRIES);
        let more_since = [
            cut_at(sessions.len(), sessions.last().map(|(_, _, at)| *at)),
            cut_at(
                removed_attributes.len(),
                removed_attributes.last().map(|removal| removal.removed_at),
            ),
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(Revocations {
            read_at,
            sessions,
            removed_attributes,
            more_since,
        })
    }
}

/// Records, in the caller's transaction, every attribute of `before` that `after` no longer has,
/// and deletes the removals that no live token can predate any more (they are rare admin acts, so
/// the table stays small without a sweep).
pub async fn record_removed_attributes<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    before: &[String],
    after: &[String],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for attribute in before.iter().filter(|attribute| !after.contains(attribute)) {
        attribute_removal::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            user_id: Set(user_id.to_owned()),
            attribute: Set(attribute.clone()),
            removed_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    if before.iter().any(|attribute| !after.contains(attribute)) {
        attribute_removal::Entity::delete_many()
            .filter(attribute_removal::Column::RemovedAt.lt(now - retention()))
            .exec(conn)
            .await?;
    }
    Ok(())
}
