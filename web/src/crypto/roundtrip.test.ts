/**
 * Round trips with fresh randomness: a PQXDH handshake and a ratchet conversation both ways with
 * out-of-order delivery, persisted state, the skipped-key limits, tampering, replays, downgrades
 * and non-contributory X25519 results.
 */
import { describe, expect, it } from "vitest";

import { HistoryKeyRing, newHistoryKey, openArchive, sealArchive } from "./archive.js";
import { newId, toHex } from "./bytes.js";
import { checkContentSender, decodeContent, encodeContent } from "./content.js";
import { DeviceSecrets, KEM_LAST_RESORT, KEM_ONE_TIME, signDeviceKey } from "./device.js";
import { DeviceList, DeviceListTracker } from "./deviceList.js";
import { CryptoError, type CryptoErrorCode } from "./errors.js";
import { IdentityKeyPair, verifyIdentity } from "./identity.js";
import { LinkRequest, sealProvisioning } from "./link.js";
import { type DeviceBundle, initiate, respond, verifyDeviceBundle } from "./pqxdh.js";
import { randomBytes, x25519Agree } from "./primitives.js";
import { MAX_SKIP, MAX_SKIPPED_KEYS, type RatchetMessage, Session, type SessionPeer } from "./ratchet.js";

const id = (): string => newId(randomBytes);
const text = (s: string): Uint8Array => encodeContent({ kind: 1, body: new TextEncoder().encode(s) });
const read = (plaintext: Uint8Array): string => {
  const content = decodeContent(plaintext);
  if (content.kind !== 1) throw new Error("not a message");
  return new TextDecoder().decode(content.body);
};

