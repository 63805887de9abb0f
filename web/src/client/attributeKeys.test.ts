// The attribute keyring's local rules, with the authority's two RPCs answered in-process by keys
// from docs/vectors/fame-v1.json sealed to a test identity (as abe-authority-svc seals them):
// a held key is reused, a key for another user is refused, keys whose attributes the account lost
// are wiped, and a policy the account cannot satisfy gets a refusal naming the policy.
import { readFileSync } from "node:fs";
import { join } from "node:path";

import type { Client } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";

import { REPO_ROOT, hex, type Json } from "../../test/support.js";
import type { AbeService } from "../gen/caremesh/abe/v1/abe_pb";
import { Policy } from "../crypto/fame";
import { sealUserKey } from "../crypto/fameEnvelope";
import { IdentityKeyPair } from "../crypto/identity";
import { AttributeKeyring } from "./attributeKeys";

const vectors: Json = JSON.parse(readFileSync(join(REPO_ROOT, "docs/vectors/fame-v1.json"), "utf8"));
const vectorKey = (name: string): Json => vectors.keys.find((k: Json) => k.name === name);
const identity = IdentityKeyPair.fromSecrets("0193c6b1-1a2b-7c3d-8e4f-000000000001", new Uint8Array(32).fill(7), new Uint8Array(32).fill(9));

/** Answers IssueUserKey with the named vector keys in turn, issued to `issuedTo`. */
function authority(names: string[], issuedTo = "doctor-1") {
  let issued = 0;
  const abe = {
    getPublicParameters: async () => ({ version: "p1", publicParameters: hex(vectors.public_params) }),
    issueUserKey: async () => {
      const name = names[issued++]!;
      const keyId = `key-${issued}`;
      return {
        userKey: {
          keyId,
          userId: issuedTo,
          paramsVersion: "p1",
          expireTime: timestampFromDate(new Date(Date.now() + 3_600_000)),
          sealedKey: sealUserKey(issuedTo, keyId, identity.public(), hex(vectorKey(name).user_key)),
        },
      };
    },
  };
  return { abe: abe as unknown as Client<typeof AbeService>, issuedCount: () => issued };
}

const keyring = (abe: Client<typeof AbeService>) => new AttributeKeyring(abe, () => "doctor-1", async () => identity);
const cardiology = Policy.parse('"role:doctor" and "dept:cardiology"');
const oncology = Policy.parse('"role:doctor" and "dept:oncology"');

describe("AttributeKeyring", () => {
  it("issues a key once and reuses it while it satisfies the policy", async () => {
    const { abe, issuedCount } = authority(["cardiologist"]);
    const ring = keyring(abe);
    const first = await ring.keyFor(cardiology, "p1", "record");
    expect([...first.attributes]).toEqual(vectorKey("cardiologist").attributes);
    expect(await ring.keyFor(cardiology, "p1", "record")).toBe(first);
    expect(issuedCount()).toBe(1);
    expect((await ring.publicParams()).version).toBe("p1");
  });

  it("refuses a key the authority issued to another user", async () => {
    const { abe } = authority(["cardiologist"], "someone-else");
    await expect(keyring(abe).keyFor(cardiology, "p1", "record")).rejects.toThrow("the authority issued a key for another user");
  });

  it("wipes keys whose attributes the account no longer has, and names an unsatisfied policy", async () => {
    const { abe } = authority(["cardiologist", "oncologist"]);
    const ring = keyring(abe);
    const cardiologist = await ring.keyFor(cardiology, "p1", "record");
    const material = (key: unknown) => (key as { sk0: unknown[] }).sk0.length;
    expect(material(cardiologist)).toBe(3);
    // Moved to oncology: the next key lacks dept:cardiology, so the held one is wiped and dropped.
    const oncologist = await ring.keyFor(oncology, "p1", "message");
    expect(material(cardiologist)).toBe(0);
    expect(material(oncologist)).toBe(3);
    ring.wipe();
    expect(material(oncologist)).toBe(0);
    const { abe: again } = authority(["oncologist"]);
    const moved = keyring(again);
    await expect(moved.keyFor(cardiology, "p1", "record")).rejects.toThrow(
      `your attributes do not satisfy this record's policy ${cardiology.canonical()}`,
    );
  });
});
