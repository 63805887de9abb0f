// The passkey ceremonies' JSON, as webauthn-rs 0.5 writes and reads it: base64url, the options
// turned into the browser's dictionaries (binary members as ArrayBuffers, the rest untouched), the
// credentials written as WebAuthn L3 JSON, the browser's refusals as messages, and the calls.

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";

import { PasskeySchema, SessionTokensSchema } from "../gen/caremesh/auth/v1/auth_pb";
import { AssuranceLevel, Role } from "../gen/caremesh/auth/v1/user_pb";
import { describeError } from "./errors";
import {
  PasskeyClient,
  PasskeyError,
  assertionJson,
  assertionJsonFor,
  base64urlDecode,
  base64urlEncode,
  createCredentialJson,
  creationOptionsFromJson,
  passkeyFailure,
  registrationJson,
  requestOptionsFromJson,
  type Authenticators,
} from "./passkeys";
import { SessionStore } from "./session";

const bytes = (...values: number[]) => new Uint8Array(values);
const buffer = (...values: number[]) => bytes(...values).buffer;
const asBytes = (value: unknown) => {
  expect(value).toBeInstanceOf(ArrayBuffer);
  return [...new Uint8Array(value as ArrayBuffer)];
};

// As webauthn-rs 0.5 serializes CreationChallengeResponse (start_passkey_registration), with a
// member of a later WebAuthn level that the browser may not know.
const CREATION = {
  publicKey: {
    rp: { name: "caremesh", id: "localhost" },
    user: { id: "AZOKz0bTcdSY8xQvAzbA9A", name: "jane", displayName: "Jane Doe" },
    challenge: "3q2-7_8",
    pubKeyCredParams: [
      { type: "public-key", alg: -7 },
      { type: "public-key", alg: -257 },
    ],
    timeout: 300000,
    excludeCredentials: [{ type: "public-key", id: "AQID", transports: ["internal"] }],
    authenticatorSelection: { residentKey: "required", requireResidentKey: true, userVerification: "required" },
    attestation: "none",
    extensions: { credentialProtectionPolicy: "userVerificationRequired", enforceCredentialProtectionPolicy: false, uvm: true, credProps: true },
    hints: null,
    attestationFormats: ["packed"],
  },
};

// RequestChallengeResponse (start_discoverable_authentication / start_passkey_authentication).
const REQUEST = {
  publicKey: {
    challenge: "AAEC",
    timeout: 300000,
    rpId: "localhost",
    allowCredentials: [{ type: "public-key", id: "-_8" }],
    userVerification: "required",
  },
};

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

describe("base64url", () => {
  it("matches RFC 4648 §10 without padding, in the URL alphabet", () => {
    const cases: [string, string][] = [
      ["", ""],
      ["f", "Zg"],
      ["fo", "Zm8"],
      ["foo", "Zm9v"],
      ["foob", "Zm9vYg"],
      ["fooba", "Zm9vYmE"],
      ["foobar", "Zm9vYmFy"],
    ];
    for (const [plain, encoded] of cases) {
      expect(base64urlEncode(new TextEncoder().encode(plain))).toBe(encoded);
      expect(new TextDecoder().decode(base64urlDecode(encoded))).toBe(plain);
    }
    expect(base64urlEncode(bytes(0xfb, 0xff))).toBe("-_8");
    expect([...base64urlDecode("-_8")]).toEqual([0xfb, 0xff]);
  });

  it("round-trips every length, from an ArrayBuffer or a view into a larger buffer", () => {
    for (let length = 0; length < 70; length++) {
      const data = Uint8Array.from({ length }, (_, i) => (i * 97 + length * 31) & 0xff);
      const text = base64urlEncode(data);
      expect(text).toMatch(/^[A-Za-z0-9_-]*$/);
      expect([...base64urlDecode(text)]).toEqual([...data]);
      expect(base64urlEncode(data.buffer)).toBe(text);
      const padded = new Uint8Array(length + 4);
      padded.set(data, 2);
      expect(base64urlEncode(padded.subarray(2, 2 + length))).toBe(text);
    }
  });

  it("accepts padding and the standard alphabet, refuses anything else", () => {
    expect([...base64urlDecode("Zg==")]).toEqual([0x66]);
    expect([...base64urlDecode("+/8")]).toEqual([0xfb, 0xff]);
    expect(() => base64urlDecode("a")).toThrow(PasskeyError);
    expect(() => base64urlDecode("ab$c")).toThrow(PasskeyError);
    expect(() => base64urlDecode("ab c")).toThrow(PasskeyError);
  });
});

