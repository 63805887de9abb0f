/**
 * The Double Ratchet (§6), after Signal's specification: HKDF-SHA256 root chain, HMAC-SHA256
 * chains, AES-256-GCM with the header (sent in clear, not encrypted: §6.3) and the session's
 * identities in the associated data, a bounded store of skipped message keys, replays refused,
 * and decryption on a copy of the state so that a refused message changes nothing.
 */
import { checkUuidV7, ctEqual, Encoder, fromHex, toHex, utf8, wipe } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { checkPreamble, clonePreamble, type Preamble, preambleFromJSON, type PreambleJson, preambleToJSON } from "./pqxdh.js";
import { aesGcmOpen, aesGcmSeal, hkdfSha256, hmacSha256, randomBytes, x25519Agree, x25519Public, ZERO32 } from "./primitives.js";

/** Most message keys one message may skip in one chain (each of §6.5's two skips on its own). */
export const MAX_SKIP = 1000;
/** Most skipped message keys a session holds; the oldest are deleted beyond it. */
export const MAX_SKIPPED_KEYS = 2000;
/** Earlier receiving ratchet keys remembered to refuse replays as `DuplicateMessage`. */
export const REMEMBERED_RECEIVING_KEYS = 8;

export const ROOT_INFO = "caremesh-ratchet-v1/root";
export const MESSAGE_KEYS_INFO = "caremesh-ratchet-v1/message-keys";
export const HEADER_LABEL = "caremesh-ratchet-v1/header";
export const AAD_LABEL = "caremesh-ratchet-v1/aad";
export const SESSION_FORMAT = 1;

/**
 * Where new ratchet key pairs come from. `checkpoint`, when present, returns a function that
 * undoes the draws since: a refused message does not advance a list of keys (§6.5).
 */
export interface RatchetKeySource {
  next(): Uint8Array;
  checkpoint?(): () => void;
}

/** Ratchet keys from the platform's CSPRNG. */
export const osRatchetKeys: RatchetKeySource = { next: () => randomBytes(32) };

/** Ratchet keys from a fixed list, in order (known-answer tests and transcripts). */
export class ListRatchetKeys implements RatchetKeySource {
  position = 0;
  private readonly keys: Uint8Array[];

  constructor(keys: Uint8Array[]) {
    this.keys = keys.map((key) => Uint8Array.from(key));
  }

  next(): Uint8Array {
    const key = this.keys[this.position];
    if (!key) throw new CryptoError("Encoding", "the list of ratchet secrets is exhausted");
    this.position++;
    return Uint8Array.from(key);
  }

  checkpoint(): () => void {
    const position = this.position;
    return () => {
      this.position = position;
    };
  }
}

const rootInfo = utf8(ROOT_INFO);
const messageKeysInfo = utf8(MESSAGE_KEYS_INFO);

/** `KDF_RK(rk, dh_out)` → (rk', ck); wipes `dhOut`. */
function kdfRk(rk: Uint8Array, dhOut: Uint8Array): [Uint8Array, Uint8Array] {
  const okm = hkdfSha256(rk, dhOut, rootInfo, 64);
  const out: [Uint8Array, Uint8Array] = [okm.slice(0, 32), okm.slice(32, 64)];
  wipe(okm, dhOut);
  return out;
}

/** `KDF_CK(ck)` → (ck' = HMAC(ck, 0x02), mk = HMAC(ck, 0x01)). */
function kdfCk(ck: Uint8Array): [Uint8Array, Uint8Array] {
  return [hmacSha256(ck, Uint8Array.of(0x02)), hmacSha256(ck, Uint8Array.of(0x01))];
}

/** `MESSAGE_KEYS(mk)` → (aes_key, nonce). */
function messageKeys(mk: Uint8Array): [Uint8Array, Uint8Array] {
  const okm = hkdfSha256(ZERO32, mk, messageKeysInfo, 44);
  const out: [Uint8Array, Uint8Array] = [okm.slice(0, 32), okm.slice(32, 44)];
  wipe(okm);
  return out;
}

