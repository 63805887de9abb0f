//! End-to-end encrypted direct messages from the client side. A [`Messenger`] is one device of
//! the signed-in user: it holds the account identity ([`DeviceKeys`], shared by the user's
//! devices), the protocol v2 device state ([`crate::devices`]: device keys, Double Ratchet
//! sessions, history keys, known device lists), the pinned identities of contacts
//! ([`TrustStore`]) and the messages it has opened, persisted next to the profile's session in
//! one file sealed with AES-256-GCM under a local key file (both 0600).
//!
//! - Keys: the first device creates the identity and publishes it (the v1 key bundle, kept
//!   topped up by [`Messenger::maintain_keys`]); every device publishes its own v2 device keys
//!   and keeps its one-time prekeys topped up ([`crate::devices`]). Further devices are linked
//!   ([`Messenger::link`], [`Messenger::approve_link`]).
//! - Sending: protocol v2 fan-out ([`crate::sesame`]); a changed contact identity is refused
//!   until [`Messenger::accept_identity`].
//! - Reading: v2 messages open with this device's ciphertext or the archive copy; v1 envelopes
//!   (sent before v2) still open on the device that received them. What was opened is kept
//!   locally, since a ratchet message key works once.
//!
//! The server only ever sees ciphertext.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caremesh_crypto::v2::AttachmentRef;
use caremesh_crypto::{DeviceKeys, IdentityPublicKey, MessageContext, TrustCheck, TrustStore, open, verify_identity};
use caremesh_proto::messaging::v1 as pb;
use caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient;
use caremesh_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::auth::Session;
use crate::{Client, SdkError, ServiceName};

/// One-time prekeys published at first and per top-up.
pub const PREKEY_BATCH: usize = 100;
/// How old the signed prekey may get before it is rotated.
pub const SIGNED_PREKEY_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// What the device keeps between runs.
#[derive(Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) keys: DeviceKeys,
    pub(crate) trust: TrustStore,
    /// Plaintexts opened before they moved to [`crate::opened`] (hex, by message id): moved
    /// there when the state is loaded, and empty from then on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) opened: BTreeMap<String, String>,
    /// Attribute (ABE) keys issued to this device, newest last.
    #[serde(default)]
    pub(crate) attribute_keys: Vec<crate::abe::StoredAttributeKey>,
    /// Protocol v2: this device's keys, sessions, history keys and known device lists. A state
    /// file written before v2 has none; opening it makes this the user's first device.
    #[serde(default)]
    pub(crate) device: Option<crate::devices::DeviceState>,
}

/// A message with its content opened (or why not).
#[derive(Clone, Debug)]
pub struct Opened {
    pub message: pb::Message,
    pub content: Content,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// The decrypted body.
    Plain(Vec<u8>),
    /// A message with a file: its caption, and what fetches, checks and opens the file
    /// ([`Messenger::save_attachment`]).
    Attachment {
        caption: Vec<u8>,
        attachment: AttachmentRef,
    },
    /// The sender recalled it: the ciphertext is gone.
    Recalled,
    /// It could not be opened here (reason for a person).
    Unreadable(String),
    /// Protocol v2 bookkeeping between devices (a new history key, a new session), not for the
    /// user to read; says what it was.
    Control(String),
}

impl Content {
    /// The body as text (lossy), or a marker.
    pub fn text(&self) -> String {
        match self {
            Content::Plain(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Content::Attachment { caption, attachment } => {
                let caption = String::from_utf8_lossy(caption);
                let file = format!(
                    "[attachment {}: {}, {} bytes{}]",
                    attachment.attachment_id,
                    attachment.file_name,
                    attachment.file_len,
                    if attachment.media_type.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", attachment.media_type)
                    }
                );
                if caption.is_empty() {
                    file
                } else {
                    format!("{caption} {file}")
                }
            }
            Content::Recalled => "(recalled)".to_owned(),
            Content::Unreadable(why) => format!("(cannot open: {why})"),
            Content::Control(what) => format!("({what})"),
        }
    }
}

