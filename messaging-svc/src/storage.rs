//! messaging-svc's database: the key directory (identity keys, current signed prekeys, one-time
//! prekeys), messages (ciphertext envelopes and metadata only), the per-user delivery log that
//! live delivery resumes from, and (as in every service) the audit outbox.

use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_pk_auto, binary, binary_null, boolean, string, string_uniq, timestamp_with_time_zone,
    timestamp_with_time_zone_null,
};

/// Every identity a user has published (the current one has `current` set); old ones stay so that
/// signatures and envelopes made with them can still be verified.
pub mod identity_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: String,
        pub signing_public_key: Vec<u8>,
        pub dh_public_key: Vec<u8>,
        pub signature: Vec<u8>,
        pub current: bool,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's current signed prekey.
pub mod signed_prekey {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signed_prekeys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub key_id: String,
        pub identity_key_id: String,
        pub public_key: Vec<u8>,
        pub signature: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        /// The identity key that signed it (for reading both in one query).
        #[sea_orm(
            belongs_to = "super::identity_key::Entity",
            from = "(Column::UserId, Column::IdentityKeyId)",
            to = "(super::identity_key::Column::UserId, super::identity_key::Column::KeyId)"
        )]
        IdentityKey,
    }

    impl Related<super::identity_key::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::IdentityKey.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// Unclaimed one-time prekeys: a row is deleted when it is handed out.
pub mod one_time_prekey {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "one_time_prekeys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: String,
        pub public_key: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A message: addressing, the envelopes (protobuf-encoded, ciphertext only), lifecycle and the
/// recipient's receipts. `seq` orders listings.
///
/// Direct messages (`kind` = `direct`) have a recipient and an X3DH envelope for them. Group
/// messages (`kind` = `group`) have an empty recipient, the ABE `policy` as sent and the
/// protobuf-encoded `GroupEnvelope`; everyone whose attributes satisfy the policy may read them.
pub mod message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "messages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        #[sea_orm(unique)]
        pub message_id: String,
        pub conversation_id: String,
        pub sender_user_id: String,
        pub recipient_user_id: String,
        /// The recipient's envelope; `None` once recalled.
        pub recipient_envelope: Option<Vec<u8>>,
        /// The sender's own copy; `None` once recalled.
        pub sender_envelope: Option<Vec<u8>>,
        pub created_at: DateTimeUtc,
        pub expire_at: Option<DateTimeUtc>,
        pub recalled_at: Option<DateTimeUtc>,
        pub delivered_at: Option<DateTimeUtc>,
        pub read_at: Option<DateTimeUtc>,
        /// `direct` or `group`.
        pub kind: String,
        /// Group messages: the ABE policy as the sender wrote (and signed) it; empty otherwise.
        pub policy: String,
        /// Group messages: the `GroupEnvelope`; `None` once recalled (and for direct messages).
        pub group_envelope: Option<Vec<u8>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What each user's live stream delivers, in commit order: new messages and recall tombstones.
/// `seq` is the stream cursor. Group messages have one shared log, under the user id
/// [`GROUP_LOG`](crate::storage::GROUP_LOG); each stream filters it by the subscriber's attributes.
pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub user_id: String,
        pub message_id: String,
        /// `message` or `recall`.
        pub kind: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The delivery-log owner of group messages (no user id looks like this).
pub const GROUP_LOG: &str = "#group";
/// `messages.kind` of a direct message.
pub const KIND_DIRECT: &str = "direct";
/// `messages.kind` of a group message.
pub const KIND_GROUP: &str = "group";

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateAuditOutbox),
            Box::new(CreateMessagingTables),
            Box::new(AddGroupMessages),
        ]
    }
}

struct CreateMessagingTables;

