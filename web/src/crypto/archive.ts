/**
 * History keys and archive copies (§7). The archive has no forward secrecy against the history
 * key (§7.2's trade-off): whoever holds a user's key ring reads that user's archive.
 */
import { checkUserId, checkUuidV7, Encoder, fromHex, newId, toHex, wipe } from "./bytes.js";
import { type Content, decodeContent, encodeContent } from "./content.js";
import { CryptoError } from "./errors.js";
import { aesGcmOpen, aesGcmSeal, hkdfSha256, NONCE_LEN, randomBytes, ZERO32 } from "./primitives.js";

export const ARCHIVE_KEY_LABEL = "caremesh-history-v1/key";
export const ARCHIVE_AAD_LABEL = "caremesh-history-v1/aad";

/** A history key: 32 random bytes with a UUIDv7 id. */
export interface HistoryKey {
  historyKeyId: string;
  key: Uint8Array;
}

export function newHistoryKey(): HistoryKey {
  return { historyKeyId: newId(randomBytes), key: randomBytes(32) };
}

export interface HistoryKeyRingJson {
  keys: { history_key_id: string; key: string }[];
}

/** A user's history keys, newest first (§7.1). */
export class HistoryKeyRing {
  private readonly keys: HistoryKey[];

  constructor(keys: HistoryKey[]) {
    if (keys.length === 0) throw new CryptoError("InvalidStoredKeys", "a history key ring needs a key");
    for (const key of keys) {
      checkUuidV7(key.historyKeyId, "history key id");
      if (key.key.length !== 32) throw new CryptoError("InvalidKey", "a history key must be 32 bytes");
    }
    this.keys = keys.map((k) => ({ historyKeyId: k.historyKeyId, key: Uint8Array.from(k.key) }));
  }

  static generate(): HistoryKeyRing {
    return new HistoryKeyRing([newHistoryKey()]);
  }

  /** The keys, newest first (copies). */
  all(): HistoryKey[] {
    return this.keys.map((k) => ({ historyKeyId: k.historyKeyId, key: Uint8Array.from(k.key) }));
  }

  /** The key new archive copies use. */
  current(): HistoryKey {
    return this.keys[0]!;
  }

  /** Adds a new current key (rotation, §7.3); a key already held is not added twice. */
  pushCurrent(key: HistoryKey): void {
    if (!this.keys.some((k) => k.historyKeyId === key.historyKeyId)) {
      this.keys.unshift({ historyKeyId: key.historyKeyId, key: Uint8Array.from(key.key) });
    }
  }

  get(historyKeyId: string): HistoryKey {
    const key = this.keys.find((k) => k.historyKeyId === historyKeyId);
    if (!key) throw new CryptoError("UnknownKey", `this device holds no history key with id ${historyKeyId}`);
    return key;
  }

  toJSON(): HistoryKeyRingJson {
    return { keys: this.keys.map((k) => ({ history_key_id: k.historyKeyId, key: toHex(k.key) })) };
  }

  static fromJSON(json: HistoryKeyRingJson): HistoryKeyRing {
    return new HistoryKeyRing(json.keys.map((k) => ({ historyKeyId: k.history_key_id, key: fromHex(k.key, 32, "a history key") })));
  }
}

/** The ids an archive copy is bound to (§7.2). */
export interface ArchiveContext {
  ownerUserId: string;
  messageId: string;
  senderUserId: string;
  senderDeviceId: string;
  recipientUserId: string;
}

/** `HKDF(ZERO32, HK, lp(label) lp(history_key_id) lp(message_id), 32)`. */
export function archiveKey(key: HistoryKey, messageId: string): Uint8Array {
  const info = new Encoder(ARCHIVE_KEY_LABEL).field(key.historyKeyId).field(messageId).finish();
  return hkdfSha256(ZERO32, key.key, info, 32);
}

/** `lp(label) lp(owner) lp(history_key_id) lp(message_id) lp(sender_user) lp(sender_device) lp(recipient_user)`. */
export function archiveAad(context: ArchiveContext, historyKeyId: string): Uint8Array {
  checkUserId(context.ownerUserId, "owner user id");
  checkUserId(context.senderUserId, "sender user id");
  checkUserId(context.recipientUserId, "recipient user id");
  checkUuidV7(context.messageId, "message id");
  checkUuidV7(context.senderDeviceId, "sender device id");
  return new Encoder(ARCHIVE_AAD_LABEL)
    .field(context.ownerUserId)
    .field(historyKeyId)
    .field(context.messageId)
    .field(context.senderUserId)
    .field(context.senderDeviceId)
    .field(context.recipientUserId)
    .finish();
}

/** An archive copy as stored. */
export interface ArchiveCopy {
  historyKeyId: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

/** Seals a content for the user (kind 1 or 4) under `key` (the ring's current one) with a random nonce, or the given one (tests). */
export function sealArchive(key: HistoryKey, context: ArchiveContext, content: Content, nonce: Uint8Array = randomBytes(NONCE_LEN)): ArchiveCopy {
  if (content.kind !== 1 && content.kind !== 4) {
    throw new CryptoError("UnexpectedContent", "only contents for the user (kinds 1 and 4) are archived");
  }
  const aad = archiveAad(context, key.historyKeyId);
  const k = archiveKey(key, context.messageId);
  const plaintext = encodeContent(content);
  try {
    return { historyKeyId: key.historyKeyId, nonce: Uint8Array.from(nonce), ciphertext: aesGcmSeal(k, nonce, aad, plaintext) };
  } finally {
    wipe(k, plaintext);
  }
}

/** Opens a copy with the ring's key it names (`UnknownKey`, `DecryptionFailed`). */
export function openArchive(copy: ArchiveCopy, ring: HistoryKeyRing, context: ArchiveContext): Content {
  const key = ring.get(copy.historyKeyId);
  const aad = archiveAad(context, key.historyKeyId);
  const k = archiveKey(key, context.messageId);
  try {
    const plaintext = aesGcmOpen(k, copy.nonce, aad, copy.ciphertext);
    try {
      return decodeContent(plaintext);
    } finally {
      wipe(plaintext);
    }
  } finally {
    wipe(k);
  }
}
