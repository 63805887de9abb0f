/**
 * Attachments (`docs/protocol.md` §13), as `crates/crypto/src/attachment.rs`: a file encrypted
 * under a fresh 256-bit key in 64 KiB chunks, so that it moves both ways in bounded memory.
 *
 * ```text
 * CK       = HKDF-SHA256(salt = id, IKM = K, info = "caremesh-attachment-v1", length 32)
 * nonce_i  = u64be(i) || 00 00 00 || last_i
 * AAD_i    = "caremesh-attachment-v1" || id || u64be(i) || last_i
 * sealed_i = AES-256-GCM(CK, nonce_i, AAD_i, chunk_i)      -- ciphertext || 16-byte tag
 * blob     = sealed_0 || ... || sealed_n;  digest = SHA-256(blob)
 * ```
 *
 * The chunks go through WebCrypto's AES-GCM (the chunk key imported non-extractable); the digest
 * is computed incrementally. {@link sealFile} reads a `Blob` (a `File`) one 64 KiB slice at a
 * time; {@link AttachmentOpener} opens a blob fed in pieces of any size and accepts the last
 * chunk only once the digest of everything fed matches.
 */
import { checkUuidV7, concat, ctEqual, fromHex, u64be, utf8 } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { hkdfSha256, sha256Stream, TAG_LEN, webAesGcmKey, webAesGcmOpen, webAesGcmSeal, type Sha256Stream } from "./primitives.js";

export const ATTACHMENT_LABEL = "caremesh-attachment-v1";
/** Plaintext bytes per chunk: every chunk is this long but the last. */
export const CHUNK_LEN = 64 * 1024;
/** A full chunk as stored. */
export const SEALED_CHUNK_LEN = CHUNK_LEN + TAG_LEN;
export const ATTACHMENT_ID_LEN = 16;

const LABEL = utf8(ATTACHMENT_LABEL);

/** The 16 bytes of an attachment id in canonical UUIDv7 form. */
export function attachmentIdBytes(attachmentId: string): Uint8Array {
  checkUuidV7(attachmentId, "attachment id");
  return fromHex(attachmentId.replaceAll("-", ""), ATTACHMENT_ID_LEN, "attachment id");
}

/** The blob length of a file of `fileLen` bytes: one tag per chunk, at least one chunk. */
export function attachmentBlobLen(fileLen: number): number {
  if (!Number.isSafeInteger(fileLen) || fileLen < 0) throw new CryptoError("Encoding", "a file length must be a non-negative integer");
  return fileLen + TAG_LEN * Math.max(1, Math.ceil(fileLen / CHUNK_LEN));
}

/** What sealing a whole file gave besides the blob. */
export interface SealedAttachment {
  readonly digest: Uint8Array;
  readonly fileLen: number;
  readonly blobLen: number;
}

function damaged(): CryptoError {
  return new CryptoError("AttachmentDamaged", "the file's encrypted data is damaged or was altered (a chunk does not authenticate)");
}

class ChunkCipher {
  private constructor(
    private readonly key: CryptoKey,
    private readonly id: Uint8Array,
  ) {}

  static async create(key: Uint8Array, attachmentId: Uint8Array): Promise<ChunkCipher> {
    if (key.length !== 32) throw new CryptoError("InvalidKey", "an attachment key must be 32 bytes");
    if (attachmentId.length !== ATTACHMENT_ID_LEN) throw new CryptoError("InvalidId", "an attachment id must be 16 bytes");
    const chunkKey = hkdfSha256(attachmentId, key, LABEL, 32);
    try {
      return new ChunkCipher(await webAesGcmKey(chunkKey), Uint8Array.from(attachmentId));
    } finally {
      chunkKey.fill(0);
    }
  }

  private static nonce(index: number, last: boolean): Uint8Array {
    const nonce = new Uint8Array(12);
    nonce.set(u64be(BigInt(index)), 0);
    nonce[11] = last ? 1 : 0;
    return nonce;
  }

  private aad(index: number, last: boolean): Uint8Array {
    return concat(LABEL, this.id, u64be(BigInt(index)), Uint8Array.of(last ? 1 : 0));
  }

  seal(index: number, last: boolean, plaintext: Uint8Array): Promise<Uint8Array> {
    return webAesGcmSeal(this.key, ChunkCipher.nonce(index, last), this.aad(index, last), plaintext);
  }

  async open(index: number, last: boolean, sealed: Uint8Array): Promise<Uint8Array> {
    try {
      return await webAesGcmOpen(this.key, ChunkCipher.nonce(index, last), this.aad(index, last), sealed);
    } catch {
      throw damaged();
    }
  }
}

/** Seals a file chunk by chunk, in order: {@link sealChunk} for each, the last one flagged, then {@link finish}. */
export class AttachmentSealer {
  private next = 0;
  private readonly digest: Sha256Stream = sha256Stream();
  private fileLen = 0;
  private blobLen = 0;
  private sealedLast = false;

  private constructor(private readonly cipher: ChunkCipher) {}

  static async create(key: Uint8Array, attachmentId: Uint8Array): Promise<AttachmentSealer> {
    return new AttachmentSealer(await ChunkCipher.create(key, attachmentId));
  }

