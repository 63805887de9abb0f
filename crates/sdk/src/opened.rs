//! The plaintexts this device opened or sent, kept apart from the device state in
//! `<profile>.messages`: an append-only file of records, each sealed on its own with AES-256-GCM
//! under the profile's local key. A send rewrites the (small) device state, never this history,
//! so its cost does not grow with the conversation.
//!
//! A record is `nonce (12) || u32be(len) || ciphertext (len)`, whose plaintext is
//! `lp(message_id) u8(op) lp(body)` with op 1 (stored: the message body), 2 (removed: recalled or
//! purged) or 3 (stored: a whole protocol v2 content encoding, for contents that are more than a
//! body, such as a message with an attachment). A
//! record cut short by a crash, or one that does not open, ends the readable part: what came
//! before it stays, the rest is cut off, and new records follow the last good one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zeroize::Zeroizing;

use crate::SdkError;
use crate::messaging::{crypto, local};

const AAD: &[u8] = b"caremesh-sdk-opened-v1";
const STORED: u8 = 1;
const REMOVED: u8 = 2;
const STORED_CONTENT: u8 = 3;

/// What is kept for one message.
#[derive(Clone)]
pub(crate) enum Kept {
    /// A message body (a kind 1 content's body).
    Body(Zeroizing<Vec<u8>>),
    /// A whole content encoding (`docs/protocol.md` §6.6).
    Content(Zeroizing<Vec<u8>>),
}

/// Opened and sent plaintexts by message id.
pub(crate) struct OpenedLog {
    path: PathBuf,
    entries: Mutex<HashMap<String, Kept>>,
    /// Serialises appends (records must not interleave).
    writing: Mutex<()>,
}

impl std::fmt::Debug for OpenedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lp(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), SdkError> {
    let len = u32::try_from(bytes.len()).map_err(|_| SdkError::Local("a message is too large to keep".to_owned()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(len)?;
    *bytes = rest;
    Some(head)
}

fn take_lp<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?);
    take(bytes, usize::try_from(len).ok()?)
}

impl OpenedLog {
    /// Reads `path` (missing: empty) with the local `key`.
    pub(crate) fn load(path: &Path, key: &[u8; 32]) -> Result<Self, SdkError> {
        let mut entries = HashMap::new();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(local(&format!("cannot read {}", path.display()), error)),
        };
        let mut rest = bytes.as_slice();
        let mut good = 0;
        while !rest.is_empty() {
            let Some(record) = Self::next_record(&mut rest, key) else {
                break;
            };
            good = bytes.len() - rest.len();
            let mut fields = record.as_slice();
            let (Some(id), Some(op), Some(body)) = (take_lp(&mut fields), take(&mut fields, 1), take_lp(&mut fields))
            else {
                break;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            match op.first() {
                Some(&STORED) => {
                    entries.insert(id, Kept::Body(Zeroizing::new(body.to_vec())));
                }
                Some(&STORED_CONTENT) => {
                    entries.insert(id, Kept::Content(Zeroizing::new(body.to_vec())));
                }
                _ => {
                    entries.remove(&id);
                }
            }
        }
        if good < bytes.len() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|error| local(&format!("cannot repair {}", path.display()), error))?;
            file.set_len(u64::try_from(good).unwrap_or_default())
                .map_err(|error| local(&format!("cannot repair {}", path.display()), error))?;
        }
        Ok(Self {
            path: path.to_owned(),
            entries: Mutex::new(entries),
            writing: Mutex::new(()),
        })
    }

    fn next_record(rest: &mut &[u8], key: &[u8; 32]) -> Option<Zeroizing<Vec<u8>>> {
        let nonce: [u8; 12] = take(rest, 12)?.try_into().ok()?;
        let len = u32::from_be_bytes(take(rest, 4)?.try_into().ok()?);
        let ciphertext = take(rest, usize::try_from(len).ok()?)?;
        caremesh_crypto::primitives::aes256gcm_open(key, &nonce, AAD, ciphertext)
            .ok()
            .map(Zeroizing::new)
    }

    /// What is kept for `message_id`.
    pub(crate) fn get(&self, message_id: &str) -> Option<Kept> {
        self.entries
            .lock()
            .ok()
            .and_then(|entries| entries.get(message_id).cloned())
    }

    /// Whether anything is kept for `message_id`.
    pub(crate) fn contains(&self, message_id: &str) -> bool {
        self.entries
            .lock()
            .is_ok_and(|entries| entries.contains_key(message_id))
    }

    /// Keeps `body` for `message_id` (appends one record).
    pub(crate) fn insert(&self, key: &[u8; 32], message_id: &str, body: &[u8]) -> Result<(), SdkError> {
        self.append(key, message_id, STORED, body)?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(message_id.to_owned(), Kept::Body(Zeroizing::new(body.to_vec())));
        }
        Ok(())
    }

    /// Keeps a whole content `encoding` for `message_id` (appends one record).
    pub(crate) fn insert_content(&self, key: &[u8; 32], message_id: &str, encoding: &[u8]) -> Result<(), SdkError> {
        self.append(key, message_id, STORED_CONTENT, encoding)?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(message_id.to_owned(), Kept::Content(Zeroizing::new(encoding.to_vec())));
        }
        Ok(())
    }

    /// Forgets `message_id` (recalled); `Ok(false)` when nothing was kept.
    pub(crate) fn remove(&self, key: &[u8; 32], message_id: &str) -> Result<bool, SdkError> {
        if !self.contains(message_id) {
            return Ok(false);
        }
        self.append(key, message_id, REMOVED, &[])?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(message_id);
        }
        Ok(true)
    }

    fn append(&self, key: &[u8; 32], message_id: &str, op: u8, body: &[u8]) -> Result<(), SdkError> {
        let mut plaintext = Zeroizing::new(Vec::with_capacity(body.len() + 64));
        lp(&mut plaintext, message_id.as_bytes())?;
        plaintext.push(op);
        lp(&mut plaintext, body)?;
        let nonce =
            caremesh_crypto::primitives::random_array::<12>().map_err(|error| crypto("generating a nonce", error))?;
        let ciphertext = caremesh_crypto::primitives::aes256gcm_seal(key, &nonce, AAD, &plaintext)
            .map_err(|error| crypto("sealing a kept message", error))?;
        let mut record = Vec::with_capacity(16 + ciphertext.len());
        record.extend_from_slice(nonce.as_slice());
        lp(&mut record, &ciphertext)?;
        let fail = |error: std::io::Error| local(&format!("cannot write {}", self.path.display()), error);
        let _writing = self
            .writing
            .lock()
            .map_err(|_| SdkError::Local("the message store is unusable after an earlier failure".to_owned()))?;
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.path).map_err(fail)?;
        file.write_all(&record).map_err(fail)
    }
}
