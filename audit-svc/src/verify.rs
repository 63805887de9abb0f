//! Offline verification of a stored audit log (`caremesh audit verify`): reads audit-svc's
//! database directly, recomputes every leaf hash from the stored event bytes and the whole tree
//! from the leaves, compares them with the stored leaf hashes, interior nodes and tree size, and
//! checks every stored checkpoint's signature (with the sealed signing key's public half) and root.
//! The first inconsistency is reported: an edited, deleted, reordered or inserted event always
//! shows up as one of them (an attacker who rewrites the stored tree too still fails against the
//! signed checkpoints).

use caremesh_proto::audit::v1::AuditEvent;
use caremesh_runtime::kek::Kek;
use caremesh_tlog::{Hash, MemoryTree, NodeId};
use prost::Message;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::storage::{checkpoint, event, node, signing_key, tree_state};

const PAGE: u64 = 5000;

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Leaves in the tree.
    pub tree_size: u64,
    /// The recomputed root of the whole tree.
    pub root: Hash,
    /// Stored interior nodes compared.
    pub nodes_checked: u64,
    /// Checkpoints whose signature and root were checked.
    pub checkpoints_checked: u64,
    /// The largest checkpointed size (0 when none).
    pub latest_checkpoint: u64,
}

/// The first inconsistency found.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the audit database failed: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("event {event_id} has no leaf index: it was inserted outside the log")]
    Untreed { event_id: String },
    #[error("leaf {index} is missing: an event was deleted (or the log reordered)")]
    MissingLeaf { index: u64 },
    #[error("event {event_id} sits at leaf {index}, beyond the tree size {size}: it was inserted")]
    BeyondTree { index: u64, size: u64, event_id: String },
    #[error("leaf {index} (event {event_id}): the stored bytes do not match the leaf hash: the event was edited")]
    LeafHashMismatch { index: u64, event_id: String },
    #[error("leaf {index} (event {event_id}): stored bytes cannot be decoded: the event was edited")]
    Undecodable { index: u64, event_id: String },
    #[error("leaf {index} (event {event_id}): the {column} column does not match the logged event: it was edited")]
    ColumnMismatch {
        index: u64,
        event_id: String,
        column: &'static str,
    },
    #[error(
        "the stored tree node at level {level} index {index} (leaves {first}..{last}) does not match the events: events were edited, reordered, inserted or deleted"
    )]
    NodeMismatch {
        level: u8,
        index: u64,
        first: u64,
        last: u64,
    },
    #[error("the stored tree node at level {level} index {index} is missing")]
    MissingNode { level: u8, index: u64 },
    #[error("the stored tree has a node at level {level} index {index} that the events do not produce")]
    ExtraNode { level: u8, index: u64 },
    #[error("the signing key cannot be used: {0}")]
    Key(String),
    #[error("the checkpoint of size {tree_size} has no valid signature: {reason}")]
    BadSignature { tree_size: u64, reason: String },
    #[error("the checkpoint stored as size {tree_size} signs different values (size or root)")]
    CheckpointFields { tree_size: u64 },
    #[error("the checkpoint of size {tree_size} covers more leaves than the log holds ({size}): events were deleted")]
    CheckpointBeyondLog { tree_size: u64, size: u64 },
    #[error(
        "the checkpoint of size {tree_size} signs a root the stored events do not produce: events before leaf {tree_size} were changed"
    )]
    CheckpointRoot { tree_size: u64 },
}

