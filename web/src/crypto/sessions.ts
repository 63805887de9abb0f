/**
 * A device's sessions with other devices (§5.3, §6.5), as the Rust `v2::SessionStore`: which
 * session sends to a peer device (the first), which one a received message belongs to (by the
 * preamble's `EK_A`, else newest first), the responder's handshake on a new preamble (spending
 * one-time keys only once the message authenticated), and bounds on what is remembered.
 */
import { fromHex, toHex, wipe } from "./bytes.js";
import { CryptoError } from "./errors.js";
import type { DeviceSecrets } from "./device.js";
import { kemKindFromCode } from "./device.js";
import type { IdentityKeyPair, IdentityPublicKey } from "./identity.js";
import { initiate, respond, type VerifiedDeviceBundle } from "./pqxdh.js";
import { osRatchetKeys, Session, type RatchetKeySource, type RatchetMessage, type SessionJson } from "./ratchet.js";

/** Most sessions kept per peer device (the newest). */
export const MAX_SESSIONS_PER_DEVICE = 5;
/** Most handshakes (`EK_A` public keys) remembered, to refuse a replayed preamble. */
export const MAX_REMEMBERED_HANDSHAKES = 2000;

export interface PeerDevice {
  userId: string;
  deviceId: string;
}

/** The persisted form, field for field the Rust `SessionStore` serde form. */
export interface SessionStoreJson {
  peers: { peer: { user_id: string; device_id: string }; sessions: SessionJson[] }[];
  handshakes: string[];
}

const peerKey = (peer: PeerDevice): string => JSON.stringify([peer.userId, peer.deviceId]);

export class SessionStore {
  private readonly sessions = new Map<string, { peer: PeerDevice; sessions: Session[] }>();
  private readonly handshakes: string[] = [];

  /** Whether the current session to this peer device can send. */
  canSendTo(peer: PeerDevice): boolean {
    return this.sessions.get(peerKey(peer))?.sessions[0]?.canSend ?? false;
  }

  peers(): PeerDevice[] {
    return [...this.sessions.values()].map((entry) => ({ ...entry.peer }));
  }

  /** PQXDH as initiator with a verified bundle; the new session becomes the one that sends. */
  start(me: IdentityKeyPair, myUserId: string, myDeviceId: string, bundle: VerifiedDeviceBundle, keys: RatchetKeySource = osRatchetKeys): void {
    const handshake = initiate(me, myUserId, myDeviceId, bundle);
    try {
      const session = Session.initiator(
        { localDeviceId: myDeviceId, peerUserId: bundle.userId, peerDeviceId: bundle.deviceId, peerIdentityKeyId: bundle.identity.keyId },
        handshake.sk,
        handshake.ad,
        bundle.signedPrekey,
        handshake.preamble,
        keys,
      );
      this.rememberHandshake(session.baseKey);
      this.insertFirst({ userId: bundle.userId, deviceId: bundle.deviceId }, session);
    } finally {
      wipe(handshake.sk);
    }
  }

  encrypt(peer: PeerDevice, messageId: string, plaintext: Uint8Array): RatchetMessage {
    const session = this.sessions.get(peerKey(peer))?.sessions[0];
    if (!session) throw new CryptoError("NoSession", `no session with device ${peer.deviceId}`);
    return session.encrypt(messageId, plaintext);
  }

