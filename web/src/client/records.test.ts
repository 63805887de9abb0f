// The records client's local checks: FHIR content of the declared kind (as the SDK's check_fhir),
// before anything is encrypted or sent; the DocumentReference a record's file is kept in (the
// JSON of crates/sdk/src/record_attachments.rs) and the attachment read back from it.
import { describe, expect, it } from "vitest";

import { randomBytes } from "../crypto/primitives";
import { attachmentOfDocument, documentReference, fhirProblem, RECORD_KINDS } from "./records";

describe("fhirProblem", () => {
  it("accepts FHIR JSON of the declared kind", () => {
    for (const kind of RECORD_KINDS) expect(fhirProblem(kind, JSON.stringify({ resourceType: kind }))).toBeNull();
  });

  it("refuses other kinds, non-JSON, and JSON without a resourceType", () => {
    expect(fhirProblem("Condition", '{"resourceType":"Observation"}')).toMatch(/is a FHIR Observation, not a Condition/);
    expect(fhirProblem("Observation", "not json")).toMatch(/not JSON/);
    expect(fhirProblem("Observation", '["resourceType"]')).toMatch(/no "resourceType"/);
    expect(fhirProblem("Observation", '{"resourceType":7}')).toMatch(/no "resourceType"/);
  });
});

describe("DocumentReference", () => {
  const attachment = {
    attachmentId: "0190b9a0-0000-7000-8000-000000000001",
    key: randomBytes(32),
    digest: randomBytes(32),
    fileLen: 123_456n,
    mediaType: "application/pdf",
    fileName: "referral.pdf",
  };

  it("is the SDK's JSON and gives back the attachment it names", () => {
    const document = documentReference("p1", { kind: "Observation", recordId: "r1" }, attachment, "2026-12-03T12:00:00Z") as Record<string, any>;
    expect(document["resourceType"]).toBe("DocumentReference");
    expect(document["subject"].reference).toBe("Patient/p1");
    expect(document["context"].related[0].reference).toBe("Observation/r1");
    const file = document["content"][0].attachment;
    expect(file.url).toBe(`urn:uuid:${attachment.attachmentId}`);
    expect(file.size).toBe(123_456);
    expect(file.title).toBe("referral.pdf");
    expect(file.contentType).toBe("application/pdf");
    expect(file.extension.map((e: { url: string }) => e.url)).toEqual([
      "https://caremesh.dev/fhir/StructureDefinition/attachment-key",
      "https://caremesh.dev/fhir/StructureDefinition/attachment-blob-sha256",
    ]);
    expect(fhirProblem("DocumentReference", JSON.stringify(document))).toBeNull();
    const back = attachmentOfDocument(JSON.stringify(document));
    expect(back.ref).toEqual(attachment);
    expect(back.related).toBe("Observation/r1");
    // No media type: no contentType (as the SDK).
    const untyped = documentReference("p1", { kind: "Observation", recordId: "r1" }, { ...attachment, mediaType: "" }, "now") as Record<string, any>;
    expect("contentType" in untyped["content"][0].attachment).toBe(false);
  });

  it("refuses a document without the key and digest, with the reason", () => {
    const plain = { resourceType: "DocumentReference", content: [{ attachment: { url: "urn:uuid:x", size: 1 } }] };
    expect(() => attachmentOfDocument(JSON.stringify(plain))).toThrow(/no key or digest extension/);
    expect(() => attachmentOfDocument("{}")).toThrow(/no content\[0\]\.attachment/);
    expect(() => attachmentOfDocument('{"content":[{"attachment":{"url":"https://x"}}]}')).toThrow(/not urn:uuid:/);
    const short = documentReference("p1", { kind: "Observation", recordId: "r1" }, { ...attachment, key: randomBytes(16) }, "now");
    expect(() => attachmentOfDocument(JSON.stringify(short))).toThrow(/not 32 bytes/);
  });
});
