// Patient records for the UI (DESIGN.md §4), as the Rust SDK's records client does it
// (crates/sdk/src/records.rs, abe.rs): list a patient's records, read one (author signature and
// version hash checked, then FAME-decrypted in the browser with an attribute key that
// abe-authority-svc sealed to this account's identity key), write and edit (FHIR JSON checked,
// patient and emergency clauses added, sealed under the policy, signed, hash-chained), version
// history with its verification status, and entered-in-error. records-svc sees ciphertext only.
// Files kept with a record (docs/protocol.md §13.4, as crates/sdk/src/record_attachments.rs): the
// file sealed and uploaded for a fresh record id through ./attachments.ts's transfer (records-svc
// as its BlobService), then a DocumentReference record naming it (key and digest inside the
// sealed content), about the same patient and under the same policy as the target record.
//
// Attribute keys and public parameters stay in memory (this object); nothing is stored.

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AbeService } from "../gen/caremesh/abe/v1/abe_pb";
import { AuditService } from "../gen/caremesh/audit/v1/audit_pb";
import { AuditAction, AuditOutcome } from "../gen/caremesh/audit/v1/audit_event_pb";
import { AuthService } from "../gen/caremesh/auth/v1/auth_pb";
import { KeyDirectoryService } from "../gen/caremesh/messaging/v1/keys_pb";
import { RecordsService, RecordView, type Record as PbRecord } from "../gen/caremesh/records/v1/records_pb";
import { Encoder, newId, toHex, wipe } from "../crypto/bytes";
import { Policy } from "../crypto/fame";
import {
  openUnderPolicy,
  POLICY_ENVELOPE_VERSION,
  recordContentAad,
  recordPolicy,
  recordVersionHash,
  sealUnderPolicy,
  signRecordVersion,
  verifyRecordVersion,
  type RecordVersion,
} from "../crypto/fameEnvelope";
import { IdentityKeyPair, verifyIdentity, type IdentityPublicKey } from "../crypto/identity";
import { randomBytes, x25519Public } from "../crypto/primitives";
import type { AttachmentRef } from "../crypto/content";
import { blobState, downloadBlob, prepareBlobUpload, safeFileName, uploadBlob, type BlobService, type Progress } from "./attachments";
import type { SessionStore } from "./session";
import { AttributeKeyring } from "./attributeKeys";
import { createTransport } from "./transport";

/** The FHIR kinds the record form knows. */
export const RECORD_KINDS = ["Observation", "Condition", "MedicationStatement", "AllergyIntolerance"] as const;

export interface RecordSummary {
  readonly recordId: string;
  readonly patientId: string;
  readonly kind: string;
  readonly version: number;
  readonly policy: string;
  readonly authorUserId: string;
  readonly enteredInError: { readonly reason: string; readonly at: Date | null; readonly byUserId: string } | null;
  readonly created: Date | null;
  readonly updated: Date | null;
}

export interface OpenedRecord extends RecordSummary {
  /** The decrypted FHIR JSON (a DocumentReference's file key and digest left out). */
  readonly content: string;
  /** The file a DocumentReference holds (`attachFile`), else null. */
  readonly file: RecordFile | null;
}

/** A record's file as the UI shows it (no key, no digest). */
export interface RecordFile {
  /** The writer's name for the file, made safe to save under. */
  readonly fileName: string;
  readonly mediaType: string;
  /** The file's length in bytes. */
  readonly fileLen: number;
  /** The record it is attached to, as `<kind>/<record id>`. */
  readonly related: string;
}

/** A record's file, downloaded and checked (every chunk and the digest). */
export interface OpenedFile {
  readonly blob: Blob;
  readonly fileName: string;
  readonly mediaType: string;
}

/** The FHIR resource type of records that hold a file. */
export const DOCUMENT_REFERENCE = "DocumentReference";
const KEY_EXTENSION = "https://caremesh.dev/fhir/StructureDefinition/attachment-key";
const DIGEST_EXTENSION = "https://caremesh.dev/fhir/StructureDefinition/attachment-blob-sha256";
const URL_PREFIX = "urn:uuid:";

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
}

