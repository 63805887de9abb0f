// FAME CP-ABE (Agrawal-Chase, CCS 2017) on BLS12-381 as caremesh-abe (crates/abe) uses it: a KEM
// whose data key is HKDF-SHA256 of the G_T mask bound to the serialized ciphertext. Same byte
// layouts (version 1), same RFC 9380 hash to G1 and domain separation tag, same policy language;
// checked against docs/vectors/fame-v1.json. Every decoded point is checked: canonical encoding,
// on the curve, in the prime-order subgroup, not the identity.
//
// Decryption is one product of six pairings (noble's pairingBatch: six Miller loops, one final
// exponentiation). Encryption needs hashing to G1, scalar multiplications and T1^s1 T2^s2.
import { bls12_381 } from "@noble/curves/bls12-381.js";
import { bytesToNumberLE, numberToBytesLE } from "@noble/curves/utils.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { concat, ctEqual, utf8, wipe } from "./bytes.js";
import { Policy, PolicyError, attributeProblem } from "./famePolicy.js";
import { randomBytes } from "./primitives.js";

export { Policy, PolicyError };

export const FORMAT_VERSION = 1;
const TYPE_PUBLIC_PARAMS = 0x01;
const TYPE_USER_KEY = 0x03;
const TYPE_CIPHERTEXT = 0x04;
const G1_LEN = 48;
const G2_LEN = 96;
const GT_LEN = 288;
const FP_LEN = 48;
export const MAX_KEY_ATTRIBUTES = 256;

/** RFC 9380 suite BLS12381G1_XMD:SHA-256_SSWU_RO_ with caremesh's tag (crates/abe/src/curve.rs). */
export const HASH_TO_G1_DST = "CAREMESH-ABE-V1_BLS12381G1_XMD:SHA-256_SSWU_RO_";
const KDF_SALT = utf8("caremesh-abe-v1/kem");
const KDF_INFO = utf8("caremesh-abe-v1/data-key");

const G1 = bls12_381.G1.Point;
const G2 = bls12_381.G2.Point;
type G1Point = InstanceType<typeof G1>;
type G2Point = InstanceType<typeof G2>;
const { Fp, Fp2, Fp6, Fp12, Fr } = bls12_381.fields;
type Fp12Value = ReturnType<typeof Fp12.mul>;
type Fp6Value = Fp12Value["c0"];

/** The reasons caremesh-abe's `AbeError` names. */
export type FameErrorCode = "Malformed" | "PolicyNotSatisfied" | "DecryptionFailed" | "InvalidAttribute" | "InvalidPolicy";

export class FameError extends Error {
  constructor(
    readonly code: FameErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "FameError";
  }
}

function malformed(object: string, reason: string): FameError {
  return new FameError("Malformed", `the ${object} is malformed: ${reason}`);
}

/** A bounds-checked reader of the big-endian layouts of crates/abe/src/encoding.rs. */
class ByteReader {
  private pos = 0;

  constructor(
    private readonly buf: Uint8Array,
    private readonly object: string,
    objectType: number,
  ) {
    const version = this.u8();
    if (version !== FORMAT_VERSION) throw malformed(object, `unsupported format version ${version}`);
    const found = this.u8();
    if (found !== objectType) throw malformed(object, `wrong object type ${found}`);
  }

  bad(reason: string): FameError {
    return malformed(this.object, reason);
  }

