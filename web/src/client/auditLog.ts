// Verification of what audit-svc serves, in the browser, as crates/tlog and crates/sdk/src/audit.rs
// do it: C2SP signed-note checkpoints (Ed25519, key hash), RFC 9162 inclusion and consistency
// proofs. Pure functions (no transport), so vitest checks them against trees built in the test.
// A failure throws LogIntegrityError; nothing here trusts the server's word.

import { concat, ctEqual, toHex, utf8 } from "../crypto/bytes";
import { ed25519Verify, sha256 } from "../crypto/primitives";

export class LogIntegrityError extends Error {
  constructor(what: string) {
    super(`AUDIT LOG INTEGRITY FAILURE: ${what}`);
    this.name = "LogIntegrityError";
  }
}

const SIGNATURE_PREFIX = "\u2014 ";
const ALG_ED25519 = 0x01;
const MAX_NOTE_LEN = 1 << 20;
const MAX_SIGNATURES = 100;

function fromBase64(text: string, what: string): Uint8Array {
  // atob accepts some sloppy input; insist on canonical padded standard base64 as Rust's STANDARD.
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)) {
    throw new LogIntegrityError(`${what} is not base64`);
  }
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** RFC 9162 leaf hash: SHA-256(0x00 || leaf). */
export function leafHash(leaf: Uint8Array): Uint8Array {
  return sha256(concat(new Uint8Array([0x00]), leaf));
}

/** RFC 9162 interior node: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(new Uint8Array([0x01]), left, right));
}

/** The C2SP key hash: SHA-256(name || 0x0A || 0x01 || public key)[..4]. */
export function keyHash(name: string, publicKey: Uint8Array): Uint8Array {
  return sha256(concat(utf8(name), new Uint8Array([0x0a, ALG_ED25519]), publicKey)).slice(0, 4);
}

export interface NoteVerifier {
  readonly name: string;
  readonly publicKey: Uint8Array;
  /** `<name>+<hex key hash>+<base64(0x01 || key)>`. */
  readonly text: string;
}

function checkName(name: string): void {
  if (name === "" || /\s|\+/.test(name)) throw new LogIntegrityError("the verifier key name is malformed");
}

/** Parses a verifier key `<name>+<hex key hash>+<base64(0x01 || public key)>` and checks its hash. */
export function parseVerifierKey(text: string): NoteVerifier {
  const trimmed = text.trim();
  const first = trimmed.indexOf("+");
  const second = first < 0 ? -1 : trimmed.indexOf("+", first + 1);
  if (first < 0 || second < 0) throw new LogIntegrityError("the verifier key is not <name>+<key hash>+<key>");
  const name = trimmed.slice(0, first);
  const hashHex = trimmed.slice(first + 1, second);
  const key = fromBase64(trimmed.slice(second + 1), "the verifier key");
  checkName(name);
  if (key.length !== 33 || key[0] !== ALG_ED25519) {
    throw new LogIntegrityError("the verifier key is not an Ed25519 key (algorithm 0x01, 32 bytes)");
  }
  const publicKey = key.slice(1);
  if (hashHex.toLowerCase() !== toHex(keyHash(name, publicKey))) {
    throw new LogIntegrityError("the verifier key's hash does not match its name and key");
  }
  return { name, publicKey, text: trimmed };
}

export interface CheckpointBody {
  readonly origin: string;
  readonly size: bigint;
  readonly root: Uint8Array;
}

function splitNote(note: string): { body: string; signatures: string[] } {
  if (note.length > MAX_NOTE_LEN) throw new LogIntegrityError("the signed note is too large");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new LogIntegrityError("the signed note has no blank line before its signatures");
  const body = note.slice(0, split + 1);
  const rest = note.slice(split + 2);
  if (!rest.endsWith("\n")) throw new LogIntegrityError("the signed note must end with a newline");
  const lines = rest.slice(0, -1);
  if (lines === "") throw new LogIntegrityError("the signed note has no signatures");
  return { body, signatures: lines.split("\n") };
}

export function parseCheckpointBody(body: string): CheckpointBody {
  if (!body.endsWith("\n")) throw new LogIntegrityError("the checkpoint body must end with a newline");
  const lines = body.slice(0, -1).split("\n");
  const [origin, sizeLine, rootLine, ...extensions] = lines;
  if (!origin) throw new LogIntegrityError("the checkpoint's origin line is empty");
  if (sizeLine === undefined || !/^(0|[1-9][0-9]*)$/.test(sizeLine)) {
    throw new LogIntegrityError("the checkpoint's tree size is not a canonical decimal number");
  }
  const size = BigInt(sizeLine);
  if (size >= 1n << 64n) throw new LogIntegrityError("the checkpoint's tree size does not fit 64 bits");
  if (rootLine === undefined) throw new LogIntegrityError("the checkpoint's root hash line is missing");
  const root = fromBase64(rootLine, "the checkpoint's root hash");
  if (root.length !== 32) throw new LogIntegrityError("the checkpoint's root hash is not 32 bytes");
  if (extensions.some((line) => line === "")) throw new LogIntegrityError("checkpoint extension lines must not be empty");
  return { origin, size, root };
}