describe("creation options", () => {
  it("turns challenge, user.id and excludeCredentials[].id into ArrayBuffers and keeps the rest", () => {
    const options = creationOptionsFromJson(json(CREATION));
    const publicKey = options.publicKey!;
    expect(asBytes(publicKey.challenge)).toEqual([...base64urlDecode("3q2-7_8")]);
    expect(asBytes(publicKey.user.id)).toEqual([...base64urlDecode("AZOKz0bTcdSY8xQvAzbA9A")]);
    expect(publicKey.excludeCredentials).toHaveLength(1);
    expect(asBytes(publicKey.excludeCredentials![0]!.id)).toEqual([1, 2, 3]);
    expect(publicKey.excludeCredentials![0]!.type).toBe("public-key");
    expect(publicKey.excludeCredentials![0]!.transports).toEqual(["internal"]);
    expect(publicKey.user.name).toBe("jane");
    expect(publicKey.user.displayName).toBe("Jane Doe");
    expect(publicKey.rp).toEqual(CREATION.publicKey.rp);
    expect(publicKey.pubKeyCredParams).toEqual(CREATION.publicKey.pubKeyCredParams);
    expect(publicKey.authenticatorSelection).toEqual(CREATION.publicKey.authenticatorSelection);
    expect(publicKey.extensions).toEqual(CREATION.publicKey.extensions);
    expect(publicKey.timeout).toBe(300000);
    expect(publicKey.attestation).toBe("none");
    // Members this module does not know pass through (the browser ignores what it does not know);
    // a JSON null (serde's absent Option) is dropped, since WebIDL would read it as a value.
    expect((publicKey as unknown as Record<string, unknown>)["attestationFormats"]).toEqual(["packed"]);
    expect("hints" in publicKey).toBe(false);
  });

  it("takes bytes, text or a parsed object alike, and leaves the input as it was", () => {
    const before = JSON.stringify(CREATION);
    const fromObject = creationOptionsFromJson(CREATION);
    const fromText = creationOptionsFromJson(before);
    expect(asBytes(fromObject.publicKey!.challenge)).toEqual(asBytes(fromText.publicKey!.challenge));
    expect(JSON.stringify(CREATION)).toBe(before);
  });

  it("works without excludeCredentials", () => {
    const { excludeCredentials: _, ...rest } = CREATION.publicKey;
    expect(creationOptionsFromJson({ publicKey: rest }).publicKey!.excludeCredentials).toBeUndefined();
  });

  it("refuses what is not webauthn-rs's shape", () => {
    for (const bad of ["not json", "{}", '{"publicKey": 1}', '{"publicKey": {"user": {"id": "AQ"}}}', '{"publicKey": {"challenge": "AQ"}}']) {
      expect(() => creationOptionsFromJson(new TextEncoder().encode(bad)), bad).toThrow(PasskeyError);
    }
    expect(() => creationOptionsFromJson({ publicKey: { ...CREATION.publicKey, excludeCredentials: [{ type: "public-key" }] } })).toThrow(/excludeCredentials id/);
  });
});

