//! The plaintext inside a ratchet message or an archive copy (§6.6).

use zeroize::Zeroizing;

use crate::CryptoError;
use crate::encoding::Encoder;
use crate::ids::check_uuid_v7;

/// Label of the content encoding.
pub const CONTENT_LABEL: &str = "caremesh-content-v1";
/// Largest message body (256 KiB − 1 KiB), so a ciphertext with its framing stays within the
/// messaging service's 256 KiB limit.
pub const MAX_MESSAGE_BODY_LEN: usize = 255 * 1024;

/// Longest attachment media type and file name (bytes of UTF-8).
pub const MAX_ATTACHMENT_LABEL_LEN: usize = 255;

/// A file sent with a message (kind 4): everything needed to fetch, check and open its blob
/// (`docs/protocol.md` §13). Only ever inside end-to-end encrypted content.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    /// The attachment id (UUIDv7), also the blob's id on the server.
    pub attachment_id: String,
    /// The attachment key `K`.
    pub key: Zeroizing<[u8; 32]>,
    /// SHA-256 of the blob.
    pub digest: [u8; 32],
    /// The file's length in bytes.
    pub file_len: u64,
    /// The file's media type, e.g. `image/jpeg` (may be empty).
    pub media_type: String,
    /// The file's name as the sender gave it (a reader must not use it as a path).
    pub file_name: String,
}

impl std::fmt::Debug for AttachmentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentRef")
            .field("attachment_id", &self.attachment_id)
            .field("file_len", &self.file_len)
            .finish_non_exhaustive()
    }
}

/// What a decrypted message carries.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    /// A message for the user (kind 1).
    Message(Zeroizing<Vec<u8>>),
    /// A new history key for the user's own devices (kind 2).
    HistoryKey {
        /// The key's id.
        history_key_id: String,
        /// The key.
        key: Zeroizing<[u8; 32]>,
    },
    /// The sender started a new session after losing one (kind 3).
    SessionReset,
    /// A message with a file (kind 4): a caption and the attachment.
    Attachment {
        /// Text shown with the file (may be empty).
        caption: Zeroizing<Vec<u8>>,
        attachment: AttachmentRef,
    },
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(body) => write!(f, "Message({} bytes)", body.len()),
            Self::HistoryKey { history_key_id, .. } => write!(f, "HistoryKey({history_key_id})"),
            Self::SessionReset => f.write_str("SessionReset"),
            Self::Attachment { attachment, .. } => write!(f, "Attachment({})", attachment.attachment_id),
        }
    }
}

impl Content {
    /// The kind number.
    pub fn kind(&self) -> u32 {
        match self {
            Self::Message(_) => 1,
            Self::HistoryKey { .. } => 2,
            Self::SessionReset => 3,
            Self::Attachment { .. } => 4,
        }
    }

