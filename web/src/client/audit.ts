// The auditor's client (AuditService, as crates/sdk/src/audit.rs and `carectl audit` use it):
// event queries with filters and paging, stored alerts and the live alert stream, and the
// tamper-evidence checks done here in the browser with ./auditLog.ts: the checkpoint's Ed25519
// signature under the verifier key pinned on first use, a consistency proof from the last
// checkpoint this browser verified (kept in memory for the page's life), and an event's inclusion
// proof. Nothing is taken on the server's word.

import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";

import { AlertKind, AlertSeverity, AuditService, SortOrder, type Alert, type Checkpoint, type LogEntry } from "../gen/caremesh/audit/v1/audit_pb";
import { AuditAction, AuditOutcome } from "../gen/caremesh/audit/v1/audit_event_pb";
import { AuthService } from "../gen/caremesh/auth/v1/auth_pb";
import { toHex } from "../crypto/bytes";
import { LogIntegrityError, leafHash, parseVerifierKey, verifyConsistency, verifyInclusion, verifyServedCheckpoint, type NoteVerifier } from "./auditLog";
import type { SessionStore } from "./session";
import { createTransport } from "./transport";

export { LogIntegrityError };

export const AUDIT_ACTIONS = ["create", "read", "update", "delete", "execute"] as const;
export type AuditActionName = (typeof AUDIT_ACTIONS)[number] | "unknown";
export const AUDIT_OUTCOMES = ["success", "denied", "error"] as const;
export type AuditOutcomeName = (typeof AUDIT_OUTCOMES)[number] | "unknown";

const ACTION: Record<AuditActionName, AuditAction> = {
  create: AuditAction.CREATE,
  read: AuditAction.READ,
  update: AuditAction.UPDATE,
  delete: AuditAction.DELETE,
  execute: AuditAction.EXECUTE,
  unknown: AuditAction.UNSPECIFIED,
};
const OUTCOME: Record<AuditOutcomeName, AuditOutcome> = {
  success: AuditOutcome.SUCCESS,
  denied: AuditOutcome.DENIED,
  error: AuditOutcome.ERROR,
  unknown: AuditOutcome.UNSPECIFIED,
};

function nameOf<K extends string, V>(table: Record<K, V>, value: V, fallback: K): K {
  return (Object.keys(table) as K[]).find((key) => table[key] === value) ?? fallback;
}

/** One logged event (ids, codes and metadata only: the log holds no health data). */
export interface AuditEventView {
  readonly leafIndex: bigint;
  readonly eventId: string;
  readonly recorded: Date | null;
  readonly actorUserId: string;
  readonly actorRole: string;
  readonly sourceAddress: string;
  readonly action: AuditActionName;
  readonly operation: string;
  readonly entityType: string;
  readonly entityId: string;
  readonly patientId: string;
  readonly service: string;
  readonly outcome: AuditOutcomeName;
  readonly outcomeReason: string;
  readonly purposeOfUse: string;
  readonly emergency: boolean;
}

export interface EventFilter {
  readonly actorUserId?: string;
  readonly patientId?: string;
  readonly action?: AuditActionName;
  readonly outcome?: AuditOutcomeName;
  readonly from?: Date | null;
  readonly to?: Date | null;
  readonly entityType?: string;
  readonly entityId?: string;
  readonly operation?: string;
  readonly emergencyOnly?: boolean;
  readonly oldestFirst?: boolean;
  readonly pageSize?: number;
}

export type AlertKindName =
  | "failed logins (account)"
  | "failed logins (source)"
  | "emergency access"
  | "denial burst"
  | "many patients accessed"
  | "unknown";

const KIND: Record<AlertKindName, AlertKind> = {
  "failed logins (account)": AlertKind.FAILED_LOGIN_BURST_ACCOUNT,
  "failed logins (source)": AlertKind.FAILED_LOGIN_BURST_SOURCE,
  "emergency access": AlertKind.EMERGENCY_ACCESS,
  "denial burst": AlertKind.DENIAL_BURST,
  "many patients accessed": AlertKind.MANY_PATIENTS_ACCESSED,
  unknown: AlertKind.UNSPECIFIED,
};
const SEVERITY: Record<"low" | "medium" | "high" | "unknown", AlertSeverity> = {
  low: AlertSeverity.LOW,
  medium: AlertSeverity.MEDIUM,
  high: AlertSeverity.HIGH,
  unknown: AlertSeverity.UNSPECIFIED,
};

export interface AlertView {
  readonly alertId: string;
  readonly kind: AlertKindName;
  readonly severity: "low" | "medium" | "high" | "unknown";
  readonly raised: Date | null;
  readonly summary: string;
  readonly actorUserId: string;
  readonly sourceAddress: string;
  readonly patientId: string;
  readonly eventCount: number;
}

