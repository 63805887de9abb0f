/**
 * The session store (which session sends, which one a message belongs to, the responder's
 * handshake spending one-time keys) and safety numbers (a known answer computed with Python's
 * hashlib from the description in caremesh_crypto::safety).
 */
import { describe, expect, it } from "vitest";

import { newId } from "./bytes.js";
import { decodeContent, encodeContent } from "./content.js";
import { DeviceSecrets, KEM_ONE_TIME } from "./device.js";
import { DeviceList } from "./deviceList.js";
import { CryptoError } from "./errors.js";
import { IdentityKeyPair, verifyIdentity } from "./identity.js";
import { verifyDeviceBundle } from "./pqxdh.js";
import { randomBytes } from "./primitives.js";
import { safetyNumber, TrustStore } from "./safety.js";
import { SessionStore } from "./sessions.js";

const id = (): string => newId(randomBytes);
const seal = (s: string): Uint8Array => encodeContent({ kind: 1, body: new TextEncoder().encode(s) });
const read = (p: Uint8Array): string => {
  const c = decodeContent(p);
  if (c.kind !== 1) throw new Error("not a message");
  return new TextDecoder().decode(c.body);
};

function users() {
  const [aUser, bUser] = [id(), id()];
  const a = IdentityKeyPair.generate(id());
  const b = IdentityKeyPair.generate(id());
  const aDevice = DeviceSecrets.generate();
  const bDevice = DeviceSecrets.generate();
  const bundleOf = (me: IdentityKeyPair, user: string, device: DeviceSecrets) => {
    const { x25519, kem } = device.newOneTimePrekeys(me, user, 1);
    const identity = verifyIdentity(me.publish(user), user);
    const list = new DeviceList(user, me.keyId, 1, [device.deviceId]);
    const verifiedList = DeviceList.verify(user, identity, 1, [device.deviceId], list.sign(me));
    return verifyDeviceBundle(
      { userId: user, deviceId: device.deviceId, signedPrekey: device.signedPrekeyPublished(me, user), kemPrekey: { ...kem[0]!, kind: KEM_ONE_TIME }, oneTimePrekey: x25519[0]! },
      identity,
      verifiedList,
    );
  };
  return { aUser, bUser, a, b, aDevice, bDevice, bBundle: bundleOf(b, bUser, bDevice), aBundle: bundleOf(a, aUser, aDevice) };
}

