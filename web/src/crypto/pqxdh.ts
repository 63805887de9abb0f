/**
 * Session establishment with PQXDH (§5): bundle verification (§5.1, no X25519-only fallback),
 * the initiator (§5.2) and the responder (§5.3). Gives the ratchet's first root key `SK`, the
 * session's associated data `AD`, and the preamble the initiator attaches to its messages.
 */
import { checkUserId, checkUuidV7, concat, Encoder, fromHex, toHex, wipe } from "./bytes.js";
import {
  type DeviceSecrets,
  type KemKind,
  type PublishedKey,
  kemCode,
  kemKindFromCode,
  SIGNED_PREKEY,
  verifyDeviceKey,
} from "./device.js";
import type { DeviceList } from "./deviceList.js";
import { CryptoError } from "./errors.js";
import { encodeIdentityInto, type IdentityKeyPair, type IdentityPublicKey } from "./identity.js";
import {
  hkdfSha256,
  KEM_CIPHERTEXT_LEN,
  KEM_PUBLIC_KEY_LEN,
  kemDecapsulate,
  kemEncapsulate,
  randomBytes,
  x25519Agree,
  x25519Public,
  ZERO32,
} from "./primitives.js";

export const PQXDH_INFO = "caremesh-pqxdh-v1_CURVE25519_SHA-256_ML-KEM-768";
export const PQXDH_AD_LABEL = "caremesh-pqxdh-v1/ad";

/** The ML-KEM prekey of a bundle as the directory served it. */
export interface KemPrekeyPublic extends PublishedKey {
  kind: KemKind;
}

/** A device's bundle as served (§5.1), not yet verified. */
export interface DeviceBundle {
  userId: string;
  deviceId: string;
  signedPrekey: PublishedKey;
  /** Absent is refused (`MissingKemPrekey`): no downgrade to X25519 only. */
  kemPrekey?: KemPrekeyPublic | null;
  oneTimePrekey?: PublishedKey | null;
}

/** A bundle that passed `verifyDeviceBundle`. */
export interface VerifiedDeviceBundle {
  readonly userId: string;
  readonly deviceId: string;
  readonly identity: IdentityPublicKey;
  readonly signedPrekeyId: string;
  readonly signedPrekey: Uint8Array;
  readonly kemPrekeyId: string;
  readonly kemKind: KemKind;
  readonly kemPublicKey: Uint8Array;
  readonly oneTimePrekey: { keyId: string; publicKey: Uint8Array } | null;
}

/**
 * Verifies a bundle (§5.1) against the owner's verified identity and verified device list: the
 * device is listed (`UnknownDevice`), the signed prekey's signature verifies, an ML-KEM prekey is
 * present (`MissingKemPrekey`) with a valid signature for its kind (`BadSignature`) and passes the
 * FIPS 203 modulus check (`InvalidKey`).
 */
export function verifyDeviceBundle(bundle: DeviceBundle, identity: IdentityPublicKey, list: DeviceList): VerifiedDeviceBundle {
  if (list.userId !== bundle.userId || list.identityKeyId !== identity.keyId) {
    throw new CryptoError("KeyMismatch", "the bundle, identity and device list are of different users");
  }
  if (!list.contains(bundle.deviceId)) {
    throw new CryptoError("UnknownDevice", `device ${bundle.deviceId} is not in the user's verified device list`);
  }
  const spk = bundle.signedPrekey;
  verifyDeviceKey(identity, SIGNED_PREKEY, bundle.userId, bundle.deviceId, spk.keyId, spk.publicKey, spk.signature);
  const kem = bundle.kemPrekey;
  if (!kem) {
    throw new CryptoError("MissingKemPrekey", "the key bundle has no signed ML-KEM prekey; refusing a handshake without post-quantum protection");
  }
  if (kem.kind !== "ml-kem-768-last-resort-prekey" && kem.kind !== "ml-kem-768-one-time-prekey") {
    throw new CryptoError("MissingKemPrekey", "the bundle's ML-KEM prekey has no ML-KEM kind");
  }
  verifyDeviceKey(identity, kem.kind, bundle.userId, bundle.deviceId, kem.keyId, kem.publicKey, kem.signature);
  if (kem.publicKey.length !== KEM_PUBLIC_KEY_LEN) throw new CryptoError("MissingKemPrekey", "the ML-KEM prekey is not 1184 bytes");
  let oneTimePrekey: VerifiedDeviceBundle["oneTimePrekey"] = null;
  if (bundle.oneTimePrekey) {
    checkUuidV7(bundle.oneTimePrekey.keyId, "one-time prekey id");
    if (bundle.oneTimePrekey.publicKey.length !== 32) throw new CryptoError("InvalidKey", "a one-time prekey must be 32 bytes");
    oneTimePrekey = { keyId: bundle.oneTimePrekey.keyId, publicKey: Uint8Array.from(bundle.oneTimePrekey.publicKey) };
  }
  return {
    userId: bundle.userId,
    deviceId: bundle.deviceId,
    identity,
    signedPrekeyId: spk.keyId,
    signedPrekey: Uint8Array.from(spk.publicKey),
    kemPrekeyId: kem.keyId,
    kemKind: kem.kind,
    kemPublicKey: Uint8Array.from(kem.publicKey),
    oneTimePrekey,
  };
}

