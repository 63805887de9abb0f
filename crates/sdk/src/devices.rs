//! This device in protocol v2 (`docs/protocol.md`): its device keys in the key directory, the
//! user's signed device list, linking a new device (the new side waits for approval; an existing
//! side approves with the code), removing a device with a history key rotation, and the verified
//! device lists of contacts, whose changes are kept as notices for the user.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use caremesh_crypto::v2::{
    Content, DeviceList, DeviceListTracker, DeviceSecrets, HistoryKey, HistoryKeyRing, LinkRequest, PeerDevice,
    PendingLink, Provisioning, SealedProvisioning, SessionStore,
};
use caremesh_crypto::{DeviceKeys, IdentityPublicKey, TrustStore};
use caremesh_proto::messaging::v1 as pb;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::Session;
use crate::messaging::{Messenger, State, crypto};
use crate::wire;
use crate::{Client, SdkError};

/// One-time prekeys of each kind published at first and per top-up.
pub const DEVICE_PREKEY_BATCH: usize = 50;
/// How often a device waiting to be linked asks whether it was approved.
pub const LINK_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a device waits to be linked (the server lets a link expire after 10 minutes).
pub const LINK_WAIT: Duration = Duration::from_secs(600);

/// What this device keeps for protocol v2, inside the sealed device state.
#[derive(Serialize, Deserialize)]
pub(crate) struct DeviceState {
    pub(crate) secrets: DeviceSecrets,
    pub(crate) sessions: SessionStore,
    pub(crate) history: HistoryKeyRing,
    pub(crate) lists: DeviceListTracker,
    /// Whether this device created the account identity (and so keeps the v1 key bundle).
    pub(crate) primary: bool,
    /// Whether the directory holds this device's signed prekey and last-resort prekey.
    pub(crate) published: bool,
    /// Sends saved before they left the device (encoded requests, hex), by message id: resent
    /// with the same message id when the device starts again.
    pub(crate) pending: BTreeMap<String, String>,
    /// Changes of contacts' device lists not yet shown to the user.
    pub(crate) notices: Vec<String>,
    /// When the signed prekey and the last-resort prekey were made or last rotated.
    #[serde(default)]
    pub(crate) rotated_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl DeviceState {
    /// A first device: new device keys and a new history key.
    pub(crate) fn new_primary() -> Result<Self, SdkError> {
        Ok(Self {
            secrets: DeviceSecrets::generate().map_err(|error| crypto("generating device keys", error))?,
            sessions: SessionStore::default(),
            history: HistoryKeyRing::generate().map_err(|error| crypto("generating a history key", error))?,
            lists: DeviceListTracker::default(),
            primary: true,
            published: false,
            pending: BTreeMap::new(),
            notices: Vec::new(),
            rotated_at: None,
        })
    }
}

/// One device of the user, as `carectl device list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id.
    pub device_id: String,
    /// Whether it is the device running this code.
    pub this_device: bool,
    /// Whether an admin removed it (the user's devices drop it from the list next).
    pub admin_removed: bool,
}

/// A user's verified device list and the devices an admin removed from it.
#[derive(Clone)]
pub(crate) struct VerifiedDevices {
    pub(crate) list: DeviceList,
    pub(crate) admin_removed: Vec<String>,
}

impl VerifiedDevices {
    /// The devices to encrypt to.
    pub(crate) fn active(&self) -> impl Iterator<Item = &String> {
        self.list
            .device_ids()
            .iter()
            .filter(|id| !self.admin_removed.contains(id))
    }
}

/// A user's trusted identity with their verified device list, as last fetched.
#[derive(Clone)]
pub(crate) struct KnownDevices {
    pub(crate) identity: IdentityPublicKey,
    pub(crate) devices: VerifiedDevices,
}

impl Messenger {
    /// `user_id`'s trusted identity and verified devices: remembered ones unless `refresh`
    /// (after the server said a list changed), else fetched, checked and remembered.
    pub(crate) async fn known_devices(
        &self,
        session: &Session,
        user_id: &str,
        refresh: bool,
    ) -> Result<KnownDevices, SdkError> {
        if !refresh
            && let Some(known) = self
                .contacts
                .lock()
                .ok()
                .and_then(|contacts| contacts.get(user_id).cloned())
        {
            return Ok(known);
        }
        let identity = match self.recipient_identity(session, user_id).await {
            Err(error) if error.code() == Some(tonic::Code::NotFound) => return Err(no_device_yet(user_id)),
            other => other?,
        };
        let devices = self.verified_devices(session, user_id, &identity).await?;
        let known = KnownDevices { identity, devices };
        if let Ok(mut contacts) = self.contacts.lock() {
            contacts.insert(user_id.to_owned(), known.clone());
        }
        Ok(known)
    }

