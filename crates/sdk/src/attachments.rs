//! Files sent with messages and kept with records (`docs/protocol.md` §13), from the client side:
//! a file is encrypted here, chunk by chunk under a fresh key, and streamed to messaging-svc or
//! records-svc (a [`BlobService`]) in pieces of at most 1 MiB; the key and digest then travel
//! inside the message's end-to-end content or the record's ABE-sealed content. Saving reads
//! the blob back in pieces, opens each chunk as it arrives and writes the file beside its
//! destination, renamed into place only once the digest and the last chunk check out.
//!
//! Memory stays bounded whatever the file's size: a piece being built or written, the chunk
//! being opened, and what gRPC has in flight.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caremesh_crypto::attachment::{self, AttachmentKey, CHUNK_LEN, Opener, Sealed, Sealer};
use caremesh_crypto::new_id;
use caremesh_crypto::v2::{AttachmentRef, Content};
use caremesh_proto::messaging::v1 as pb;
use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::SdkError;
use crate::auth::Session;
use crate::messaging::{Messenger, crypto, local};

/// The largest piece sent in one upload message (the blob store's piece size).
pub const UPLOAD_PIECE_LEN: usize = 1 << 20;

/// How many times an upload cut by a transient failure is resumed before giving up.
const UPLOAD_ATTEMPTS: usize = 4;

/// Told how many of how many blob bytes have been transferred.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// A file to send, with the key and ids it is encrypted under: kept by the caller, the same
/// upload resumes where the server's copy ends ([`Messenger::upload_attachment`]).
pub struct PreparedUpload {
    path: PathBuf,
    /// The message or record that will name it.
    parent_id: String,
    attachment_id: String,
    key: AttachmentKey,
    file_len: u64,
    media_type: String,
    file_name: String,
}

impl std::fmt::Debug for PreparedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedUpload")
            .field("parent_id", &self.parent_id)
            .field("attachment_id", &self.attachment_id)
            .field("file_len", &self.file_len)
            .finish_non_exhaustive()
    }
}

impl PreparedUpload {
    /// Prepares `path` for the message or record `parent_id` (not sent or written yet), under a
    /// fresh key and attachment id. The name sent is the file's own name; the media type is
    /// guessed from its extension.
    pub fn new(path: &Path, parent_id: &str) -> Result<Self, SdkError> {
        let metadata =
            std::fs::metadata(path).map_err(|error| local(&format!("cannot read {}", path.display()), error))?;
        if !metadata.is_file() {
            return Err(SdkError::Local(format!("{} is not a file", path.display())));
        }
        let file_name = path
            .file_name()
            .map(|name| {
                name.to_string_lossy()
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect::<String>()
            })
            .unwrap_or_default();
        let file_name = truncate_utf8(&file_name, caremesh_crypto::v2::MAX_ATTACHMENT_LABEL_LEN);
        Ok(Self {
            path: path.to_owned(),
            parent_id: parent_id.to_owned(),
            attachment_id: new_id(),
            key: AttachmentKey::generate().map_err(|error| crypto("generating an attachment key", error))?,
            file_len: metadata.len(),
            media_type: media_type_of(path).to_owned(),
            file_name,
        })
    }

    pub fn attachment_id(&self) -> &str {
        &self.attachment_id
    }

    /// The message or record that will name it.
    pub fn parent_id(&self) -> &str {
        &self.parent_id
    }

    /// The blob's length (the file's plus a tag per chunk).
    pub fn blob_len(&self) -> u64 {
        attachment::blob_len(self.file_len)
    }

    fn reference(&self, sealed: &Sealed) -> AttachmentRef {
        AttachmentRef {
            attachment_id: self.attachment_id.clone(),
            key: Zeroizing::new(*self.key.as_bytes()),
            digest: sealed.digest,
            file_len: self.file_len,
            media_type: self.media_type.clone(),
            file_name: self.file_name.clone(),
        }
    }
}

