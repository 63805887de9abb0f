//! records-svc's database: one head row per record (its latest version, policy and etag, the
//! row concurrent writers race on) and every version ever written (ciphertext and metadata only;
//! nothing is deleted), the attachments of DocumentReference records (the runtime's
//! `attachments` and blob tables), plus (as in every service) the audit outbox.

use caremesh_runtime::attachments::CreateAttachmentTables;
use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, binary, boolean, string, string_null, text, timestamp_with_time_zone, timestamp_with_time_zone_null,
};

/// A record's current state. Writers change it with a conditional UPDATE on `etag`, so of two
/// concurrent edits based on the same etag exactly one commits (also across processes).
pub mod record {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub record_id: String,
        pub patient_id: String,
        pub kind: String,
        pub latest_version: i64,
        /// The latest version's policy (lists filter on it).
        #[sea_orm(column_type = "Text")]
        pub policy: String,
        /// Whether the latest version is marked entered-in-error (lists leave these out by default).
        pub latest_entered_in_error: bool,
        pub etag: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// `updated_at` in microseconds: the list order (with `record_id` as the tie-break).
        pub updated_micros: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Every version of every record. The primary key (record id, version) admits one version `n`
/// per record, whoever writes it.
pub mod record_version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "record_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub record_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub patient_id: String,
        pub kind: String,
        /// Exactly the policy text the author signed.
        #[sea_orm(column_type = "Text")]
        pub policy: String,
        pub envelope_version: i64,
        pub params_version: String,
        pub encapsulated_key: Vec<u8>,
        pub nonce: Vec<u8>,
        pub ciphertext: Vec<u8>,
        pub author_user_id: String,
        pub author_identity_key_id: String,
        pub author_signature: Vec<u8>,
        pub previous_version_hash: Vec<u8>,
        pub version_hash: Vec<u8>,
        pub entered_in_error_reason: Option<String>,
        pub entered_in_error_at: Option<DateTimeUtc>,
        pub entered_in_error_by: Option<String>,
        pub created_at: DateTimeUtc,
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
            Box::new(CreateRecordsTables),
            Box::new(CreateAttachmentTables),
        ]
    }
}

struct CreateRecordsTables;

impl MigrationName for CreateRecordsTables {
    fn name(&self) -> &str {
        "m20261124_000005_create_records_tables"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateRecordsTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use {record as r, record_version as v};
        manager
            .create_table(
                Table::create()
                    .table(r::Entity)
                    .if_not_exists()
                    .col(string(r::Column::RecordId).primary_key())
                    .col(string(r::Column::PatientId))
                    .col(string(r::Column::Kind))
                    .col(big_integer(r::Column::LatestVersion))
                    .col(text(r::Column::Policy))
                    .col(boolean(r::Column::LatestEnteredInError))
                    .col(string(r::Column::Etag))
                    .col(timestamp_with_time_zone(r::Column::CreatedAt))
                    .col(timestamp_with_time_zone(r::Column::UpdatedAt))
                    .col(big_integer(r::Column::UpdatedMicros))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(v::Entity)
                    .if_not_exists()
                    .col(string(v::Column::RecordId))
                    .col(big_integer(v::Column::Version))
                    .col(string(v::Column::PatientId))
                    .col(string(v::Column::Kind))
                    .col(text(v::Column::Policy))
                    .col(big_integer(v::Column::EnvelopeVersion))
                    .col(string(v::Column::ParamsVersion))
                    .col(binary(v::Column::EncapsulatedKey))
                    .col(binary(v::Column::Nonce))
                    .col(binary(v::Column::Ciphertext))
                    .col(string(v::Column::AuthorUserId))
                    .col(string(v::Column::AuthorIdentityKeyId))
                    .col(binary(v::Column::AuthorSignature))
                    .col(binary(v::Column::PreviousVersionHash))
                    .col(binary(v::Column::VersionHash))
                    .col(string_null(v::Column::EnteredInErrorReason))
                    .col(timestamp_with_time_zone_null(v::Column::EnteredInErrorAt))
                    .col(string_null(v::Column::EnteredInErrorBy))
                    .col(timestamp_with_time_zone(v::Column::CreatedAt))
                    .primary_key(Index::create().col(v::Column::RecordId).col(v::Column::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_records_patient_updated")
                    .table(r::Entity)
                    .col(r::Column::PatientId)
                    .col(r::Column::UpdatedMicros)
                    .col(r::Column::RecordId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        caremesh_runtime::migration::drop_tables(
            manager,
            [record_version::Entity.into_table_ref(), record::Entity.into_table_ref()],
        )
        .await
    }
}
