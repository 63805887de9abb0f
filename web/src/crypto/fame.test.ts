// FAME known answers from docs/vectors/fame-v1.json (written by crates/abe/examples/fame_vectors.rs,
// checked in Rust by crates/abe/tests/fame_vectors.rs): keys, record envelopes and malformed
// inputs; then browser-side encryption opened by the same code, the policy language, the sealed
// user key and the record signature.
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { describe, expect, it } from "vitest";

import { REPO_ROOT, hex, type Json } from "../../test/support.js";
import { toHex } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { bls12_381 } from "@noble/curves/bls12-381.js";

import { Ciphertext, decapsulate, doubleExp, encapsulate, FameError, hashAttribute, Policy, PublicParams, UserKey } from "./fame.js";
import {
  groupContentAad,
  openSealedUserKey,
  openUnderPolicy,
  recordContentAad,
  recordPolicy,
  recordVersionHash,
  sealUnderPolicy,
  sealUserKey,
  signGroupMessage,
  signRecordVersion,
  verifyGroupMessage,
  verifyRecordVersion,
  type GroupMessage,
  type RecordVersion,
} from "./fameEnvelope.js";
import { IdentityKeyPair } from "./identity.js";

const vectors: Json = JSON.parse(readFileSync(join(REPO_ROOT, "docs/vectors/fame-v1.json"), "utf8"));
const keys = new Map<string, UserKey>(vectors.keys.map((k: Json) => [k.name, UserKey.fromBytes(hex(k.user_key))]));
const params = PublicParams.fromBytes(hex(vectors.public_params));
const { Fp12 } = bls12_381.fields;
const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

function fameError(run: () => unknown): FameError {
  try {
    run();
  } catch (error) {
    if (error instanceof FameError) return error;
    throw error;
  }
  throw new Error("expected a FameError");
}

describe("fame-v1 vectors", () => {
  it("reads the public parameters and every key with its attributes", () => {
    expect(toHex(params.bytes)).toBe(vectors.public_params);
    for (const k of vectors.keys) expect([...keys.get(k.name)!.attributes]).toEqual(k.attributes);
  });

  for (const record of vectors.records as Json[]) {
    it(`record ${record.name}: opens with ${record.opens_with.join(", ")}, refused by the others`, () => {
      const ciphertext = Ciphertext.fromBytes(hex(record.encapsulated_key));
      expect(ciphertext.policy.canonical()).toBe(record.policy);
      const aad = recordContentAad(record.record_id, record.patient_id, record.kind, BigInt(record.version));
      expect(toHex(aad)).toBe(record.aad);
      const sealed = { encapsulatedKey: hex(record.encapsulated_key), nonce: hex(record.nonce), ciphertext: hex(record.ciphertext) };
      for (const name of record.opens_with) {
        const key = keys.get(name)!;
        expect(toHex(decapsulate(key, ciphertext))).toBe(record.data_key);
        expect(text(openUnderPolicy(key, sealed, aad))).toBe(record.plaintext);
      }
      for (const name of record.refused_by) {
        expect(fameError(() => decapsulate(keys.get(name)!, ciphertext)).code).toBe("PolicyNotSatisfied");
      }
      // Bound to the record version: another version's associated data fails authentication.
      const other = recordContentAad(record.record_id, record.patient_id, record.kind, BigInt(record.version) + 1n);
      expect(() => openUnderPolicy(keys.get(record.opens_with[0])!, sealed, other)).toThrow(CryptoError);
    });
  }

  for (const bad of vectors.malformed as Json[]) {
    it(`refuses: ${bad.name}`, () => {
      const bytes = hex(bad.bytes);
      const decode = bad.object === "ciphertext" ? () => Ciphertext.fromBytes(bytes) : () => UserKey.fromBytes(bytes);
      expect(fameError(decode).code).toBe("Malformed");
    });
  }

  it("a tampered content or encapsulated key gives an error, not content", () => {
    const record = vectors.records[1];
    const key = keys.get("patient")!;
    const aad = hex(record.aad);
    const body = hex(record.ciphertext);
    body[3] ^= 1;
    expect(() => openUnderPolicy(key, { encapsulatedKey: hex(record.encapsulated_key), nonce: hex(record.nonce), ciphertext: body }, aad)).toThrow(
      CryptoError,
    );
    // A flipped bit in the last ciphertext row: a bad point (Malformed) or a different data key (DecryptionFailed).
    const encapsulated = hex(record.encapsulated_key);
    encapsulated[encapsulated.length - 5] ^= 1;
    expect(() => openUnderPolicy(key, { encapsulatedKey: encapsulated, nonce: hex(record.nonce), ciphertext: hex(record.ciphertext) }, aad)).toThrow();
  });
});