/// What the local store kept for a message, as content.
fn kept_content(kept: crate::opened::Kept) -> Result<Content, SdkError> {
    match kept {
        crate::opened::Kept::Body(body) => Ok(Content::Plain(body.to_vec())),
        crate::opened::Kept::Content(encoding) => {
            match caremesh_crypto::v2::Content::decode(&encoding)
                .map_err(|error| crypto("reading a kept message", error))?
            {
                caremesh_crypto::v2::Content::Message(body) => Ok(Content::Plain(body.to_vec())),
                caremesh_crypto::v2::Content::Attachment { caption, attachment } => Ok(Content::Attachment {
                    caption: caption.to_vec(),
                    attachment,
                }),
                _ => Err(SdkError::Protocol("a kept message of a kind that is not for the user")),
            }
        }
    }
}

/// A contact's identity as this device sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactIdentity {
    pub user_id: String,
    pub identity_key_id: String,
    /// 60 digits in groups of 5, the same on both sides.
    pub safety_number: String,
    /// `first use` (now pinned), `trusted` (matches the pinned one) or `changed`.
    pub trust: &'static str,
}

/// How long the write of an opened message's plaintext (and of the spent one-time prekey's
/// deletion) may wait, so that a burst of opened messages is written once, not once per message
/// (each write re-seals the whole state). Whatever the device state on disk is, it is consistent:
/// before such a write the spent prekey's secret is still there and the message opens again from
/// the server's copy; after it, the plaintext is there and the secret is gone.
pub const OPENED_WRITE_DELAY: Duration = Duration::from_millis(200);

/// The device state's files, and the bookkeeping of deferred writes.
struct Disk {
    state_path: PathBuf,
    key_path: PathBuf,
    /// The local key, once read or created (the file is not read again for every write).
    key: Mutex<Option<Zeroizing<[u8; 32]>>>,
    /// Held while writing: writers share one temporary file name.
    writing: Mutex<()>,
    /// Changes not written yet.
    dirty: AtomicBool,
    /// A deferred write is scheduled.
    scheduled: AtomicBool,
}