    /// Forgets what was remembered of `user_id` (their identity was accepted anew).
    pub(crate) fn forget_contact(&self, user_id: &str) {
        if let Ok(mut contacts) = self.contacts.lock() {
            contacts.remove(user_id);
        }
    }

    /// Takes the notices about contacts' device changes (added or removed devices) not shown yet.
    pub fn take_device_notices(&self) -> Result<Vec<String>, SdkError> {
        let notices = {
            let mut state = self.lock()?;
            std::mem::take(&mut device_mut(&mut state)?.notices)
        };
        if !notices.is_empty() {
            self.persist()?;
        }
        Ok(notices)
    }

    /// Fetches and verifies `user_id`'s device list with their verified `identity`, refusing a
    /// rollback, and notes added or removed devices of contacts.
    pub(crate) async fn verified_devices(
        &self,
        session: &Session,
        user_id: &str,
        identity: &IdentityPublicKey,
    ) -> Result<VerifiedDevices, SdkError> {
        let response = match self
            .keys_api()?
            .get_device_list(session.request(pb::GetDeviceListRequest {
                user_id: user_id.to_owned(),
            })?)
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound && user_id != self.user_id() => {
                return Err(no_device_yet(user_id));
            }
            Err(status) => return Err(status.into()),
        };
        let signed = response
            .device_list
            .ok_or(SdkError::Protocol("no device list in the answer"))?;
        let list = DeviceList::verify(
            user_id,
            identity,
            signed.version,
            signed.device_ids.clone(),
            &signed.signature,
        )
        .map_err(|error| crypto(&format!("the device list of {user_id}"), error))?;
        let changed = {
            let mut state = self.lock()?;
            let device = device_mut(&mut state)?;
            let first_sight = device.lists.seen_version(user_id).is_none();
            let change = device
                .lists
                .observe(&list)
                .map_err(|error| crypto(&format!("the device list of {user_id}"), error))?;
            for removed in &change.removed {
                device.sessions.forget_device(&PeerDevice {
                    user_id: user_id.to_owned(),
                    device_id: removed.clone(),
                });
            }
            if !first_sight && !change.is_empty() && user_id != self.user_id() {
                for added in &change.added {
                    device.notices.push(format!("{user_id} added a device ({added})"));
                }
                for removed in &change.removed {
                    device.notices.push(format!("{user_id} removed a device ({removed})"));
                }
            }
            !change.is_empty()
        };
        if changed {
            self.persist()?;
        }
        Ok(VerifiedDevices {
            list,
            admin_removed: response.admin_removed_device_ids,
        })
    }

    /// This user's own verified device list, or `None` when the user has none yet.
    async fn own_devices(&self, session: &Session) -> Result<Option<VerifiedDevices>, SdkError> {
        match self.own_list(session).await? {
            OwnList::Verified(devices) => Ok(Some(devices)),
            OwnList::Missing | OwnList::OtherIdentity(_) => Ok(None),
        }
    }

    /// This user's device list as the directory has it: verified, missing, or signed by an
    /// identity that this device's replaced (a reinstall), at that version.
    async fn own_list(&self, session: &Session) -> Result<OwnList, SdkError> {
        let identity = self.lock()?.keys.identity().public();
        let response = self
            .keys_api()?
            .get_device_list(session.request(pb::GetDeviceListRequest {
                user_id: self.user_id().to_owned(),
            })?)
            .await;
        match response {
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(OwnList::Missing),
            Err(status) => return Err(status.into()),
            Ok(response) => {
                let list = response.into_inner().device_list;
                if let Some(list) = list.filter(|list| list.identity_key_id != identity.key_id()) {
                    return Ok(OwnList::OtherIdentity(list.version));
                }
            }
        }
        Ok(OwnList::Verified(
            self.verified_devices(session, self.user_id(), &identity).await?,
        ))
    }

    /// Makes sure this device is in the user's device list (creating the list on the first
    /// device) and that the directory has its keys, topping up one-time prekeys.
    pub(crate) async fn maintain_device(&self, session: &Session) -> Result<(), SdkError> {
        let device_id = self.device_id()?;
        let mut admin_removed = Vec::new();
        let version = match self.own_list(session).await? {
            OwnList::Verified(devices) if devices.list.contains(&device_id) => {
                if devices.admin_removed.contains(&device_id) {
                    return Err(removed_error());
                }
                admin_removed = devices.admin_removed;
                None
            }
            // A list signed by this identity without this device: another device removed it
            // (a first device finds no list, or one of the identity it replaced).
            OwnList::Verified(_) => return Err(removed_error()),
            OwnList::Missing => Some(1),
            OwnList::OtherIdentity(version) => Some(version + 1),
        };
        match version {
            None => {}
            Some(version) => {
                // The first device, or the account identity was replaced: a list of this device.
                let (list, signature, history_key_id) = {
                    let state = self.lock()?;
                    let identity = state.keys.identity();
                    let list = DeviceList::new(self.user_id(), identity.key_id(), version, [device_id.clone()])
                        .map_err(|error| crypto("the device list", error))?;
                    let signature = list
                        .sign(identity)
                        .map_err(|error| crypto("signing the device list", error))?;
                    let history = &state.device.as_ref().ok_or_else(no_device)?.history;
                    let history_key_id = history
                        .current()
                        .map_err(|error| crypto("the history key", error))?
                        .history_key_id
                        .clone();
                    (list, signature, history_key_id)
                };
                self.upload_list(session, &list, &signature, &history_key_id).await?;
            }
        }
        let request = {
            let mut state = self.lock()?;
            let State { keys, device, .. } = &mut *state;
            let device = device.as_mut().ok_or_else(no_device)?;
            let identity = keys.identity();
            let user_id = self.user_id();
            let now = chrono::Utc::now();
            match rotation(device.rotated_at, now) {
                Rotation::Start => device.rotated_at = Some(now),
                Rotation::Rotate { forget_previous } => {
                    if forget_previous {
                        device.secrets.forget_previous();
                    }
                    device
                        .secrets
                        .rotate(identity, user_id)
                        .map_err(|error| crypto("rotating the device's prekeys", error))?;
                    device.rotated_at = Some(now);
                }
                Rotation::None => {}
            }
            let signed_prekey = device
                .secrets
                .signed_prekey(identity, user_id)
                .map_err(|error| crypto("the signed prekey", error))?;
            let last_resort = device
                .secrets
                .last_resort_prekey(identity, user_id)
                .map_err(|error| crypto("the last-resort prekey", error))?;
            let (one_time, kem_one_time) = if device.published {
                (Vec::new(), Vec::new())
            } else {
                device
                    .secrets
                    .new_one_time_prekeys(identity, user_id, DEVICE_PREKEY_BATCH)
                    .map_err(|error| crypto("one-time prekeys", error))?
            };
            device.published = true;
            pb::PublishDeviceRequest {
                device_id: device_id.clone(),
                signed_prekey: Some(wire::signed_key(&signed_prekey)),
                last_resort_prekey: Some(wire::signed_key(&last_resort)),
                one_time_prekeys: one_time.iter().map(wire::one_time_key).collect(),
                kem_one_time_prekeys: kem_one_time.iter().map(wire::signed_key).collect(),
            }
        };
        // The secrets are on disk before their public halves are anywhere.
        self.persist()?;
        let stock = self
            .keys_api()?
            .publish_device(session.request(request)?)
            .await?
            .into_inner()
            .stock
            .unwrap_or_default();
        let low = stock.low_watermark.max(1);
        if stock.one_time_prekey_count < low || stock.kem_one_time_prekey_count < low {
            let request = {
                let mut state = self.lock()?;
                let State { keys, device, .. } = &mut *state;
                let device = device.as_mut().ok_or_else(no_device)?;
                let (one_time, kem_one_time) = device
                    .secrets
                    .new_one_time_prekeys(keys.identity(), self.user_id(), DEVICE_PREKEY_BATCH)
                    .map_err(|error| crypto("one-time prekeys", error))?;
                pb::UploadDevicePrekeysRequest {
                    device_id: device_id.clone(),
                    one_time_prekeys: one_time.iter().map(wire::one_time_key).collect(),
                    kem_one_time_prekeys: kem_one_time.iter().map(wire::signed_key).collect(),
                }
            };
            self.persist()?;
            self.keys_api()?
                .upload_device_prekeys(session.request(request)?)
                .await?;
        }
        // Devices an admin removed: the signed list drops them and the history key rotates, as
        // when a device of the user removes one (§4, §7.3). Another device of the user may do it
        // at the same moment; then its list wins and this one is ABORTED, which is fine.
        for removed in admin_removed {
            match self.remove_device(session, &removed).await {
                Err(error) if error.code() == Some(tonic::Code::Aborted) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// This device's id.
    pub fn device_id(&self) -> Result<String, SdkError> {
        let state = self.lock()?;
        Ok(state
            .device
            .as_ref()
            .ok_or_else(no_device)?
            .secrets
            .device_id()
            .to_owned())
    }

    async fn upload_list(
        &self,
        session: &Session,
        list: &DeviceList,
        signature: &[u8; 64],
        history_key_id: &str,
    ) -> Result<(), SdkError> {
        self.keys_api()?
            .update_device_list(session.request(pb::UpdateDeviceListRequest {
                version: list.version(),
                device_ids: list.device_ids().to_vec(),
                signature: signature.to_vec(),
                history_key_id: history_key_id.to_owned(),
            })?)
            .await?;
        let mut state = self.lock()?;
        device_mut(&mut state)?
            .lists
            .observe(list)
            .map_err(|error| crypto("the device list", error))?;
        drop(state);
        self.persist()
    }

    /// The user's devices.
    pub async fn devices(&self, session: &Session) -> Result<Vec<DeviceInfo>, SdkError> {
        let this_device = self.device_id()?;
        let own = self
            .own_devices(session)
            .await?
            .ok_or(SdkError::Protocol("you have no device list yet"))?;
        Ok(own
            .list
            .device_ids()
            .iter()
            .map(|device_id| DeviceInfo {
                device_id: device_id.clone(),
                this_device: *device_id == this_device,
                admin_removed: own.admin_removed.contains(device_id),
            })
            .collect())
    }

    /// Approves the pending link whose code the user typed (`XXXX-XXXX-XXXX-XXXX`, from the new
    /// device's screen): sends the new device the account identity and history keys, sealed so
    /// that only it can open them, and adds it to the signed device list. Returns its device id.
    pub async fn approve_link(&self, session: &Session, code: &str) -> Result<String, SdkError> {
        let links = self
            .keys_api()?
            .list_device_links(session.request(pb::ListDeviceLinksRequest::default())?)
            .await?
            .into_inner()
            .links;
        let (link, pending) = links
            .into_iter()
            .find_map(|link| {
                let pending = PendingLink {
                    user_id: self.user_id().to_owned(),
                    device_id: link.device_id.clone(),
                    ephemeral_public: link.ephemeral_public.as_slice().try_into().ok()?,
                    commitment: link.commitment.as_slice().try_into().ok()?,
                };
                pending.matches(code).then_some((link, pending))
            })
            .ok_or_else(|| crypto("linking", caremesh_crypto::CryptoError::LinkCodeMismatch))?;
        let own = self
            .own_devices(session)
            .await?
            .ok_or(SdkError::Protocol("you have no device list yet"))?;
        let (sealed, list, signature) = {
            let state = self.lock()?;
            let device = state.device.as_ref().ok_or_else(no_device)?;
            let provisioning = Provisioning {
                identity: state.keys.identity().duplicate(),
                history: device.history.clone(),
                approver_device_id: device.secrets.device_id().to_owned(),
            };
            let sealed = pending
                .seal(code, &provisioning)
                .map_err(|error| crypto("sealing the provisioning message", error))?;
            let list = own
                .list
                .with_device(&pending.device_id)
                .map_err(|error| crypto("the device list", error))?;
            let signature = list
                .sign(state.keys.identity())
                .map_err(|error| crypto("signing the device list", error))?;
            (sealed, list, signature)
        };
        self.keys_api()?
            .approve_device_link(session.request(pb::ApproveDeviceLinkRequest {
                link_id: link.link_id.clone(),
                approver_public: sealed.approver_public.to_vec(),
                sealed: sealed.sealed,
                device_list_version: list.version(),
                device_ids: list.device_ids().to_vec(),
                device_list_signature: signature.to_vec(),
            })?)
            .await?;
        let mut state = self.lock()?;
        device_mut(&mut state)?
            .lists
            .observe(&list)
            .map_err(|error| crypto("the device list", error))?;
        drop(state);
        self.persist()?;
        Ok(pending.device_id)
    }

    /// Removes one of the user's other devices: a signed list without it, its sessions dropped,
    /// and a new history key sent to the remaining devices (so it reads nothing archived later).
    pub async fn remove_device(&self, session: &Session, device_id: &str) -> Result<(), SdkError> {
        if device_id == self.device_id()? {
            return Err(SdkError::Local(
                "a device cannot remove itself: remove it from another of your devices".to_owned(),
            ));
        }
        let own = self
            .own_devices(session)
            .await?
            .ok_or(SdkError::Protocol("you have no device list yet"))?;
        let (list, signature) = {
            let state = self.lock()?;
            let list = own
                .list
                .without_device(device_id)
                .map_err(|error| crypto("the device list", error))?;
            let signature = list
                .sign(state.keys.identity())
                .map_err(|error| crypto("signing the device list", error))?;
            (list, signature)
        };
        // A new history key, declared with the list that drops the device (the server then
        // refuses archive copies under the old one), then sent to the remaining devices.
        let key = HistoryKey::generate().map_err(|error| crypto("generating a history key", error))?;
        let bytes = key.bytes().map_err(|error| crypto("the history key", error))?;
        let content = Content::HistoryKey {
            history_key_id: key.history_key_id.clone(),
            key: bytes,
        };
        {
            let mut state = self.lock()?;
            device_mut(&mut state)?.history.push_current(key.clone());
        }
        self.persist()?;
        self.upload_list(session, &list, &signature, &key.history_key_id)
            .await?;
        let others = self
            .own_devices(session)
            .await?
            .map_or(0, |devices| devices.active().count());
        if others > 1 {
            let user_id = self.user_id().to_owned();
            self.send_content(session, &user_id, &content, None).await?;
        }
        Ok(())
    }

    /// Links a new device for `session`'s user into `dir`/`profile`: shows the code (and the QR
    /// code's text) through `show`, waits until an existing device approves it, then opens the
    /// provisioning message, checks the identity against the published one, and publishes this
    /// device's keys.
    pub async fn link(
        client: Client,
        dir: &Path,
        profile: &str,
        session: &Session,
        show: impl FnOnce(&str, &str),
    ) -> Result<Self, SdkError> {
        if dir.join(format!("{profile}.messaging")).exists() {
            return Err(SdkError::Local(format!(
                "profile {profile} already holds a device: link into a new profile"
            )));
        }
        let request = LinkRequest::new(&session.user_id).map_err(|error| crypto("starting a link", error))?;
        let keys = caremesh_proto::messaging::v1::key_directory_service_client::KeyDirectoryServiceClient::new(
            client.require(crate::ServiceName::Messaging)?,
        );
        let mut api = keys;
        let link = api
            .create_device_link(
                session.request(pb::CreateDeviceLinkRequest {
                    device_id: request.device_id().to_owned(),
                    ephemeral_public: request.ephemeral_public().to_vec(),
                    commitment: request
                        .commitment()
                        .map_err(|error| crypto("the link commitment", error))?
                        .to_vec(),
                })?,
            )
            .await?
            .into_inner()
            .link
            .ok_or(SdkError::Protocol("no link in the answer"))?;
        show(&request.code(), &request.qr_text(&link.link_id));
        let started = std::time::Instant::now();
        let approved = loop {
            let current = api
                .get_device_link(session.request(pb::GetDeviceLinkRequest {
                    link_id: link.link_id.clone(),
                })?)
                .await?
                .into_inner()
                .link
                .ok_or(SdkError::Protocol("no link in the answer"))?;
            match pb::DeviceLinkState::try_from(current.state) {
                Ok(pb::DeviceLinkState::Approved) => break current,
                Ok(pb::DeviceLinkState::Expired) => {
                    return Err(SdkError::Local(
                        "the link expired before it was approved: start again".to_owned(),
                    ));
                }
                _ if started.elapsed() > LINK_WAIT => {
                    return Err(SdkError::Local(
                        "no device approved the link in time: start again".to_owned(),
                    ));
                }
                _ => tokio::time::sleep(LINK_POLL_INTERVAL).await,
            }
        };
        let sealed = SealedProvisioning {
            approver_public: approved
                .approver_public
                .as_slice()
                .try_into()
                .map_err(|_| SdkError::Protocol("an approver key that is not 32 bytes"))?,
            sealed: approved.sealed,
        };
        let provisioning = request
            .open(&sealed)
            .map_err(|error| crypto("opening the provisioning message", error))?;
        let published = Self::published_identity(&client, session).await?;
        if published.as_ref() != Some(&provisioning.identity.public()) {
            return Err(SdkError::Local(
                "the identity this device received is not your account's published identity: \
                 the link was not made by one of your devices; start again"
                    .to_owned(),
            ));
        }
        let state = State {
            keys: DeviceKeys::with_identity(&session.user_id, provisioning.identity)
                .map_err(|error| crypto("device keys", error))?,
            trust: TrustStore::new(),
            opened: BTreeMap::new(),
            attribute_keys: Vec::new(),
            device: Some(DeviceState {
                secrets: DeviceSecrets::generate_for(request.device_id().to_owned())
                    .map_err(|error| crypto("generating device keys", error))?,
                sessions: SessionStore::default(),
                history: provisioning.history,
                lists: DeviceListTracker::default(),
                primary: false,
                published: false,
                pending: BTreeMap::new(),
                notices: Vec::new(),
                rotated_at: None,
            }),
        };
        Self::start(client, dir, profile, session, state).await
    }
}

/// How long the previous signed and last-resort prekeys are kept after a rotation (§3.2), for
/// handshakes begun before it.
pub const PREVIOUS_PREKEY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// What the device's prekeys need at `now`, rotated last at `rotated_at`.
#[derive(Debug, PartialEq, Eq)]
enum Rotation {
    /// Never recorded: count from now.
    Start,
    /// Older than a week: new signed and last-resort prekeys; the previous ones go first when
    /// the keys are older than 30 days (the device was off), since they are older still.
    Rotate {
        forget_previous: bool,
    },
    None,
}

fn rotation(rotated_at: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>) -> Rotation {
    match rotated_at {
        None => Rotation::Start,
        Some(at) if now - at > crate::messaging::SIGNED_PREKEY_MAX_AGE => Rotation::Rotate {
            forget_previous: now - at > PREVIOUS_PREKEY_RETENTION,
        },
        Some(_) => Rotation::None,
    }
}

/// The user's own device list as the directory holds it.
enum OwnList {
    /// Signed by this device's identity.
    Verified(VerifiedDevices),
    /// The user has none yet.
    Missing,
    /// Signed by an earlier identity (this device replaced it), at this version.
    OtherIdentity(u64),
}

/// The state's device part, which every opened messenger has.
pub(crate) fn device_mut(state: &mut State) -> Result<&mut DeviceState, SdkError> {
    state.device.as_mut().ok_or_else(no_device)
}

fn no_device_yet(user_id: &str) -> SdkError {
    SdkError::Local(format!(
        "{user_id} has no device for end-to-end messages yet: they must sign in once with an up-to-date app \
         (or carectl) before you can write to them"
    ))
}

pub(crate) fn no_device() -> SdkError {
    SdkError::Local("this profile has no protocol v2 device state".to_owned())
}

fn removed_error() -> SdkError {
    SdkError::Local("this device was removed from your account: sign in on a new profile and link it again".to_owned())
}

/// Keeps the secret bytes of a received history key wiped.
pub(crate) fn history_key_from(history_key_id: &str, key: &Zeroizing<[u8; 32]>) -> Result<HistoryKey, SdkError> {
    HistoryKey::from_bytes(history_key_id.to_owned(), key).map_err(|error| crypto("a received history key", error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prekeys_rotate_weekly_and_old_ones_go_after_30_days() {
        let now = chrono::Utc::now();
        let days = chrono::TimeDelta::days;
        assert_eq!(rotation(None, now), Rotation::Start);
        assert_eq!(rotation(Some(now - days(6)), now), Rotation::None);
        assert_eq!(
            rotation(Some(now - days(8)), now),
            Rotation::Rotate { forget_previous: false }
        );
        assert_eq!(
            rotation(Some(now - days(31)), now),
            Rotation::Rotate { forget_previous: true }
        );
    }
}
