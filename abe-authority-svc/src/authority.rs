//! The CP-ABE authority's state: set up once (the master key sealed under the key-encryption
//! key), then loaded at every start with the master key opened in memory (it wipes itself when
//! dropped) and the public parameters served to clients. Key issuance lives in `issuance`.

use std::sync::Arc;

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{MasterKey, PublicParams};
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
    pub(crate) params: Arc<PublicParams>,
    pub(crate) master: Arc<MasterKey>,
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
            params: Arc::new(master.public_params().clone()),
            master: Arc::new(master),
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
