//! Token-signing keys: Ed25519, sealed under the key-encryption key in the database. One key is
//! current; rotation makes a new one current and retires the old one only after the tokens it
//! signed have expired, so rotation breaks no session. Every replica reads the current key from
//! the database, so a rotation on one replica reaches the others.

use std::sync::RwLock;
use std::time::Duration;

use caremesh_runtime::Error;
use caremesh_runtime::db::Writer;
use caremesh_runtime::kek::Kek;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use zeroize::Zeroizing;

use crate::storage::signing_key;

/// A verification key as published.
#[derive(Clone, Debug)]
pub struct PublishedKey {
    pub kid: String,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retire_at: Option<DateTime<Utc>>,
    pub current: bool,
}

#[derive(Debug)]
pub struct SigningKeys {
    current: RwLock<Option<(String, SigningKey)>>,
}

fn purpose(kid: &str) -> String {
    format!("auth/token-signing-key/{kid}")
}

impl SigningKeys {
    pub fn new() -> Self {
        Self {
            current: RwLock::new(None),
        }
    }

    /// Makes sure a current key exists (creating the first one on a fresh database).
    pub async fn ensure(&self, writer: &Writer, kek: &Kek, now: DateTime<Utc>) -> Result<(), Error> {
        let (_turn, txn) = writer.begin().await?;
        let current = signing_key::Entity::find()
            .filter(signing_key::Column::Current.eq(true))
            .one(&txn)
            .await?;
        if current.is_none() {
            insert_new(&txn, kek, now).await?;
        }
        txn.commit().await?;
        self.reload(writer.db(), kek).await
    }

    /// Re-reads the current key from the database.
    pub async fn reload<C: ConnectionTrait>(&self, db: &C, kek: &Kek) -> Result<(), Error> {
        let row = signing_key::Entity::find()
            .filter(signing_key::Column::Current.eq(true))
            .one(db)
            .await?
            .ok_or_else(|| Error::internal("loading the token signing key", "no current signing key"))?;
        let secret = kek
            .open(&purpose(&row.kid), &row.sealed_private_key)
            .map_err(|error| Error::internal("unsealing the token signing key", error.to_string()))?;
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
            secret
                .as_slice()
                .try_into()
                .map_err(|_| Error::internal("unsealing the token signing key", "wrong key length"))?,
        );
        let key = SigningKey::from_bytes(&bytes);
        if let Ok(mut current) = self.current.write() {
            *current = Some((row.kid, key));
        }
        Ok(())
    }

    /// The current key and its id.
    pub fn current(&self) -> Result<(String, SigningKey), Error> {
        self.current
            .read()
            .ok()
            .and_then(|current| current.clone())
            .ok_or_else(|| Error::internal("signing a token", "signing keys not loaded"))
    }

    /// Makes a new key current; the previous one stays valid for `overlap` (the access token
    /// lifetime), then retires.
    pub async fn rotate(
        &self,
        writer: &Writer,
        kek: &Kek,
        now: DateTime<Utc>,
        overlap: Duration,
    ) -> Result<PublishedKey, Error> {
        let retire_at = now + chrono::TimeDelta::from_std(overlap).unwrap_or(chrono::TimeDelta::minutes(10));
        let (_turn, txn) = writer.begin().await?;
        for old in signing_key::Entity::find()
            .filter(signing_key::Column::Current.eq(true))
            .all(&txn)
            .await?
        {
            let mut old: signing_key::ActiveModel = old.into();
            old.current = Set(false);
            old.retire_at = Set(Some(retire_at));
            old.update(&txn).await?;
        }
        let published = insert_new(&txn, kek, now).await?;
        txn.commit().await?;
        self.reload(writer.db(), kek).await?;
        Ok(published)
    }

    /// The keys verifiers should accept at `now`.
    pub async fn published<C: ConnectionTrait>(&self, db: &C, now: DateTime<Utc>) -> Result<Vec<PublishedKey>, Error> {
        Ok(signing_key::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .filter(|key| key.retire_at.is_none_or(|retire| retire > now))
            .map(|key| PublishedKey {
                kid: key.kid,
                public_key: key.public_key,
                created_at: key.created_at,
                retire_at: key.retire_at,
                current: key.current,
            })
            .collect())
    }
}

async fn insert_new<C: ConnectionTrait>(db: &C, kek: &Kek, now: DateTime<Utc>) -> Result<PublishedKey, Error> {
    let mut secret = Zeroizing::new([0u8; 32]);
    crate::secrets::fill(secret.as_mut())?;
    let key = SigningKey::from_bytes(&secret);
    let public = key.verifying_key();
    let kid = caremesh_token::key_id(&public);
    let sealed = kek
        .seal(&purpose(&kid), secret.as_ref())
        .map_err(|error| Error::internal("sealing a token signing key", error.to_string()))?;
    signing_key::ActiveModel {
        kid: Set(kid.clone()),
        public_key: Set(public.as_bytes().to_vec()),
        sealed_private_key: Set(sealed),
        created_at: Set(now),
        retire_at: Set(None),
        current: Set(true),
    }
    .insert(db)
    .await?;
    Ok(PublishedKey {
        kid,
        public_key: public.as_bytes().to_vec(),
        created_at: now,
        retire_at: None,
        current: true,
    })
}
