// The browser half of the web benchmark (bench/run.sh opens this page in Chromium through vite's
// dev server): the cryptography of one protocol v2 message, as the app runs it, timed in the
// browser. Results go to `window.benchResults` for the runner to print beside the Rust figures.

import { fromHex, newId, toHex } from "../src/crypto/bytes";
import { encodeContent } from "../src/crypto/content";
import { DeviceSecrets, KEM_ONE_TIME } from "../src/crypto/device";
import { DeviceList } from "../src/crypto/deviceList";
import { Ciphertext, decapsulate, UserKey } from "../src/crypto/fame";
import { IdentityKeyPair, verifyIdentity } from "../src/crypto/identity";
import { initiate, respond, verifyDeviceBundle } from "../src/crypto/pqxdh";
import { randomBytes } from "../src/crypto/primitives";
import { Session } from "../src/crypto/ratchet";

interface Figure {
  readonly name: string;
  readonly iterations: number;
  readonly msPerOp: number;
}

/** What `crates/abe/examples/fame_timing.rs` prints (hex bytes), and its run count. */
interface FameInput {
  readonly runs: number;
  readonly user_key: string;
  readonly ciphertext: string;
  readonly data_key: string;
}

declare global {
  interface Window {
    benchResults?: { figures: Figure[] } | { error: string };
    benchFame?: (input: FameInput) => Figure | { error: string };
  }
}

const id = (): string => newId(randomBytes);

function time(name: string, iterations: number, op: (i: number) => void): Figure {
  for (let i = 0; i < Math.min(20, iterations); i++) op(i); // warm-up
  const start = performance.now();
  for (let i = 0; i < iterations; i++) op(i);
  return { name, iterations, msPerOp: (performance.now() - start) / iterations };
}

/** Alice's and Bob's devices with a PQXDH session (Bob's after Alice's first message). */
function sessions(): { alice: Session; bob: Session; handshakeMs: number } {
  const [aliceUser, bobUser] = [id(), id()];
  const alice = IdentityKeyPair.generate(id());
  const bob = IdentityKeyPair.generate(id());
  const aliceDevice = DeviceSecrets.generate();
  const bobDevice = DeviceSecrets.generate();
  const { x25519, kem } = bobDevice.newOneTimePrekeys(bob, bobUser, 1);
  const list = new DeviceList(bobUser, bob.keyId, 1, [bobDevice.deviceId]);
  const signature = list.sign(bob);
  const start = performance.now();
  const bobIdentity = verifyIdentity(bob.publish(bobUser), bobUser);
  const verifiedList = DeviceList.verify(bobUser, bobIdentity, 1, [bobDevice.deviceId], signature);
  const verified = verifyDeviceBundle(
    {
      userId: bobUser,
      deviceId: bobDevice.deviceId,
      signedPrekey: bobDevice.signedPrekeyPublished(bob, bobUser),
      kemPrekey: { ...kem[0]!, kind: KEM_ONE_TIME },
      oneTimePrekey: x25519[0]!,
    },
    bobIdentity,
    verifiedList,
  );
  const hs = initiate(alice, aliceUser, aliceDevice.deviceId, verified);
  const aliceSession = Session.initiator(
    { localDeviceId: aliceDevice.deviceId, peerUserId: bobUser, peerDeviceId: bobDevice.deviceId, peerIdentityKeyId: bob.keyId },
    hs.sk,
    hs.ad,
    verified.signedPrekey,
    hs.preamble,
  );
  const firstId = id();
  const first = aliceSession.encrypt(firstId, encodeContent({ kind: 1, body: new Uint8Array(16) }));
  const preamble = first.header.preamble!;
  const got = respond(
    bob,
    { userId: bobUser, deviceId: bobDevice.deviceId, identity: bob.public() },
    bobDevice,
    { userId: aliceUser, deviceId: aliceDevice.deviceId, identity: alice.public() },
    preamble,
  );
  const bobSession = Session.responder(
    { localDeviceId: bobDevice.deviceId, peerUserId: aliceUser, peerDeviceId: aliceDevice.deviceId, peerIdentityKeyId: alice.keyId },
    got.sk,
    got.ad,
    bobDevice.signedPrekeySecret(preamble.signedPrekeyId),
    preamble,
  );
  bobSession.decrypt(firstId, first);
  return { alice: aliceSession, bob: bobSession, handshakeMs: performance.now() - start };
}

function run(): Figure[] {
  const body = encodeContent({ kind: 1, body: randomBytes(1024) });
  const handshakes = Array.from({ length: 5 }, () => sessions().handshakeMs);
  const { alice, bob } = sessions();
  const figures: Figure[] = [
    {
      name: "PQXDH handshake with its first message (verify bundle, initiate, respond, open)",
      iterations: handshakes.length,
      msPerOp: handshakes.reduce((a, b) => a + b, 0) / handshakes.length,
    },
  ];
  figures.push(
    time("ratchet message, 1 KiB, encrypted and decrypted (same chain)", 500, () => {
      const messageId = id();
      bob.decrypt(messageId, alice.encrypt(messageId, body));
    }),
  );
  figures.push(
    time("ratchet message, 1 KiB, encrypted and decrypted (direction changes: a DH ratchet step each)", 200, (i) => {
      const [from, to] = i % 2 === 0 ? [bob, alice] : [alice, bob];
      const messageId = id();
      to.decrypt(messageId, from.encrypt(messageId, body));
    }),
  );
  return figures;
}

/**
 * FAME decapsulation of the Rust example's ciphertext with its 10-attribute key, the median of as
 * many runs as Rust made (parsing excluded on both sides); refuses a data key other than Rust's.
 */
window.benchFame = (input) => {
  try {
    const key = UserKey.fromBytes(fromHex(input.user_key));
    const ciphertext = Ciphertext.fromBytes(fromHex(input.ciphertext));
    if (toHex(decapsulate(key, ciphertext)) !== input.data_key) return { error: "Chromium opened another data key than Rust" };
    const times: number[] = [];
    for (let i = 0; i < input.runs; i++) {
      const start = performance.now();
      decapsulate(key, ciphertext);
      times.push(performance.now() - start);
    }
    times.sort((a, b) => a - b);
    return { name: "FAME decryption, key of 10 attributes, AND of all ten (median)", iterations: input.runs, msPerOp: times[Math.floor(times.length / 2)]! };
  } catch (error) {
    return { error: String(error) };
  }
};

try {
  window.benchResults = { figures: run() };
  document.getElementById("status")!.textContent = "done";
} catch (error) {
  window.benchResults = { error: String(error) };
  document.getElementById("status")!.textContent = `failed: ${String(error)}`;
}
