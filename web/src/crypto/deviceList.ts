/**
 * The signed, versioned device list (§4) and the client's memory of the newest list seen per
 * user, which refuses rollbacks and other lists at a version already seen.
 */
import { checkUserId, checkUuidV7, Encoder, u64be, utf8 } from "./bytes.js";
import { CryptoError } from "./errors.js";
import type { IdentityKeyPair, IdentityPublicKey } from "./identity.js";
import { ed25519Verify } from "./primitives.js";

export const DEVICE_LIST_LABEL = "caremesh-device-list-v1";
export const MAX_DEVICES = 10;

function compareBytes(a: string, b: string): number {
  const [x, y] = [utf8(a), utf8(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/** A user's device list: 1 to 10 distinct device ids in ascending byte order, at a version ≥ 1. */
export class DeviceList {
  readonly version: bigint;
  readonly deviceIds: readonly string[];

  /** Any order of `deviceIds`; none, more than ten, duplicates or version 0 are `InvalidDeviceList`. */
  constructor(
    readonly userId: string,
    readonly identityKeyId: string,
    version: bigint | number,
    deviceIds: Iterable<string>,
  ) {
    checkUserId(userId, "user id");
    checkUuidV7(identityKeyId, "identity key id");
    this.version = BigInt(version);
    if (this.version === 0n) throw new CryptoError("InvalidDeviceList", "versions start at 1");
    const ids = [...deviceIds];
    if (ids.length === 0) throw new CryptoError("InvalidDeviceList", "no devices");
    if (ids.length > MAX_DEVICES) throw new CryptoError("InvalidDeviceList", "too many devices (at most 10)");
    for (const id of ids) checkUuidV7(id, "device id");
    ids.sort(compareBytes);
    for (let i = 1; i < ids.length; i++) {
      if (ids[i] === ids[i - 1]) throw new CryptoError("InvalidDeviceList", `device ${ids[i]} is listed twice`);
    }
    this.deviceIds = Object.freeze(ids);
  }

  contains(deviceId: string): boolean {
    return this.deviceIds.includes(deviceId);
  }

  /** The next version with `deviceId` added. */
  withDevice(deviceId: string): DeviceList {
    return new DeviceList(this.userId, this.identityKeyId, this.version + 1n, [...this.deviceIds, deviceId]);
  }

  /** The next version without `deviceId`. */
  withoutDevice(deviceId: string): DeviceList {
    if (!this.contains(deviceId)) throw new CryptoError("UnknownDevice", `device ${deviceId} is not in the user's verified device list`);
    return new DeviceList(this.userId, this.identityKeyId, this.version + 1n, this.deviceIds.filter((id) => id !== deviceId));
  }

  /** `lp(label) lp(user_id) lp(identity_key_id) u64be(version) u32be(count) lp(device_id)…`. */
  encoding(): Uint8Array {
    const encoder = new Encoder(DEVICE_LIST_LABEL).field(this.userId).field(this.identityKeyId).raw(u64be(this.version)).u32(this.deviceIds.length);
    for (const id of this.deviceIds) encoder.field(id);
    return encoder.finish();
  }

  sign(identity: IdentityKeyPair): Uint8Array {
    if (identity.keyId !== this.identityKeyId) throw new CryptoError("KeyMismatch", "the device list names another identity");
    return identity.signRaw(this.encoding());
  }

  /** Verifies a signed list of `userId` with the user's verified identity (`BadSignature`). */
  static verify(
    userId: string,
    identity: IdentityPublicKey,
    version: bigint | number,
    deviceIds: Iterable<string>,
    signature: Uint8Array,
  ): DeviceList {
    const list = new DeviceList(userId, identity.keyId, version, deviceIds);
    ed25519Verify(identity.signingPublicKey, list.encoding(), signature, "device list");
    return list;
  }

  equals(other: DeviceList): boolean {
    return (
      this.userId === other.userId &&
      this.identityKeyId === other.identityKeyId &&
      this.version === other.version &&
      this.deviceIds.join(",") === other.deviceIds.join(",")
    );
  }
}

export interface DeviceListChange {
  added: string[];
  removed: string[];
}

export interface DeviceListTrackerJson {
  seen: Record<string, { version: string; identity_key_id: string; device_ids: string[] }>;
}

/** The newest verified list seen per user (§4); serializable. */
export class DeviceListTracker {
  private readonly seen = new Map<string, { version: bigint; identityKeyId: string; deviceIds: string[] }>();

  /**
   * Records a verified list: an older version is `DeviceListRollback`, other content at a version
   * already seen `DeviceListMismatch`. A list by another identity starts the user anew (whether
   * that identity is trusted is the trust store's decision). Returns what changed.
   */
  observe(list: DeviceList): DeviceListChange {
    const previous = this.seen.get(list.userId);
    const same = previous && previous.identityKeyId === list.identityKeyId ? previous : undefined;
    if (same) {
      if (list.version < same.version) {
        throw new CryptoError("DeviceListRollback", `device list version ${list.version} is older than version ${same.version} already seen`);
      }
      if (list.version === same.version && same.deviceIds.join(",") !== list.deviceIds.join(",")) {
        throw new CryptoError("DeviceListMismatch", `another device list at version ${list.version}, which was already seen`);
      }
    }
    const before = same?.deviceIds ?? [];
    const change = {
      added: list.deviceIds.filter((id) => !before.includes(id)),
      removed: before.filter((id) => !list.contains(id)),
    };
    this.seen.set(list.userId, { version: list.version, identityKeyId: list.identityKeyId, deviceIds: [...list.deviceIds] });
    return change;
  }

  seenVersion(userId: string): bigint | undefined {
    return this.seen.get(userId)?.version;
  }

  forget(userId: string): void {
    this.seen.delete(userId);
  }

  toJSON(): DeviceListTrackerJson {
    const seen: DeviceListTrackerJson["seen"] = {};
    for (const [user, s] of this.seen) seen[user] = { version: s.version.toString(), identity_key_id: s.identityKeyId, device_ids: [...s.deviceIds] };
    return { seen };
  }

  static fromJSON(json: DeviceListTrackerJson): DeviceListTracker {
    const tracker = new DeviceListTracker();
    for (const [user, s] of Object.entries(json.seen)) {
      tracker.seen.set(user, { version: BigInt(s.version), identityKeyId: s.identity_key_id, deviceIds: [...s.device_ids] });
    }
    return tracker;
  }
}