/** A message's header (§6.3), sent in clear; the receiver re-encodes it for the AAD. */
export interface RatchetHeader {
  senderDeviceId: string;
  recipientDeviceId: string;
  /** The sender's current ratchet public key, 32 bytes. */
  dh: Uint8Array;
  pn: number;
  n: number;
  preamble: Preamble | null;
}

/** `HEADER = lp(label) lp(sender) lp(recipient) lp(dh) u32be(pn) u32be(n) u32be(has_preamble) [PREAMBLE]`. */
export function encodeHeader(header: RatchetHeader): Uint8Array {
  const e = new Encoder(HEADER_LABEL)
    .field(header.senderDeviceId)
    .field(header.recipientDeviceId)
    .field(header.dh)
    .u32(header.pn)
    .u32(header.n)
    .u32(header.preamble ? 1 : 0);
  const p = header.preamble;
  if (p) {
    e.field(p.senderIdentityKeyId)
      .field(p.ephemeralPublic)
      .field(p.signedPrekeyId)
      .field(p.oneTimePrekeyId)
      .field(p.kemPrekeyId)
      .u32(p.kemKind)
      .field(p.kemCiphertext);
  }
  return e.finish();
}

/** `AAD = lp("caremesh-ratchet-v1/aad") lp(AD) lp(message_id) HEADER`. */
export function messageAad(ad: Uint8Array, messageId: string, header: RatchetHeader): Uint8Array {
  return new Encoder(AAD_LABEL).field(ad).field(messageId).raw(encodeHeader(header)).finish();
}

/** One encrypted message for one device. */
export interface RatchetMessage {
  header: RatchetHeader;
  /** AES-256-GCM ciphertext with its tag. */
  ciphertext: Uint8Array;
}

/** Who the session is with, as the handshake established it. */
export interface SessionPeer {
  localDeviceId: string;
  peerUserId: string;
  peerDeviceId: string;
  peerIdentityKeyId: string;
}

interface SkippedKey {
  dh: Uint8Array;
  n: number;
  mk: Uint8Array;
}

interface State {
  ad: Uint8Array;
  peer: SessionPeer;
  baseKey: Uint8Array;
  dhs: Uint8Array;
  dhsPublic: Uint8Array;
  dhr: Uint8Array | null;
  rk: Uint8Array;
  cks: Uint8Array | null;
  ckr: Uint8Array | null;
  ns: number;
  nr: number;
  pn: number;
  /** Insertion order is age order: the first entry is the oldest. Key: `hex(dh):n`. */
  skipped: Map<string, SkippedKey>;
  previousReceiving: Uint8Array[];
  preamble: Preamble | null;
}

/** The persisted form, field for field the Rust `Session` serde form (hex secrets: encrypt at rest). */
export interface SessionJson {
  format: number;
  ad: string;
  local_device_id: string;
  peer_user_id: string;
  peer_device_id: string;
  peer_identity_key_id: string;
  base_key: string;
  dhs: string;
  dhr: string | null;
  rk: string;
  cks: string | null;
  ckr: string | null;
  ns: number;
  nr: number;
  pn: number;
  skipped: { dh: string; n: number; mk: string }[];
  previous_receiving: string[];
  preamble: PreambleJson | null;
}

const skippedId = (dh: Uint8Array, n: number): string => `${toHex(dh)}:${n}`;

function cloneState(s: State): State {
  const copy = (b: Uint8Array): Uint8Array => Uint8Array.from(b);
  return {
    ad: copy(s.ad),
    peer: { ...s.peer },
    baseKey: copy(s.baseKey),
    dhs: copy(s.dhs),
    dhsPublic: copy(s.dhsPublic),
    dhr: s.dhr && copy(s.dhr),
    rk: copy(s.rk),
    cks: s.cks && copy(s.cks),
    ckr: s.ckr && copy(s.ckr),
    ns: s.ns,
    nr: s.nr,
    pn: s.pn,
    skipped: new Map([...s.skipped].map(([id, k]) => [id, { dh: copy(k.dh), n: k.n, mk: copy(k.mk) }])),
    previousReceiving: s.previousReceiving.map(copy),
    preamble: s.preamble && clonePreamble(s.preamble),
  };
}

