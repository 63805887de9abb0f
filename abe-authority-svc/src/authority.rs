//! The CP-ABE authority's domain: set up once (the master key sealed under the key-encryption
//! key), serve the public parameters, and validate policies with the same parser the SDK uses.
//! Issuing user keys and emergency access need the caller's X25519 identity key from
//! messaging-svc's key directory (issue #4) and come with the records issue (#5).

use std::sync::Arc;

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{MasterKey, Policy, PolicyErrorKind, PublicParams};
use caremesh_runtime::db::begin_write;
use caremesh_runtime::kek::Kek;
use caremesh_runtime::{Error, ServiceRuntime};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};

use crate::storage::authority;

/// The current generation's public side.
#[derive(Clone, Debug)]
pub struct Published {
    pub version: String,
    pub public_params: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Authority {
    published: Arc<Published>,
}

fn purpose(version: &str) -> String {
    format!("abe/master-key/{version}")
}

impl Authority {
    /// Loads the current generation, setting the authority up on first start.
    pub async fn start(runtime: &ServiceRuntime) -> Result<Self, Error> {
        let db = &runtime.db;
        let row = match current(db).await? {
            Some(row) => row,
            None => setup(db, &runtime.kek, runtime.clock.now()).await?,
        };
        // Prove at start that the sealed master key opens and matches the published parameters,
        // rather than finding out at the first key issuance.
        let master = open_master(&runtime.kek, &row)?;
        if master.public_params().to_bytes() != row.public_params {
            return Err(Error::internal(
                "loading the ABE authority",
                "the sealed master key does not match the published parameters",
            ));
        }
        Ok(Self {
            published: Arc::new(Published {
                version: row.version,
                public_params: row.public_params,
                created_at: row.created_at,
            }),
        })
    }

    pub fn published(&self) -> &Published {
        &self.published
    }
}

async fn current(db: &DatabaseConnection) -> Result<Option<authority::Model>, Error> {
    Ok(authority::Entity::find()
        .filter(authority::Column::Current.eq(true))
        .one(db)
        .await?)
}

async fn setup(db: &DatabaseConnection, kek: &Kek, now: DateTime<Utc>) -> Result<authority::Model, Error> {
    let (params, master): (PublicParams, MasterKey) = caremesh_abe::setup(&mut OsRng);
    let version = uuid::Uuid::now_v7().to_string();
    let sealed = kek
        .seal(&purpose(&version), &master.to_bytes())
        .map_err(|error| Error::internal("sealing the ABE master key", error.to_string()))?;
    let txn = begin_write(db).await?;
    // Two replicas starting together: the second one finds the first one's authority.
    if let Some(existing) = authority::Entity::find()
        .filter(authority::Column::Current.eq(true))
        .one(&txn)
        .await?
    {
        return Ok(existing);
    }
    let row = authority::ActiveModel {
        version: Set(version),
        public_params: Set(params.to_bytes()),
        sealed_master_key: Set(sealed),
        created_at: Set(now),
        current: Set(true),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    tracing::info!(version = %row.version, "set up the ABE authority");
    Ok(row)
}

fn open_master(kek: &Kek, row: &authority::Model) -> Result<MasterKey, Error> {
    let bytes = kek
        .open(&purpose(&row.version), &row.sealed_master_key)
        .map_err(|error| Error::internal("unsealing the ABE master key", error.to_string()))?;
    MasterKey::from_bytes(&bytes).map_err(|error| Error::internal("reading the ABE master key", error.to_string()))
}

/// The verdict on a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCheck {
    pub valid: bool,
    pub canonical: String,
    pub attributes: Vec<String>,
    pub depth: u32,
    pub error: Option<PolicyProblem>,
}

/// Why a policy was refused: a stable reason, where, what was expected, and a sentence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyProblem {
    pub reason: String,
    pub position: u32,
    pub expected: String,
    pub message: String,
}

