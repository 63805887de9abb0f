// The layering rule: the UI (src/app, src/features) talks only to src/client. It imports no
// transport, no generated protobuf code and no cryptography directly, and leaves WebAuthn
// (navigator.credentials, PublicKeyCredential) to src/client/passkeys.ts.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

import { describe, expect, it } from "vitest";

const FORBIDDEN = [/^@connectrpc\//, /^@bufbuild\//, /^@noble\//, /\/gen\//, /\/crypto(\/|$)/, /\/client\/.+/];
/** Browser APIs only the client layer uses. */
const FORBIDDEN_USES = [/\bnavigator\s*\.\s*credentials\b/, /\bPublicKeyCredential\b/, /\bAuthenticatorAttestationResponse\b/, /\bAuthenticatorAssertionResponse\b/];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : /\.tsx?$/.test(name) ? [path] : [];
  });
}

describe("UI layering", () => {
  for (const dir of ["src/app", "src/features"]) {
    for (const file of files(dir)) {
      it(`${file} imports only the client layer`, () => {
        const source = readFileSync(file, "utf8");
        const imports = [...source.matchAll(/from\s+"([^"]+)"/g)].map((match) => match[1] ?? "");
        for (const specifier of imports) {
          for (const pattern of FORBIDDEN) expect(specifier, `${file} imports ${specifier}`).not.toMatch(pattern);
        }
        for (const pattern of FORBIDDEN_USES) expect(source, `${file} uses ${pattern.source}`).not.toMatch(pattern);
      });
    }
  }
});

describe("WebAuthn in one place", () => {
  it("only src/client/passkeys.ts calls navigator.credentials", () => {
    // The generated code only mentions it in comments copied from the proto.
    const callers = files("src")
      .map((file) => file.replace(/\\/g, "/"))
      .filter((file) => !file.startsWith("src/gen/") && !file.endsWith(".test.ts") && /\bnavigator\s*\.\s*credentials\b/.test(readFileSync(file, "utf8")));
    expect(callers).toEqual(["src/client/passkeys.ts"]);
  });
});
