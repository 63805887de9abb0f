//! messaging-svc's database: the key directory (identity keys, current signed prekeys, one-time
//! prekeys), messages (ciphertext envelopes and metadata only), the per-user delivery log that
//! live delivery resumes from, the protocol v2 device directory (signed device lists, devices,
//! their signed and one-time prekeys, device links), attachments (the runtime's `attachments` and
//! `blob_pieces` tables) and (as in every service) the audit outbox.

use caremesh_runtime::attachments::CreateAttachmentTables;
use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_pk_auto, binary, binary_null, boolean, string, string_uniq, text, timestamp_with_time_zone,
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
        /// 1: X3DH envelopes in the two envelope columns; 2: Double Ratchet ciphertexts per device
        /// in `message_device_ciphertexts` and archive copies in `message_archive_copies`.
        pub protocol_version: i32,
        /// Protocol v2: the sending device.
        pub sender_device_id: String,
        /// Protocol v2: SHA-256 over the ciphertexts and the sender's archive copy, so that a
        /// resend with the same message id is recognised as the same message.
        pub fanout_digest: Option<Vec<u8>>,
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

/// A user's current signed device list (protocol v2, §4): one row per user, replaced version by
/// version (only `version + 1` is accepted, by a conditional update).
pub mod device_list {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_lists")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// The identity that signed it (always the user's current one: a new identity discards
        /// the list).
        pub identity_key_id: String,
        pub version: i64,
        /// The device ids in ascending order, joined by `,`.
        pub device_ids: String,
        pub signature: Vec<u8>,
        pub updated_at: DateTimeUtc,
        /// The account's current history key id (protocol v2 §7.3); empty when none was declared.
        pub history_key_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A device the directory knows: published keys, or removed by an admin (then it has no keys
/// and `admin_removed_at` is set until the user's device list drops it).
pub mod device {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub admin_removed_at: Option<DateTimeUtc>,
        /// The admin who removed it; empty otherwise.
        pub admin_removed_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A device's current signed prekeys: one X25519 signed prekey and one ML-KEM-768 last-resort
/// prekey (`kind` [`DEVICE_KEY_SIGNED`](crate::storage::DEVICE_KEY_SIGNED) or
/// [`DEVICE_KEY_LAST_RESORT`](crate::storage::DEVICE_KEY_LAST_RESORT)).
pub mod device_signed_prekey {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_signed_prekeys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        pub key_id: String,
        pub identity_key_id: String,
        pub public_key: Vec<u8>,
        pub signature: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A device's unclaimed one-time X25519 prekeys: a row is deleted when it is handed out.
pub mod device_one_time_prekey {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_one_time_prekeys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: String,
        pub public_key: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A device's unclaimed signed one-time ML-KEM-768 prekeys: a row is deleted when it is handed
/// out.
pub mod device_kem_prekey {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_kem_prekeys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: String,
        pub identity_key_id: String,
        pub public_key: Vec<u8>,
        pub signature: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A device link (§8): opened by the new device, approved by an existing one with the sealed
/// provisioning message. The server never sees the link secret.
pub mod device_link {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub link_id: String,
        pub user_id: String,
        pub device_id: String,
        pub ephemeral_public: Vec<u8>,
        pub commitment: Vec<u8>,
        pub created_at: DateTimeUtc,
        pub expire_at: DateTimeUtc,
        pub approved_at: Option<DateTimeUtc>,
        pub approver_public: Option<Vec<u8>>,
        pub sealed: Option<Vec<u8>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `device_signed_prekeys.kind` of the X25519 signed prekey.
pub const DEVICE_KEY_SIGNED: &str = "x25519-signed-prekey";
/// `device_signed_prekeys.kind` of the ML-KEM-768 last-resort prekey.
pub const DEVICE_KEY_LAST_RESORT: &str = "ml-kem-768-last-resort-prekey";

/// The delivery-log owner of group messages (no user id looks like this).
pub const GROUP_LOG: &str = "#group";
/// `messages.kind` of a direct message.
pub const KIND_DIRECT: &str = "direct";
/// A protocol v2 message's ciphertext for one device (Sesame fan-out): the encoded
/// `DeviceCiphertext`, opaque to the server. Deleted with its message (recall, lifespan) and when
/// its device leaves the device list.
pub mod device_ciphertext {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_device_ciphertexts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub recipient_device_id: String,
        pub recipient_user_id: String,
        pub body: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's archive copy of a protocol v2 message under their history key: the encoded
/// `ArchiveCopy`, opaque. The sender's comes with the send; a recipient's first device to open the
/// message stores the recipient's. Deleted with its message.
pub mod archive_copy {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_archive_copies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner_user_id: String,
        pub body: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `messages.kind` of a group message.
pub const KIND_GROUP: &str = "group";

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateAuditOutbox),
            Box::new(CreateMessagingTables),
            Box::new(AddGroupMessages),
            Box::new(CreateDeviceDirectory),
            Box::new(AddDeviceFanout),
            Box::new(CreateAttachmentTables),
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
        caremesh_runtime::migration::add_columns(manager, m::Entity.into_table_ref(), columns).await?;
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
        caremesh_runtime::migration::drop_columns(
            manager,
            m::Entity.into_table_ref(),
            [m::Column::GroupEnvelope, m::Column::Policy, m::Column::Kind].map(IntoIden::into_iden),
        )
        .await
    }
}

/// The protocol v2 device directory (issue #14): signed device lists, devices, their signed and
/// one-time prekeys, and device links.
struct CreateDeviceDirectory;

impl MigrationName for CreateDeviceDirectory {
    fn name(&self) -> &str {
        "m20261202_000006_create_device_directory"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateDeviceDirectory {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use {
            device as dev, device_kem_prekey as kem, device_link as link, device_list as list,
            device_one_time_prekey as otp, device_signed_prekey as spk,
        };
        manager
            .create_table(
                Table::create()
                    .table(list::Entity)
                    .if_not_exists()
                    .col(string(list::Column::UserId).primary_key())
                    .col(string(list::Column::IdentityKeyId))
                    .col(big_integer(list::Column::Version))
                    .col(text(list::Column::DeviceIds))
                    .col(binary(list::Column::Signature))
                    .col(timestamp_with_time_zone(list::Column::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(dev::Entity)
                    .if_not_exists()
                    .col(string(dev::Column::UserId))
                    .col(string(dev::Column::DeviceId))
                    .col(timestamp_with_time_zone(dev::Column::CreatedAt))
                    .col(timestamp_with_time_zone(dev::Column::UpdatedAt))
                    .col(timestamp_with_time_zone_null(dev::Column::AdminRemovedAt))
                    .col(string(dev::Column::AdminRemovedBy))
                    .primary_key(Index::create().col(dev::Column::UserId).col(dev::Column::DeviceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(spk::Entity)
                    .if_not_exists()
                    .col(string(spk::Column::UserId))
                    .col(string(spk::Column::DeviceId))
                    .col(string(spk::Column::Kind))
                    .col(string(spk::Column::KeyId))
                    .col(string(spk::Column::IdentityKeyId))
                    .col(binary(spk::Column::PublicKey))
                    .col(binary(spk::Column::Signature))
                    .col(timestamp_with_time_zone(spk::Column::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(spk::Column::UserId)
                            .col(spk::Column::DeviceId)
                            .col(spk::Column::Kind),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(otp::Entity)
                    .if_not_exists()
                    .col(string(otp::Column::UserId))
                    .col(string(otp::Column::DeviceId))
                    .col(string(otp::Column::KeyId))
                    .col(binary(otp::Column::PublicKey))
                    .col(timestamp_with_time_zone(otp::Column::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(otp::Column::UserId)
                            .col(otp::Column::DeviceId)
                            .col(otp::Column::KeyId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(kem::Entity)
                    .if_not_exists()
                    .col(string(kem::Column::UserId))
                    .col(string(kem::Column::DeviceId))
                    .col(string(kem::Column::KeyId))
                    .col(string(kem::Column::IdentityKeyId))
                    .col(binary(kem::Column::PublicKey))
                    .col(binary(kem::Column::Signature))
                    .col(timestamp_with_time_zone(kem::Column::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(kem::Column::UserId)
                            .col(kem::Column::DeviceId)
                            .col(kem::Column::KeyId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(link::Entity)
                    .if_not_exists()
                    .col(string(link::Column::LinkId).primary_key())
                    .col(string(link::Column::UserId))
                    .col(string(link::Column::DeviceId))
                    .col(binary(link::Column::EphemeralPublic))
                    .col(binary(link::Column::Commitment))
                    .col(timestamp_with_time_zone(link::Column::CreatedAt))
                    .col(timestamp_with_time_zone(link::Column::ExpireAt))
                    .col(timestamp_with_time_zone_null(link::Column::ApprovedAt))
                    .col(binary_null(link::Column::ApproverPublic))
                    .col(binary_null(link::Column::Sealed))
                    .to_owned(),
            )
            .await?;
        caremesh_runtime::migration::create_index(
            manager,
            "idx_device_links_user",
            link::Entity.into_table_ref(),
            vec![link::Column::UserId.into_iden(), link::Column::LinkId.into_iden()],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        caremesh_runtime::migration::drop_tables(
            manager,
            [
                device_link::Entity.into_table_ref(),
                device_kem_prekey::Entity.into_table_ref(),
                device_one_time_prekey::Entity.into_table_ref(),
                device_signed_prekey::Entity.into_table_ref(),
                device::Entity.into_table_ref(),
                device_list::Entity.into_table_ref(),
            ],
        )
        .await
    }
}

/// Protocol v2 fan-out (issue #14): the message's protocol version, sending device and content
/// digest, the per-device ciphertexts and the archive copies. Existing rows are protocol 1.
struct AddDeviceFanout;

impl MigrationName for AddDeviceFanout {
    fn name(&self) -> &str {
        "m20261202_000007_add_device_fanout"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for AddDeviceFanout {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use message as m;
        let columns = [
            ColumnDef::new(m::Column::ProtocolVersion)
                .integer()
                .not_null()
                .default(1)
                .to_owned(),
            ColumnDef::new(m::Column::SenderDeviceId)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(m::Column::FanoutDigest).binary().null().to_owned(),
        ];
        caremesh_runtime::migration::add_columns(manager, m::Entity.into_table_ref(), columns).await?;
        caremesh_runtime::migration::add_columns(
            manager,
            device_list::Entity.into_table_ref(),
            [ColumnDef::new(device_list::Column::HistoryKeyId)
                .string()
                .not_null()
                .default("")
                .to_owned()],
        )
        .await?;
        use device_ciphertext as c;
        manager
            .create_table(
                Table::create()
                    .table(c::Entity)
                    .col(string(c::Column::MessageId))
                    .col(string(c::Column::RecipientDeviceId))
                    .col(string(c::Column::RecipientUserId))
                    .col(binary(c::Column::Body))
                    .primary_key(
                        Index::create()
                            .col(c::Column::MessageId)
                            .col(c::Column::RecipientDeviceId),
                    )
                    .to_owned(),
            )
            .await?;
        caremesh_runtime::migration::create_index(
            manager,
            "idx_device_ciphertexts_device",
            c::Entity.into_table_ref(),
            vec![
                c::Column::RecipientUserId.into_iden(),
                c::Column::RecipientDeviceId.into_iden(),
            ],
            false,
        )
        .await?;
        use archive_copy as a;
        manager
            .create_table(
                Table::create()
                    .table(a::Entity)
                    .col(string(a::Column::MessageId))
                    .col(string(a::Column::OwnerUserId))
                    .col(binary(a::Column::Body))
                    .col(timestamp_with_time_zone(a::Column::CreatedAt))
                    .primary_key(Index::create().col(a::Column::MessageId).col(a::Column::OwnerUserId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        caremesh_runtime::migration::drop_tables(
            manager,
            [
                archive_copy::Entity.into_table_ref(),
                device_ciphertext::Entity.into_table_ref(),
            ],
        )
        .await?;
        caremesh_runtime::migration::drop_columns(
            manager,
            device_list::Entity.into_table_ref(),
            [device_list::Column::HistoryKeyId.into_iden()],
        )
        .await?;
        use message as m;
        caremesh_runtime::migration::drop_columns(
            manager,
            m::Entity.into_table_ref(),
            [
                m::Column::FanoutDigest,
                m::Column::SenderDeviceId,
                m::Column::ProtocolVersion,
            ]
            .map(IntoIden::into_iden),
        )
        .await
    }
}
