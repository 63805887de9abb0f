// The audit client's trust decisions (audit.ts) against a log served in process by a
// ConnectRouter (real protobuf encoding, no network): the verifier key is pinned on first use, a
// checkpoint is trusted only after its signature and its consistency with the last trusted one
// verify, a failed check leaves the trusted checkpoint as it was, and an inclusion proof must be
// for the asked event, with the leaf hashed from its bytes. The e2e flow test runs it against
// audit-svc.

import { createRouterTransport } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";

import { AuditService, CheckpointSchema, LogEntrySchema } from "../gen/caremesh/audit/v1/audit_pb";
import { AuditEventSchema } from "../gen/caremesh/audit/v1/audit_event_pb";
import { toHex, utf8 } from "../crypto/bytes";
import { ed25519Public } from "../crypto/primitives";
import { AuditClient } from "./audit";
import { leafHash } from "./auditLog";
import { LOG_NAME, mth, path, signNote, subproof, verifierKeyText } from "./auditTree.testing";
import { SessionStore } from "./session";

const SEED = new Uint8Array(32).fill(3);
const OTHER = new Uint8Array(32).fill(4);

/** A log that audit.ts reads: `leaves`, the signing key, and switches to serve it wrong. */
function servedLog() {
  const log = {
    leaves: Array.from({ length: 5 }, (_, i) => utf8(`event-${i}`)),
    seed: SEED,
    /** Serve this root instead of the tree's (a forked log). */
    forkedRoot: null as Uint8Array | null,
    /** Serve the event under another id than the one asked. */
    swapEvent: false,
  };
  const checkpoint = (size: number) => {
    const root = log.forkedRoot ?? mth(log.leaves.slice(0, size));
    return create(CheckpointSchema, { origin: LOG_NAME, treeSize: BigInt(size), rootHash: root, signedNote: signNote(size, root, log.seed) });
  };
  const transport = createRouterTransport((router) =>
    router.service(AuditService, {
      getVerificationKey: () => ({
        origin: LOG_NAME,
        keyName: LOG_NAME,
        publicKey: ed25519Public(log.seed),
        verifierKey: verifierKeyText(log.seed),
      }),
      getCheckpoint: () => ({ checkpoint: checkpoint(log.leaves.length) }),
      createCheckpoint: () => ({ checkpoint: checkpoint(log.leaves.length) }),
      getConsistencyProof: (request) => ({
        firstTreeSize: request.firstTreeSize,
        secondCheckpoint: checkpoint(Number(request.secondTreeSize)),
        hashes: subproof(Number(request.firstTreeSize), log.leaves.slice(0, Number(request.secondTreeSize)), true),
      }),
      getInclusionProof: (request) => {
        const asked = request.leaf.case === "eventId" ? request.leaf.value : "";
        const index = Number(asked.replace("id-", ""));
        const leaf = log.leaves[index]!;
        return {
          entry: create(LogEntrySchema, {
            leafIndex: BigInt(index),
            leafValue: leaf,
            leafHash: leafHash(leaf),
            event: create(AuditEventSchema, { eventId: log.swapEvent ? `id-${index + 1}` : asked }),
          }),
          checkpoint: checkpoint(log.leaves.length),
          hashes: path(index, log.leaves),
        };
      },
    }),
  );
  return { log, client: new AuditClient("http://in-process", new SessionStore(async () => Promise.reject(new Error("no refresh"))), transport) };
}

describe("audit client trust", () => {
  it("trusts a signed checkpoint, then a larger one only with a valid consistency proof", async () => {
    const { log, client } = servedLog();
    const first = await client.verifyLatest(false);
    expect(first.treeSize).toBe(5n);
    expect(first.extends).toBeNull();
    expect(first.rootHex).toBe(toHex(mth(log.leaves)));

    log.leaves.push(utf8("event-5"), utf8("event-6"), utf8("event-7"));
    const second = await client.verifyLatest(true);
    expect(second.treeSize).toBe(8n);
    expect(second.extends).toBe(5n);
    expect(client.lastVerified?.treeSize).toBe(8n);
  });

  it("refuses a forked or shrunk log and keeps the checkpoint it trusted", async () => {
    const { log, client } = servedLog();
    await client.verifyLatest(false);
    // A fork: a signed checkpoint of a larger tree whose root does not extend the trusted one.
    log.leaves.push(utf8("event-5"));
    log.forkedRoot = mth([...log.leaves.slice(0, 5).reverse(), utf8("event-5")]);
    await expect(client.verifyLatest(false)).rejects.toThrow(/AUDIT LOG INTEGRITY FAILURE/);
    expect(client.lastVerified).toEqual({ treeSize: 5n, rootHex: toHex(mth(log.leaves.slice(0, 5))) });
    // A shrunk log, correctly signed.
    log.forkedRoot = null;
    log.leaves.splice(3);
    await expect(client.verifyLatest(false)).rejects.toThrow(/the log shrank: 3 events now, 5 before/);
    expect(client.lastVerified?.treeSize).toBe(5n);
  });

  it("keeps the verifier key it saw first: a checkpoint signed by another key is refused", async () => {
    const { log, client } = servedLog();
    await client.verifyLatest(false);
    log.seed = OTHER;
    await expect(client.verifyLatest(false)).rejects.toThrow(/no valid signature/);
  });

  it("proves an event's inclusion, and refuses a proof for another event", async () => {
    const { log, client } = servedLog();
    const proven = await client.proveEvent("id-3");
    expect(proven).toMatchObject({ leafIndex: 3n, treeSize: 5n, rootHex: toHex(mth(log.leaves)) });
    log.swapEvent = true;
    await expect(client.proveEvent("id-2")).rejects.toThrow(/the proof is for another event/);
  });
});
