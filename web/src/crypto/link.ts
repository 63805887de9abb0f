/**
 * Linking a device (§8): the new device's code and commitment; the provisioning message that
 * carries the account identity and the history key ring, sealed to the new device's ephemeral
 * key and the link secret the server never sees.
 */
import { checkUserId, checkUuidV7, concat, ctEqual, Encoder, newId, Reader, wipe } from "./bytes.js";
import { HistoryKeyRing } from "./archive.js";
import { CryptoError } from "./errors.js";
import { IdentityKeyPair } from "./identity.js";
import { aesGcmOpen, aesGcmSeal, hkdfSha256, randomBytes, sha256, x25519Agree, x25519Public, ZERO32 } from "./primitives.js";

export const COMMITMENT_LABEL = "caremesh-link-v1/commitment";
export const SEAL_LABEL = "caremesh-link-v1/seal";
export const LINK_AAD_LABEL = "caremesh-link-v1/aad";
export const PROVISIONING_LABEL = "caremesh-provisioning-v1";
export const LINK_SECRET_LEN = 10;
export const LINK_URI_PREFIX = "caremesh-link:";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

function linkCodeMismatch(): CryptoError {
  return new CryptoError("LinkCodeMismatch", "no pending link matches the code");
}

/** `s` as `XXXX-XXXX-XXXX-XXXX`: 80 bits big-endian, 16 groups of 5 bits, most significant first. */
export function encodeLinkCode(secret: Uint8Array): string {
  if (secret.length !== LINK_SECRET_LEN) throw new CryptoError("InvalidKey", "a link secret must be 10 bytes");
  let value = 0n;
  for (const byte of secret) value = (value << 8n) | BigInt(byte);
  let code = "";
  for (let i = 0; i < 16; i++) {
    if (i > 0 && i % 4 === 0) code += "-";
    code += CROCKFORD[Number((value >> BigInt(5 * (15 - i))) & 0x1fn)];
  }
  return code;
}

/** Reads a typed code: case-insensitive, hyphens and spaces ignored, O as 0, I and L as 1. */
export function decodeLinkCode(code: string): Uint8Array {
  let value = 0n;
  let digits = 0;
  for (const raw of code) {
    if (raw === "-" || raw === " ") continue;
    let c = raw.toUpperCase();
    if (c === "O") c = "0";
    if (c === "I" || c === "L") c = "1";
    const digit = CROCKFORD.indexOf(c);
    if (digit < 0 || c.length !== 1) throw linkCodeMismatch();
    value = (value << 5n) | BigInt(digit);
    digits++;
  }
  if (digits !== 16) throw linkCodeMismatch();
  const secret = new Uint8Array(LINK_SECRET_LEN);
  for (let i = 0; i < LINK_SECRET_LEN; i++) secret[i] = Number((value >> BigInt(8 * (LINK_SECRET_LEN - 1 - i))) & 0xffn);
  return secret;
}

/** `C = SHA-256(lp(label) lp(user_id) lp(device_id) lp(E_public) lp(s))`. */
export function linkCommitment(userId: string, deviceId: string, ephemeralPublic: Uint8Array, secret: Uint8Array): Uint8Array {
  return sha256(new Encoder(COMMITMENT_LABEL).field(userId).field(deviceId).field(ephemeralPublic).field(secret).finish());
}

function linkAad(userId: string, deviceId: string, ephemeralPublic: Uint8Array, approverPublic: Uint8Array): Uint8Array {
  return new Encoder(LINK_AAD_LABEL).field(userId).field(deviceId).field(ephemeralPublic).field(approverPublic).finish();
}

/** `(key, nonce) = HKDF(ZERO32, dh || s, lp(label) lp(user) lp(device) lp(E) lp(E2), 44)`; wipes `dh`. */
function sealKeys(dh: Uint8Array, secret: Uint8Array, userId: string, deviceId: string, ephemeralPublic: Uint8Array, approverPublic: Uint8Array): [Uint8Array, Uint8Array] {
  const ikm = concat(dh, secret);
  const info = new Encoder(SEAL_LABEL).field(userId).field(deviceId).field(ephemeralPublic).field(approverPublic).finish();
  const okm = hkdfSha256(ZERO32, ikm, info, 44);
  const out: [Uint8Array, Uint8Array] = [okm.slice(0, 32), okm.slice(32, 44)];
  wipe(dh, ikm, okm);
  return out;
}

/** What a provisioning message carries. */
export interface Provisioning {
  identity: IdentityKeyPair;
  history: HistoryKeyRing;
  approverDeviceId: string;
}

/** `PROVISIONING = lp(label) lp(identity_key_id) lp(IKsig_seed) lp(IKdh_secret) u32be(n) n × (lp(id) lp(HK)) lp(approver_device_id)`. */
export function encodeProvisioning(p: Provisioning): Uint8Array {
  checkUuidV7(p.approverDeviceId, "approver device id");
  const keys = p.history.all();
  const e = new Encoder(PROVISIONING_LABEL)
    .field(p.identity.keyId)
    .field(p.identity.signingSeedBytes())
    .field(p.identity.dhSecret())
    .u32(keys.length);
  for (const key of keys) e.field(key.historyKeyId).field(key.key);
  e.field(p.approverDeviceId);
  const out = e.finish();
  for (const key of keys) wipe(key.key);
  return out;
}

