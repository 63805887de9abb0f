//! Records: create (idempotent by record id), get, list (AIP-158 pages, records the caller may not
//! read left out), update (a new signed version on top of the latest, etag-checked in the
//! database), version history and entered-in-error marks. The server stores ciphertext and
//! metadata only; every read, write and denial is audited.

use caremesh_crypto::CryptoError;
use caremesh_crypto::policy_envelope::RecordVersion;
use caremesh_proto::audit::v1::{AuditAction, AuditOutcome};
use caremesh_proto::records::v1::RecordEnvelope;
use caremesh_runtime::Error;
use caremesh_runtime::auth::Principal;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr,
};

use crate::domain::{
    Access, Caller, Grant, RecordsDomain, authorize, evaluate, require_reader_role, require_writer_role,
};
use crate::storage::{record, record_version};
use crate::validate;

/// One version of a record, with the record's current state (for its etag).
#[derive(Clone, Debug)]
pub struct Stored {
    pub head: record::Model,
    pub version: record_version::Model,
}

impl Stored {
    pub fn envelope(&self) -> RecordEnvelope {
        let row = &self.version;
        RecordEnvelope {
            version: u32::try_from(row.envelope_version).unwrap_or_default(),
            params_version: row.params_version.clone(),
            encapsulated_key: row.encapsulated_key.clone(),
            nonce: row.nonce.clone(),
            ciphertext: row.ciphertext.clone(),
        }
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// `CreateRecord`'s input.
#[derive(Debug)]
pub struct CreateInput {
    pub record_id: String,
    pub patient_id: String,
    pub kind: String,
    pub policy: String,
    pub envelope: Option<RecordEnvelope>,
    pub author_identity_key_id: String,
    pub author_signature: Vec<u8>,
}

/// `UpdateRecord`'s input.
#[derive(Debug)]
pub struct UpdateInput {
    pub record_id: String,
    pub etag: String,
    pub version: i64,
    pub policy: String,
    pub envelope: Option<RecordEnvelope>,
    pub previous_version_hash: Vec<u8>,
    pub author_identity_key_id: String,
    pub author_signature: Vec<u8>,
}

/// `ListRecords`' filters.
#[derive(Debug)]
pub struct ListInput {
    pub patient_id: String,
    pub kind: String,
    pub page_size: i32,
    pub page_token: String,
    pub include_entered_in_error: bool,
}

/// How many head rows a listing reads per query while it fills a page.
const SCAN_BATCH: u64 = 200;

fn new_etag() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn stale_etag() -> Error {
    Error::aborted(
        "STALE_ETAG",
        "the record changed since you read it (the etag is stale): read it again and redo your change",
    )
}

fn record_not_found(record_id: &str) -> Error {
    Error::not_found("RECORD_NOT_FOUND", format!("no record with id {record_id}"))
}

impl RecordsDomain {
    pub(crate) async fn head(&self, record_id: &str) -> Result<Option<record::Model>, Error> {
        Ok(record::Entity::find_by_id(record_id.to_owned()).one(&self.db).await?)
    }

    pub(crate) async fn version_row<C: ConnectionTrait>(
        &self,
        conn: &C,
        record_id: &str,
        version: i64,
    ) -> Result<Option<record_version::Model>, Error> {
        Ok(record_version::Entity::find_by_id((record_id.to_owned(), version))
            .one(conn)
            .await?)
    }

    /// The patient a record is about, if it exists (for the audit of a refusal).
    async fn patient_of(&self, record_id: &str) -> String {
        match self.head(record_id).await {
            Ok(Some(head)) => head.patient_id,
            _ => String::new(),
        }
    }

    /// Checks the author's signature over `version` with their registered identity key.
    async fn verify_author(
        &self,
        principal: &Principal,
        version: &RecordVersion<'_>,
        signature: &[u8],
    ) -> Result<(), Error> {
        let identity = self.identities.current(&principal.user_id).await?.ok_or_else(|| {
            Error::failed_precondition(
                "KEYS_NOT_PUBLISHED",
                "you have no registered identity key: publish your device keys first (KeyDirectoryService.PublishKeyBundle)",
            )
        })?;
        version.verify(&identity, signature).map_err(|error| match error {
            CryptoError::KeyMismatch(_) => Error::invalid_argument(
                "BAD_SIGNATURE",
                format!(
                    "author_identity_key_id {:?} is not your current registered identity key ({}): sign with your current device keys",
                    version.author_identity_key_id,
                    identity.key_id()
                ),
            ),
            _ => Error::invalid_argument(
                "BAD_SIGNATURE",
                "author_signature does not verify over this version with your registered identity key: sign exactly the record id, patient, kind, version, policy, envelope, your user id, key id and previous version hash",
            ),
        })
    }

    /// Creates a record's version 1; `Ok((stored, duplicate))`.
    pub async fn create(
        &self,
        principal: &Principal,
        caller: &Caller,
        input: CreateInput,
    ) -> Result<(Stored, bool), Error> {
        validate::check_uuid_v7(&input.record_id, "record_id")?;
        let access = Access::new(AuditAction::Create, "CreateRecord", &input.record_id, "");
        let gate = principal.require_aal2().and_then(|()| require_writer_role(principal));
        if let Err(error) = gate {
            let access = access.patient(&input.patient_id);
            return Err(self.denied(caller, access, error).await);
        }
        validate::check_patient_id(&input.patient_id)?;
        let access = access.patient(&input.patient_id);
        validate::check_kind(&input.kind)?;
        let envelope = validate::check_envelope(input.envelope.as_ref())?;
        validate::check_policy(&input.policy, &input.patient_id, envelope)?;
        validate::check_signature_fields(&input.author_identity_key_id, &input.author_signature)?;
        let grant = match authorize(principal, &input.policy, "write a record under it") {
            Ok(grant) => grant,
            Err(error) => return Err(self.denied(caller, access, error).await),
        };
        let access = access.emergency(grant.emergency);
        let signed = RecordVersion {
            record_id: &input.record_id,
            patient_id: &input.patient_id,
            kind: &input.kind,
            version: 1,
            policy: &input.policy,
            envelope,
            author_user_id: &principal.user_id,
            author_identity_key_id: &input.author_identity_key_id,
            previous_version_hash: &[],
        };
        self.verify_author(principal, &signed, &input.author_signature).await?;
        let version_hash = signed
            .hash()
            .map_err(|error| Error::internal("hashing a record version", error))?;

        let now = self.now();
        let head = record::Model {
            record_id: input.record_id.clone(),
            patient_id: input.patient_id.clone(),
            kind: input.kind.clone(),
            latest_version: 1,
            policy: input.policy.clone(),
            latest_entered_in_error: false,
            etag: new_etag(),
            created_at: now,
            updated_at: now,
            updated_micros: now.timestamp_micros(),
        };
        let version = record_version::Model {
            record_id: input.record_id.clone(),
            version: 1,
            patient_id: input.patient_id.clone(),
            kind: input.kind.clone(),
            policy: input.policy.clone(),
            envelope_version: i64::from(envelope.version),
            params_version: envelope.params_version.clone(),
            encapsulated_key: envelope.encapsulated_key.clone(),
            nonce: envelope.nonce.clone(),
            ciphertext: envelope.ciphertext.clone(),
            author_user_id: principal.user_id.clone(),
            author_identity_key_id: input.author_identity_key_id.clone(),
            author_signature: input.author_signature.clone(),
            previous_version_hash: Vec::new(),
            version_hash: version_hash.to_vec(),
            entered_in_error_reason: None,
            entered_in_error_at: None,
            entered_in_error_by: None,
            created_at: now,
        };

        let (turn, txn) = self.begin_write().await?;
        if let Some(existing) = self.head_in(&txn, &input.record_id).await? {
            let stored = self.same_creation(&txn, existing, &version).await?;
            self.audit(&txn, caller, access, AuditOutcome::Success, "ALREADY_CREATED")
                .await?;
            txn.commit().await?;
            self.outbox.wake_relay();
            return Ok((stored, true));
        }
        let inserted = async {
            record::ActiveModel::from(head.clone()).reset_all().insert(&txn).await?;
            record_version::ActiveModel::from(version.clone())
                .reset_all()
                .insert(&txn)
                .await?;
            Ok::<(), DbErr>(())
        }
        .await;
        match inserted {
            Ok(()) => {}
            Err(error) if is_unique_violation(&error) => {
                // Another process created it between our check and our insert.
                drop(txn);
                drop(turn);
                let existing = self
                    .head(&input.record_id)
                    .await?
                    .ok_or_else(|| record_not_found(&input.record_id))?;
                let stored = self.same_creation(&self.db, existing, &version).await?;
                let (_turn, txn) = self.begin_write().await?;
                self.audit(&txn, caller, access, AuditOutcome::Success, "ALREADY_CREATED")
                    .await?;
                txn.commit().await?;
                self.outbox.wake_relay();
                return Ok((stored, true));
            }
            Err(error) => return Err(error.into()),
        }
        self.audit(&txn, caller, access, AuditOutcome::Success, "").await?;
        txn.commit().await?;
        drop(turn);
        self.outbox.wake_relay();
        tracing::info!(record_id = %input.record_id, "record created");
        Ok((Stored { head, version }, false))
    }

    async fn head_in<C: ConnectionTrait>(&self, conn: &C, record_id: &str) -> Result<Option<record::Model>, Error> {
        Ok(record::Entity::find_by_id(record_id.to_owned()).one(conn).await?)
    }

    /// The stored version 1 when it is the same creation as `wanted`, else ALREADY_EXISTS.
    async fn same_creation<C: ConnectionTrait>(
        &self,
        conn: &C,
        head: record::Model,
        wanted: &record_version::Model,
    ) -> Result<Stored, Error> {
        let first = self.version_row(conn, &head.record_id, 1).await?;
        let same = first.as_ref().is_some_and(|first| {
            first.patient_id == wanted.patient_id
                && first.kind == wanted.kind
                && first.policy == wanted.policy
                && first.envelope_version == wanted.envelope_version
                && first.params_version == wanted.params_version
                && first.encapsulated_key == wanted.encapsulated_key
                && first.nonce == wanted.nonce
                && first.ciphertext == wanted.ciphertext
                && first.author_user_id == wanted.author_user_id
                && first.author_identity_key_id == wanted.author_identity_key_id
                && first.author_signature == wanted.author_signature
        });
        match first {
            Some(version) if same => Ok(Stored { head, version }),
            _ => Err(Error::already_exists(
                "RECORD_ID_EXISTS",
                "this record id was already used for a different record: choose a new UUIDv7",
            )),
        }
    }

    /// A record's latest version (`version` 0) or a given version.
    pub async fn get(
        &self,
        principal: &Principal,
        caller: &Caller,
        record_id: &str,
        version: i64,
    ) -> Result<Stored, Error> {
        validate::check_uuid_v7(record_id, "record_id")?;
        let access = Access::new(AuditAction::Read, "GetRecord", record_id, "");
        let gate = principal.require_aal2().and_then(|()| require_reader_role(principal));
        if let Err(error) = gate {
            let patient = self.patient_of(record_id).await;
            return Err(self.denied(caller, access.patient(&patient), error).await);
        }
        if version < 0 {
            return Err(Error::invalid_argument(
                "INVALID_VERSION",
                "version must be 0 (the latest) or a version number from 1",
            ));
        }
        let head = self.head(record_id).await?.ok_or_else(|| record_not_found(record_id))?;
        let access = access.patient(&head.patient_id);
        let wanted = if version == 0 { head.latest_version } else { version };
        let row = self.version_row(&self.db, record_id, wanted).await?.ok_or_else(|| {
            Error::not_found(
                "VERSION_NOT_FOUND",
                format!(
                    "record {record_id} has no version {wanted}; its latest is {}",
                    head.latest_version
                ),
            )
        })?;
        let grant = match authorize(principal, &row.policy, "read it") {
            Ok(grant) => grant,
            Err(error) => return Err(self.denied(caller, access, error).await),
        };
        self.audit_read(caller, access.emergency(grant.emergency)).await?;
        Ok(Stored { head, version: row })
    }

    /// Lists a patient's records the caller may read (latest versions, most recently updated first).
    pub async fn list(&self, principal: &Principal, caller: &Caller, input: ListInput) -> Result<Page<Stored>, Error> {
        let patient_id = if input.patient_id.is_empty() && principal.role == "patient" {
            principal.user_id.clone()
        } else {
            input.patient_id.clone()
        };
        let access = Access::new(AuditAction::Read, "ListRecords", "", &patient_id);
        let gate = principal.require_aal2().and_then(|()| require_reader_role(principal));
        if let Err(error) = gate {
            return Err(self.denied(caller, access, error).await);
        }
        validate::check_patient_id(&patient_id)?;
        if !input.kind.is_empty() {
            validate::check_kind(&input.kind)?;
        }
        let size = validate::page_size(input.page_size);
        let scope = validate::scope(&[
            "records",
            &patient_id,
            &input.kind,
            if input.include_entered_in_error { "1" } else { "0" },
        ]);
        let invalid_token = || {
            Error::invalid_argument(
                "INVALID_PAGE_TOKEN",
                "the page token is not from this listing (same filters): start again without one",
            )
        };
        let mut after: Option<(i64, String)> = match validate::decode_token(&input.page_token, &scope)? {
            None => None,
            Some(position) => {
                let (micros, id) = position.split_once('.').ok_or_else(invalid_token)?;
                Some((micros.parse().map_err(|_| invalid_token())?, id.to_owned()))
            }
        };

        let mut readable: Vec<(record::Model, Grant)> = Vec::new();
        let mut more = false;
        'scan: loop {
            let mut query = record::Entity::find().filter(record::Column::PatientId.eq(patient_id.clone()));
            if !input.kind.is_empty() {
                query = query.filter(record::Column::Kind.eq(input.kind.clone()));
            }
            if !input.include_entered_in_error {
                query = query.filter(record::Column::LatestEnteredInError.eq(false));
            }
            if let Some((micros, id)) = &after {
                query = query.filter(
                    Condition::any().add(record::Column::UpdatedMicros.lt(*micros)).add(
                        Condition::all()
                            .add(record::Column::UpdatedMicros.eq(*micros))
                            .add(record::Column::RecordId.lt(id.clone())),
                    ),
                );
            }
            let batch = query
                .order_by_desc(record::Column::UpdatedMicros)
                .order_by_desc(record::Column::RecordId)
                .limit(SCAN_BATCH)
                .all(&self.db)
                .await?;
            let exhausted = u64::try_from(batch.len()).unwrap_or(u64::MAX) < SCAN_BATCH;
            for head in batch {
                after = Some((head.updated_micros, head.record_id.clone()));
                if let Some(grant) = evaluate(principal, &head.policy)? {
                    if u64::try_from(readable.len()).unwrap_or(u64::MAX) >= size {
                        more = true;
                        break 'scan;
                    }
                    readable.push((head, grant));
                }
            }
            if exhausted {
                break;
            }
        }
        let next_page_token = match readable.last() {
            Some((last, _)) if more => {
                validate::encode_token(&scope, &format!("{}.{}", last.updated_micros, last.record_id))
            }
            _ => String::new(),
        };

        let mut versions = if readable.is_empty() {
            Vec::new()
        } else {
            let mut wanted = Condition::any();
            for (head, _) in &readable {
                wanted = wanted.add(
                    Condition::all()
                        .add(record_version::Column::RecordId.eq(head.record_id.clone()))
                        .add(record_version::Column::Version.eq(head.latest_version)),
                );
            }
            record_version::Entity::find().filter(wanted).all(&self.db).await?
        };
        let emergency = readable.iter().any(|(_, grant)| grant.emergency);
        let mut items = Vec::with_capacity(readable.len());
        for (head, _) in readable {
            let position = versions
                .iter()
                .position(|row| row.record_id == head.record_id && row.version == head.latest_version);
            if let Some(position) = position {
                let version = versions.swap_remove(position);
                items.push(Stored { head, version });
            }
        }
        self.audit_read(caller, access.emergency(emergency)).await?;
        Ok(Page { items, next_page_token })
    }

    /// Writes a new version on top of the latest.
    pub async fn update(&self, principal: &Principal, caller: &Caller, input: UpdateInput) -> Result<Stored, Error> {
        validate::check_uuid_v7(&input.record_id, "record_id")?;
        let access = Access::new(AuditAction::Update, "UpdateRecord", &input.record_id, "");
        let gate = principal.require_aal2().and_then(|()| require_writer_role(principal));
        if let Err(error) = gate {
            let patient = self.patient_of(&input.record_id).await;
            return Err(self.denied(caller, access.patient(&patient), error).await);
        }
        let head = self
            .head(&input.record_id)
            .await?
            .ok_or_else(|| record_not_found(&input.record_id))?;
        let access = access.patient(&head.patient_id);
        let current = match authorize(principal, &head.policy, "change it") {
            Ok(grant) => grant,
            Err(error) => return Err(self.denied(caller, access, error).await),
        };
        validate::require_etag(&input.etag)?;
        if input.etag != head.etag {
            return Err(stale_etag());
        }
        let latest = self
            .version_row(&self.db, &head.record_id, head.latest_version)
            .await?
            .ok_or_else(|| Error::internal("reading a record's latest version", "the head names a missing version"))?;
        let expected = head.latest_version.saturating_add(1);
        if input.version != expected {
            return Err(Error::failed_precondition(
                "VERSION_MISMATCH",
                format!(
                    "version must be the latest version plus one: {expected} (the latest is {}), got {}",
                    head.latest_version, input.version
                ),
            ));
        }
        if input.previous_version_hash != latest.version_hash {
            return Err(Error::failed_precondition(
                "PREVIOUS_HASH_MISMATCH",
                format!(
                    "previous_version_hash must be the version_hash of version {} (the latest): read it again and sign over that hash",
                    head.latest_version
                ),
            ));
        }
        let envelope = validate::check_envelope(input.envelope.as_ref())?;
        validate::check_policy(&input.policy, &head.patient_id, envelope)?;
        validate::check_signature_fields(&input.author_identity_key_id, &input.author_signature)?;
        let next = match authorize(principal, &input.policy, "write a version under it") {
            Ok(grant) => grant,
            Err(error) => return Err(self.denied(caller, access, error).await),
        };
        let access = access.emergency(current.emergency || next.emergency);
        let signed = RecordVersion {
            record_id: &head.record_id,
            patient_id: &head.patient_id,
            kind: &head.kind,
            version: input.version,
            policy: &input.policy,
            envelope,
            author_user_id: &principal.user_id,
            author_identity_key_id: &input.author_identity_key_id,
            previous_version_hash: &input.previous_version_hash,
        };
        self.verify_author(principal, &signed, &input.author_signature).await?;
        let version_hash = signed
            .hash()
            .map_err(|error| Error::internal("hashing a record version", error))?;

        let now = self.now();
        let etag = new_etag();
        let version = record_version::Model {
            record_id: head.record_id.clone(),
            version: input.version,
            patient_id: head.patient_id.clone(),
            kind: head.kind.clone(),
            policy: input.policy.clone(),
            envelope_version: i64::from(envelope.version),
            params_version: envelope.params_version.clone(),
            encapsulated_key: envelope.encapsulated_key.clone(),
            nonce: envelope.nonce.clone(),
            ciphertext: envelope.ciphertext.clone(),
            author_user_id: principal.user_id.clone(),
            author_identity_key_id: input.author_identity_key_id.clone(),
            author_signature: input.author_signature.clone(),
            previous_version_hash: input.previous_version_hash.clone(),
            version_hash: version_hash.to_vec(),
            entered_in_error_reason: None,
            entered_in_error_at: None,
            entered_in_error_by: None,
            created_at: now,
        };
        let (_turn, txn) = self.begin_write().await?;
        // The winner of two edits based on the same etag is whoever changes the head row first;
        // on PostgreSQL the other waits for the row lock, then matches no row.
        let moved = record::Entity::update_many()
            .col_expr(record::Column::LatestVersion, Expr::value(input.version))
            .col_expr(record::Column::Policy, Expr::value(input.policy.clone()))
            .col_expr(record::Column::LatestEnteredInError, Expr::value(false))
            .col_expr(record::Column::Etag, Expr::value(etag.clone()))
            .col_expr(record::Column::UpdatedAt, Expr::value(now))
            .col_expr(record::Column::UpdatedMicros, Expr::value(now.timestamp_micros()))
            .filter(record::Column::RecordId.eq(head.record_id.clone()))
            .filter(record::Column::Etag.eq(input.etag.clone()))
            .filter(record::Column::LatestVersion.eq(head.latest_version))
            .exec(&txn)
            .await?
            .rows_affected;
        if moved != 1 {
            return Err(stale_etag());
        }
        match record_version::ActiveModel::from(version.clone())
            .reset_all()
            .insert(&txn)
            .await
        {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => return Err(stale_etag()),
            Err(error) => return Err(error.into()),
        }
        self.audit(&txn, caller, access, AuditOutcome::Success, "").await?;
        txn.commit().await?;
        self.outbox.wake_relay();
        let head = record::Model {
            latest_version: input.version,
            policy: input.policy,
            latest_entered_in_error: false,
            etag,
            updated_at: now,
            updated_micros: now.timestamp_micros(),
            ..head
        };
        Ok(Stored { head, version })
    }

    /// A record's versions the caller may read, newest first.
    pub async fn versions(
        &self,
        principal: &Principal,
        caller: &Caller,
        record_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Stored>, Error> {
        validate::check_uuid_v7(record_id, "record_id")?;
        let access = Access::new(AuditAction::Read, "ListRecordVersions", record_id, "");
        let gate = principal.require_aal2().and_then(|()| require_reader_role(principal));
        if let Err(error) = gate {
            let patient = self.patient_of(record_id).await;
            return Err(self.denied(caller, access.patient(&patient), error).await);
        }
        let head = self.head(record_id).await?.ok_or_else(|| record_not_found(record_id))?;
        let access = access.patient(&head.patient_id);
        let latest = match authorize(principal, &head.policy, "read it") {
            Ok(grant) => grant,
            Err(error) => return Err(self.denied(caller, access, error).await),
        };
        let size = validate::page_size(page_size);
        let scope = validate::scope(&["versions", record_id]);
        let before = match validate::decode_token(page_token, &scope)? {
            None => head.latest_version.saturating_add(1),
            Some(position) => position.parse::<i64>().map_err(|_| {
                Error::invalid_argument(
                    "INVALID_PAGE_TOKEN",
                    "the page token is not from this listing: start again without one",
                )
            })?,
        };
        let mut items = Vec::new();
        let mut emergency = latest.emergency;
        let mut cursor = before;
        let mut more = false;
        'scan: loop {
            let batch = record_version::Entity::find()
                .filter(record_version::Column::RecordId.eq(record_id.to_owned()))
                .filter(record_version::Column::Version.lt(cursor))
                .order_by_desc(record_version::Column::Version)
                .limit(SCAN_BATCH.min(size.saturating_add(1)))
                .all(&self.db)
                .await?;
            let exhausted = u64::try_from(batch.len()).unwrap_or(u64::MAX) < SCAN_BATCH.min(size.saturating_add(1));
            for row in batch {
                cursor = row.version;
                if let Some(grant) = evaluate(principal, &row.policy)? {
                    if u64::try_from(items.len()).unwrap_or(u64::MAX) >= size {
                        more = true;
                        break 'scan;
                    }
                    emergency |= grant.emergency;
                    items.push(Stored {
                        head: head.clone(),
                        version: row,
                    });
                }
            }
            if exhausted {
                break;
            }
        }
        let next_page_token = match items.last() {
            Some(last) if more => validate::encode_token(&scope, &last.version.version.to_string()),
            _ => String::new(),
        };
        self.audit_read(caller, access.emergency(emergency)).await?;
        Ok(Page { items, next_page_token })
    }

    /// Marks one version entered-in-error; it stays stored and listed.
    pub async fn mark_entered_in_error(
        &self,
        principal: &Principal,
        caller: &Caller,
        record_id: &str,
        version: i64,
        etag: &str,
        reason: &str,
    ) -> Result<Stored, Error> {
        validate::check_uuid_v7(record_id, "record_id")?;
        let access = Access::new(AuditAction::Update, "MarkEnteredInError", record_id, "");
        let gate = principal.require_aal2().and_then(|()| require_writer_role(principal));
        if let Err(error) = gate {
            let patient = self.patient_of(record_id).await;
            return Err(self.denied(caller, access.patient(&patient), error).await);
        }
        validate::check_reason(reason)?;
        validate::require_etag(etag)?;
        if version < 1 {
            return Err(Error::invalid_argument(
                "INVALID_VERSION",
                "version must name the version to mark (1 or more)",
            ));
        }
        let head = self.head(record_id).await?.ok_or_else(|| record_not_found(record_id))?;
        let access = access.patient(&head.patient_id);
        let row = self.version_row(&self.db, record_id, version).await?.ok_or_else(|| {
            Error::not_found(
                "VERSION_NOT_FOUND",
                format!(
                    "record {record_id} has no version {version}; its latest is {}",
                    head.latest_version
                ),
            )
        })?;
        let grants = authorize(principal, &head.policy, "mark it entered-in-error").and_then(|latest| {
            authorize(principal, &row.policy, "mark it entered-in-error").map(|marked| (latest, marked))
        });
        let (latest, marked) = match grants {
            Ok(grants) => grants,
            Err(error) => return Err(self.denied(caller, access, error).await),
        };
        let access = access.emergency(latest.emergency || marked.emergency);
        if etag != head.etag {
            return Err(stale_etag());
        }
        if row.entered_in_error_reason.is_some() {
            return Err(Error::failed_precondition(
                "ALREADY_ENTERED_IN_ERROR",
                format!("version {version} of record {record_id} is already marked entered-in-error"),
            ));
        }
        let now = self.now();
        let new_etag = new_etag();
        let is_latest = version == head.latest_version;
        let (_turn, txn) = self.begin_write().await?;
        let mut head_update = record::Entity::update_many()
            .col_expr(record::Column::Etag, Expr::value(new_etag.clone()))
            .col_expr(record::Column::UpdatedAt, Expr::value(now))
            .col_expr(record::Column::UpdatedMicros, Expr::value(now.timestamp_micros()));
        if is_latest {
            head_update = head_update.col_expr(record::Column::LatestEnteredInError, Expr::value(true));
        }
        let moved = head_update
            .filter(record::Column::RecordId.eq(record_id.to_owned()))
            .filter(record::Column::Etag.eq(etag.to_owned()))
            .filter(record::Column::LatestVersion.eq(head.latest_version))
            .exec(&txn)
            .await?
            .rows_affected;
        if moved != 1 {
            return Err(stale_etag());
        }
        let marked_rows = record_version::Entity::update_many()
            .col_expr(
                record_version::Column::EnteredInErrorReason,
                Expr::value(reason.to_owned()),
            )
            .col_expr(record_version::Column::EnteredInErrorAt, Expr::value(now))
            .col_expr(
                record_version::Column::EnteredInErrorBy,
                Expr::value(principal.user_id.clone()),
            )
            .filter(record_version::Column::RecordId.eq(record_id.to_owned()))
            .filter(record_version::Column::Version.eq(version))
            .filter(record_version::Column::EnteredInErrorReason.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        if marked_rows != 1 {
            return Err(stale_etag());
        }
        self.audit(&txn, caller, access, AuditOutcome::Success, "").await?;
        txn.commit().await?;
        self.outbox.wake_relay();
        let head = record::Model {
            latest_entered_in_error: head.latest_entered_in_error || is_latest,
            etag: new_etag,
            updated_at: now,
            updated_micros: now.timestamp_micros(),
            ..head
        };
        let version = record_version::Model {
            entered_in_error_reason: Some(reason.to_owned()),
            entered_in_error_at: Some(now),
            entered_in_error_by: Some(principal.user_id.clone()),
            ..row
        };
        Ok(Stored { head, version })
    }
}
