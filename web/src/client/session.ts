// The signed-in session, in memory only: the access and refresh tokens live in this object and
// nowhere else (no localStorage, no sessionStorage, no cookie, no IndexedDB). Reloading the page
// or closing the tab signs out. The access token is refreshed before it expires (a timer at about
// three quarters of its lifetime, and on demand when a call finds it about to expire); the
// refresh token is single use and replaced on every refresh.

import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AssuranceLevel, Role } from "../gen/caremesh/auth/v1/user_pb";
import type { SessionTokens } from "../gen/caremesh/auth/v1/auth_pb";

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

  /** Forgets everything: tokens overwritten, timer stopped. */
  clear(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
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
    this.refreshing = this.refresh(held.refreshToken)
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
