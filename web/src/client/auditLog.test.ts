// The browser's audit log verification (auditLog.ts) against trees and proofs built here from the
// RFC 9162 definitions (MTH, PATH, PROOF) and notes signed here, including every way they can be
// tampered with.

import { describe, expect, it } from "vitest";

import { concat, toHex, utf8 } from "../crypto/bytes";
import { ed25519Public, sha256 } from "../crypto/primitives";
import {
  keyHash,
  leafHash,
  openCheckpoint,
  parseVerifierKey,
  toBase64,
  verifyConsistency,
  verifyInclusion,
  verifyServedCheckpoint,
} from "./auditLog";
import { LOG_NAME, mth, path, signNote, subproof, verifierKeyText } from "./auditTree.testing";

const leaves = Array.from({ length: 13 }, (_, i) => utf8(`event ${i}`));

const seed = new Uint8Array(32).fill(7);
const publicKey = ed25519Public(seed);
const NAME = LOG_NAME;
const verifierText = verifierKeyText(seed);

function sign(size: number, root = mth(leaves.slice(0, size)), key = seed, name = NAME): string {
  return signNote(size, root, key, name);
}

describe("audit log verification", () => {
  it("computes the C2SP key hash as specified", () => {
    const expected = sha256(concat(utf8("name"), new Uint8Array([0x0a, 0x01]), publicKey)).slice(0, 4);
    expect(toHex(keyHash("name", publicKey))).toBe(toHex(expected));
  });

  it("parses a verifier key and refuses a wrong hash, algorithm or shape", () => {
    const verifier = parseVerifierKey(verifierText);
    expect(verifier.name).toBe(NAME);
    expect(toHex(verifier.publicKey)).toBe(toHex(publicKey));
    const parts = verifierText.split("+");
    expect(() => parseVerifierKey(`${parts[0]}+00000000+${parts[2]}`)).toThrow(/hash does not match/);
    expect(() => parseVerifierKey(`${parts[0]}+${parts[1]}+${toBase64(concat(new Uint8Array([2]), publicKey))}`)).toThrow(
      /Ed25519/,
    );
    expect(() => parseVerifierKey("no-plus-signs")).toThrow(/name/);
  });

  it("opens a signed checkpoint and refuses tampered notes", () => {
    const verifier = parseVerifierKey(verifierText);
    const note = sign(13);
    const opened = openCheckpoint(verifier, note, NAME);
    expect(opened.size).toBe(13n);
    expect(toHex(opened.root)).toBe(toHex(mth(leaves)));
    // A changed size, root or origin breaks the signature.
    expect(() => openCheckpoint(verifier, note.replace("\n13\n", "\n12\n"), NAME)).toThrow(/no valid signature/);
    expect(() => openCheckpoint(verifier, sign(13, mth(leaves.slice(0, 12))).replace(/\n\n.*$/s, note.slice(note.indexOf("\n\n"))), NAME)).toThrow(
      /no valid signature/,
    );
    // Signed by another key under the same name.
    expect(() => openCheckpoint(verifier, sign(13, mth(leaves), new Uint8Array(32).fill(9)), NAME)).toThrow(
      /no valid signature/,
    );
    expect(() => openCheckpoint(verifier, note, "other.origin")).toThrow(/not "other.origin"/);
    expect(() => openCheckpoint(verifier, note.slice(0, -1), NAME)).toThrow(/newline/);
    expect(() => openCheckpoint(verifier, note.replace("\n\n", "\n"), NAME)).toThrow(/blank line/);
  });

  it("checks the served fields against the signed note", () => {
    const verifier = parseVerifierKey(verifierText);
    const signedNote = sign(13);
    const served = { origin: NAME, treeSize: 13n, rootHash: mth(leaves), signedNote };
    expect(verifyServedCheckpoint(verifier, served).size).toBe(13n);
    expect(() => verifyServedCheckpoint(verifier, { ...served, treeSize: 14n })).toThrow(/differ/);
    expect(() => verifyServedCheckpoint(verifier, { ...served, rootHash: mth(leaves.slice(1)) })).toThrow(/differ/);
  });

  it("verifies every inclusion proof of trees of 1 to 13 leaves and refuses altered ones", () => {
    for (let n = 1; n <= leaves.length; n++) {
      const tree = leaves.slice(0, n);
      const root = mth(tree);
      for (let m = 0; m < n; m++) {
        const proof = path(m, tree);
        verifyInclusion(leafHash(tree[m]!), BigInt(m), BigInt(n), proof, root);
        expect(() => verifyInclusion(leafHash(utf8("forged")), BigInt(m), BigInt(n), proof, root)).toThrow();
        if (proof.length > 0) {
          const bad = proof.map((h, i) => (i === 0 ? sha256(h) : h));
          expect(() => verifyInclusion(leafHash(tree[m]!), BigInt(m), BigInt(n), bad, root)).toThrow();
          expect(() => verifyInclusion(leafHash(tree[m]!), BigInt(m), BigInt(n), proof.slice(1), root)).toThrow();
        }
      }
      expect(() => verifyInclusion(leafHash(tree[0]!), BigInt(n), BigInt(n), [], root)).toThrow(/outside/);
    }
  });

  it("verifies every consistency proof between trees of up to 13 leaves and refuses a rewritten history", () => {
    for (let n = 1; n <= leaves.length; n++) {
      for (let m = 0; m <= n; m++) {
        const proof = m === 0 ? [] : subproof(m, leaves.slice(0, n), true);
        const firstRoot = mth(leaves.slice(0, m));
        const secondRoot = mth(leaves.slice(0, n));
        verifyConsistency(BigInt(m), BigInt(n), proof, firstRoot, secondRoot);
        if (m > 0 && m < n) {
          // The same sizes, but an earlier event changed: the old root no longer fits.
          const rewritten = leaves.slice(0, n).map((leaf, i) => (i === 0 ? utf8("rewritten") : leaf));
          expect(() =>
            verifyConsistency(BigInt(m), BigInt(n), subproof(m, rewritten, true), firstRoot, mth(rewritten)),
          ).toThrow();
          expect(() => verifyConsistency(BigInt(m), BigInt(n), proof.slice(1), firstRoot, secondRoot)).toThrow();
        }
      }
      expect(() => verifyConsistency(BigInt(n), BigInt(n - 1), [], mth(leaves.slice(0, n)), mth(leaves))).toThrow(/shrank/);
    }
  });
});
