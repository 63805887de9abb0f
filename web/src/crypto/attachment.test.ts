/**
 * Attachments (§13): `../docs/vectors/attachment-v1.json` (made by the independent Python
 * implementation `tools/vectorgen/attachment.py`, pinned by `crates/crypto/tests/attachment_vectors.rs`)
 * sealed here from each case's key, id and file must give the same blob and digest and open back
 * to the file fed in odd-sized pieces; then reordered, truncated, flipped, mixed and mis-digested
 * blobs are refused.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { hex, REPO_ROOT, type Json } from "../../test/support.js";
import {
  attachmentBlobLen,
  attachmentIdBytes,
  AttachmentOpener,
  CHUNK_LEN,
  openAll,
  sealAll,
  sealFile,
  SEALED_CHUNK_LEN,
} from "./attachment.js";
import { concat, toHex } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { randomBytes, sha256 } from "./primitives.js";

const vectors: Json = JSON.parse(readFileSync(join(REPO_ROOT, "docs/vectors/attachment-v1.json"), "utf8"));

function file(len: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = i % 251;
  return out;
}

async function refusal(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
  } catch (error) {
    if (error instanceof CryptoError) return error.code;
    throw error;
  }
  throw new Error("accepted");
}

describe("attachment vectors", () => {
  it("has the format and at least six cases", () => {
    expect(vectors.format).toBe("caremesh-attachment-v1");
    expect(vectors.chunk_len).toBe(CHUNK_LEN);
    expect(vectors.cases.length).toBeGreaterThanOrEqual(6);
  });

  for (const c of vectors.cases as Json[]) {
    it(`seals and opens "${c.name}" as the vector`, async () => {
      const key = hex(c.key);
      const id = hex(c.attachment_id);
      const plaintext = file(c.plaintext_len);
      const { blob, sealed } = await sealAll(key, id, plaintext);
      expect(toHex(sealed.digest)).toBe(c.digest);
      expect(blob.length).toBe(c.blob_len);
      expect(sealed.blobLen).toBe(c.blob_len);
      expect(sealed.fileLen).toBe(c.plaintext_len);
      expect(attachmentBlobLen(c.plaintext_len)).toBe(c.blob_len);
      if (c.blob !== undefined) {
        expect(toHex(blob)).toBe(c.blob);
      } else {
        expect(toHex(blob.subarray(0, 64))).toBe(c.blob_head);
        expect(toHex(blob.subarray(blob.length - 64))).toBe(c.blob_tail);
      }
      for (const feed of [1000, 70_001, SEALED_CHUNK_LEN, 1 << 20]) {
        const opener = await AttachmentOpener.create(key, id, sealed.digest);
        const parts: Uint8Array[] = [];
        for (let at = 0; at < blob.length; at += feed) parts.push(...(await opener.update(blob.subarray(at, at + feed))));
        parts.push(await opener.finish());
        expect(toHex(concat(...parts)), `${c.name}, feed ${feed}`).toBe(toHex(plaintext));
      }
    });
  }
});

describe("attachment sealing", () => {
  it("gives each chunk at its blob offset, reading the file in slices", async () => {
    const key = randomBytes(32);
    const id = attachmentIdBytes("0192f0c4-3b2a-7c3d-8e4f-5a6b7c8d9e0f");
    const plaintext = file(3 * CHUNK_LEN + 17);
    const offsets: number[] = [];
    const parts: Uint8Array[] = [];
    const sealed = await sealFile(new Blob([plaintext]), key, id, (offset, chunk) => {
      offsets.push(offset);
      parts.push(chunk);
    });
    expect(offsets).toEqual([0, SEALED_CHUNK_LEN, 2 * SEALED_CHUNK_LEN, 3 * SEALED_CHUNK_LEN]);
    expect(parts.map((p) => p.length)).toEqual([SEALED_CHUNK_LEN, SEALED_CHUNK_LEN, SEALED_CHUNK_LEN, 17 + 16]);
    expect(toHex(sealed.digest)).toBe(toHex(sha256(concat(...parts))));
    // Deterministic for a key and id (what resuming an upload relies on).
    const again = await sealAll(key, id, plaintext);
    expect(toHex(again.blob)).toBe(toHex(concat(...parts)));
    expect(toHex(await openAll(key, id, sealed.digest, again.blob))).toBe(toHex(plaintext));
  });

  it("refuses ids that are not UUIDv7 and keys that are not 32 bytes", async () => {
    expect(() => attachmentIdBytes("not-a-uuid")).toThrow(CryptoError);
    expect(await refusal(() => sealAll(new Uint8Array(31), new Uint8Array(16), file(1)))).toBe("InvalidKey");
  });
});

describe("tampered attachments", () => {
  const key = randomBytes(32);
  const id = randomBytes(16);
  const plaintext = file(3 * CHUNK_LEN + 5);
  const setup = sealAll(key, id, plaintext);
  const chunk = (blob: Uint8Array, i: number) => blob.subarray(i * SEALED_CHUNK_LEN, Math.min((i + 1) * SEALED_CHUNK_LEN, blob.length));
  // With the digest of the tampered blob itself, so that the chunk checks alone must refuse it.
  const open = (blob: Uint8Array) => refusal(() => openAll(key, id, sha256(blob), blob));

  it("refuses a flipped byte", async () => {
    const { blob } = await setup;
    for (const at of [0, SEALED_CHUNK_LEN + 3, blob.length - 1]) {
      const flipped = Uint8Array.from(blob);
      flipped[at]! ^= 0x01;
      expect(await open(flipped), `byte ${at}`).toBe("AttachmentDamaged");
    }
  });

  it("refuses swapped chunks", async () => {
    const { blob } = await setup;
    expect(await open(concat(chunk(blob, 1), chunk(blob, 0), chunk(blob, 2), chunk(blob, 3)))).toBe("AttachmentDamaged");
  });

  it("refuses a truncated end, at a chunk boundary or inside a chunk", async () => {
    const { blob } = await setup;
    expect(await open(concat(chunk(blob, 0), chunk(blob, 1), chunk(blob, 2)))).toBe("AttachmentDamaged");
    expect(await open(blob.subarray(0, blob.length - 1))).toBe("AttachmentDamaged");
    expect(await open(blob.subarray(0, 10))).toBe("AttachmentDamaged");
    expect(await open(new Uint8Array())).toBe("AttachmentDamaged");
  });

  it("refuses a chunk of another file (another id) in its place", async () => {
    const { blob } = await setup;
    const other = (await sealAll(key, randomBytes(16), plaintext)).blob;
    expect(await open(concat(chunk(blob, 0), chunk(other, 1), chunk(blob, 2), chunk(blob, 3)))).toBe("AttachmentDamaged");
  });

  it("refuses the intact blob under another digest, before the last chunk is given", async () => {
    const { blob, sealed } = await setup;
    const wrong = Uint8Array.from(sealed.digest);
    wrong[0]! ^= 1;
    expect(await refusal(() => openAll(key, id, wrong, blob))).toBe("AttachmentDigestMismatch");
    // Appended bytes change the digest.
    expect(await refusal(() => openAll(key, id, sealed.digest, concat(blob, Uint8Array.of(0))))).toBe("AttachmentDigestMismatch");
  });

  it("refuses the right blob under another key", async () => {
    const { blob, sealed } = await setup;
    expect(await refusal(() => openAll(randomBytes(32), id, sealed.digest, blob))).toBe("AttachmentDamaged");
  });
});
