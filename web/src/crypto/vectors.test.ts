/**
 * Protocol v2 known-answer tests: `docs/vectors/protocol-v2.json` (made by the independent Python
 * implementation in `tools/vectorgen/`), every group checked as
 * `crates/crypto/tests/protocol_v2_vectors.rs` checks it, through this folder's public API.
 */
import { describe, expect, it } from "vitest";

import { cases, hex, protocolVectors, type Json } from "../../test/support.js";
import { type ArchiveContext, HistoryKeyRing, openArchive, sealArchive } from "./archive.js";
import { Encoder, toHex } from "./bytes.js";
import { decodeContent, encodeContent } from "./content.js";
import {
  DeviceSecrets,
  type DeviceKeyKind,
  deviceKeyMessage,
  KEM_LAST_RESORT,
  KEM_ONE_TIME,
  kemKindFromCode,
  SIGNED_PREKEY,
  signDeviceKey,
  verifyDeviceKey,
} from "./device.js";
import { DeviceList } from "./deviceList.js";
import { CryptoError } from "./errors.js";
import { identityBindingMessage, IdentityKeyPair } from "./identity.js";
import { encodeProvisioning, LinkRequest, type PendingLink, linkMatches, sealProvisioning } from "./link.js";
import { type DeviceBundle, initiate, type Preamble, respond, verifyDeviceBundle } from "./pqxdh.js";
import { kemDecapsulate, kemEncapsulate, kemPublic, x25519Public } from "./primitives.js";
import { encodeHeader, ListRatchetKeys, messageAad, type RatchetMessage, Session } from "./ratchet.js";

const vectors = protocolVectors();

function identity(c: Json): IdentityKeyPair {
  return IdentityKeyPair.fromSecrets(c.identity_key_id, hex(c.identity_signing_seed), hex(c.identity_dh_secret));
}

function errorOf(run: () => unknown): CryptoError {
  try {
    run();
  } catch (error) {
    if (error instanceof CryptoError) return error;
    throw error;
  }
  throw new Error("expected a CryptoError, but it succeeded");
}