/** The DocumentReference (FHIR R4) for `attachment`, as the SDK's `document_reference`. */
export function documentReference(patientId: string, related: { kind: string; recordId: string }, attachment: AttachmentRef, now: string): object {
  return {
    resourceType: DOCUMENT_REFERENCE,
    status: "current",
    subject: { reference: `Patient/${patientId}` },
    date: now,
    description: attachment.fileName,
    content: [
      {
        attachment: {
          url: `${URL_PREFIX}${attachment.attachmentId}`,
          size: Number(attachment.fileLen),
          title: attachment.fileName,
          ...(attachment.mediaType === "" ? {} : { contentType: attachment.mediaType }),
          creation: now,
          extension: [
            { url: KEY_EXTENSION, valueBase64Binary: toBase64(attachment.key) },
            { url: DIGEST_EXTENSION, valueBase64Binary: toBase64(attachment.digest) },
          ],
        },
      },
    ],
    context: { related: [{ reference: `${related.kind}/${related.recordId}` }] },
  };
}

type Json = { [key: string]: unknown };
const asObject = (value: unknown): Json | null => (typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Json) : null);
const asText = (value: unknown): string => (typeof value === "string" ? value : "");

/** The attachment a DocumentReference's content names, with its key and digest (the SDK's `attachment_of_document`). */
export function attachmentOfDocument(content: string): { ref: AttachmentRef; related: string } {
  const notOurs = (what: string) =>
    new Error(`the DocumentReference holds no caremesh attachment (${what}): it was not written by "Attach a file" or carectl records attach`);
  let document: Json | null;
  try {
    document = asObject(JSON.parse(content));
  } catch {
    throw notOurs("not JSON");
  }
  const contents = document?.["content"];
  const file = asObject(Array.isArray(contents) ? asObject(contents[0])?.["attachment"] : undefined);
  if (!file) throw notOurs("no content[0].attachment");
  const url = asText(file["url"]);
  if (!url.startsWith(URL_PREFIX)) throw notOurs("its url is not urn:uuid:");
  const extensions = Array.isArray(file["extension"]) ? file["extension"].map(asObject) : [];
  const extension = (name: string): Uint8Array => {
    const value = extensions.find((e) => e?.["url"] === name)?.["valueBase64Binary"];
    if (typeof value !== "string") throw notOurs("no key or digest extension");
    let bytes: Uint8Array;
    try {
      bytes = fromBase64(value);
    } catch {
      throw notOurs("the key or digest is not base64");
    }
    if (bytes.length !== 32) throw notOurs("the key or digest is not 32 bytes");
    return bytes;
  };
  const size = file["size"];
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw notOurs("no size");
  const relatedList = asObject(document?.["context"])?.["related"];
  const related = asObject(Array.isArray(relatedList) ? relatedList[0] : undefined);
  return {
    ref: {
      attachmentId: url.slice(URL_PREFIX.length),
      key: extension(KEY_EXTENSION),
      digest: extension(DIGEST_EXTENSION),
      fileLen: BigInt(size),
      mediaType: asText(file["contentType"]),
      fileName: asText(file["title"]),
    },
    related: asText(related?.["reference"]),
  };
}

/** A DocumentReference's content without the file's key and digest (what the UI may show). */
function withoutFileSecrets(content: string): string {
  const document = JSON.parse(content) as { content?: { attachment?: { extension?: unknown } }[] };
  for (const item of document.content ?? []) if (item.attachment) delete item.attachment.extension;
  return JSON.stringify(document);
}

/** records-svc as a BlobService (as the SDK's `RecordBlobs`). */
function recordBlobs(api: Client<typeof RecordsService>): BlobService {
  return {
    create: async (attachmentId, recordId, blobLength) =>
      blobState((await api.createRecordAttachment({ attachmentId, recordId, blobLength: BigInt(blobLength) })).attachment),
    state: async (attachmentId) => blobState((await api.getRecordAttachment({ attachmentId })).attachment),
    append: async (attachmentId, offset, data) =>
      blobState((await api.appendRecordAttachment({ attachmentId, offset: BigInt(offset), data })).attachment),
    download: (attachmentId, signal) => api.downloadRecordAttachment({ attachmentId, offset: 0n }, { signal }),
  };
}

