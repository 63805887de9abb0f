/**
 * Device keys (§3.2): the X25519 signed prekey, the ML-KEM-768 last-resort prekey, one-time
 * X25519 prekeys (unsigned) and signed one-time ML-KEM-768 prekeys; their signatures by the
 * account identity; a device's secret prekeys (`DeviceSecrets`, serializable).
 */
import { checkUserId, checkUuidV7, Encoder, fromHex, newId, toHex, wipe } from "./bytes.js";
import { CryptoError } from "./errors.js";
import type { IdentityKeyPair, IdentityPublicKey } from "./identity.js";
import { ed25519Verify, kemCheckPublicKey, kemPublic, randomBytes, x25519Public } from "./primitives.js";

export const DEVICE_KEY_LABEL = "caremesh-device-key-v1";
/** Most one-time prekeys one upload may carry (the key directory's limit). */
export const MAX_ONE_TIME_PREKEYS_PER_UPLOAD = 100;

/** The kind labels of §3.2 (the kind's value is its label). */
export type DeviceKeyKind = "x25519-signed-prekey" | "ml-kem-768-last-resort-prekey" | "ml-kem-768-one-time-prekey";
export type KemKind = Exclude<DeviceKeyKind, "x25519-signed-prekey">;
export const SIGNED_PREKEY: DeviceKeyKind = "x25519-signed-prekey";
export const KEM_LAST_RESORT: KemKind = "ml-kem-768-last-resort-prekey";
export const KEM_ONE_TIME: KemKind = "ml-kem-768-one-time-prekey";

/** The preamble's ML-KEM kind code (§6.3): 1 last-resort, 2 one-time. */
export function kemCode(kind: KemKind): 1 | 2 {
  return kind === KEM_LAST_RESORT ? 1 : 2;
}

export function kemKindFromCode(code: number): KemKind {
  if (code === 1) return KEM_LAST_RESORT;
  if (code === 2) return KEM_ONE_TIME;
  throw new CryptoError("MalformedEnvelope", `unknown ML-KEM prekey kind ${code}`);
}

function checkPublicKey(kind: DeviceKeyKind, publicKey: Uint8Array): void {
  if (kind === SIGNED_PREKEY) {
    if (publicKey.length !== 32) throw new CryptoError("InvalidKey", "an X25519 signed prekey must be 32 bytes");
  } else {
    kemCheckPublicKey(publicKey);
  }
}

/** `lp("caremesh-device-key-v1") lp(kind) lp(user_id) lp(identity_key_id) lp(device_id) lp(key_id) lp(public_key)`. */
export function deviceKeyMessage(
  kind: DeviceKeyKind,
  userId: string,
  identityKeyId: string,
  deviceId: string,
  keyId: string,
  publicKey: Uint8Array,
): Uint8Array {
  checkUserId(userId, "user id");
  checkUuidV7(deviceId, "device id");
  checkUuidV7(keyId, "device key id");
  return new Encoder(DEVICE_KEY_LABEL)
    .field(kind)
    .field(userId)
    .field(identityKeyId)
    .field(deviceId)
    .field(keyId)
    .field(publicKey)
    .finish();
}

export function signDeviceKey(
  identity: IdentityKeyPair,
  kind: DeviceKeyKind,
  userId: string,
  deviceId: string,
  keyId: string,
  publicKey: Uint8Array,
): Uint8Array {
  checkPublicKey(kind, publicKey);
  return identity.signRaw(deviceKeyMessage(kind, userId, identity.keyId, deviceId, keyId, publicKey));
}

/** Verifies a device key's form and its signature by the account identity (`BadSignature`). */
export function verifyDeviceKey(
  identity: IdentityPublicKey,
  kind: DeviceKeyKind,
  userId: string,
  deviceId: string,
  keyId: string,
  publicKey: Uint8Array,
  signature: Uint8Array,
): void {
  checkPublicKey(kind, publicKey);
  const message = deviceKeyMessage(kind, userId, identity.keyId, deviceId, keyId, publicKey);
  ed25519Verify(identity.signingPublicKey, message, signature, kind);
}

/** A public device key with its signature (empty for one-time X25519 prekeys). */
export interface PublishedKey {
  keyId: string;
  publicKey: Uint8Array;
  signature: Uint8Array;
}