  take(n: number): Uint8Array {
    if (n > this.buf.length - this.pos) throw this.bad("truncated");
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  u8(): number {
    return this.take(1)[0]!;
  }

  u16(): number {
    const b = this.take(2);
    return (b[0]! << 8) | b[1]!;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  g1(): G1Point {
    return decodeG1(this.take(G1_LEN), this.object);
  }

  g2(): G2Point {
    return decodeG2(this.take(G2_LEN), this.object);
  }

  finish(): void {
    if (this.pos !== this.buf.length) throw this.bad("trailing bytes");
  }
}

/** A compressed G1 point: canonical (re-encodes to the same bytes), on the curve, in the subgroup, not the identity. */
export function decodeG1(bytes: Uint8Array, object = "G1 point"): G1Point {
  let point: G1Point;
  try {
    point = G1.fromBytes(bytes);
    // On the curve and in the prime-order subgroup (noble's assertValidity runs isTorsionFree).
    point.assertValidity();
  } catch {
    throw malformed(object, "a G1 element is not a point of the prime-order subgroup");
  }
  if (point.is0()) throw malformed(object, "a G1 element is the identity");
  if (!ctEqual(point.toBytes(true), bytes)) throw malformed(object, "a G1 element is not canonically encoded");
  return point;
}

/** A compressed G2 point, checked as [`decodeG1`] does. */
export function decodeG2(bytes: Uint8Array, object = "G2 point"): G2Point {
  let point: G2Point;
  try {
    point = G2.fromBytes(bytes);
    point.assertValidity();
  } catch {
    throw malformed(object, "a G2 element is not a point of the prime-order subgroup");
  }
  if (point.is0()) throw malformed(object, "a G2 element is the identity");
  if (!ctEqual(point.toBytes(true), bytes)) throw malformed(object, "a G2 element is not canonically encoded");
  return point;
}

// --- G_T encodings -------------------------------------------------------------------------

function fp12Coordinates(x: Fp12Value): bigint[] {
  const out: bigint[] = [];
  for (const half of [x.c0, x.c1]) for (const f2 of [half.c0, half.c1, half.c2]) out.push(f2.c0, f2.c1);
  return out;
}

/** The canonical uncompressed encoding (crates/abe/src/kem.rs): 12 Fp coordinates, 48-byte little-endian each. */
export function fp12ToBytes(x: Fp12Value): Uint8Array {
  return concat(...fp12Coordinates(x).map((c) => numberToBytesLE(c, FP_LEN)));
}

function readFpLE(bytes: Uint8Array, object: string): bigint {
  const value = bytesToNumberLE(bytes);
  if (value >= Fp.ORDER) throw malformed(object, "a field element is not below the modulus");
  return value;
}

function fp6FromBytes(bytes: Uint8Array, object: string): Fp6Value {
  const c = [0, 1, 2, 3, 4, 5].map((i) => readFpLE(bytes.subarray(i * FP_LEN, (i + 1) * FP_LEN), object));
  return Fp6.create({
    c0: Fp2.create({ c0: c[0]!, c1: c[1]! }),
    c1: Fp2.create({ c0: c[2]!, c1: c[3]! }),
    c2: Fp2.create({ c0: c[4]!, c1: c[5]! }),
  });
}

function fp6ToBytes(x: Fp6Value): Uint8Array {
  return concat(...[x.c0, x.c1, x.c2].flatMap((f2) => [f2.c0, f2.c1]).map((c) => numberToBytesLE(c, FP_LEN)));
}

/** Whether `x` is in the order-r subgroup of Fp12*. */
function inGt(x: Fp12Value): boolean {
  return Fp12.eql(Fp12.pow(x, Fr.ORDER), Fp12.ONE);
}

/**
 * blstrs' 288-byte torus compression of a G_T element (Naehrig-Barreto-Schwabe §4.1):
 * `b = (c0 + 1) / c1`; decompression `(b + w) / (b - w)`. Refuses the identity (no compression),
 * elements outside G_T and non-canonical encodings.
 */
export function gtFromCompressed(bytes: Uint8Array, object = "G_T element"): Fp12Value {
  if (bytes.length !== GT_LEN) throw malformed(object, "a G_T element must be 288 bytes");
  const b = fp6FromBytes(bytes, object);
  const minus = Fp12.create({ c0: b, c1: Fp6.neg(Fp6.ONE) });
  if (Fp12.is0(minus)) throw malformed(object, "invalid G_T compression");
  const g = Fp12.mul(Fp12.create({ c0: b, c1: Fp6.ONE }), Fp12.inv(minus));
  if (Fp12.eql(g, Fp12.ONE) || !inGt(g)) throw malformed(object, "not an element of G_T");
  if (!ctEqual(gtToCompressed(g), bytes)) throw malformed(object, "a G_T element is not canonically encoded");
  return g;
}

function gtToCompressed(g: Fp12Value): Uint8Array {
  const c0 = Fp6.create({ c0: Fp2.add(g.c0.c0, Fp2.ONE), c1: g.c0.c1, c2: g.c0.c2 });
  return fp6ToBytes(Fp6.mul(c0, Fp6.inv(g.c1)));
}

// --- objects -------------------------------------------------------------------------------

/** Public parameters: `H1 = h^a1`, `H2 = h^a2`, `T1`, `T2`. */
export class PublicParams {
  private constructor(
    readonly h: readonly [G2Point, G2Point],
    readonly t: readonly [Fp12Value, Fp12Value],
    readonly bytes: Uint8Array,
  ) {}

  /** `version || 0x01 || H1 (96) || H2 (96) || T1 (288) || T2 (288)`, every element checked. */
  static fromBytes(bytes: Uint8Array): PublicParams {
    const r = new ByteReader(bytes, "public parameters", TYPE_PUBLIC_PARAMS);
    const h: [G2Point, G2Point] = [r.g2(), r.g2()];
    const t: [Fp12Value, Fp12Value] = [
      gtFromCompressed(r.take(GT_LEN), "public parameters"),
      gtFromCompressed(r.take(GT_LEN), "public parameters"),
    ];
    r.finish();
    return new PublicParams(h, t, bytes.slice());
  }
}

/**
 * A user's attribute key. Its points are JavaScript BigInts that cannot be wiped; `wipe()` clears
 * the serialized copy it keeps and drops the references.
 */
export class UserKey {
  private constructor(
    readonly attributes: readonly string[],
    private sk0: G2Point[],
    private skPrime: G1Point[],
    private parts: G1Point[][],
  ) {}

  /**
   * `version || 0x03 || n (u16) || n × (len (u8) || attribute) || sk0 (3 × 96) || sk' (3 × 48) ||
   * n × 3 × 48`, attributes valid, sorted and distinct.
   */
  static fromBytes(bytes: Uint8Array): UserKey {
    const r = new ByteReader(bytes, "user key", TYPE_USER_KEY);
    const count = r.u16();
    if (count === 0 || count > MAX_KEY_ATTRIBUTES) throw r.bad("attribute count out of range");
    const attributes: string[] = [];
    const decoder = new TextDecoder("utf-8", { fatal: true });
    for (let i = 0; i < count; i++) {
      let attribute: string;
      try {
        attribute = decoder.decode(r.take(r.u8()));
      } catch (error) {
        if (error instanceof FameError) throw error;
        throw r.bad("an attribute is not UTF-8");
      }
      if (attributeProblem(attribute) !== null) throw r.bad("an attribute is invalid");
      const previous = attributes[attributes.length - 1];
      if (previous !== undefined && !(byteLess(previous, attribute))) throw r.bad("attributes are not sorted and distinct");
      attributes.push(attribute);
    }
    const expected = 3 * G2_LEN + 3 * G1_LEN * (count + 1);
    if (r.remaining !== expected) throw r.bad(r.remaining < expected ? "truncated" : "trailing bytes");
    const sk0 = [r.g2(), r.g2(), r.g2()];
    const skPrime = [r.g1(), r.g1(), r.g1()];
    const parts: G1Point[][] = [];
    for (let i = 0; i < count; i++) parts.push([r.g1(), r.g1(), r.g1()]);
    r.finish();
    return new UserKey(attributes, sk0, skPrime, parts);
  }

  has(attribute: string): boolean {
    return this.attributes.includes(attribute);
  }

  canDecrypt(ciphertext: Ciphertext): boolean {
    return ciphertext.policy.isSatisfiedBy(this.attributes);
  }

  /** @internal the key material for [`decapsulate`]. */
  material(): { sk0: G2Point[]; skPrime: G1Point[]; part: (attribute: string) => G1Point[] | undefined } {
    return {
      sk0: this.sk0,
      skPrime: this.skPrime,
      part: (attribute) => {
        const i = this.attributes.indexOf(attribute);
        return i < 0 ? undefined : this.parts[i];
      },
    };
  }

  /** Drops the key material (best effort: BigInts cannot be overwritten). */
  wipe(): void {
    this.sk0 = [];
    this.skPrime = [];
    this.parts = [];
  }
}

/** Attributes compare as byte strings (ASCII here, so code units are bytes). */
function byteLess(a: string, b: string): boolean {
  return a < b;
}

/** An ABE ciphertext (the KEM form): its policy, `ct0` (3 × G2) and three G1 elements per policy leaf. */
export class Ciphertext {
  private constructor(
    readonly policy: Policy,
    readonly ct0: readonly G2Point[],
    readonly rows: readonly (readonly G1Point[])[],
    /** The canonical serialization (hashed into the data key). */
    readonly bytes: Uint8Array,
  ) {}

  /**
   * `version || 0x04 || len (u16) || canonical policy || ct0 (3 × 96) || rows (u16) || rows × 3 × 48`;
   * the policy must parse and be canonical, the row count match it, every point checked.
   */
  static fromBytes(bytes: Uint8Array): Ciphertext {
    const r = new ByteReader(bytes, "ciphertext", TYPE_CIPHERTEXT);
    const policyLen = r.u16();
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(r.take(policyLen));
    } catch (error) {
      if (error instanceof FameError) throw error;
      throw r.bad("the policy is not UTF-8");
    }
    let policy: Policy;
    try {
      policy = Policy.parse(text);
    } catch (error) {
      throw r.bad(error instanceof Error ? error.message : "invalid policy");
    }
    if (policy.canonical() !== text) throw r.bad("the policy is not in canonical form");
    const ct0 = [r.g2(), r.g2(), r.g2()];
    const count = r.u16();
    if (count !== policy.leafCount) throw r.bad(`${count} rows for a policy of ${policy.leafCount} attributes`);
    if (r.remaining !== 3 * G1_LEN * count) throw r.bad(r.remaining < 3 * G1_LEN * count ? "truncated" : "trailing bytes");
    const rows: G1Point[][] = [];
    for (let i = 0; i < count; i++) rows.push([r.g1(), r.g1(), r.g1()]);
    r.finish();
    return new Ciphertext(policy, ct0, rows, bytes.slice());
  }

  /** @internal */
  static fromParts(policy: Policy, ct0: G2Point[], rows: G1Point[][]): Ciphertext {
    const text = utf8(policy.canonical());
    const parts: Uint8Array[] = [
      new Uint8Array([FORMAT_VERSION, TYPE_CIPHERTEXT, text.length >> 8, text.length & 0xff]),
      text,
      ...ct0.map((p) => p.toBytes(true)),
      new Uint8Array([rows.length >> 8, rows.length & 0xff]),
      ...rows.flat().map((p) => p.toBytes(true)),
    ];
    return new Ciphertext(policy, ct0, rows, concat(...parts));
  }
}

// --- the KEM -------------------------------------------------------------------------------

const IDENTITY_MASK = (() => {
  const out = new Uint8Array(12 * FP_LEN);
  out[0] = 1;
  return out;
})();

/** `HKDF-SHA256(salt, ikm = mask encoding, info = label || SHA-256(ciphertext))`, 32 bytes; the identity mask is refused. */
function deriveDataKey(mask: Uint8Array, ciphertext: Ciphertext): Uint8Array {
  if (ctEqual(mask, IDENTITY_MASK)) throw malformed("ciphertext", "the mask is the identity");
  return hkdf(sha256, mask, KDF_SALT, concat(KDF_INFO, sha256(ciphertext.bytes)), 32);
}

/**
 * Recovers the 32-byte data key, or throws `PolicyNotSatisfied`. A key that is not a genuine key
 * for its attributes gives a wrong data key, which AES-GCM then refuses.
 */
export function decapsulate(key: UserKey, ciphertext: Ciphertext): Uint8Array {
  const policy = ciphertext.policy;
  const material = key.material();
  const rows = policy.reconstructionRows((a) => key.has(a));
  if (rows === null || material.sk0.length !== 3) {
    throw new FameError("PolicyNotSatisfied", `the key's attributes do not satisfy the policy ${policy.canonical()}`);
  }
  const leaves = policy.leaves();
  let a: G1Point[] | null = null;
  let b: G1Point[] = material.skPrime.slice();
  for (const row of rows) {
    const part = material.part(leaves[row]!);
    const ct = ciphertext.rows[row];
    if (part === undefined || ct === undefined) throw new FameError("PolicyNotSatisfied", "the key lacks an attribute");
    a = a === null ? ct.slice() : a.map((p, l) => p.add(ct[l]!));
    b = b.map((p, l) => p.add(part[l]!));
  }
  if (a === null) throw new FameError("PolicyNotSatisfied", "no rows selected");
  // prod_t e(sk'_t + sum sk_{y,t}, ct0_t) * prod_l e(-(sum ct_{i,l}), sk0_l)
  const pairs: { g1: G1Point; g2: G2Point }[] = [];
  for (let l = 0; l < 3; l++) pairs.push({ g1: b[l]!, g2: ciphertext.ct0[l]! });
  for (let l = 0; l < 3; l++) pairs.push({ g1: a[l]!.negate(), g2: material.sk0[l]! });
  if (pairs.some((p) => p.g1.is0())) throw new FameError("DecryptionFailed", "the key does not open this ciphertext");
  const mask = fp12ToBytes(bls12_381.pairingBatch(pairs));
  try {
    return deriveDataKey(mask, ciphertext);
  } finally {
    wipe(mask);
  }
}

/** FAME's `H(y l t)`: RFC 9380 hash to G1 of `0x01 || len(y) || y || l || t`. */
export function hashAttribute(attribute: string, l: number, t: number): G1Point {
  const y = utf8(attribute);
  return bls12_381.G1.hashToCurve(concat(new Uint8Array([0x01, y.length]), y, new Uint8Array([l, t])), {
    DST: HASH_TO_G1_DST,
  }) as G1Point;
}

/** FAME's `H(0 j l t)` for span-program column `j` (1-based): `0x00 || j (u32 BE) || l || t`. */
export function hashColumn(j: number, l: number, t: number): G1Point {
  const msg = new Uint8Array([0, (j >>> 24) & 0xff, (j >>> 16) & 0xff, (j >>> 8) & 0xff, j & 0xff, l, t]);
  return bls12_381.G1.hashToCurve(msg, { DST: HASH_TO_G1_DST }) as G1Point;
}

const columnCache = new Map<number, G1Point[][]>();

/** `[l-1][t-1] -> H(0 j l t)`, memoized: public and independent of any key. */
function columnHashes(j: number): G1Point[][] {
  let hashes = columnCache.get(j);
  if (hashes === undefined) {
    hashes = [1, 2, 3].map((l) => [1, 2].map((t) => hashColumn(j, l, t)));
    columnCache.set(j, hashes);
  }
  return hashes;
}

/** A uniformly random non-zero scalar (64 random bytes reduced mod r: bias below 2^-128). */
function randomScalar(random: (n: number) => Uint8Array): bigint {
  for (;;) {
    const bytes = random(64);
    const s = Fr.create(bytesToNumberLE(bytes));
    wipe(bytes);
    if (s !== 0n) return s;
  }
}

/**
 * `t1^e1 · t2^e2` in G_T on a fixed schedule, as crates/abe/src/fp12.rs does: per bit (255, from
 * the top) one cyclotomic squaring and one multiplication by `[1, t1, t2, t1·t2][b1 + 2·b2]`, so
 * the sequence of operations does not depend on the secret exponents (noble's `Fp12.pow` skips
 * zero bits). BigInt arithmetic and the table lookup are not constant time: best effort.
 */
export function doubleExp(t1: Fp12Value, t2: Fp12Value, e1: bigint, e2: bigint): Fp12Value {
  const table = [Fp12.ONE, t1, t2, Fp12.mul(t1, t2)];
  let acc = Fp12.ONE;
  for (let bit = 254n; bit >= 0n; bit--) {
    acc = Fp12._cyclotomicSquare(acc);
    const index = Number(((e1 >> bit) & 1n) | (((e2 >> bit) & 1n) << 1n));
    acc = Fp12.mul(acc, table[index]!);
  }
  return acc;
}

/**
 * Encapsulates a fresh data key under `policy`: `{ dataKey, ciphertext }`. The G1/G2
 * multiplications by the secret `s1, s2` are noble's constant-time `multiply`; the G_T mask uses
 * [`doubleExp`].
 */
export function encapsulate(
  pp: PublicParams,
  policy: Policy,
  random: (n: number) => Uint8Array = randomBytes,
): { dataKey: Uint8Array; ciphertext: Ciphertext } {
  for (;;) {
    const s1 = randomScalar(random);
    const s2 = randomScalar(random);
    const sum = Fr.add(s1, s2);
    if (sum === 0n) continue;
    const ct0 = [pp.h[0].multiply(s1), pp.h[1].multiply(s2), G2.BASE.multiply(sum)];
    const program = policy.spanProgram();
    const columns = Array.from({ length: program.columns }, (_, c) => columnHashes(c + 1));
    const attributeHashes = new Map<string, G1Point[][]>();
    const rows: G1Point[][] = [];
    for (const { attribute, entries } of program.rows) {
      let hashes = attributeHashes.get(attribute);
      if (hashes === undefined) {
        hashes = [1, 2, 3].map((l) => [1, 2].map((t) => hashAttribute(attribute, l, t)));
        attributeHashes.set(attribute, hashes);
      }
      const row: G1Point[] = [];
      for (let l = 0; l < 3; l++) {
        let p1 = hashes[l]![0]!;
        let p2 = hashes[l]![1]!;
        for (const [column, sign] of entries) {
          const q = columns[column]![l]!;
          p1 = sign < 0 ? p1.subtract(q[0]!) : p1.add(q[0]!);
          p2 = sign < 0 ? p2.subtract(q[1]!) : p2.add(q[1]!);
        }
        row.push(p1.multiply(s1).add(p2.multiply(s2)));
      }
      rows.push(row);
    }
    if (ct0.some((p) => p.is0()) || rows.flat().some((p) => p.is0())) continue;
    const maskValue = doubleExp(pp.t[0], pp.t[1], s1, s2);
    if (Fp12.eql(maskValue, Fp12.ONE)) continue;
    const ciphertext = Ciphertext.fromParts(policy, ct0, rows);
    const mask = fp12ToBytes(maskValue);
    try {
      return { dataKey: deriveDataKey(mask, ciphertext), ciphertext };
    } finally {
      wipe(mask);
    }
  }
}
