// The device state's sealing: what reaches the backend is ciphertext under a non-extractable key,
// bound to its record name; a changed byte or a moved record does not open; wipe leaves nothing.
import { describe, expect, it } from "vitest";

import { EncryptedStore, MemoryBackend } from "./store";

const MARKER = "MARKER-glucose-7.8-mmol";

function contains(haystack: Uint8Array, needle: string): boolean {
  const text = new TextDecoder("latin1").decode(haystack);
  return text.includes(needle);
}

describe("EncryptedStore", () => {
  it("writes no plaintext to the backend and reads it back", async () => {
    const backend = new MemoryBackend();
    const store = await EncryptedStore.open(backend);
    await store.put("msg:1", { text: MARKER, secret: "00ff".repeat(16) });
    expect(await store.get("msg:1")).toEqual({ text: MARKER, secret: "00ff".repeat(16) });
    for (const [name, value] of backend.records) {
      if (value instanceof CryptoKey) {
        expect(name).toBe("key");
        expect(value.extractable).toBe(false);
        continue;
      }
      const sealed = value as { iv: Uint8Array; ct: Uint8Array };
      expect(sealed.ct).toBeInstanceOf(Uint8Array);
      expect(contains(sealed.ct, MARKER)).toBe(false);
      expect(contains(sealed.ct, "00ff00ff")).toBe(false);
      expect(JSON.stringify(value)).not.toContain(MARKER);
    }
  });

  it("keeps its key across openings and cannot export it", async () => {
    const backend = new MemoryBackend();
    await (await EncryptedStore.open(backend)).put("device", { a: 1 });
    const again = await EncryptedStore.open(backend);
    expect(await again.get("device")).toEqual({ a: 1 });
    const key = backend.records.get("key") as CryptoKey;
    await expect(crypto.subtle.exportKey("raw", key)).rejects.toThrow();
  });

  it("refuses a changed ciphertext and a record moved to another name", async () => {
    const backend = new MemoryBackend();
    const store = await EncryptedStore.open(backend);
    await store.put("a", { text: "one" });
    const sealed = backend.records.get("a") as { v: 1; iv: Uint8Array; ct: Uint8Array };
    backend.records.set("b", structuredClone(sealed));
    await expect(store.get("b")).rejects.toThrow(/does not open/);
    sealed.ct[0] ^= 1;
    await expect(store.get("a")).rejects.toThrow(/does not open/);
  });

  it("does not open under another browser's key, and wipe removes everything", async () => {
    const backend = new MemoryBackend();
    const store = await EncryptedStore.open(backend);
    await store.put("a", { text: MARKER });
    const other = new MemoryBackend();
    await EncryptedStore.open(other);
    other.records.set("a", backend.records.get("a"));
    await expect((await EncryptedStore.open(other)).get("a")).rejects.toThrow(/does not open/);
    await store.wipe();
    expect(backend.records.size).toBe(0);
  });
});