fn position(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Verifies the log stored in `db` (audit-svc's database); `kek` opens the signing key.
pub async fn verify_log(db: &DatabaseConnection, kek: &Kek) -> Result<VerifyReport, VerifyError> {
    if let Some(row) = event::Entity::find()
        .filter(event::Column::LeafIndex.is_null())
        .one(db)
        .await?
    {
        return Err(VerifyError::Untreed { event_id: row.event_id });
    }
    let size = tree_state::Entity::find_by_id(1)
        .one(db)
        .await?
        .map_or(0, |state| position(state.size));

    // Leaves: contiguous from 0, each hash matching its bytes, each column matching the event.
    let mut leaves: Vec<Hash> = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let mut query = event::Entity::find().order_by_asc(event::Column::LeafIndex).limit(PAGE);
        if let Some(after) = after {
            query = query.filter(event::Column::LeafIndex.gt(after));
        }
        let rows = query.all(db).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let stored_index = row.leaf_index.unwrap_or(-1);
            after = Some(stored_index);
            let index = position(stored_index);
            let expected = leaves.len() as u64;
            if index >= size {
                return Err(VerifyError::BeyondTree {
                    index,
                    size,
                    event_id: row.event_id,
                });
            }
            if index != expected {
                return Err(VerifyError::MissingLeaf { index: expected });
            }
            let leaf = caremesh_tlog::leaf_hash(&row.payload);
            if row.leaf_hash.as_deref() != Some(leaf.as_slice()) {
                return Err(VerifyError::LeafHashMismatch {
                    index,
                    event_id: row.event_id,
                });
            }
            check_columns(index, &row)?;
            leaves.push(leaf);
        }
    }
    if (leaves.len() as u64) < size {
        return Err(VerifyError::MissingLeaf {
            index: leaves.len() as u64,
        });
    }

    // Interior nodes: exactly the complete subtrees the leaves produce.
    let tree = MemoryTree::from_leaf_hashes(leaves);
    let mut nodes_checked = 0u64;
    for level in 1..=u8::try_from(tree.levels()).unwrap_or(u8::MAX) {
        let expected = tree.level(level);
        let mut next = 0u64;
        loop {
            let rows = node::Entity::find()
                .filter(node::Column::Level.eq(i32::from(level)))
                .filter(node::Column::Idx.gte(i64::try_from(next).unwrap_or(i64::MAX)))
                .order_by_asc(node::Column::Idx)
                .limit(PAGE)
                .all(db)
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let index = position(row.idx);
                if index != next {
                    return Err(VerifyError::MissingNode { level, index: next });
                }
                let Some(want) = usize::try_from(index).ok().and_then(|i| expected.get(i)) else {
                    return Err(VerifyError::ExtraNode { level, index });
                };
                if row.hash.as_slice() != want.as_slice() {
                    let first = NodeId::new(level, index).start();
                    return Err(VerifyError::NodeMismatch {
                        level,
                        index,
                        first,
                        last: first + (1u64 << level) - 1,
                    });
                }
                next += 1;
                nodes_checked += 1;
            }
        }
        if (next as usize) < expected.len() {
            return Err(VerifyError::MissingNode { level, index: next });
        }
    }
    let top = i32::try_from(tree.levels()).unwrap_or(i32::MAX);
    if let Some(row) = node::Entity::find()
        .filter(node::Column::Level.gte(top.max(1)))
        .one(db)
        .await?
    {
        return Err(VerifyError::ExtraNode {
            level: u8::try_from(row.level).unwrap_or(u8::MAX),
            index: position(row.idx),
        });
    }

    // Checkpoints: signed by the log's key, over roots the events produce.
    let checkpoints = checkpoint::Entity::find()
        .order_by_asc(checkpoint::Column::TreeSize)
        .paginate(db, 1000);
    let mut checked = 0u64;
    let mut latest = 0u64;
    let key = signing_key::Entity::find_by_id(1).one(db).await?;
    let verifier = match &key {
        Some(row) => Some(
            crate::checkpoints::open_key(kek, row)
                .map_err(|error| VerifyError::Key(error.message().to_owned()))?
                .verifier(),
        ),
        None => None,
    };
    let mut pages = checkpoints;
    while let Some(rows) = pages.fetch_and_next().await? {
        for row in rows {
            let tree_size = position(row.tree_size);
            let Some(verifier) = &verifier else {
                return Err(VerifyError::Key(
                    "checkpoints exist but the signing key is missing".to_owned(),
                ));
            };
            let signed =
                verifier
                    .open_checkpoint(&row.signed_note, None)
                    .map_err(|error| VerifyError::BadSignature {
                        tree_size,
                        reason: error.to_string(),
                    })?;
            if signed.size != tree_size || signed.root.as_slice() != row.root_hash.as_slice() {
                return Err(VerifyError::CheckpointFields { tree_size });
            }
            if tree_size > tree.size() {
                return Err(VerifyError::CheckpointBeyondLog {
                    tree_size,
                    size: tree.size(),
                });
            }
            let root = caremesh_tlog::root(&tree, tree_size).map_err(|_| VerifyError::CheckpointRoot { tree_size })?;
            if root != signed.root {
                return Err(VerifyError::CheckpointRoot { tree_size });
            }
            checked += 1;
            latest = latest.max(tree_size);
        }
    }
    Ok(VerifyReport {
        tree_size: tree.size(),
        root: tree.root(),
        nodes_checked,
        checkpoints_checked: checked,
        latest_checkpoint: latest,
    })
}

