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
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(body) => write!(f, "Message({} bytes)", body.len()),
            Self::HistoryKey { history_key_id, .. } => write!(f, "HistoryKey({history_key_id})"),
            Self::SessionReset => f.write_str("SessionReset"),
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
            _ => Err(CryptoError::MalformedEnvelope("unknown content kind")),
        }
    }
}
