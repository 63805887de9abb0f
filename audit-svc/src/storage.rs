//! audit-svc's database schema:
//! - `audit_events`: the ingested events, each with its leaf index and RFC 9162 leaf hash (the leaf
//!   is the stored protobuf encoding, `payload`), plus the columns queries filter on;
//! - `audit_tree_nodes`: every complete interior subtree hash (level >= 1), written on append, so
//!   roots and proofs read `O(log n)` rows; level 0 is `audit_events.leaf_hash`;
//! - `audit_tree_state`: the tree size (one row, locked by every append);
//! - `audit_checkpoints`: signed C2SP checkpoints; `audit_signing_key`: the sealed Ed25519 key;
//! - `audit_alerts`: alerts raised by the rules;
//! - as in every service, the audit outbox for its own events.
//!
//! Nothing here is ever deleted by the service (audit data is kept at least six years).

use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, binary, integer, pk_auto, string, string_uniq, text, timestamp_with_time_zone,
};

/// One ingested event. `seq` is the insertion order; `leaf_index` its 0-based position in the tree.
pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        #[sea_orm(unique)]
        pub event_id: String,
        pub recorded_at: DateTimeUtc,
        pub ingested_at: DateTimeUtc,
        pub service: String,
        pub actor_user_id: String,
        pub patient_id: String,
        pub action: i32,
        pub outcome: i32,
        /// The protobuf-encoded event exactly as stored: the Merkle tree leaf.
        pub payload: Vec<u8>,
        /// 0-based position in the Merkle tree (`None` only for rows stored before the tree existed,
        /// until start-up integrates them).
        pub leaf_index: Option<i64>,
        /// SHA-256(0x00 || payload).
        pub leaf_hash: Option<Vec<u8>>,
        pub operation: String,
        pub entity_type: String,
        pub entity_id: String,
        pub source_address: String,
        pub emergency: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A complete interior subtree of the Merkle tree.
pub mod node {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_tree_nodes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub level: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub idx: i64,
        pub hash: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The tree size: one row (`id` = 1), locked by every append.
pub mod tree_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_tree_state")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub size: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A signed checkpoint.
pub mod checkpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tree_size: i64,
        pub root_hash: Vec<u8>,
        pub signed_note: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The checkpoint signing key (one row, `id` = 1), sealed under the key-encryption key.
pub mod signing_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_signing_key")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub key_name: String,
        pub public_key: Vec<u8>,
        pub sealed_secret: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An alert raised by a rule. `seq` is the stream cursor.
pub mod alert {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_alerts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        #[sea_orm(unique)]
        pub alert_id: String,
        pub kind: i32,
        pub severity: i32,
        pub created_at: DateTimeUtc,
        pub summary: String,
        pub actor_user_id: String,
        pub source_address: String,
        pub patient_id: String,
        pub window_start: DateTimeUtc,
        pub window_end: DateTimeUtc,
        pub event_count: i32,
        /// Comma-separated ids of (up to 100 of) the triggering events.
        pub event_ids: String,
        /// What the rule counted over (kind and subject): one alert per key per window.
        pub dedupe_key: String,
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
            Box::new(CreateAuditEvents),
            Box::new(CreateAuditTree),
        ]
    }
}

struct CreateAuditEvents;

impl MigrationName for CreateAuditEvents {
    fn name(&self) -> &str {
        "m20261124_000002_create_audit_events"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateAuditEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use event::Column;
        manager
            .create_table(
                Table::create()
                    .table(event::Entity)
                    .if_not_exists()
                    .col(pk_auto(Column::Seq).big_integer())
                    .col(string_uniq(Column::EventId))
                    .col(timestamp_with_time_zone(Column::RecordedAt))
                    .col(timestamp_with_time_zone(Column::IngestedAt))
                    .col(string(Column::Service))
                    .col(string(Column::ActorUserId))
                    .col(string(Column::PatientId))
                    .col(integer(Column::Action))
                    .col(integer(Column::Outcome))
                    .col(binary(Column::Payload))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(event::Entity).to_owned()).await
    }
}

/// The Merkle tree, checkpoints, query columns and indexes, and alerts (issue #6).
struct CreateAuditTree;