function wipeState(s: State): void {
  wipe(s.dhs, s.rk, s.cks, s.ckr);
  for (const key of s.skipped.values()) wipe(key.mk);
}

function checkU32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) throw new CryptoError("MalformedEnvelope", `${what} is not a u32`);
}

/** A Double Ratchet session of this device with one peer device (§6.1). */
export class Session {
  private constructor(private state: State) {}

  /** The initiator's session (§6.2): `DHr = SPK_B`, a first ratchet key, the preamble attached. */
  static initiator(peer: SessionPeer, sk: Uint8Array, ad: Uint8Array, responderSignedPrekey: Uint8Array, preamble: Preamble, keys: RatchetKeySource = osRatchetKeys): Session {
    checkPreamble(preamble);
    const dhs = keys.next();
    const [rk, cks] = kdfRk(sk, x25519Agree(dhs, responderSignedPrekey, "the signed prekey"));
    return new Session({
      ad: Uint8Array.from(ad),
      peer: { ...peer },
      baseKey: Uint8Array.from(preamble.ephemeralPublic),
      dhs,
      dhsPublic: x25519Public(dhs),
      dhr: Uint8Array.from(responderSignedPrekey),
      rk,
      cks,
      ckr: null,
      ns: 0,
      nr: 0,
      pn: 0,
      skipped: new Map(),
      previousReceiving: [],
      preamble: clonePreamble(preamble),
    });
  }

  /** The responder's session (§6.2): `DHs` is the signed prekey the preamble named, `RK = SK`. */
  static responder(peer: SessionPeer, sk: Uint8Array, ad: Uint8Array, signedPrekeySecret: Uint8Array, preamble: Preamble): Session {
    checkPreamble(preamble);
    return new Session({
      ad: Uint8Array.from(ad),
      peer: { ...peer },
      baseKey: Uint8Array.from(preamble.ephemeralPublic),
      dhs: Uint8Array.from(signedPrekeySecret),
      dhsPublic: x25519Public(signedPrekeySecret),
      dhr: null,
      rk: Uint8Array.from(sk),
      cks: null,
      ckr: null,
      ns: 0,
      nr: 0,
      pn: 0,
      skipped: new Map(),
      previousReceiving: [],
      preamble: null,
    });
  }

  get peer(): SessionPeer {
    return { ...this.state.peer };
  }

  /** `EK_A`'s public key: which handshake established the session. */
  get baseKey(): Uint8Array {
    return Uint8Array.from(this.state.baseKey);
  }

  /** Whether the initiator still attaches its preamble (no reply decrypted yet). */
  get awaitingReply(): boolean {
    return this.state.preamble !== null;
  }

  /** Whether this side can send (a responder can once it decrypted the first message). */
  get canSend(): boolean {
    return this.state.cks !== null;
  }

  get skippedKeyCount(): number {
    return this.state.skipped.size;
  }

  /**
   * Encrypts one message (§6.4). Save the new state together with the ciphertext before the
   * ciphertext leaves the device.
   */
  encrypt(messageId: string, plaintext: Uint8Array): RatchetMessage {
    checkUuidV7(messageId, "message id");
    const s = this.state;
    if (!s.cks) throw new CryptoError("NoSession", `no sending chain with device ${s.peer.peerDeviceId} yet: a responder sends only after it decrypted a message`);
    if (s.ns >= 0xffff_ffff) throw new CryptoError("Encoding", "the sending chain is exhausted");
    const [nextCk, mk] = kdfCk(s.cks);
    const header: RatchetHeader = {
      senderDeviceId: s.peer.localDeviceId,
      recipientDeviceId: s.peer.peerDeviceId,
      dh: Uint8Array.from(s.dhsPublic),
      pn: s.pn,
      n: s.ns,
      preamble: s.preamble && clonePreamble(s.preamble),
    };
    const [key, nonce] = messageKeys(mk);
    const ciphertext = aesGcmSeal(key, nonce, messageAad(s.ad, messageId, header), plaintext);
    wipe(key, nonce, mk, s.cks);
    s.cks = nextCk;
    s.ns += 1;
    return { header, ciphertext };
  }

