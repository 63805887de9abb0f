/**
 * Wycheproof vectors through the wrappers the protocol uses (`primitives.ts`), as
 * `crates/crypto/tests/wycheproof.rs`: X25519 with the contributory check, AES-256-GCM (256-bit
 * keys, 96-bit nonces, 128-bit tags only), HKDF-SHA256 and strict Ed25519.
 */
import { describe, expect, it } from "vitest";

import { hex, wycheproof, WYCHEPROOF_DIR, type Json } from "../../test/support.js";
import { CryptoError } from "./errors.js";
import { aesGcmOpen, aesGcmSeal, ed25519Verify, hkdfSha256, x25519Agree } from "./primitives.js";

function* tests(file: Json): Generator<[Json, Json]> {
  for (const group of file.testGroups) for (const test of group.tests) yield [group, test];
}

function count(counts: Map<string, number>, category: string): void {
  counts.set(category, (counts.get(category) ?? 0) + 1);
}

function total(counts: Map<string, number>): number {
  return [...counts.values()].reduce((a, b) => a + b, 0);
}

function outcome<T>(run: () => T): { value?: T; error?: unknown } {
  try {
    return { value: run() };
  } catch (error) {
    return { error };
  }
}

describe.skipIf(WYCHEPROOF_DIR === null)("Wycheproof", () => {
  it("x25519: valid and acceptable results match, zero shared secrets are refused as non-contributory", () => {
    const file = wycheproof("x25519_test.json");
    const counts = new Map<string, number>();
    for (const [group, test] of tests(file)) {
      expect(group.curve).toBe("curve25519");
      const id = `tcId ${test.tcId}`;
      const shared = hex(test.shared);
      const zero = shared.every((b) => b === 0);
      expect(test.flags.includes("ZeroSharedSecret"), id).toBe(zero);
      if (test.flags.includes("LowOrderPublic")) expect(zero, id).toBe(true);
      const result = outcome(() => x25519Agree(hex(test.private), hex(test.public), "the test public key"));
      if ((test.result === "valid" || test.result === "acceptable") && !zero) {
        expect(result.error, id).toBeUndefined();
        expect(result.value, id).toEqual(shared);
        count(counts, `${test.result} (non-zero): shared secret matches`);
      } else if ((test.result === "valid" || test.result === "acceptable") && zero) {
        expect(result.error, id).toBeInstanceOf(CryptoError);
        expect((result.error as CryptoError).code, id).toBe("NonContributory");
        count(counts, "zero shared secret: refused as non-contributory");
      } else if (test.result === "invalid") {
        expect(result.error, id).toBeInstanceOf(CryptoError);
        count(counts, "invalid: refused");
      } else {
        throw new Error(`${id}: unknown result ${test.result}`);
      }
    }
    expect(total(counts)).toBe(file.numberOfTests);
    expect(counts.get("zero shared secret: refused as non-contributory")).toBeGreaterThan(0);
  });

  it("aes_gcm: 256-bit keys with 96-bit nonces and 128-bit tags decrypt, re-encrypt, and refuse forgeries", () => {
    const file = wycheproof("aes_gcm_test.json");
    const counts = new Map<string, number>();
    let other = 0;
    for (const [group, test] of tests(file)) {
      if (group.keySize !== 256 || group.ivSize !== 96 || group.tagSize !== 128) {
        other++;
        continue;
      }
      const id = `tcId ${test.tcId}`;
      const [key, nonce, aad, msg] = [hex(test.key), hex(test.iv), hex(test.aad), hex(test.msg)];
      const sealed = new Uint8Array([...hex(test.ct), ...hex(test.tag)]);
      const opened = outcome(() => aesGcmOpen(key, nonce, aad, sealed));
      if (test.result === "valid") {
        expect(opened.error, id).toBeUndefined();
        expect(opened.value, id).toEqual(msg);
        expect(aesGcmSeal(key, nonce, aad, msg), id).toEqual(sealed);
        count(counts, "valid: decrypts and re-encrypts");
      } else if (test.result === "invalid") {
        expect((opened.error as CryptoError).code, id).toBe("DecryptionFailed");
        count(counts, "invalid: refused");
      } else {
        throw new Error(`${id}: unexpected result ${test.result}`);
      }
    }
    expect(counts.get("valid: decrypts and re-encrypts")).toBeGreaterThan(0);
    expect(counts.get("invalid: refused")).toBeGreaterThan(0);
    expect(total(counts) + other).toBe(file.numberOfTests);
  });

  it("hkdf_sha256: outputs match, oversized outputs are refused", () => {
    const file = wycheproof("hkdf_sha256_test.json");
    const counts = new Map<string, number>();
    for (const [, test] of tests(file)) {
      const id = `tcId ${test.tcId}`;
      const result = outcome(() => hkdfSha256(hex(test.salt), hex(test.ikm), hex(test.info), test.size));
      if (test.result === "valid") {
        expect(result.error, id).toBeUndefined();
        expect(result.value, id).toEqual(hex(test.okm));
        count(counts, "valid: output matches");
      } else if (test.result === "invalid") {
        expect(result.error, id).toBeInstanceOf(CryptoError);
        count(counts, "invalid: refused");
      } else {
        throw new Error(`${id}: unexpected result ${test.result}`);
      }
    }
    expect(total(counts)).toBe(file.numberOfTests);
  });

  it("ed25519: strict verification accepts the valid signatures and refuses every invalid one", () => {
    const file = wycheproof("ed25519_test.json");
    const counts = new Map<string, number>();
    for (const [group, test] of tests(file)) {
      const id = `tcId ${test.tcId} (${test.flags.join(", ")})`;
      const result = outcome(() => ed25519Verify(hex(group.publicKey.pk), hex(test.msg), hex(test.sig), "test"));
      if (test.result === "valid") {
        expect(result.error, id).toBeUndefined();
        count(counts, "valid: verifies");
      } else if (test.result === "invalid") {
        expect(result.error, id).toBeInstanceOf(CryptoError);
        count(counts, "invalid: refused");
      } else {
        throw new Error(`${id}: unexpected result ${test.result}`);
      }
    }
    expect(total(counts)).toBe(file.numberOfTests);
    expect(counts.get("invalid: refused")).toBeGreaterThan(0);
  });
});