pub(crate) fn truncate_utf8(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// A media type for the common clinical file kinds, from the extension (empty when unknown).
fn media_type_of(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .map(|extension| extension.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "dcm" => "application/dicom",
        "json" => "application/json",
        _ => "",
    }
}

/// Encrypts the file chunk by chunk and yields the blob from `skip` on, in pieces of exactly
/// [`UPLOAD_PIECE_LEN`] bytes but the last; the whole file is sealed (the digest covers all of
/// it), only the bytes past `skip` leave. What sealing produced is put in `sealed` after the last
/// chunk.
struct BlobReader {
    file: tokio::fs::File,
    sealer: Option<Sealer>,
    file_len: u64,
    read: u64,
    /// Blob bytes produced so far (sent or skipped).
    produced: u64,
    skip: u64,
    /// Sealed bytes not sent yet, and the blob offset of the first of them.
    pending: Vec<u8>,
    pending_start: u64,
    sealed: Arc<Mutex<Option<Result<Sealed, SdkError>>>>,
}

impl BlobReader {
    async fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>, SdkError> {
        let mut chunk = Zeroizing::new(vec![0u8; CHUNK_LEN]);
        while self.pending.len() < UPLOAD_PIECE_LEN {
            let Some(sealer) = self.sealer.as_mut() else { break };
            let want = usize::try_from((self.file_len - self.read).min(CHUNK_LEN as u64)).unwrap_or(CHUNK_LEN);
            let buffer = chunk.get_mut(..want).ok_or(SdkError::Protocol("chunk buffer"))?;
            self.file
                .read_exact(buffer)
                .await
                .map_err(|error| local("cannot read the file (did it change while it was sent?)", error))?;
            self.read += want as u64;
            let last = self.read == self.file_len;
            let sealed = sealer
                .seal_chunk(buffer, last)
                .map_err(|error| crypto("encrypting the file", error))?;
            let start = self.produced;
            self.produced += sealed.len() as u64;
            if self.produced > self.skip {
                let from = self.skip.saturating_sub(start);
                if self.pending.is_empty() {
                    self.pending_start = start + from;
                }
                self.pending
                    .extend_from_slice(sealed.get(usize::try_from(from).unwrap_or(0)..).unwrap_or_default());
            }
            if last {
                let finished = self
                    .sealer
                    .take()
                    .map(|sealer| sealer.finish().map_err(|error| crypto("encrypting the file", error)));
                if let (Some(finished), Ok(mut slot)) = (finished, self.sealed.lock()) {
                    *slot = Some(finished);
                }
            }
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let take = self.pending.len().min(UPLOAD_PIECE_LEN);
        let piece: Vec<u8> = self.pending.drain(..take).collect();
        let start = self.pending_start;
        self.pending_start += take as u64;
        Ok(Some((start, piece)))
    }
}

/// What a blob service reports of one attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobState {
    pub stored_length: u64,
    pub blob_length: u64,
    pub complete: bool,
}

/// A piece of a blob and where it starts.
pub(crate) type BlobPiece = (u64, Vec<u8>);

/// Where blobs are kept: messaging-svc for messages' attachments, records-svc for records'. The
/// RPCs are the same in both (create, state, upload stream, download stream), with each
/// service's own messages.
pub(crate) trait BlobService: Send + Sync {
    /// Reserves the upload's attachment for its parent (idempotent).
    async fn create(&self, session: &Session, upload: &PreparedUpload) -> Result<BlobState, SdkError>;
    async fn state(&self, session: &Session, attachment_id: &str) -> Result<BlobState, SdkError>;
    /// One upload stream of `pieces` of `attachment_id`.
    async fn upload(
        &self,
        session: &Session,
        attachment_id: &str,
        pieces: BoxStream<'static, BlobPiece>,
    ) -> Result<BlobState, SdkError>;
    async fn download(
        &self,
        session: &Session,
        attachment_id: &str,
    ) -> Result<BoxStream<'static, Result<BlobPiece, SdkError>>, SdkError>;
}

/// messaging-svc as a [`BlobService`].
struct MessageBlobs(MessagingServiceClient<Channel>);

fn message_blob_state(attachment: Option<pb::Attachment>) -> Result<BlobState, SdkError> {
    let attachment = attachment.ok_or(SdkError::Protocol("no attachment in the answer"))?;
    Ok(BlobState {
        stored_length: attachment.stored_length,
        blob_length: attachment.blob_length,
        complete: attachment.complete,
    })
}

impl BlobService for MessageBlobs {
    async fn create(&self, session: &Session, upload: &PreparedUpload) -> Result<BlobState, SdkError> {
        let answer = self
            .0
            .clone()
            .create_attachment(session.request(pb::CreateAttachmentRequest {
                attachment_id: upload.attachment_id.clone(),
                message_id: upload.parent_id.clone(),
                blob_length: upload.blob_len(),
            })?)
            .await?;
        message_blob_state(answer.into_inner().attachment)
    }

    async fn state(&self, session: &Session, attachment_id: &str) -> Result<BlobState, SdkError> {
        let answer = self
            .0
            .clone()
            .get_attachment(session.request(pb::GetAttachmentRequest {
                attachment_id: attachment_id.to_owned(),
            })?)
            .await?;
        message_blob_state(answer.into_inner().attachment)
    }

    async fn upload(
        &self,
        session: &Session,
        attachment_id: &str,
        pieces: BoxStream<'static, BlobPiece>,
    ) -> Result<BlobState, SdkError> {
        let requests = upload_requests(attachment_id, pieces, |attachment_id, (offset, data)| {
            pb::UploadAttachmentRequest {
                attachment_id,
                offset,
                data,
            }
        });
        let answer = self.0.clone().upload_attachment(session.request(requests)?).await?;
        message_blob_state(answer.into_inner().attachment)
    }

    async fn download(
        &self,
        session: &Session,
        attachment_id: &str,
    ) -> Result<BoxStream<'static, Result<BlobPiece, SdkError>>, SdkError> {
        let pieces = self
            .0
            .clone()
            .download_attachment(session.request(pb::DownloadAttachmentRequest {
                attachment_id: attachment_id.to_owned(),
                offset: 0,
            })?)
            .await?
            .into_inner();
        Ok(pieces
            .map(|piece| piece.map(|piece| (piece.offset, piece.data)).map_err(SdkError::from))
            .boxed())
    }
}

