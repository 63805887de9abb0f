// One account's CP-ABE material in memory, for records and for group messages alike: the
// authority's public parameters and the attribute keys it issued, sealed to the account's identity.
// Keys never leave memory; `wipe` drops their material (best effort: BigInts cannot be
// overwritten) when the account signs out or changes.

import type { Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { AbeService, UserKey as PbUserKey } from "../gen/caremesh/abe/v1/abe_pb";
import { Policy, PublicParams, UserKey } from "../crypto/fame";
import { openSealedUserKey } from "../crypto/fameEnvelope";
import type { IdentityKeyPair } from "../crypto/identity";

export interface PublicParamsVersion {
  version: string;
  params: PublicParams;
}

interface HeldKey {
  paramsVersion: string;
  expires: number;
  key: UserKey;
}

export class AttributeKeyring {
  private params: PublicParamsVersion | null = null;
  private keys: HeldKey[] = [];

  constructor(
    private readonly abe: Client<typeof AbeService>,
    /** The signed-in account, whose keys these are. */
    private readonly userId: () => string,
    /** The account identity the authority seals keys to. */
    private readonly identity: () => Promise<IdentityKeyPair>,
    /** Builds the error a caller shows (records and messaging each have their own kind). */
    private readonly fail: (message: string) => Error = (message) => new Error(message),
  ) {}

  async publicParams(): Promise<PublicParamsVersion> {
    if (this.params === null) {
      const response = await this.abe.getPublicParameters({});
      this.params = { version: response.version, params: PublicParams.fromBytes(response.publicParameters) };
    }
    return this.params;
  }

  /**
   * A key satisfying `policy` under `paramsVersion`: one held, or a fresh one issued with the
   * account's current attributes. `what` names the thing being opened, for the refusal.
   */
  async keyFor(policy: Policy, paramsVersion: string, what: string): Promise<UserKey> {
    const held = this.held(policy, paramsVersion);
    if (held !== null) return held;
    const identity = await this.identity();
    const response = await this.abe.issueUserKey({ identityKeyId: identity.keyId });
    const key = this.open(identity, response.userKey);
    // Keys with attributes the account no longer has go (as the SDK's keep()).
    const kept = this.keys.filter((k) => k.expires > Date.now() && k.key.attributes.every((a) => key.key.has(a)));
    for (const dropped of this.keys) if (!kept.includes(dropped)) dropped.key.wipe();
    this.keys = [...kept, key];
    const fresh = this.held(policy, paramsVersion);
    if (fresh === null) throw this.fail(`your attributes do not satisfy this ${what}'s policy ${policy.canonical()}`);
    return fresh;
  }

  /** Keeps a key the authority issued by another route (break glass), sealed to `identity`. */
  add(identity: IdentityKeyPair, issued: PbUserKey | undefined): void {
    this.keys.push(this.open(identity, issued));
  }

  /** Drops every key's material; the public parameters stay (they are public). */
  wipe(): void {
    for (const held of this.keys) held.key.wipe();
    this.keys = [];
  }

  private open(identity: IdentityKeyPair, issued: PbUserKey | undefined): HeldKey {
    if (!issued?.sealedKey) throw this.fail("the authority answered without a sealed key");
    if (issued.userId !== this.userId()) throw this.fail("the authority issued a key for another user");
    const key = openSealedUserKey(identity, issued.userId, issued.keyId, issued.sealedKey);
    const expires = issued.expireTime ? timestampDate(issued.expireTime).getTime() : 0;
    return { paramsVersion: issued.paramsVersion, expires, key };
  }

  /** The newest held key that is unexpired, of this parameter version, and satisfies `policy`. */
  private held(policy: Policy, paramsVersion: string): UserKey | null {
    const now = Date.now();
    for (let i = this.keys.length - 1; i >= 0; i--) {
      const k = this.keys[i]!;
      if (k.expires > now && k.paramsVersion === paramsVersion && policy.isSatisfiedBy(k.key.attributes)) return k.key;
    }
    return null;
  }
}