/// This device's messaging state for one signed-in user.
pub struct Messenger {
    pub(crate) client: Client,
    user_id: String,
    disk: Arc<Disk>,
    state: Arc<Mutex<State>>,
    identities: Mutex<HashMap<(String, String), IdentityPublicKey>>,
    /// Contacts' (and our own) trusted identity and verified device list, as last fetched: sends
    /// use them until the server says a list changed (Sesame), so a send costs no directory
    /// round trips.
    pub(crate) contacts: Mutex<HashMap<String, crate::devices::KnownDevices>>,
    /// The plaintexts this device opened or sent (`<profile>.messages`).
    pub(crate) opened: crate::opened::OpenedLog,
    /// The ABE public parameters and their version, fetched on first use.
    pub(crate) abe_params: Mutex<Option<crate::abe::CachedParams>>,
    /// Attribute keys already parsed (and point-checked), by key id.
    pub(crate) parsed_keys: Mutex<HashMap<String, std::sync::Arc<caremesh_abe::UserKey>>>,
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("user_id", &self.user_id)
            .field("state_path", &self.disk.state_path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn local(what: &str, error: impl std::fmt::Display) -> SdkError {
    SdkError::Local(format!("{what}: {error}"))
}

pub(crate) fn crypto(what: &str, error: caremesh_crypto::CryptoError) -> SdkError {
    SdkError::Local(format!("{what}: {error}"))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SdkError> {
    let fail = |error: std::io::Error| local(&format!("cannot write {}", path.display()), error);
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(fail)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    // No fsync: the file is replaced atomically, and losing the newest write in a crash loses
    // nothing that matters (a spent one-time prekey secret is deleted a little later; a message
    // opened just before is opened again from the server's copy with the still-present secret).
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Seals the state under the local key (read once, or created on first use) and replaces the
/// state file.
fn write_state(state: &Mutex<State>, disk: &Disk) -> Result<(), SdkError> {
    let _writing = disk
        .writing
        .lock()
        .map_err(|_| SdkError::Local("device state is unusable after an earlier failure".to_owned()))?;
    // Cleared before the snapshot: a change made after it marks the state dirty again.
    disk.dirty.store(false, Ordering::SeqCst);
    let json = {
        let state = state
            .lock()
            .map_err(|_| SdkError::Local("device state is unusable after an earlier failure".to_owned()))?;
        Zeroizing::new(serde_json::to_vec(&*state).map_err(|error| local("serializing device state", error))?)
    };
    let result = seal_and_write(&json, disk);
    if result.is_err() {
        disk.dirty.store(true, Ordering::SeqCst);
    }
    result
}

/// The profile's local key: read once from the key file, or created there on first use.
fn local_key(disk: &Disk) -> Result<Zeroizing<[u8; 32]>, SdkError> {
    let mut cached = disk
        .key
        .lock()
        .map_err(|_| SdkError::Local("device state is unusable after an earlier failure".to_owned()))?;
    let key = match cached.as_ref() {
        Some(key) => key.clone(),
        None => {
            let key = match std::fs::read(&disk.key_path) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    let key: [u8; 32] = bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| SdkError::Local(format!("{} is not a 32-byte key", disk.key_path.display())))?;
                    Zeroizing::new(key)
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let key = caremesh_crypto::primitives::random_array::<32>()
                        .map_err(|error| crypto("generating a local key", error))?;
                    write_private(&disk.key_path, key.as_slice())?;
                    key
                }
                Err(error) => return Err(local(&format!("cannot read {}", disk.key_path.display()), error)),
            };
            *cached = Some(key.clone());
            key
        }
    };
    Ok(key)
}

fn seal_and_write(json: &[u8], disk: &Disk) -> Result<(), SdkError> {
    let key = local_key(disk)?;
    let nonce =
        caremesh_crypto::primitives::random_array::<12>().map_err(|error| crypto("generating a nonce", error))?;
    let ciphertext = caremesh_crypto::primitives::aes256gcm_seal(&key, &nonce, b"caremesh-sdk-device-state-v1", json)
        .map_err(|error| crypto("sealing device state", error))?;
    let mut file = nonce.to_vec();
    file.extend_from_slice(&ciphertext);
    write_private(&disk.state_path, &file)
}

impl Drop for Messenger {
    fn drop(&mut self) {
        // Deferred changes are written before the state goes away.
        let _ = self.flush();
    }
}

impl Messenger {
    /// Loads this profile's device keys from `dir` (or generates them on first use) and makes
    /// sure the key directory has them (publishing, topping up, rotating as needed).
    pub async fn open(client: Client, dir: &Path, profile: &str, session: &Session) -> Result<Self, SdkError> {
        let state_path = dir.join(format!("{profile}.messaging"));
        let key_path = dir.join(format!("{profile}.messaging.key"));
        let state = match Self::load(&state_path, &key_path)? {
            Some(state) if state.keys.user_id() == session.user_id => state,
            Some(_) => {
                return Err(SdkError::Local(format!(
                    "{} holds another user's device keys: use another profile",
                    state_path.display()
                )));
            }
            None => State {
                keys: DeviceKeys::generate(&session.user_id)
                    .map_err(|error| crypto("generating device keys", error))?,
                trust: TrustStore::new(),
                opened: BTreeMap::new(),
                attribute_keys: Vec::new(),
                device: None,
            },
        };
        Self::start(client, dir, profile, session, state).await
    }

