// End-to-end encrypted direct messages from the browser, protocol v2, doing what the Rust SDK's
// `Messenger` does (crates/sdk/src/messaging.rs, devices.rs, sesame.rs, wire.rs) through the same
// RPCs: the first device creates and publishes the account identity; every send fans out one
// Double Ratchet ciphertext per device of the recipient and per other device of this user, with
// an archive copy, the new state saved before anything leaves; opening uses this device's
// ciphertext or the archive copy; contacts' identities are pinned and changes of their device
// lists are noted for the user. The server only ever sees ciphertext. Nothing here logs.

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

import { AbeService } from "../gen/caremesh/abe/v1/abe_pb";
import { AuthService } from "../gen/caremesh/auth/v1/auth_pb";
import {
  DeviceLinkState,
  KemPrekeyKind,
  KeyDirectoryService,
  type DeviceBundle as PbDeviceBundle,
  type IdentityKey,
} from "../gen/caremesh/messaging/v1/keys_pb";
import {
  MessageKind,
  MessageState,
  MessagingService,
  ReceiptType,
  SendMessageRequestSchema,
  SortOrder,
  type DeviceCiphertext,
  type Message,
  type SendMessageRequest,
} from "../gen/caremesh/messaging/v1/messaging_pb";
import { HistoryKeyRing, openArchive, sealArchive, type ArchiveContext } from "../crypto/archive";
import { Encoder, fromHex, newId, toHex } from "../crypto/bytes";
import { decodeContent, encodeContent, type Content } from "../crypto/content";
import { DeviceSecrets, KEM_LAST_RESORT, KEM_ONE_TIME } from "../crypto/device";
import { DeviceList, DeviceListTracker } from "../crypto/deviceList";
import { CryptoError } from "../crypto/errors";
import { Policy } from "../crypto/fame";
import {
  groupContentAad,
  openUnderPolicy,
  POLICY_ENVELOPE_VERSION,
  sealUnderPolicy,
  signGroupMessage,
  verifyGroupMessage,
} from "../crypto/fameEnvelope";
import { IdentityKeyPair, sameIdentity, verifyIdentity, type IdentityPublicKey } from "../crypto/identity";
import { findPendingLink, LinkRequest, sealProvisioning, type PendingLink } from "../crypto/link";
import { verifyDeviceBundle, type DeviceBundle } from "../crypto/pqxdh";
import { randomBytes, x25519Public } from "../crypto/primitives";
import type { RatchetMessage } from "../crypto/ratchet";
import { safetyNumber, TrustStore } from "../crypto/safety";
import { SessionStore, type PeerDevice } from "../crypto/sessions";
import type { CaremeshClient } from "./index";
import { DEVICE_RECORD, DeviceState, type DeviceStateJson } from "./messagingDevice";
import { deviceDatabaseName, EncryptedStore, IndexedDbBackend } from "./store";
import { AttributeKeyring } from "./attributeKeys";
import { createTransport } from "./transport";
import {
  attachmentRef,
  attachmentView,
  downloadAttachment,
  prepareUpload,
  storedAttachment,
  uploadAttachment,
  type AttachmentView,
  type Progress,
  type StoredAttachment,
} from "./attachments";

/** One-time prekeys of each kind published at first and per top-up (as the SDK). */
export const DEVICE_PREKEY_BATCH = 50;
const WEEK_MS = 7 * 24 * 3600 * 1000;
const PREVIOUS_PREKEY_RETENTION_MS = 30 * 24 * 3600 * 1000;
/** messaging-svc's reasons (google.rpc.ErrorInfo) a send is sealed again for. */
export const DEVICE_LIST_CHANGED = "DEVICE_LIST_CHANGED";
export const HISTORY_KEY_ROTATED = "HISTORY_KEY_ROTATED";

/** A message as the UI shows it. */
export interface MessageView {
  readonly messageId: string;
  readonly conversationPeerId: string;
  readonly conversationId: string;
  /** A group message's policy (null for direct messages). */
  readonly policy: string | null;
  readonly senderUserId: string;
  readonly mine: boolean;
  /** The text (a file's caption), or null when it could not be opened (see `problem`). */
  readonly text: string | null;
  /** The file sent with it, if any (fetch it with `Messenger.downloadAttachment`). */
  readonly attachment: AttachmentView | null;
  readonly problem: string | null;
  readonly recalled: boolean;
  readonly sent: Date | null;
  /** When the server purges it for everyone (a lifespan), if set. */
  readonly expires: Date | null;
  /** For own messages: how far the other side got. */
  readonly status: "sent" | "delivered" | "read";
}

/** A group conversation: the messages addressed to one ABE policy that this user satisfies. */
export interface GroupConversationView {
  readonly conversationId: string;
  readonly policy: string;
  readonly lastMessageTime: Date | null;
}

/**
 * A policy as typed (e.g. `"role:nurse" and ("dept:cardiology" or "dept:icu")`): its canonical
 * form, or why it is refused (the same policy language as crates/abe).
 */
export function checkPolicy(text: string): { canonical: string; problem: null } | { canonical: null; problem: string } {
  try {
    return { canonical: Policy.parse(text).canonical(), problem: null };
  } catch (error) {
    return { canonical: null, problem: error instanceof Error ? error.message : "the policy is invalid" };
  }
}

export interface ConversationView {
  readonly peerUserId: string;
  readonly peerName: string;
  readonly lastMessageTime: Date | null;
}

export interface UserView {
  readonly userId: string;
  readonly username: string;
  readonly displayName: string;
}

export interface ContactView extends UserView {
  /** 60 digits in 12 groups of 5, the same on both sides. */
  readonly safetyNumber: string;
  /** "changed": the contact's identity is not the pinned one; sending waits until accepted. */
  readonly trust: "first use" | "trusted" | "changed";
}

export interface DeviceView {
  readonly deviceId: string;
  readonly thisDevice: boolean;
  readonly adminRemoved: boolean;
}

export type MessengerStart =
  | { readonly kind: "ready"; readonly messenger: Messenger }
  /** The account has an identity made on another device: this browser must be linked. */
  | { readonly kind: "needsLink"; readonly reason: "elsewhere" | "removed" | "replaced" }
  | { readonly kind: "needsAal2" }
  /** Another tab of this browser has the device open (two copies of one ratchet state must never both send). */
  | { readonly kind: "otherTab" };

/** A failure the user should read as it is (not from the server). */
export class MessagingError extends Error {
  /** `final`: trying again cannot help (as opposed to something another device may still do). */
  constructor(
    message: string,
    readonly final: boolean = true,
  ) {
    super(message);
    this.name = "MessagingError";
  }
}

