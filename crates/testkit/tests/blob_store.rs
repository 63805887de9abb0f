//! The runtime's blob store on both backends: files beside the SQLite database, rows in
//! PostgreSQL (when `CAREMESH_TEST_DATABASE_URL` is set). A 20 MiB blob goes in as 1 MiB pieces and
//! comes back in other-sized pieces byte for byte; an append at the wrong offset is refused with
//! the stored length (how an interrupted upload resumes); deleting removes every byte.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use caremesh_runtime::blob::{BlobStore, MAX_PIECE_LEN, create_blob_pieces_table};
use caremesh_runtime::config::DatabaseConfig;
use caremesh_runtime::error::ErrorCode;
use caremesh_testkit::{Backend, backends};
use sea_orm::ConnectionTrait;
use sea_orm_migration::SchemaManager;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A store on `backend`, and the PostgreSQL schema to drop afterwards.
async fn store(backend: &Backend, dir: &std::path::Path) -> (BlobStore, Option<(sea_orm::DatabaseConnection, String)>) {
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}/messaging.db?mode=rwc", dir.display());
            let db = caremesh_runtime::db::connect(&DatabaseConfig {
                url: url.clone(),
                schema: String::new(),
            })
            .await
            .unwrap();
            let store = BlobStore::for_database(&db, &url, dir);
            assert_eq!(store.files_dir(), Some(dir.join("messaging.blobs").as_path()));
            (store, None)
        }
        Backend::Postgres(url) => {
            let schema = format!("t{}_blobs", &Uuid::now_v7().simple().to_string()[20..]);
            let db = caremesh_runtime::db::connect(&DatabaseConfig {
                url: url.clone(),
                schema: schema.clone(),
            })
            .await
            .unwrap();
            create_blob_pieces_table(&SchemaManager::new(&db)).await.unwrap();
            let store = BlobStore::for_database(&db, url, dir);
            assert_eq!(store.files_dir(), None);
            (store, Some((db, schema)))
        }
    }
}

fn file(len: usize) -> Vec<u8> {
    // Not a repeating pattern of the piece size: a misplaced piece changes the digest.
    let mut out = Vec::with_capacity(len);
    let mut state = Sha256::digest(b"blob store test").to_vec();
    while out.len() < len {
        state = Sha256::digest(&state).to_vec();
        out.extend_from_slice(&state);
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn blobs_round_trip_resume_and_delete_on_both_backends() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let (store, cleanup) = store(&backend, dir.path()).await;
        let name = backend.name();
        let id = Uuid::now_v7();
        let blob = file(20 * 1024 * 1024 + 12_345);

        assert_eq!(store.len(id).await.unwrap(), 0, "{name}: a new blob is empty");
        let mut offset = 0u64;
        for (i, piece) in blob.chunks(MAX_PIECE_LEN).enumerate() {
            if i == 7 {
                // An upload that lost its place: refused with where to continue.
                let error = store.append(id, offset + 1, piece).await.unwrap_err();
                assert_eq!(error.code(), ErrorCode::FailedPrecondition, "{name}");
                assert_eq!(error.reason(), "BLOB_OFFSET_MISMATCH");
                assert!(
                    error.message().contains(&format!("continue from offset {offset}")),
                    "{name}: {}",
                    error.message()
                );
                // Resuming asks for the stored length and sends from there.
                assert_eq!(store.len(id).await.unwrap(), offset);
            }
            offset = store.append(id, offset, piece).await.unwrap();
        }
        assert_eq!(offset, blob.len() as u64);
        assert_eq!(store.len(id).await.unwrap(), blob.len() as u64, "{name}");

        let too_large = vec![0u8; MAX_PIECE_LEN + 1];
        let error = store.append(id, offset, &too_large).await.unwrap_err();
        assert_eq!(
            (error.code(), error.reason()),
            (ErrorCode::InvalidArgument, "PIECE_TOO_LARGE")
        );

        let mut read = Vec::with_capacity(blob.len());
        loop {
            let piece = store.read(id, read.len() as u64, 700_001).await.unwrap();
            assert!(piece.len() <= 700_001);
            if piece.is_empty() {
                break;
            }
            read.extend_from_slice(&piece);
        }
        assert!(read == blob, "{name}: the blob comes back byte for byte");
        let expected: [u8; 32] = Sha256::digest(&blob).into();
        assert_eq!(store.digest(id).await.unwrap(), expected, "{name}");

        // Another blob is untouched by this one's deletion.
        let other = Uuid::now_v7();
        store.append(other, 0, b"other").await.unwrap();
        store.delete(id).await.unwrap();
        assert_eq!(store.len(id).await.unwrap(), 0, "{name}: deleted");
        assert!(store.read(id, 0, 10).await.unwrap().is_empty());
        assert_eq!(store.read(other, 0, 10).await.unwrap(), b"other");
        store.delete(id).await.unwrap();

        if let Some((db, schema)) = cleanup {
            db.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .unwrap();
        }
    }
}
