// The signed-in session: the access and refresh tokens live in this object (no localStorage, no
// sessionStorage, no cookie). By default nothing is stored and reloading the page or closing the
// tab signs out. When the user opts in ("stay signed in", ./sessionPersist.ts) the refresh token,
// and only it, is also kept sealed in IndexedDB, and every refresh goes through the stored chain
// under a lock shared by the browser's tabs. The access token is refreshed before it expires (a
// timer at about three quarters of its lifetime, and on demand when a call finds it about to
// expire); the refresh token is single use and replaced on every refresh.

import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AssuranceLevel, Role } from "../gen/caremesh/auth/v1/user_pb";
import type { SessionTokens } from "../gen/caremesh/auth/v1/auth_pb";
import type { SessionPersistence } from "./sessionPersist";

export type RoleName = "patient" | "doctor" | "nurse" | "admin" | "auditor" | "unknown";
export type Aal = "AAL1" | "AAL2" | "unknown";

export function roleName(role: Role): RoleName {
  switch (role) {
    case Role.PATIENT:
      return "patient";
    case Role.DOCTOR:
      return "doctor";
    case Role.NURSE:
      return "nurse";
    case Role.ADMIN:
      return "admin";
    case Role.AUDITOR:
      return "auditor";
    default:
      return "unknown";
  }
}

export function aalName(aal: AssuranceLevel): Aal {
  switch (aal) {
    case AssuranceLevel.AAL1:
      return "AAL1";
    case AssuranceLevel.AAL2:
      return "AAL2";
    default:
      return "unknown";
  }
}

/** What the UI may know about the session (no tokens). */
export interface SessionInfo {
  readonly userId: string;
  readonly role: RoleName;
  readonly aal: Aal;
  readonly sessionExpires: Date | null;
}

interface Held {
  accessToken: string;
  accessExpires: number; // ms since the epoch
  refreshToken: string;
  info: SessionInfo;
}

/** Refresh when less than this is left of the access token. */
const REFRESH_MARGIN_MS = 30_000;

export class SessionStore {
  private held: Held | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private refreshing: Promise<void> | null = null;
  private readonly listeners = new Set<(info: SessionInfo | null) => void>();
  /** Set while the user chose to stay signed in on this browser. */
  private persistence: SessionPersistence | null = null;

  /** `refresh` exchanges a refresh token for new tokens (AuthService.Refresh). */
  constructor(private readonly refresh: (refreshToken: string) => Promise<SessionTokens>) {}

  get info(): SessionInfo | null {
    return this.held?.info ?? null;
  }

  subscribe(listener: (info: SessionInfo | null) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Takes new tokens (sign-in, MFA confirmation, refresh). */
  set(tokens: SessionTokens): void {
    const now = Date.now();
    const accessExpires = tokens.accessTokenExpireTime
      ? timestampDate(tokens.accessTokenExpireTime).getTime()
      : now + 60_000;
    this.held = {
      accessToken: tokens.accessToken,
      accessExpires,
      refreshToken: tokens.refreshToken,
      info: {
        userId: tokens.userId,
        role: roleName(tokens.role),
        aal: aalName(tokens.aal),
        sessionExpires: tokens.sessionExpireTime ? timestampDate(tokens.sessionExpireTime) : null,
      },
    };
    this.schedule(accessExpires - now);
    this.emit();
  }

  /** The refresh token, for Logout when the access token may have expired. */
  get refreshToken(): string | null {
    return this.held?.refreshToken ?? null;
  }

  /** The access token to send now, refreshed first if it is about to expire. */
  async accessToken(): Promise<string | null> {
    if (this.held === null) return null;
    if (this.held.accessExpires - Date.now() < REFRESH_MARGIN_MS) {
      await this.refreshNow();
    }
    return this.held?.accessToken ?? null;
  }

  /** Whether the refresh token is kept (sealed) in this browser between page loads. */
  get persisted(): boolean {
    return this.persistence !== null;
  }

  /** Starts keeping the refresh token sealed in this browser (the current one at once). */
  async persist(persistence: SessionPersistence): Promise<void> {
    const held = this.held;
    if (held === null) throw new Error("not signed in");
    await persistence.exclusive(() => persistence.save(held.refreshToken));
    this.persistence = persistence;
  }

  /** Stops keeping it: the stored copy is deleted; the session goes on in memory. */
  async forget(): Promise<void> {
    const persistence = this.persistence;
    this.persistence = null;
    if (persistence !== null) await persistence.exclusive(() => persistence.wipe());
  }

  /**
   * Signs in again from the stored refresh token (after a reload): exchanges it (it is spent
   * then) and stores the new one. Returns false, with the stored copy deleted, when there is
   * none or the server refuses it (signed out elsewhere, expired, revoked).
   */
  async restore(persistence: SessionPersistence): Promise<boolean> {
    const tokens = await persistence.exclusive(async () => {
      const stored = await persistence.load().catch(() => null);
      if (stored === null) {
        await persistence.wipe();
        return null;
      }
      try {
        const fresh = await this.refresh(stored);
        await persistence.save(fresh.refreshToken);
        return fresh;
      } catch {
        await persistence.wipe();
        return null;
      }
    });
    if (tokens === null) return false;
    this.persistence = persistence;
    this.set(tokens);
    return true;
  }

  /** Forgets everything: tokens overwritten, timer stopped, a stored refresh token deleted. */
  clear(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.persistence !== null) void this.forget().catch(() => undefined);
    if (this.held !== null) {
      this.held.accessToken = "";
      this.held.refreshToken = "";
    }
    this.held = null;
    this.emit();
  }

  private schedule(lifetimeMs: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    const delay = Math.max(1_000, Math.min(lifetimeMs * 0.75, lifetimeMs - REFRESH_MARGIN_MS));
    this.timer = setTimeout(() => {
      this.refreshNow().catch(() => undefined);
    }, delay);
  }

  private refreshNow(): Promise<void> {
    if (this.refreshing !== null) return this.refreshing;
    const held = this.held;
    if (held === null) return Promise.resolve();
    const persistence = this.persistence;
    const exchange =
      persistence === null
        ? this.refresh(held.refreshToken)
        : // One chain for every tab: the newest stored token (another tab may have rotated it), then store its successor.
          persistence.exclusive(async () => {
            const tokens = await this.refresh((await persistence.load()) ?? held.refreshToken);
            await persistence.save(tokens.refreshToken);
            return tokens;
          });
    this.refreshing = exchange
      .then((tokens) => {
        if (this.held === held) this.set(tokens);
      })
      .catch((error: unknown) => {
        // The session is over (expired, revoked, or the refresh token was spent elsewhere).
        if (this.held === held) this.clear();
        throw error;
      })
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  private emit(): void {
    const info = this.info;
    for (const listener of this.listeners) listener(info);
  }
}
