//! auth-svc's database: accounts, recovery codes, passkeys and their ceremonies, role policies,
//! sessions and their refresh tokens, login challenges, token-signing keys, and (as in every
//! service) the audit outbox.
//! Secrets at rest are sealed under the key-encryption key (TOTP secrets, signing keys) or stored
//! as hashes (passwords, recovery codes, refresh tokens, challenges).

use caremesh_runtime::migration::{create_index, drop_tables};
use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, binary, binary_null, boolean, integer, string, string_null, string_uniq, text,
    timestamp_with_time_zone, timestamp_with_time_zone_null,
};

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Lower-case; unique.
        #[sea_orm(unique)]
        pub username: String,
        pub display_name: String,
        pub role: String,
        /// `pending`, `active` or `disabled`.
        pub status: String,
        /// JSON array of the admin-assigned attributes.
        pub attributes: String,
        /// Argon2id PHC string.
        pub password_hash: String,
        /// Confirmed TOTP secret, sealed under the KEK.
        pub totp_secret: Option<Vec<u8>>,
        /// An enrollment waiting for its first code, sealed under the KEK.
        pub totp_pending_secret: Option<Vec<u8>>,
        pub totp_pending_expires_at: Option<DateTimeUtc>,
        /// The last TOTP time step accepted (codes are single-use).
        pub totp_last_step: Option<i64>,
        pub failed_attempts: i32,
        /// How many passkeys the user has (kept in the transactions that add and remove them).
        pub passkey_count: i32,
        pub locked: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub approved_at: Option<DateTimeUtc>,
        /// Bumped on every change: the etag.
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod recovery_code {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "recovery_codes")]
    pub struct Model {
        /// SHA-256 of user id and code.
        #[sea_orm(primary_key, auto_increment = false)]
        pub code_hash: String,
        pub user_id: String,
        pub created_at: DateTimeUtc,
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        pub aal: i32,
        pub created_at: DateTimeUtc,
        pub last_seen_at: DateTimeUtc,
        /// The absolute end of the session.
        pub expires_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
        pub revoked_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        /// SHA-256 of the token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub session_id: String,
        pub created_at: DateTimeUtc,
        /// Set when the token was exchanged; presenting it again revokes the session.
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod emergency_grant {
    use sea_orm::entity::prelude::*;

    /// A break-glass grant recorded for abe-authority-svc: until `expires_at` the user's tokens
    /// carry `emergency:<patient_id>`. Rows are kept after they expire (they are the record of
    /// who had emergency access when).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "emergency_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub grant_id: String,
        pub user_id: String,
        pub patient_id: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod login_challenge {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_challenges")]
    pub struct Model {
        /// SHA-256 of the challenge token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub challenge_hash: String,
        pub user_id: String,
        pub expires_at: DateTimeUtc,
        pub attempts: i32,
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signing_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signing_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        pub public_key: Vec<u8>,
        /// The Ed25519 secret key, sealed under the KEK.
        pub sealed_private_key: Vec<u8>,
        pub created_at: DateTimeUtc,
        /// After this, tokens signed with the key are no longer accepted.
        pub retire_at: Option<DateTimeUtc>,
        pub current: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod attribute_removal {
    use sea_orm::entity::prelude::*;

    /// An attribute an admin removed, kept while access tokens issued before the removal may
    /// still be live (the revocation feed).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "attribute_removals")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        pub attribute: String,
        pub removed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod passkey {
    use sea_orm::entity::prelude::*;

    /// A registered passkey. `credential` is webauthn-rs's record of it (public key, counter,
    /// flags) as JSON; the columns beside it are what listing and the counter check read.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "passkeys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        /// base64url without padding; unique across all users.
        #[sea_orm(unique)]
        pub credential_id: String,
        pub name: String,
        pub credential: String,
        /// The highest signature counter seen; it only goes up.
        pub sign_count: i64,
        pub backup_eligible: bool,
        pub backup_state: bool,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod passkey_ceremony {
    use sea_orm::entity::prelude::*;

    /// A passkey ceremony between its start and its finish: webauthn-rs's state (the challenge
    /// and what the answer is checked against). Taken once; a second finish finds nothing.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "passkey_ceremonies")]
    pub struct Model {
        /// SHA-256 of the ceremony token (for a second factor: of the login challenge).
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        /// `register`, `login` (passwordless) or `second_factor`.
        pub kind: String,
        /// The user it is for (empty for a passwordless sign-in, which names nobody).
        pub user_id: String,
        /// The session that started a registration (empty otherwise).
        pub session_id: String,
        pub state: String,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod role_policy {
    use sea_orm::entity::prelude::*;

    /// An admin's sign-in policy for a role. No row: the default (no requirement).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "role_policies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub role: String,
        pub passkey_required: bool,
        pub updated_at: DateTimeUtc,
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
            Box::new(CreateAuthTables),
            Box::new(CreateEmergencyGrants),
            Box::new(CreateRevocationFeed),
            Box::new(CreatePasskeys),
        ]
    }
}

struct CreateAuthTables;

impl MigrationName for CreateAuthTables {
    fn name(&self) -> &str {
        "m20261124_000002_create_auth_tables"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateAuthTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use {
            login_challenge as lc, recovery_code as rc, refresh_token as rt, session as s, signing_key as k, user as u,
        };
        manager
            .create_table(
                Table::create()
                    .table(u::Entity)
                    .if_not_exists()
                    .col(string(u::Column::Id).primary_key())
                    .col(string_uniq(u::Column::Username))
                    .col(string(u::Column::DisplayName))
                    .col(string(u::Column::Role))
                    .col(string(u::Column::Status))
                    .col(text(u::Column::Attributes))
                    .col(string(u::Column::PasswordHash))
                    .col(binary_null(u::Column::TotpSecret))
                    .col(binary_null(u::Column::TotpPendingSecret))
                    .col(timestamp_with_time_zone_null(u::Column::TotpPendingExpiresAt))
                    .col(ColumnDef::new(u::Column::TotpLastStep).big_integer().null())
                    .col(integer(u::Column::FailedAttempts))
                    .col(boolean(u::Column::Locked))
                    .col(timestamp_with_time_zone(u::Column::CreatedAt))
                    .col(timestamp_with_time_zone(u::Column::UpdatedAt))
                    .col(timestamp_with_time_zone_null(u::Column::ApprovedAt))
                    .col(big_integer(u::Column::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(rc::Entity)
                    .if_not_exists()
                    .col(string(rc::Column::CodeHash).primary_key())
                    .col(string(rc::Column::UserId))
                    .col(timestamp_with_time_zone(rc::Column::CreatedAt))
                    .col(timestamp_with_time_zone_null(rc::Column::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(s::Entity)
                    .if_not_exists()
                    .col(string(s::Column::Id).primary_key())
                    .col(string(s::Column::UserId))
                    .col(integer(s::Column::Aal))
                    .col(timestamp_with_time_zone(s::Column::CreatedAt))
                    .col(timestamp_with_time_zone(s::Column::LastSeenAt))
                    .col(timestamp_with_time_zone(s::Column::ExpiresAt))
                    .col(timestamp_with_time_zone_null(s::Column::RevokedAt))
                    .col(string_null(s::Column::RevokedReason))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(rt::Entity)
                    .if_not_exists()
                    .col(string(rt::Column::TokenHash).primary_key())
                    .col(string(rt::Column::SessionId))
                    .col(timestamp_with_time_zone(rt::Column::CreatedAt))
                    .col(timestamp_with_time_zone_null(rt::Column::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(lc::Entity)
                    .if_not_exists()
                    .col(string(lc::Column::ChallengeHash).primary_key())
                    .col(string(lc::Column::UserId))
                    .col(timestamp_with_time_zone(lc::Column::ExpiresAt))
                    .col(integer(lc::Column::Attempts))
                    .col(timestamp_with_time_zone_null(lc::Column::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(k::Entity)
                    .if_not_exists()
                    .col(string(k::Column::Kid).primary_key())
                    .col(binary(k::Column::PublicKey))
                    .col(binary(k::Column::SealedPrivateKey))
                    .col(timestamp_with_time_zone(k::Column::CreatedAt))
                    .col(timestamp_with_time_zone_null(k::Column::RetireAt))
                    .col(boolean(k::Column::Current))
                    .to_owned(),
            )
            .await?;
        for (name, table, column) in [
            (
                "idx_recovery_codes_user",
                rc::Entity.into_table_ref(),
                rc::Column::UserId.into_iden(),
            ),
            (
                "idx_sessions_user",
                s::Entity.into_table_ref(),
                s::Column::UserId.into_iden(),
            ),
            (
                "idx_refresh_tokens_session",
                rt::Entity.into_table_ref(),
                rt::Column::SessionId.into_iden(),
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
                signing_key::Entity.into_table_ref(),
                login_challenge::Entity.into_table_ref(),
                refresh_token::Entity.into_table_ref(),
                session::Entity.into_table_ref(),
                recovery_code::Entity.into_table_ref(),
                user::Entity.into_table_ref(),
            ],
        )
        .await
    }
}

struct CreateEmergencyGrants;

impl MigrationName for CreateEmergencyGrants {
    fn name(&self) -> &str {
        "m20261124_000003_create_emergency_grants"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateEmergencyGrants {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use emergency_grant as g;
        manager
            .create_table(
                Table::create()
                    .table(g::Entity)
                    .if_not_exists()
                    .col(string(g::Column::GrantId).primary_key())
                    .col(string(g::Column::UserId))
                    .col(string(g::Column::PatientId))
                    .col(timestamp_with_time_zone(g::Column::CreatedAt))
                    .col(timestamp_with_time_zone(g::Column::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_emergency_grants_user_expiry")
                    .table(g::Entity)
                    .col(g::Column::UserId)
                    .col(g::Column::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(emergency_grant::Entity).if_exists().to_owned())
            .await
    }
}

/// The revocation feed reads sessions by the time they ended, and the attributes removed.
struct CreateRevocationFeed;

impl MigrationName for CreateRevocationFeed {
    fn name(&self) -> &str {
        "m20261202_000004_create_revocation_feed"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateRevocationFeed {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use attribute_removal as r;
        manager
            .create_table(
                Table::create()
                    .table(r::Entity)
                    .if_not_exists()
                    .col(string(r::Column::Id).primary_key())
                    .col(string(r::Column::UserId))
                    .col(string(r::Column::Attribute))
                    .col(timestamp_with_time_zone(r::Column::RemovedAt))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "idx_attribute_removals_removed_at",
            r::Entity.into_table_ref(),
            vec![r::Column::RemovedAt.into_iden()],
            false,
        )
        .await?;
        create_index(
            manager,
            "idx_sessions_revoked_at",
            session::Entity.into_table_ref(),
            vec![session::Column::RevokedAt.into_iden()],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .if_exists()
                    .name("idx_sessions_revoked_at")
                    .table(session::Entity)
                    .to_owned(),
            )
            .await?;
        drop_tables(manager, [attribute_removal::Entity.into_table_ref()]).await
    }
}

/// Passkeys, their ceremonies in flight, and the per-role policy that can require them.
struct CreatePasskeys;

impl MigrationName for CreatePasskeys {
    fn name(&self) -> &str {
        "m20261204_000005_create_passkeys"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreatePasskeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use {passkey as p, passkey_ceremony as c, role_policy as r};
        manager
            .create_table(
                Table::create()
                    .table(p::Entity)
                    .if_not_exists()
                    .col(string(p::Column::Id).primary_key())
                    .col(string(p::Column::UserId))
                    .col(string_uniq(p::Column::CredentialId))
                    .col(string(p::Column::Name))
                    .col(text(p::Column::Credential))
                    .col(big_integer(p::Column::SignCount))
                    .col(boolean(p::Column::BackupEligible))
                    .col(boolean(p::Column::BackupState))
                    .col(timestamp_with_time_zone(p::Column::CreatedAt))
                    .col(timestamp_with_time_zone_null(p::Column::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(user::Entity)
                    .add_column(integer(user::Column::PasskeyCount).default(0))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "idx_passkeys_user",
            p::Entity.into_table_ref(),
            vec![p::Column::UserId.into_iden()],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(c::Entity)
                    .if_not_exists()
                    .col(string(c::Column::TokenHash).primary_key())
                    .col(string(c::Column::Kind))
                    .col(string(c::Column::UserId))
                    .col(string(c::Column::SessionId))
                    .col(text(c::Column::State))
                    .col(timestamp_with_time_zone(c::Column::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            "idx_passkey_ceremonies_expiry",
            c::Entity.into_table_ref(),
            vec![c::Column::ExpiresAt.into_iden()],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(r::Entity)
                    .if_not_exists()
                    .col(string(r::Column::Role).primary_key())
                    .col(boolean(r::Column::PasskeyRequired))
                    .col(timestamp_with_time_zone(r::Column::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            [
                role_policy::Entity.into_table_ref(),
                passkey_ceremony::Entity.into_table_ref(),
                passkey::Entity.into_table_ref(),
            ],
        )
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(user::Entity)
                    .drop_column(user::Column::PasskeyCount)
                    .to_owned(),
            )
            .await
    }
}