impl MigrationName for CreateMessagingTables {
    fn name(&self) -> &str {
        "m20261124_000004_create_messaging_tables"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateMessagingTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use {delivery as d, identity_key as ik, message as m, one_time_prekey as otp, signed_prekey as spk};
        manager
            .create_table(
                Table::create()
                    .table(ik::Entity)
                    .if_not_exists()
                    .col(string(ik::Column::UserId))
                    .col(string(ik::Column::KeyId))
                    .col(binary(ik::Column::SigningPublicKey))
                    .col(binary(ik::Column::DhPublicKey))
                    .col(binary(ik::Column::Signature))
                    .col(boolean(ik::Column::Current))
                    .col(timestamp_with_time_zone(ik::Column::CreatedAt))
                    .primary_key(Index::create().col(ik::Column::UserId).col(ik::Column::KeyId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(spk::Entity)
                    .if_not_exists()
                    .col(string(spk::Column::UserId).primary_key())
                    .col(string(spk::Column::KeyId))
                    .col(string(spk::Column::IdentityKeyId))
                    .col(binary(spk::Column::PublicKey))
                    .col(binary(spk::Column::Signature))
                    .col(timestamp_with_time_zone(spk::Column::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(otp::Entity)
                    .if_not_exists()
                    .col(string(otp::Column::UserId))
                    .col(string(otp::Column::KeyId))
                    .col(binary(otp::Column::PublicKey))
                    .col(timestamp_with_time_zone(otp::Column::CreatedAt))
                    .primary_key(Index::create().col(otp::Column::UserId).col(otp::Column::KeyId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(m::Entity)
                    .if_not_exists()
                    .col(big_pk_auto(m::Column::Seq))
                    .col(string_uniq(m::Column::MessageId))
                    .col(string(m::Column::ConversationId))
                    .col(string(m::Column::SenderUserId))
                    .col(string(m::Column::RecipientUserId))
                    .col(binary_null(m::Column::RecipientEnvelope))
                    .col(binary_null(m::Column::SenderEnvelope))
                    .col(timestamp_with_time_zone(m::Column::CreatedAt))
                    .col(timestamp_with_time_zone_null(m::Column::ExpireAt))
                    .col(timestamp_with_time_zone_null(m::Column::RecalledAt))
                    .col(timestamp_with_time_zone_null(m::Column::DeliveredAt))
                    .col(timestamp_with_time_zone_null(m::Column::ReadAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(d::Entity)
                    .if_not_exists()
                    .col(big_pk_auto(d::Column::Seq))
                    .col(string(d::Column::UserId))
                    .col(string(d::Column::MessageId))
                    .col(string(d::Column::Kind))
                    .col(timestamp_with_time_zone(d::Column::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let indexes: [(&str, TableRef, Vec<DynIden>); 6] = [
            (
                "idx_identity_keys_current",
                ik::Entity.into_table_ref(),
                vec![ik::Column::UserId.into_iden(), ik::Column::Current.into_iden()],
            ),
            (
                "idx_messages_conversation",
                m::Entity.into_table_ref(),
                vec![m::Column::ConversationId.into_iden(), m::Column::Seq.into_iden()],
            ),
            (
                "idx_messages_recipient",
                m::Entity.into_table_ref(),
                vec![m::Column::RecipientUserId.into_iden(), m::Column::Seq.into_iden()],
            ),
            (
                "idx_messages_sender",
                m::Entity.into_table_ref(),
                vec![m::Column::SenderUserId.into_iden(), m::Column::Seq.into_iden()],
            ),
            (
                "idx_messages_expire",
                m::Entity.into_table_ref(),
                vec![m::Column::ExpireAt.into_iden()],
            ),
            (
                "idx_deliveries_user",
                d::Entity.into_table_ref(),
                vec![d::Column::UserId.into_iden(), d::Column::Seq.into_iden()],
            ),
        ];
        for (name, table, columns) in indexes {
            caremesh_runtime::migration::create_index(manager, name, table, columns, false).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        caremesh_runtime::migration::drop_tables(
            manager,
            [
                delivery::Entity.into_table_ref(),
                message::Entity.into_table_ref(),
                one_time_prekey::Entity.into_table_ref(),
                signed_prekey::Entity.into_table_ref(),
                identity_key::Entity.into_table_ref(),
            ],
        )
        .await
    }
}

/// Group messages (issue #5): a kind, the policy and the group envelope on `messages`, and the
/// indexes that find a policy's messages and the newest group message.
struct AddGroupMessages;

impl MigrationName for AddGroupMessages {
    fn name(&self) -> &str {
        "m20261201_000005_add_group_messages"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for AddGroupMessages {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use message as m;
        // One column per statement: SQLite alters one thing at a time.
        let columns = [
            ColumnDef::new(m::Column::Kind)
                .string()
                .not_null()
                .default(KIND_DIRECT)
                .to_owned(),
            ColumnDef::new(m::Column::Policy)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(m::Column::GroupEnvelope).binary().null().to_owned(),
        ];
        for column in columns {
            manager
                .alter_table(Table::alter().table(m::Entity).add_column(column).to_owned())
                .await?;
        }
        let indexes: [(&str, Vec<DynIden>); 2] = [
            (
                "idx_messages_kind",
                vec![m::Column::Kind.into_iden(), m::Column::Seq.into_iden()],
            ),
            (
                "idx_messages_policy",
                vec![m::Column::Policy.into_iden(), m::Column::Seq.into_iden()],
            ),
        ];
        for (name, columns) in indexes {
            caremesh_runtime::migration::create_index(manager, name, m::Entity.into_table_ref(), columns, false)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use message as m;
        for name in ["idx_messages_policy", "idx_messages_kind"] {
            manager
                .drop_index(Index::drop().name(name).table(m::Entity).if_exists().to_owned())
                .await?;
        }
        for column in [m::Column::GroupEnvelope, m::Column::Policy, m::Column::Kind] {
            manager
                .alter_table(Table::alter().table(m::Entity).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