/// `pieces` as one service's upload requests, built by `request` from the attachment id and a
/// piece.
pub(crate) fn upload_requests<R: Send + 'static>(
    attachment_id: &str,
    pieces: BoxStream<'static, BlobPiece>,
    request: fn(String, BlobPiece) -> R,
) -> BoxStream<'static, R> {
    let attachment_id = attachment_id.to_owned();
    pieces.map(move |piece| request(attachment_id.clone(), piece)).boxed()
}

impl Messenger {
    /// Sends `file` to `recipient_user_id` with `caption`: encrypts and uploads it (resuming
    /// after transient failures), then sends the message that names it.
    pub async fn send_file(
        &self,
        session: &Session,
        recipient_user_id: &str,
        file: &Path,
        caption: &str,
        lifespan: Option<Duration>,
        progress: Option<Progress>,
    ) -> Result<pb::Message, SdkError> {
        let upload = PreparedUpload::new(file, &new_id())?;
        let attachment = self.upload_attachment(session, &upload, progress).await?;
        self.send_attachment(session, recipient_user_id, &upload, attachment, caption, lifespan)
            .await
    }

    /// Sends the message an upload was prepared for, naming its uploaded `attachment`.
    pub async fn send_attachment(
        &self,
        session: &Session,
        recipient_user_id: &str,
        upload: &PreparedUpload,
        attachment: AttachmentRef,
        caption: &str,
        lifespan: Option<Duration>,
    ) -> Result<pb::Message, SdkError> {
        let content = Content::Attachment {
            caption: Zeroizing::new(caption.as_bytes().to_vec()),
            attachment,
        };
        self.send_content_as(session, recipient_user_id, &upload.parent_id, &content, lifespan)
            .await
    }