    /// `PLAINTEXT = lp(label) u32be(kind) lp(body)`.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let body: Zeroizing<Vec<u8>> = match self {
            Self::Message(body) => {
                if body.len() > MAX_MESSAGE_BODY_LEN {
                    return Err(CryptoError::PlaintextTooLarge {
                        len: body.len(),
                        max: MAX_MESSAGE_BODY_LEN,
                    });
                }
                body.clone()
            }
            Self::HistoryKey { history_key_id, key } => {
                let mut inner = Encoder::new_unlabelled();
                inner.field(history_key_id.as_bytes())?.field(key.as_slice())?;
                Zeroizing::new(inner.finish())
            }
            Self::SessionReset => Zeroizing::new(Vec::new()),
            Self::Attachment { caption, attachment } => {
                check_caption(caption.len())?;
                check_uuid_v7(&attachment.attachment_id, "attachment id")?;
                check_label(&attachment.media_type)?;
                check_label(&attachment.file_name)?;
                let mut inner = Encoder::new_unlabelled();
                inner
                    .field(caption)?
                    .field(attachment.attachment_id.as_bytes())?
                    .field(attachment.key.as_slice())?
                    .field(&attachment.digest)?;
                inner
                    .raw(&attachment.file_len.to_be_bytes())
                    .field(attachment.media_type.as_bytes())?
                    .field(attachment.file_name.as_bytes())?;
                Zeroizing::new(inner.finish())
            }
        };
        let mut encoder = Encoder::new(CONTENT_LABEL)?;
        encoder.u32(self.kind()).field(&body)?;
        Ok(Zeroizing::new(encoder.finish()))
    }

    /// Parses a decrypted plaintext.
    pub fn decode(plaintext: &[u8]) -> Result<Self, CryptoError> {
        let bad = || CryptoError::MalformedEnvelope("the decrypted content is not a caremesh-content-v1 encoding");
        let mut reader = crate::encoding::Reader::new(plaintext);
        if reader.field().ok_or_else(bad)? != CONTENT_LABEL.as_bytes() {
            return Err(bad());
        }
        let kind = reader.u32().ok_or_else(bad)?;
        let body = reader.field().ok_or_else(bad)?;
        if !reader.is_empty() {
            return Err(bad());
        }
        match kind {
            1 if body.len() <= MAX_MESSAGE_BODY_LEN => Ok(Self::Message(Zeroizing::new(body.to_vec()))),
            1 => Err(CryptoError::PlaintextTooLarge {
                len: body.len(),
                max: MAX_MESSAGE_BODY_LEN,
            }),
            2 => {
                let mut inner = crate::encoding::Reader::new(body);
                let id = inner.field().ok_or_else(bad)?;
                let key = inner.field().ok_or_else(bad)?;
                if !inner.is_empty() {
                    return Err(bad());
                }
                let history_key_id = std::str::from_utf8(id).map_err(|_| bad())?.to_owned();
                check_uuid_v7(&history_key_id, "history key id")?;
                let key: [u8; 32] = key.try_into().map_err(|_| bad())?;
                Ok(Self::HistoryKey {
                    history_key_id,
                    key: Zeroizing::new(key),
                })
            }
            3 if body.is_empty() => Ok(Self::SessionReset),
            4 => {
                let mut inner = crate::encoding::Reader::new(body);
                let caption = inner.field().ok_or_else(bad)?;
                let id = inner.field().ok_or_else(bad)?;
                let key = inner.field().ok_or_else(bad)?;
                let digest = inner.field().ok_or_else(bad)?;
                let file_len = inner.u64().ok_or_else(bad)?;
                let media_type = inner.field().ok_or_else(bad)?;
                let file_name = inner.field().ok_or_else(bad)?;
                if !inner.is_empty() {
                    return Err(bad());
                }
                check_caption(caption.len())?;
                let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| bad());
                let attachment = AttachmentRef {
                    attachment_id: text(id)?,
                    key: Zeroizing::new(key.try_into().map_err(|_| bad())?),
                    digest: digest.try_into().map_err(|_| bad())?,
                    file_len,
                    media_type: text(media_type)?,
                    file_name: text(file_name)?,
                };
                check_uuid_v7(&attachment.attachment_id, "attachment id")?;
                check_label(&attachment.media_type)?;
                check_label(&attachment.file_name)?;
                Ok(Self::Attachment {
                    caption: Zeroizing::new(caption.to_vec()),
                    attachment,
                })
            }
            _ => Err(CryptoError::MalformedEnvelope("unknown content kind")),
        }
    }
}

fn check_caption(len: usize) -> Result<(), CryptoError> {
    if len > MAX_MESSAGE_BODY_LEN {
        return Err(CryptoError::PlaintextTooLarge {
            len,
            max: MAX_MESSAGE_BODY_LEN,
        });
    }
    Ok(())
}

fn check_label(value: &str) -> Result<(), CryptoError> {
    if value.len() > MAX_ATTACHMENT_LABEL_LEN || value.chars().any(char::is_control) {
        return Err(CryptoError::MalformedEnvelope(
            "an attachment's media type and file name must be at most 255 bytes of UTF-8 without control characters",
        ));
    }
    Ok(())
}