describe("FAME encryption in TypeScript", () => {
  it("encapsulates data keys that the vector keys recover exactly when they satisfy the policy", () => {
    const policy = Policy.parse(vectors.records[2].policy);
    const { dataKey, ciphertext } = encapsulate(params, policy);
    const reparsed = Ciphertext.fromBytes(ciphertext.bytes);
    expect(toHex(decapsulate(keys.get("cardiologist")!, reparsed))).toBe(toHex(dataKey));
    expect(fameError(() => decapsulate(keys.get("oncologist")!, reparsed)).code).toBe("PolicyNotSatisfied");
  });

  it("seals a record the patient opens, under the SDK's record policy", () => {
    const patientId = vectors.records[0].patient_id;
    const policy = Policy.parse(recordPolicy('"role:doctor" and "dept:oncology"', patientId));
    expect(policy.canonical()).toBe(`("role:doctor" and "dept:oncology") or "patient:${patientId}" or "emergency:${patientId}"`);
    const aad = recordContentAad("r-1", patientId, "Observation", 1n);
    const content = new TextEncoder().encode('{"resourceType":"Observation"}');
    const sealed = sealUnderPolicy(params, policy, aad, content);
    for (const name of ["patient", "oncologist", "emergency"]) expect(text(openUnderPolicy(keys.get(name)!, sealed, aad))).toBe(text(content));
    expect(fameError(() => openUnderPolicy(keys.get("cardiologist")!, sealed, aad)).code).toBe("PolicyNotSatisfied");
  });

  it("computes T1^s1 T2^s2 on a fixed schedule equal to the plain powers", () => {
    const [t1, t2] = params.t;
    for (const [e1, e2] of [
      [1n, 2n],
      [0n, 5n],
      [(1n << 254n) + 12345n, 0x73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000000n],
    ] as const) {
      const expected = Fp12.mul(Fp12.pow(t1, e1), Fp12.pow(t2, e2));
      expect(Fp12.eql(doubleExp(t1, t2, e1, e2), expected)).toBe(true);
    }
  });

  it("hashes to G1 with RFC 9380 and the caremesh tag (distinct per input)", () => {
    const a = hashAttribute("role:doctor", 2, 1);
    expect(a.equals(hashAttribute("role:doctor", 2, 1))).toBe(true);
    expect(a.equals(hashAttribute("role:doctor", 1, 2))).toBe(false);
    expect(a.isTorsionFree()).toBe(true);
  });
});

describe("policies", () => {
  for (const p of vectors.policies as Json[]) {
    it(`as crates/abe parses ${JSON.stringify(p.text)}`, () => {
      if (p.canonical === null) {
        expect(() => Policy.parse(p.text)).toThrow();
      } else {
        const policy = Policy.parse(p.text);
        expect(policy.canonical()).toBe(p.canonical);
        expect(policy.leaves()).toEqual(p.leaves);
      }
    });
  }

  it("parse to the canonical form, flattening and dropping redundant parentheses", () => {
    expect(Policy.parse('"a:x" AND ("b:y" and "c:z")').canonical()).toBe('"a:x" and "b:y" and "c:z"');
    expect(Policy.parse('(("a:x"))').canonical()).toBe('"a:x"');
    expect(Policy.parse(' ("a:x" or "b:y") and "c:z" ').canonical()).toBe('("a:x" or "b:y") and "c:z"');
  });

  it("refuse mixed operators, unquoted or unnamespaced attributes, and bad nesting", () => {
    for (const bad of ['"a:x" and "b:y" or "c:z"', "a:x", '"ax"', '("a:x"', '"a:x")', '"a:x" and', "", '"A:x"']) {
      expect(() => Policy.parse(bad), bad).toThrow();
    }
  });

  it("give the Lewko-Waters matrix of crates/abe (n-ary AND as right-nested binary AND)", () => {
    const sp = Policy.parse('"a:1" and "a:2" and ("a:3" or "a:4")').spanProgram();
    expect(sp.columns).toBe(3);
    expect(sp.rows.map((r) => r.entries)).toEqual([[[0, 1], [1, 1]], [[1, -1], [2, 1]], [[2, -1]], [[2, -1]]]);
  });
});