/** The google.rpc.ErrorInfo reason of a failed call, if the server gave one. */
export function errorReason(error: unknown): string | null {
  if (!(error instanceof ConnectError)) return null;
  for (const detail of error.details) {
    const incoming = detail as { type?: unknown; value?: unknown };
    if (incoming.type !== "google.rpc.ErrorInfo" || !(incoming.value instanceof Uint8Array)) continue;
    try {
      const reader = new BinaryReader(incoming.value);
      while (reader.pos < reader.len) {
        const [field, wireType] = reader.tag();
        if (field === 1 && wireType === WireType.LengthDelimited) return reader.string();
        reader.skip(wireType);
      }
    } catch {
      return null;
    }
  }
  return null;
}

/** `lp("caremesh-key-signature-v1") lp("signed-prekey") lp(user) lp(identity key id) lp(prekey id) lp(public)`. */
function v1SignedPrekeyMessage(userId: string, identityKeyId: string, keyId: string, publicKey: Uint8Array): Uint8Array {
  return new Encoder("caremesh-key-signature-v1").field("signed-prekey").field(userId).field(identityKeyId).field(keyId).field(publicKey).finish();
}

/** What this browser's encrypted store keeps of an opened message (`m:<message id>`). */
interface OpenedMessage {
  text: string;
  attachment?: StoredAttachment;
}

/** The part of a content the user reads (kinds 1 and 4). */
function openedOf(content: Content): OpenedMessage | null {
  switch (content.kind) {
    case 1:
      return { text: new TextDecoder().decode(content.body) };
    case 4:
      return { text: new TextDecoder().decode(content.caption), attachment: storedAttachment(content.attachment) };
    default:
      return null;
  }
}

function notFound(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.NotFound;
}

interface VerifiedDevices {
  list: DeviceList;
  adminRemoved: string[];
}

interface KnownDevices {
  identity: IdentityPublicKey;
  devices: VerifiedDevices;
}

function active(devices: VerifiedDevices): string[] {
  return devices.list.deviceIds.filter((id) => !devices.adminRemoved.includes(id));
}

function publishedIdentity(identity: IdentityKey): Parameters<typeof verifyIdentity>[0] {
  return {
    keyId: identity.keyId,
    signingPublicKey: identity.signingPublicKey,
    dhPublicKey: identity.dhPublicKey,
    signature: identity.dhPublicKeySignature,
  };
}

function toCryptoBundle(userId: string, bundle: PbDeviceBundle): DeviceBundle {
  const spk = bundle.signedPrekey;
  if (!spk) throw new MessagingError("the directory sent a device bundle without a signed prekey");
  const kem = bundle.kemPrekey?.key;
  const kind = bundle.kemPrekey?.kind;
  return {
    userId,
    deviceId: bundle.deviceId,
    signedPrekey: { keyId: spk.keyId, publicKey: spk.publicKey, signature: spk.signature },
    // Absent or of no known kind: verification refuses it (no downgrade).
    kemPrekey:
      kem && (kind === KemPrekeyKind.ONE_TIME || kind === KemPrekeyKind.LAST_RESORT)
        ? { keyId: kem.keyId, publicKey: kem.publicKey, signature: kem.signature, kind: kind === KemPrekeyKind.ONE_TIME ? KEM_ONE_TIME : KEM_LAST_RESORT }
        : null,
    oneTimePrekey: bundle.oneTimePrekey
      ? { keyId: bundle.oneTimePrekey.keyId, publicKey: bundle.oneTimePrekey.publicKey, signature: new Uint8Array() }
      : null,
  };
}

function toWire(recipientUserId: string, message: RatchetMessage) {
  const h = message.header;
  return {
    recipientUserId,
    recipientDeviceId: h.recipientDeviceId,
    senderDeviceId: h.senderDeviceId,
    ratchetPublicKey: h.dh,
    previousChainLength: h.pn,
    messageNumber: h.n,
    preamble: h.preamble
      ? {
          senderIdentityKeyId: h.preamble.senderIdentityKeyId,
          ephemeralPublicKey: h.preamble.ephemeralPublic,
          signedPrekeyId: h.preamble.signedPrekeyId,
          oneTimePrekeyId: h.preamble.oneTimePrekeyId,
          kemPrekeyId: h.preamble.kemPrekeyId,
          kemPrekeyKind: h.preamble.kemKind,
          kemCiphertext: h.preamble.kemCiphertext,
        }
      : undefined,
    ciphertext: message.ciphertext,
  };
}

function fromWire(c: DeviceCiphertext): RatchetMessage {
  if (c.ratchetPublicKey.length !== 32) throw new MessagingError("a ratchet key that is not 32 bytes");
  const p = c.preamble;
  return {
    header: {
      senderDeviceId: c.senderDeviceId,
      recipientDeviceId: c.recipientDeviceId,
      dh: c.ratchetPublicKey,
      pn: c.previousChainLength,
      n: c.messageNumber,
      preamble: p
        ? {
            senderIdentityKeyId: p.senderIdentityKeyId,
            ephemeralPublic: p.ephemeralPublicKey,
            signedPrekeyId: p.signedPrekeyId,
            oneTimePrekeyId: p.oneTimePrekeyId,
            kemPrekeyId: p.kemPrekeyId,
            kemKind: p.kemPrekeyKind,
            kemCiphertext: p.kemCiphertext,
          }
        : null,
    },
    ciphertext: c.ciphertext,
  };
}

/**
 * Holds this browser's device exclusively (Web Locks) until the returned function is called:
 * two tabs with copies of one ratchet state could both send under the same message keys. Null
 * when another tab holds it. Without Web Locks (old browsers) nothing is held.
 */
