/**
 * Byte helpers and the protocol's one encoding (§2): `lp(x) = u32be(len(x)) || x`, fixed-width
 * big-endian integers, every signed / hashed / authenticated encoding starting with `lp(label)`.
 * Also id checks (canonical UUIDv7, user ids), hex, constant-time comparison and wiping.
 */
import { CryptoError } from "./errors.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** UTF-8 decoding that refuses invalid sequences. */
export function fromUtf8(bytes: Uint8Array, what: string): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new CryptoError("MalformedEnvelope", `${what} is not valid UTF-8`);
  }
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

/** Lowercase or uppercase hex to bytes; `length`, when given, is checked. */
export function fromHex(text: string, length?: number, what = "hex string"): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new CryptoError("Encoding", `${what} is not hex`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  if (length !== undefined && out.length !== length) {
    throw new CryptoError("Encoding", `${what} must be ${length} bytes, not ${out.length}`);
  }
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function u32be(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new CryptoError("Encoding", `${value} is not a u32`);
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, false);
  return out;
}

export function u64be(value: bigint): Uint8Array {
  if (value < 0n || value > 0xffff_ffff_ffff_ffffn) {
    throw new CryptoError("Encoding", `${value} is not a u64`);
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, false);
  return out;
}

/** Builds `lp(label) …` encodings. */
export class Encoder {
  private readonly parts: Uint8Array[] = [];

  /** Starts with `lp(label)`; `label` undefined only for a body nested in a labelled encoding. */
  constructor(label?: string) {
    if (label !== undefined) this.field(utf8(label));
  }

  /** Appends `lp(bytes)`; a string is its UTF-8 bytes. */
  field(bytes: Uint8Array | string): this {
    const data = typeof bytes === "string" ? utf8(bytes) : bytes;
    this.parts.push(u32be(data.length), data);
    return this;
  }

  u32(value: number): this {
    this.parts.push(u32be(value));
    return this;
  }

  /** Appends bytes without a length prefix (fixed-width integers, a final raw part). */
  raw(bytes: Uint8Array): this {
    this.parts.push(bytes);
    return this;
  }

  finish(): Uint8Array {
    return concat(...this.parts);
  }
}

/** Reads an `lp()` encoding back; every read is bounds-checked. */
export class Reader {
  private offset = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {}

  private bad(): CryptoError {
    return new CryptoError("MalformedEnvelope", `${this.what} is truncated or malformed`);
  }

  u32(): number {
    if (this.offset + 4 > this.bytes.length) throw this.bad();
    const value = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.offset, 4).getUint32(0, false);
    this.offset += 4;
    return value;
  }

  u64(): bigint {
    if (this.offset + 8 > this.bytes.length) throw this.bad();
    const value = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.offset, 8).getBigUint64(0, false);
    this.offset += 8;
    return value;
  }

  field(): Uint8Array {
    const len = this.u32();
    if (len > this.bytes.length - this.offset) throw this.bad();
    const out = this.bytes.subarray(this.offset, this.offset + len);
    this.offset += len;
    return out;
  }

  text(): string {
    return fromUtf8(this.field(), this.what);
  }

  /** Refuses trailing bytes. */
  end(): void {
    if (this.offset !== this.bytes.length) throw this.bad();
  }
}

/** Constant-time equality of two byte strings (their lengths are not secret). */
export function ctEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Byte equality of public values. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return ctEqual(a, b);
}

/** Best-effort wiping of secret byte arrays (a JS engine may have made copies). */
export function wipe(...arrays: (Uint8Array | null | undefined)[]): void {
  for (const array of arrays) array?.fill(0);
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Checks that `id` is a canonical UUIDv7 (lowercase, hyphenated, version 7, RFC 4122 variant). */
export function checkUuidV7(id: string, what: string): void {
  if (id.length === 0) throw new CryptoError("InvalidId", `${what} is missing`);
  if (!UUID_V7.test(id)) {
    throw new CryptoError("InvalidId", `${what} is not a canonical UUIDv7 (lowercase, hyphenated)`);
  }
}

export const MAX_USER_ID_LEN = 256;

/** A user id is 1 to 256 bytes of UTF-8. */
export function checkUserId(id: string, what: string): void {
  const len = utf8(id).length;
  if (len === 0) throw new CryptoError("InvalidId", `${what} is missing`);
  if (len > MAX_USER_ID_LEN) throw new CryptoError("InvalidId", `${what} is longer than 256 bytes`);
}

/** A fresh UUIDv7 (RFC 9562): 48-bit milliseconds, version, 74 random bits, variant. */
export function newId(random: (n: number) => Uint8Array): string {
  const bytes = random(16);
  let ms = BigInt(Date.now());
  for (let i = 5; i >= 0; i--) {
    bytes[i] = Number(ms & 0xffn);
    ms >>= 8n;
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x70;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = toHex(bytes);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
