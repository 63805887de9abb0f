/**
 * Safety numbers (§9, as `caremesh_crypto::safety`): 60 digits over both users' account
 * identities, the same on both sides, shown as 12 groups of 5; and trust on first use of a
 * contact's identity.
 */
import { sha512 } from "@noble/hashes/sha2.js";

import { concat, equalBytes, utf8 } from "./bytes.js";
import type { IdentityPublicKey } from "./identity.js";

export const SAFETY_NUMBER_LABEL = "caremesh-safety-number-v1";
export const SAFETY_NUMBER_ITERATIONS = 5200;

/** `lp` of the safety number: an 8-byte big-endian length. */
function lp8(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + bytes.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(bytes.length));
  out.set(bytes, 8);
  return out;
}

function partyDigits(userId: string, identity: IdentityPublicKey): string {
  let hash = sha512(concat(lp8(utf8(SAFETY_NUMBER_LABEL)), lp8(utf8(userId)), lp8(identity.signingPublicKey), lp8(identity.dhPublicKey)));
  const tail = concat(identity.signingPublicKey, identity.dhPublicKey);
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) hash = sha512(concat(hash, tail));
  let digits = "";
  for (let group = 0; group < 6; group++) {
    let value = 0n;
    for (const byte of hash.subarray(group * 5, group * 5 + 5)) value = (value << 8n) | BigInt(byte);
    digits += (value % 100000n).toString().padStart(5, "0");
  }
  return digits;
}

/** The safety number between two users' identities: 12 groups of 5 digits. */
export function safetyNumber(myUserId: string, mine: IdentityPublicKey, theirUserId: string, theirs: IdentityPublicKey): string {
  const a = partyDigits(myUserId, mine);
  const b = partyDigits(theirUserId, theirs);
  const digits = a <= b ? a + b : b + a;
  return digits.match(/.{5}/g)!.join(" ");
}

export type TrustCheck = { kind: "firstUse" } | { kind: "trusted" } | { kind: "changed"; old: IdentityPublicKey };

export interface TrustStoreJson {
  contacts: Record<string, { key_id: string; signing_public_key: string; dh_public_key: string }>;
}

const toHexString = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const fromHexString = (h: string): Uint8Array => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));

/** Contacts' pinned identities (trust on first use). */
export class TrustStore {
  private readonly contacts = new Map<string, IdentityPublicKey>();

  /** Pins on first use; never replaces a pinned identity (that takes `acceptNew`). */
  check(userId: string, identity: IdentityPublicKey): TrustCheck {
    const pinned = this.contacts.get(userId);
    if (!pinned) {
      this.contacts.set(userId, identity);
      return { kind: "firstUse" };
    }
    const same =
      pinned.keyId === identity.keyId &&
      equalBytes(pinned.signingPublicKey, identity.signingPublicKey) &&
      equalBytes(pinned.dhPublicKey, identity.dhPublicKey);
    return same ? { kind: "trusted" } : { kind: "changed", old: pinned };
  }

  acceptNew(userId: string, identity: IdentityPublicKey): void {
    this.contacts.set(userId, identity);
  }

  toJSON(): TrustStoreJson {
    const contacts: TrustStoreJson["contacts"] = {};
    for (const [user, key] of this.contacts) {
      contacts[user] = { key_id: key.keyId, signing_public_key: toHexString(key.signingPublicKey), dh_public_key: toHexString(key.dhPublicKey) };
    }
    return { contacts };
  }

  static fromJSON(json: TrustStoreJson): TrustStore {
    const store = new TrustStore();
    for (const [user, key] of Object.entries(json.contacts)) {
      store.contacts.set(user, { keyId: key.key_id, signingPublicKey: fromHexString(key.signing_public_key), dhPublicKey: fromHexString(key.dh_public_key) });
    }
    return store;
  }
}
