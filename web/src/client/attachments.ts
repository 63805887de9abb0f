// Files sent with messages and kept with records (docs/protocol.md §13), from the browser, as the
// Rust SDK's crates/sdk/src/attachments.rs: the transfer goes through a `BlobService` (messaging-svc
// here, records-svc in ./records.ts), as the SDK's trait of that name. The file is sealed chunk by chunk under a fresh key (read from
// the File in 64 KiB slices) and uploaded in pieces of at most 1 MiB with the unary
// AppendAttachment (gRPC-Web cannot stream requests), each at the server's stored length; a cut
// upload resumes from GetAttachment.stored_length. Downloading reads the DownloadAttachment
// stream, opens each chunk as it arrives and hands back a Blob only once every chunk and the
// digest check out. The key and digest travel only inside the end-to-end message content.

import { Code, ConnectError, type Client } from "@connectrpc/connect";

import type { MessagingService } from "../gen/caremesh/messaging/v1/messaging_pb";
import { attachmentBlobLen, attachmentIdBytes, AttachmentOpener, sealFile } from "../crypto/attachment";
import { fromHex, newId, toHex } from "../crypto/bytes";
import { MAX_ATTACHMENT_LABEL_LEN, type AttachmentRef } from "../crypto/content";
import { CryptoError } from "../crypto/errors";
import { randomBytes } from "../crypto/primitives";
import { describeError, type ErrorView, type Operation } from "./errors";
// messaging.ts imports this module too; errorReason is only called, never read at load time.
import { errorReason } from "./messaging";

/** The largest piece of one AppendAttachment call (the blob store's piece size). */
export const UPLOAD_PIECE_LEN = 1 << 20;
/** How many times an upload cut by a transient failure is resumed before giving up. */
const UPLOAD_ATTEMPTS = 4;

/** Told how many of how many blob bytes have moved. */
export type Progress = (done: number, total: number) => void;

/** An attachment as the UI shows it (no key, no digest). */
export interface AttachmentView {
  readonly attachmentId: string;
  /** The sender's name for the file, made safe to save under (no path, no leading dot). */
  readonly fileName: string;
  readonly mediaType: string;
  /** The file's length in bytes. */
  readonly fileLen: number;
}

/** An AttachmentRef as this browser's encrypted store keeps it (plain JSON, hex bytes). */
export interface StoredAttachment {
  readonly attachment_id: string;
  readonly key: string;
  readonly digest: string;
  readonly file_len: number;
  readonly media_type: string;
  readonly file_name: string;
}

export function storedAttachment(ref: AttachmentRef): StoredAttachment {
  return {
    attachment_id: ref.attachmentId,
    key: toHex(ref.key),
    digest: toHex(ref.digest),
    file_len: Number(ref.fileLen),
    media_type: ref.mediaType,
    file_name: ref.fileName,
  };
}

export function attachmentRef(stored: StoredAttachment): AttachmentRef {
  return {
    attachmentId: stored.attachment_id,
    key: fromHex(stored.key, 32, "attachment key"),
    digest: fromHex(stored.digest, 32, "attachment digest"),
    fileLen: BigInt(stored.file_len),
    mediaType: stored.media_type,
    fileName: stored.file_name,
  };
}

export function attachmentView(stored: StoredAttachment): AttachmentView {
  return {
    attachmentId: stored.attachment_id,
    fileName: safeFileName(stored.file_name, `attachment-${stored.attachment_id}`),
    mediaType: stored.media_type,
    fileLen: stored.file_len,
  };
}

/**
 * A file name from a sender, made safe to save under (as the SDK's `safe_file_name`): no path
 * separators, no control characters, no leading dots; `fallback` when nothing usable remains.
 */
export function safeFileName(name: string, fallback: string): string {
  const cleaned = name
    .replace(/[/\\\u0000-\u001f\u007f-\u009f]/g, "_")
    .trim()
    .replace(/^\.+/, "");
  return cleaned === "" ? fallback : cleaned;
}

/** Cuts `text` to at most `max` bytes of UTF-8 at a character boundary. */
function truncateUtf8(text: string, max: number): string {
  let out = "";
  let len = 0;
  for (const char of text) {
    const size = new TextEncoder().encode(char).length;
    if (len + size > max) break;
    out += char;
    len += size;
  }
  return out;
}

/** The label of a local file as the message carries it: no control characters, at most 255 bytes. */
function label(text: string): string {
  return truncateUtf8(text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ""), MAX_ATTACHMENT_LABEL_LEN);
}

/** A file chosen to send, with the ids and key it is sealed under (kept so that a cut upload resumes). */
export interface PreparedUpload {
  readonly file: Blob;
  /** The message or record id that will name the attachment, chosen before it is written. */
  readonly parentId: string;
  readonly attachmentId: string;
  readonly key: Uint8Array;
  readonly mediaType: string;
  readonly fileName: string;
}

