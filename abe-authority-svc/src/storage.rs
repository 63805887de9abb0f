//! abe-authority-svc's database: the authority's parameters (the master key sealed under the
//! key-encryption key) and, as in every service, the audit outbox.

use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{binary, boolean, string, timestamp_with_time_zone};

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

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateAuditOutbox), Box::new(CreateAuthority)]
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