/// The query columns must say what the logged (hashed) event says.
fn check_columns(index: u64, row: &event::Model) -> Result<(), VerifyError> {
    let Ok(event) = AuditEvent::decode(row.payload.as_slice()) else {
        return Err(VerifyError::Undecodable {
            index,
            event_id: row.event_id.clone(),
        });
    };
    let actor = event.actor.clone().unwrap_or_default();
    let checks: [(&'static str, bool); 10] = [
        ("event_id", row.event_id == event.event_id),
        ("patient_id", row.patient_id == event.patient_id),
        ("actor_user_id", row.actor_user_id == actor.user_id),
        ("action", row.action == event.action),
        ("outcome", row.outcome == event.outcome),
        ("service", row.service == event.service),
        ("operation", row.operation == event.operation),
        ("entity_type", row.entity_type == event.entity_type),
        ("entity_id", row.entity_id == event.entity_id),
        ("emergency", row.emergency == event.emergency),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((column, _)) => Err(VerifyError::ColumnMismatch {
            index,
            event_id: row.event_id.clone(),
            column,
        }),
        None => Ok(()),
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the audit database failed: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Log(String),
    #[error("writing the export failed: {0}")]
    Write(#[from] std::io::Error),
}

impl From<caremesh_runtime::Error> for ExportError {
    fn from(error: caremesh_runtime::Error) -> Self {
        Self::Log(format!("{}: {}", error.reason(), error.message()))
    }
}

/// Writes the log up to its latest checkpoint as JSON Lines: first `{"checkpoint": ...}`, then one
/// object per event in leaf order with its leaf bytes (base64) and inclusion proof (hex) against
/// that checkpoint. Returns the number of events written.
pub async fn export_jsonl(db: &DatabaseConnection, mut out: impl std::io::Write) -> Result<u64, ExportError> {
    use base64::Engine as _;
    let Some(checkpoint) = checkpoint::Entity::find()
        .order_by_desc(checkpoint::Column::TreeSize)
        .one(db)
        .await?
    else {
        return Err(ExportError::Log(
            "there is no signed checkpoint yet: start audit-svc once so that it signs one".to_owned(),
        ));
    };
    let size = position(checkpoint.tree_size);
    let head = serde_json::json!({
        "checkpoint": {
            "tree_size": size,
            "root_hash": hex::encode(&checkpoint.root_hash),
            "signed_note": checkpoint.signed_note,
            "create_time": checkpoint.created_at.to_rfc3339(),
        }
    });
    writeln!(out, "{head}")?;
    let mut written = 0u64;
    let mut next = 0i64;
    while position(next) < size {
        let rows = event::Entity::find()
            .filter(event::Column::LeafIndex.gte(next))
            .filter(event::Column::LeafIndex.lt(checkpoint.tree_size))
            .order_by_asc(event::Column::LeafIndex)
            .limit(PAGE)
            .all(db)
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let index = row.leaf_index.unwrap_or(-1);
            next = index.saturating_add(1);
            let proof = crate::tree::inclusion_proof(db, position(index), size).await?;
            let line = serde_json::json!({
                "leaf_index": index,
                "event_id": row.event_id,
                "integrate_time": row.ingested_at.to_rfc3339(),
                "leaf_hash": hex::encode(row.leaf_hash.unwrap_or_default()),
                "leaf_value": base64::engine::general_purpose::STANDARD.encode(&row.payload),
                "inclusion_proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            });
            writeln!(out, "{line}")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}