export interface VersionEntry extends RecordSummary {
  /** "verified", or why the version's signature, hash or chain did not check. */
  readonly verification: string;
}

export interface PatientRef {
  readonly userId: string;
  readonly username: string;
  readonly displayName: string;
}

/** One line of the patient's "who accessed my records" report. */
export interface AccessEntry {
  readonly at: Date | null;
  readonly who: string;
  readonly role: string;
  readonly action: string;
  readonly operation: string;
  readonly purpose: string;
  readonly emergency: boolean;
  readonly outcome: string;
}

/** A granted break-glass access. */
export interface EmergencyGrant {
  readonly grantId: string;
  readonly patientId: string;
  readonly reason: string;
  readonly expires: Date | null;
}

/** What a record version is sealed and signed over, besides its content. */
interface RecordTemplate {
  readonly recordId: string;
  readonly patientId: string;
  readonly kind: string;
  readonly version: bigint;
  readonly policy: string;
  readonly previousVersionHash: Uint8Array;
}

/** Where this browser's account identity comes from (the device state, once it exists). */
export type IdentitySource = () => Promise<IdentityKeyPair | null>;

function summary(record: PbRecord): RecordSummary {
  const eie = record.enteredInError;
  return {
    recordId: record.recordId,
    patientId: record.patientId,
    kind: record.kind,
    version: Number(record.version),
    policy: record.policy,
    authorUserId: record.authorUserId,
    enteredInError: eie
      ? { reason: eie.reason, at: eie.markTime ? timestampDate(eie.markTime) : null, byUserId: eie.markedByUserId }
      : null,
    created: record.createTime ? timestampDate(record.createTime) : null,
    updated: record.updateTime ? timestampDate(record.updateTime) : null,
  };
}

function signedVersion(record: PbRecord): RecordVersion {
  const envelope = record.envelope;
  if (!envelope) throw new Error("the record came without its envelope");
  return {
    recordId: record.recordId,
    patientId: record.patientId,
    kind: record.kind,
    version: record.version,
    policy: record.policy,
    envelope: {
      version: envelope.version,
      paramsVersion: envelope.paramsVersion,
      encapsulatedKey: envelope.encapsulatedKey,
      nonce: envelope.nonce,
      ciphertext: envelope.ciphertext,
    },
    authorUserId: record.authorUserId,
    authorIdentityKeyId: record.authorIdentityKeyId,
    previousVersionHash: record.previousVersionHash,
  };
}

/** Checks `content` is FHIR JSON of type `kind` (the SDK's `check_fhir`); returns the reason when not. */
export function fhirProblem(kind: string, content: string): string | null {
  let value: unknown;
  try {
    value = JSON.parse(content);
  } catch (error) {
    return `the record content is not JSON: ${error instanceof Error ? error.message : String(error)}`;
  }
  const declared =
    typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as { resourceType?: unknown }).resourceType
      : undefined;
  if (typeof declared !== "string") return 'the record content is not a FHIR resource: it has no "resourceType"';
  if (declared !== kind) return `the content is a FHIR ${declared}, not a ${kind}: choose ${declared} or fix the content`;
  return null;
}

function signedPrekeyMessage(userId: string, identityKeyId: string, prekeyId: string, prekeyPublic: Uint8Array): Uint8Array {
  return new Encoder("caremesh-key-signature-v1")
    .field("signed-prekey")
    .field(userId)
    .field(identityKeyId)
    .field(prekeyId)
    .field(prekeyPublic)
    .finish();
}

