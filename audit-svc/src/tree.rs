//! The stored Merkle tree: loading the `O(log n)` complete subtrees a root or proof needs, and
//! appending leaves inside the ingest transaction. Leaves (level 0) live in
//! `audit_events.leaf_hash`, interior nodes in `audit_tree_nodes`.

use std::collections::HashMap;

use caremesh_runtime::Error;
use caremesh_tlog::{Hash, NodeId};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::storage::{event, node, tree_state};

/// Hashes are stored as bytes; a stored value of another length means storage was damaged.
pub(crate) fn to_hash(bytes: &[u8]) -> Result<Hash, Error> {
    bytes
        .try_into()
        .map_err(|_| Error::internal("reading a stored tree hash", "stored hash is not 32 bytes"))
}

/// Converts a leaf index or size from storage.
pub(crate) fn to_u64(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::internal("reading a stored tree position", "negative position"))
}

pub(crate) fn to_i64(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::invalid_argument("POSITION_OUT_OF_RANGE", "the position is too large"))
}

pub(crate) fn tlog_error(error: caremesh_tlog::TlogError) -> Error {
    match error {
        caremesh_tlog::TlogError::MissingNode(_) => Error::internal("reading the stored Merkle tree", error),
        other => Error::invalid_argument("INVALID_TREE_POSITION", other.to_string()),
    }
}

/// The tree size, read under the append lock when `lock` is set (PostgreSQL `FOR UPDATE`; on
/// SQLite the write transaction already holds the database lock).
pub(crate) async fn tree_size<C: ConnectionTrait>(conn: &C, lock: bool) -> Result<u64, Error> {
    let mut query = tree_state::Entity::find_by_id(1);
    if lock {
        query = query.lock_exclusive();
    }
    let state = query
        .one(conn)
        .await?
        .ok_or_else(|| Error::internal("reading the tree size", "the audit_tree_state row is missing"))?;
    to_u64(state.size)
}

/// Loads the stored hashes of `ids`.
pub(crate) async fn load_nodes<C: ConnectionTrait>(conn: &C, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, Error> {
    let mut found = HashMap::with_capacity(ids.len());
    let leaves: Vec<i64> = ids
        .iter()
        .filter(|id| id.level == 0)
        .map(|id| to_i64(id.index))
        .collect::<Result<_, _>>()?;
    if !leaves.is_empty() {
        let rows: Vec<(Option<i64>, Option<Vec<u8>>)> = event::Entity::find()
            .select_only()
            .column(event::Column::LeafIndex)
            .column(event::Column::LeafHash)
            .filter(event::Column::LeafIndex.is_in(leaves))
            .into_tuple()
            .all(conn)
            .await?;
        for (index, hash) in rows {
            if let (Some(index), Some(hash)) = (index, hash) {
                found.insert(NodeId::new(0, to_u64(index)?), to_hash(&hash)?);
            }
        }
    }
    let mut by_level: HashMap<u8, Vec<i64>> = HashMap::new();
    for id in ids.iter().filter(|id| id.level > 0) {
        by_level.entry(id.level).or_default().push(to_i64(id.index)?);
    }
    if !by_level.is_empty() {
        let mut condition = Condition::any();
        for (level, indexes) in by_level {
            condition = condition.add(
                Condition::all()
                    .add(node::Column::Level.eq(i32::from(level)))
                    .add(node::Column::Idx.is_in(indexes)),
            );
        }
        let rows = node::Entity::find().filter(condition).all(conn).await?;
        for row in rows {
            let level = u8::try_from(row.level)
                .map_err(|_| Error::internal("reading the stored Merkle tree", "level out of range"))?;
            found.insert(NodeId::new(level, to_u64(row.idx)?), to_hash(&row.hash)?);
        }
    }
    Ok(found)
}

/// The interior nodes that appending `leaves` to a tree of `size` leaves completes (level >= 1;
/// the caller stores the leaves themselves with their events).
pub(crate) async fn append_nodes<C: ConnectionTrait>(conn: &C, size: u64, leaves: &[Hash]) -> Result<(), Error> {
    if leaves.is_empty() {
        return Ok(());
    }
    let frontier = load_nodes(conn, &caremesh_tlog::frontier(size)).await?;
    let created = caremesh_tlog::append(&frontier, size, leaves).map_err(tlog_error)?;
    let mut rows = Vec::with_capacity(created.len());
    for (id, hash) in created.into_iter().filter(|(id, _)| id.level > 0) {
        rows.push(node::ActiveModel {
            level: sea_orm::Set(i32::from(id.level)),
            idx: sea_orm::Set(to_i64(id.index)?),
            hash: sea_orm::Set(hash.to_vec()),
        });
    }
    // Three columns per row: 2000 rows stay far below SQLite's and PostgreSQL's bind-parameter limits.
    for chunk in crate::log::owned_chunks(rows, 2000) {
        node::Entity::insert_many(chunk).exec_without_returning(conn).await?;
    }
    tree_state::Entity::update_many()
        .col_expr(
            tree_state::Column::Size,
            Expr::value(to_i64(size + leaves.len() as u64)?),
        )
        .filter(tree_state::Column::Id.eq(1))
        .exec(conn)
        .await?;
    Ok(())
}

/// The root hash of the tree of the first `size` leaves.
pub(crate) async fn root<C: ConnectionTrait>(conn: &C, size: u64) -> Result<Hash, Error> {
    let nodes = load_nodes(conn, &caremesh_tlog::frontier(size)).await?;
    caremesh_tlog::root(&nodes, size).map_err(tlog_error)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub(crate) async fn inclusion_proof<C: ConnectionTrait>(conn: &C, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
    let ranges = caremesh_tlog::inclusion_ranges(index, size).map_err(tlog_error)?;
    let nodes = load_nodes(conn, &caremesh_tlog::nodes_for_ranges(&ranges)).await?;
    caremesh_tlog::inclusion_proof(&nodes, index, size).map_err(tlog_error)
}

/// The consistency proof between the trees of `first` and `second` leaves.
pub(crate) async fn consistency_proof<C: ConnectionTrait>(
    conn: &C,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, Error> {
    let ranges = caremesh_tlog::consistency_ranges(first, second).map_err(tlog_error)?;
    let nodes = load_nodes(conn, &caremesh_tlog::nodes_for_ranges(&ranges)).await?;
    caremesh_tlog::consistency_proof(&nodes, first, second).map_err(tlog_error)
}