  /**
   * Decrypts one message (§6.5) on a copy of the state: on any error the session is unchanged,
   * and so is `keys`' position (when it has a checkpoint).
   */
  decrypt(messageId: string, message: RatchetMessage, keys: RatchetKeySource = osRatchetKeys): Uint8Array {
    checkUuidV7(messageId, "message id");
    const h = message.header;
    if (h.recipientDeviceId !== this.state.peer.localDeviceId || h.senderDeviceId !== this.state.peer.peerDeviceId) {
      throw new CryptoError("KeyMismatch", "the message is of another pair of devices");
    }
    if (h.dh.length !== 32) throw new CryptoError("MalformedEnvelope", "the header's ratchet key must be 32 bytes");
    checkU32(h.pn, "the header's pn");
    checkU32(h.n, "the header's n");
    if (h.preamble) checkPreamble(h.preamble);
    const next = cloneState(this.state);
    const restore = keys.checkpoint?.();
    try {
      const plaintext = decryptInPlace(next, messageId, message, keys);
      next.preamble = null;
      const old = this.state;
      this.state = next;
      wipeState(old);
      return plaintext;
    } catch (error) {
      restore?.();
      wipeState(next);
      throw error;
    }
  }

  toJSON(): SessionJson {
    const s = this.state;
    return {
      format: SESSION_FORMAT,
      ad: toHex(s.ad),
      local_device_id: s.peer.localDeviceId,
      peer_user_id: s.peer.peerUserId,
      peer_device_id: s.peer.peerDeviceId,
      peer_identity_key_id: s.peer.peerIdentityKeyId,
      base_key: toHex(s.baseKey),
      dhs: toHex(s.dhs),
      dhr: s.dhr && toHex(s.dhr),
      rk: toHex(s.rk),
      cks: s.cks && toHex(s.cks),
      ckr: s.ckr && toHex(s.ckr),
      ns: s.ns,
      nr: s.nr,
      pn: s.pn,
      skipped: [...s.skipped.values()].map((k) => ({ dh: toHex(k.dh), n: k.n, mk: toHex(k.mk) })),
      previous_receiving: s.previousReceiving.map(toHex),
      preamble: s.preamble && preambleToJSON(s.preamble),
    };
  }

  static fromJSON(json: SessionJson): Session {
    if (json.format !== SESSION_FORMAT) throw new CryptoError("InvalidStoredKeys", "unknown session format");
    if (json.skipped.length > MAX_SKIPPED_KEYS || json.previous_receiving.length > REMEMBERED_RECEIVING_KEYS) {
      throw new CryptoError("InvalidStoredKeys", "a session holds more keys than allowed");
    }
    const k32 = (text: string, what: string): Uint8Array => {
      try {
        return fromHex(text, 32, what);
      } catch {
        throw new CryptoError("InvalidStoredKeys", `${what} is not 64 hex digits`);
      }
    };
    const dhs = k32(json.dhs, "a session key");
    return new Session({
      ad: fromHex(json.ad),
      peer: {
        localDeviceId: json.local_device_id,
        peerUserId: json.peer_user_id,
        peerDeviceId: json.peer_device_id,
        peerIdentityKeyId: json.peer_identity_key_id,
      },
      baseKey: k32(json.base_key, "the session's base key"),
      dhs,
      dhsPublic: x25519Public(dhs),
      dhr: json.dhr === null ? null : k32(json.dhr, "a session public key"),
      rk: k32(json.rk, "a session key"),
      cks: json.cks === null ? null : k32(json.cks, "a session key"),
      ckr: json.ckr === null ? null : k32(json.ckr, "a session key"),
      ns: json.ns,
      nr: json.nr,
      pn: json.pn,
      skipped: new Map(
        json.skipped.map((k) => {
          const dh = k32(k.dh, "a skipped key's ratchet key");
          return [skippedId(dh, k.n), { dh, n: k.n, mk: k32(k.mk, "a skipped message key") }];
        }),
      ),
      previousReceiving: json.previous_receiving.map((text) => k32(text, "a session public key")),
      preamble: json.preamble && preambleFromJSON(json.preamble),
    });
  }
}