/// Parses `text` with caremesh-abe's parser; with `record_patient_id`, also requires the clauses
/// every record policy must have: the patient (`patient:<id>`) and emergency access
/// (`emergency:<id>`) must each be able to open it on their own.
pub fn check_policy(text: &str, record_patient_id: Option<&str>) -> PolicyCheck {
    let policy = match Policy::parse(text) {
        Ok(policy) => policy,
        Err(error) => {
            let (reason, expected) = match &error.kind {
                PolicyErrorKind::Unexpected { expected, .. } => ("UNEXPECTED_TOKEN", expected.to_string()),
                PolicyErrorKind::UnquotedAttribute { .. } => ("UNQUOTED_ATTRIBUTE", "a quoted attribute".to_owned()),
                PolicyErrorKind::UnterminatedAttribute => ("UNTERMINATED_ATTRIBUTE", "a closing quote".to_owned()),
                PolicyErrorKind::MixedOperators => ("MIXED_OPERATORS", "parentheses around each group".to_owned()),
                PolicyErrorKind::UnclosedParenthesis => ("UNCLOSED_PARENTHESIS", "')'".to_owned()),
                PolicyErrorKind::UnmatchedClosingParenthesis => ("UNMATCHED_PARENTHESIS", String::new()),
                PolicyErrorKind::PolicyTooLong { .. } | PolicyErrorKind::CanonicalFormTooLong { .. } => {
                    ("POLICY_TOO_LONG", String::new())
                }
                PolicyErrorKind::NestingTooDeep { .. } => ("POLICY_TOO_DEEP", String::new()),
                PolicyErrorKind::TooManyAttributes { .. } => ("TOO_MANY_ATTRIBUTES", String::new()),
                PolicyErrorKind::AttributeTooLong { .. } => ("ATTRIBUTE_TOO_LONG", String::new()),
                _ => (
                    "INVALID_ATTRIBUTE",
                    "namespace:value, e.g. \"dept:cardiology\"".to_owned(),
                ),
            };
            return PolicyCheck {
                error: Some(PolicyProblem {
                    reason: reason.to_owned(),
                    position: u32::try_from(error.position).unwrap_or(u32::MAX),
                    expected,
                    message: error.to_string(),
                }),
                ..PolicyCheck::default()
            };
        }
    };
    let canonical = policy.canonical();
    let attributes: Vec<String> = policy.attributes().into_iter().map(str::to_owned).collect();
    let depth = nesting_depth(&canonical);
    if let Some(patient) = record_patient_id {
        for (clause, reason) in [
            (format!("patient:{patient}"), "MISSING_PATIENT_CLAUSE"),
            (format!("emergency:{patient}"), "MISSING_EMERGENCY_CLAUSE"),
        ] {
            if !policy.is_satisfied_by(&[clause.as_str()]) {
                return PolicyCheck {
                    canonical,
                    attributes,
                    depth,
                    error: Some(PolicyProblem {
                        reason: reason.to_owned(),
                        position: 0,
                        expected: format!("(...) or \"{clause}\""),
                        message: format!(
                            "a record policy must let \"{clause}\" open it on its own: add `or \"{clause}\"` at the top level"
                        ),
                    }),
                    valid: false,
                };
            }
        }
    }
    PolicyCheck {
        valid: true,
        canonical,
        attributes,
        depth,
        error: None,
    }
}

/// Parenthesis depth of a canonical policy (attributes are quoted and never contain parentheses).
fn nesting_depth(canonical: &str) -> u32 {
    let (mut depth, mut deepest, mut quoted) = (0u32, 0u32, false);
    for character in canonical.chars() {
        match character {
            '"' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_checked_with_positions_and_mandatory_clauses() {
        let good = check_policy(r#""role:doctor" and ("dept:cardiology" or "dept:emergency")"#, None);
        assert!(good.valid, "{good:?}");
        assert_eq!(good.depth, 1);
        let flat = check_policy(r#""a:1" and "b:2" and "c:3""#, None);
        assert!(flat.valid);
        let garbage = check_policy("role:doctor and", None);
        assert!(!garbage.valid);
        let problem = garbage.error.unwrap();
        assert_eq!(problem.reason, "UNQUOTED_ATTRIBUTE");
        assert!(problem.message.contains("byte"), "{}", problem.message);
        let deep = check_policy(&format!("{}\"a:1\"{}", "(".repeat(40), ")".repeat(40)), None);
        assert_eq!(deep.error.unwrap().reason, "POLICY_TOO_DEEP");
        let record = check_policy(r#""role:doctor" or "patient:p1""#, Some("p1"));
        assert_eq!(record.error.unwrap().reason, "MISSING_EMERGENCY_CLAUSE");
        let record = check_policy(r#""role:doctor" or "patient:p1" or "emergency:p1""#, Some("p1"));
        assert!(record.valid, "{record:?}");
    }
}