export class RecordsClient {
  private readonly records: Client<typeof RecordsService>;
  private readonly abe: Client<typeof AbeService>;
  private readonly keyDirectory: Client<typeof KeyDirectoryService>;
  private readonly auth: Client<typeof AuthService>;
  private readonly audit: Client<typeof AuditService>;
  private readonly keyring: AttributeKeyring;
  private identities = new Map<string, IdentityPublicKey>();
  /** An identity this object created and published (when no device state provides one). */
  private ownIdentity: IdentityKeyPair | null = null;
  private identitySource: IdentitySource | null = null;
  /** The files of DocumentReference records opened here, by record id (their keys: memory only). */
  private files = new Map<string, AttachmentRef>();

  constructor(
    baseUrl: string,
    private readonly session: SessionStore,
  ) {
    const transport = createTransport(baseUrl, () => session.accessToken());
    this.records = createClient(RecordsService, transport);
    this.abe = createClient(AbeService, transport);
    this.keyDirectory = createClient(KeyDirectoryService, transport);
    this.auth = createClient(AuthService, transport);
    this.audit = createClient(AuditService, transport);
    this.keyring = new AttributeKeyring(this.abe, () => this.userId(), () => this.identity());
    // Keys belong to the signed-in account: forget them when it changes or signs out.
    session.subscribe((info) => {
      if (info === null || info.userId !== this.userIdSeen) this.forget();
      this.userIdSeen = info?.userId ?? null;
    });
  }

  private userIdSeen: string | null = null;

  /** Use the device state's account identity (the messaging device) instead of a records-only one. */
  useIdentitySource(source: IdentitySource): void {
    this.identitySource = source;
  }

  /** Who accessed your records (patients): newest first, other people's accesses only. */
  async accessReport(): Promise<AccessEntry[]> {
    const response = await this.audit.listPatientAccesses({ patientId: this.userId(), pageSize: 200, includeOwn: false });
    return response.accesses.map((a) => ({
      at: a.accessTime ? timestampDate(a.accessTime) : null,
      who: a.actorDisplayName || a.actorUsername || a.actorUserId,
      role: a.actorRole,
      action: (AuditAction[a.action] ?? "UNSPECIFIED").toLowerCase(),
      operation: a.operation,
      purpose: a.purposeOfUse,
      emergency: a.emergency,
      outcome: (AuditOutcome[a.outcome] ?? "UNSPECIFIED").toLowerCase(),
    }));
  }

  /**
   * Break glass (doctors): asks for emergency access to `patientId`'s records with a reason; keeps
   * the `emergency:<patient>` key it comes with, and refreshes the session so the access token
   * carries the attribute too (records-svc checks both). Audited; auditors are alerted.
   */
  async requestEmergencyAccess(patientId: string, reason: string, minutes: number): Promise<EmergencyGrant> {
    const identity = await this.identity();
    const response = await this.abe.requestEmergencyAccess({
      patientId,
      reason,
      duration: { seconds: BigInt(Math.round(minutes * 60)), nanos: 0 },
      identityKeyId: identity.keyId,
    });
    const grant = response.grant;
    if (!grant) throw new Error("the authority answered without the grant");
    this.keyring.add(identity, response.userKey);
    const refreshToken = this.session.refreshToken;
    if (refreshToken !== null) {
      const refreshed = await this.auth.refresh({ refreshToken });
      if (refreshed.tokens) this.session.set(refreshed.tokens);
    }
    return {
      grantId: grant.grantId,
      patientId: grant.patientId,
      reason: grant.reason,
      expires: grant.expireTime ? timestampDate(grant.expireTime) : null,
    };
  }

  /** Drops attribute keys and any identity held for records. */
  forget(): void {
    this.keyring.wipe();
    this.identities.clear();
    for (const ref of this.files.values()) ref.key.fill(0);
    this.files.clear();
    this.ownIdentity?.wipe();
    this.ownIdentity = null;
  }

  private userId(): string {
    const info = this.session.info;
    if (info === null) throw new Error("you are signed out: sign in again");
    return info.userId;
  }

