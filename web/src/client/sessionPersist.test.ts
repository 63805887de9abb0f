// "Stay signed in": the refresh token sealed at rest (./sessionPersist.ts over an in-memory
// backend that keeps exactly what IndexedDB would), one refresh chain shared by every tab, and
// the stored copy deleted when the session ends. The auth server is a rotating token issuer that,
// like auth-svc, revokes the session when a spent refresh token comes back.

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";

import { SessionTokensSchema, type SessionTokens } from "../gen/caremesh/auth/v1/auth_pb";
import { SessionStore } from "./session";
import { SealedSessionPersistence } from "./sessionPersist";
import { MemoryBackend } from "./store";

/** Issues refresh tokens that rotate on use; a spent one revokes the session. */
function issuer() {
  const server = { n: 0, live: "", revoked: false, spent: new Set<string>() };
  const issue = (): SessionTokens => {
    server.n += 1;
    server.live = `refresh-token-secret-${server.n}-${"x".repeat(20)}`;
    return create(SessionTokensSchema, {
      accessToken: `access-token-secret-${server.n}`,
      refreshToken: server.live,
      userId: "u1",
      accessTokenExpireTime: timestampFromDate(new Date(Date.now() + 600_000)),
    });
  };
  const refresh = async (token: string): Promise<SessionTokens> => {
    if (server.revoked) throw new Error("session revoked");
    if (token !== server.live) {
      server.revoked = true;
      throw new Error("refresh token reuse");
    }
    server.spent.add(token);
    return issue();
  };
  return { server, issue, refresh };
}

/** A signed-in tab that keeps its session in a fresh (in-memory) browser store. */
async function persistedTab() {
  const { server, issue, refresh } = issuer();
  const backend = new MemoryBackend();
  const tab = new SessionStore(refresh);
  tab.set(issue());
  await tab.persist(new SealedSessionPersistence(backend));
  return { server, refresh, backend, tab };
}

/** Everything the backend holds, as text (bytes as latin1). */
function dump(backend: MemoryBackend): string {
  return [...backend.records.entries()]
    .map(([name, value]) => {
      const v = value as { iv?: Uint8Array; ct?: Uint8Array } | CryptoKey;
      if (v instanceof CryptoKey) return `${name}=CryptoKey(${v.extractable})`;
      return `${name}=${String.fromCharCode(...(v.iv ?? []))}${String.fromCharCode(...(v.ct ?? []))}`;
    })
    .join("\n");
}

describe("stay signed in", () => {
  it("keeps only a sealed refresh token, restores from it after a reload and rotates it", async () => {
    const { server, refresh, backend, tab } = await persistedTab();
    const before = tab.refreshToken;
    const stored = dump(backend);
    expect(stored).toMatch(/key=CryptoKey\(false\)/);
    expect(stored).not.toContain("refresh-token-secret");
    expect(stored).not.toContain("access-token-secret");

    // A reload: a new store in the same browser signs in from it; the old token is spent.
    const reloaded = new SessionStore(refresh);
    expect(await reloaded.restore(new SealedSessionPersistence(backend))).toBe(true);
    expect(reloaded.info?.userId).toBe("u1");
    expect(reloaded.refreshToken).toBe(server.live);
    expect(await new SealedSessionPersistence(backend).load()).toBe(server.live);
    expect(dump(backend)).not.toContain(server.live);
    expect(server.spent.has(before ?? "")).toBe(true);
    tab.clear();
    reloaded.clear();
  });

  it("shares one refresh chain between tabs, so no tab presents a spent token", async () => {
    const { server, refresh, backend, tab: first } = await persistedTab();
    const second = new SessionStore(refresh);
    expect(await second.restore(new SealedSessionPersistence(backend))).toBe(true);
    // The first tab still holds the token the second one spent; its refresh uses the stored one.
    expect(first.refreshToken).not.toBe(server.live);
    await (first as unknown as { refreshNow(): Promise<void> }).refreshNow();
    expect(server.revoked).toBe(false);
    expect(first.refreshToken).toBe(server.live);
    first.clear();
    second.clear();
  });

  it("deletes the stored copy when the server refuses it or the user stops it", async () => {
    const { server, refresh, backend, tab } = await persistedTab();
    await tab.forget();
    expect(backend.records.size).toBe(0);
    expect(tab.info?.userId).toBe("u1");

    await tab.persist(new SealedSessionPersistence(backend));
    server.revoked = true;
    const reloaded = new SessionStore(refresh);
    expect(await reloaded.restore(new SealedSessionPersistence(backend))).toBe(false);
    expect(reloaded.info).toBeNull();
    expect(backend.records.size).toBe(0);
    tab.clear();
  });
});
