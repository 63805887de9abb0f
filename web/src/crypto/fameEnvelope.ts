// Policy-addressed content as crates/crypto/src/policy_envelope.rs defines it: record content
// sealed under a CP-ABE policy (FAME data key + AES-256-GCM with the record-content associated
// data), the author's signed record version and its hash chain, and the opening of an ABE user
// key that abe-authority-svc sealed to the account's X25519 identity key.
import { Encoder, u32be, u64be, wipe } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { Ciphertext, decapsulate, encapsulate, FameError, Policy, PublicParams, UserKey } from "./fame.js";
import type { IdentityKeyPair, IdentityPublicKey } from "./identity.js";
import {
  aesGcmOpen,
  aesGcmSeal,
  ed25519Verify,
  hkdfSha256,
  NONCE_LEN,
  randomBytes,
  sha256,
  x25519Agree,
  x25519Public,
} from "./primitives.js";

export const POLICY_ENVELOPE_VERSION = 1;
export const SEALED_USER_KEY_VERSION = 1;
const RECORD_VERSION_LABEL = "caremesh-record-version-v1";
const RECORD_CONTENT_LABEL = "caremesh-abe-content-v1/record";
const GROUP_MESSAGE_LABEL = "caremesh-group-message-v1";
const GROUP_CONTENT_LABEL = "caremesh-abe-content-v1/group-message";
const USER_KEY_INFO = "caremesh-abe-user-key-v1";
const USER_KEY_AAD_LABEL = "caremesh-abe-user-key-v1/aad";

/** `lp(label) lp(record_id) lp(patient_id) lp(kind) lp(i64be(version))`. */
export function recordContentAad(recordId: string, patientId: string, kind: string, version: bigint): Uint8Array {
  return new Encoder(RECORD_CONTENT_LABEL).field(recordId).field(patientId).field(kind).field(u64be(version)).finish();
}

export interface PolicySealed {
  readonly encapsulatedKey: Uint8Array;
  readonly nonce: Uint8Array;
  readonly ciphertext: Uint8Array;
}

/** Encapsulates a fresh data key under `policy` and seals `plaintext` under it with `aad`. */
export function sealUnderPolicy(
  params: PublicParams,
  policy: Policy,
  aad: Uint8Array,
  plaintext: Uint8Array,
  random: (n: number) => Uint8Array = randomBytes,
): PolicySealed {
  const { dataKey, ciphertext } = encapsulate(params, policy, random);
  try {
    const nonce = random(NONCE_LEN);
    return { encapsulatedKey: ciphertext.bytes, nonce, ciphertext: aesGcmSeal(dataKey, nonce, aad, plaintext) };
  } finally {
    wipe(dataKey);
  }
}

/**
 * Opens content sealed under a policy with a key whose attributes satisfy it. Throws
 * `FameError` (`PolicyNotSatisfied`, `Malformed`) or `CryptoError` (`DecryptionFailed`).
 */
export function openUnderPolicy(key: UserKey, sealed: PolicySealed, aad: Uint8Array): Uint8Array {
  const encapsulated = Ciphertext.fromBytes(sealed.encapsulatedKey);
  if (sealed.nonce.length !== NONCE_LEN) throw new CryptoError("MalformedEnvelope", "the nonce must be 12 bytes");
  const dataKey = decapsulate(key, encapsulated);
  try {
    return aesGcmOpen(dataKey, sealed.nonce, aad, sealed.ciphertext);
  } finally {
    wipe(dataKey);
  }
}

/** The policy an encapsulated key was made for (parsed and checked like any ABE ciphertext). */
export function encapsulatedPolicy(encapsulatedKey: Uint8Array): Policy {
  return Ciphertext.fromBytes(encapsulatedKey).policy;
}

/**
 * The policy a record is sealed under (the SDK's `record_policy`): `policy` widened so the patient
 * and emergency access can each open it.
 */