    /// Makes a messenger of loaded (or new) state: a state without protocol v2 device keys
    /// becomes the user's first device; then the key directory is brought up to date and sends
    /// that were saved but may not have left the device are sent again.
    pub(crate) async fn start(
        client: Client,
        dir: &Path,
        profile: &str,
        session: &Session,
        mut state: State,
    ) -> Result<Self, SdkError> {
        let state_path = dir.join(format!("{profile}.messaging"));
        let key_path = dir.join(format!("{profile}.messaging.key"));
        if state.device.is_none() {
            state.device = Some(crate::devices::DeviceState::new_primary()?);
        }
        let primary = state.device.as_ref().is_some_and(|device| device.primary);
        let disk = Arc::new(Disk {
            state_path,
            key_path,
            key: Mutex::new(None),
            writing: Mutex::new(()),
            dirty: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
        });
        let key = local_key(&disk)?;
        let opened = crate::opened::OpenedLog::load(&dir.join(format!("{profile}.messages")), &key)?;
        // Plaintexts from before the separate store move there (then the state drops them).
        for (message_id, hex_text) in std::mem::take(&mut state.opened) {
            let body = hex::decode(&hex_text).map_err(|error| local("stored message", error))?;
            opened.insert(&key, &message_id, &body)?;
        }
        let messenger = Self {
            client,
            user_id: session.user_id.clone(),
            disk,
            state: Arc::new(Mutex::new(state)),
            identities: Mutex::new(HashMap::new()),
            contacts: Mutex::new(HashMap::new()),
            opened,
            abe_params: Mutex::new(None),
            parsed_keys: Mutex::new(HashMap::new()),
        };
        messenger.persist()?;
        if primary {
            messenger.maintain_keys(session).await?;
        }
        messenger.maintain_device(session).await?;
        messenger.resend_pending(session).await?;
        Ok(messenger)
    }

    /// Whether `profile` in `dir` holds a device already.
    pub fn has_device(dir: &Path, profile: &str) -> bool {
        dir.join(format!("{profile}.messaging")).exists()
    }

    /// The user's published account identity, verified, or `None` when there is none.
    pub async fn published_identity(client: &Client, session: &Session) -> Result<Option<IdentityPublicKey>, SdkError> {
        let mut api = KeyDirectoryServiceClient::new(client.require(ServiceName::Messaging)?);
        let response = api
            .get_identity_key(session.request(pb::GetIdentityKeyRequest {
                user_id: session.user_id.clone(),
                key_id: String::new(),
            })?)
            .await;
        let identity = match response {
            Ok(response) => response.into_inner().identity_key,
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(status.into()),
        };
        let identity = identity.ok_or(SdkError::Protocol("no identity key in the answer"))?;
        verify_identity(&identity, &session.user_id)
            .map(Some)
            .map_err(|error| crypto("your published identity key", error))
    }

    fn load(state_path: &Path, key_path: &Path) -> Result<Option<State>, SdkError> {
        let sealed = match std::fs::read(state_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(local(&format!("cannot read {}", state_path.display()), error)),
        };
        let key = Zeroizing::new(
            std::fs::read(key_path).map_err(|error| local(&format!("cannot read {}", key_path.display()), error))?,
        );
        let key: &[u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| SdkError::Local(format!("{} is not a 32-byte key", key_path.display())))?;
        let (nonce, ciphertext) = sealed
            .split_at_checked(12)
            .ok_or_else(|| SdkError::Local(format!("{} is truncated", state_path.display())))?;
        let nonce: &[u8; 12] = nonce
            .try_into()
            .map_err(|_| SdkError::Local(format!("{} is truncated", state_path.display())))?;
        let json = Zeroizing::new(
            caremesh_crypto::primitives::aes256gcm_open(key, nonce, b"caremesh-sdk-device-state-v1", ciphertext)
                .map_err(|_| {
                    SdkError::Local(format!(
                        "{} does not open with {}: the files do not belong together",
                        state_path.display(),
                        key_path.display()
                    ))
                })?,
        );
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|error| local(&format!("{} is not device state", state_path.display()), error))
    }