describe("request options", () => {
  it("turns challenge and allowCredentials[].id into ArrayBuffers and keeps the rest", () => {
    const options = requestOptionsFromJson(json(REQUEST));
    const publicKey = options.publicKey!;
    expect(asBytes(publicKey.challenge)).toEqual([0, 1, 2]);
    expect(asBytes(publicKey.allowCredentials![0]!.id)).toEqual([0xfb, 0xff]);
    expect(publicKey.allowCredentials![0]!.type).toBe("public-key");
    expect(publicKey.rpId).toBe("localhost");
    expect(publicKey.userVerification).toBe("required");
    expect(publicKey.timeout).toBe(300000);
    expect("mediation" in options).toBe(false);
  });

  it("keeps an empty allowCredentials (a discoverable sign-in) and a modal mediation, drops conditional", () => {
    const discoverable = { ...REQUEST, publicKey: { ...REQUEST.publicKey, allowCredentials: [] } };
    expect(requestOptionsFromJson(discoverable).publicKey!.allowCredentials).toEqual([]);
    expect(requestOptionsFromJson({ ...REQUEST, mediation: "conditional" }).mediation).toBeUndefined();
    expect(requestOptionsFromJson({ ...REQUEST, mediation: "required" }).mediation).toBe("required");
  });
});

const attestationObject = buffer(0xa3, 0x63, 0x66, 0x6d, 0x74);
const clientDataJSON = new TextEncoder().encode('{"type":"webauthn.create"}').buffer;

function newCredential(extensions: unknown = {}) {
  return {
    id: "AQID",
    rawId: buffer(1, 2, 3),
    type: "public-key",
    authenticatorAttachment: "platform",
    response: { attestationObject, clientDataJSON, getTransports: () => ["internal", "hybrid"] },
    getClientExtensionResults: () => extensions,
  };
}

function assertion(userHandle: ArrayBuffer | null) {
  return {
    id: "-_8",
    rawId: buffer(0xfb, 0xff),
    type: "public-key",
    response: { authenticatorData: buffer(9, 9), clientDataJSON, signature: buffer(0x30, 0x45), userHandle },
    getClientExtensionResults: () => ({}),
  };
}

describe("credential JSON", () => {
  it("writes a registration as WebAuthn L3 JSON with webauthn-rs's `extensions`", () => {
    expect(registrationJson(newCredential({ credProps: { rk: true } }))).toEqual({
      id: "AQID",
      rawId: "AQID",
      type: "public-key",
      response: {
        attestationObject: base64urlEncode(attestationObject),
        clientDataJSON: base64urlEncode(clientDataJSON),
        transports: ["internal", "hybrid"],
      },
      extensions: { credProps: { rk: true } },
    });
  });

  it("writes binary extension results base64url, and no transports when the browser gives none", () => {
    const credential = { ...newCredential({ prf: { enabled: true, results: { first: buffer(7) } } }), response: { attestationObject, clientDataJSON } };
    const written = registrationJson(credential);
    expect(written["extensions"]).toEqual({ prf: { enabled: true, results: { first: "Bw" } } });
    expect((written["response"] as Record<string, unknown>)["transports"]).toEqual([]);
  });

  it("writes an assertion with its userHandle, or null without one", () => {
    expect(assertionJson(assertion(buffer(0xaa, 0xbb)))).toEqual({
      id: "-_8",
      rawId: "-_8",
      type: "public-key",
      response: { authenticatorData: "CQk", clientDataJSON: base64urlEncode(clientDataJSON), signature: "MEU", userHandle: "qrs" },
      extensions: {},
    });
    expect((assertionJson(assertion(null))["response"] as Record<string, unknown>)["userHandle"]).toBeNull();
  });
});

/** Authenticators that record the options and answer with `answer` (or fail with it). */
function fakeAuthenticators(answer: unknown): Authenticators & { seen: unknown[] } {
  const seen: unknown[] = [];
  const reply = (options: unknown) => {
    seen.push(options);
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer as Credential | null);
  };
  return { seen, create: reply, get: reply };
}