/** What the initiator attaches to its messages until it decrypted one from the responder (§6.3). */
export interface Preamble {
  senderIdentityKeyId: string;
  /** `EK_A` public, 32 bytes. */
  ephemeralPublic: Uint8Array;
  signedPrekeyId: string;
  /** Empty when the bundle had no one-time prekey. */
  oneTimePrekeyId: string;
  kemPrekeyId: string;
  /** 1 last-resort, 2 one-time. */
  kemKind: number;
  /** `CT`, 1088 bytes. */
  kemCiphertext: Uint8Array;
}

export interface PreambleJson {
  sender_identity_key_id: string;
  ephemeral_public: string;
  signed_prekey_id: string;
  one_time_prekey_id: string;
  kem_prekey_id: string;
  kem_kind: number;
  kem_ciphertext: string;
}

/** Checks every preamble field's form before any key is looked up. */
export function checkPreamble(preamble: Preamble): KemKind {
  checkUuidV7(preamble.senderIdentityKeyId, "sender identity key id");
  checkUuidV7(preamble.signedPrekeyId, "signed prekey id");
  if (preamble.oneTimePrekeyId !== "") checkUuidV7(preamble.oneTimePrekeyId, "one-time prekey id");
  checkUuidV7(preamble.kemPrekeyId, "ML-KEM prekey id");
  const kind = kemKindFromCode(preamble.kemKind);
  if (preamble.kemCiphertext.length !== KEM_CIPHERTEXT_LEN) throw new CryptoError("MalformedEnvelope", "the ML-KEM ciphertext must be 1088 bytes");
  if (preamble.ephemeralPublic.length !== 32) throw new CryptoError("MalformedEnvelope", "the ephemeral key must be 32 bytes");
  return kind;
}

/** One side of a session. */
export interface Party {
  userId: string;
  deviceId: string;
  identity: IdentityPublicKey;
}

/** `AD = lp(label) lp(user_a) lp(device_A) Encode(IK_A) lp(user_b) lp(device_B) Encode(IK_B)`, A the initiator. */
export function sessionAd(initiator: Party, responder: Party): Uint8Array {
  const encoder = new Encoder(PQXDH_AD_LABEL);
  for (const party of [initiator, responder]) {
    checkUserId(party.userId, "user id");
    checkUuidV7(party.deviceId, "device id");
    encodeIdentityInto(encoder.field(party.userId).field(party.deviceId), party.identity);
  }
  return encoder.finish();
}

/** `SK = HKDF(ZERO32, 0xFF×32 || DH1 || DH2 || DH3 [|| DH4] || SS, PQXDH_INFO, 32)`; wipes its inputs. */
function deriveSk(dhs: Uint8Array[], kemShared: Uint8Array): Uint8Array {
  const ikm = concat(new Uint8Array(32).fill(0xff), ...dhs, kemShared);
  try {
    return hkdfSha256(ZERO32, ikm, new TextEncoder().encode(PQXDH_INFO), 32);
  } finally {
    wipe(ikm, kemShared, ...dhs);
  }
}

/** The result of PQXDH on either side. `sk` is secret: hand it to the ratchet, then wipe it. */
export interface Handshake {
  sk: Uint8Array;
  ad: Uint8Array;
  preamble: Preamble;
}

/** Fixed randomness for the known-answer tests; the protocol draws both from the CSPRNG. */
export interface InitiateRandomness {
  ephemeralSecret: Uint8Array;
  kemM: Uint8Array;
}