/** A checkpoint this browser verified. */
export interface VerifiedCheckpoint {
  readonly origin: string;
  readonly treeSize: bigint;
  readonly rootHex: string;
  readonly signed: Date | null;
  /** The key hash and name of the verifier key the signature was checked with. */
  readonly verifierKey: string;
  /** The tree size of the earlier checkpoint this one was proven to extend (null: the first one here). */
  readonly extends: bigint | null;
}

export interface InclusionResult {
  readonly event: AuditEventView;
  readonly leafIndex: bigint;
  readonly treeSize: bigint;
  readonly rootHex: string;
}

function eventView(entry: LogEntry): AuditEventView {
  const e = entry.event;
  return {
    leafIndex: entry.leafIndex,
    eventId: e?.eventId ?? "",
    recorded: e?.recordedAt ? timestampDate(e.recordedAt) : entry.integrateTime ? timestampDate(entry.integrateTime) : null,
    actorUserId: e?.actor?.userId ?? "",
    actorRole: e?.actor?.role ?? "",
    sourceAddress: e?.actor?.sourceAddress ?? "",
    action: nameOf(ACTION, e?.action ?? AuditAction.UNSPECIFIED, "unknown"),
    operation: e?.operation ?? "",
    entityType: e?.entityType ?? "",
    entityId: e?.entityId ?? "",
    patientId: e?.patientId ?? "",
    service: e?.service ?? "",
    outcome: nameOf(OUTCOME, e?.outcome ?? AuditOutcome.UNSPECIFIED, "unknown"),
    outcomeReason: e?.outcomeReason ?? "",
    purposeOfUse: e?.purposeOfUse ?? "",
    emergency: e?.emergency ?? false,
  };
}

function alertView(alert: Alert): AlertView {
  return {
    alertId: alert.alertId,
    kind: nameOf(KIND, alert.kind, "unknown"),
    severity: nameOf(SEVERITY, alert.severity, "unknown"),
    raised: alert.createTime ? timestampDate(alert.createTime) : null,
    summary: alert.summary,
    actorUserId: alert.actorUserId,
    sourceAddress: alert.sourceAddress,
    patientId: alert.patientId,
    eventCount: alert.eventCount,
  };
}

function served(checkpoint: Checkpoint | undefined, what: string): Checkpoint {
  if (!checkpoint) throw new LogIntegrityError(`${what} came without a checkpoint`);
  return checkpoint;
}

export class AuditClient {
  private readonly audit: Client<typeof AuditService>;
  /** The verifier key as first served to this page (pinned: later answers must match it). */
  private verifier: NoteVerifier | null = null;
  /** The last checkpoint this page verified (memory only). */
  private trusted: { size: bigint; root: Uint8Array } | null = null;
  private readonly auth: Client<typeof AuthService>;
  /** Names of the user ids shown on this page, each looked up once. */
  private readonly names = new Map<string, Promise<string>>();

  /** `transport` replaces the page's gRPC-Web transport (audit.test.ts serves a log in process). */
  constructor(baseUrl: string, session: SessionStore, transport?: Transport) {
    const through = transport ?? createTransport(baseUrl, () => session.accessToken());
    this.audit = createClient(AuditService, through);
    this.auth = createClient(AuthService, through);
  }

  /**
   * "Display name (@username)" of a user id from auth-svc's LookupUser (the log holds ids only),
   * or "" when it has none to give (an unknown id, a refusal, the network).
   */
  nameOf(userId: string): Promise<string> {
    let name = this.names.get(userId);
    if (name === undefined) {
      name = this.auth.lookupUser({ lookup: { case: "userId", value: userId } }).then(
        ({ profile }) => (profile ? `${profile.displayName} (@${profile.username})` : ""),
        () => "",
      );
      this.names.set(userId, name);
    }
    return name;
  }

  /** One page of events matching `filter` (all filters AND; `pageToken` from the previous page). */
  async queryEvents(filter: EventFilter, pageToken = ""): Promise<{ events: AuditEventView[]; nextPageToken: string }> {
    const response = await this.audit.queryEvents({
      pageSize: filter.pageSize ?? 25,
      pageToken,
      actorUserId: filter.actorUserId?.trim() ?? "",
      patientId: filter.patientId?.trim() ?? "",
      action: ACTION[filter.action ?? "unknown"],
      outcome: OUTCOME[filter.outcome ?? "unknown"],
      startTime: filter.from ? timestampFromDate(filter.from) : undefined,
      endTime: filter.to ? timestampFromDate(filter.to) : undefined,
      entityType: filter.entityType?.trim() ?? "",
      entityId: filter.entityId?.trim() ?? "",
      operation: filter.operation?.trim() ?? "",
      emergencyOnly: filter.emergencyOnly ?? false,
      order: filter.oldestFirst ? SortOrder.OLDEST_FIRST : SortOrder.NEWEST_FIRST,
    });
    return { events: response.entries.map(eventView), nextPageToken: response.nextPageToken };
  }