  /**
   * Decrypts a message from `senderUserId`'s device named in its header, whose verified identity
   * is `senderIdentity`. On any error nothing changes (a `NoSession` error names the device).
   */
  decrypt(
    me: IdentityKeyPair,
    myUserId: string,
    device: DeviceSecrets,
    senderUserId: string,
    senderIdentity: IdentityPublicKey,
    messageId: string,
    message: RatchetMessage,
    keys: RatchetKeySource = osRatchetKeys,
  ): Uint8Array {
    const header = message.header;
    if (header.recipientDeviceId !== device.deviceId) throw new CryptoError("KeyMismatch", "the message is for another device");
    const peer = { userId: senderUserId, deviceId: header.senderDeviceId };
    const sessions = this.sessions.get(peerKey(peer))?.sessions ?? [];
    const preamble = header.preamble;
    if (preamble) {
      const base = toHex(preamble.ephemeralPublic);
      const index = sessions.findIndex((session) => toHex(session.baseKey) === base);
      if (index >= 0) return this.decryptAt(peer, sessions, index, messageId, message, keys);
      if (this.handshakes.includes(base)) throw new CryptoError("DuplicateMessage", "a handshake that was already used");
      const handshake = respond(
        me,
        { userId: myUserId, deviceId: device.deviceId, identity: me.public() },
        device,
        { userId: senderUserId, deviceId: header.senderDeviceId, identity: senderIdentity },
        preamble,
      );
      let session: Session;
      let plaintext: Uint8Array;
      try {
        session = Session.responder(
          { localDeviceId: device.deviceId, peerUserId: senderUserId, peerDeviceId: header.senderDeviceId, peerIdentityKeyId: senderIdentity.keyId },
          handshake.sk,
          handshake.ad,
          device.signedPrekeySecret(preamble.signedPrekeyId),
          preamble,
        );
        plaintext = session.decrypt(messageId, message, keys);
      } finally {
        wipe(handshake.sk);
      }
      device.spend(preamble.oneTimePrekeyId, kemKindFromCode(preamble.kemKind), preamble.kemPrekeyId);
      this.rememberHandshake(session.baseKey);
      this.insertFirst(peer, session);
      return plaintext;
    }
    if (sessions.length === 0) throw new CryptoError("NoSession", header.senderDeviceId);
    let first: unknown = null;
    for (let index = 0; index < sessions.length; index++) {
      try {
        return this.decryptAt(peer, sessions, index, messageId, message, keys);
      } catch (error) {
        first ??= error;
      }
    }
    throw first ?? new CryptoError("DecryptionFailed", "the message does not open");
  }

  /** Drops every session with a device (it left its user's list). */
  forgetDevice(peer: PeerDevice): void {
    this.sessions.delete(peerKey(peer));
  }

  private decryptAt(peer: PeerDevice, sessions: Session[], index: number, messageId: string, message: RatchetMessage, keys: RatchetKeySource): Uint8Array {
    const session = sessions[index]!;
    const plaintext = session.decrypt(messageId, message, keys);
    if (index > 0) {
      sessions.splice(index, 1);
      sessions.unshift(session);
    }
    this.sessions.set(peerKey(peer), { peer, sessions });
    return plaintext;
  }

  private insertFirst(peer: PeerDevice, session: Session): void {
    const entry = this.sessions.get(peerKey(peer)) ?? { peer: { ...peer }, sessions: [] };
    entry.sessions.unshift(session);
    entry.sessions.length = Math.min(entry.sessions.length, MAX_SESSIONS_PER_DEVICE);
    this.sessions.set(peerKey(peer), entry);
  }

  private rememberHandshake(baseKey: Uint8Array): void {
    this.handshakes.push(toHex(baseKey));
    if (this.handshakes.length > MAX_REMEMBERED_HANDSHAKES) this.handshakes.shift();
  }

  toJSON(): SessionStoreJson {
    return {
      peers: [...this.sessions.values()].map((entry) => ({
        peer: { user_id: entry.peer.userId, device_id: entry.peer.deviceId },
        sessions: entry.sessions.map((session) => session.toJSON()),
      })),
      handshakes: [...this.handshakes],
    };
  }

  static fromJSON(json: SessionStoreJson): SessionStore {
    const store = new SessionStore();
    for (const entry of json.peers) {
      const peer = { userId: entry.peer.user_id, deviceId: entry.peer.device_id };
      store.sessions.set(peerKey(peer), { peer, sessions: entry.sessions.map((s) => Session.fromJSON(s)) });
    }
    for (const key of json.handshakes.slice(-MAX_REMEMBERED_HANDSHAKES)) store.handshakes.push(toHex(fromHex(key, 32, "a handshake key")));
    return store;
  }
}