  /**
   * This account's identity key pair: from the device state when one is plugged in; else, when
   * the account has published no identity yet, a new one published now (identity + signed
   * prekey, as the SDK's first publication). An identity published elsewhere cannot be used here.
   */
  private async identity(): Promise<IdentityKeyPair> {
    if (this.identitySource !== null) {
      const fromDevice = await this.identitySource();
      if (fromDevice !== null) return fromDevice;
    }
    if (this.ownIdentity !== null) return this.ownIdentity;
    const userId = this.userId();
    let existing = false;
    try {
      const response = await this.keyDirectory.getIdentityKey({ userId, keyId: "" });
      existing = response.identityKey !== undefined;
    } catch (error) {
      if (!(error instanceof ConnectError && error.code === Code.NotFound)) throw error;
    }
    if (existing) {
      throw new Error(
        "your account keys were created on another device, and this browser does not hold them: link this browser from that device to read records here",
      );
    }
    const identity = IdentityKeyPair.generate(newId(randomBytes));
    const published = identity.publish(userId);
    const prekeySecret = randomBytes(32);
    const prekeyPublic = x25519Public(prekeySecret);
    wipe(prekeySecret);
    const prekeyId = newId(randomBytes);
    await this.keyDirectory.publishKeyBundle({
      identityKey: {
        keyId: published.keyId,
        signingPublicKey: published.signingPublicKey,
        dhPublicKey: published.dhPublicKey,
        dhPublicKeySignature: published.signature,
      },
      signedPrekey: {
        keyId: prekeyId,
        publicKey: prekeyPublic,
        signature: identity.signRaw(signedPrekeyMessage(userId, identity.keyId, prekeyId, prekeyPublic)),
      },
      oneTimePrekeys: [],
    });
    this.ownIdentity = identity;
    return identity;
  }

  /** The author's identity (verified binding signature), by user and key id. */
  private async authorIdentity(userId: string, keyId: string): Promise<IdentityPublicKey> {
    const own = this.ownIdentity ?? (this.identitySource ? await this.identitySource() : null);
    if (own !== null && userId === this.session.info?.userId && own.keyId === keyId) return own.public();
    const cacheKey = `${userId}\u0000${keyId}`;
    const cached = this.identities.get(cacheKey);
    if (cached) return cached;
    const response = await this.keyDirectory.getIdentityKey({ userId, keyId });
    const key = response.identityKey;
    if (!key) throw new Error("the key directory answered without the author's identity key");
    const identity = verifyIdentity(
      { keyId: key.keyId, signingPublicKey: key.signingPublicKey, dhPublicKey: key.dhPublicKey, signature: key.dhPublicKeySignature },
      userId,
    );
    this.identities.set(cacheKey, identity);
    return identity;
  }

  /** Signature and hash of a full-view version; throws with the reason. */
  private async verify(record: PbRecord): Promise<void> {
    const version = signedVersion(record);
    const author = await this.authorIdentity(record.authorUserId, record.authorIdentityKeyId);
    verifyRecordVersion(version, author, record.authorSignature);
    if (toHex(recordVersionHash(version)) !== toHex(record.versionHash)) {
      throw new Error("the record's version hash does not match its content");
    }
  }