/** A file to send with a message: the parent is the message id. */
export function prepareUpload(file: File): PreparedUpload & { readonly messageId: string } {
  const upload = prepareBlobUpload(file);
  return { ...upload, messageId: upload.parentId };
}

/** A file to upload for a new parent (message or record) id. */
export function prepareBlobUpload(file: File): PreparedUpload {
  return {
    file,
    parentId: newId(randomBytes),
    attachmentId: newId(randomBytes),
    key: randomBytes(32),
    mediaType: label(file.type),
    fileName: label(file.name),
  };
}

/** What a service says of a blob: how much of it is stored, and whether it is complete. */
export interface BlobState {
  readonly storedLength: number;
  readonly complete: boolean;
}

/**
 * The service that keeps attachment blobs (messaging-svc for messages, records-svc for records),
 * as the SDK's `BlobService`: the four calls an upload and a download need.
 */
export interface BlobService {
  create(attachmentId: string, parentId: string, blobLength: number): Promise<BlobState>;
  state(attachmentId: string): Promise<BlobState>;
  /** One piece at `offset` (the unary Append call: gRPC-Web cannot stream requests). */
  append(attachmentId: string, offset: number, data: Uint8Array): Promise<BlobState>;
  download(attachmentId: string, signal?: AbortSignal): AsyncIterable<{ readonly offset: bigint; readonly data: Uint8Array }>;
}

/** A blob state from an answer's attachment (messaging's Attachment or records' RecordAttachment). */
export function blobState(attachment: { storedLength: bigint; complete: boolean } | undefined): BlobState {
  if (!attachment) throw new Error("the server answered without the attachment");
  return { storedLength: Number(attachment.storedLength), complete: attachment.complete };
}

/** messaging-svc as a BlobService. */
export function messageBlobs(api: Client<typeof MessagingService>): BlobService {
  return {
    create: async (attachmentId, messageId, blobLength) =>
      blobState((await api.createAttachment({ attachmentId, messageId, blobLength: BigInt(blobLength) })).attachment),
    state: async (attachmentId) => blobState((await api.getAttachment({ attachmentId })).attachment),
    append: async (attachmentId, offset, data) =>
      blobState((await api.appendAttachment({ attachmentId, offset: BigInt(offset), data })).attachment),
    download: (attachmentId, signal) => api.downloadAttachment({ attachmentId, offset: 0n }, { signal }),
  };
}

/** Whether an upload that failed this way can go on from the server's stored length. */
function resumable(error: unknown): boolean {
  if (!(error instanceof ConnectError)) return false;
  return (
    error.code === Code.Unavailable ||
    error.code === Code.DeadlineExceeded ||
    error.code === Code.Aborted ||
    // The request never reached the server (fetch failed: the connection dropped).
    (error.code === Code.Unknown && error.cause instanceof TypeError) ||
    (error.code === Code.FailedPrecondition && errorReason(error) === "BLOB_OFFSET_MISMATCH")
  );
}

/** Uploads a message's file through messaging-svc (see `uploadBlob`). */
export function uploadAttachment(api: Client<typeof MessagingService>, upload: PreparedUpload, onProgress?: Progress): Promise<AttachmentRef> {
  return uploadBlob(messageBlobs(api), upload, onProgress);
}

/**
 * Creates the attachment for `upload.parentId` and uploads its blob from wherever the server's
 * copy ends (resuming after transient failures); returns what the message or record must carry.
 */
export async function uploadBlob(blobs: BlobService, upload: PreparedUpload, onProgress?: Progress): Promise<AttachmentRef> {
  const id = attachmentIdBytes(upload.attachmentId);
  const total = attachmentBlobLen(upload.file.size);
  let stored = (await blobs.create(upload.attachmentId, upload.parentId, total)).storedLength;
  for (let attempt = 1; ; attempt++) {
    try {
      const sealed = await uploadFrom(blobs, upload, id, stored, total, onProgress);
      if (sealed.fileLen !== upload.file.size) throw new CryptoError("Encoding", "the file changed while it was sent: send it again");
      return {
        attachmentId: upload.attachmentId,
        key: upload.key,
        digest: sealed.digest,
        fileLen: BigInt(sealed.fileLen),
        mediaType: upload.mediaType,
        fileName: upload.fileName,
      };
    } catch (error) {
      if (attempt >= UPLOAD_ATTEMPTS || !resumable(error)) throw error;
      stored = (await blobs.state(upload.attachmentId)).storedLength;
    }
  }
}

