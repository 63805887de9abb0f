//! Emergency-access grants (HIPAA 164.312(a)(2)(ii)). abe-authority-svc decides a grant and
//! records it here; until it expires, the user's access tokens and `GetUserAttributes` carry
//! `emergency:<patient_id>`, and no access token outlives the grant it carries.

use caremesh_runtime::Error;
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use crate::domain::AuthDomain;
use crate::storage::emergency_grant;

/// An emergency attribute that holds until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemporaryAttribute {
    pub attribute: String,
    pub expires_at: DateTime<Utc>,
    pub grant_id: String,
}

pub fn emergency_attribute(patient_id: &str) -> String {
    format!("emergency:{patient_id}")
}

/// The grants of `user_id` in force at `now`, soonest to expire first.
pub(crate) async fn active<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<TemporaryAttribute>, Error> {
    let rows = emergency_grant::Entity::find()
        .filter(emergency_grant::Column::UserId.eq(user_id))
        .filter(emergency_grant::Column::ExpiresAt.gt(now))
        .order_by_asc(emergency_grant::Column::ExpiresAt)
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| TemporaryAttribute {
            attribute: emergency_attribute(&row.patient_id),
            expires_at: row.expires_at,
            grant_id: row.grant_id,
        })
        .collect())
}

/// What abe-authority-svc asks to record.
#[derive(Clone, Debug)]
pub struct NewGrant<'a> {
    pub grant_id: &'a str,
    pub user_id: &'a str,
    pub patient_id: &'a str,
    pub expires_at: DateTime<Utc>,
}

impl AuthDomain {
    /// Records a grant (idempotent by grant id). The grantee must be an active doctor and the
    /// patient an existing patient; the grant must end in the future.
    pub async fn grant_emergency_attribute(&self, grant: NewGrant<'_>) -> Result<String, Error> {
        let now = self.now();
        caremesh_runtime::ids::check_uuid_v7(grant.grant_id, "grant_id")?;
        if grant.expires_at <= now {
            return Err(Error::invalid_argument(
                "GRANT_ALREADY_EXPIRED",
                "expire_time must be in the future",
            ));
        }
        let (_turn, txn) = self.writer.begin().await?;
        if let Some(existing) = emergency_grant::Entity::find_by_id(grant.grant_id.to_owned())
            .one(&txn)
            .await?
        {
            let same = existing.user_id == grant.user_id
                && existing.patient_id == grant.patient_id
                && existing.expires_at == grant.expires_at;
            return if same {
                Ok(emergency_attribute(&existing.patient_id))
            } else {
                Err(Error::already_exists(
                    "GRANT_ID_TAKEN",
                    "another emergency grant already has this grant_id",
                ))
            };
        }
        let grantee = self.find_user(&txn, grant.user_id).await?;
        if grantee.role != "doctor" || grantee.status != "active" {
            return Err(Error::failed_precondition(
                "NOT_AN_ACTIVE_DOCTOR",
                "emergency access is granted to active doctors only",
            ));
        }
        let patient = self.find_user(&txn, grant.patient_id).await?;
        if patient.role != "patient" {
            return Err(Error::invalid_argument(
                "NOT_A_PATIENT",
                format!("user {} is not a patient", grant.patient_id),
            ));
        }
        emergency_grant::ActiveModel {
            grant_id: Set(grant.grant_id.to_owned()),
            user_id: Set(grant.user_id.to_owned()),
            patient_id: Set(grant.patient_id.to_owned()),
            created_at: Set(now),
            expires_at: Set(grant.expires_at),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(emergency_attribute(grant.patient_id))
    }

    /// The user's emergency attributes in force now.
    pub async fn temporary_attributes(&self, user_id: &str) -> Result<Vec<TemporaryAttribute>, Error> {
        active(&self.db, user_id, self.now()).await
    }
}
