// "Stay signed in on this browser" (opt-in, on the account screen): the refresh token at rest in
// IndexedDB, sealed with AES-256-GCM under a non-extractable WebCrypto key kept in the same
// database (./store.ts's EncryptedStore, the device state's sealing). The access token is never
// stored. Refresh tokens rotate on every use and auth-svc revokes the session when a spent one is
// presented, so every tab of the browser refreshes through one chain: under a Web Lock, read the
// newest stored refresh token, exchange it, store the new one. Sign-out (or a failed refresh)
// deletes the database.

import { EncryptedStore, IndexedDbBackend, type StoreBackend } from "./store";

export const SESSION_DATABASE = "caremesh-session";
const RECORD = "refresh";
const LOCK = "caremesh-session-refresh";

/** Where the refresh token is kept between page loads (SessionStore uses it when set). */
export interface SessionPersistence {
  load(): Promise<string | null>;
  save(refreshToken: string): Promise<void>;
  wipe(): Promise<void>;
  /** Runs `action` with no other tab of this browser inside the same section. */
  exclusive<T>(action: () => Promise<T>): Promise<T>;
}

export class SealedSessionPersistence implements SessionPersistence {
  private store: Promise<EncryptedStore> | null = null;

  constructor(private readonly backend: StoreBackend = new IndexedDbBackend(SESSION_DATABASE)) {}

  private open(): Promise<EncryptedStore> {
    this.store ??= EncryptedStore.open(this.backend);
    return this.store;
  }

  async load(): Promise<string | null> {
    const record = await (await this.open()).get<{ refreshToken: string }>(RECORD);
    return typeof record?.refreshToken === "string" && record.refreshToken !== "" ? record.refreshToken : null;
  }

  async save(refreshToken: string): Promise<void> {
    await (await this.open()).put(RECORD, { refreshToken });
  }

  async wipe(): Promise<void> {
    this.store = null;
    await this.backend.destroy();
  }

  exclusive<T>(action: () => Promise<T>): Promise<T> {
    const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
    // request() resolves with what the callback's promise resolves to.
    return locks ? (locks.request(LOCK, () => action()) as unknown as Promise<T>) : action();
  }
}

/** Whether this browser holds a stored session (without creating the database when it does not). */
export async function hasStoredSession(): Promise<boolean> {
  if (typeof indexedDB === "undefined" || typeof indexedDB.databases !== "function") return false;
  return (await indexedDB.databases()).some((db) => db.name === SESSION_DATABASE);
}