/** Checks that `note` carries a valid signature by `verifier` (as NoteVerifier::open_note) and parses it. */
export function openCheckpoint(verifier: NoteVerifier, note: string, origin?: string): CheckpointBody {
  const { body, signatures } = splitNote(note);
  const expectedHash = keyHash(verifier.name, verifier.publicKey);
  const message = utf8(body);
  let verified = false;
  for (const line of signatures.slice(0, MAX_SIGNATURES)) {
    if (!line.startsWith(SIGNATURE_PREFIX)) throw new LogIntegrityError("a signature line is not `— <name> <base64>`");
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(" ");
    if (space < 0) throw new LogIntegrityError("a signature line is not `— <name> <base64>`");
    if (rest.slice(0, space) !== verifier.name) continue;
    const blob = fromBase64(rest.slice(space + 1), "a signature");
    if (blob.length !== 68 || !ctEqual(blob.slice(0, 4), expectedHash)) continue;
    try {
      ed25519Verify(verifier.publicKey, message, blob.slice(4), "checkpoint signature");
      verified = true;
      break;
    } catch {
      // Another signature line by the same name may still verify (as the Rust verifier does).
    }
  }
  if (!verified) throw new LogIntegrityError(`the checkpoint has no valid signature by ${verifier.name}`);
  const checkpoint = parseCheckpointBody(body);
  if (origin !== undefined && checkpoint.origin !== origin) {
    throw new LogIntegrityError(`the checkpoint is for log "${checkpoint.origin}", not "${origin}"`);
  }
  return checkpoint;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && ctEqual(a, b);
}

/** RFC 9162 §2.1.3.2: `leaf` sits at `index` in the tree of `size` leaves with root `root`. */
export function verifyInclusion(leaf: Uint8Array, index: bigint, size: bigint, proof: Uint8Array[], root: Uint8Array): void {
  if (index >= size) throw new LogIntegrityError(`leaf index ${index} is outside a tree of ${size}`);
  let f = index;
  let s = size - 1n;
  let r = leaf;
  for (const p of proof) {
    if (s === 0n) throw new LogIntegrityError("the inclusion proof has the wrong length");
    if ((f & 1n) === 1n || f === s) {
      r = nodeHash(p, r);
      if ((f & 1n) === 0n) {
        while (!((f & 1n) === 1n || f === 0n)) {
          f >>= 1n;
          s >>= 1n;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    f >>= 1n;
    s >>= 1n;
  }
  if (s !== 0n) throw new LogIntegrityError("the inclusion proof has the wrong length");
  if (!equal(r, root)) throw new LogIntegrityError("the inclusion proof does not lead to the checkpoint's root");
}

/** RFC 9162 §2.1.4.2: the tree of `second` leaves extends the tree of `first` leaves. */
export function verifyConsistency(
  first: bigint,
  second: bigint,
  proof: Uint8Array[],
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
): void {
  if (first > second) throw new LogIntegrityError(`the log shrank: ${second} events now, ${first} before`);
  if (first === second) {
    if (proof.length !== 0) throw new LogIntegrityError("the consistency proof has the wrong length");
    if (!equal(firstRoot, secondRoot)) throw new LogIntegrityError("same tree size, different root hashes");
    return;
  }
  if (first === 0n) {
    if (proof.length !== 0) throw new LogIntegrityError("the consistency proof has the wrong length");
    if (!equal(firstRoot, sha256(new Uint8Array()))) throw new LogIntegrityError("the empty tree's root is wrong");
    return;
  }
  const path: Uint8Array[] = [];
  if ((first & (first - 1n)) === 0n) path.push(firstRoot);
  path.push(...proof);
  let f = first - 1n;
  let s = second - 1n;
  if ((f & 1n) === 1n) {
    while ((f & 1n) !== 0n) {
      f >>= 1n;
      s >>= 1n;
    }
  }
  const [seed, ...rest] = path;
  if (!seed) throw new LogIntegrityError("the consistency proof has the wrong length");
  let fr = seed;
  let sr = seed;
  for (const c of rest) {
    if (s === 0n) throw new LogIntegrityError("the consistency proof has the wrong length");
    if ((f & 1n) === 1n || f === s) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if ((f & 1n) === 0n) {
        while (!((f & 1n) === 1n || f === 0n)) {
          f >>= 1n;
          s >>= 1n;
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    f >>= 1n;
    s >>= 1n;
  }
  if (s !== 0n) throw new LogIntegrityError("the consistency proof has the wrong length");
  if (!equal(fr, firstRoot) || !equal(sr, secondRoot)) {
    throw new LogIntegrityError("the newer checkpoint does not extend the trusted one");
  }
}

/** A served checkpoint: its signature checked, and its fields checked against what was signed. */
export function verifyServedCheckpoint(
  verifier: NoteVerifier,
  served: { origin: string; treeSize: bigint; rootHash: Uint8Array; signedNote: string },
): CheckpointBody {
  const signed = openCheckpoint(verifier, served.signedNote, served.origin);
  if (signed.size !== served.treeSize || !equal(signed.root, served.rootHash)) {
    throw new LogIntegrityError("the checkpoint fields differ from the signed note");
  }
  return signed;
}
