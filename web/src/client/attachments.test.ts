// The attachment client's pieces that need no server: file names from senders made safe, the
// stored form of a file's reference, and the errors as the UI shows them (the server's reason
// for too large and over the quota, the cryptography's for damaged data) with what to do. The
// upload, resume and download against the real services are in e2e/attachments.test.mjs.
import { ConnectError, Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import { CryptoError } from "../crypto/errors";
import { randomBytes } from "../crypto/primitives";
import { attachmentRef, attachmentView, describeAttachmentError, safeFileName, storedAttachment } from "./attachments";

function failure(code: Code, message: string, reason: string): ConnectError {
  const bytes = new TextEncoder().encode(reason);
  const error = new ConnectError(message, code);
  error.details.push({ type: "google.rpc.ErrorInfo", value: Uint8Array.from([0x0a, bytes.length, ...bytes]) });
  return error;
}

describe("safeFileName", () => {
  it("keeps a sender's name from leaving the download folder or hiding", () => {
    expect(safeFileName("../../etc/passwd", "x")).toBe("_.._etc_passwd");
    expect(safeFileName("..", "x")).toBe("x");
    expect(safeFileName(".bashrc", "x")).toBe("bashrc");
    expect(safeFileName("C:\\scan\u0000.pdf", "x")).toBe("C:_scan_.pdf");
    expect(safeFileName("letter.pdf", "x")).toBe("letter.pdf");
    expect(safeFileName("  ", "x")).toBe("x");
  });
});

describe("stored attachments", () => {
  it("round-trip the reference; the view has no key and a safe name", () => {
    const ref = {
      attachmentId: "0192f0c4-3b2a-7c3d-8e4f-5a6b7c8d9e0f",
      key: randomBytes(32),
      digest: randomBytes(32),
      fileLen: 123_456n,
      mediaType: "application/pdf",
      fileName: "../letter.pdf",
    };
    expect(attachmentRef(storedAttachment(ref))).toEqual(ref);
    const view = attachmentView(storedAttachment(ref));
    expect(view).toEqual({ attachmentId: ref.attachmentId, fileName: "_letter.pdf", mediaType: "application/pdf", fileLen: 123_456 });
  });
});

describe("describeAttachmentError", () => {
  it("keeps the server's message and says what to do about size and quota", () => {
    const large = describeAttachmentError(failure(Code.InvalidArgument, "an attachment's blob may be at most 104883200 bytes", "ATTACHMENT_TOO_LARGE"));
    expect(large.message).toBe("an attachment's blob may be at most 104883200 bytes");
    expect(large.code).toBe("InvalidArgument");
    expect(large.advice).toMatch(/smaller file/);
    const quota = describeAttachmentError(failure(Code.ResourceExhausted, "the attachment quota is used up", "ATTACHMENT_QUOTA_EXCEEDED"));
    expect(quota.message).toBe("the attachment quota is used up");
    expect(quota.code).toBe("ResourceExhausted");
    expect(quota.advice).toMatch(/storage is full/);
    expect(describeAttachmentError(new ConnectError("rate limited", Code.ResourceExhausted)).advice).not.toMatch(/storage/);
  });

  it("says that a damaged or altered file is not shown", () => {
    for (const code of ["AttachmentDamaged", "AttachmentDigestMismatch"] as const) {
      const view = describeAttachmentError(new CryptoError(code, "altered"));
      expect(view.code).toBe(code);
      expect(view.advice).toMatch(/not shown.*send it again/);
    }
  });

  it("gives records' advice for a record's file", () => {
    const refused = describeAttachmentError(failure(Code.PermissionDenied, "your attributes do not satisfy the record's policy", "POLICY_NOT_SATISFIED"), "session", "record");
    expect(refused.message).toBe("your attributes do not satisfy the record's policy");
    expect(refused.advice).toMatch(/emergency access/);
    expect(describeAttachmentError(new CryptoError("AttachmentDamaged", "altered"), "session", "record").advice).toMatch(/attach it again/);
    expect(describeAttachmentError(failure(Code.ResourceExhausted, "full", "ATTACHMENT_QUOTA_EXCEEDED"), "session", "record").advice).not.toMatch(/Recall/);
  });
});