function decryptInPlace(s: State, messageId: string, message: RatchetMessage, keys: RatchetKeySource): Uint8Array {
  const h = message.header;
  // 1. A skipped key: take it (deleted from the copy) and decrypt.
  const id = skippedId(h.dh, h.n);
  const skipped = s.skipped.get(id);
  if (skipped) {
    s.skipped.delete(id);
    try {
      return open(skipped.mk, s.ad, messageId, message);
    } finally {
      wipe(skipped.mk);
    }
  }
  // 2. One of this session's earlier receiving keys: its keys were used or skipped past.
  if (s.previousReceiving.some((key) => ctEqual(key, h.dh))) {
    throw duplicate();
  }
  // 3. A new ratchet key: skip the rest of the current chain up to pn, then a DH ratchet step.
  if (!s.dhr || !ctEqual(s.dhr, h.dh)) {
    skipMessageKeys(s, h.pn);
    dhRatchet(s, h.dh, keys);
  }
  // 4. Skip up to n in the receiving chain, then this message's key.
  if (h.n < s.nr) throw duplicate();
  skipMessageKeys(s, h.n);
  if (!s.ckr) throw duplicate();
  const [nextCk, mk] = kdfCk(s.ckr);
  wipe(s.ckr);
  s.ckr = nextCk;
  s.nr += 1;
  try {
    return open(mk, s.ad, messageId, message);
  } finally {
    wipe(mk);
  }
}

function duplicate(): CryptoError {
  return new CryptoError("DuplicateMessage", "the message's key was already used or deleted (a replay)");
}

/** Stores the receiving chain's keys from `nr` up to (not including) `until`. */
function skipMessageKeys(s: State, until: number): void {
  if (!s.dhr || !s.ckr || until <= s.nr) return;
  const skip = until - s.nr;
  if (skip > MAX_SKIP) {
    throw new CryptoError("TooManySkipped", `the message skips ${skip} keys in its chain; at most ${MAX_SKIP} are allowed`);
  }
  let ck = s.ckr;
  for (let n = s.nr; n < until; n++) {
    const [nextCk, mk] = kdfCk(ck);
    wipe(ck);
    s.skipped.set(skippedId(s.dhr, n), { dh: Uint8Array.from(s.dhr), n, mk });
    if (s.skipped.size > MAX_SKIPPED_KEYS) {
      const [oldest, key] = s.skipped.entries().next().value as [string, SkippedKey];
      wipe(key.mk);
      s.skipped.delete(oldest);
    }
    ck = nextCk;
  }
  s.ckr = ck;
  s.nr = until;
}

function dhRatchet(s: State, theirDh: Uint8Array, keys: RatchetKeySource): void {
  if (s.dhr) {
    s.previousReceiving.push(s.dhr);
    if (s.previousReceiving.length > REMEMBERED_RECEIVING_KEYS) s.previousReceiving.shift();
  }
  s.pn = s.ns;
  s.ns = 0;
  s.nr = 0;
  s.dhr = Uint8Array.from(theirDh);
  const [rk1, ckr] = kdfRk(s.rk, x25519Agree(s.dhs, theirDh, "the peer's ratchet key"));
  const dhs = keys.next();
  const [rk2, cks] = kdfRk(rk1, x25519Agree(dhs, theirDh, "the peer's ratchet key"));
  wipe(s.rk, rk1, s.ckr, s.cks, s.dhs);
  s.rk = rk2;
  s.ckr = ckr;
  s.cks = cks;
  s.dhs = dhs;
  s.dhsPublic = x25519Public(dhs);
}

function open(mk: Uint8Array, ad: Uint8Array, messageId: string, message: RatchetMessage): Uint8Array {
  const [key, nonce] = messageKeys(mk);
  try {
    return aesGcmOpen(key, nonce, messageAad(ad, messageId, message.header), message.ciphertext);
  } finally {
    wipe(key, nonce);
  }
}
