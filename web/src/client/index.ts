// The client layer: the only module the UI (src/app, src/features) imports. It owns the
// gRPC-Web transport, the generated service clients and the in-memory session, and hands the UI
// plain values (no protobuf messages, no tokens). src/architecture.test.ts checks that the UI
// imports nothing else of the transport, the generated code or the cryptography.

import { createClient, type Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AuthService, SecondFactor as Factor } from "../gen/caremesh/auth/v1/auth_pb";
import { Role, UserStatus } from "../gen/caremesh/auth/v1/user_pb";
import { describeError, type ErrorView, type Operation } from "./errors";
import { aalName, roleName, SessionStore, type Aal, type RoleName, type SessionInfo } from "./session";
import { createTransport } from "./transport";
import { hasStoredSession, SealedSessionPersistence } from "./sessionPersist";
import { RecordsClient } from "./records";
import { AdminClient } from "./admin";
import { AuditClient } from "./audit";
import { openMessenger, wipeDeviceState } from "./messaging";
import { PasskeyClient } from "./passkeys";

export { describeError };
export { openMessenger, startLink, checkPolicy, MessagingError, type GroupConversationView, type PendingLinkView, type Messenger, type MessengerStart, type MessageView, type ConversationView, type ContactView, type UserView, type DeviceView } from "./messaging";
export type { Aal, ErrorView, Operation, RoleName, SessionInfo };
export { describeAttachmentError, describeRecordError, type AttachmentView, type Progress } from "./attachments";
export { DOCUMENT_REFERENCE, RECORD_KINDS, RecordsClient, fhirProblem, type AccessEntry, type EmergencyGrant, type OpenedFile, type OpenedRecord, type RecordFile, type PatientRef, type RecordSummary, type VersionEntry } from "./records";
export { AdminClient, parseAttributes, type AccountStatus, type AdminUserView, type RolePolicyView, type UserFilter } from "./admin";
export { PasskeyClient, PasskeyError, type PasskeyAdded, type PasskeyList, type PasskeyView } from "./passkeys";
export { AUDIT_ACTIONS, AUDIT_OUTCOMES, AuditClient, LogIntegrityError, type AlertView, type AuditActionName, type AuditEventView, type AuditOutcomeName, type EventFilter, type InclusionResult, type VerifiedCheckpoint } from "./audit";

export interface Registered {
  readonly username: string;
  /** Patients are active at once; doctors and nurses wait for an administrator. */
  readonly status: "active" | "pending" | "disabled" | "unknown";
}

/** The second factors a half-finished sign-in accepts. */
export interface SecondFactors {
  readonly totp: boolean;
  readonly recoveryCode: boolean;
  /** A passkey (when the account has one); without `totp`, the role requires passkeys. */
  readonly passkey: boolean;
  readonly expires: Date | null;
}

export type SignInResult = { readonly kind: "signedIn" } | ({ readonly kind: "secondFactor" } & SecondFactors);

export type SecondFactor = { readonly totp: string } | { readonly recoveryCode: string } | { readonly passkey: true };

export interface Enrolment {
  readonly otpauthUri: string;
  readonly secret: string;
  readonly issuer: string;
  readonly digits: number;
  readonly periodSeconds: number;
  readonly expires: Date | null;
}

export interface Identity {
  readonly userId: string;
  readonly username: string;
  readonly displayName: string;
  readonly role: RoleName;
  readonly status: Registered["status"];
  readonly aal: Aal;
  readonly mfaEnrolled: boolean;
  readonly recoveryCodesRemaining: number;
  readonly sessionExpires: Date | null;
}

function statusName(status: UserStatus): Registered["status"] {
  switch (status) {
    case UserStatus.ACTIVE:
      return "active";
    case UserStatus.PENDING:
      return "pending";
    case UserStatus.DISABLED:
      return "disabled";
    default:
      return "unknown";
  }
}

