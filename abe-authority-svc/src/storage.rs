//! abe-authority-svc's database: the authority's parameters (the master key sealed under the
//! key-encryption key), the record of issued user keys (metadata only: the keys themselves are
//! sealed to their owners and never stored), emergency-access grants and, as in every service,
//! the audit outbox.

use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{binary, boolean, string, string_null, text, timestamp_with_time_zone};

/// One generation of the authority. Exactly one is current.
pub mod authority {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "authority")]
    pub struct Model {
        /// The parameters' version (UUIDv7), quoted in every ciphertext's envelope.
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: String,
        /// Serialized public parameters (caremesh-abe's canonical encoding).
        pub public_params: Vec<u8>,
        /// The master key, sealed under the KEK for purpose `abe/master-key/<version>`.
        pub sealed_master_key: Vec<u8>,
        pub created_at: DateTimeUtc,
        pub current: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An issued user key: who got which attributes until when (never the key material).
pub mod user_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: String,
        pub user_id: String,
        /// JSON array of the attributes in the key, sorted.
        pub attributes: String,
        /// auth-svc's etag of the user's attributes the key was issued for.
        pub attributes_etag: String,
        pub params_version: String,
        /// The identity key the key was sealed to.
        pub identity_key_id: String,
        /// The emergency grant the key was issued for, if any.
        pub grant_id: Option<String>,
        pub issued_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A break-glass grant: a doctor, a patient, the justification and the window.
pub mod emergency_grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "emergency_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub grant_id: String,
        pub user_id: String,
        pub patient_id: String,
        pub reason: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateAuditOutbox),
            Box::new(CreateAuthority),
            Box::new(CreateIssuance),
        ]
    }
}

struct CreateAuthority;

impl MigrationName for CreateAuthority {
    fn name(&self) -> &str {
        "m20261124_000002_create_authority"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateAuthority {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use authority::Column;
        manager
            .create_table(
                Table::create()
                    .table(authority::Entity)
                    .if_not_exists()
                    .col(string(Column::Version).primary_key())
                    .col(binary(Column::PublicParams))
                    .col(binary(Column::SealedMasterKey))
                    .col(timestamp_with_time_zone(Column::CreatedAt))
                    .col(boolean(Column::Current))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(authority::Entity).to_owned())
            .await
    }
}

struct CreateIssuance;

impl MigrationName for CreateIssuance {
    fn name(&self) -> &str {
        "m20261124_000003_create_user_keys_and_emergency_grants"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateIssuance {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use {emergency_grant as g, user_key as k};
        manager
            .create_table(
                Table::create()
                    .table(k::Entity)
                    .if_not_exists()
                    .col(string(k::Column::KeyId).primary_key())
                    .col(string(k::Column::UserId))
                    .col(text(k::Column::Attributes))
                    .col(string(k::Column::AttributesEtag))
                    .col(string(k::Column::ParamsVersion))
                    .col(string(k::Column::IdentityKeyId))
                    .col(string_null(k::Column::GrantId))
                    .col(timestamp_with_time_zone(k::Column::IssuedAt))
                    .col(timestamp_with_time_zone(k::Column::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(g::Entity)
                    .if_not_exists()
                    .col(string(g::Column::GrantId).primary_key())
                    .col(string(g::Column::UserId))
                    .col(string(g::Column::PatientId))
                    .col(text(g::Column::Reason))
                    .col(timestamp_with_time_zone(g::Column::CreatedAt))
                    .col(timestamp_with_time_zone(g::Column::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        for (name, table, column) in [
            (
                "idx_user_keys_user",
                k::Entity.into_table_ref(),
                k::Column::UserId.into_iden(),
            ),
            (
                "idx_emergency_grants_patient",
                g::Entity.into_table_ref(),
                g::Column::PatientId.into_iden(),
            ),
        ] {
            caremesh_runtime::migration::create_index(manager, name, table, vec![column], false).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        caremesh_runtime::migration::drop_tables(
            manager,
            [
                emergency_grant::Entity.into_table_ref(),
                user_key::Entity.into_table_ref(),
            ],
        )
        .await
    }
}