    /// Uploads a prepared file for a message, from wherever the server's copy ends (so the same
    /// upload again resumes one that was cut), and returns what the message must carry to open it.
    pub async fn upload_attachment(
        &self,
        session: &Session,
        upload: &PreparedUpload,
        progress: Option<Progress>,
    ) -> Result<AttachmentRef, SdkError> {
        upload_blob(&MessageBlobs(self.api()?), session, upload, progress).await
    }

    /// Downloads and opens a message's attachment into the file `out` (which must not exist),
    /// returning its length. Nothing is left at `out` unless every chunk and the digest check
    /// out: a reordered, truncated, mixed or altered blob is refused.
    pub async fn save_attachment(
        &self,
        session: &Session,
        attachment: &AttachmentRef,
        out: &Path,
        progress: Option<Progress>,
    ) -> Result<u64, SdkError> {
        save_blob(&MessageBlobs(self.api()?), session, attachment, out, progress).await
    }
}

/// Uploads a prepared file to `service`, from wherever the server's copy ends, resuming after
/// transient failures, and returns the reference that opens it.
pub(crate) async fn upload_blob(
    service: &impl BlobService,
    session: &Session,
    upload: &PreparedUpload,
    progress: Option<Progress>,
) -> Result<AttachmentRef, SdkError> {
    let mut stored = service.create(session, upload).await?.stored_length;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match upload_from(service, session, upload, stored, progress.clone()).await {
            Ok(sealed) => return Ok(upload.reference(&sealed)),
            Err(error) if attempt < UPLOAD_ATTEMPTS && resumable(&error) => {
                stored = service.state(session, &upload.attachment_id).await?.stored_length;
            }
            Err(error) => return Err(error),
        }
    }
}

/// One upload stream from `stored` to the end.
async fn upload_from(
    service: &impl BlobService,
    session: &Session,
    upload: &PreparedUpload,
    stored: u64,
    progress: Option<Progress>,
) -> Result<Sealed, SdkError> {
    let id = attachment::id_bytes(&upload.attachment_id).map_err(|error| crypto("the attachment id", error))?;
    let file = tokio::fs::File::open(&upload.path)
        .await
        .map_err(|error| local(&format!("cannot open {}", upload.path.display()), error))?;
    let sealed = Arc::new(Mutex::new(None));
    let reader = BlobReader {
        file,
        sealer: Some(Sealer::new(&upload.key, &id).map_err(|error| crypto("encrypting the file", error))?),
        file_len: upload.file_len,
        read: 0,
        produced: 0,
        skip: stored,
        pending: Vec::with_capacity(UPLOAD_PIECE_LEN + CHUNK_LEN),
        pending_start: stored,
        sealed: Arc::clone(&sealed),
    };
    let total = upload.blob_len();
    let failure: Arc<Mutex<Option<SdkError>>> = Arc::default();
    let failed = Arc::clone(&failure);
    let pieces = futures::stream::unfold(reader, move |mut reader| {
        let progress = progress.clone();
        let failed = Arc::clone(&failed);
        async move {
            match reader.next_piece().await {
                Ok(Some((offset, data))) => {
                    if let Some(progress) = &progress {
                        progress(offset + data.len() as u64, total);
                    }
                    Some(((offset, data), reader))
                }
                Ok(None) => None,
                Err(error) => {
                    // Ends the stream early; the error is reported instead of the answer.
                    if let Ok(mut slot) = failed.lock() {
                        *slot = Some(error);
                    }
                    None
                }
            }
        }
    });
    if stored < total {
        let answer = service.upload(session, &upload.attachment_id, pieces.boxed()).await;
        if let Some(error) = failure.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(error);
        }
        let state = answer?;
        if !state.complete {
            return Err(SdkError::Local(format!(
                "the upload stopped at {} of {} bytes",
                state.stored_length, state.blob_length
            )));
        }
    } else {
        // Everything is on the server already: seal once more for the digest.
        let mut pieces = Box::pin(pieces);
        while pieces.next().await.is_some() {}
        if let Some(error) = failure.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(error);
        }
    }
    let sealed = sealed
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
        .ok_or(SdkError::Protocol("the file ended before its last chunk"))??;
    if sealed.plaintext_len != upload.file_len {
        return Err(SdkError::Local(format!(
            "{} changed while it was sent: send it again",
            upload.path.display()
        )));
    }
    Ok(sealed)
}