describe("SessionStore", () => {
  it("starts, answers, spends one-time keys, survives JSON and refuses replays", () => {
    const u = users();
    const aStore = new SessionStore();
    const bStore = new SessionStore();
    const bPeer = { userId: u.bUser, deviceId: u.bDevice.deviceId };
    const aPeer = { userId: u.aUser, deviceId: u.aDevice.deviceId };
    expect(aStore.canSendTo(bPeer)).toBe(false);
    aStore.start(u.a, u.aUser, u.aDevice.deviceId, u.bBundle);
    expect(aStore.canSendTo(bPeer)).toBe(true);
    const m1 = id();
    const first = aStore.encrypt(bPeer, m1, seal("hello"));
    expect(first.header.preamble).toBeTruthy();
    expect(u.bDevice.oneTimeCounts()).toEqual({ x25519: 1, kem: 1 });
    expect(read(bStore.decrypt(u.b, u.bUser, u.bDevice, u.aUser, u.a.public(), m1, first))).toBe("hello");
    expect(u.bDevice.oneTimeCounts()).toEqual({ x25519: 0, kem: 0 });
    expect(() => bStore.decrypt(u.b, u.bUser, u.bDevice, u.aUser, u.a.public(), m1, first)).toThrow(CryptoError);
    // Both stores as JSON and back, then a reply and an answer in the same sessions.
    const b2 = SessionStore.fromJSON(JSON.parse(JSON.stringify(bStore.toJSON())));
    const a2 = SessionStore.fromJSON(JSON.parse(JSON.stringify(aStore.toJSON())));
    const m2 = id();
    const reply = b2.encrypt(aPeer, m2, seal("hi"));
    expect(read(a2.decrypt(u.a, u.aUser, u.aDevice, u.bUser, u.b.public(), m2, reply))).toBe("hi");
    const m3 = id();
    const next = a2.encrypt(bPeer, m3, seal("again"));
    expect(next.header.preamble).toBeNull();
    expect(read(b2.decrypt(u.b, u.bUser, u.bDevice, u.aUser, u.a.public(), m3, next))).toBe("again");
  });

  it("converges when both sides started a session at once", () => {
    const u = users();
    const aStore = new SessionStore();
    const bStore = new SessionStore();
    const bPeer = { userId: u.bUser, deviceId: u.bDevice.deviceId };
    const aPeer = { userId: u.aUser, deviceId: u.aDevice.deviceId };
    aStore.start(u.a, u.aUser, u.aDevice.deviceId, u.bBundle);
    bStore.start(u.b, u.bUser, u.bDevice.deviceId, u.aBundle);
    const [ma, mb] = [id(), id()];
    const fromA = aStore.encrypt(bPeer, ma, seal("from a"));
    const fromB = bStore.encrypt(aPeer, mb, seal("from b"));
    expect(read(bStore.decrypt(u.b, u.bUser, u.bDevice, u.aUser, u.a.public(), ma, fromA))).toBe("from a");
    expect(read(aStore.decrypt(u.a, u.aUser, u.aDevice, u.bUser, u.b.public(), mb, fromB))).toBe("from b");
    const mc = id();
    const later = bStore.encrypt(aPeer, mc, seal("later"));
    expect(read(aStore.decrypt(u.a, u.aUser, u.aDevice, u.bUser, u.b.public(), mc, later))).toBe("later");
  });

  it("says NoSession for a message without a preamble from an unknown device", () => {
    const u = users();
    const aStore = new SessionStore();
    aStore.start(u.a, u.aUser, u.aDevice.deviceId, u.bBundle);
    const bPeer = { userId: u.bUser, deviceId: u.bDevice.deviceId };
    const m = aStore.encrypt(bPeer, id(), seal("x"));
    m.header.preamble = null;
    expect(() => new SessionStore().decrypt(u.b, u.bUser, u.bDevice, u.aUser, u.a.public(), id(), m)).toThrow(/NoSession|session/i);
  });
});

describe("safety numbers", () => {
  const alice = { keyId: id(), signingPublicKey: Uint8Array.from({ length: 32 }, (_, i) => i), dhPublicKey: Uint8Array.from({ length: 32 }, (_, i) => 32 + i) };
  const bob = { keyId: id(), signingPublicKey: Uint8Array.from({ length: 32 }, (_, i) => 64 + i), dhPublicKey: Uint8Array.from({ length: 32 }, (_, i) => 96 + i) };

  it("match the independent computation and are the same on both sides", () => {
    const expected = "33333 16693 76483 20205 30933 29829 34128 93832 03829 41183 25195 22178";
    expect(safetyNumber("alice", alice, "bob", bob)).toBe(expected);
    expect(safetyNumber("bob", bob, "alice", alice)).toBe(expected);
  });

  it("pin on first use and report a change", () => {
    const trust = new TrustStore();
    expect(trust.check("bob", bob).kind).toBe("firstUse");
    expect(trust.check("bob", bob).kind).toBe("trusted");
    const changed = { ...bob, dhPublicKey: Uint8Array.from(bob.dhPublicKey).fill(7, 0, 1) };
    expect(trust.check("bob", changed).kind).toBe("changed");
    const restored = TrustStore.fromJSON(JSON.parse(JSON.stringify(trust.toJSON())));
    expect(restored.check("bob", bob).kind).toBe("trusted");
    restored.acceptNew("bob", changed);
    expect(restored.check("bob", changed).kind).toBe("trusted");
  });
});