  /** Stored alerts, newest first. */
  async listAlerts(pageToken = ""): Promise<{ alerts: AlertView[]; nextPageToken: string }> {
    const response = await this.audit.listAlerts({ pageSize: 50, pageToken });
    return { alerts: response.alerts.map(alertView), nextPageToken: response.nextPageToken };
  }

  /**
   * Follows the alert stream until `signal` aborts: each alert goes to `onAlert` as it arrives.
   * A dropped stream is resumed from the last cursor (none missed, none twice); `onState` says
   * whether the stream is connected and, after a failure, the error.
   */
  async followAlerts(
    onAlert: (alert: AlertView) => void,
    onState: (state: { connected: boolean; error: unknown }) => void,
    signal: AbortSignal,
  ): Promise<void> {
    let cursor = "";
    while (!signal.aborted) {
      try {
        // Connected once audit-svc answers the call's headers: alerts raised from then on arrive.
        const stream = this.audit.streamAlerts({ cursor }, { signal, onHeader: () => onState({ connected: true, error: null }) });
        for await (const item of stream) {
          cursor = item.cursor;
          if (item.alert) onAlert(alertView(item.alert));
        }
      } catch (error) {
        if (signal.aborted) return;
        onState({ connected: false, error });
        await new Promise((resolve) => setTimeout(resolve, 3_000));
      }
    }
  }

  private async pinnedVerifier(): Promise<NoteVerifier> {
    if (this.verifier !== null) return this.verifier;
    const key = await this.audit.getVerificationKey({});
    const verifier = parseVerifierKey(key.verifierKey);
    if (toHex(verifier.publicKey) !== toHex(key.publicKey)) {
      throw new LogIntegrityError("the verifier key text and the raw public key differ");
    }
    this.verifier = verifier;
    return verifier;
  }

  /**
   * Fetches the latest checkpoint (after signing a new one when `signNow`, auditors only), checks
   * its signature, and proves it extends the last checkpoint this page verified. Throws
   * LogIntegrityError when anything does not verify; the trusted checkpoint then stays as it was.
   */
  async verifyLatest(signNow: boolean): Promise<VerifiedCheckpoint> {
    const verifier = await this.pinnedVerifier();
    const checkpoint = signNow
      ? served((await this.audit.createCheckpoint({})).checkpoint, "CreateCheckpoint")
      : served((await this.audit.getCheckpoint({ treeSize: 0n })).checkpoint, "GetCheckpoint");
    const body = verifyServedCheckpoint(verifier, checkpoint);
    const trusted = this.trusted;
    if (trusted !== null) {
      if (body.size < trusted.size) throw new LogIntegrityError(`the log shrank: ${body.size} events now, ${trusted.size} before`);
      const proof =
        body.size === trusted.size || trusted.size === 0n
          ? []
          : (await this.audit.getConsistencyProof({ firstTreeSize: trusted.size, secondTreeSize: body.size })).hashes;
      verifyConsistency(trusted.size, body.size, proof, trusted.root, body.root);
    }
    this.trusted = { size: body.size, root: body.root };
    return {
      origin: body.origin,
      treeSize: body.size,
      rootHex: toHex(body.root),
      signed: checkpoint.createTime ? timestampDate(checkpoint.createTime) : null,
      verifierKey: verifier.text.split("+").slice(0, 2).join("+"),
      extends: trusted?.size ?? null,
    };
  }

  /** The last checkpoint this page verified (tree size and root), if any. */
  get lastVerified(): { treeSize: bigint; rootHex: string } | null {
    return this.trusted ? { treeSize: this.trusted.size, rootHex: toHex(this.trusted.root) } : null;
  }

  /**
   * Proves that event `eventId` is in the log: the inclusion proof against the latest checkpoint,
   * whose signature is checked with the pinned key; the leaf is hashed here from its bytes.
   */
  async proveEvent(eventId: string): Promise<InclusionResult> {
    const verifier = await this.pinnedVerifier();
    const answer = await this.audit.getInclusionProof({ leaf: { case: "eventId", value: eventId }, treeSize: 0n });
    const checkpoint = served(answer.checkpoint, "GetInclusionProof");
    const entry = answer.entry;
    if (!entry) throw new LogIntegrityError("GetInclusionProof came without the entry");
    if (entry.event?.eventId !== eventId) throw new LogIntegrityError("the proof is for another event");
    const body = verifyServedCheckpoint(verifier, checkpoint);
    const leaf = leafHash(entry.leafValue);
    if (entry.leafHash.length > 0 && toHex(entry.leafHash) !== toHex(leaf)) {
      throw new LogIntegrityError("the served leaf hash is not the hash of the leaf bytes");
    }
    verifyInclusion(leaf, entry.leafIndex, body.size, answer.hashes, body.root);
    return { event: eventView(entry), leafIndex: entry.leafIndex, treeSize: body.size, rootHex: toHex(body.root) };
  }
}