interface StoredKey {
  keyId: string;
  /** X25519: the 32-byte secret; ML-KEM: the 64-byte seed `d || z`. */
  secret: Uint8Array;
}

export interface StoredKeyJson {
  key_id: string;
  secret: string;
}

/** The persisted form of `DeviceSecrets`, field for field the Rust `DeviceSecrets` serde form. */
export interface DeviceSecretsJson {
  format: 1;
  device_id: string;
  signed_prekey: StoredKeyJson;
  previous_signed_prekey: StoredKeyJson | null;
  last_resort: StoredKeyJson;
  previous_last_resort: StoredKeyJson | null;
  one_time: StoredKeyJson[];
  kem_one_time: StoredKeyJson[];
}

function unknownKey(what: string, id: string): CryptoError {
  return new CryptoError("UnknownKey", `this device holds no ${what} with id ${id}`);
}

/** One device's secret prekeys; the account identity is held beside it, not in it. */
export class DeviceSecrets {
  private constructor(
    readonly deviceId: string,
    private signedPrekey: StoredKey,
    private previousSignedPrekey: StoredKey | null,
    private lastResort: StoredKey,
    private previousLastResort: StoredKey | null,
    private readonly oneTime: Map<string, StoredKey>,
    private readonly kemOneTime: Map<string, StoredKey>,
  ) {}

  /** A new device with a signed prekey and a last-resort prekey. */
  static generate(deviceId: string = newId(randomBytes)): DeviceSecrets {
    checkUuidV7(deviceId, "device id");
    return new DeviceSecrets(deviceId, newX25519(), null, newKem(), null, new Map(), new Map());
  }

  /** The signed prekey, signed for publishing. */
  signedPrekeyPublished(identity: IdentityKeyPair, userId: string): PublishedKey {
    return this.publish(identity, userId, SIGNED_PREKEY, this.signedPrekey.keyId, x25519Public(this.signedPrekey.secret));
  }

  /** The last-resort ML-KEM prekey, signed for publishing. */
  lastResortPublished(identity: IdentityKeyPair, userId: string): PublishedKey {
    return this.publish(identity, userId, KEM_LAST_RESORT, this.lastResort.keyId, kemPublic(this.lastResort.secret));
  }

  private publish(identity: IdentityKeyPair, userId: string, kind: DeviceKeyKind, keyId: string, publicKey: Uint8Array): PublishedKey {
    return { keyId, publicKey, signature: signDeviceKey(identity, kind, userId, this.deviceId, keyId, publicKey) };
  }

  /** `count` new one-time X25519 prekeys and signed one-time ML-KEM prekeys (public halves). */
  newOneTimePrekeys(identity: IdentityKeyPair, userId: string, count: number): { x25519: PublishedKey[]; kem: PublishedKey[] } {
    if (count > MAX_ONE_TIME_PREKEYS_PER_UPLOAD) {
      throw new CryptoError("Encoding", `one-time prekeys per upload: ${count} is out of range (at most ${MAX_ONE_TIME_PREKEYS_PER_UPLOAD})`);
    }
    const x25519: PublishedKey[] = [];
    const kem: PublishedKey[] = [];
    for (let i = 0; i < count; i++) {
      const x = newX25519();
      this.oneTime.set(x.keyId, x);
      x25519.push({ keyId: x.keyId, publicKey: x25519Public(x.secret), signature: new Uint8Array() });
      const k = newKem();
      this.kemOneTime.set(k.keyId, k);
      kem.push(this.publish(identity, userId, KEM_ONE_TIME, k.keyId, kemPublic(k.secret)));
    }
    return { x25519, kem };
  }

  /** Rotates the signed and last-resort prekeys, keeping the previous ones for messages in flight. */
  rotate(identity: IdentityKeyPair, userId: string): { signedPrekey: PublishedKey; lastResort: PublishedKey } {
    this.forgetPrevious();
    this.previousSignedPrekey = this.signedPrekey;
    this.previousLastResort = this.lastResort;
    this.signedPrekey = newX25519();
    this.lastResort = newKem();
    return { signedPrekey: this.signedPrekeyPublished(identity, userId), lastResort: this.lastResortPublished(identity, userId) };
  }

