// Passkeys (issue #17): WebAuthn ceremonies against auth-svc, which runs webauthn-rs 0.5. The only
// module of the app that touches navigator.credentials (src/architecture.test.ts keeps the UI off
// it).
//
// auth-svc's options travel as JSON bytes, `{"publicKey": {...}}`, with the binary members
// (challenge, user.id, excludeCredentials[].id, allowCredentials[].id) base64url. They are
// converted here rather than with PublicKeyCredential.parse*OptionsFromJSON, which not every
// browser has and which may refuse members it does not know: one deterministic path everywhere.
// The answers go back as the WebAuthn Level 3 JSON of the credential, written here too (not every
// browser has PublicKeyCredential.toJSON()), with the client extension results under
// `extensions`, the name webauthn-rs reads.

import type { Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import type { AuthService, Passkey, SessionTokens } from "../gen/caremesh/auth/v1/auth_pb";
import { toBase64 } from "./auditLog";
import type { SessionStore } from "./session";

// ---- base64url (RFC 4648 §5, no padding) ----

export function base64urlEncode(bytes: ArrayBuffer | ArrayBufferView): string {
  const view = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return toBase64(view).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Decodes base64url, padded or not (standard base64's `+/` accepted too, as webauthn-rs does). */
export function base64urlDecode(text: string): Uint8Array<ArrayBuffer> {
  const bare = text.replace(/=+$/, "");
  if (!/^[A-Za-z0-9_\-+/]*$/.test(bare) || bare.length % 4 === 1) {
    throw new PasskeyError("BadServerOptions", "auth-svc sent a value that is not base64url");
  }
  const binary = atob(bare.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (bare.length % 4)) % 4));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function toArrayBuffer(value: unknown, what: string): ArrayBuffer {
  if (typeof value !== "string") throw new PasskeyError("BadServerOptions", `auth-svc's passkey options have no ${what}`);
  return base64urlDecode(value).buffer;
}

// ---- errors ----

export type PasskeyErrorCode = "PasskeyCancelled" | "PasskeyAlreadyRegistered" | "PasskeyNotSupported" | "PasskeyRefusedHere" | "BadServerOptions";

const ADVICE: Record<PasskeyErrorCode, string> = {
  PasskeyCancelled: "Try again, and confirm with your passkey (fingerprint, face, PIN or security key) when the browser asks.",
  PasskeyAlreadyRegistered: "This device or security key already holds a passkey of your account: nothing to add. Use another one, or rename the existing passkey.",
  PasskeyNotSupported: "Use a browser or device with passkey support, or sign in with your password and code.",
  PasskeyRefusedHere: "Open caremesh at its usual HTTPS address and try again.",
  BadServerOptions: "Try again. If it keeps failing, contact support.",
};

/** A ceremony the browser (not the server) ended: cancelled, refused or unsupported. */
export class PasskeyError extends Error {
  constructor(
    readonly code: PasskeyErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "PasskeyError";
  }

  get advice(): string {
    return ADVICE[this.code];
  }
}

/** The browser's DOMException as the user should read it. */
export function passkeyFailure(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof PasskeyError) return error;
  switch (error.name) {
    // The prompt was cancelled, timed out, or no authenticator had a matching passkey: WebAuthn
    // does not tell these apart (on purpose, for privacy).
    case "NotAllowedError":
    case "AbortError":
      return new PasskeyError("PasskeyCancelled", "The passkey prompt was cancelled or timed out, or no passkey of yours was found.");
    case "InvalidStateError":
      return new PasskeyError("PasskeyAlreadyRegistered", "This authenticator already holds one of your passkeys.");
    case "NotSupportedError":
      return new PasskeyError("PasskeyNotSupported", "This browser or authenticator does not support the passkey options caremesh needs.");
    case "SecurityError":
      return new PasskeyError("PasskeyRefusedHere", "The browser refused passkeys for this address.");
    default:
      return error;
  }
}

// ---- options: auth-svc's JSON → the browser's dictionaries ----

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A copy without null members: serde writes `null` for an absent Option, WebIDL reads it as a value. */
function withoutNulls(value: Json): Json {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (!isObject(value)) return value;
  const out: JsonObject = {};
  for (const [key, member] of Object.entries(value)) if (member !== null) out[key] = withoutNulls(member);
  return out;
}

function parseOptions(json: Uint8Array | string | unknown): JsonObject {
  let parsed: unknown = json;
  if (json instanceof Uint8Array || typeof json === "string") {
    try {
      parsed = JSON.parse(typeof json === "string" ? json : new TextDecoder().decode(json));
    } catch {
      throw new PasskeyError("BadServerOptions", "auth-svc's passkey options are not JSON");
    }
  }
  if (!isObject(parsed) || !isObject(parsed["publicKey"])) {
    throw new PasskeyError("BadServerOptions", "auth-svc's passkey options have no publicKey");
  }
  return withoutNulls(parsed) as JsonObject;
}

function descriptors(list: Json | undefined, what: string): PublicKeyCredentialDescriptor[] | undefined {
  if (list === undefined) return undefined;
  if (!Array.isArray(list)) throw new PasskeyError("BadServerOptions", `auth-svc's ${what} is not a list`);
  return list.map((entry) => {
    if (!isObject(entry)) throw new PasskeyError("BadServerOptions", `auth-svc's ${what} holds a non-object`);
    return { ...(entry as object), id: toArrayBuffer(entry["id"], `${what} id`) } as PublicKeyCredentialDescriptor;
  });
}

/** `{"publicKey": PublicKeyCredentialCreationOptionsJSON}` → options for navigator.credentials.create. */
export function creationOptionsFromJson(json: Uint8Array | string | unknown): CredentialCreationOptions {
  const publicKey = parseOptions(json)["publicKey"] as JsonObject;
  const user = publicKey["user"];
  if (!isObject(user)) throw new PasskeyError("BadServerOptions", "auth-svc's passkey options have no user");
  const converted = {
    ...(publicKey as object),
    challenge: toArrayBuffer(publicKey["challenge"], "challenge"),
    user: { ...(user as object), id: toArrayBuffer(user["id"], "user id") },
  } as PublicKeyCredentialCreationOptions;
  const exclude = descriptors(publicKey["excludeCredentials"], "excludeCredentials");
  if (exclude !== undefined) converted.excludeCredentials = exclude;
  return { publicKey: converted };
}

/**
 * `{"publicKey": PublicKeyCredentialRequestOptionsJSON, "mediation"?}` → options for
 * navigator.credentials.get. Conditional mediation is dropped: here a passkey is always asked
 * for by a button (a modal prompt), never offered from a form field's autofill.
 */
export function requestOptionsFromJson(json: Uint8Array | string | unknown): CredentialRequestOptions {
  const parsed = parseOptions(json);
  const publicKey = parsed["publicKey"] as JsonObject;
  const converted = {
    ...(publicKey as object),
    challenge: toArrayBuffer(publicKey["challenge"], "challenge"),
  } as PublicKeyCredentialRequestOptions;
  const allow = descriptors(publicKey["allowCredentials"], "allowCredentials");
  if (allow !== undefined) converted.allowCredentials = allow;
  const mediation = parsed["mediation"];
  return typeof mediation === "string" && mediation !== "conditional"
    ? { publicKey: converted, mediation: mediation as CredentialMediationRequirement }
    : { publicKey: converted };
}

// ---- answers: the browser's credential → WebAuthn L3 JSON ----

/** What this module reads of a PublicKeyCredential (a structural type, so tests can give plain objects). */
export interface CredentialLike {
  readonly id: string;
  readonly rawId: ArrayBuffer;
  readonly type: string;
  getClientExtensionResults(): unknown;
}

export interface RegistrationCredentialLike extends CredentialLike {
  readonly response: {
    readonly attestationObject: ArrayBuffer;
    readonly clientDataJSON: ArrayBuffer;
    getTransports?(): string[];
  };
}

export interface AssertionCredentialLike extends CredentialLike {
  readonly response: {
    readonly authenticatorData: ArrayBuffer;
    readonly clientDataJSON: ArrayBuffer;
    readonly signature: ArrayBuffer;
    readonly userHandle: ArrayBuffer | null;
  };
}

/** Extension results as JSON: binary members base64url (as toJSON() writes them). */
function extensionsJson(value: unknown): Json {
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return base64urlEncode(value);
  if (Array.isArray(value)) return value.map(extensionsJson);
  if (typeof value === "object" && value !== null) {
    const out: JsonObject = {};
    for (const [key, member] of Object.entries(value)) if (member !== undefined) out[key] = extensionsJson(member);
    return out;
  }
  return (value ?? null) as Json;
}

/** The L3 JSON around a ceremony's `response`, with webauthn-rs's name for the extension results. */
function credentialJson(credential: CredentialLike, response: JsonObject): JsonObject {
  const extensions = extensionsJson(credential.getClientExtensionResults());
  return { id: credential.id, rawId: base64urlEncode(credential.rawId), type: credential.type, response, extensions: isObject(extensions) ? extensions : {} };
}

export function registrationJson(credential: RegistrationCredentialLike): JsonObject {
  const response = credential.response;
  return credentialJson(credential, {
    attestationObject: base64urlEncode(response.attestationObject),
    clientDataJSON: base64urlEncode(response.clientDataJSON),
    transports: typeof response.getTransports === "function" ? [...response.getTransports()] : [],
  });
}

export function assertionJson(credential: AssertionCredentialLike): JsonObject {
  const response = credential.response;
  return credentialJson(credential, {
    authenticatorData: base64urlEncode(response.authenticatorData),
    clientDataJSON: base64urlEncode(response.clientDataJSON),
    signature: base64urlEncode(response.signature),
    userHandle: response.userHandle === null ? null : base64urlEncode(response.userHandle),
  });
}

/** The browser side of the ceremonies (navigator.credentials; a test can pass another). */
export interface Authenticators {
  create(options: CredentialCreationOptions): Promise<Credential | null>;
  get(options: CredentialRequestOptions): Promise<Credential | null>;
}

function browserAuthenticators(): Authenticators {
  if (typeof navigator === "undefined" || !navigator.credentials || typeof PublicKeyCredential === "undefined") {
    throw new PasskeyError("PasskeyNotSupported", "This browser does not support passkeys.");
  }
  return navigator.credentials;
}

/** One ceremony: the browser's prompt, its refusals as PasskeyErrors, the credential as JSON bytes. */
async function ceremony<T>(prompt: Promise<Credential | null>, toJson: (credential: T) => JsonObject): Promise<Uint8Array> {
  const credential = await prompt.catch((error: unknown) => {
    throw passkeyFailure(error);
  });
  if (credential === null) throw new PasskeyError("PasskeyCancelled", "The browser returned no passkey.");
  return new TextEncoder().encode(JSON.stringify(toJson(credential as unknown as T)));
}

/** Runs navigator.credentials.create for auth-svc's options; the answer as JSON bytes. */
export async function createCredentialJson(optionsJson: Uint8Array, authenticators?: Authenticators): Promise<Uint8Array> {
  const options = creationOptionsFromJson(optionsJson);
  return ceremony((authenticators ?? browserAuthenticators()).create(options), registrationJson);
}

/** Runs navigator.credentials.get for auth-svc's options (a sign-in or a second factor); the answer as JSON bytes. */
export async function assertionJsonFor(optionsJson: Uint8Array, authenticators?: Authenticators): Promise<Uint8Array> {
  const options = requestOptionsFromJson(optionsJson);
  return ceremony((authenticators ?? browserAuthenticators()).get(options), assertionJson);
}

// ---- the calls ----

/** A passkey as the UI shows it (no credential material). */
export interface PasskeyView {
  readonly passkeyId: string;
  readonly name: string;
  readonly credentialId: string;
  readonly created: Date | null;
  readonly lastUsed: Date | null;
  /** The credential may be synced to the user's other devices (backup eligible). */
  readonly syncable: boolean;
  /** It was synced (backed up) at its last use. */
  readonly synced: boolean;
}

export interface PasskeyList {
  readonly passkeys: readonly PasskeyView[];
  /** An admin requires passkeys for the user's role. */
  readonly required: boolean;
}

export interface PasskeyAdded {
  readonly passkey: PasskeyView;
  /** When it was the account's first second factor: the new recovery codes (shown once). */
  readonly recoveryCodes: readonly string[];
}

function passkeyView(passkey: Passkey | undefined): PasskeyView {
  if (!passkey) throw new Error("auth-svc answered without the passkey");
  return {
    passkeyId: passkey.passkeyId,
    name: passkey.name,
    credentialId: passkey.credentialId,
    created: passkey.createTime ? timestampDate(passkey.createTime) : null,
    lastUsed: passkey.lastUseTime ? timestampDate(passkey.lastUseTime) : null,
    syncable: passkey.backupEligible,
    synced: passkey.backupState,
  };
}

/** The signed-in user's passkeys, and passwordless sign-in (AuthService's passkey RPCs). */
export class PasskeyClient {
  /** Set after a sign-in with a TOTP code, until the user adds a passkey or says "not now". */
  private offer = false;

  constructor(
    private readonly auth: Client<typeof AuthService>,
    private readonly session: SessionStore,
    private readonly authenticators?: Authenticators,
  ) {}

  /** Every page of the caller's passkeys, oldest first. */
  async list(): Promise<PasskeyList> {
    const passkeys: PasskeyView[] = [];
    let pageToken = "";
    for (;;) {
      const page = await this.auth.listPasskeys({ pageToken });
      passkeys.push(...page.passkeys.map(passkeyView));
      if (page.nextPageToken === "") return { passkeys, required: page.passkeyRequired };
      pageToken = page.nextPageToken;
    }
  }

  /**
   * Registers a passkey of this browser's authenticator under `name`. The account's first second
   * factor also upgrades the session to AAL2: its new tokens replace the old ones here.
   */
  async add(name: string): Promise<PasskeyAdded> {
    const start = await this.auth.startPasskeyRegistration({});
    const credentialJson = await createCredentialJson(start.creationOptionsJson, this.authenticators);
    const response = await this.auth.finishPasskeyRegistration({ ceremonyToken: start.ceremonyToken, credentialJson, name: name.trim() });
    if (response.tokens) this.session.set(response.tokens);
    this.offer = false;
    return { passkey: passkeyView(response.passkey), recoveryCodes: [...response.recoveryCodes] };
  }

  async rename(passkeyId: string, name: string): Promise<PasskeyView> {
    return passkeyView((await this.auth.renamePasskey({ passkeyId, name: name.trim() })).passkey);
  }

  /** Needs AAL2; the last passkey of a role that requires one is refused (FAILED_PRECONDITION). */
  async remove(passkeyId: string): Promise<void> {
    await this.auth.removePasskey({ passkeyId });
  }

  /** Passwordless: a discoverable passkey signs in alone (AAL2). Returns the tokens. */
  async signIn(): Promise<SessionTokens> {
    const start = await this.auth.startPasskeyLogin({});
    const credentialJson = await assertionJsonFor(start.requestOptionsJson, this.authenticators);
    const response = await this.auth.finishPasskeyLogin({ ceremonyToken: start.ceremonyToken, credentialJson });
    if (!response.tokens) throw new Error("the server answered without tokens");
    return response.tokens;
  }

  /** The assertion answering a login challenge's passkey options (CompleteLogin). */
  answerChallenge(optionsJson: Uint8Array): Promise<Uint8Array> {
    return assertionJsonFor(optionsJson, this.authenticators);
  }

  /** Whether to offer adding a passkey (after a TOTP sign-in, until added or declined). */
  get offerPending(): boolean {
    return this.offer;
  }

  /** Offer once after this sign-in (`true`), or stop offering for this session (`false`). */
  setOffer(on: boolean): void {
    this.offer = on;
  }
}