/** Seals the whole file again (the digest covers all of it) and sends the bytes from `stored` on. */
async function uploadFrom(
  blobs: BlobService,
  upload: PreparedUpload,
  id: Uint8Array,
  stored: number,
  total: number,
  onProgress?: Progress,
) {
  let piece: Uint8Array[] = [];
  let pieceLen = 0;
  let pieceStart = stored;
  let complete = stored >= total;
  const flush = async () => {
    if (pieceLen === 0) return;
    const data = new Uint8Array(pieceLen);
    let at = 0;
    for (const part of piece) {
      data.set(part, at);
      at += part.length;
    }
    piece = [];
    pieceLen = 0;
    const answer = await blobs.append(upload.attachmentId, pieceStart, data);
    pieceStart += data.length;
    complete = answer.complete;
    onProgress?.(pieceStart, total);
  };
  onProgress?.(stored, total);
  const sealed = await sealFile(upload.file, upload.key, id, async (offset, chunk) => {
    const end = offset + chunk.length;
    if (end <= stored) return; // on the server already
    const part = offset >= stored ? chunk : chunk.subarray(stored - offset);
    // A chunk (65552 bytes) that would overfill the piece goes partly into this one.
    let rest = part;
    while (rest.length > 0) {
      const take = Math.min(UPLOAD_PIECE_LEN - pieceLen, rest.length);
      piece.push(rest.subarray(0, take));
      pieceLen += take;
      rest = rest.subarray(take);
      if (pieceLen === UPLOAD_PIECE_LEN) await flush();
    }
  });
  await flush();
  if (!complete) throw new CryptoError("Encoding", `the upload stopped at ${pieceStart} of ${total} bytes`);
  return sealed;
}

/** Downloads a message's file from messaging-svc (see `downloadBlob`). */
export function downloadAttachment(
  api: Client<typeof MessagingService>,
  ref: AttachmentRef,
  onProgress?: Progress,
  signal?: AbortSignal,
): Promise<Blob> {
  return downloadBlob(messageBlobs(api), ref, onProgress, signal);
}

/**
 * Downloads and opens an attachment: a Blob of the file (typed with its media type) once every
 * chunk and the digest check out; a reordered, truncated, mixed or altered blob is refused
 * (`AttachmentDamaged`, `AttachmentDigestMismatch`) and nothing of it is handed out.
 */
export async function downloadBlob(blobs: BlobService, ref: AttachmentRef, onProgress?: Progress, signal?: AbortSignal): Promise<Blob> {
  const opener = await AttachmentOpener.create(ref.key, attachmentIdBytes(ref.attachmentId), ref.digest);
  const total = attachmentBlobLen(Number(ref.fileLen));
  const parts: Uint8Array<ArrayBuffer>[] = [];
  let received = 0;
  onProgress?.(0, total);
  for await (const piece of blobs.download(ref.attachmentId, signal)) {
    if (Number(piece.offset) !== received) throw new CryptoError("AttachmentDamaged", "the server sent the file's data out of order");
    received += piece.data.length;
    if (received > total) throw new CryptoError("AttachmentDamaged", "the server sent more data than the file has");
    for (const plain of await opener.update(piece.data)) parts.push(plain as Uint8Array<ArrayBuffer>);
    onProgress?.(received, total);
  }
  parts.push((await opener.finish()) as Uint8Array<ArrayBuffer>);
  return new Blob(parts, { type: ref.mediaType });
}

/**
 * An attachment failure as the UI shows it: the server's message, or the cryptography's, and
 * what to do (too large, over the quota, damaged or altered data).
 */
export function describeAttachmentError(error: unknown, operation: Operation = "session", kept: "message" | "record" = "message"): ErrorView {
  const resend = kept === "message" ? "Ask the sender to send it again." : "Ask the writer to attach it again.";
  if (error instanceof CryptoError) {
    const advice =
      error.code === "AttachmentDamaged" || error.code === "AttachmentDigestMismatch"
        ? `The file was changed or damaged after it was sent, so it is not shown. ${resend}`
        : `Try again. If it keeps failing: ${resend}`;
    return { message: error.message, advice, code: error.code };
  }
  const view = describeError(error, operation);
  switch (errorReason(error)) {
    case "ATTACHMENT_TOO_LARGE":
      return { ...view, advice: "The file is larger than the server accepts. Send a smaller file (compress or split it)." };
    case "ATTACHMENT_QUOTA_EXCEEDED":
      return {
        ...view,
        advice:
          kept === "message"
            ? "Your attachment storage is full. Recall earlier messages with files to free space, or ask an administrator."
            : "Your attachment storage is full (record files are kept for good). Ask an administrator for more.",
      };
    case "POLICY_NOT_SATISFIED":
      return describeRecordError(error);
    default:
      return view;
  }
}

/** A record read records-svc refused (GetRecord, DownloadRecordAttachment), with what to do. */
export function describeRecordError(error: unknown): ErrorView {
  const view = describeError(error, "session");
  if (errorReason(error) !== "POLICY_NOT_SATISFIED") return view;
  return { ...view, advice: "The record's policy does not admit your attributes. Ask the patient's care team, or use emergency access in an emergency." };
}