describe("protocol-v2.json", () => {
  it("has the groups the format describes", () => {
    expect(vectors.protocol).toBe("caremesh-v2");
    expect(Object.keys(vectors).sort()).toEqual(
      ["archive", "content", "device_keys", "device_lists", "generator", "ml_kem_768", "pqxdh", "protocol", "provisioning", "ratchet"].sort(),
    );
  });

  it("ml_kem_768: keys, encapsulation, decapsulation and implicit rejection", () => {
    for (const c of cases(vectors, "ml_kem_768")) {
      const publicKey = kemPublic(hex(c.seed));
      expect(toHex(publicKey), `${c.name}: encapsulation key`).toBe(c.encapsulation_key);
      const { ciphertext, sharedSecret } = kemEncapsulate(publicKey, hex(c.m));
      expect(toHex(ciphertext), `${c.name}: ciphertext`).toBe(c.ciphertext);
      expect(toHex(sharedSecret), `${c.name}: shared secret`).toBe(c.shared_secret);
      expect(toHex(kemDecapsulate(hex(c.seed), ciphertext)), `${c.name}: decapsulation`).toBe(c.shared_secret);
      const rejected = kemDecapsulate(hex(c.seed), hex(c.tampered_ciphertext));
      expect(toHex(rejected), `${c.name}: implicit rejection`).toBe(c.tampered_shared_secret);
      expect(toHex(rejected)).not.toBe(c.shared_secret);
    }
  });

  it("device_keys: identity binding, the signed bytes and signatures of all three kinds", () => {
    for (const c of cases(vectors, "device_keys")) {
      const me = identity(c);
      expect(toHex(me.signingPublicKey), c.name).toBe(c.identity_signing_public);
      expect(toHex(me.dhPublicKey), c.name).toBe(c.identity_dh_public);
      expect(toHex(identityBindingMessage(c.user_id, me)), `${c.name}: binding message`).toBe(c.identity_binding_message);
      expect(toHex(me.publish(c.user_id).signature), `${c.name}: binding signature`).toBe(c.identity_binding_signature);
      const kinds: DeviceKeyKind[] = [];
      for (const key of c.keys) {
        const kind = key.kind_label as DeviceKeyKind;
        expect([SIGNED_PREKEY, KEM_LAST_RESORT, KEM_ONE_TIME]).toContain(kind);
        kinds.push(kind);
        const publicKey = kind === SIGNED_PREKEY ? x25519Public(hex(key.secret)) : kemPublic(hex(key.secret));
        expect(toHex(publicKey), `${c.name}: ${kind} public key`).toBe(key.public_key);
        const message = deviceKeyMessage(kind, c.user_id, me.keyId, c.device_id, key.key_id, publicKey);
        expect(toHex(message), `${c.name}: ${kind} signed bytes`).toBe(key.message);
        const signature = signDeviceKey(me, kind, c.user_id, c.device_id, key.key_id, publicKey);
        expect(toHex(signature), `${c.name}: ${kind} signature`).toBe(key.signature);
        verifyDeviceKey(me.public(), kind, c.user_id, c.device_id, key.key_id, publicKey, signature);
        if (kind !== SIGNED_PREKEY) {
          // The same signature under the other ML-KEM kind label must not verify.
          const other = kind === KEM_ONE_TIME ? KEM_LAST_RESORT : KEM_ONE_TIME;
          const refused = errorOf(() => verifyDeviceKey(me.public(), other, c.user_id, c.device_id, key.key_id, publicKey, signature));
          expect(refused.code, `${c.name}: kind confusion`).toBe("BadSignature");
        }
      }
      expect(new Set(kinds).size, `${c.name}: all three kinds`).toBe(3);
    }
  });

  it("device_lists: encodings, signatures, edits refused, and the refusal cases", () => {
    let valid = 0;
    let refused = 0;
    for (const c of cases(vectors, "device_lists")) {
      const build = (): DeviceList => new DeviceList(c.user_id, c.identity_key_id, c.version, c.device_ids);
      if (c.error !== undefined) {
        expect(errorOf(build).code, `${c.name} (${c.error})`).toBe("InvalidDeviceList");
        refused++;
        continue;
      }
      const list = build();
      expect(toHex(list.encoding()), `${c.name}: encoding`).toBe(c.encoding);
      const signer = IdentityKeyPair.fromSecrets(c.identity_key_id, hex(c.identity_signing_seed), new Uint8Array(32).fill(7));
      const signature = list.sign(signer);
      expect(toHex(signature), `${c.name}: signature`).toBe(c.signature);
      const verified = DeviceList.verify(c.user_id, signer.public(), c.version, c.device_ids, signature);
      expect(verified.equals(list)).toBe(true);
      // A server that edits the list (bumps the version, drops a device) breaks the signature.
      expect(errorOf(() => DeviceList.verify(c.user_id, signer.public(), c.version + 1, c.device_ids, signature)).code).toBe("BadSignature");
      if (c.device_ids.length > 1) {
        expect(errorOf(() => DeviceList.verify(c.user_id, signer.public(), c.version, c.device_ids.slice(1), signature)).code).toBe("BadSignature");
      }
      valid++;
    }
    expect(valid).toBeGreaterThanOrEqual(2);
    expect(refused).toBe(3);
  });

  it("pqxdh: both sides give the vector's SK, AD and CT; downgrades and unlisted devices are refused", () => {
    for (const c of cases(vectors, "pqxdh")) {
      const [a, b] = [c.initiator, c.responder];
      const [alice, bob] = [identity(a), identity(b)];
      const kemSeed = hex(c.responder_kem_seed);
      const kind = kemKindFromCode(c.responder_kem_kind);
      const ids = {
        spk: "01941f29-7c00-7000-8000-000000000001",
        opk: "01941f29-7c00-7000-8000-000000000002",
        kem: "01941f29-7c00-7000-8000-000000000003",
        otherKem: "01941f29-7c00-7000-8000-000000000004",
      };
      // The responder's device secrets with exactly the vector's prekeys, through the persisted form.
      const kemKey = { key_id: ids.kem, secret: c.responder_kem_seed };
      const otherKem = { key_id: ids.otherKem, secret: "09".repeat(64) };
      const device = DeviceSecrets.fromJSON({
        format: 1,
        device_id: b.device_id,
        signed_prekey: { key_id: ids.spk, secret: c.responder_spk_secret },
        previous_signed_prekey: null,
        last_resort: kind === KEM_LAST_RESORT ? kemKey : otherKem,
        previous_last_resort: null,
        one_time: c.responder_opk_secret ? [{ key_id: ids.opk, secret: c.responder_opk_secret }] : [],
        kem_one_time: kind === KEM_ONE_TIME ? [kemKey] : [],
      });
      const spkPublic = x25519Public(hex(c.responder_spk_secret));
      const kemPublicKey = kemPublic(kemSeed);
      const bundle: DeviceBundle = {
        userId: b.user_id,
        deviceId: b.device_id,
        signedPrekey: { keyId: ids.spk, publicKey: spkPublic, signature: signDeviceKey(bob, SIGNED_PREKEY, b.user_id, b.device_id, ids.spk, spkPublic) },
        kemPrekey: { keyId: ids.kem, kind, publicKey: kemPublicKey, signature: signDeviceKey(bob, kind, b.user_id, b.device_id, ids.kem, kemPublicKey) },
        oneTimePrekey: c.responder_opk_secret
          ? { keyId: ids.opk, publicKey: x25519Public(hex(c.responder_opk_secret)), signature: new Uint8Array() }
          : null,
      };
      const list = new DeviceList(b.user_id, bob.keyId, 1, [b.device_id]);
      const verified = verifyDeviceBundle(bundle, bob.public(), list);

      const e = c.expected;
      const sent = initiate(alice, a.user_id, a.device_id, verified, {
        ephemeralSecret: hex(c.initiator_ephemeral_secret),
        kemM: hex(c.kem_m),
      });
      expect(toHex(sent.sk), `${c.name}: SK`).toBe(e.sk);
      expect(toHex(sent.ad), `${c.name}: AD`).toBe(e.ad);
      expect(toHex(sent.preamble.kemCiphertext), `${c.name}: CT`).toBe(e.kem_ciphertext);
      expect(sent.preamble.oneTimePrekeyId === "", `${c.name}: OPK named`).toBe(c.responder_opk_secret === null);
      expect(e.dh4 === null).toBe(c.responder_opk_secret === null);
      expect(e.dh1).toMatch(/^[0-9a-f]{64}$/);

      const received = respond(
        bob,
        { userId: b.user_id, deviceId: b.device_id, identity: bob.public() },
        device,
        { userId: a.user_id, deviceId: a.device_id, identity: alice.public() },
        sent.preamble,
      );
      expect(toHex(received.sk), `${c.name}: responder SK`).toBe(e.sk);
      expect(toHex(received.ad), `${c.name}: responder AD`).toBe(e.ad);

      // Downgrade: without the ML-KEM prekey, or with another key under its signature: refused.
      expect(errorOf(() => verifyDeviceBundle({ ...bundle, kemPrekey: null }, bob.public(), list)).code).toBe("MissingKemPrekey");
      const swapped = { ...bundle, kemPrekey: { ...bundle.kemPrekey!, publicKey: kemPublic(new Uint8Array(64).fill(3)) } };
      expect(errorOf(() => verifyDeviceBundle(swapped, bob.public(), list)).code).toBe("BadSignature");
      // A device the signed list does not name.
      const otherList = new DeviceList(b.user_id, bob.keyId, 2, ["01941f29-7c00-7000-8000-0000000000ff"]);
      expect(errorOf(() => verifyDeviceBundle(bundle, bob.public(), otherList)).code).toBe("UnknownDevice");
    }
  });

  it("ratchet: every send's header, AAD and ciphertext; every receive, replay and tampering as the steps say", () => {
    for (const c of cases(vectors, "ratchet")) {
      const p = c.preamble;
      const preamble: Preamble = {
        senderIdentityKeyId: p.sender_identity_key_id,
        ephemeralPublic: hex(p.ephemeral_public),
        signedPrekeyId: p.spk_id,
        oneTimePrekeyId: p.opk_id,
        kemPrekeyId: p.kem_prekey_id,
        kemKind: p.kem_kind,
        kemCiphertext: hex(p.kem_ciphertext),
      };
      const [sk, ad, spk] = [hex(c.sk), hex(c.ad), hex(c.responder_spk_secret)];
      const peer = (local: string, remote: string) => ({ localDeviceId: local, peerUserId: "peer", peerDeviceId: remote, peerIdentityKeyId: "unused" });
      const keysA = new ListRatchetKeys(c.initiator_ratchet_secrets.map(hex));
      const keysB = new ListRatchetKeys(c.responder_ratchet_secrets.map(hex));
      const alice = Session.initiator(peer(c.initiator_device_id, c.responder_device_id), sk, ad, x25519Public(spk), preamble, keysA);
      const bob = Session.responder(peer(c.responder_device_id, c.initiator_device_id), sk, ad, spk, preamble);
      const sent = new Map<string, { messageId: string; message: RatchetMessage; plaintext: string }>();
      let [sends, receives, refusals] = [0, 0, 0];
      for (const step of c.steps) {
        const where = `${c.name} ${step.label}`;
        if (step.send !== undefined) {
          const session = step.send === "A" ? alice : bob;
          const message = session.encrypt(step.message_id, hex(step.plaintext));
          const e = step.expected;
          expect(toHex(message.header.dh), `${where}: dh`).toBe(e.dh);
          expect(message.header.pn, `${where}: pn`).toBe(e.pn);
          expect(message.header.n, `${where}: n`).toBe(e.n);
          expect(message.header.preamble !== null, `${where}: has_preamble`).toBe(e.has_preamble);
          expect(toHex(encodeHeader(message.header)), `${where}: header`).toBe(e.header);
          expect(toHex(messageAad(ad, step.message_id, message.header)), `${where}: aad`).toBe(e.aad);
          expect(toHex(message.ciphertext), `${where}: ciphertext`).toBe(e.ciphertext);
          sent.set(step.label, { messageId: step.message_id, message, plaintext: step.plaintext });
          sends++;
          continue;
        }
        const [session, keys] = step.receive === "A" ? [alice, keysA] : [bob, keysB];
        const original = sent.get(step.label)!;
        let messageId = original.messageId;
        let message: RatchetMessage = { header: { ...original.message.header }, ciphertext: original.message.ciphertext };
        if (step.tamper) {
          const value = step.tamper.value;
          switch (step.tamper.field) {
            case "ciphertext":
              message = { ...message, ciphertext: hex(value) };
              break;
            case "header_dh":
              message = { ...message, header: { ...message.header, dh: hex(value) } };
              break;
            case "header_n":
              message = { ...message, header: { ...message.header, n: value } };
              break;
            case "message_id":
              messageId = value;
              break;
            default:
              throw new Error(`unknown tamper field ${step.tamper.field}`);
          }
        }
        if (step.error === undefined) {
          expect(toHex(session.decrypt(messageId, message, keys)), `${where}: receive`).toBe(original.plaintext);
          receives++;
        } else {
          const before = JSON.stringify(session.toJSON());
          const position = keys.position;
          const error = errorOf(() => session.decrypt(messageId, message, keys));
          expect(error.code, `${where}: ${error.message}`).toBe(step.error);
          // Unchanged, including the position in the ratchet secret list (no manual reset here).
          expect(JSON.stringify(session.toJSON()), `${where}: state changed`).toBe(before);
          expect(keys.position, `${where}: ratchet key drawn`).toBe(position);
          refusals++;
        }
      }
      expect(sends, c.name).toBeGreaterThanOrEqual(4);
      expect(receives, c.name).toBeGreaterThanOrEqual(4);
      if (c.name.includes("replay")) expect(refusals, `${c.name}: refusals checked`).toBeGreaterThanOrEqual(4);
    }
  });

  it("content: decode then encode gives the vector's bytes", () => {
    const kinds = new Set<number>();
    for (const c of cases(vectors, "content")) {
      const content = decodeContent(hex(c.encoding));
      expect(content.kind, c.name).toBe(c.kind);
      kinds.add(content.kind);
      expect(toHex(encodeContent(content)), c.name).toBe(c.encoding);
      if (content.kind === 1) expect(toHex(content.body), c.name).toBe(c.body);
      if (content.kind === 2) expect(toHex(new Encoder().field(content.historyKeyId).field(content.key).finish()), c.name).toBe(c.body);
      if (content.kind === 4) {
        expect(new TextDecoder().decode(content.caption), c.name).toBe("Photo of the rash, taken this morning.");
        expect(content.attachment.fileLen, c.name).toBe(1_234_567n);
        expect(content.attachment.mediaType, c.name).toBe("image/jpeg");
        expect(content.attachment.fileName, c.name).toBe("rash-2026-12-03.jpg");
      }
    }
    expect([...kinds].sort()).toEqual([1, 2, 3, 4]);
  });

  it("archive: archive key, AAD and ciphertext; opening; a copy moved to another owner is refused", () => {
    for (const c of cases(vectors, "archive")) {
      const key = { historyKeyId: c.history_key_id, key: hex(c.history_key) };
      const context: ArchiveContext = {
        ownerUserId: c.owner_user_id,
        messageId: c.message_id,
        senderUserId: c.sender_user_id,
        senderDeviceId: c.sender_device_id,
        recipientUserId: c.recipient_user_id,
      };
      const content = decodeContent(hex(c.plaintext));
      const copy = sealArchive(key, context, content, hex(c.nonce));
      expect(toHex(copy.ciphertext), `${c.name}: ciphertext`).toBe(c.ciphertext);
      const ring = new HistoryKeyRing([key]);
      expect(toHex(encodeContent(openArchive(copy, ring, context))), `${c.name}: open`).toBe(c.plaintext);
      const moved = { ...context, ownerUserId: context.recipientUserId };
      if (moved.ownerUserId !== context.ownerUserId) {
        expect(errorOf(() => openArchive(copy, ring, moved)).code, `${c.name}: moved`).toBe("DecryptionFailed");
      }
    }
  });

  it("archive: the vector's archive_key and aad", async () => {
    const { archiveAad, archiveKey } = await import("./archive.js");
    for (const c of cases(vectors, "archive")) {
      const key = { historyKeyId: c.history_key_id, key: hex(c.history_key) };
      expect(toHex(archiveKey(key, c.message_id)), c.name).toBe(c.archive_key);
      const context = {
        ownerUserId: c.owner_user_id,
        messageId: c.message_id,
        senderUserId: c.sender_user_id,
        senderDeviceId: c.sender_device_id,
        recipientUserId: c.recipient_user_id,
      };
      expect(toHex(archiveAad(context, c.history_key_id)), c.name).toBe(c.aad);
    }
  });

  it("provisioning: code, commitment, plaintext, sealed message, opening; wrong codes and substituted keys refused", () => {
    for (const c of cases(vectors, "provisioning")) {
      const request = LinkRequest.with(c.user_id, c.device_id, hex(c.new_device_secret), hex(c.link_secret));
      expect(request.code(), `${c.name}: code`).toBe(c.code);
      expect(toHex(request.ephemeralPublic), `${c.name}: E`).toBe(c.new_device_public);
      expect(toHex(request.commitment()), `${c.name}: commitment`).toBe(c.commitment);
      const history = new HistoryKeyRing(c.history_keys.map((k: Json) => ({ historyKeyId: k.history_key_id, key: hex(k.key) })));
      const provisioning = { identity: identity(c), history, approverDeviceId: c.approver_device_id };
      expect(toHex(encodeProvisioning(provisioning)), `${c.name}: plaintext`).toBe(c.plaintext);

      const pending: PendingLink = { userId: c.user_id, deviceId: c.device_id, ephemeralPublic: request.ephemeralPublic, commitment: request.commitment() };
      const sealed = sealProvisioning(pending, c.code, provisioning, hex(c.approver_secret));
      expect(toHex(sealed.approverPublic), `${c.name}: E2`).toBe(c.approver_public);
      expect(toHex(sealed.sealed), `${c.name}: sealed`).toBe(c.sealed);

      const opened = request.open(sealed);
      expect(toHex(opened.identity.signingPublicKey)).toBe(toHex(provisioning.identity.signingPublicKey));
      expect(toHex(opened.identity.dhPublicKey)).toBe(toHex(provisioning.identity.dhPublicKey));
      expect(opened.identity.keyId).toBe(c.identity_key_id);
      expect(opened.history.toJSON(), `${c.name}: history keys`).toEqual(history.toJSON());
      expect(opened.approverDeviceId).toBe(c.approver_device_id);

      // Typed in lowercase without hyphens, the code still matches; a wrong code does not.
      expect(linkMatches(pending, c.code.replaceAll("-", "").toLowerCase())).toBe(true);
      const wrong = (c.code.startsWith("0") ? "1" : "0") + c.code.slice(1);
      expect(linkMatches(pending, wrong), `${c.name}: wrong code`).toBe(false);
      expect(errorOf(() => sealProvisioning(pending, wrong, provisioning, new Uint8Array(32).fill(1))).code).toBe("LinkCodeMismatch");
      // A server that substitutes the new device's key cannot make the code match.
      const substituted = { ...pending, ephemeralPublic: x25519Public(new Uint8Array(32).fill(5)) };
      expect(linkMatches(substituted, c.code), `${c.name}: substituted key`).toBe(false);
      // A forged sealed message (one byte flipped) does not open.
      const forged = { ...sealed, sealed: Uint8Array.from(sealed.sealed, (x, i) => (i === 0 ? x ^ 1 : x)) };
      expect(errorOf(() => request.open(forged)).code).toBe("DecryptionFailed");
    }
  });
});
