/**
 * The primitives (§2), the only place this folder reaches the libraries: X25519 with the
 * contributory check, strict Ed25519, HKDF-SHA256, HMAC-SHA256, SHA-256, AES-256-GCM and
 * ML-KEM-768 (FIPS 203, keys stored as the 64-byte seed `d || z`). The Wycheproof tests run
 * these exact functions.
 */
import { gcm } from "@noble/ciphers/aes.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as nobleSha256, sha512 } from "@noble/hashes/sha2.js";
import { randomBytes as nobleRandomBytes } from "@noble/hashes/utils.js";
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";

import { concat, ctEqual, wipe } from "./bytes.js";
import { CryptoError } from "./errors.js";

export const AES_KEY_LEN = 32;
export const NONCE_LEN = 12;
export const TAG_LEN = 16;
export const KEM_PUBLIC_KEY_LEN = 1184;
export const KEM_CIPHERTEXT_LEN = 1088;
export const KEM_SEED_LEN = 64;
export const ZERO32: Uint8Array = new Uint8Array(32);

/** `n` bytes from the platform's CSPRNG (`crypto.getRandomValues`). */
export function randomBytes(n: number): Uint8Array {
  return nobleRandomBytes(n);
}

function check32(bytes: Uint8Array, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 32) {
    throw new CryptoError("InvalidKey", `${what} must be 32 bytes`);
  }
}

/** The X25519 public key of a 32-byte secret (stored unclamped, clamped at use: RFC 7748). */
export function x25519Public(secret: Uint8Array): Uint8Array {
  check32(secret, "X25519 secret");
  return x25519.getPublicKey(secret);
}

/**
 * `X25519(secret, theirPublic)`, refusing a non-contributory result (`NonContributory`): the
 * all-zero output that every low-order public key gives. noble refuses the low-order inputs
 * before the ladder; the output is checked for all-zero as well. `what` names the public key.
 */
export function x25519Agree(secret: Uint8Array, theirPublic: Uint8Array, what: string): Uint8Array {
  check32(secret, "X25519 secret");
  check32(theirPublic, `X25519 ${what}`);
  let shared: Uint8Array;
  try {
    shared = x25519.getSharedSecret(secret, theirPublic);
  } catch {
    throw new CryptoError("NonContributory", `refused a non-contributory X25519 key agreement (${what} is a low-order point)`);
  }
  if (ctEqual(shared, ZERO32)) {
    wipe(shared);
    throw new CryptoError("NonContributory", `refused a non-contributory X25519 key agreement (${what} is a low-order point)`);
  }
  return shared;
}

/** The Ed25519 public key of a 32-byte seed (RFC 8032). */
export function ed25519Public(seed: Uint8Array): Uint8Array {
  check32(seed, "Ed25519 seed");
  return ed25519.getPublicKey(seed);
}

/** Deterministic Ed25519 signature (RFC 8032) of `message` with a 32-byte seed. */
export function ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  check32(seed, "Ed25519 seed");
  return ed25519.sign(message, seed);
}

const Point = ed25519.Point;
const L = Point.CURVE().n;

/**
 * Strict Ed25519 verification, as ed25519-dalek's `verify_strict` (§2): 32-byte canonical public
 * key not of small order, 64-byte signature with `R` canonical and not of small order and
 * `S < L`, and the cofactorless equation `[S]B = R + [k]A` (compared as canonical encodings).
 * A public key that does not decode is `InvalidKey`; every other failure is `BadSignature`.
 */
export function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array, what: string): void {
  if (publicKey.length !== 32) throw new CryptoError("InvalidKey", "the Ed25519 public key must be 32 bytes");
  let A;
  try {
    A = Point.fromBytes(publicKey, false);
  } catch {
    throw new CryptoError("InvalidKey", "the Ed25519 public key is not a valid point encoding");
  }
  const bad = new CryptoError("BadSignature", `the ${what} signature is invalid`);
  if (signature.length !== 64) throw bad;
  const rBytes = signature.subarray(0, 32);
  const s = bytesToNumberLE(signature.subarray(32, 64));
  if (s >= L || A.isSmallOrder()) throw bad;
  let R;
  try {
    R = Point.fromBytes(rBytes, false);
  } catch {
    throw bad;
  }
  if (R.isSmallOrder()) throw bad;
  const k = bytesToNumberLE(sha512(concat(rBytes, publicKey, message))) % L;
  const expected = Point.BASE.multiplyUnsafe(s).subtract(A.multiplyUnsafe(k));
  if (!ctEqual(expected.toBytes(), rBytes)) throw bad;
}

/** HKDF-SHA256 (RFC 5869); fails only when `length` exceeds 255 × 32. */
export function hkdfSha256(salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 0 || length > 255 * 32) {
    throw new CryptoError("Encoding", "HKDF-SHA256 output longer than 8160 bytes");
  }
  return hkdf(nobleSha256, ikm, salt, info, length);
}

export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(nobleSha256, key, data);
}

export function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data);
}

/** SHA-256 fed in pieces (a blob larger than what should be held at once). */
export interface Sha256Stream {
  update(data: Uint8Array): void;
  digest(): Uint8Array;
}

export function sha256Stream(): Sha256Stream {
  const hash = nobleSha256.create();
  return {
    update: (data) => void hash.update(data),
    digest: () => hash.digest(),
  };
}

