/**
 * An end-to-end transcript with fixed randomness, chaining the vector groups the way a real
 * session chains them: bob's published device keys (`device_keys[0]`, with the Python
 * generator's signatures) → a verified bundle → PQXDH (`pqxdh[0]`) on both sides → the Double
 * Ratchet (`ratchet[0]`): a handshake and three messages. The transcript is a JSON document; every
 * value in it must equal what the independent implementation wrote into the vector file.
 */
import { describe, expect, it } from "vitest";

import { cases, hex, protocolVectors, type Json } from "../../test/support.js";
import { toHex } from "./bytes.js";
import { DeviceSecrets, KEM_ONE_TIME, SIGNED_PREKEY, type KemKind } from "./device.js";
import { DeviceList } from "./deviceList.js";
import { IdentityKeyPair, verifyIdentity } from "./identity.js";
import { type DeviceBundle, initiate, preambleToJSON, respond, verifyDeviceBundle } from "./pqxdh.js";
import { x25519Public } from "./primitives.js";
import { encodeHeader, ListRatchetKeys, messageAad, type RatchetMessage, Session } from "./ratchet.js";

const vectors = protocolVectors();

/** Runs the handshake and the first three messages of the conversation; returns the transcript. */
function buildTranscript(): Json {
  const keys = cases(vectors, "device_keys")[0];
  const px = cases(vectors, "pqxdh")[0];
  const rc = cases(vectors, "ratchet")[0];
  const [a, b] = [px.initiator, px.responder];
  const alice = IdentityKeyPair.fromSecrets(a.identity_key_id, hex(a.identity_signing_seed), hex(a.identity_dh_secret));
  const bob = IdentityKeyPair.fromSecrets(b.identity_key_id, hex(b.identity_signing_seed), hex(b.identity_dh_secret));
  const byKind = (kind: string): Json => keys.keys.find((k: Json) => k.kind_label === kind);
  const [spk, lastResort, kemOneTime] = [byKind(SIGNED_PREKEY), byKind("ml-kem-768-last-resort-prekey"), byKind(KEM_ONE_TIME)];

  // Alice's side: bob's identity as published (the generator's binding signature), his list, his bundle.
  const bobIdentity = verifyIdentity(
    { keyId: keys.identity_key_id, signingPublicKey: hex(keys.identity_signing_public), dhPublicKey: hex(keys.identity_dh_public), signature: hex(keys.identity_binding_signature) },
    keys.user_id,
  );
  const bobList = new DeviceList(b.user_id, bobIdentity.keyId, 1, [b.device_id]);
  const bundle: DeviceBundle = {
    userId: keys.user_id,
    deviceId: keys.device_id,
    signedPrekey: { keyId: spk.key_id, publicKey: hex(spk.public_key), signature: hex(spk.signature) },
    kemPrekey: { keyId: kemOneTime.key_id, kind: KEM_ONE_TIME as KemKind, publicKey: hex(kemOneTime.public_key), signature: hex(kemOneTime.signature) },
    // The OPK is not in device_keys (it is unsigned): its public key comes from the PQXDH case's secret.
    oneTimePrekey: { keyId: rc.preamble.opk_id, publicKey: x25519Public(hex(px.responder_opk_secret)), signature: new Uint8Array() },
  };
  const bobDevice = DeviceSecrets.fromJSON({
    format: 1,
    device_id: keys.device_id,
    signed_prekey: { key_id: spk.key_id, secret: spk.secret },
    previous_signed_prekey: null,
    last_resort: { key_id: lastResort.key_id, secret: lastResort.secret },
    previous_last_resort: null,
    one_time: [{ key_id: rc.preamble.opk_id, secret: px.responder_opk_secret }],
    kem_one_time: [{ key_id: kemOneTime.key_id, secret: kemOneTime.secret }],
  });
  const verified = verifyDeviceBundle(bundle, bobIdentity, bobList);

  const hs = initiate(alice, a.user_id, a.device_id, verified, { ephemeralSecret: hex(px.initiator_ephemeral_secret), kemM: hex(px.kem_m) });
  const aliceSession = Session.initiator(
    { localDeviceId: a.device_id, peerUserId: b.user_id, peerDeviceId: b.device_id, peerIdentityKeyId: b.identity_key_id },
    hs.sk,
    hs.ad,
    verified.signedPrekey,
    hs.preamble,
    new ListRatchetKeys(rc.initiator_ratchet_secrets.map(hex)),
  );
  const bobKeys = new ListRatchetKeys(rc.responder_ratchet_secrets.map(hex));

  const sends = rc.steps.filter((s: Json) => s.send !== undefined);
  const [a1, a2, b1] = [sends[0], sends[1], sends[2]];
  const record = (label: string, messageId: string, m: RatchetMessage, ad: Uint8Array): Json => ({
    label,
    message_id: messageId,
    dh: toHex(m.header.dh),
    pn: m.header.pn,
    n: m.header.n,
    has_preamble: m.header.preamble !== null,
    header: toHex(encodeHeader(m.header)),
    aad: toHex(messageAad(ad, messageId, m.header)),
    ciphertext: toHex(m.ciphertext),
  });

  const m1 = aliceSession.encrypt(a1.message_id, hex(a1.plaintext));
  const m2 = aliceSession.encrypt(a2.message_id, hex(a2.plaintext));
  // Bob's side, from the first message's preamble.
  const got = respond(
    bob,
    { userId: b.user_id, deviceId: b.device_id, identity: bob.public() },
    bobDevice,
    { userId: a.user_id, deviceId: a.device_id, identity: alice.public() },
    m1.header.preamble!,
  );
  const bobSession = Session.responder(
    { localDeviceId: b.device_id, peerUserId: a.user_id, peerDeviceId: a.device_id, peerIdentityKeyId: a.identity_key_id },
    got.sk,
    got.ad,
    bobDevice.signedPrekeySecret(m1.header.preamble!.signedPrekeyId),
    m1.header.preamble!,
  );
  const received = [toHex(bobSession.decrypt(a1.message_id, m1, bobKeys)), toHex(bobSession.decrypt(a2.message_id, m2, bobKeys))];
  const m3 = bobSession.encrypt(b1.message_id, hex(b1.plaintext));
  received.push(toHex(aliceSession.decrypt(b1.message_id, m3)));

  return {
    handshake: { sk: toHex(hs.sk), ad: toHex(hs.ad), responder_sk: toHex(got.sk), preamble: preambleToJSON(hs.preamble) },
    messages: [record("a1", a1.message_id, m1, hs.ad), record("a2", a2.message_id, m2, hs.ad), record("b1", b1.message_id, m3, got.ad)],
    received,
  };
}