describe("ceremonies", () => {
  it("hands the converted options to the browser and returns the credential's JSON bytes", async () => {
    const authenticators = fakeAuthenticators(newCredential());
    const answer = JSON.parse(new TextDecoder().decode(await createCredentialJson(json(CREATION), authenticators)));
    expect(answer.rawId).toBe("AQID");
    expect(answer.response.transports).toEqual(["internal", "hybrid"]);
    const options = authenticators.seen[0] as CredentialCreationOptions;
    expect(options.publicKey!.challenge).toBeInstanceOf(ArrayBuffer);

    const assertionAnswer = JSON.parse(new TextDecoder().decode(await assertionJsonFor(json(REQUEST), fakeAuthenticators(assertion(buffer(1))))));
    expect(assertionAnswer.response.userHandle).toBe("AQ");
  });

  it("turns a cancelled prompt into a message the user can act on", async () => {
    const cancelled = new DOMException("The operation either timed out or was not allowed.", "NotAllowedError");
    const failure = await assertionJsonFor(json(REQUEST), fakeAuthenticators(cancelled)).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(PasskeyError);
    const view = describeError(failure, "passkey");
    expect(view.code).toBe("PasskeyCancelled");
    expect(view.message).toMatch(/cancelled or timed out/);
    expect(view.advice).toMatch(/Try again/);

    const already = passkeyFailure(new DOMException("excluded", "InvalidStateError"));
    expect((already as PasskeyError).code).toBe("PasskeyAlreadyRegistered");
    const other = new TypeError("boom");
    expect(passkeyFailure(other)).toBe(other);
    const none = await createCredentialJson(json(CREATION), fakeAuthenticators(null)).catch((error: unknown) => error);
    expect((none as PasskeyError).code).toBe("PasskeyCancelled");
  });
});

describe("PasskeyClient", () => {
  const tokens = create(SessionTokensSchema, {
    accessToken: "access",
    refreshToken: "refresh",
    userId: "u1",
    role: Role.PATIENT,
    aal: AssuranceLevel.AAL2,
    accessTokenExpireTime: timestampFromDate(new Date(Date.now() + 300_000)),
  });
  const passkey = create(PasskeySchema, {
    passkeyId: "p1",
    name: "laptop",
    credentialId: "AQID",
    createTime: timestampFromDate(new Date("2026-01-02T03:04:05Z")),
    backupEligible: true,
    backupState: false,
  });

  it("registers: the first second factor's tokens replace the session's, the codes are returned", async () => {
    const calls: unknown[] = [];
    const auth = {
      startPasskeyRegistration: async () => ({ ceremonyToken: "c1", creationOptionsJson: json(CREATION) }),
      finishPasskeyRegistration: async (request: unknown) => {
        calls.push(request);
        return { passkey, recoveryCodes: ["a", "b"], tokens };
      },
    };
    const session = new SessionStore(async () => tokens);
    const client = new PasskeyClient(auth as never, session, fakeAuthenticators(newCredential()));
    client.setOffer(true);
    const added = await client.add("  laptop ");
    expect(added.recoveryCodes).toEqual(["a", "b"]);
    expect(added.passkey).toEqual({
      passkeyId: "p1",
      name: "laptop",
      credentialId: "AQID",
      created: new Date("2026-01-02T03:04:05Z"),
      lastUsed: null,
      syncable: true,
      synced: false,
    });
    expect(session.info?.aal).toBe("AAL2");
    expect(client.offerPending).toBe(false);
    const request = calls[0] as { ceremonyToken: string; name: string; credentialJson: Uint8Array };
    expect(request.ceremonyToken).toBe("c1");
    expect(request.name).toBe("laptop");
    expect(JSON.parse(new TextDecoder().decode(request.credentialJson)).type).toBe("public-key");
    session.clear();
  });

  it("signs in without a password: StartPasskeyLogin, the assertion, FinishPasskeyLogin", async () => {
    const auth = {
      startPasskeyLogin: async () => ({ ceremonyToken: "c2", requestOptionsJson: json(REQUEST) }),
      finishPasskeyLogin: async (request: { ceremonyToken: string; credentialJson: Uint8Array }) => {
        expect(request.ceremonyToken).toBe("c2");
        expect(JSON.parse(new TextDecoder().decode(request.credentialJson)).response.userHandle).toBe("AQ");
        return { tokens, recoveryCodesRemaining: 10 };
      },
    };
    const client = new PasskeyClient(auth as never, new SessionStore(async () => tokens), fakeAuthenticators(assertion(buffer(1))));
    expect((await client.signIn()).accessToken).toBe("access");
  });
});
