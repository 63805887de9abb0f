/**
 * The plaintext inside a ratchet message or an archive copy (§6.6):
 * `PLAINTEXT = lp("caremesh-content-v1") u32be(kind) lp(body)`.
 */
import { checkUuidV7, Encoder, fromUtf8, Reader, u64be } from "./bytes.js";
import { CryptoError } from "./errors.js";

export const CONTENT_LABEL = "caremesh-content-v1";
/** Largest message body: 256 KiB − 1 KiB. */
export const MAX_MESSAGE_BODY_LEN = 255 * 1024;

/** Longest attachment media type and file name, in bytes of UTF-8. */
export const MAX_ATTACHMENT_LABEL_LEN = 255;

/** A file sent with a message (kind 4, docs/protocol.md §13): what fetches, checks and opens its blob. */
export interface AttachmentRef {
  readonly attachmentId: string;
  readonly key: Uint8Array;
  readonly digest: Uint8Array;
  readonly fileLen: bigint;
  readonly mediaType: string;
  /** As the sender gave it: never a path. */
  readonly fileName: string;
}

export type Content =
  | { kind: 1; body: Uint8Array }
  | { kind: 2; historyKeyId: string; key: Uint8Array }
  | { kind: 3 }
  | { kind: 4; caption: Uint8Array; attachment: AttachmentRef };

export function messageContent(body: Uint8Array): Content {
  return { kind: 1, body };
}

function tooLarge(len: number): CryptoError {
  return new CryptoError("PlaintextTooLarge", `the message is ${len} bytes; at most ${MAX_MESSAGE_BODY_LEN} bytes can be sealed`);
}

export function encodeContent(content: Content): Uint8Array {
  let body: Uint8Array;
  switch (content.kind) {
    case 1:
      if (content.body.length > MAX_MESSAGE_BODY_LEN) throw tooLarge(content.body.length);
      body = content.body;
      break;
    case 2:
      checkUuidV7(content.historyKeyId, "history key id");
      if (content.key.length !== 32) throw new CryptoError("InvalidKey", "a history key must be 32 bytes");
      body = new Encoder().field(content.historyKeyId).field(content.key).finish();
      break;
    case 3:
      body = new Uint8Array();
      break;
    case 4: {
      const { caption, attachment } = content;
      if (caption.length > MAX_MESSAGE_BODY_LEN) throw tooLarge(caption.length);
      checkAttachment(attachment);
      body = new Encoder()
        .field(caption)
        .field(attachment.attachmentId)
        .field(attachment.key)
        .field(attachment.digest)
        .raw(u64be(attachment.fileLen))
        .field(attachment.mediaType)
        .field(attachment.fileName)
        .finish();
      break;
    }
    default:
      throw new CryptoError("MalformedEnvelope", "unknown content kind");
  }
  return new Encoder(CONTENT_LABEL).u32(content.kind).field(body).finish();
}

function checkAttachment(attachment: AttachmentRef): void {
  checkUuidV7(attachment.attachmentId, "attachment id");
  if (attachment.key.length !== 32 || attachment.digest.length !== 32) {
    throw new CryptoError("MalformedEnvelope", "an attachment's key and digest must be 32 bytes each");
  }
  for (const label of [attachment.mediaType, attachment.fileName]) {
    if (new TextEncoder().encode(label).length > MAX_ATTACHMENT_LABEL_LEN || /[\u0000-\u001f\u007f-\u009f]/.test(label)) {
      throw new CryptoError(
        "MalformedEnvelope",
        "an attachment's media type and file name must be at most 255 bytes of UTF-8 without control characters",
      );
    }
  }
}

/** Parses a decrypted plaintext; an unknown kind or a non-empty session-reset is `MalformedEnvelope`. */
export function decodeContent(plaintext: Uint8Array): Content {
  const what = "the decrypted content (caremesh-content-v1)";
  const reader = new Reader(plaintext, what);
  if (fromUtf8(reader.field(), what) !== CONTENT_LABEL) throw new CryptoError("MalformedEnvelope", `${what} has another label`);
  const kind = reader.u32();
  const body = reader.field();
  reader.end();
  switch (kind) {
    case 1:
      if (body.length > MAX_MESSAGE_BODY_LEN) throw tooLarge(body.length);
      return { kind: 1, body: Uint8Array.from(body) };
    case 2: {
      const inner = new Reader(body, "a history-key content");
      const historyKeyId = inner.text();
      const key = inner.field();
      inner.end();
      checkUuidV7(historyKeyId, "history key id");
      if (key.length !== 32) throw new CryptoError("MalformedEnvelope", "a history-key content's key must be 32 bytes");
      return { kind: 2, historyKeyId, key: Uint8Array.from(key) };
    }
    case 3:
      if (body.length !== 0) throw new CryptoError("MalformedEnvelope", "a session-reset content must have an empty body");
      return { kind: 3 };
    case 4: {
      const inner = new Reader(body, "an attachment content");
      const caption = Uint8Array.from(inner.field());
      const attachmentId = inner.text();
      const key = Uint8Array.from(inner.field());
      const digest = Uint8Array.from(inner.field());
      const fileLen = inner.u64();
      const mediaType = inner.text();
      const fileName = inner.text();
      inner.end();
      if (caption.length > MAX_MESSAGE_BODY_LEN) throw tooLarge(caption.length);
      const attachment = { attachmentId, key, digest, fileLen, mediaType, fileName };
      checkAttachment(attachment);
      return { kind: 4, caption, attachment };
    }
    default:
      throw new CryptoError("MalformedEnvelope", `unknown content kind ${kind}`);
  }
}

/**
 * Checks who may send a content (§6.6): a history key only from one of the user's own devices
 * (`UnexpectedContent` otherwise).
 */
export function checkContentSender(content: Content, senderUserId: string, ownUserId: string): void {
  if (content.kind === 2 && senderUserId !== ownUserId) {
    throw new CryptoError("UnexpectedContent", "a history key from another user's device is refused");
  }
}