export function recordPolicy(policy: string, patientId: string): string {
  const clauses = `"patient:${patientId}" or "emergency:${patientId}"`;
  const combined = policy.trim() === "" ? clauses : `(${Policy.parse(policy).canonical()}) or ${clauses}`;
  return Policy.parse(combined).canonical();
}

/** One version of a record as its author signs it. */
export interface RecordVersion {
  readonly recordId: string;
  readonly patientId: string;
  readonly kind: string;
  readonly version: bigint;
  readonly policy: string;
  readonly envelope: { readonly version: number; readonly paramsVersion: string } & PolicySealed;
  readonly authorUserId: string;
  readonly authorIdentityKeyId: string;
  /** Empty for version 1. */
  readonly previousVersionHash: Uint8Array;
}

/** `u32be(version) lp(params_version) lp(encapsulated_key) lp(nonce) lp(ciphertext)`: an envelope in signed bytes. */
function envelopeFields(encoder: Encoder, envelope: { readonly version: number; readonly paramsVersion: string } & PolicySealed): Encoder {
  return encoder
    .raw(u32be(envelope.version))
    .field(envelope.paramsVersion)
    .field(envelope.encapsulatedKey)
    .field(envelope.nonce)
    .field(envelope.ciphertext);
}

/** The exact bytes the author signs (policy_envelope.rs `RecordVersion::signed_bytes`). */
export function recordSignedBytes(v: RecordVersion): Uint8Array {
  const head = new Encoder(RECORD_VERSION_LABEL).field(v.recordId).field(v.patientId).field(v.kind).raw(u64be(v.version)).field(v.policy);
  return envelopeFields(head, v.envelope)
    .field(v.authorUserId)
    .field(v.authorIdentityKeyId)
    .field(v.previousVersionHash)
    .finish();
}

/** SHA-256 of the signed bytes: the next version's `previousVersionHash`. */
export function recordVersionHash(v: RecordVersion): Uint8Array {
  return sha256(recordSignedBytes(v));
}

export function signRecordVersion(v: RecordVersion, author: IdentityKeyPair): Uint8Array {
  if (author.keyId !== v.authorIdentityKeyId) {
    throw new CryptoError("KeyMismatch", "the record names another identity key than the one signing");
  }
  return author.signRaw(recordSignedBytes(v));
}

/** Checks the author's signature with their identity signing key (strict Ed25519). */
export function verifyRecordVersion(v: RecordVersion, author: IdentityPublicKey, signature: Uint8Array): void {
  if (author.keyId !== v.authorIdentityKeyId) {
    throw new CryptoError("KeyMismatch", "the record was signed with another identity key than the author's registered one");
  }
  ed25519Verify(author.signingPublicKey, recordSignedBytes(v), signature, "record author");
}

/** `lp(label) lp(message_id) lp(sender_user_id) lp(policy)`: a group message's content AAD. */
export function groupContentAad(messageId: string, senderUserId: string, policy: string): Uint8Array {
  return new Encoder(GROUP_CONTENT_LABEL).field(messageId).field(senderUserId).field(policy).finish();
}

/** A group message as its sender signs it (policy_envelope.rs `GroupMessage`). */
export interface GroupMessage {
  readonly messageId: string;
  readonly senderUserId: string;
  /** The canonical policy. */
  readonly policy: string;
  readonly envelope: { readonly version: number; readonly paramsVersion: string; readonly senderIdentityKeyId: string } & PolicySealed;
}

/** The exact bytes the sender signs (`envelope.signature` is not part of them). */
export function groupSignedBytes(m: GroupMessage): Uint8Array {
  const head = new Encoder(GROUP_MESSAGE_LABEL).field(m.messageId).field(m.senderUserId).field(m.policy);
  return envelopeFields(head, m.envelope).field(m.envelope.senderIdentityKeyId).finish();
}

export function signGroupMessage(m: GroupMessage, sender: IdentityKeyPair): Uint8Array {
  if (sender.keyId !== m.envelope.senderIdentityKeyId) {
    throw new CryptoError("KeyMismatch", "the envelope names another identity key than the one signing");
  }
  return sender.signRaw(groupSignedBytes(m));
}