/**
 * AES-256-GCM through WebCrypto, for bulk data (attachments: a file of many 64 KiB chunks,
 * where the platform's AES, async and hardware-backed, is much faster than noble's). The key is
 * imported non-extractable.
 */
export async function webAesGcmKey(key: Uint8Array): Promise<CryptoKey> {
  if (key.length !== AES_KEY_LEN) throw new CryptoError("InvalidKey", "the AES-256-GCM key must be 32 bytes");
  return crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/** `ciphertext || 16-byte tag` of `plaintext` under a key from {@link webAesGcmKey}. */
export async function webAesGcmSeal(key: CryptoKey, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const params = { name: "AES-GCM", iv: nonce as Uint8Array<ArrayBuffer>, additionalData: aad as Uint8Array<ArrayBuffer>, tagLength: 128 };
  return new Uint8Array(await crypto.subtle.encrypt(params, key, plaintext as Uint8Array<ArrayBuffer>));
}

/** Opens `ciphertext || tag`; any failure is `DecryptionFailed`. */
export async function webAesGcmOpen(key: CryptoKey, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
  if (sealed.length < TAG_LEN) throw decryptionFailed();
  const params = { name: "AES-GCM", iv: nonce as Uint8Array<ArrayBuffer>, additionalData: aad as Uint8Array<ArrayBuffer>, tagLength: 128 };
  try {
    return new Uint8Array(await crypto.subtle.decrypt(params, key, sealed as Uint8Array<ArrayBuffer>));
  } catch {
    throw decryptionFailed();
  }
}

function checkAead(key: Uint8Array, nonce: Uint8Array): void {
  if (key.length !== AES_KEY_LEN) throw new CryptoError("InvalidKey", "the AES-256-GCM key must be 32 bytes");
  if (nonce.length !== NONCE_LEN) throw new CryptoError("InvalidKey", "the AES-256-GCM nonce must be 12 bytes");
}

/** AES-256-GCM with a 12-byte nonce; returns `ciphertext || 16-byte tag`. */
export function aesGcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  checkAead(key, nonce);
  return gcm(key, nonce, aad).encrypt(plaintext);
}

/** AES-256-GCM decryption of `ciphertext || tag`; any failure is `DecryptionFailed`. */
export function aesGcmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array {
  checkAead(key, nonce);
  if (sealed.length < TAG_LEN) throw decryptionFailed();
  try {
    return gcm(key, nonce, aad).decrypt(sealed);
  } catch {
    throw decryptionFailed();
  }
}

export function decryptionFailed(): CryptoError {
  return new CryptoError("DecryptionFailed", "the ciphertext does not authenticate (tampered, or bound to other ids or keys)");
}

/** An ML-KEM-768 key pair from its seed `d || z` (`KeyGen_internal(d, z)`). */
export function kemKeyPair(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array } {
  if (seed.length !== KEM_SEED_LEN) throw new CryptoError("InvalidKey", "an ML-KEM-768 seed must be 64 bytes");
  return ml_kem768.keygen(seed);
}

/** The encapsulation key of a seed. */
export function kemPublic(seed: Uint8Array): Uint8Array {
  const { publicKey, secretKey } = kemKeyPair(seed);
  wipe(secretKey);
  return publicKey;
}

/** Checks an encapsulation key: 1184 bytes and FIPS 203's modulus check. */
export function kemCheckPublicKey(publicKey: Uint8Array): void {
  if (publicKey.length !== KEM_PUBLIC_KEY_LEN) {
    throw new CryptoError("InvalidKey", "an ML-KEM-768 public key must be 1184 bytes");
  }
  // ByteEncode12(ByteDecode12(ek)) == ek: every 12-bit coefficient below q = 3329.
  for (let i = 0; i < 384 * 3; i += 3) {
    const b0 = publicKey[i]!, b1 = publicKey[i + 1]!, b2 = publicKey[i + 2]!;
    const c0 = b0 | ((b1 & 0x0f) << 8);
    const c1 = (b1 >> 4) | (b2 << 4);
    if (c0 >= 3329 || c1 >= 3329) {
      throw new CryptoError("InvalidKey", "the ML-KEM-768 public key fails the FIPS 203 modulus check");
    }
  }
}

/** `ML-KEM-768.Encaps_internal(publicKey, m)`. */
export function kemEncapsulate(publicKey: Uint8Array, m: Uint8Array): { ciphertext: Uint8Array; sharedSecret: Uint8Array } {
  kemCheckPublicKey(publicKey);
  if (m.length !== 32) throw new CryptoError("InvalidKey", "ML-KEM randomness m must be 32 bytes");
  const { cipherText, sharedSecret } = ml_kem768.encapsulate(publicKey, m);
  return { ciphertext: cipherText, sharedSecret: Uint8Array.from(sharedSecret) };
}

/** `ML-KEM-768.Decaps` with the key of `seed`; implicit rejection, never fails on 1088 bytes. */
export function kemDecapsulate(seed: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  if (ciphertext.length !== KEM_CIPHERTEXT_LEN) {
    throw new CryptoError("MalformedEnvelope", "the ML-KEM ciphertext must be 1088 bytes");
  }
  const { publicKey, secretKey } = kemKeyPair(seed);
  try {
    return Uint8Array.from(ml_kem768.decapsulate(ciphertext, secretKey));
  } finally {
    wipe(secretKey, publicKey);
  }
}