impl MigrationName for CreateAuditTree {
    fn name(&self) -> &str {
        "m20261124_000003_create_audit_tree"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateAuditTree {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use event::Column as E;
        // SQLite alters one column per statement.
        let columns = [
            ColumnDef::new(E::LeafIndex).big_integer().null().to_owned(),
            ColumnDef::new(E::LeafHash).binary().null().to_owned(),
            ColumnDef::new(E::Operation).string().not_null().default("").to_owned(),
            ColumnDef::new(E::EntityType).string().not_null().default("").to_owned(),
            ColumnDef::new(E::EntityId).string().not_null().default("").to_owned(),
            ColumnDef::new(E::SourceAddress)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(E::Emergency)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(Table::alter().table(event::Entity).add_column(&mut column).to_owned())
                .await?;
        }
        let indexes = [
            ("audit_events_leaf_index", vec![E::LeafIndex], true),
            ("audit_events_patient", vec![E::PatientId, E::LeafIndex], false),
            ("audit_events_actor", vec![E::ActorUserId, E::LeafIndex], false),
            ("audit_events_recorded_at", vec![E::RecordedAt], false),
            ("audit_events_action", vec![E::Action, E::LeafIndex], false),
            ("audit_events_outcome", vec![E::Outcome, E::LeafIndex], false),
            ("audit_events_entity", vec![E::EntityId], false),
        ];
        for (name, columns, unique) in indexes {
            let columns = columns.into_iter().map(IntoIden::into_iden).collect();
            caremesh_runtime::migration::create_index(manager, name, event::Entity.into_table_ref(), columns, unique)
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(node::Entity)
                    .if_not_exists()
                    .col(integer(node::Column::Level))
                    .col(big_integer(node::Column::Idx))
                    .col(binary(node::Column::Hash))
                    .primary_key(Index::create().col(node::Column::Level).col(node::Column::Idx))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(tree_state::Entity)
                    .if_not_exists()
                    .col(integer(tree_state::Column::Id).primary_key())
                    .col(big_integer(tree_state::Column::Size))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(tree_state::Entity)
                    .columns([tree_state::Column::Id, tree_state::Column::Size])
                    .values_panic([1.into(), 0i64.into()])
                    .on_conflict(OnConflict::column(tree_state::Column::Id).do_nothing().to_owned())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(checkpoint::Entity)
                    .if_not_exists()
                    .col(big_integer(checkpoint::Column::TreeSize).primary_key())
                    .col(binary(checkpoint::Column::RootHash))
                    .col(text(checkpoint::Column::SignedNote))
                    .col(timestamp_with_time_zone(checkpoint::Column::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(signing_key::Entity)
                    .if_not_exists()
                    .col(integer(signing_key::Column::Id).primary_key())
                    .col(string(signing_key::Column::KeyName))
                    .col(binary(signing_key::Column::PublicKey))
                    .col(binary(signing_key::Column::SealedSecret))
                    .col(timestamp_with_time_zone(signing_key::Column::CreatedAt))
                    .to_owned(),
            )
            .await?;
        use alert::Column as A;
        manager
            .create_table(
                Table::create()
                    .table(alert::Entity)
                    .if_not_exists()
                    .col(pk_auto(A::Seq).big_integer())
                    .col(string_uniq(A::AlertId))
                    .col(integer(A::Kind))
                    .col(integer(A::Severity))
                    .col(timestamp_with_time_zone(A::CreatedAt))
                    .col(string(A::Summary))
                    .col(string(A::ActorUserId))
                    .col(string(A::SourceAddress))
                    .col(string(A::PatientId))
                    .col(timestamp_with_time_zone(A::WindowStart))
                    .col(timestamp_with_time_zone(A::WindowEnd))
                    .col(integer(A::EventCount))
                    .col(text(A::EventIds))
                    .col(string(A::DedupeKey))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_alerts_dedupe")
                    .table(alert::Entity)
                    .if_not_exists()
                    .col(A::DedupeKey)
                    .col(A::WindowEnd)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        caremesh_runtime::migration::drop_tables(
            manager,
            [
                alert::Entity.into_table_ref(),
                signing_key::Entity.into_table_ref(),
                checkpoint::Entity.into_table_ref(),
                tree_state::Entity.into_table_ref(),
                node::Entity.into_table_ref(),
            ],
        )
        .await
    }
}