export class CaremeshClient {
  private readonly auth: Client<typeof AuthService>;
  readonly session: SessionStore;
  /** Patient records, decrypted in the browser (./records.ts). */
  readonly records: RecordsClient;
  /** Account administration (admins at AAL2, ./admin.ts). */
  readonly admin: AdminClient;
  /** The audit log: queries, alerts, checkpoint and proof verification (auditors, ./audit.ts). */
  readonly audit: AuditClient;
  /** The user's passkeys (./passkeys.ts); passwordless sign-in is `signInWithPasskey`. */
  readonly passkeys: PasskeyClient;
  /** The half-finished login's challenge (memory only, single use), with what it accepts. */
  private challenge: { readonly token: string; readonly factors: SecondFactors; readonly passkeyOptions: Uint8Array } | null = null;

  constructor(baseUrl: string) {
    // The session refreshes through its own unauthenticated client (no bearer interceptor loop).
    const bare = createClient(AuthService, createTransport(baseUrl, async () => null));
    this.session = new SessionStore(async (refreshToken) => {
      const response = await bare.refresh({ refreshToken });
      if (!response.tokens) throw new Error("refresh answered without tokens");
      return response.tokens;
    });
    this.auth = createClient(AuthService, createTransport(baseUrl, () => this.session.accessToken()));
    this.records = new RecordsClient(baseUrl, this.session);
    this.admin = new AdminClient(baseUrl, this.session);
    this.audit = new AuditClient(baseUrl, this.session);
    this.passkeys = new PasskeyClient(this.auth, this.session);
    // Records use this browser's device identity (created by the first-device path when the
    // account has none), so that both features share one account identity.
    this.records.useIdentitySource(async () => {
      const start = await openMessenger(this, { baseUrl });
      return start.kind === "ready" ? start.messenger.deviceAccess().identity : null;
    });
  }

  async register(input: { username: string; displayName: string; password: string }): Promise<Registered> {
    const response = await this.auth.register({
      username: input.username,
      displayName: input.displayName,
      password: input.password,
      role: Role.PATIENT,
    });
    return {
      username: response.user?.username ?? input.username,
      status: statusName(response.user?.status ?? UserStatus.UNSPECIFIED),
    };
  }

  async signIn(username: string, password: string): Promise<SignInResult> {
    this.startOver();
    const response = await this.auth.login({ username, password });
    switch (response.outcome.case) {
      case "tokens":
        this.session.set(response.outcome.value);
        return { kind: "signedIn" };
      case "mfaChallenge": {
        const challenge = response.outcome.value;
        const factors: SecondFactors = {
          totp: challenge.factors.includes(Factor.TOTP),
          recoveryCode: challenge.factors.includes(Factor.RECOVERY_CODE),
          passkey: challenge.factors.includes(Factor.PASSKEY) && challenge.passkeyRequestOptionsJson.length > 0,
          expires: challenge.expireTime ? timestampDate(challenge.expireTime) : null,
        };
        this.challenge = { token: challenge.challengeToken, factors, passkeyOptions: challenge.passkeyRequestOptionsJson };
        return { kind: "secondFactor", ...factors };
      }
      default:
        throw new Error("the server answered the sign-in with neither tokens nor a challenge");
    }
  }

  get awaitingSecondFactor(): boolean {
    return this.challenge !== null;
  }

  /** What the half-finished sign-in accepts (null when none is waiting). */
  get secondFactors(): SecondFactors | null {
    return this.challenge?.factors ?? null;
  }

  async completeSignIn(factor: SecondFactor): Promise<{ recoveryCodesRemaining: number }> {
    const challenge = this.challenge;
    if (challenge === null) throw new Error("no sign-in is waiting for a second factor");
    const code =
      "totp" in factor
        ? { case: "totpCode" as const, value: factor.totp.trim() }
        : "recoveryCode" in factor
          ? { case: "recoveryCode" as const, value: factor.recoveryCode.trim() }
          : { case: "passkeyAssertionJson" as const, value: await this.passkeys.answerChallenge(challenge.passkeyOptions) };
    const response = await this.auth.completeLogin({ challengeToken: challenge.token, code });
    if (!response.tokens) throw new Error("the server answered without tokens");
    this.challenge = null;
    this.session.set(response.tokens);
    // A TOTP sign-in is where adding a passkey is offered (the home screen checks the list).
    this.passkeys.setOffer("totp" in factor);
    return { recoveryCodesRemaining: response.recoveryCodesRemaining };
  }

