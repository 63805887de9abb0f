// This browser as a protocol v2 device (docs/protocol.md), as the Rust SDK's `devices.rs` and
// `messaging.rs` keep it: the account identity, this device's secret prekeys, the Double Ratchet
// sessions, the history key ring, the newest device list seen per user, the pinned identities of
// contacts, and sends saved before they leave. All of it is one JSON record in the encrypted
// store (store.ts); opened plaintexts are records of their own ("m:<message id>").

import { toHex } from "../crypto/bytes";
import { DeviceSecrets, type DeviceSecretsJson } from "../crypto/device";
import { DeviceListTracker, type DeviceListTrackerJson } from "../crypto/deviceList";
import { HistoryKeyRing, type HistoryKeyRingJson } from "../crypto/archive";
import { IdentityKeyPair, type IdentityKeyPairJson } from "../crypto/identity";
import { TrustStore, type TrustStoreJson } from "../crypto/safety";
import { SessionStore, type SessionStoreJson } from "../crypto/sessions";
import type { EncryptedStore } from "./store";

/** The record holding the device state. */
export const DEVICE_RECORD = "device";

/** A v1 signed prekey: published with the identity (PublishKeyBundle) by the first device only. */
export interface V1PrekeyJson {
  key_id: string;
  secret: string;
}

export interface DeviceStateJson {
  format: 1;
  user_id: string;
  identity: IdentityKeyPairJson;
  secrets: DeviceSecretsJson;
  sessions: SessionStoreJson;
  history: HistoryKeyRingJson;
  lists: DeviceListTrackerJson;
  trust: TrustStoreJson;
  /** Whether this browser created the account identity. */
  primary: boolean;
  v1_prekey: V1PrekeyJson | null;
  /** Whether the directory has the identity (v1 bundle), and this device's keys. */
  bundle_published: boolean;
  published: boolean;
  /** Encoded SendMessageRequests (hex) by message id, saved before they left. */
  pending: Record<string, string>;
  /** Changes of contacts' device lists or identities not shown yet. */
  notices: string[];
  /** When the signed and last-resort prekeys were made or last rotated (ms since the epoch). */
  rotated_at: number | null;
}

/** The live device state. */
export class DeviceState {
  constructor(
    readonly userId: string,
    readonly identity: IdentityKeyPair,
    public secrets: DeviceSecrets,
    readonly sessions: SessionStore,
    readonly history: HistoryKeyRing,
    readonly lists: DeviceListTracker,
    readonly trust: TrustStore,
    readonly primary: boolean,
    public v1Prekey: V1PrekeyJson | null,
    public bundlePublished: boolean,
    public published: boolean,
    readonly pending: Map<string, string>,
    readonly notices: string[],
    public rotatedAt: number | null,
  ) {}

  get deviceId(): string {
    return this.secrets.deviceId;
  }

  toJSON(): DeviceStateJson {
    return {
      format: 1,
      user_id: this.userId,
      identity: this.identity.toJSON(),
      secrets: this.secrets.toJSON(),
      sessions: this.sessions.toJSON(),
      history: this.history.toJSON(),
      lists: this.lists.toJSON(),
      trust: this.trust.toJSON(),
      primary: this.primary,
      v1_prekey: this.v1Prekey,
      bundle_published: this.bundlePublished,
      published: this.published,
      pending: Object.fromEntries(this.pending),
      notices: [...this.notices],
      rotated_at: this.rotatedAt,
    };
  }

  static fromJSON(json: DeviceStateJson): DeviceState {
    if (json.format !== 1) throw new Error("the stored device state has an unknown format");
    return new DeviceState(
      json.user_id,
      IdentityKeyPair.fromJSON(json.identity),
      DeviceSecrets.fromJSON(json.secrets),
      SessionStore.fromJSON(json.sessions),
      HistoryKeyRing.fromJSON(json.history),
      DeviceListTracker.fromJSON(json.lists),
      TrustStore.fromJSON(json.trust),
      json.primary,
      json.v1_prekey,
      json.bundle_published,
      json.published,
      new Map(Object.entries(json.pending)),
      [...json.notices],
      json.rotated_at,
    );
  }

  async save(store: EncryptedStore): Promise<void> {
    await store.put(DEVICE_RECORD, this.toJSON());
  }
}

/** Hex of a secret for the stored JSON (the store encrypts it). */
export function secretHex(bytes: Uint8Array): string {
  return toHex(bytes);
}
