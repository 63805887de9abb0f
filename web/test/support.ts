/** Test helpers: where the shared vector files are, and reading them. Not part of the app. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { fromHex } from "../src/crypto/bytes.js";

/** `web/`. */
export const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** The repository root (`web/..`). */
export const REPO_ROOT = resolve(WEB_DIR, "..");

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

/** `docs/vectors/protocol-v2.json`, the vectors the Rust tests check too. */
export function protocolVectors(): Json {
  return JSON.parse(readFileSync(join(REPO_ROOT, "docs/vectors/protocol-v2.json"), "utf8"));
}

/**
 * The Wycheproof directory: `$CAREMESH_VECTORS_DIR`, else `../shared/vectors/wycheproof` next to
 * the repository (as the Rust tests). The design brief keeps these vectors out of the repository:
 * when they are absent the tests say that they skipped (as `crates/crypto/tests/wycheproof.rs`).
 */
export const WYCHEPROOF_DIR: string | null = (() => {
  const dir = process.env.CAREMESH_VECTORS_DIR ?? resolve(REPO_ROOT, "../shared/vectors/wycheproof");
  if (existsSync(dir)) return dir;
  console.warn(`skipped: Wycheproof vectors not found at ${dir} (set CAREMESH_VECTORS_DIR)`);
  return null;
})();

export function wycheproof(file: string): Json {
  if (WYCHEPROOF_DIR === null) throw new Error("Wycheproof vectors are not available");
  const path = join(WYCHEPROOF_DIR, file);
  if (!existsSync(path)) throw new Error(`Wycheproof file missing: ${path}`);
  return JSON.parse(readFileSync(path, "utf8"));
}

export const hex = (text: string): Uint8Array => fromHex(text);

/** Every case of a vector section, refusing an empty section. */
export function cases(vectors: Json, section: string): Json[] {
  const list = vectors[section];
  if (!Array.isArray(list) || list.length === 0) throw new Error(`no ${section} vectors`);
  return list;
}