function holdDevice(userId: string): Promise<(() => void) | null> {
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  if (!locks) return Promise.resolve(() => undefined);
  return new Promise((resolve, reject) => {
    locks
      .request(`caremesh-device-${userId}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(null);
          return undefined;
        }
        return new Promise<void>((release) => resolve(() => release()));
      })
      .catch(reject);
  });
}

/** The messenger of the open session, so sign-out can close and wipe it. */
let current: Messenger | null = null;

/** Closes the messenger (if any) and deletes `userId`'s device state from this browser. */
export async function wipeDeviceState(userId: string): Promise<void> {
  const messenger = current;
  current = null;
  if (messenger) {
    messenger.close();
    await messenger.store.wipe();
  }
  await new IndexedDbBackend(deviceDatabaseName(userId)).destroy();
}

/**
 * Opens this browser's device for the signed-in user: the stored one (brought up to date with
 * the directory), or, when the account has no identity yet, a new first device, published.
 */
export async function openMessenger(
  client: CaremeshClient,
  options: { startOver?: boolean; baseUrl?: string } = {},
): Promise<MessengerStart> {
  const baseUrl = options.baseUrl ?? location.origin;
  const info = client.session.info;
  if (info === null) throw new MessagingError("not signed in");
  if (info.aal !== "AAL2") return { kind: "needsAal2" };
  if (current && current.userId === info.userId && !current.closed) return { kind: "ready", messenger: current };
  current?.close();
  current = null;
  const release = await holdDevice(info.userId);
  if (release === null) return { kind: "otherTab" };
  try {
    const started = await openHeld(client, info.userId, options.startOver ?? false, baseUrl, release);
    if (started.kind !== "ready") release();
    return started;
  } catch (error) {
    release();
    throw error;
  }
}

async function openHeld(
  client: CaremeshClient,
  userId: string,
  startOver: boolean,
  baseUrl: string,
  release: () => void,
): Promise<MessengerStart> {
  const info = { userId };
  const apis = makeApis(client, baseUrl);
  const store = await EncryptedStore.open(new IndexedDbBackend(deviceDatabaseName(info.userId)));
  const stored = await store.get<DeviceStateJson>(DEVICE_RECORD);
  let state: DeviceState;
  if (stored && stored.user_id === info.userId) {
    state = DeviceState.fromJSON(stored);
  } else {
    // No device in this browser: a first device only if the account has no identity yet, or
    // when the user chose to start over with a new identity (contacts then see a key change and
    // the account's other devices stop working, as with `carectl device new-identity`).
    if (!startOver) {
      try {
        await apis.keys.getIdentityKey({ userId: info.userId, keyId: "" });
        return { kind: "needsLink", reason: "elsewhere" };
      } catch (error) {
        if (!notFound(error)) throw error;
      }
    }
    const identity = IdentityKeyPair.generate(newId(randomBytes));
    const v1Secret = randomBytes(32);
    state = new DeviceState(
      info.userId,
      identity,
      DeviceSecrets.generate(),
      new SessionStore(),
      HistoryKeyRing.generate(),
      new DeviceListTracker(),
      new TrustStore(),
      true,
      { key_id: newId(randomBytes), secret: toHex(v1Secret) },
      false,
      false,
      new Map(),
      [],
      null,
    );
    v1Secret.fill(0);
    // The secrets are stored before their public halves are anywhere.
    await state.save(store);
  }
  const messenger = new Messenger(info.userId, state, store, apis, release);
  const outcome = await messenger.maintain();
  if (outcome !== null) {
    messenger.close();
    await store.wipe();
    return { kind: "needsLink", reason: outcome };
  }
  await messenger.resendPending();
  current = messenger;
  return { kind: "ready", messenger };
}

function makeApis(client: CaremeshClient, baseUrl: string): Apis {
  const transport = createTransport(baseUrl, () => client.session.accessToken());
  return {
    keys: createClient(KeyDirectoryService, transport),
    messages: createClient(MessagingService, transport),
    auth: createClient(AuthService, transport),
    abe: createClient(AbeService, transport),
  };
}

/** A link this browser waits for: the code to show and the wait for an existing device's approval. */
export interface PendingLinkView {
  /** `XXXX-XXXX-XXXX-XXXX`, typed on the existing device. */
  readonly code: string;
  /** `caremesh-link:<link id>:<code>`, for the QR code. */
  readonly qrText: string;
  readonly expires: Date | null;
  /** Resolves once approved (this browser is then a device), or rejects (expired, cancelled). */
  wait(): Promise<MessengerStart>;
  cancel(): void;
}

const LINK_POLL_MS = 1000;
const LINK_WAIT_MS = 10 * 60 * 1000;

/**
 * Starts linking this browser as a new device of the signed-in user (§8): shows a code that an
 * existing device types in; the approval carries the account identity and history keys sealed
 * to this browser's ephemeral key, checked against the published identity before use.
 */
export async function startLink(client: CaremeshClient, options: { baseUrl?: string } = {}): Promise<PendingLinkView> {
  const info = client.session.info;
  if (info === null) throw new MessagingError("not signed in");
  const userId = info.userId;
  const apis = makeApis(client, options.baseUrl ?? location.origin);
  const release = await holdDevice(userId);
  if (release === null) throw new MessagingError("messages are open in another tab of this browser: link from there, or close it first");
  const request = LinkRequest.create(userId);
  let link;
  try {
    const response = await apis.keys.createDeviceLink({
      deviceId: request.deviceId,
      ephemeralPublic: request.ephemeralPublic,
      commitment: request.commitment(),
    });
    link = response.link;
    if (!link) throw new MessagingError("the server answered without the link");
  } catch (error) {
    release();
    throw error;
  }
  const linkId = link.linkId;
  const controller = new AbortController();
  const wait = async (): Promise<MessengerStart> => {
    try {
      const started = await waitHeld();
      if (started.kind !== "ready") release();
      return started;
    } catch (error) {
      release();
      throw error;
    }
  };
  const waitHeld = async (): Promise<MessengerStart> => {
    const started = Date.now();
    let approved;
    for (;;) {
      if (controller.signal.aborted) throw new MessagingError("linking was cancelled");
      const current = (await apis.keys.getDeviceLink({ linkId })).link;
      if (current?.state === DeviceLinkState.APPROVED) {
        approved = current;
        break;
      }
      if (current?.state === DeviceLinkState.EXPIRED || Date.now() - started > LINK_WAIT_MS) {
        throw new MessagingError("the link expired before a device approved it: start again");
      }
      await new Promise((resolve) => setTimeout(resolve, LINK_POLL_MS));
    }
    const provisioning = request.open({ approverPublic: approved.approverPublic, sealed: approved.sealed });
    request.wipe();
    const published = await apis.keys.getIdentityKey({ userId, keyId: "" });
    const identity = published.identityKey ? verifyIdentity(publishedIdentity(published.identityKey), userId) : null;
    if (!identity || !sameIdentity(identity, provisioning.identity.public())) {
      provisioning.identity.wipe();
      throw new MessagingError(
        "the identity this browser received is not your account's published identity: the link was not made by one of your devices; start again",
      );
    }
    const store = await EncryptedStore.open(new IndexedDbBackend(deviceDatabaseName(userId)));
    const state = new DeviceState(
      userId,
      provisioning.identity,
      DeviceSecrets.generate(request.deviceId),
      new SessionStore(),
      provisioning.history,
      new DeviceListTracker(),
      new TrustStore(),
      false,
      null,
      true,
      false,
      new Map(),
      [],
      null,
    );
    await state.save(store);
    current?.close();
    const messenger = new Messenger(userId, state, store, apis, release);
    const outcome = await messenger.maintain();
    if (outcome !== null) {
      await store.wipe();
      return { kind: "needsLink", reason: outcome };
    }
    current = messenger;
    return { kind: "ready", messenger };
  };
  return {
    code: request.code(),
    qrText: request.qrText(link.linkId),
    expires: link.expireTime ? timestampDate(link.expireTime) : null,
    wait,
    cancel: () => controller.abort(),
  };
}

type Apis = {
  keys: Client<typeof KeyDirectoryService>;
  messages: Client<typeof MessagingService>;
  auth: Client<typeof AuthService>;
  abe: Client<typeof AbeService>;
};

export class Messenger {
  closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly contacts = new Map<string, KnownDevices>();
  private readonly users = new Map<string, UserView>();
  private readonly watchers = new Set<AbortController>();
  /** The ABE public parameters and this account's attribute keys (memory only), for group messages. */
  private readonly abeKeys: AttributeKeyring;
  /** Messages that cannot open here for good (a cryptographic refusal), not tried again. */
  private readonly unopenable = new Map<string, string>();

  constructor(
    readonly userId: string,
    private readonly state: DeviceState,
    readonly store: EncryptedStore,
    private readonly api: Apis,
    /** Lets go of the device's lock (see holdDevice). */
    private readonly release: () => void = () => undefined,
  ) {
    this.abeKeys = new AttributeKeyring(api.abe, () => userId, async () => state.identity, (message) => new MessagingError(message));
  }

  get deviceId(): string {
    return this.state.deviceId;
  }

  /** Stops live delivery; the object is unusable afterwards. */
  close(): void {
    this.closed = true;
    this.release();
    for (const watcher of this.watchers) watcher.abort();
    this.watchers.clear();
    this.abeKeys.wipe();
  }

  /** Runs `task` after every earlier one: the device state changes one operation at a time. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private save(): Promise<void> {
    return this.state.save(this.store);
  }

  // ---- keys in the directory (SDK: maintain_keys, maintain_device) ----

  /** Brings the directory up to date; a reason when this browser's device is no longer usable. */
  async maintain(): Promise<"removed" | "replaced" | null> {
    const s = this.state;
    if (s.primary && !s.bundlePublished && s.v1Prekey) {
      // The account identity, published the v1 way (PublishKeyBundle), as the SDK's first device.
      const secret = fromHex(s.v1Prekey.secret, 32);
      const publicKey = x25519Public(secret);
      secret.fill(0);
      const published = s.identity.publish(this.userId);
      await this.api.keys.publishKeyBundle({
        identityKey: {
          keyId: published.keyId,
          signingPublicKey: published.signingPublicKey,
          dhPublicKey: published.dhPublicKey,
          dhPublicKeySignature: published.signature,
        },
        signedPrekey: {
          keyId: s.v1Prekey.key_id,
          publicKey,
          signature: s.identity.signRaw(v1SignedPrekeyMessage(this.userId, s.identity.keyId, s.v1Prekey.key_id, publicKey)),
        },
        oneTimePrekeys: [],
      });
      s.bundlePublished = true;
      await this.save();
    }
    // This device in the user's list (the first device creates the list).
    let own: VerifiedDevices | null = null;
    // The version of a list signed by an identity this device replaced (starting over), if any.
    let staleVersion = 0n;
    try {
      const response = await this.api.keys.getDeviceList({ userId: this.userId });
      const list = response.deviceList;
      if (!list) throw new MessagingError("the directory answered without a device list");
      if (list.identityKeyId !== s.identity.keyId) {
        if (!(await this.identityIsCurrent())) return "replaced";
        staleVersion = list.version;
      } else {
        own = await this.verifiedDevices(this.userId, s.identity.public());
      }
    } catch (error) {
      if (!notFound(error)) throw error;
    }
    if (own === null) {
      const list = new DeviceList(this.userId, s.identity.keyId, staleVersion + 1n, [this.deviceId]);
      await this.api.keys.updateDeviceList({
        version: list.version,
        deviceIds: [...list.deviceIds],
        signature: list.sign(s.identity),
        historyKeyId: s.history.current().historyKeyId,
      });
      s.lists.observe(list);
      await this.save();
    } else if (!own.list.contains(this.deviceId) || own.adminRemoved.includes(this.deviceId)) {
      return "removed";
    }
    // Weekly rotation of the signed and last-resort prekeys (§3.2).
    const now = Date.now();
    if (s.rotatedAt === null) s.rotatedAt = now;
    else if (now - s.rotatedAt > WEEK_MS) {
      if (now - s.rotatedAt > PREVIOUS_PREKEY_RETENTION_MS) s.secrets.forgetPrevious();
      s.secrets.rotate(s.identity, this.userId);
      s.rotatedAt = now;
      s.published = false;
    }
    const signedPrekey = s.secrets.signedPrekeyPublished(s.identity, this.userId);
    const lastResort = s.secrets.lastResortPublished(s.identity, this.userId);
    const fresh = !s.published && s.secrets.oneTimeCounts().x25519 === 0;
    const oneTime = fresh ? s.secrets.newOneTimePrekeys(s.identity, this.userId, DEVICE_PREKEY_BATCH) : { x25519: [], kem: [] };
    s.published = true;
    await this.save();
    const response = await this.api.keys.publishDevice({
      deviceId: this.deviceId,
      signedPrekey,
      lastResortPrekey: lastResort,
      oneTimePrekeys: oneTime.x25519.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })),
      kemOneTimePrekeys: oneTime.kem,
    });
    const stock = response.stock;
    const low = Math.max(stock?.lowWatermark ?? 1, 1);
    if (stock && (stock.oneTimePrekeyCount < low || stock.kemOneTimePrekeyCount < low)) {
      const more = s.secrets.newOneTimePrekeys(s.identity, this.userId, DEVICE_PREKEY_BATCH);
      await this.save();
      await this.api.keys.uploadDevicePrekeys({
        deviceId: this.deviceId,
        oneTimePrekeys: more.x25519.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })),
        kemOneTimePrekeys: more.kem,
      });
    }
    return null;
  }

  // ---- identities and device lists ----

  private async currentIdentity(userId: string): Promise<IdentityPublicKey> {
    const response = await this.api.keys.getIdentityKey({ userId, keyId: "" });
    if (!response.identityKey) throw new MessagingError("the directory answered without an identity key");
    return verifyIdentity(publishedIdentity(response.identityKey), userId);
  }

  /** A contact's identity checked against the pinned one (pinned on first use). */
  private async recipientIdentity(userId: string): Promise<IdentityPublicKey> {
    if (userId === this.userId) return this.state.identity.public();
    const identity = await this.currentIdentity(userId);
    const check = this.state.trust.check(userId, identity);
    if (check.kind === "changed") {
      throw new MessagingError(
        `${this.users.get(userId)?.username ?? userId}'s identity key changed since you last talked: compare safety numbers and accept the new key before sending`,
      );
    }
    if (check.kind === "firstUse") await this.save();
    return identity;
  }

  /** Fetches and verifies a user's device list, refusing rollbacks and noting changes. */
  private async verifiedDevices(userId: string, identity: IdentityPublicKey): Promise<VerifiedDevices> {
    let response;
    try {
      response = await this.api.keys.getDeviceList({ userId });
    } catch (error) {
      if (notFound(error) && userId !== this.userId) throw noDeviceYet(this.users.get(userId)?.username ?? userId);
      throw error;
    }
    const signed = response.deviceList;
    if (!signed) throw new MessagingError("the directory answered without a device list");
    const list = DeviceList.verify(userId, identity, signed.version, signed.deviceIds, signed.signature);
    const firstSight = this.state.lists.seenVersion(userId) === undefined;
    const change = this.state.lists.observe(list);
    for (const removed of change.removed) this.state.sessions.forgetDevice({ userId, deviceId: removed });
    if (!firstSight && userId !== this.userId) {
      const name = this.users.get(userId)?.username ?? userId;
      for (const added of change.added) this.state.notices.push(`${name} added a device (${added})`);
      for (const removed of change.removed) this.state.notices.push(`${name} removed a device (${removed})`);
    }
    if (change.added.length + change.removed.length > 0) await this.save();
    return { list, adminRemoved: [...response.adminRemovedDeviceIds] };
  }

  private async knownDevices(userId: string, refresh: boolean): Promise<KnownDevices> {
    const cached = this.contacts.get(userId);
    if (!refresh && cached) return cached;
    let identity: IdentityPublicKey;
    try {
      identity = await this.recipientIdentity(userId);
    } catch (error) {
      if (notFound(error)) throw noDeviceYet(this.users.get(userId)?.username ?? userId);
      throw error;
    }
    const known = { identity, devices: await this.verifiedDevices(userId, identity) };
    this.contacts.set(userId, known);
    return known;
  }

  /** Notices about contacts' device changes not shown yet (taken: shown once). */
  takeNotices(): Promise<string[]> {
    return this.exclusive(async () => {
      const notices = this.state.notices.splice(0);
      if (notices.length > 0) await this.save();
      return notices;
    });
  }

  // ---- people ----

  async findUser(username: string): Promise<UserView> {
    const response = await this.api.auth.lookupUser({ lookup: { case: "username", value: username.trim() } });
    return this.remember(response.profile, username.trim());
  }

  async user(userId: string): Promise<UserView> {
    const known = this.users.get(userId);
    if (known) return known;
    const response = await this.api.auth.lookupUser({ lookup: { case: "userId", value: userId } });
    return this.remember(response.profile, userId);
  }

  private remember(profile: { userId: string; username: string; displayName: string } | undefined, asked: string): UserView {
    if (!profile) throw new MessagingError(`no user ${asked}`);
    const view = { userId: profile.userId, username: profile.username, displayName: profile.displayName };
    this.users.set(view.userId, view);
    return view;
  }

  /** The safety number with a contact and how their identity compares with the pinned one. */
  contact(userId: string): Promise<ContactView> {
    return this.exclusive(async () => {
      const who = await this.user(userId);
      const theirs = await this.currentIdentity(userId);
      const check = this.state.trust.check(userId, theirs);
      await this.save();
      return {
        ...who,
        safetyNumber: safetyNumber(this.userId, this.state.identity.public(), userId, theirs),
        trust: check.kind === "firstUse" ? "first use" : check.kind === "trusted" ? "trusted" : "changed",
      } as const;
    });
  }

  /** Accepts a contact's new identity (after comparing safety numbers). */
  async acceptIdentity(userId: string): Promise<ContactView> {
    await this.exclusive(async () => {
      const theirs = await this.currentIdentity(userId);
      this.contacts.delete(userId);
      this.state.trust.acceptNew(userId, theirs);
      await this.save();
    });
    return this.contact(userId);
  }

  // ---- sending (SDK: sesame.rs) ----

  /** Sends `text`; with `lifespanSeconds` (60 to 31622400) the server purges it for everyone then. */
  send(recipientUserId: string, text: string, lifespanSeconds?: number): Promise<MessageView> {
    const content: Content = { kind: 1, body: new TextEncoder().encode(text) };
    return this.sendContent(recipientUserId, newId(randomBytes), content, lifespanSeconds);
  }

  /**
   * Sends `file` with `caption`: seals it here under a fresh key, uploads it (resuming after
   * transient failures; `onProgress` hears the blob bytes stored), then sends the message that
   * names it. Errors keep the server's reason (ATTACHMENT_TOO_LARGE, ATTACHMENT_QUOTA_EXCEEDED).
   */
  async sendFile(
    recipientUserId: string,
    file: File,
    caption: string,
    options: { lifespanSeconds?: number; onProgress?: Progress } = {},
  ): Promise<MessageView> {
    // The recipient's devices are checked before anything is uploaded.
    await this.knownDevices(recipientUserId, false);
    const upload = prepareUpload(file);
    // Not under `exclusive`: messages keep arriving while the file goes up.
    const attachment = await uploadAttachment(this.api.messages, upload, options.onProgress);
    const content: Content = { kind: 4, caption: new TextEncoder().encode(caption), attachment };
    return this.sendContent(recipientUserId, upload.messageId, content, options.lifespanSeconds);
  }

  /**
   * Downloads, checks and decrypts the file of a message this browser opened: a Blob only once
   * every chunk and the digest check out (`onProgress` hears the blob bytes received).
   */
  async downloadAttachment(messageId: string, onProgress?: Progress, signal?: AbortSignal): Promise<Blob> {
    const stored = await this.store.get<OpenedMessage>(`m:${messageId}`);
    if (!stored?.attachment) throw new MessagingError("this message has no file that this browser can open");
    return downloadAttachment(this.api.messages, attachmentRef(stored.attachment), onProgress, signal);
  }

  private sendContent(recipientUserId: string, messageId: string, content: Content, lifespanSeconds?: number): Promise<MessageView> {
    return this.exclusive(async () => {
      let refresh = false;
      for (;;) {
        const request = await this.seal(recipientUserId, messageId, content, refresh, lifespanSeconds);
        try {
          const response = await this.api.messages.sendMessage(request);
          await this.finishPending(messageId);
          if (!response.message) throw new MessagingError("the server answered the send without the message");
          return this.view(response.message, openedOf(content), null);
        } catch (error) {
          const reason = errorReason(error);
          if (!refresh && (reason === DEVICE_LIST_CHANGED || reason === HISTORY_KEY_ROTATED)) {
            // The lists went stale (or another device rotated the history key): fetch, seal again once.
            if (reason === HISTORY_KEY_ROTATED) await this.catchUpHistory();
            refresh = true;
            continue;
          }
          if (error instanceof ConnectError && (error.code === Code.Unavailable || error.code === Code.DeadlineExceeded)) {
            throw error; // kept: sent again when the device opens next
          }
          await this.finishPending(messageId);
          throw error;
        }
      }
    });
  }

  private async seal(
    recipientUserId: string,
    messageId: string,
    content: Content,
    refresh: boolean,
    lifespanSeconds?: number,
  ): Promise<SendMessageRequest> {
    const me = this.userId;
    const recipient = await this.knownDevices(recipientUserId, refresh);
    const own = recipientUserId === me ? null : await this.knownDevices(me, refresh);
    const targets: { peer: PeerDevice; devices: VerifiedDevices; identity: IdentityPublicKey }[] = [];
    for (const [userId, known] of [
      [recipientUserId, recipient],
      [me, own],
    ] as const) {
      if (!known) continue;
      for (const deviceId of active(known.devices)) {
        if (deviceId !== this.deviceId) targets.push({ peer: { userId, deviceId }, devices: known.devices, identity: known.identity });
      }
    }
    await this.startMissingSessions(targets);
    const plaintext = encodeContent(content);
    const deviceCiphertexts = targets.map((t) => toWire(t.peer.userId, this.state.sessions.encrypt(t.peer, messageId, plaintext)));
    plaintext.fill(0);
    let archive;
    const opened = openedOf(content);
    if (opened !== null) {
      const context: ArchiveContext = { ownerUserId: me, messageId, senderUserId: me, senderDeviceId: this.deviceId, recipientUserId };
      const copy = sealArchive(this.state.history.current(), context, content);
      archive = { ownerUserId: "", historyKeyId: copy.historyKeyId, nonce: copy.nonce, ciphertext: copy.ciphertext };
    }
    const request = create(SendMessageRequestSchema, {
      messageId,
      content: { case: "direct", value: { recipientUserId } },
      senderDeviceId: this.deviceId,
      deviceCiphertexts,
      archive,
      lifespan: lifespanSeconds ? { seconds: BigInt(lifespanSeconds), nanos: 0 } : undefined,
    });
    this.state.pending.set(messageId, toHex(toBinary(SendMessageRequestSchema, request)));
    // This device's own copy, and the advanced ratchets with the request, are stored before the
    // request leaves: a crash resends these very ciphertexts and no message key is used twice.
    if (opened !== null) await this.store.put(`m:${messageId}`, opened);
    await this.save();
    return request;
  }

  private async startMissingSessions(targets: { peer: PeerDevice; devices: VerifiedDevices; identity: IdentityPublicKey }[]): Promise<void> {
    const missing = targets.filter((t) => !this.state.sessions.canSendTo(t.peer));
    const byUser = new Map<string, typeof missing>();
    for (const t of missing) byUser.set(t.peer.userId, [...(byUser.get(t.peer.userId) ?? []), t]);
    for (const [userId, wanted] of byUser) {
      const response = await this.api.keys.fetchDeviceBundles({ userId, deviceIds: wanted.map((t) => t.peer.deviceId) });
      const { devices, identity } = wanted[0]!;
      for (const bundle of response.bundles) {
        const verified = verifyDeviceBundle(toCryptoBundle(userId, bundle), identity, devices.list);
        this.state.sessions.start(this.state.identity, this.userId, this.deviceId, verified);
      }
      for (const t of wanted) {
        if (!this.state.sessions.canSendTo(t.peer)) {
          throw new MessagingError(`the directory has no keys for device ${t.peer.deviceId}: it may have been removed; try again`);
        }
      }
    }
  }

  private async finishPending(messageId: string): Promise<void> {
    if (this.state.pending.delete(messageId)) await this.save();
  }

  /** Sends again what was saved but may not have left before the page closed. */
  async resendPending(): Promise<void> {
    for (const [messageId, encoded] of [...this.state.pending]) {
      try {
        await this.api.messages.sendMessage(fromBinary(SendMessageRequestSchema, fromHex(encoded)));
        await this.finishPending(messageId);
      } catch (error) {
        if (error instanceof ConnectError && error.code === Code.Unavailable) return;
        await this.finishPending(messageId); // refused for good: the user saw the send fail
      }
    }
  }

  // ---- group messages (SDK: group.rs) ----

  /**
   * Sends `text` to everyone whose attributes satisfy `policy` (doctors and nurses): sealed under
   * the policy (CP-ABE and AES-256-GCM) and signed with this account's identity key.
   */
  sendGroup(policyText: string, text: string, lifespanSeconds?: number): Promise<MessageView> {
    return this.exclusive(async () => {
      const policy = Policy.parse(policyText);
      const canonical = policy.canonical();
      const { version, params } = await this.abeKeys.publicParams();
      const messageId = newId(randomBytes);
      const body = new TextEncoder().encode(text);
      const sealed = sealUnderPolicy(params, policy, groupContentAad(messageId, this.userId, canonical), body);
      const envelope = { version: POLICY_ENVELOPE_VERSION, paramsVersion: version, senderIdentityKeyId: this.state.identity.keyId, ...sealed };
      const signature = signGroupMessage({ messageId, senderUserId: this.userId, policy: canonical, envelope }, this.state.identity);
      // The sender keeps what it wrote (its attributes need not satisfy the policy).
      await this.store.put(`m:${messageId}`, { text });
      const response = await this.api.messages.sendMessage({
        messageId,
        content: { case: "group", value: { policy: canonical, envelope: { ...envelope, signature } } },
        lifespan: lifespanSeconds ? { seconds: BigInt(lifespanSeconds), nanos: 0 } : undefined,
      });
      if (!response.message) throw new MessagingError("the server answered the send without the message");
      return this.view(response.message, { text }, null);
    });
  }

  /** Verifies a group message's signature and opens it with a satisfying attribute key. */
  private async openGroup(message: Message): Promise<OpenedMessage> {
    const envelope = message.groupEnvelope;
    if (!envelope) throw new MessagingError("the group message has no envelope");
    let identity = (await this.knownDevices(message.senderUserId, false)).identity;
    if (identity.keyId !== envelope.senderIdentityKeyId) identity = (await this.knownDevices(message.senderUserId, true)).identity;
    verifyGroupMessage({ messageId: message.messageId, senderUserId: message.senderUserId, policy: message.policy, envelope }, identity, envelope.signature);
    const policy = Policy.parse(message.policy);
    const key = await this.abeKeys.keyFor(policy, envelope.paramsVersion, "message");
    const plaintext = openUnderPolicy(key, envelope, groupContentAad(message.messageId, message.senderUserId, message.policy));
    const opened = { text: new TextDecoder().decode(plaintext) };
    plaintext.fill(0);
    await this.store.put(`m:${message.messageId}`, opened);
    return opened;
  }

  /** Group conversations this user takes part in (one per policy), most recent first. */
  async groupConversations(): Promise<GroupConversationView[]> {
    const response = await this.api.messages.listConversations({ pageSize: 100, pageToken: "" });
    return response.conversations
      .filter((c) => c.kind === MessageKind.GROUP)
      .map((c) => ({ conversationId: c.conversationId, policy: c.policy, lastMessageTime: c.lastMessageTime ? timestampDate(c.lastMessageTime) : null }));
  }

  /** A group conversation, oldest first, opened. */
  groupHistory(conversationId: string): Promise<MessageView[]> {
    return this.exclusive(async () => {
      const response = await this.api.messages.listConversationMessages({
        target: { case: "conversationId", value: conversationId },
        pageSize: 200,
        pageToken: "",
        order: SortOrder.OLDEST_FIRST,
        deviceId: this.deviceId,
      });
      const views: MessageView[] = [];
      for (const message of response.messages) views.push(await this.open(message));
      return views;
    });
  }

  // ---- reading ----

  /** Conversations, most recent first. */
  async conversations(): Promise<ConversationView[]> {
    const response = await this.api.messages.listConversations({ pageSize: 100, pageToken: "" });
    const out: ConversationView[] = [];
    for (const c of response.conversations) {
      if (c.peerUserId === "") continue; // group conversations are not shown here
      const who = await this.user(c.peerUserId).catch(() => null);
      out.push({
        peerUserId: c.peerUserId,
        peerName: who ? who.displayName || who.username : c.peerUserId,
        lastMessageTime: c.lastMessageTime ? timestampDate(c.lastMessageTime) : null,
      });
    }
    return out;
  }

  /** A whole conversation with a user, oldest first, opened. */
  history(peerUserId: string): Promise<MessageView[]> {
    return this.exclusive(async () => {
      const messages: Message[] = [];
      let pageToken = "";
      do {
        const response = await this.api.messages.listConversationMessages({
          target: { case: "peerUserId", value: peerUserId },
          pageSize: 200,
          pageToken,
          order: SortOrder.OLDEST_FIRST,
          deviceId: this.deviceId,
        });
        messages.push(...response.messages);
        pageToken = response.nextPageToken;
      } while (pageToken !== "");
      const views: MessageView[] = [];
      for (const message of messages) views.push(await this.open(message));
      return views;
    });
  }

  /** Marks messages from others as read (receipts). */
  async markRead(messageIds: string[]): Promise<void> {
    if (messageIds.length > 0) await this.api.messages.sendReceipts({ messageIds, type: ReceiptType.READ });
  }

  /**
   * Live delivery over the server stream: each new message (opened) goes to `onMessage`; the
   * stream reconnects after a failure from where it stopped. Returns a function that stops it.
   */
  watch(onMessage: (message: MessageView) => void, onError: (error: unknown) => void): () => void {
    const controller = new AbortController();
    this.watchers.add(controller);
    let cursor = "";
    const loop = async () => {
      while (!controller.signal.aborted) {
        try {
          for await (const item of this.api.messages.subscribe({ cursor, deviceId: this.deviceId }, { signal: controller.signal })) {
            if (item.cursor) cursor = item.cursor;
            if (!item.message) continue;
            const message = item.message;
            const view = await this.exclusive(() => this.open(message));
            if (!view.mine) {
              this.api.messages.sendReceipts({ messageIds: [view.messageId], type: ReceiptType.DELIVERED }).catch(() => undefined);
            }
            onMessage(view);
          }
        } catch (error) {
          if (controller.signal.aborted) return;
          onError(error);
        }
        if (!controller.signal.aborted) await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    };
    void loop();
    return () => {
      controller.abort();
      this.watchers.delete(controller);
    };
  }

  private async view(message: Message, opened: OpenedMessage | null, problem: string | null): Promise<MessageView> {
    const mine = message.senderUserId === this.userId;
    const peer = mine ? message.recipientUserId : message.senderUserId;
    const receipt = message.receipts.find((r) => r.userId === peer);
    return {
      messageId: message.messageId,
      conversationPeerId: message.kind === MessageKind.GROUP ? "" : peer,
      conversationId: message.conversationId,
      policy: message.kind === MessageKind.GROUP ? message.policy : null,
      senderUserId: message.senderUserId,
      mine,
      text: opened?.text ?? null,
      attachment: opened?.attachment ? attachmentView(opened.attachment) : null,
      problem,
      recalled: message.state === MessageState.RECALLED,
      sent: message.createTime ? timestampDate(message.createTime) : null,
      expires: message.expireTime ? timestampDate(message.expireTime) : null,
      status: receipt?.readTime ? "read" : receipt?.deliverTime ? "delivered" : "sent",
    };
  }

  /** Opens one message: the stored plaintext, this device's ciphertext, or the archive copy. */
  private async open(message: Message): Promise<MessageView> {
    if (message.state === MessageState.RECALLED) {
      await this.store.delete(`m:${message.messageId}`);
      return this.view(message, null, null);
    }
    const stored = await this.store.get<OpenedMessage>(`m:${message.messageId}`);
    if (stored) return this.view(message, stored, null);
    const known = this.unopenable.get(message.messageId);
    if (known !== undefined) return this.view(message, null, known);
    try {
      return this.view(message, await this.openNew(message), null);
    } catch (error) {
      const problem = describeProblem(error);
      // A network failure is tried again next time; a refusal by the cryptography is final.
      if (error instanceof CryptoError || (error instanceof MessagingError && error.final)) this.unopenable.set(message.messageId, problem);
      return this.view(message, null, problem);
    }
  }

  private async openNew(message: Message): Promise<OpenedMessage> {
    if (message.kind === MessageKind.GROUP) return this.openGroup(message);
    if (message.protocolVersion !== 2) throw new MessagingError("sent with protocol v1, which only the device it was sent to can open");
    const ciphertext = message.deviceCiphertext;
    if (!ciphertext) return this.openArchiveCopy(message);
    const sender = message.senderUserId;
    let identity = (await this.knownDevices(sender, false)).identity;
    const named = ciphertext.preamble?.senderIdentityKeyId;
    if (named && named !== identity.keyId) identity = (await this.knownDevices(sender, true)).identity;
    let plaintext: Uint8Array;
    try {
      plaintext = this.state.sessions.decrypt(this.state.identity, this.userId, this.state.secrets, sender, identity, message.messageId, fromWire(ciphertext));
    } catch (error) {
      if (error instanceof CryptoError && error.code === "NoSession") {
        // Our next send to that device starts a new session.
        this.state.sessions.forgetDevice({ userId: sender, deviceId: ciphertext.senderDeviceId });
      }
      if (message.archive) return this.openArchiveCopy(message);
      throw error;
    }
    const content = decodeContent(plaintext);
    plaintext.fill(0);
    switch (content.kind) {
      case 1:
      case 4: {
        const opened = openedOf(content)!;
        await this.store.put(`m:${message.messageId}`, opened);
        await this.save();
        if (sender !== this.userId && !message.archive) await this.storeArchiveCopy(message, content);
        return opened;
      }
      case 2:
        if (sender !== this.userId) throw new MessagingError("a history key from another user was refused");
        this.state.history.pushCurrent({ historyKeyId: content.historyKeyId, key: content.key });
        await this.save();
        throw new MessagingError("a new history key from your other device (not a message)");
      default:
        await this.save();
        throw new MessagingError("a new session (not a message)");
    }
  }

  private async openArchiveCopy(message: Message): Promise<OpenedMessage> {
    const copy = message.archive;
    if (!copy) throw new MessagingError("sent before this browser was linked, and no archive copy exists yet", false);
    const content = openArchive({ historyKeyId: copy.historyKeyId, nonce: copy.nonce, ciphertext: copy.ciphertext }, this.state.history, {
      ownerUserId: this.userId,
      messageId: message.messageId,
      senderUserId: message.senderUserId,
      senderDeviceId: message.senderDeviceId,
      recipientUserId: message.recipientUserId,
    });
    const opened = openedOf(content);
    if (opened === null) throw new MessagingError("an archive copy of something other than a message");
    // Kept like a message opened from its ciphertext (a file's key is needed to download it).
    await this.store.put(`m:${message.messageId}`, opened);
    return opened;
  }

  private async storeArchiveCopy(message: Message, content: Content): Promise<void> {
    const seal = () => {
      const copy = sealArchive(this.state.history.current(), {
        ownerUserId: this.userId,
        messageId: message.messageId,
        senderUserId: message.senderUserId,
        senderDeviceId: message.senderDeviceId,
        recipientUserId: message.recipientUserId,
      }, content);
      return { messageId: message.messageId, archive: { ownerUserId: "", historyKeyId: copy.historyKeyId, nonce: copy.nonce, ciphertext: copy.ciphertext } };
    };
    try {
      await this.api.messages.storeArchiveCopy(seal());
    } catch (error) {
      // Another device replaced the history key: that device (or this one, once caught up) stores it.
      if (errorReason(error) !== HISTORY_KEY_ROTATED) throw error;
    }
  }

  /** Opens what this user's other devices sent to this one (a new history key after a removal). */
  private async catchUpHistory(): Promise<void> {
    const response = await this.api.messages.listConversationMessages({
      target: { case: "peerUserId", value: this.userId },
      pageSize: 200,
      pageToken: "",
      order: SortOrder.OLDEST_FIRST,
      deviceId: this.deviceId,
    });
    for (const message of response.messages) await this.open(message);
  }

  /** Recalls a message this user sent: deleted for everyone (ciphertexts and archive copies). */
  recall(messageId: string): Promise<MessageView> {
    return this.exclusive(async () => {
      const response = await this.api.messages.recallMessage({ messageId });
      await this.store.delete(`m:${messageId}`);
      if (!response.message) throw new MessagingError("the server answered the recall without the message");
      return this.view(response.message, null, null);
    });
  }

  /**
   * For other client modules only (never the UI): the account identity (ABE user keys are
   * sealed to it) and this device's encrypted store, for records of their own name prefix.
   */
  deviceAccess(): { userId: string; identity: IdentityKeyPair; store: EncryptedStore } {
    return { userId: this.userId, identity: this.state.identity, store: this.store };
  }

  // ---- devices ----

  devices(): Promise<DeviceView[]> {
    return this.exclusive(async () => {
      const own = await this.verifiedDevices(this.userId, this.state.identity.public());
      return own.list.deviceIds.map((deviceId) => ({
        deviceId,
        thisDevice: deviceId === this.deviceId,
        adminRemoved: own.adminRemoved.includes(deviceId),
      }));
    });
  }

  /** Removes another device: a signed list without it and a new history key for the rest (§7.3). */
  removeDevice(deviceId: string): Promise<void> {
    return this.exclusive(async () => {
      if (deviceId === this.deviceId) throw new MessagingError("a device cannot remove itself: remove it from another of your devices");
      const s = this.state;
      const own = await this.verifiedDevices(this.userId, s.identity.public());
      const list = own.list.withoutDevice(deviceId);
      const key = { historyKeyId: newId(randomBytes), key: randomBytes(32) };
      s.history.pushCurrent(key);
      await this.save();
      await this.api.keys.updateDeviceList({
        version: list.version,
        deviceIds: [...list.deviceIds],
        signature: list.sign(s.identity),
        historyKeyId: key.historyKeyId,
      });
      s.lists.observe(list);
      s.sessions.forgetDevice({ userId: this.userId, deviceId });
      this.contacts.delete(this.userId);
      await this.save();
      const others = list.deviceIds.filter((id) => id !== this.deviceId && !own.adminRemoved.includes(id));
      if (others.length > 0) {
        const content: Content = { kind: 2, historyKeyId: key.historyKeyId, key: key.key };
        const messageId = newId(randomBytes);
        const request = await this.seal(this.userId, messageId, content, true);
        await this.api.messages.sendMessage(request);
        await this.finishPending(messageId);
      }
    });
  }

  /**
   * Approves the pending link whose code the user typed (from the new device's screen): seals the
   * account identity and history keys to that device and adds it to the signed device list.
   * Returns the new device's id.
   */
  approveLink(code: string): Promise<string> {
    return this.exclusive(async () => {
      const response = await this.api.keys.listDeviceLinks({ pageSize: 10, pageToken: "" });
      const links: (PendingLink & { linkId: string })[] = response.links.map((l) => ({
        linkId: l.linkId,
        userId: this.userId,
        deviceId: l.deviceId,
        ephemeralPublic: l.ephemeralPublic,
        commitment: l.commitment,
      }));
      const link = findPendingLink(links, code) as PendingLink & { linkId: string };
      const s = this.state;
      const own = await this.verifiedDevices(this.userId, s.identity.public());
      const sealed = sealProvisioning(link, code, { identity: s.identity, history: s.history, approverDeviceId: this.deviceId });
      const list = own.list.withDevice(link.deviceId);
      await this.api.keys.approveDeviceLink({
        linkId: link.linkId,
        approverPublic: sealed.approverPublic,
        sealed: sealed.sealed,
        deviceListVersion: list.version,
        deviceIds: [...list.deviceIds],
        deviceListSignature: list.sign(s.identity),
      });
      s.lists.observe(list);
      this.contacts.delete(this.userId);
      await this.save();
      return link.deviceId;
    });
  }

  /** Whether the identity this browser holds is the account's published one. */
  async identityIsCurrent(): Promise<boolean> {
    return sameIdentity(await this.currentIdentity(this.userId), this.state.identity.public());
  }
}

function noDeviceYet(name: string): MessagingError {
  return new MessagingError(
    `${name} has no device for end-to-end messages yet: they must sign in once with an up-to-date app (or carectl) before you can write to them`,
  );
}

/** Why a message could not be opened, for a person (never its content). */
function describeProblem(error: unknown): string {
  if (error instanceof ConnectError) return error.rawMessage;
  if (error instanceof Error) return error.message;
  return "it could not be opened";
}
