// Test helpers (vitest only, never imported by the app): RFC 9162 trees and proofs computed
// from the definitions (MTH, PATH, PROOF), and C2SP signed notes, for auditLog.test.ts and
// audit.test.ts.

import { concat, toHex, utf8 } from "../crypto/bytes";
import { ed25519Public, ed25519Sign, sha256 } from "../crypto/primitives";
import { keyHash, leafHash, nodeHash, toBase64 } from "./auditLog";

function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** RFC 9162 MTH. */
export function mth(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return sha256(new Uint8Array());
  if (leaves.length === 1) return leafHash(leaves[0]!);
  const k = split(leaves.length);
  return nodeHash(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

/** RFC 9162 PATH(m, D[n]): the inclusion proof of leaf m. */
export function path(m: number, leaves: Uint8Array[]): Uint8Array[] {
  if (leaves.length <= 1) return [];
  const k = split(leaves.length);
  return m < k
    ? [...path(m, leaves.slice(0, k)), mth(leaves.slice(k))]
    : [...path(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

/** RFC 9162 SUBPROOF(m, D[n], b); PROOF(m, D[n]) is SUBPROOF(m, D[n], true). */
export function subproof(m: number, leaves: Uint8Array[], complete: boolean): Uint8Array[] {
  const n = leaves.length;
  if (m === n) return complete ? [] : [mth(leaves)];
  const k = split(n);
  return m <= k
    ? [...subproof(m, leaves.slice(0, k), complete), mth(leaves.slice(k))]
    : [...subproof(m - k, leaves.slice(k), false), mth(leaves.slice(0, k))];
}

export const LOG_NAME = "caremesh.local/audit";

/** The verifier key text `<name>+<key hash>+<base64(0x01 || key)>` of an Ed25519 seed. */
export function verifierKeyText(seed: Uint8Array, name = LOG_NAME): string {
  const publicKey = ed25519Public(seed);
  return `${name}+${toHex(keyHash(name, publicKey))}+${toBase64(concat(new Uint8Array([1]), publicKey))}`;
}

/** A checkpoint of `size` leaves with `root`, signed by `seed` as `name`. */
export function signNote(size: number, root: Uint8Array, seed: Uint8Array, name = LOG_NAME): string {
  const body = `${LOG_NAME}\n${size}\n${toBase64(root)}\n`;
  const sig = ed25519Sign(seed, utf8(body));
  return `${body}\n\u2014 ${name} ${toBase64(concat(keyHash(name, ed25519Public(seed)), sig))}\n`;
}