  /** Deletes the previous signed and last-resort prekeys (30 days after a rotation). */
  forgetPrevious(): void {
    wipe(this.previousSignedPrekey?.secret, this.previousLastResort?.secret);
    this.previousSignedPrekey = null;
    this.previousLastResort = null;
  }

  oneTimeCounts(): { x25519: number; kem: number } {
    return { x25519: this.oneTime.size, kem: this.kemOneTime.size };
  }

  /** The signed prekey secret by id (current or previous); `UnknownKey` otherwise. */
  signedPrekeySecret(keyId: string): Uint8Array {
    const key = [this.signedPrekey, this.previousSignedPrekey].find((k) => k?.keyId === keyId);
    if (!key) throw unknownKey("signed prekey", keyId);
    return key.secret;
  }

  /** The ML-KEM prekey seed by kind and id. */
  kemSecret(kind: KemKind, keyId: string): Uint8Array {
    const key =
      kind === KEM_ONE_TIME
        ? this.kemOneTime.get(keyId)
        : [this.lastResort, this.previousLastResort].find((k) => k?.keyId === keyId);
    if (!key) throw unknownKey("ML-KEM prekey", keyId);
    return key.secret;
  }

  /** The one-time X25519 prekey secret by id (a spent one is unknown). */
  oneTimeSecret(keyId: string): Uint8Array {
    const key = this.oneTime.get(keyId);
    if (!key) throw unknownKey("one-time prekey", keyId);
    return key.secret;
  }

  /** Deletes the one-time secrets a handshake used, once its first message authenticated. */
  spend(oneTimeId: string, kemKind: KemKind, kemId: string): void {
    if (oneTimeId !== "") {
      wipe(this.oneTime.get(oneTimeId)?.secret);
      this.oneTime.delete(oneTimeId);
    }
    if (kemKind === KEM_ONE_TIME) {
      wipe(this.kemOneTime.get(kemId)?.secret);
      this.kemOneTime.delete(kemId);
    }
  }

  toJSON(): DeviceSecretsJson {
    const j = (key: StoredKey): StoredKeyJson => ({ key_id: key.keyId, secret: toHex(key.secret) });
    return {
      format: 1,
      device_id: this.deviceId,
      signed_prekey: j(this.signedPrekey),
      previous_signed_prekey: this.previousSignedPrekey ? j(this.previousSignedPrekey) : null,
      last_resort: j(this.lastResort),
      previous_last_resort: this.previousLastResort ? j(this.previousLastResort) : null,
      one_time: [...this.oneTime.values()].map(j),
      kem_one_time: [...this.kemOneTime.values()].map(j),
    };
  }

  static fromJSON(json: DeviceSecretsJson): DeviceSecrets {
    if (json.format !== 1) throw new CryptoError("InvalidStoredKeys", "unknown device secrets format");
    checkUuidV7(json.device_id, "device id");
    const x = (key: StoredKeyJson): StoredKey => {
      checkUuidV7(key.key_id, "prekey id");
      return { keyId: key.key_id, secret: stored(key.secret, 32) };
    };
    const k = (key: StoredKeyJson): StoredKey => {
      checkUuidV7(key.key_id, "ML-KEM prekey id");
      return { keyId: key.key_id, secret: stored(key.secret, 64) };
    };
    return new DeviceSecrets(
      json.device_id,
      x(json.signed_prekey),
      json.previous_signed_prekey ? x(json.previous_signed_prekey) : null,
      k(json.last_resort),
      json.previous_last_resort ? k(json.previous_last_resort) : null,
      new Map(json.one_time.map((key) => [key.key_id, x(key)])),
      new Map(json.kem_one_time.map((key) => [key.key_id, k(key)])),
    );
  }
}

function stored(text: string, length: number): Uint8Array {
  try {
    return fromHex(text, length);
  } catch {
    throw new CryptoError("InvalidStoredKeys", "a device secret is not valid hex of the right length");
  }
}

function newX25519(): StoredKey {
  return { keyId: newId(randomBytes), secret: randomBytes(32) };
}

function newKem(): StoredKey {
  return { keyId: newId(randomBytes), secret: randomBytes(64) };
}