    /// The profile's local key (read once, or created on first use).
    pub(crate) fn local_key(&self) -> Result<Zeroizing<[u8; 32]>, SdkError> {
        local_key(&self.disk)
    }

    /// Writes the state now (sealed under the local key, created on first use).
    pub(crate) fn persist(&self) -> Result<(), SdkError> {
        write_state(&self.state, &self.disk)
    }

    /// Writes the state within [`OPENED_WRITE_DELAY`] (at once outside a tokio runtime), once
    /// for all changes made until then. Only for changes whose loss in a crash loses nothing
    /// (see [`OPENED_WRITE_DELAY`]); everything else is written with [`Self::persist`].
    pub(crate) fn persist_soon(&self) -> Result<(), SdkError> {
        self.disk.dirty.store(true, Ordering::SeqCst);
        if self.disk.scheduled.swap(true, Ordering::SeqCst) {
            return Ok(()); // the scheduled write will include this change
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.disk.scheduled.store(false, Ordering::SeqCst);
            return self.persist();
        };
        let state = Arc::clone(&self.state);
        let disk = Arc::clone(&self.disk);
        runtime.spawn(async move {
            tokio::time::sleep(OPENED_WRITE_DELAY).await;
            disk.scheduled.store(false, Ordering::SeqCst);
            if disk.dirty.load(Ordering::SeqCst) {
                // A failure leaves the change unwritten: the next write (or the drop) retries.
                let _ = tokio::task::spawn_blocking(move || write_state(&state, &disk)).await;
            }
        });
        Ok(())
    }

    /// Writes any deferred changes now.
    pub fn flush(&self) -> Result<(), SdkError> {
        if self.disk.dirty.load(Ordering::SeqCst) {
            self.persist()?;
        }
        Ok(())
    }

    pub(crate) fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, SdkError> {
        self.state
            .lock()
            .map_err(|_| SdkError::Local("device state is unusable after an earlier failure".to_owned()))
    }

    pub(crate) fn keys_api(&self) -> Result<KeyDirectoryServiceClient<Channel>, SdkError> {
        Ok(KeyDirectoryServiceClient::new(
            self.client.require(ServiceName::Messaging)?,
        ))
    }

    pub(crate) fn api(&self) -> Result<MessagingServiceClient<Channel>, SdkError> {
        Ok(MessagingServiceClient::new(
            self.client.require(ServiceName::Messaging)?,
        ))
    }