  private async decrypt(record: PbRecord): Promise<string> {
    await this.verify(record);
    const envelope = record.envelope!;
    const policy = Policy.parse(record.policy);
    const key = await this.keyring.keyFor(policy, envelope.paramsVersion, "record");
    const aad = recordContentAad(record.recordId, record.patientId, record.kind, record.version);
    const plaintext = openUnderPolicy(key, envelope, aad);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(plaintext);
    } finally {
      wipe(plaintext);
    }
  }

  /** Finds a patient by username or user id (for doctors and nurses). */
  async findPatient(usernameOrId: string): Promise<PatientRef> {
    const text = usernameOrId.trim();
    const byId = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(text);
    const response = await this.auth.lookupUser({ lookup: byId ? { case: "userId", value: text } : { case: "username", value: text } });
    const profile = response.profile;
    if (!profile) throw new Error(`no user ${text}`);
    return { userId: profile.userId, username: profile.username, displayName: profile.displayName };
  }

  /** A patient's records, metadata only (empty `patientId`: your own, as a patient). */
  async list(patientId = "", includeEnteredInError = true): Promise<RecordSummary[]> {
    const out: RecordSummary[] = [];
    let pageToken = "";
    do {
      const response = await this.records.listRecords({
        patientId,
        pageSize: 100,
        pageToken,
        view: RecordView.BASIC,
        includeEnteredInError,
      });
      out.push(...response.records.map(summary));
      pageToken = response.nextPageToken;
    } while (pageToken !== "" && out.length < 1000);
    return out;
  }

  /**
   * One version (0 = the latest), verified and decrypted here. A DocumentReference's file key
   * and digest stay in this object (for `openAttachment`), out of the content handed out.
   */
  async open(recordId: string, version = 0): Promise<OpenedRecord> {
    const response = await this.records.getRecord({ recordId, version: BigInt(version), view: RecordView.FULL });
    const record = response.record;
    if (!record) throw new Error("records-svc answered without the record");
    const content = await this.decrypt(record);
    if (record.kind !== DOCUMENT_REFERENCE) return { ...summary(record), content, file: null };
    const { ref, related } = attachmentOfDocument(content);
    this.files.set(recordId, ref);
    return {
      ...summary(record),
      content: withoutFileSecrets(content),
      file: {
        fileName: safeFileName(ref.fileName, `attachment-${ref.attachmentId}`),
        mediaType: ref.mediaType,
        fileLen: Number(ref.fileLen),
        related,
      },
    };
  }

  /**
   * Attaches `file` to the record `recordId` (doctors and nurses who can read it): seals and
   * uploads it for a fresh record id (resuming a cut upload), then writes the DocumentReference
   * record naming it, about the same patient and under the target's very policy. Returns it.
   */
  async attachFile(recordId: string, file: File, onProgress?: Progress): Promise<RecordSummary> {
    const target = (await this.records.getRecord({ recordId, version: 0n, view: RecordView.BASIC })).record;
    if (!target) throw new Error("records-svc answered without the record");
    const upload = prepareBlobUpload(file);
    const attachment = await uploadBlob(recordBlobs(this.records), upload, onProgress);
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
    const document = documentReference(target.patientId, { kind: target.kind, recordId: target.recordId }, attachment, now);
    return this.write(
      {
        recordId: upload.parentId,
        patientId: target.patientId,
        kind: DOCUMENT_REFERENCE,
        version: 1n,
        // Already the complete policy (with the patient and emergency clauses).
        policy: target.policy,
        previousVersionHash: new Uint8Array(0),
      },
      JSON.stringify(document),
    );
  }

  /**
   * The file of a DocumentReference record (opened with `open`), downloaded from records-svc and
   * checked chunk by chunk and by its digest. records-svc refuses a reader its policy does not
   * admit (POLICY_NOT_SATISFIED), with its message.
   */
  async openAttachment(document: OpenedRecord, onProgress?: Progress, signal?: AbortSignal): Promise<OpenedFile> {
    if (document.kind !== DOCUMENT_REFERENCE || document.file === null) {
      throw new Error(`this record is a ${document.kind}, not a file: open its DocumentReference`);
    }
    let ref = this.files.get(document.recordId);
    if (ref === undefined) {
      await this.open(document.recordId);
      ref = this.files.get(document.recordId);
    }
    if (ref === undefined) throw new Error("the record holds no file");
    const blob = await downloadBlob(recordBlobs(this.records), ref, onProgress, signal);
    return { blob, fileName: document.file.fileName, mediaType: ref.mediaType };
  }

  /** Every version, newest first, each with its verification: signature, hash and the chain to the previous one. */
  async history(recordId: string): Promise<VersionEntry[]> {
    const versions: PbRecord[] = [];
    let pageToken = "";
    do {
      const response = await this.records.listRecordVersions({ recordId, pageSize: 100, pageToken, view: RecordView.FULL });
      versions.push(...response.versions);
      pageToken = response.nextPageToken;
    } while (pageToken !== "" && versions.length < 1000);
    const byVersion = new Map(versions.map((v) => [v.version, v]));
    const out: VersionEntry[] = [];
    for (const v of versions) {
      let verification = "verified";
      try {
        await this.verify(v);
        const previous = byVersion.get(v.version - 1n);
        if (v.version === 1n ? v.previousVersionHash.length !== 0 : previous !== undefined && toHex(previous.versionHash) !== toHex(v.previousVersionHash)) {
          verification = "the version does not chain to the previous one";
        }
      } catch (error) {
        verification = error instanceof Error ? error.message : String(error);
      }
      out.push({ ...summary(v), verification });
    }
    return out;
  }

  private async seal(template: RecordTemplate, content: string) {
    const problem = fhirProblem(template.kind, content);
    if (problem !== null) throw new Error(problem);
    const { version: paramsVersion, params } = await this.keyring.publicParams();
    const identity = await this.identity();
    const aad = recordContentAad(template.recordId, template.patientId, template.kind, template.version);
    const sealed = sealUnderPolicy(params, Policy.parse(template.policy), aad, new TextEncoder().encode(content));
    const envelope = { version: POLICY_ENVELOPE_VERSION, paramsVersion, ...sealed };
    const signature = signRecordVersion(
      { ...template, envelope, authorUserId: this.userId(), authorIdentityKeyId: identity.keyId },
      identity,
    );
    return { envelope, authorIdentityKeyId: identity.keyId, authorSignature: signature };
  }

  /** Writes a new record (version 1). `policy`: who else may read it; the patient and emergency access are always added. */
  create(input: { patientId: string; kind: string; policy: string; content: string }): Promise<RecordSummary> {
    return this.write(
      {
        recordId: newId(randomBytes),
        patientId: input.patientId,
        kind: input.kind,
        version: 1n,
        policy: recordPolicy(input.policy, input.patientId),
        previousVersionHash: new Uint8Array(0),
      },
      input.content,
    );
  }

  /** Seals, signs and creates version 1 of `template`. */
  private async write(template: RecordTemplate, content: string): Promise<RecordSummary> {
    const sealed = await this.seal(template, content);
    const response = await this.records.createRecord({
      recordId: template.recordId,
      patientId: template.patientId,
      kind: template.kind,
      policy: template.policy,
      ...sealed,
    });
    if (!response.record) throw new Error("records-svc answered without the record");
    return summary(response.record);
  }

  /** A new version with new content (and, when given, a new policy). */
  async edit(recordId: string, content: string, policy?: string): Promise<RecordSummary> {
    const latest = (await this.records.getRecord({ recordId, version: 0n, view: RecordView.BASIC })).record;
    if (!latest) throw new Error("records-svc answered without the record");
    const template = {
      recordId,
      patientId: latest.patientId,
      kind: latest.kind,
      version: latest.version + 1n,
      policy: policy === undefined ? latest.policy : recordPolicy(policy, latest.patientId),
      previousVersionHash: latest.versionHash,
    };
    const sealed = await this.seal(template, content);
    const response = await this.records.updateRecord({
      recordId,
      etag: latest.etag,
      version: template.version,
      policy: template.policy,
      previousVersionHash: template.previousVersionHash,
      ...sealed,
    });
    if (!response.record) throw new Error("records-svc answered without the record");
    return summary(response.record);
  }

  /** Marks a version (0 = the latest) entered-in-error; it stays stored and listed. */
  async markEnteredInError(recordId: string, version: number, reason: string): Promise<RecordSummary> {
    const latest = (await this.records.getRecord({ recordId, version: 0n, view: RecordView.BASIC })).record;
    if (!latest) throw new Error("records-svc answered without the record");
    const response = await this.records.markEnteredInError({
      recordId,
      version: version === 0 ? latest.version : BigInt(version),
      etag: latest.etag,
      reason,
    });
    if (!response.record) throw new Error("records-svc answered without the record");
    return summary(response.record);
  }
}

