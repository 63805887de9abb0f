//! Protocol v2 messages from the client side (`docs/protocol.md` §5–§7, Sesame fan-out): a send
//! encrypts one Double Ratchet ciphertext per device of the recipient and per other device of
//! this user (starting PQXDH sessions where there are none), seals an archive copy under the
//! history key, and saves the new state together with the request before anything leaves the
//! device; opening takes this device's ciphertext, or the archive copy on a device that was
//! linked later.

use caremesh_crypto::v2::archive::ArchiveContext;
use caremesh_crypto::v2::{ArchiveCopy, Content, OsRatchetKeys, PeerDevice, verify_device_bundle};
use caremesh_crypto::{IdentityPublicKey, TrustCheck, new_id};
use caremesh_proto::messaging::v1 as pb;
use prost::Message as _;
use std::time::Duration;

use crate::SdkError;
use crate::auth::Session;
use crate::devices::{VerifiedDevices, device_mut, history_key_from, no_device};
use crate::messaging::{Content as Opened, Messenger, crypto, local};
use crate::wire;

/// Whether a failed send may go through later as it is: the service was unavailable, the call
/// timed out, or the connection broke on the client's side (tonic reports that as a status with
/// a source error, whatever its code; a status the server sent has none). Resending is safe:
/// sends are idempotent by message id.
fn is_retryable(error: &SdkError) -> bool {
    match error {
        SdkError::Status(status) => {
            crate::is_transient(status)
                || status.code() == tonic::Code::DeadlineExceeded
                || std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// The reason messaging-svc gives when a send's devices do not match the current device lists.
pub const DEVICE_LIST_CHANGED: &str = "DEVICE_LIST_CHANGED";
/// The reason messaging-svc gives for an archive copy under a history key another device replaced.
pub const HISTORY_KEY_ROTATED: &str = "HISTORY_KEY_ROTATED";

impl Messenger {
    /// The identity to encrypt to: our own, or the contact's current one checked against the
    /// pinned one (a changed identity is refused until accepted).
    pub(crate) async fn recipient_identity(
        &self,
        session: &Session,
        user_id: &str,
    ) -> Result<IdentityPublicKey, SdkError> {
        if user_id == self.user_id() {
            return Ok(self.lock()?.keys.identity().public());
        }
        let identity = self.current_identity(session, user_id).await?;
        let check = self.lock()?.trust.check(user_id, &identity);
        match check {
            TrustCheck::Changed { .. } => Err(crate::messaging::identity_changed(user_id)),
            TrustCheck::FirstUse => {
                self.persist()?;
                Ok(identity)
            }
            TrustCheck::Trusted => Ok(identity),
        }
    }

    /// Sends `content` to every device of `recipient_user_id` and this user's other devices.
    /// A send whose device lists went stale on the way is sealed again once, with the same id.
    pub(crate) async fn send_content(
        &self,
        session: &Session,
        recipient_user_id: &str,
        content: &Content,
        lifespan: Option<Duration>,
    ) -> Result<pb::Message, SdkError> {
        self.send_content_as(session, recipient_user_id, &new_id(), content, lifespan)
            .await
    }

    /// [`Self::send_content`] under a message id chosen beforehand (the one a file was uploaded
    /// for).
    pub(crate) async fn send_content_as(
        &self,
        session: &Session,
        recipient_user_id: &str,
        message_id: &str,
        content: &Content,
        lifespan: Option<Duration>,
    ) -> Result<pb::Message, SdkError> {
        let message_id = message_id.to_owned();
        let mut refresh = false;
        loop {
            let request = self
                .seal_for_devices(session, recipient_user_id, &message_id, content, lifespan, refresh)
                .await?;
            match self.submit(session, request).await {
                Ok(message) => {
                    self.finish_pending(&message_id)?;
                    return Ok(message);
                }
                // The remembered device lists went stale: fetch them and seal again, once.
                Err(error) if !refresh && error.reason().as_deref() == Some(DEVICE_LIST_CHANGED) => refresh = true,
                // Another device replaced the history key: take it from our own conversation and
                // seal again, once.
                Err(error) if !refresh && error.reason().as_deref() == Some(HISTORY_KEY_ROTATED) => {
                    self.catch_up_history(session).await?;
                    refresh = true;
                }
                // Not delivered for now: the saved send goes out when the device starts again.
                Err(error) if is_retryable(&error) => return Err(error),
                // Refused for good: nothing to send again (the ciphertexts' keys are spent).
                Err(error) => {
                    self.finish_pending(&message_id)?;
                    return Err(error);
                }
            }
        }
    }

    async fn seal_for_devices(
        &self,
        session: &Session,
        recipient_user_id: &str,
        message_id: &str,
        content: &Content,
        lifespan: Option<Duration>,
        refresh: bool,
    ) -> Result<pb::SendMessageRequest, SdkError> {
        let me = self.user_id().to_owned();
        let known = self.known_devices(session, recipient_user_id, refresh).await?;
        let (recipient_identity, recipient) = (known.identity, known.devices);
        let own_identity = self.lock()?.keys.identity().public();
        let own = if recipient_user_id == me {
            None
        } else {
            Some(self.known_devices(session, &me, refresh).await?.devices)
        };
        let this_device = self.device_id()?;
        let mut targets: Vec<(PeerDevice, &VerifiedDevices, &IdentityPublicKey)> = Vec::new();
        for (user_id, devices, identity) in [
            (recipient_user_id, Some(&recipient), &recipient_identity),
            (me.as_str(), own.as_ref(), &own_identity),
        ] {
            let Some(devices) = devices else { continue };
            for device_id in devices.active().filter(|id| **id != this_device) {
                targets.push((
                    PeerDevice {
                        user_id: user_id.to_owned(),
                        device_id: device_id.clone(),
                    },
                    devices,
                    identity,
                ));
            }
        }
        self.start_missing_sessions(session, &targets).await?;

        let plaintext = content
            .encode()
            .map_err(|error| crypto("encoding the message", error))?;
        let request = {
            let mut state = self.lock()?;
            let crate::messaging::State { device, .. } = &mut *state;
            let device = device.as_mut().ok_or_else(no_device)?;
            let mut device_ciphertexts = Vec::with_capacity(targets.len());
            for (peer, _, _) in &targets {
                let message = device
                    .sessions
                    .encrypt(peer, message_id, &plaintext)
                    .map_err(|error| crypto("encrypting for a device", error))?;
                device_ciphertexts.push(wire::device_ciphertext(&peer.user_id, message));
            }
            let archive = match content {
                Content::Message(_) | Content::Attachment { .. } => {
                    let context = ArchiveContext {
                        owner_user_id: &me,
                        message_id,
                        sender_user_id: &me,
                        sender_device_id: &this_device,
                        recipient_user_id,
                    };
                    Some(wire::archive_copy(
                        ArchiveCopy::seal(&device.history, &context, content)
                            .map_err(|error| crypto("sealing the archive copy", error))?,
                    ))
                }
                _ => None,
            };
            let request = pb::SendMessageRequest {
                message_id: message_id.to_owned(),
                content: Some(pb::send_message_request::Content::Direct(pb::DirectContent {
                    recipient_user_id: recipient_user_id.to_owned(),
                    envelope: None,
                })),
                sender_copy: None,
                lifespan: lifespan.and_then(|lifespan| prost_types::Duration::try_from(lifespan).ok()),
                sender_device_id: this_device.clone(),
                device_ciphertexts,
                archive,
            };
            device
                .pending
                .insert(message_id.to_owned(), hex::encode(request.encode_to_vec()));
            request
        };
        // This device's own copy is kept, and the advanced ratchets and the request are on disk
        // before the request leaves: a crash now resends these very ciphertexts, and no message
        // key is ever used twice.
        match content {
            Content::Message(body) => self.opened.insert(&*self.local_key()?, message_id, body)?,
            Content::Attachment { .. } => self
                .opened
                .insert_content(&*self.local_key()?, message_id, &plaintext)?,
            _ => {}
        }
        self.persist()?;
        Ok(request)
    }

    /// Runs PQXDH with every target device that has no session yet (one bundle fetch per user).
    async fn start_missing_sessions(
        &self,
        session: &Session,
        targets: &[(PeerDevice, &VerifiedDevices, &IdentityPublicKey)],
    ) -> Result<(), SdkError> {
        let missing: Vec<&(PeerDevice, &VerifiedDevices, &IdentityPublicKey)> = {
            let mut state = self.lock()?;
            let device = device_mut(&mut state)?;
            targets
                .iter()
                .filter(|(peer, _, _)| !device.sessions.can_send_to(peer))
                .collect()
        };
        let mut users: Vec<&str> = missing.iter().map(|(peer, _, _)| peer.user_id.as_str()).collect();
        users.dedup();
        for user_id in users {
            let wanted: Vec<&(PeerDevice, &VerifiedDevices, &IdentityPublicKey)> = missing
                .iter()
                .copied()
                .filter(|(peer, _, _)| peer.user_id == user_id)
                .collect();
            let Some((_, devices, identity)) = wanted.first().copied() else {
                continue;
            };
            let response = self
                .keys_api()?
                .fetch_device_bundles(session.request(pb::FetchDeviceBundlesRequest {
                    user_id: user_id.to_owned(),
                    device_ids: wanted.iter().map(|(peer, _, _)| peer.device_id.clone()).collect(),
                })?)
                .await?
                .into_inner();
            let mut state = self.lock()?;
            let crate::messaging::State { keys, device, .. } = &mut *state;
            let device = device.as_mut().ok_or_else(no_device)?;
            for bundle in &response.bundles {
                let bundle = wire::device_bundle(user_id, bundle)?;
                let verified = verify_device_bundle(&bundle, identity, &devices.list)
                    .map_err(|error| crypto(&format!("the key bundle of a device of {user_id}"), error))?;
                device
                    .sessions
                    .start(
                        keys.identity(),
                        self.user_id(),
                        device.secrets.device_id(),
                        &verified,
                        &mut OsRatchetKeys,
                    )
                    .map_err(|error| crypto("starting a session", error))?;
            }
            for (peer, _, _) in &wanted {
                if !device.sessions.can_send_to(peer) {
                    return Err(SdkError::Local(format!(
                        "the directory has no keys for device {} of {user_id}: it may have been removed; try again",
                        peer.device_id
                    )));
                }
            }
        }
        Ok(())
    }

    fn finish_pending(&self, message_id: &str) -> Result<(), SdkError> {
        let removed = device_mut(&mut *self.lock()?)?.pending.remove(message_id).is_some();
        if removed {
            self.persist_soon()?;
        }
        Ok(())
    }

    /// Sends again what was saved but may not have left the device before it stopped.
    pub(crate) async fn resend_pending(&self, session: &Session) -> Result<(), SdkError> {
        let pending: Vec<(String, String)> = device_mut(&mut *self.lock()?)?
            .pending
            .iter()
            .map(|(id, request)| (id.clone(), request.clone()))
            .collect();
        for (message_id, encoded) in pending {
            let bytes = hex::decode(&encoded).map_err(|error| local("a saved send", error))?;
            let request =
                pb::SendMessageRequest::decode(bytes.as_slice()).map_err(|error| local("a saved send", error))?;
            match self.submit(session, request).await {
                Ok(_) => self.finish_pending(&message_id)?,
                // Still not deliverable: kept for the next start.
                Err(error) if is_retryable(&error) => return Ok(()),
                // Refused for good (a list that changed meanwhile, a rule): those ciphertexts can
                // never be delivered as they are; the user saw the send fail and can send again.
                Err(_) => self.finish_pending(&message_id)?,
            }
        }
        Ok(())
    }

    /// Opens a protocol v2 message: this device's ciphertext (then stores the user's archive copy
    /// when it is the first of the recipient's devices to open it), or the archive copy.
    pub(crate) async fn open_v2(&self, session: &Session, message: &pb::Message) -> Result<Opened, SdkError> {
        let Some(ciphertext) = &message.device_ciphertext else {
            return self.open_archive(message);
        };
        // The sender's identity as remembered, unless the handshake names another one.
        let named = ciphertext
            .preamble
            .as_ref()
            .map(|preamble| preamble.sender_identity_key_id.as_str());
        let mut sender_identity = self
            .known_devices(session, &message.sender_user_id, false)
            .await?
            .identity;
        if named.is_some_and(|key_id| key_id != sender_identity.key_id()) {
            sender_identity = self
                .known_devices(session, &message.sender_user_id, true)
                .await?
                .identity;
        }
        let ratchet = wire::ratchet_message(ciphertext)?;
        let opened = {
            let mut state = self.lock()?;
            let crate::messaging::State { keys, device, .. } = &mut *state;
            let device = device.as_mut().ok_or_else(no_device)?;
            let result = device.sessions.decrypt(
                keys.identity(),
                self.user_id(),
                &mut device.secrets,
                &message.sender_user_id,
                &sender_identity,
                &message.message_id,
                &ratchet,
                &mut OsRatchetKeys,
            );
            match result {
                Ok(plaintext) => Ok(plaintext),
                Err(caremesh_crypto::CryptoError::NoSession(device_id)) => {
                    // Our next send to that device starts a new session.
                    device.sessions.forget_device(&PeerDevice {
                        user_id: message.sender_user_id.clone(),
                        device_id: device_id.clone(),
                    });
                    Err(caremesh_crypto::CryptoError::NoSession(device_id))
                }
                Err(error) => Err(error),
            }
        };
        let plaintext = match opened {
            Ok(plaintext) => plaintext,
            Err(error) => {
                // What the ratchet cannot open may still be in the user's archive.
                if message.archive.is_some() {
                    return self.open_archive(message);
                }
                return Err(crypto("opening the message", error));
            }
        };
        let content = Content::decode(&plaintext).map_err(|error| crypto("reading the message", error))?;
        match content {
            Content::Message(body) => {
                self.opened.insert(&*self.local_key()?, &message.message_id, &body)?;
                // The ratchet state is written within OPENED_WRITE_DELAY, once per burst: whatever
                // is on disk is consistent. Before the write the old state still holds this
                // message's key (it opens again from the server's copy); a send writes first.
                self.persist_soon()?;
                if message.sender_user_id != self.user_id() && message.archive.is_none() {
                    self.store_archive_copy(session, message, &Content::Message(body.clone()))
                        .await?;
                }
                Ok(Opened::Plain(body.to_vec()))
            }
            Content::Attachment { caption, attachment } => {
                self.opened
                    .insert_content(&*self.local_key()?, &message.message_id, &plaintext)?;
                self.persist_soon()?;
                let content = Content::Attachment { caption, attachment };
                if message.sender_user_id != self.user_id() && message.archive.is_none() {
                    self.store_archive_copy(session, message, &content).await?;
                }
                let Content::Attachment { caption, attachment } = content else {
                    return Err(SdkError::Protocol("an attachment content changed kind"));
                };
                Ok(Opened::Attachment {
                    caption: caption.to_vec(),
                    attachment,
                })
            }
            Content::HistoryKey { history_key_id, key } => {
                if message.sender_user_id != self.user_id() {
                    return Err(crypto(
                        "reading the message",
                        caremesh_crypto::CryptoError::UnexpectedContent("a history key from another user"),
                    ));
                }
                let key = history_key_from(&history_key_id, &key)?;
                device_mut(&mut *self.lock()?)?.history.push_current(key);
                self.persist()?;
                Ok(Opened::Control("a new history key from your other device".to_owned()))
            }
            Content::SessionReset => {
                self.persist()?;
                Ok(Opened::Control("a new session".to_owned()))
            }
        }
    }

    fn open_archive(&self, message: &pb::Message) -> Result<Opened, SdkError> {
        let copy = message.archive.as_ref().ok_or_else(|| {
            SdkError::Local("this message was sent before this device was linked and has no archive copy".to_owned())
        })?;
        let copy = wire::archive_from(copy)?;
        let state = self.lock()?;
        let device = state.device.as_ref().ok_or_else(no_device)?;
        let context = ArchiveContext {
            owner_user_id: self.user_id(),
            message_id: &message.message_id,
            sender_user_id: &message.sender_user_id,
            sender_device_id: &message.sender_device_id,
            recipient_user_id: &message.recipient_user_id,
        };
        match copy.open(&device.history, &context) {
            Ok(Content::Message(body)) => Ok(Opened::Plain(body.to_vec())),
            Ok(Content::Attachment { caption, attachment }) => Ok(Opened::Attachment {
                caption: caption.to_vec(),
                attachment,
            }),
            Ok(_) => Err(SdkError::Protocol("an archive copy of something other than a message")),
            Err(error) => Err(crypto("opening the archive copy", error)),
        }
    }

    /// Opens what this user's other devices sent to this one (a new history key, after a device
    /// was removed), so that the history key ring is current.
    async fn catch_up_history(&self, session: &Session) -> Result<(), SdkError> {
        let me = self.user_id().to_owned();
        self.history(
            session,
            pb::list_conversation_messages_request::Target::PeerUserId(me),
            pb::SortOrder::OldestFirst,
        )
        .await
        .map(|_| ())
    }

    /// Stores the user's archive copy; when the history key was replaced on another device, once
    /// more after catching up, and not at all if this device has not received the new key yet
    /// (another device of the user stores it then: the server refuses the old key).
    async fn store_archive_copy(
        &self,
        session: &Session,
        message: &pb::Message,
        content: &Content,
    ) -> Result<(), SdkError> {
        match self.try_store_archive_copy(session, message, content).await {
            Err(error) if error.reason().as_deref() == Some(HISTORY_KEY_ROTATED) => {
                Box::pin(self.catch_up_history(session)).await?;
                match self.try_store_archive_copy(session, message, content).await {
                    Err(error) if error.reason().as_deref() == Some(HISTORY_KEY_ROTATED) => Ok(()),
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn try_store_archive_copy(
        &self,
        session: &Session,
        message: &pb::Message,
        content: &Content,
    ) -> Result<(), SdkError> {
        let archive = {
            let state = self.lock()?;
            let device = state.device.as_ref().ok_or_else(no_device)?;
            let context = ArchiveContext {
                owner_user_id: self.user_id(),
                message_id: &message.message_id,
                sender_user_id: &message.sender_user_id,
                sender_device_id: &message.sender_device_id,
                recipient_user_id: &message.recipient_user_id,
            };
            ArchiveCopy::seal(&device.history, &context, content)
                .map_err(|error| crypto("sealing the archive copy", error))?
        };
        self.api()?
            .store_archive_copy(session.request(pb::StoreArchiveCopyRequest {
                message_id: message.message_id.clone(),
                archive: Some(wire::archive_copy(archive)),
            })?)
            .await?;
        Ok(())
    }
}