    /// This user's id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Publishes the keys if the directory lacks them (or has another identity), tops up one-time
    /// prekeys below the server's watermark, rotates the signed prekey after a week.
    pub async fn maintain_keys(&self, session: &Session) -> Result<(), SdkError> {
        let stock = self
            .keys_api()?
            .get_prekey_stock(session.request(pb::GetPrekeyStockRequest {})?)
            .await;
        let own_identity = self.lock()?.keys.identity().key_id().to_owned();
        let stock = match stock {
            Ok(stock) => Some(stock.into_inner()),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => None,
            Err(status) => return Err(status.into()),
        };
        match stock {
            Some(stock) if stock.identity_key_id == own_identity => {
                if stock.one_time_prekey_count < stock.low_watermark.max(1) {
                    let request = self
                        .lock()?
                        .keys
                        .top_up_request(PREKEY_BATCH)
                        .map_err(|error| crypto("one-time prekeys", error))?;
                    self.persist()?;
                    self.keys_api()?
                        .upload_one_time_prekeys(session.request(request)?)
                        .await?;
                }
                let created = stock
                    .signed_prekey_create_time
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0));
                if created.is_some_and(|created| chrono::Utc::now() - created > SIGNED_PREKEY_MAX_AGE) {
                    let request = {
                        let mut state = self.lock()?;
                        state
                            .keys
                            .rotate_signed_prekey()
                            .map_err(|error| crypto("rotating the signed prekey", error))?
                    };
                    self.persist()?;
                    self.keys_api()?.rotate_signed_prekey(session.request(request)?).await?;
                }
            }
            _ => {
                let request = self
                    .lock()?
                    .keys
                    .publish_request(PREKEY_BATCH)
                    .map_err(|error| crypto("publishing keys", error))?;
                self.persist()?;
                self.keys_api()?.publish_key_bundle(session.request(request)?).await?;
            }
        }
        Ok(())
    }

    /// Fetches and verifies `user_id`'s current identity (without pinning it).
    pub(crate) async fn current_identity(
        &self,
        session: &Session,
        user_id: &str,
    ) -> Result<IdentityPublicKey, SdkError> {
        let response = self
            .keys_api()?
            .get_identity_key(session.request(pb::GetIdentityKeyRequest {
                user_id: user_id.to_owned(),
                key_id: String::new(),
            })?)
            .await?
            .into_inner();
        let identity = response
            .identity_key
            .ok_or(SdkError::Protocol("no identity key in the answer"))?;
        verify_identity(&identity, user_id).map_err(|error| crypto("the contact's identity key", error))
    }

    /// Sends `plaintext` to `recipient_user_id` with protocol v2: one ciphertext per device of
    /// the recipient and per other device of this user, and an archive copy (see
    /// [`crate::sesame`]). Refused while the recipient's identity differs from the pinned one.
    pub async fn send(
        &self,
        session: &Session,
        recipient_user_id: &str,
        plaintext: &[u8],
        lifespan: Option<Duration>,
    ) -> Result<pb::Message, SdkError> {
        let content = caremesh_crypto::v2::Content::Message(Zeroizing::new(plaintext.to_vec()));
        self.send_content(session, recipient_user_id, &content, lifespan).await
    }

    /// Sends a sealed message, retrying once with the very same request when messaging-svc is
    /// unavailable (sending is idempotent by message id).
    pub(crate) async fn submit(
        &self,
        session: &Session,
        request: pb::SendMessageRequest,
    ) -> Result<pb::Message, SdkError> {
        let mut api = self.api()?;
        let response = match api.send_message(session.request(request.clone())?).await {
            Ok(response) => response,
            Err(status) if crate::is_transient(&status) => api.send_message(session.request(request)?).await?,
            Err(status) => return Err(status.into()),
        };
        response
            .into_inner()
            .message
            .ok_or(SdkError::Protocol("no message in the answer"))
    }

    /// The sender's identity for an envelope: our own, or fetched by key id, verified and checked
    /// against the pinned one.
    pub(crate) async fn sender_identity(
        &self,
        session: &Session,
        sender: &str,
        key_id: &str,
    ) -> Result<IdentityPublicKey, SdkError> {
        if sender == self.user_id {
            return Ok(self.lock()?.keys.identity().public());
        }
        let cached = self
            .identities
            .lock()
            .ok()
            .and_then(|cache| cache.get(&(sender.to_owned(), key_id.to_owned())).cloned());
        let identity = match cached {
            Some(identity) => identity,
            None => {
                let response = self
                    .keys_api()?
                    .get_identity_key(session.request(pb::GetIdentityKeyRequest {
                        user_id: sender.to_owned(),
                        key_id: key_id.to_owned(),
                    })?)
                    .await?
                    .into_inner();
                let identity = response
                    .identity_key
                    .ok_or(SdkError::Protocol("no identity key in the answer"))?;
                let identity =
                    verify_identity(&identity, sender).map_err(|error| crypto("the sender's identity key", error))?;
                if let Ok(mut cache) = self.identities.lock() {
                    cache.insert((sender.to_owned(), key_id.to_owned()), identity.clone());
                }
                identity
            }
        };
        let check = self.lock()?.trust.check(sender, &identity);
        match check {
            TrustCheck::Changed { .. } => Err(identity_changed(sender)),
            TrustCheck::FirstUse => {
                self.persist()?;
                Ok(identity)
            }
            TrustCheck::Trusted => Ok(identity),
        }
    }

    /// Opens one message (from the local store when it was opened before).
    pub async fn open_message(&self, session: &Session, message: &pb::Message) -> Result<Opened, SdkError> {
        let content = self.content(session, message).await?;
        Ok(Opened {
            message: message.clone(),
            content,
        })
    }

    async fn content(&self, session: &Session, message: &pb::Message) -> Result<Content, SdkError> {
        if message.state() == pb::MessageState::Recalled {
            self.opened.remove(&*self.local_key()?, &message.message_id)?;
            return Ok(Content::Recalled);
        }
        if let Some(kept) = self.opened.get(&message.message_id) {
            return kept_content(kept);
        }
        if message.kind() == pb::MessageKind::Group {
            let plaintext = self.open_group(session, message).await?;
            return Ok(Content::Plain(plaintext.to_vec()));
        }
        if message.protocol_version == 2 {
            return self.open_v2(session, message).await;
        }
        let envelope = message
            .envelope
            .as_ref()
            .ok_or(SdkError::Protocol("the message has no envelope for you"))?;
        let sender = self
            .sender_identity(session, &message.sender_user_id, &envelope.sender_identity_key_id)
            .await?;
        let context = MessageContext {
            sender_user_id: &message.sender_user_id,
            recipient_user_id: &message.recipient_user_id,
            message_id: &message.message_id,
        };
        let (plaintext, spent) = {
            let mut state = self.lock()?;
            let plaintext = open(&mut state.keys, &sender, &context, envelope)
                .map_err(|error| crypto("opening the message", error))?;
            // Envelopes sealed to a one-time prekey open only once: keep those. Our own copies
            // and envelopes without one open again, so they need not be stored.
            let spent = !envelope.recipient_one_time_prekey_id.is_empty();
            (plaintext, spent)
        };
        if spent {
            self.opened
                .insert(&*self.local_key()?, &message.message_id, &plaintext)?;
        }
        if spent {
            self.persist_soon()?;
        }
        Ok(Content::Plain(plaintext))
    }

    async fn open_all(&self, session: &Session, messages: Vec<pb::Message>) -> Vec<Opened> {
        let mut opened = Vec::with_capacity(messages.len());
        for message in messages {
            let content = match self.content(session, &message).await {
                Ok(content) => content,
                Err(error) => Content::Unreadable(error.to_string()),
            };
            opened.push(Opened { message, content });
        }
        opened
    }

    /// One message this user sent or received, opened.
    pub async fn get(&self, session: &Session, message_id: &str) -> Result<Opened, SdkError> {
        let message = self
            .api()?
            .get_message(session.request(pb::GetMessageRequest {
                message_id: message_id.to_owned(),
                device_id: self.device_id()?,
            })?)
            .await?
            .into_inner()
            .message
            .ok_or(SdkError::Protocol("no message in the answer"))?;
        self.open_message(session, &message).await
    }

    /// One page of the inbox, opened.
    pub async fn inbox(
        &self,
        session: &Session,
        mut request: pb::ListInboxRequest,
    ) -> Result<(Vec<Opened>, String), SdkError> {
        if request.device_id.is_empty() {
            request.device_id = self.device_id()?;
        }
        let response = self.api()?.list_inbox(session.request(request)?).await?.into_inner();
        Ok((
            self.open_all(session, response.messages).await,
            response.next_page_token,
        ))
    }

    /// A whole conversation (all pages), opened. `target` is a peer's user id or a conversation id.
    pub async fn history(
        &self,
        session: &Session,
        target: pb::list_conversation_messages_request::Target,
        order: pb::SortOrder,
    ) -> Result<Vec<Opened>, SdkError> {
        let mut messages = Vec::new();
        let mut page_token = String::new();
        let device_id = self.device_id()?;
        loop {
            let response = self
                .api()?
                .list_conversation_messages(session.request(pb::ListConversationMessagesRequest {
                    target: Some(target.clone()),
                    page_size: 500,
                    page_token,
                    order: order.into(),
                    device_id: device_id.clone(),
                })?)
                .await?
                .into_inner();
            messages.extend(response.messages);
            if response.next_page_token.is_empty() {
                break;
            }
            page_token = response.next_page_token;
        }
        Ok(self.open_all(session, messages).await)
    }

    /// The conversations, most recent first (first page of up to 500).
    pub async fn conversations(&self, session: &Session) -> Result<Vec<pb::Conversation>, SdkError> {
        Ok(self
            .api()?
            .list_conversations(session.request(pb::ListConversationsRequest {
                page_size: 500,
                page_token: String::new(),
            })?)
            .await?
            .into_inner()
            .conversations)
    }

    /// Follows live delivery after `cursor` (empty: from now on). Open each item with
    /// [`Messenger::open_message`] and keep its cursor to resume.
    pub async fn watch(
        &self,
        session: &Session,
        cursor: &str,
    ) -> Result<tonic::Streaming<pb::SubscribeResponse>, SdkError> {
        Ok(self
            .api()?
            .subscribe(session.request(pb::SubscribeRequest {
                cursor: cursor.to_owned(),
                device_id: self.device_id()?,
            })?)
            .await?
            .into_inner())
    }

    /// Sends delivered (or read) receipts; returns how many changed.
    pub async fn receipts(&self, session: &Session, message_ids: Vec<String>, read: bool) -> Result<u32, SdkError> {
        let kind = if read {
            pb::ReceiptType::Read
        } else {
            pb::ReceiptType::Delivered
        };
        Ok(self
            .api()?
            .send_receipts(session.request(pb::SendReceiptsRequest {
                message_ids,
                r#type: kind.into(),
            })?)
            .await?
            .into_inner()
            .updated)
    }

    /// Recalls a message this user sent.
    pub async fn recall(&self, session: &Session, message_id: &str) -> Result<pb::Message, SdkError> {
        let message = self
            .api()?
            .recall_message(session.request(pb::RecallMessageRequest {
                message_id: message_id.to_owned(),
            })?)
            .await?
            .into_inner()
            .message
            .ok_or(SdkError::Protocol("no message in the answer"))?;
        self.opened.remove(&*self.local_key()?, message_id)?;
        Ok(message)
    }

    /// The safety number with `user_id` and how their current identity compares with the pinned
    /// one (pinning it when there was none).
    pub async fn contact(&self, session: &Session, user_id: &str) -> Result<ContactIdentity, SdkError> {
        let theirs = self.current_identity(session, user_id).await?;
        let (check, mine) = {
            let mut state = self.lock()?;
            (state.trust.check(user_id, &theirs), state.keys.identity().public())
        };
        self.persist()?;
        Ok(ContactIdentity {
            user_id: user_id.to_owned(),
            identity_key_id: theirs.key_id().to_owned(),
            safety_number: caremesh_crypto::safety_number(&self.user_id, &mine, user_id, &theirs),
            trust: match check {
                TrustCheck::FirstUse => "first use",
                TrustCheck::Trusted => "trusted",
                TrustCheck::Changed { .. } => "changed",
            },
        })
    }

    /// Accepts `user_id`'s current identity (after comparing safety numbers).
    pub async fn accept_identity(&self, session: &Session, user_id: &str) -> Result<ContactIdentity, SdkError> {
        let theirs = self.current_identity(session, user_id).await?;
        self.forget_contact(user_id);
        self.lock()?.trust.accept_new(user_id, &theirs);
        self.persist()?;
        self.contact(session, user_id).await
    }
}

pub(crate) fn identity_changed(user_id: &str) -> SdkError {
    SdkError::Local(format!(
        "the identity key of {user_id} changed since you last talked: compare safety numbers \
         (`carectl contacts verify {user_id}`) and accept the new key (`--accept`) before sending"
    ))
}