/** Checks the sender's signature with their identity signing key (strict Ed25519). */
export function verifyGroupMessage(m: GroupMessage, sender: IdentityPublicKey, signature: Uint8Array): void {
  if (sender.keyId !== m.envelope.senderIdentityKeyId) {
    throw new CryptoError("KeyMismatch", "the message was signed with another identity key than the sender's registered one");
  }
  ed25519Verify(sender.signingPublicKey, groupSignedBytes(m), signature, "group message sender");
}

/** `SealedUserKey` of abe.proto. */
export interface SealedUserKey {
  readonly version: number;
  readonly recipientIdentityKeyId: string;
  readonly ephemeralPublicKey: Uint8Array;
  readonly nonce: Uint8Array;
  readonly ciphertext: Uint8Array;
}

function userKeyAad(userId: string, keyId: string, recipient: IdentityPublicKey, ephemeralPublic: Uint8Array): Uint8Array {
  return new Encoder(USER_KEY_AAD_LABEL)
    .field(userId)
    .field(keyId)
    .field(recipient.keyId)
    .field(recipient.dhPublicKey)
    .field(ephemeralPublic)
    .finish();
}

/**
 * Opens a user key sealed to this account's identity (policy_envelope.rs `open_user_key`):
 * X25519 (contributory), HKDF-SHA256 (salt 32 zero bytes), AES-256-GCM; then parses the key
 * (every point checked). The serialized key is wiped.
 */
export function openSealedUserKey(identity: IdentityKeyPair, userId: string, keyId: string, sealed: SealedUserKey): UserKey {
  if (sealed.version !== SEALED_USER_KEY_VERSION) {
    throw new CryptoError("MalformedEnvelope", `sealed user key version ${sealed.version} is not supported`);
  }
  if (sealed.recipientIdentityKeyId !== identity.keyId) {
    throw new CryptoError("UnknownKey", `the key is sealed to identity key ${sealed.recipientIdentityKeyId}, not this account's`);
  }
  if (sealed.ephemeralPublicKey.length !== 32) throw new CryptoError("MalformedEnvelope", "the ephemeral public key must be 32 bytes");
  if (sealed.nonce.length !== NONCE_LEN) throw new CryptoError("MalformedEnvelope", "the nonce must be 12 bytes");
  const shared = x25519Agree(identity.dhSecret(), sealed.ephemeralPublicKey, "the ephemeral key");
  const wrapping = hkdfSha256(new Uint8Array(32), shared, new TextEncoder().encode(USER_KEY_INFO), 32);
  wipe(shared);
  const aad = userKeyAad(userId, keyId, identity.public(), sealed.ephemeralPublicKey);
  let bytes: Uint8Array | null = null;
  try {
    bytes = aesGcmOpen(wrapping, sealed.nonce, aad, sealed.ciphertext);
    return UserKey.fromBytes(bytes);
  } finally {
    wipe(wrapping, bytes);
  }
}

/** Seals a serialized user key to `recipient` (what abe-authority-svc does; for tests and tools). */
export function sealUserKey(
  userId: string,
  keyId: string,
  recipient: IdentityPublicKey,
  userKey: Uint8Array,
  random: (n: number) => Uint8Array = randomBytes,
): SealedUserKey {
  const ephemeralSecret = random(32);
  const ephemeralPublic = x25519Public(ephemeralSecret);
  const shared = x25519Agree(ephemeralSecret, recipient.dhPublicKey, "the recipient identity key");
  const wrapping = hkdfSha256(new Uint8Array(32), shared, new TextEncoder().encode(USER_KEY_INFO), 32);
  const nonce = random(NONCE_LEN);
  const ciphertext = aesGcmSeal(wrapping, nonce, userKeyAad(userId, keyId, recipient, ephemeralPublic), userKey);
  wipe(ephemeralSecret, shared, wrapping);
  return { version: SEALED_USER_KEY_VERSION, recipientIdentityKeyId: recipient.keyId, ephemeralPublicKey: ephemeralPublic, nonce, ciphertext };
}

export { FameError };