export function decodeProvisioning(plaintext: Uint8Array): Provisioning {
  const what = "the provisioning message (caremesh-provisioning-v1)";
  const bad = (): CryptoError => new CryptoError("MalformedEnvelope", `${what} is malformed`);
  const r = new Reader(plaintext, what);
  if (r.text() !== PROVISIONING_LABEL) throw bad();
  const keyId = r.text();
  const seed = r.field();
  const dh = r.field();
  if (seed.length !== 32 || dh.length !== 32) throw bad();
  const identity = IdentityKeyPair.fromSecrets(keyId, seed, dh);
  const count = r.u32();
  if (count === 0 || count > 10_000) throw bad();
  const keys = [];
  for (let i = 0; i < count; i++) {
    const historyKeyId = r.text();
    const key = r.field();
    if (key.length !== 32) throw bad();
    keys.push({ historyKeyId, key });
  }
  const approverDeviceId = r.text();
  checkUuidV7(approverDeviceId, "approver device id");
  r.end();
  return { identity, history: new HistoryKeyRing(keys), approverDeviceId };
}

/** `E2`'s public key and the sealed provisioning message. */
export interface SealedProvisioning {
  approverPublic: Uint8Array;
  sealed: Uint8Array;
}

/** The new device's side: its device id, ephemeral key `E` and link secret `s`. */
export class LinkRequest {
  readonly ephemeralPublic: Uint8Array;

  private constructor(
    readonly userId: string,
    readonly deviceId: string,
    private readonly ephemeral: Uint8Array,
    private readonly secret: Uint8Array,
  ) {
    this.ephemeralPublic = x25519Public(ephemeral);
  }

  /** A new request for a new device of `userId`, from the CSPRNG. */
  static create(userId: string, deviceId: string = newId(randomBytes)): LinkRequest {
    return LinkRequest.with(userId, deviceId, randomBytes(32), randomBytes(LINK_SECRET_LEN));
  }

  /** From given values (known-answer tests); the arrays are copied. */
  static with(userId: string, deviceId: string, ephemeralSecret: Uint8Array, secret: Uint8Array): LinkRequest {
    checkUserId(userId, "user id");
    checkUuidV7(deviceId, "device id");
    if (ephemeralSecret.length !== 32) throw new CryptoError("InvalidKey", "the link key must be 32 bytes");
    if (secret.length !== LINK_SECRET_LEN) throw new CryptoError("InvalidKey", "a link secret must be 10 bytes");
    return new LinkRequest(userId, deviceId, Uint8Array.from(ephemeralSecret), Uint8Array.from(secret));
  }

  /** The code to show: `XXXX-XXXX-XXXX-XXXX`. */
  code(): string {
    return encodeLinkCode(this.secret);
  }

  qrText(linkId: string): string {
    return `${LINK_URI_PREFIX}${linkId}:${this.code()}`;
  }

  commitment(): Uint8Array {
    return linkCommitment(this.userId, this.deviceId, this.ephemeralPublic, this.secret);
  }

  /** Opens the provisioning message (step 4; `DecryptionFailed` otherwise). Check the identity against the published one after. */
  open(sealed: SealedProvisioning): Provisioning {
    const dh = x25519Agree(this.ephemeral, sealed.approverPublic, "the link key");
    const [key, nonce] = sealKeys(dh, this.secret, this.userId, this.deviceId, this.ephemeralPublic, sealed.approverPublic);
    const aad = linkAad(this.userId, this.deviceId, this.ephemeralPublic, sealed.approverPublic);
    let plaintext: Uint8Array | undefined;
    try {
      plaintext = aesGcmOpen(key, nonce, aad, sealed.sealed);
      return decodeProvisioning(plaintext);
    } finally {
      wipe(key, nonce, plaintext);
    }
  }

  /** Wipes `E` and `s` (after the provisioning message opened). */
  wipe(): void {
    wipe(this.ephemeral, this.secret);
  }
}

/** A pending link as the existing device receives it from the server. */
export interface PendingLink {
  userId: string;
  deviceId: string;
  ephemeralPublic: Uint8Array;
  commitment: Uint8Array;
}

/** Whether the typed code is this link's: the commitment recomputed from it matches (constant-time). */
export function linkMatches(link: PendingLink, code: string): boolean {
  let secret: Uint8Array;
  try {
    secret = decodeLinkCode(code);
  } catch {
    return false;
  }
  try {
    return ctEqual(linkCommitment(link.userId, link.deviceId, link.ephemeralPublic, secret), link.commitment);
  } finally {
    wipe(secret);
  }
}

/** The pending link among `links` that the code matches; none is `LinkCodeMismatch`. */
export function findPendingLink(links: PendingLink[], code: string): PendingLink {
  const found = links.find((link) => linkMatches(link, code));
  if (!found) throw linkCodeMismatch();
  return found;
}

/** Seals `provisioning` for `link` after checking `code` (step 3), with a fresh `E2` or the given one (tests). */
export function sealProvisioning(link: PendingLink, code: string, provisioning: Provisioning, approverSecret?: Uint8Array): SealedProvisioning {
  if (!linkMatches(link, code)) throw linkCodeMismatch();
  const secret = decodeLinkCode(code);
  const e2 = approverSecret ? Uint8Array.from(approverSecret) : randomBytes(32);
  const approverPublic = x25519Public(e2);
  const dh = x25519Agree(e2, link.ephemeralPublic, "the new device's link key");
  const [key, nonce] = sealKeys(dh, secret, link.userId, link.deviceId, link.ephemeralPublic, approverPublic);
  const aad = linkAad(link.userId, link.deviceId, link.ephemeralPublic, approverPublic);
  const plaintext = encodeProvisioning(provisioning);
  try {
    return { approverPublic, sealed: aesGcmSeal(key, nonce, aad, plaintext) };
  } finally {
    wipe(e2, secret, key, nonce, plaintext);
  }
}