  /** Passwordless sign-in with a discoverable passkey of this browser or a security key (AAL2). */
  async signInWithPasskey(): Promise<void> {
    this.startOver();
    this.session.set(await this.passkeys.signIn());
  }

  private startOver(): void {
    this.session.clear();
    this.challenge = null;
    this.passkeys.setOffer(false);
  }

  /** Forgets a half-finished sign-in. */
  cancelSignIn(): void {
    this.challenge = null;
  }

  async enrolTotp(): Promise<Enrolment> {
    const response = await this.auth.enrollTotp({});
    return {
      otpauthUri: response.otpauthUri,
      secret: response.secret,
      issuer: response.issuer,
      digits: response.digits,
      periodSeconds: Number(response.period?.seconds ?? 30n),
      expires: response.expireTime ? timestampDate(response.expireTime) : null,
    };
  }

  /** Confirms the enrolment; the session becomes AAL2. Returns the recovery codes (shown once). */
  async confirmTotp(code: string): Promise<string[]> {
    const response = await this.auth.confirmTotp({ code: code.trim() });
    if (response.tokens) this.session.set(response.tokens);
    return [...response.recoveryCodes];
  }

  async whoAmI(): Promise<Identity> {
    const response = await this.auth.whoAmI({});
    const user = response.user;
    const info = this.session.info;
    return {
      userId: user?.userId ?? info?.userId ?? "",
      username: user?.username ?? "",
      displayName: user?.displayName ?? "",
      role: roleName(user?.role ?? Role.UNSPECIFIED),
      status: statusName(user?.status ?? UserStatus.UNSPECIFIED),
      aal: aalName(response.aal),
      mfaEnrolled: user?.mfaEnrolled ?? false,
      recoveryCodesRemaining: response.recoveryCodesRemaining,
      sessionExpires: response.sessionExpireTime ? timestampDate(response.sessionExpireTime) : null,
    };
  }

  /**
   * Changes the password. auth-svc ends every other session of the account (this one stays);
   * returns how many were ended.
   */
  async changePassword(currentPassword: string, newPassword: string): Promise<number> {
    const response = await this.auth.changePassword({ currentPassword, newPassword });
    return response.revokedSessions;
  }

  /** 10 new single-use recovery codes (shown once); the old ones stop working. Needs AAL2. */
  async regenerateRecoveryCodes(): Promise<string[]> {
    return [...(await this.auth.regenerateRecoveryCodes({})).recoveryCodes];
  }

  /** After a page load: signs in again from a session kept in this browser, if there is one. */
  async restoreSession(): Promise<boolean> {
    if (this.session.info !== null || !(await hasStoredSession())) return false;
    return this.session.restore(new SealedSessionPersistence());
  }

  /** Whether this session is kept in this browser across reloads (until sign-out). */
  get staysSignedIn(): boolean {
    return this.session.persisted;
  }

  /** Keeps (or stops keeping) the session in this browser, the refresh token sealed in IndexedDB. */
  async setStaySignedIn(on: boolean): Promise<void> {
    if (on) await this.session.persist(new SealedSessionPersistence());
    else await this.session.forget();
  }

  /** Ends the session on the server (best effort) and wipes it from memory in any case. */
  async signOut(): Promise<void> {
    const refreshToken = this.session.refreshToken;
    const userId = this.session.info?.userId ?? null;
    this.challenge = null;
    this.passkeys.setOffer(false);
    try {
      if (refreshToken !== null) await this.auth.logout({ refreshToken });
    } finally {
      // A session kept in this browser is deleted first (awaited: a reload right after must not find it).
      await this.session.forget().catch(() => undefined);
      this.session.clear();
      // Sign-out also deletes this browser's device state (keys, sessions, opened messages).
      if (userId !== null) await wipeDeviceState(userId);
    }
  }
}

/** The app's client for the page's own origin. */
export function createCaremeshClient(baseUrl: string = location.origin): CaremeshClient {
  return new CaremeshClient(baseUrl);
}