describe("transcript: device keys → bundle → PQXDH → ratchet, with fixed randomness", () => {
  it("matches the vector file's expectations end to end", () => {
    const transcript = buildTranscript();
    // A JSON document (what a Rust-side check could read).
    expect(JSON.parse(JSON.stringify(transcript))).toEqual(transcript);
    const px = cases(vectors, "pqxdh")[0];
    const rc = cases(vectors, "ratchet")[0];
    expect(transcript.handshake.sk).toBe(px.expected.sk);
    expect(transcript.handshake.responder_sk).toBe(px.expected.sk);
    expect(transcript.handshake.ad).toBe(px.expected.ad);
    expect(rc.sk).toBe(px.expected.sk);
    expect(transcript.handshake.preamble).toEqual({
      sender_identity_key_id: rc.preamble.sender_identity_key_id,
      ephemeral_public: rc.preamble.ephemeral_public,
      signed_prekey_id: rc.preamble.spk_id,
      one_time_prekey_id: rc.preamble.opk_id,
      kem_prekey_id: rc.preamble.kem_prekey_id,
      kem_kind: rc.preamble.kem_kind,
      kem_ciphertext: px.expected.kem_ciphertext,
    });
    const sends = rc.steps.filter((s: Json) => s.send !== undefined);
    expect(transcript.messages).toHaveLength(3);
    for (const [i, message] of transcript.messages.entries()) {
      const step = sends[i];
      expect(message.label).toBe(step.label);
      const { label: _label, message_id: _id, ...fields } = message;
      expect(fields, step.label).toEqual(step.expected);
    }
    expect(transcript.received).toEqual(sends.slice(0, 3).map((s: Json) => s.plaintext));
  });
});