describe("sealed user keys and record signatures", () => {
  const identity = IdentityKeyPair.fromSecrets("0193c6b1-1a2b-7c3d-8e4f-000000000001", new Uint8Array(32).fill(7), new Uint8Array(32).fill(9));
  const keyBytes = hex(vectors.keys[0].user_key);

  it("opens a user key sealed to the identity only with the same ids", () => {
    const sealed = sealUserKey("u1", "k1", identity.public(), keyBytes);
    expect([...openSealedUserKey(identity, "u1", "k1", sealed).attributes]).toEqual(vectors.keys[0].attributes);
    expect(() => openSealedUserKey(identity, "u2", "k1", sealed)).toThrow(CryptoError);
    expect(() => openSealedUserKey(identity, "u1", "k2", sealed)).toThrow(CryptoError);
    expect(() => openSealedUserKey(identity, "u1", "k1", { ...sealed, ephemeralPublicKey: new Uint8Array(32) })).toThrow(CryptoError);
  });

  it("signs and verifies a record version over every field and chains its hash", () => {
    const record = vectors.records[0];
    const version: RecordVersion = {
      recordId: record.record_id,
      patientId: record.patient_id,
      kind: record.kind,
      version: 1n,
      policy: record.policy,
      envelope: { version: 1, paramsVersion: "p1", encapsulatedKey: hex(record.encapsulated_key), nonce: hex(record.nonce), ciphertext: hex(record.ciphertext) },
      authorUserId: "doctor-1",
      authorIdentityKeyId: identity.keyId,
      previousVersionHash: new Uint8Array(0),
    };
    const signature = signRecordVersion(version, identity);
    verifyRecordVersion(version, identity.public(), signature);
    for (const changed of [{ ...version, kind: "Condition" }, { ...version, version: 2n }, { ...version, previousVersionHash: new Uint8Array(32) }]) {
      expect(() => verifyRecordVersion(changed, identity.public(), signature)).toThrow(CryptoError);
      expect(toHex(recordVersionHash(changed))).not.toBe(toHex(recordVersionHash(version)));
    }
  });

  it("seals a group message readers with the attributes open, signed over the message id, sender, policy and envelope", () => {
    const policy = Policy.parse('"role:doctor" and "dept:cardiology"');
    const aad = groupContentAad("m-1", "doctor-1", policy.canonical());
    const sealed = sealUnderPolicy(params, policy, aad, new TextEncoder().encode("ward round at 9"));
    expect(text(openUnderPolicy(keys.get("cardiologist")!, sealed, aad))).toBe("ward round at 9");
    expect(fameError(() => openUnderPolicy(keys.get("oncologist")!, sealed, aad)).code).toBe("PolicyNotSatisfied");
    // Bound to the message id, sender and policy.
    expect(() => openUnderPolicy(keys.get("cardiologist")!, sealed, groupContentAad("m-2", "doctor-1", policy.canonical()))).toThrow(CryptoError);
    const message: GroupMessage = {
      messageId: "m-1",
      senderUserId: "doctor-1",
      policy: policy.canonical(),
      envelope: { version: 1, paramsVersion: "p1", senderIdentityKeyId: identity.keyId, ...sealed },
    };
    const signature = signGroupMessage(message, identity);
    verifyGroupMessage(message, identity.public(), signature);
    for (const changed of [
      { ...message, messageId: "m-2" },
      { ...message, senderUserId: "doctor-2" },
      { ...message, policy: '"role:doctor"' },
      { ...message, envelope: { ...message.envelope, paramsVersion: "p2" } },
    ]) {
      expect(() => verifyGroupMessage(changed, identity.public(), signature)).toThrow(CryptoError);
    }
  });
});