/** The initiator's half (§5.2) with a verified bundle. */
export function initiate(
  me: IdentityKeyPair,
  myUserId: string,
  myDeviceId: string,
  bundle: VerifiedDeviceBundle,
  randomness?: InitiateRandomness,
): Handshake {
  const ephemeral = randomness ? Uint8Array.from(randomness.ephemeralSecret) : randomBytes(32);
  const m = randomness ? Uint8Array.from(randomness.kemM) : randomBytes(32);
  try {
    const dhs = [
      x25519Agree(me.dhSecret(), bundle.signedPrekey, "the signed prekey"),
      x25519Agree(ephemeral, bundle.identity.dhPublicKey, "the identity key"),
      x25519Agree(ephemeral, bundle.signedPrekey, "the signed prekey"),
    ];
    if (bundle.oneTimePrekey) dhs.push(x25519Agree(ephemeral, bundle.oneTimePrekey.publicKey, "the one-time prekey"));
    const { ciphertext, sharedSecret } = kemEncapsulate(bundle.kemPublicKey, m);
    const sk = deriveSk(dhs, sharedSecret);
    const ad = sessionAd(
      { userId: myUserId, deviceId: myDeviceId, identity: me.public() },
      { userId: bundle.userId, deviceId: bundle.deviceId, identity: bundle.identity },
    );
    return {
      sk,
      ad,
      preamble: {
        senderIdentityKeyId: me.keyId,
        ephemeralPublic: x25519Public(ephemeral),
        signedPrekeyId: bundle.signedPrekeyId,
        oneTimePrekeyId: bundle.oneTimePrekey?.keyId ?? "",
        kemPrekeyId: bundle.kemPrekeyId,
        kemKind: kemCode(bundle.kemKind),
        kemCiphertext: ciphertext,
      },
    };
  } finally {
    wipe(ephemeral, m);
  }
}

/**
 * The responder's half (§5.3): recomputes `SK` and `AD` with this device's prekeys. Deletes
 * nothing: spend the one-time keys (`DeviceSecrets.spend`) once the first message authenticated.
 * `sender.identity` must be the initiator's verified current identity, named by the preamble.
 */
export function respond(me: IdentityKeyPair, meParty: Party, device: DeviceSecrets, sender: Party, preamble: Preamble): Handshake {
  const kemKind = checkPreamble(preamble);
  if (preamble.senderIdentityKeyId !== sender.identity.keyId) {
    throw new CryptoError("KeyMismatch", "the preamble names another identity than the sender's current one");
  }
  if (meParty.deviceId !== device.deviceId) throw new CryptoError("KeyMismatch", "the message is for another device");
  const signed = device.signedPrekeySecret(preamble.signedPrekeyId);
  const kem = device.kemSecret(kemKind, preamble.kemPrekeyId);
  const oneTime = preamble.oneTimePrekeyId === "" ? null : device.oneTimeSecret(preamble.oneTimePrekeyId);
  const ek = preamble.ephemeralPublic;
  const dhs = [
    x25519Agree(signed, sender.identity.dhPublicKey, "the sender's identity key"),
    x25519Agree(me.dhSecret(), ek, "the ephemeral key"),
    x25519Agree(signed, ek, "the ephemeral key"),
  ];
  if (oneTime) dhs.push(x25519Agree(oneTime, ek, "the ephemeral key"));
  const shared = kemDecapsulate(kem, preamble.kemCiphertext);
  return { sk: deriveSk(dhs, shared), ad: sessionAd(sender, meParty), preamble: clonePreamble(preamble) };
}

export function clonePreamble(p: Preamble): Preamble {
  return { ...p, ephemeralPublic: Uint8Array.from(p.ephemeralPublic), kemCiphertext: Uint8Array.from(p.kemCiphertext) };
}

export function preambleToJSON(p: Preamble): PreambleJson {
  return {
    sender_identity_key_id: p.senderIdentityKeyId,
    ephemeral_public: toHex(p.ephemeralPublic),
    signed_prekey_id: p.signedPrekeyId,
    one_time_prekey_id: p.oneTimePrekeyId,
    kem_prekey_id: p.kemPrekeyId,
    kem_kind: p.kemKind,
    kem_ciphertext: toHex(p.kemCiphertext),
  };
}

export function preambleFromJSON(json: PreambleJson): Preamble {
  const preamble: Preamble = {
    senderIdentityKeyId: json.sender_identity_key_id,
    ephemeralPublic: fromHex(json.ephemeral_public, 32, "preamble ephemeral key"),
    signedPrekeyId: json.signed_prekey_id,
    oneTimePrekeyId: json.one_time_prekey_id,
    kemPrekeyId: json.kem_prekey_id,
    kemKind: json.kem_kind,
    kemCiphertext: fromHex(json.kem_ciphertext, KEM_CIPHERTEXT_LEN, "preamble ML-KEM ciphertext"),
  };
  checkPreamble(preamble);
  return preamble;
}