function refused(run: () => unknown, code: CryptoErrorCode): CryptoError {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected ${code}`).toBeInstanceOf(CryptoError);
  expect((caught as CryptoError).code, (caught as CryptoError).message).toBe(code);
  return caught as CryptoError;
}

/** Low-order points of Curve25519 (u = 0, 1, p − 1 and the order-8 points), as encodings. */
const LOW_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
].map((h) => Uint8Array.from(h.match(/../g)!, (b) => parseInt(b, 16)));

/** Two users with a device each, bob's bundle published and verified by alice. */
function setup(options: { oneTime?: boolean; kem?: "one-time" | "last-resort" } = {}) {
  const [aliceUser, bobUser] = [id(), id()];
  const alice = IdentityKeyPair.generate(id());
  const bob = IdentityKeyPair.generate(id());
  const aliceDevice = DeviceSecrets.generate();
  const bobDevice = DeviceSecrets.generate();
  const { x25519, kem } = bobDevice.newOneTimePrekeys(bob, bobUser, 2);
  const spk = bobDevice.signedPrekeyPublished(bob, bobUser);
  const kemKey = options.kem === "last-resort" ? { ...bobDevice.lastResortPublished(bob, bobUser), kind: KEM_LAST_RESORT } : { ...kem[0]!, kind: KEM_ONE_TIME };
  const bundle: DeviceBundle = {
    userId: bobUser,
    deviceId: bobDevice.deviceId,
    signedPrekey: spk,
    kemPrekey: kemKey,
    oneTimePrekey: options.oneTime === false ? null : x25519[0]!,
  };
  const bobList = new DeviceList(bobUser, bob.keyId, 1, [bobDevice.deviceId]);
  const bobListSignature = bobList.sign(bob);
  // What alice does: verify bob's identity, his signed list, then the bundle.
  const bobIdentity = verifyIdentity(bob.publish(bobUser), bobUser);
  const verifiedList = DeviceList.verify(bobUser, bobIdentity, 1, [bobDevice.deviceId], bobListSignature);
  return { aliceUser, bobUser, alice, bob, aliceDevice, bobDevice, bundle, bobIdentity, verifiedList };
}

/** A handshake and both sessions; bob's session exists once he decrypted alice's first message. */
function handshake(options: { oneTime?: boolean; kem?: "one-time" | "last-resort" } = {}) {
  const s = setup(options);
  const verified = verifyDeviceBundle(s.bundle, s.bobIdentity, s.verifiedList);
  const hs = initiate(s.alice, s.aliceUser, s.aliceDevice.deviceId, verified);
  const alicePeer: SessionPeer = { localDeviceId: s.aliceDevice.deviceId, peerUserId: s.bobUser, peerDeviceId: s.bobDevice.deviceId, peerIdentityKeyId: s.bob.keyId };
  const aliceSession = Session.initiator(alicePeer, hs.sk, hs.ad, verified.signedPrekey, hs.preamble);
  /** What bob does with a message that carries a preamble. */
  const bobAccept = (messageId: string, message: RatchetMessage): { session: Session; plaintext: Uint8Array } => {
    const preamble = message.header.preamble!;
    const got = respond(
      s.bob,
      { userId: s.bobUser, deviceId: s.bobDevice.deviceId, identity: s.bob.public() },
      s.bobDevice,
      { userId: s.aliceUser, deviceId: s.aliceDevice.deviceId, identity: s.alice.public() },
      preamble,
    );
    const peer: SessionPeer = { localDeviceId: s.bobDevice.deviceId, peerUserId: s.aliceUser, peerDeviceId: s.aliceDevice.deviceId, peerIdentityKeyId: s.alice.keyId };
    const session = Session.responder(peer, got.sk, got.ad, s.bobDevice.signedPrekeySecret(preamble.signedPrekeyId), preamble);
    const plaintext = session.decrypt(messageId, message);
    s.bobDevice.spend(preamble.oneTimePrekeyId, preamble.kemKind === 1 ? KEM_LAST_RESORT : KEM_ONE_TIME, preamble.kemPrekeyId);
    return { session, plaintext };
  };
  return { ...s, hs, verified, aliceSession, bobAccept };
}

describe("PQXDH and the Double Ratchet, round trip", () => {
  it("a conversation in both directions with out-of-order delivery and persisted sessions", () => {
    const h = handshake();
    let alice = h.aliceSession;
    const a = ["a0", "a1", "a2"].map((t) => ({ id: id(), t }));
    const aSent = a.map((m) => alice.encrypt(m.id, text(m.t)));
    expect(aSent.every((m) => m.header.preamble !== null)).toBe(true);

    // Bob gets a2 first: it carries the preamble, so it establishes his session.
    const accepted = h.bobAccept(a[2]!.id, aSent[2]!);
    let bob = accepted.session;
    expect(read(accepted.plaintext)).toBe("a2");
    expect(h.bobDevice.oneTimeCounts()).toEqual({ x25519: 1, kem: 1 });
    expect(read(bob.decrypt(a[0]!.id, aSent[0]!))).toBe("a0");
    // Persisted and restored mid-conversation (JSON-compatible plain objects).
    bob = Session.fromJSON(JSON.parse(JSON.stringify(bob.toJSON())));
    expect(read(bob.decrypt(a[1]!.id, aSent[1]!))).toBe("a1");

    // Bob answers twice; alice reads them in reverse order, then her preamble is gone.
    const b = ["b0", "b1"].map((t) => ({ id: id(), t }));
    const bSent = b.map((m) => bob.encrypt(m.id, text(m.t)));
    expect(bSent[0]!.header.preamble).toBeNull();
    expect(read(alice.decrypt(b[1]!.id, bSent[1]!))).toBe("b1");
    expect(alice.awaitingReply).toBe(false);
    alice = Session.fromJSON(JSON.parse(JSON.stringify(alice.toJSON())));
    expect(read(alice.decrypt(b[0]!.id, bSent[0]!))).toBe("b0");

    // Several more turns, each delivered out of order within the turn.
    for (let turn = 0; turn < 4; turn++) {
      const [from, to] = turn % 2 === 0 ? [alice, bob] : [bob, alice];
      const batch = [0, 1, 2, 3].map((i) => ({ id: id(), t: `turn ${turn} message ${i}` }));
      const sealed = batch.map((m) => from.encrypt(m.id, text(m.t)));
      expect(sealed[0]!.header.preamble).toBeNull();
      for (const i of [3, 1, 0, 2]) expect(read(to.decrypt(batch[i]!.id, sealed[i]!))).toBe(batch[i]!.t);
    }
    expect(alice.skippedKeyCount).toBe(0);
    expect(bob.skippedKeyCount).toBe(0);
  });

  it("works without a one-time prekey and with the last-resort ML-KEM prekey", () => {
    const h = handshake({ oneTime: false, kem: "last-resort" });
    expect(h.hs.preamble.oneTimePrekeyId).toBe("");
    expect(h.hs.preamble.kemKind).toBe(1);
    const mid = id();
    const { session, plaintext } = h.bobAccept(mid, h.aliceSession.encrypt(mid, text("hi")));
    expect(read(plaintext)).toBe("hi");
    const rid = id();
    expect(read(h.aliceSession.decrypt(rid, session.encrypt(rid, text("hello"))))).toBe("hello");
    // The last-resort key is not spent; the one-time keys are untouched.
    expect(h.bobDevice.oneTimeCounts()).toEqual({ x25519: 2, kem: 2 });
  });

  it("refuses replays, and a spent one-time prekey is unknown afterwards", () => {
    const h = handshake();
    const ids = [id(), id()];
    const sent = ids.map((m) => h.aliceSession.encrypt(m, text(m)));
    const { session: bob } = h.bobAccept(ids[0]!, sent[0]!);
    refused(() => bob.decrypt(ids[0]!, sent[0]!), "DuplicateMessage");
    bob.decrypt(ids[1]!, sent[1]!);
    refused(() => bob.decrypt(ids[1]!, sent[1]!), "DuplicateMessage");
    // After a DH step, the old chain's messages are replays too.
    const rid = id();
    h.aliceSession.decrypt(rid, bob.encrypt(rid, text("reply")));
    const nid = id();
    const next = h.aliceSession.encrypt(nid, text("next"));
    bob.decrypt(nid, next);
    refused(() => bob.decrypt(ids[0]!, sent[0]!), "DuplicateMessage");
    refused(() => bob.decrypt(nid, next), "DuplicateMessage");
    // A second session from the same preamble cannot be started: the one-time keys are spent.
    refused(() => h.bobAccept(ids[0]!, sent[0]!), "UnknownKey");
  });

  it("refuses tampered headers, ciphertexts, message ids and devices, leaving the state unchanged", () => {
    const h = handshake();
    const first = id();
    const { session: bob } = h.bobAccept(first, h.aliceSession.encrypt(first, text("first")));
    const mid = id();
    const message = h.aliceSession.encrypt(mid, text("secret"));
    const before = JSON.stringify(bob.toJSON());
    const flip = (bytes: Uint8Array, at: number): Uint8Array => Uint8Array.from(bytes, (x, i) => (i === at ? x ^ 1 : x));
    const tampered: [string, RatchetMessage, CryptoErrorCode][] = [
      [mid, { ...message, ciphertext: flip(message.ciphertext, 0) }, "DecryptionFailed"],
      [mid, { ...message, ciphertext: flip(message.ciphertext, message.ciphertext.length - 1) }, "DecryptionFailed"],
      [mid, { ...message, header: { ...message.header, n: message.header.n + 1 } }, "DecryptionFailed"],
      [mid, { ...message, header: { ...message.header, pn: message.header.pn + 1 } }, "DecryptionFailed"],
      [mid, { ...message, header: { ...message.header, dh: flip(message.header.dh, 0) } }, "DecryptionFailed"],
      [mid, { ...message, header: { ...message.header, preamble: { ...message.header.preamble!, kemCiphertext: flip(message.header.preamble!.kemCiphertext, 5) } } }, "DecryptionFailed"],
      [mid, { ...message, header: { ...message.header, preamble: null } }, "DecryptionFailed"],
      [id(), message, "DecryptionFailed"],
      [mid, { ...message, header: { ...message.header, senderDeviceId: id() } }, "KeyMismatch"],
      [mid, { ...message, header: { ...message.header, n: message.header.n + MAX_SKIP + 1 } }, "TooManySkipped"],
    ];
    for (const [messageId, m, code] of tampered) {
      refused(() => bob.decrypt(messageId, m), code);
      expect(JSON.stringify(bob.toJSON())).toBe(before);
    }
    expect(read(bob.decrypt(mid, message))).toBe("secret");
  });

  it("enforces MAX_SKIP per chain and bounds the skipped-key store at MAX_SKIPPED_KEYS", () => {
    const h = handshake();
    const first = id();
    const { session: bob } = h.bobAccept(first, h.aliceSession.encrypt(first, text("n0")));
    // Alice's chain now continues at n = 1.
    const sent: { id: string; m: RatchetMessage }[] = [];
    for (let n = 1; n <= 3002; n++) {
      const mid = id();
      sent.push({ id: mid, m: h.aliceSession.encrypt(mid, text(`n${n}`)) });
    }
    const at = (n: number) => sent[n - 1]!;
    // n = 1002 would skip 1001 keys (1..1001): refused, nothing stored.
    refused(() => bob.decrypt(at(1002).id, at(1002).m), "TooManySkipped");
    expect(bob.skippedKeyCount).toBe(0);
    // n = 1001 skips exactly 1000: allowed.
    expect(read(bob.decrypt(at(1001).id, at(1001).m))).toBe("n1001");
    expect(bob.skippedKeyCount).toBe(MAX_SKIP);
    expect(read(bob.decrypt(at(1).id, at(1).m))).toBe("n1");
    expect(bob.skippedKeyCount).toBe(MAX_SKIP - 1);
    // Two more skips of 1000 exceed the store's bound: the oldest are deleted.
    bob.decrypt(at(2002).id, at(2002).m);
    bob.decrypt(at(3002).id, at(3002).m);
    expect(bob.skippedKeyCount).toBe(MAX_SKIPPED_KEYS);
    // n = 2 was among the oldest: its key is gone, so it is refused as used or deleted.
    refused(() => bob.decrypt(at(2).id, at(2).m), "DuplicateMessage");
    // The newest skipped keys are kept.
    expect(read(bob.decrypt(at(3001).id, at(3001).m))).toBe("n3001");
    expect(read(bob.decrypt(at(1003).id, at(1003).m))).toBe("n1003");
  });

  it("a responder cannot send before it decrypted a message", () => {
    const h = handshake();
    const got = respond(
      h.bob,
      { userId: h.bobUser, deviceId: h.bobDevice.deviceId, identity: h.bob.public() },
      h.bobDevice,
      { userId: h.aliceUser, deviceId: h.aliceDevice.deviceId, identity: h.alice.public() },
      h.hs.preamble,
    );
    const peer = { localDeviceId: h.bobDevice.deviceId, peerUserId: h.aliceUser, peerDeviceId: h.aliceDevice.deviceId, peerIdentityKeyId: h.alice.keyId };
    const session = Session.responder(peer, got.sk, got.ad, h.bobDevice.signedPrekeySecret(h.hs.preamble.signedPrekeyId), h.hs.preamble);
    expect(toHex(got.sk)).toBe(toHex(h.hs.sk));
    refused(() => session.encrypt(id(), text("too early")), "NoSession");
  });
});

describe("downgrades and bad bundles are refused", () => {
  it("a bundle without the ML-KEM prekey", () => {
    const s = setup();
    refused(() => verifyDeviceBundle({ ...s.bundle, kemPrekey: null }, s.bobIdentity, s.verifiedList), "MissingKemPrekey");
    refused(() => verifyDeviceBundle({ ...s.bundle, kemPrekey: undefined }, s.bobIdentity, s.verifiedList), "MissingKemPrekey");
  });

  it("a bad ML-KEM or signed-prekey signature, or a kind the signature was not made for", () => {
    const s = setup();
    const flip = (sig: Uint8Array) => Uint8Array.from(sig, (x, i) => (i === 10 ? x ^ 0x40 : x));
    const kem = s.bundle.kemPrekey!;
    refused(() => verifyDeviceBundle({ ...s.bundle, kemPrekey: { ...kem, signature: flip(kem.signature) } }, s.bobIdentity, s.verifiedList), "BadSignature");
    refused(() => verifyDeviceBundle({ ...s.bundle, kemPrekey: { ...kem, kind: KEM_LAST_RESORT } }, s.bobIdentity, s.verifiedList), "BadSignature");
    const spk = s.bundle.signedPrekey;
    refused(() => verifyDeviceBundle({ ...s.bundle, signedPrekey: { ...spk, signature: flip(spk.signature) } }, s.bobIdentity, s.verifiedList), "BadSignature");
    // Signed by someone else (the server's own key).
    const mallory = IdentityKeyPair.generate(s.bob.keyId);
    const forged = signDeviceKey(mallory, KEM_ONE_TIME, s.bobUser, s.bobDevice.deviceId, kem.keyId, kem.publicKey);
    refused(() => verifyDeviceBundle({ ...s.bundle, kemPrekey: { ...kem, signature: forged } }, s.bobIdentity, s.verifiedList), "BadSignature");
  });

  it("an ML-KEM key failing the FIPS 203 modulus check", () => {
    const s = setup();
    const kem = s.bundle.kemPrekey!;
    const bad = Uint8Array.from(kem.publicKey);
    bad[0] = 0xff;
    bad[1] = 0xff; // first coefficient 4095 ≥ q
    refused(() => verifyDeviceBundle({ ...s.bundle, kemPrekey: { ...kem, publicKey: bad } }, s.bobIdentity, s.verifiedList), "InvalidKey");
  });

  it("a device the signed list does not name, and an edited device list", () => {
    const s = setup();
    const list = new DeviceList(s.bobUser, s.bob.keyId, 2, [id()]);
    refused(() => verifyDeviceBundle(s.bundle, s.bobIdentity, list), "UnknownDevice");
    const signature = s.verifiedList.sign(s.bob);
    refused(() => DeviceList.verify(s.bobUser, s.bobIdentity, 1, [s.bobDevice.deviceId, id()], signature), "BadSignature");
  });

  it("device list rollbacks and mismatches", () => {
    const s = setup();
    const tracker = new DeviceListTracker();
    const v1 = s.verifiedList;
    const extra = id();
    const v2 = v1.withDevice(extra);
    expect(tracker.observe(v1)).toEqual({ added: [s.bobDevice.deviceId], removed: [] });
    expect(tracker.observe(v2)).toEqual({ added: [extra], removed: [] });
    refused(() => tracker.observe(v1), "DeviceListRollback");
    refused(() => tracker.observe(new DeviceList(s.bobUser, s.bob.keyId, 2, [s.bobDevice.deviceId])), "DeviceListMismatch");
    const restored = DeviceListTracker.fromJSON(JSON.parse(JSON.stringify(tracker.toJSON())));
    refused(() => restored.observe(v1), "DeviceListRollback");
    expect(restored.seenVersion(s.bobUser)).toBe(2n);
  });
});

describe("non-contributory X25519 results are refused", () => {
  it("x25519Agree refuses every low-order point", () => {
    for (const point of LOW_ORDER) refused(() => x25519Agree(randomBytes(32), point, "the test key"), "NonContributory");
  });

  it("a signed prekey of low order (signed by a broken or malicious identity) fails the handshake", () => {
    const s = setup();
    for (const point of LOW_ORDER) {
      const spk = { keyId: s.bundle.signedPrekey.keyId, publicKey: point, signature: signDeviceKey(s.bob, "x25519-signed-prekey", s.bobUser, s.bobDevice.deviceId, s.bundle.signedPrekey.keyId, point) };
      const verified = verifyDeviceBundle({ ...s.bundle, signedPrekey: spk }, s.bobIdentity, s.verifiedList);
      refused(() => initiate(s.alice, s.aliceUser, s.aliceDevice.deviceId, verified), "NonContributory");
    }
  });

  it("an unsigned one-time prekey swapped for a low-order point by the server fails the handshake", () => {
    const s = setup();
    for (const point of LOW_ORDER) {
      const bundle = { ...s.bundle, oneTimePrekey: { ...s.bundle.oneTimePrekey!, publicKey: point } };
      const verified = verifyDeviceBundle(bundle, s.bobIdentity, s.verifiedList);
      refused(() => initiate(s.alice, s.aliceUser, s.aliceDevice.deviceId, verified), "NonContributory");
    }
  });

  it("a ratchet header with a low-order key is refused, state unchanged", () => {
    const h = handshake();
    const first = id();
    const { session: bob } = h.bobAccept(first, h.aliceSession.encrypt(first, text("first")));
    const rid = id();
    const reply = bob.encrypt(rid, text("reply"));
    const before = JSON.stringify(h.aliceSession.toJSON());
    for (const point of LOW_ORDER) {
      refused(() => h.aliceSession.decrypt(rid, { ...reply, header: { ...reply.header, dh: point } }), "NonContributory");
      expect(JSON.stringify(h.aliceSession.toJSON())).toBe(before);
    }
    expect(read(h.aliceSession.decrypt(rid, reply))).toBe("reply");
  });

  it("a preamble with a low-order ephemeral key is refused by the responder", () => {
    const h = handshake();
    for (const point of LOW_ORDER) {
      refused(
        () =>
          respond(
            h.bob,
            { userId: h.bobUser, deviceId: h.bobDevice.deviceId, identity: h.bob.public() },
            h.bobDevice,
            { userId: h.aliceUser, deviceId: h.aliceDevice.deviceId, identity: h.alice.public() },
            { ...h.hs.preamble, ephemeralPublic: point },
          ),
        "NonContributory",
      );
    }
  });
});

describe("contents, archive and linking, round trip", () => {
  it("content kinds and who may send them", () => {
    const hk = newHistoryKey();
    const historyKey = decodeContent(encodeContent({ kind: 2, historyKeyId: hk.historyKeyId, key: hk.key }));
    expect(historyKey).toEqual({ kind: 2, historyKeyId: hk.historyKeyId, key: hk.key });
    checkContentSender(historyKey, "me", "me");
    refused(() => checkContentSender(historyKey, "someone else", "me"), "UnexpectedContent");
    const reset = encodeContent({ kind: 3 });
    const withBody = Uint8Array.from([...reset.subarray(0, reset.length - 4), 0, 0, 0, 1, 0x41]);
    refused(() => decodeContent(withBody), "MalformedEnvelope");
    const unknownKind = Uint8Array.from(reset);
    unknownKind[26] = 9;
    refused(() => decodeContent(unknownKind), "MalformedEnvelope");
    refused(() => encodeContent({ kind: 1, body: new Uint8Array(255 * 1024 + 1) }), "PlaintextTooLarge");
  });

  it("archive copies open with the ring, after a rotation too, and not under other ids", () => {
    const ring = HistoryKeyRing.generate();
    const context = { ownerUserId: id(), messageId: id(), senderUserId: id(), senderDeviceId: id(), recipientUserId: id() };
    const copy = sealArchive(ring.current(), context, { kind: 1, body: new TextEncoder().encode("lab results") });
    ring.pushCurrent(newHistoryKey());
    const restored = HistoryKeyRing.fromJSON(JSON.parse(JSON.stringify(ring.toJSON())));
    expect(decodeContent(encodeContent(openArchive(copy, restored, context)))).toEqual({ kind: 1, body: new TextEncoder().encode("lab results") });
    refused(() => openArchive(copy, restored, { ...context, messageId: id() }), "DecryptionFailed");
    refused(() => openArchive(copy, restored, { ...context, senderDeviceId: id() }), "DecryptionFailed");
    refused(() => openArchive(copy, HistoryKeyRing.generate(), context), "UnknownKey");
  });

  it("linking a device carries the identity and the key ring", () => {
    const user = id();
    const identity = IdentityKeyPair.generate(id());
    const history = HistoryKeyRing.generate();
    history.pushCurrent(newHistoryKey());
    const request = LinkRequest.create(user);
    expect(request.code()).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$/);
    const pending = { userId: user, deviceId: request.deviceId, ephemeralPublic: request.ephemeralPublic, commitment: request.commitment() };
    const sealed = sealProvisioning(pending, request.code(), { identity, history, approverDeviceId: id() });
    const opened = request.open(sealed);
    expect(opened.identity.toJSON()).toEqual(identity.toJSON());
    expect(opened.history.toJSON()).toEqual(history.toJSON());
    // Another link's request (another E, another s) cannot open it.
    refused(() => LinkRequest.create(user, request.deviceId).open(sealed), "DecryptionFailed");
    refused(() => sealProvisioning(pending, LinkRequest.create(user).code(), { identity, history, approverDeviceId: id() }), "LinkCodeMismatch");
  });
});