  /** The next chunk: exactly {@link CHUNK_LEN} bytes, or, when `last`, 0 to {@link CHUNK_LEN}. */
  async sealChunk(plaintext: Uint8Array, last: boolean): Promise<Uint8Array> {
    if (this.sealedLast) throw new CryptoError("Encoding", "the last chunk of this attachment is already sealed");
    if (last ? plaintext.length > CHUNK_LEN : plaintext.length !== CHUNK_LEN) {
      throw new CryptoError("Encoding", "an attachment chunk is 65536 bytes, only the last one may be shorter");
    }
    const index = this.next;
    this.next += 1;
    this.sealedLast = last;
    const sealed = await this.cipher.seal(index, last, plaintext);
    this.digest.update(sealed);
    this.fileLen += plaintext.length;
    this.blobLen += sealed.length;
    return sealed;
  }

  finish(): SealedAttachment {
    if (!this.sealedLast) throw new CryptoError("Encoding", "the attachment's last chunk was not sealed");
    return { digest: this.digest.digest(), fileLen: this.fileLen, blobLen: this.blobLen };
  }
}

/**
 * Seals `file` (read one 64 KiB slice at a time), giving each sealed chunk with its offset in the
 * blob to `onChunk` (awaited: the caller sends or skips it). Sealing is deterministic for a key
 * and id, so an upload resumes by sealing again and sending only what the server lacks.
 */
export async function sealFile(
  file: Blob,
  key: Uint8Array,
  attachmentId: Uint8Array,
  onChunk: (offset: number, sealed: Uint8Array) => Promise<void> | void,
): Promise<SealedAttachment> {
  const sealer = await AttachmentSealer.create(key, attachmentId);
  const size = file.size;
  let offset = 0;
  for (let start = 0; ; start += CHUNK_LEN) {
    const end = Math.min(start + CHUNK_LEN, size);
    const plaintext = new Uint8Array(await file.slice(start, end).arrayBuffer());
    if (plaintext.length !== end - start) throw new CryptoError("Encoding", "the file changed while it was read");
    const sealed = await sealer.sealChunk(plaintext, end === size);
    plaintext.fill(0);
    await onChunk(offset, sealed);
    offset += sealed.length;
    if (end === size) break;
  }
  return sealer.finish();
}

/**
 * Opens a blob fed in pieces of any size. A full chunk opens once a byte of the next one arrives
 * (so it is known not to be the last); {@link finish} checks the digest of everything fed and
 * opens the last chunk. Every chunk `update` returns is authentic, but the file is complete (and
 * the one the digest names) only once `finish` succeeds: keep the pieces aside until then.
 */
export class AttachmentOpener {
  private next = 0;
  private pending: Uint8Array[] = [];
  private pendingLen = 0;
  private readonly digest: Sha256Stream = sha256Stream();

  private constructor(
    private readonly cipher: ChunkCipher,
    private readonly expectedDigest: Uint8Array,
  ) {}

  static async create(key: Uint8Array, attachmentId: Uint8Array, expectedDigest: Uint8Array): Promise<AttachmentOpener> {
    if (expectedDigest.length !== 32) throw new CryptoError("Encoding", "an attachment digest must be 32 bytes");
    return new AttachmentOpener(await ChunkCipher.create(key, attachmentId), Uint8Array.from(expectedDigest));
  }

  private takePending(): Uint8Array {
    const chunk = this.pending.length === 1 ? this.pending[0]! : concat(...this.pending);
    this.pending = [];
    this.pendingLen = 0;
    return chunk;
  }

  /** The next bytes of the blob; returns the plaintext of the chunks they completed, in order. */
  async update(sealed: Uint8Array): Promise<Uint8Array[]> {
    this.digest.update(sealed);
    const out: Uint8Array[] = [];
    let input = sealed;
    while (input.length > 0) {
      const room = SEALED_CHUNK_LEN - this.pendingLen;
      if (room === 0) {
        // A full chunk is pending and more bytes follow: it is not the last.
        out.push(await this.cipher.open(this.next, false, this.takePending()));
        this.next += 1;
        continue;
      }
      const take = input.subarray(0, Math.min(room, input.length));
      this.pending.push(Uint8Array.from(take));
      this.pendingLen += take.length;
      input = input.subarray(take.length);
    }
    return out;
  }

  /** Checks the digest of everything fed, then opens the last chunk. */
  async finish(): Promise<Uint8Array> {
    if (!ctEqual(this.digest.digest(), this.expectedDigest)) {
      throw new CryptoError("AttachmentDigestMismatch", "the file's encrypted data is not the one the message names (its digest differs)");
    }
    if (this.pendingLen < TAG_LEN) throw damaged();
    return this.cipher.open(this.next, true, this.takePending());
  }
}

/** Seals a whole file held in memory (tests and vectors): the blob and what sealing gave. */
export async function sealAll(key: Uint8Array, attachmentId: Uint8Array, plaintext: Uint8Array): Promise<{ blob: Uint8Array; sealed: SealedAttachment }> {
  const parts: Uint8Array[] = [];
  const sealed = await sealFile(new Blob([plaintext as Uint8Array<ArrayBuffer>]), key, attachmentId, (_offset, chunk) => void parts.push(chunk));
  return { blob: concat(...parts), sealed };
}

/** Opens a whole blob held in memory. */
export async function openAll(key: Uint8Array, attachmentId: Uint8Array, expectedDigest: Uint8Array, blob: Uint8Array): Promise<Uint8Array> {
  const opener = await AttachmentOpener.create(key, attachmentId, expectedDigest);
  const parts = await opener.update(blob);
  parts.push(await opener.finish());
  return concat(...parts);
}