/// Downloads and opens an attachment from `service` into the file `out` (which must not
/// exist), returning its length; see [`Messenger::save_attachment`].
pub(crate) async fn save_blob(
    service: &impl BlobService,
    session: &Session,
    attachment: &AttachmentRef,
    out: &Path,
    progress: Option<Progress>,
) -> Result<u64, SdkError> {
    if out.exists() {
        return Err(SdkError::Local(format!(
            "{} exists: choose another name or directory",
            out.display()
        )));
    }
    let id = attachment::id_bytes(&attachment.attachment_id).map_err(|error| crypto("the attachment id", error))?;
    let key =
        AttachmentKey::from_bytes(attachment.key.as_slice()).map_err(|error| crypto("the attachment key", error))?;
    let mut opener = Opener::new(&key, &id, &attachment.digest).map_err(|error| crypto("opening the file", error))?;
    let partial = partial_path(out);
    let result = async {
        let mut file = new_file(&partial).await?;
        let mut pieces = service.download(session, &attachment.attachment_id).await?;
        let total = attachment::blob_len(attachment.file_len);
        let mut received = 0u64;
        let write_failed = |error: std::io::Error| local(&format!("cannot write {}", partial.display()), error);
        while let Some(piece) = pieces.next().await {
            let (offset, data) = piece?;
            if offset != received {
                return Err(SdkError::Protocol("the server sent the blob out of order"));
            }
            received += data.len() as u64;
            if received > total {
                return Err(crypto(
                    "opening the file",
                    caremesh_crypto::CryptoError::AttachmentDamaged,
                ));
            }
            let plaintext = opener
                .update(&data)
                .map_err(|error| crypto("opening the file", error))?;
            file.write_all(&plaintext).await.map_err(write_failed)?;
            if let Some(progress) = &progress {
                progress(received, total);
            }
        }
        let last = opener.finish().map_err(|error| crypto("opening the file", error))?;
        file.write_all(&last).await.map_err(write_failed)?;
        file.sync_all().await.map_err(write_failed)?;
        drop(file);
        // Renamed into place only when complete: `out` never holds part of a file.
        tokio::fs::rename(&partial, out)
            .await
            .map_err(|error| local(&format!("cannot create {}", out.display()), error))?;
        Ok(attachment.file_len)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

/// Whether an upload that failed this way can go on from the server's stored length.
fn resumable(error: &SdkError) -> bool {
    match error {
        SdkError::Status(status) => {
            crate::is_transient(status)
                || status.code() == tonic::Code::DeadlineExceeded
                || status.code() == tonic::Code::FailedPrecondition
                    && error.reason().as_deref() == Some("BLOB_OFFSET_MISMATCH")
                || std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

/// Creates `path` for writing, readable by its owner only (it will hold health data).
async fn new_file(path: &Path) -> Result<tokio::fs::File, SdkError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(path)
        .await
        .map_err(|error| local(&format!("cannot create {}", path.display()), error))
}

/// A file name from a sender, made safe to create inside a directory: no path separators, no
/// leading dots, no control characters; `fallback` when nothing usable remains.
pub fn safe_file_name(name: &str, fallback: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        fallback.to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_file_names_cannot_escape_the_directory() {
        assert_eq!(safe_file_name("../../etc/passwd", "x"), "_.._etc_passwd");
        assert_eq!(safe_file_name("..", "x"), "x");
        assert_eq!(safe_file_name(".bashrc", "x"), "bashrc");
        assert_eq!(safe_file_name("scan\u{0}.pdf", "x"), "scan_.pdf");
        assert_eq!(safe_file_name("letter.pdf", "x"), "letter.pdf");
        assert_eq!(safe_file_name("", "x"), "x");
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let name = "é".repeat(200);
        let cut = truncate_utf8(&name, 255);
        assert!(cut.len() <= 255 && name.starts_with(&cut));
    }
}
