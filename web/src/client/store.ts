// The browser's device state at rest: records in IndexedDB, each sealed with AES-256-GCM under a
// non-extractable WebCrypto key that lives in the same database (the browser can use it, no
// script can read its bytes). The record's name is bound as associated data, so a record cannot
// be moved under another name. Sign-out deletes the whole database. The backend is an interface
// so the sealing can be tested (and is, in store.test.ts) with an in-memory one.

/** Where sealed records (and the key object) are kept. */
export interface StoreBackend {
  get(name: string): Promise<unknown>;
  put(name: string, value: unknown): Promise<void>;
  delete(name: string): Promise<void>;
  names(): Promise<string[]>;
  /** Deletes everything, the database itself included. */
  destroy(): Promise<void>;
}

/** What a sealed record looks like in storage. */
interface Sealed {
  v: 1;
  iv: Uint8Array<ArrayBuffer>;
  ct: Uint8Array<ArrayBuffer>;
}

const KEY_RECORD = "key";
const AAD_PREFIX = "caremesh-web-store-v1/";

function isSealed(value: unknown): value is Sealed {
  const v = value as Sealed | undefined;
  return !!v && v.v === 1 && v.iv instanceof Uint8Array && v.ct instanceof Uint8Array;
}

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StoreError";
  }
}

/** JSON records sealed under the store's key. */
export class EncryptedStore {
  private constructor(
    private readonly backend: StoreBackend,
    private readonly key: CryptoKey,
  ) {}

  /** Opens the store, creating its non-extractable key on first use. */
  static async open(backend: StoreBackend): Promise<EncryptedStore> {
    let key = (await backend.get(KEY_RECORD)) as CryptoKey | undefined;
    if (!key) {
      key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      await backend.put(KEY_RECORD, key);
    }
    if (key.extractable) throw new StoreError("the device state key is extractable; refusing to use it");
    return new EncryptedStore(backend, key);
  }

  async put(name: string, value: unknown): Promise<void> {
    if (name === KEY_RECORD) throw new StoreError("reserved record name");
    const plaintext = new TextEncoder().encode(JSON.stringify(value));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad(name) }, this.key, plaintext),
    );
    plaintext.fill(0);
    await this.backend.put(name, { v: 1, iv, ct } satisfies Sealed);
  }

  async get<T>(name: string): Promise<T | undefined> {
    const sealed = await this.backend.get(name);
    if (sealed === undefined) return undefined;
    if (!isSealed(sealed)) throw new StoreError(`the stored record ${name} is not sealed device state`);
    let plaintext: Uint8Array;
    try {
      plaintext = new Uint8Array(
        await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv, additionalData: aad(name) }, this.key, sealed.ct),
      );
    } catch {
      throw new StoreError(`the stored record ${name} does not open with this browser's key`);
    }
    try {
      return JSON.parse(new TextDecoder().decode(plaintext)) as T;
    } finally {
      plaintext.fill(0);
    }
  }

  async delete(name: string): Promise<void> {
    await this.backend.delete(name);
  }

  /** Names of the stored records (the key excluded). */
  async names(): Promise<string[]> {
    return (await this.backend.names()).filter((name) => name !== KEY_RECORD);
  }

  /** Deletes every record and the key. */
  async wipe(): Promise<void> {
    await this.backend.destroy();
  }
}

function aad(name: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(AAD_PREFIX + name);
}

/** An in-memory backend (tests; it keeps what a real one would write, structured-cloned). */
export class MemoryBackend implements StoreBackend {
  readonly records = new Map<string, unknown>();
  async get(name: string): Promise<unknown> {
    return this.records.get(name);
  }
  async put(name: string, value: unknown): Promise<void> {
    // A CryptoKey is kept as the object (IndexedDB clones it without exposing its bytes).
    this.records.set(name, value instanceof CryptoKey ? value : structuredClone(value));
  }
  async delete(name: string): Promise<void> {
    this.records.delete(name);
  }
  async names(): Promise<string[]> {
    return [...this.records.keys()];
  }
  async destroy(): Promise<void> {
    this.records.clear();
  }
}

const OBJECT_STORE = "records";

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new StoreError(`browser storage failed: ${req.error?.message ?? "unknown error"}`));
  });
}

/** The database name of a user's device state in this browser. */
export function deviceDatabaseName(userId: string): string {
  return `caremesh-device-${userId}`;
}

/** IndexedDB: one database per user, one object store of records by name. */
export class IndexedDbBackend implements StoreBackend {
  private db: Promise<IDBDatabase> | null = null;

  constructor(readonly name: string) {}

  private open(): Promise<IDBDatabase> {
    if (this.db === null) {
      const req = indexedDB.open(this.name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(OBJECT_STORE);
      this.db = request(req).then((db) => {
        // A deletion (sign-out, here or in another tab) closes this connection instead of waiting for it.
        db.onversionchange = () => {
          db.close();
          this.db = null;
        };
        return db;
      });
    }
    return this.db;
  }

  private async tx<T>(mode: IDBTransactionMode, run: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const db = await this.open();
    const transaction = db.transaction(OBJECT_STORE, mode, { durability: "strict" });
    const result = request(run(transaction.objectStore(OBJECT_STORE)));
    await new Promise<void>((resolve, reject) => {
      transaction.oncomplete = () => resolve();
      transaction.onerror = () => reject(new StoreError(`browser storage failed: ${transaction.error?.message ?? "unknown error"}`));
      transaction.onabort = () => reject(new StoreError("browser storage refused the write (is it full?)"));
    });
    return result;
  }

  get(name: string): Promise<unknown> {
    return this.tx("readonly", (store) => store.get(name));
  }
  async put(name: string, value: unknown): Promise<void> {
    await this.tx("readwrite", (store) => store.put(value, name));
  }
  async delete(name: string): Promise<void> {
    await this.tx("readwrite", (store) => store.delete(name));
  }
  async names(): Promise<string[]> {
    const keys = await this.tx("readonly", (store) => store.getAllKeys());
    return keys.map(String);
  }
  async destroy(): Promise<void> {
    if (this.db !== null) {
      (await this.db).close();
      this.db = null;
    }
    await new Promise<void>((resolve, reject) => {
      const req = indexedDB.deleteDatabase(this.name);
      req.onsuccess = () => resolve();
      req.onerror = () => reject(new StoreError("the browser did not delete the device state"));
      // Another tab holds it open: it is deleted once that tab lets go.
      req.onblocked = () => resolve();
    });
  }
}
