/**
 * The account identity (§3.1): an Ed25519 key pair `IKsig`, an X25519 key pair `IKdh` and an
 * identity key id, shared by all of a user's devices; its binding signature; `Encode(IK)`.
 */
import { checkUserId, checkUuidV7, Encoder, fromHex, toHex, wipe } from "./bytes.js";
import { CryptoError } from "./errors.js";
import { ed25519Public, ed25519Sign, ed25519Verify, randomBytes, x25519Public } from "./primitives.js";

export const KEY_SIGNATURE_LABEL = "caremesh-key-signature-v1";
export const IDENTITY_KEY_KIND = "identity-key";

/** A user's account identity as others see it (after `verifyIdentity` or from a trust store). */
export interface IdentityPublicKey {
  readonly keyId: string;
  readonly signingPublicKey: Uint8Array;
  readonly dhPublicKey: Uint8Array;
}

/** The published identity (`IdentityKey` of the key directory). */
export interface PublishedIdentity extends IdentityPublicKey {
  /** The binding signature by `IKsig` (§3.1). */
  readonly signature: Uint8Array;
}

/** `lp(label) lp("identity-key") lp(user_id) lp(key_id) lp(IKsig_public) lp(IKdh_public)`. */
export function identityBindingMessage(userId: string, key: IdentityPublicKey): Uint8Array {
  checkUserId(userId, "user id");
  checkUuidV7(key.keyId, "identity key id");
  return new Encoder(KEY_SIGNATURE_LABEL)
    .field(IDENTITY_KEY_KIND)
    .field(userId)
    .field(key.keyId)
    .field(key.signingPublicKey)
    .field(key.dhPublicKey)
    .finish();
}

/** Appends `Encode(IK) = lp(identity_key_id) lp(IKsig_public) lp(IKdh_public)`. */
export function encodeIdentityInto(encoder: Encoder, key: IdentityPublicKey): Encoder {
  return encoder.field(key.keyId).field(key.signingPublicKey).field(key.dhPublicKey);
}

function checkPublicKeys(key: IdentityPublicKey): void {
  checkUuidV7(key.keyId, "identity key id");
  if (key.signingPublicKey.length !== 32) throw new CryptoError("InvalidKey", "the identity's Ed25519 key must be 32 bytes");
  if (key.dhPublicKey.length !== 32) throw new CryptoError("InvalidKey", "the identity's X25519 key must be 32 bytes");
}

/** Verifies a published identity of `userId` (binding signature, key forms). */
export function verifyIdentity(published: PublishedIdentity, userId: string): IdentityPublicKey {
  checkPublicKeys(published);
  ed25519Verify(published.signingPublicKey, identityBindingMessage(userId, published), published.signature, "identity key binding");
  return { keyId: published.keyId, signingPublicKey: published.signingPublicKey, dhPublicKey: published.dhPublicKey };
}

/** Whether two public identities are the same (id and both keys). */
export function sameIdentity(a: IdentityPublicKey, b: IdentityPublicKey): boolean {
  return (
    a.keyId === b.keyId &&
    toHex(a.signingPublicKey) === toHex(b.signingPublicKey) &&
    toHex(a.dhPublicKey) === toHex(b.dhPublicKey)
  );
}

/** Persisted form of an identity key pair (hex secrets: store it encrypted). */
export interface IdentityKeyPairJson {
  format: 1;
  key_id: string;
  signing_seed: string;
  dh_secret: string;
}

/** The account identity with its secrets: a 32-byte Ed25519 seed and a 32-byte X25519 secret. */
export class IdentityKeyPair implements IdentityPublicKey {
  readonly signingPublicKey: Uint8Array;
  readonly dhPublicKey: Uint8Array;

  private constructor(
    readonly keyId: string,
    private readonly signingSeed: Uint8Array,
    private readonly dhSecretBytes: Uint8Array,
  ) {
    this.signingPublicKey = ed25519Public(signingSeed);
    this.dhPublicKey = x25519Public(dhSecretBytes);
  }

  /** From given secrets (copied). */
  static fromSecrets(keyId: string, signingSeed: Uint8Array, dhSecret: Uint8Array): IdentityKeyPair {
    checkUuidV7(keyId, "identity key id");
    if (signingSeed.length !== 32 || dhSecret.length !== 32) {
      throw new CryptoError("InvalidKey", "identity secrets must be 32 bytes each");
    }
    return new IdentityKeyPair(keyId, Uint8Array.from(signingSeed), Uint8Array.from(dhSecret));
  }

  /** A new identity from the platform's CSPRNG. */
  static generate(keyId: string): IdentityKeyPair {
    const seed = randomBytes(32);
    const dh = randomBytes(32);
    const pair = IdentityKeyPair.fromSecrets(keyId, seed, dh);
    wipe(seed, dh);
    return pair;
  }

  public(): IdentityPublicKey {
    return { keyId: this.keyId, signingPublicKey: this.signingPublicKey, dhPublicKey: this.dhPublicKey };
  }

  /** The `IdentityKey` to publish for `userId`, with its binding signature. */
  publish(userId: string): PublishedIdentity {
    return { ...this.public(), signature: this.signRaw(identityBindingMessage(userId, this)) };
  }

  /** Ed25519 over `message` exactly as given (callers pass a labelled encoding). */
  signRaw(message: Uint8Array): Uint8Array {
    return ed25519Sign(this.signingSeed, message);
  }

  /** The X25519 secret (for PQXDH; do not keep references). */
  dhSecret(): Uint8Array {
    return this.dhSecretBytes;
  }

  /** The Ed25519 seed (for the provisioning message only). */
  signingSeedBytes(): Uint8Array {
    return this.signingSeed;
  }

  toJSON(): IdentityKeyPairJson {
    return { format: 1, key_id: this.keyId, signing_seed: toHex(this.signingSeed), dh_secret: toHex(this.dhSecretBytes) };
  }

  static fromJSON(json: IdentityKeyPairJson): IdentityKeyPair {
    if (json.format !== 1) throw new CryptoError("InvalidStoredKeys", "unknown identity format");
    const seed = fromHex(json.signing_seed, 32, "identity signing seed");
    const dh = fromHex(json.dh_secret, 32, "identity X25519 secret");
    const pair = IdentityKeyPair.fromSecrets(json.key_id, seed, dh);
    wipe(seed, dh);
    return pair;
  }

  /** Wipes the secrets (the object is unusable afterwards). */
  wipe(): void {
    wipe(this.signingSeed, this.dhSecretBytes);
  }
}
