//! What the attachment tests share: users with their devices, files with a marker, digests,
//! the mesh's blob store and the messaging API.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use caremesh_runtime::blob::BlobStore;
use caremesh_sdk::messaging::{Content, Messenger};
use caremesh_testkit::{Service, TestMesh, TestUser};
use sha2::{Digest, Sha256};

pub const MIB: u64 = 1 << 20;

pub struct Party {
    pub user: TestUser,
    pub messenger: Messenger,
    _dir: tempfile::TempDir,
}

pub async fn party(mesh: &TestMesh, user: TestUser) -> Party {
    let dir = tempfile::tempdir().unwrap();
    let messenger = Messenger::open(mesh.sdk(), dir.path(), "default", &user.session)
        .await
        .unwrap();
    Party {
        user,
        messenger,
        _dir: dir,
    }
}

/// A file of `len` bytes that does not compress, with `marker` written every MiB.
pub fn write_file(dir: &Path, name: &str, len: u64, marker: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut written = 0u64;
    let mut block = 0u64;
    while written < len {
        let mut piece = Sha256::digest(format!("{name}/{block}").as_bytes()).to_vec();
        if block.is_multiple_of(32_768) {
            piece = marker.as_bytes().to_vec();
        }
        let take = usize::try_from((len - written).min(piece.len() as u64)).unwrap();
        file.write_all(&piece[..take]).unwrap();
        written += take as u64;
        block += 1;
    }
    file.flush().unwrap();
    path
}

pub fn file_digest(path: &Path) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer).unwrap();
        if read == 0 {
            return hasher.finalize().into();
        }
        hasher.update(&buffer[..read]);
    }
}

/// This process's resident memory in KiB: `VmRSS` now, or `VmHWM` (the peak since the last reset).
pub fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The attachment the message carries, from the recipient's side.
pub async fn received_attachment(to: &Party, message_id: &str) -> caremesh_crypto::v2::AttachmentRef {
    let opened = to.messenger.get(&to.user.session, message_id).await.unwrap();
    match opened.content {
        Content::Attachment { attachment, .. } => attachment,
        other => panic!("expected an attachment, got {other:?}"),
    }
}

pub async fn store(mesh: &TestMesh) -> BlobStore {
    let db = mesh.database(Service::Messaging).await;
    BlobStore::for_service(mesh.config(Service::Messaging), &db)
}

pub fn api(mesh: &TestMesh) -> MessagingServiceClient<tonic::transport::Channel> {
    MessagingServiceClient::new(mesh.sdk().channel(Service::Messaging).unwrap())
}

pub fn status_of(error: caremesh_sdk::SdkError) -> (tonic::Code, String) {
    (
        error.code().unwrap_or(tonic::Code::Unknown),
        error.reason().unwrap_or_default(),
    )
}

/// The whole stored blob `id`, read piece by piece.
pub async fn read_blob(store: &BlobStore, id: uuid::Uuid) -> Vec<u8> {
    let mut blob = Vec::new();
    loop {
        let piece = store.read(id, blob.len() as u64, 1 << 20).await.unwrap();
        if piece.is_empty() {
            return blob;
        }
        blob.extend_from_slice(&piece);
    }
}
