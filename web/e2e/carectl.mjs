// carectl for the browser tests that need a second party (attachments, groups): the services'
// addresses from `caremesh up`'s banner, a runner with --json, the bootstrap admin's sign-in, and
// a doctor or nurse made, approved (with attributes) and signed in with MFA.

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import assert from "node:assert/strict";

import { totp, totpStep } from "./totp.mjs";
import { PASSWORD, bootstrapAdmin, unique } from "./support.mjs";

export const CARECTL =
  process.env.CARECTL_BIN ?? (process.env.CAREMESH_BIN ? join(process.env.CAREMESH_BIN, "..", "carectl") : "/work/bin/carectl");
const HOME = mkdtempSync(join(tmpdir(), "carectl-e2e-"));
after(() => rmSync(HOME, { recursive: true, force: true }));

/** carectl's environment: the test file's own home for sessions and device state, the mesh's CA. */
function carectlEnv() {
  return { ...process.env, CARECTL_HOME: HOME, CARECTL_CA: join(process.env.E2E_DATA_DIR, "pki", "ca.crt") };
}

/** `--endpoint` flags for each service, read from `caremesh up`'s banner in its log. */
function endpoints() {
  const log = readFileSync(join(process.env.E2E_DATA_DIR, "caremesh.log"), "utf8");
  const flags = [];
  for (const match of log.matchAll(/^\s+([a-z-]+-svc)\s+(\S+:\d+)\s/gm)) flags.push("--endpoint", `${match[1]}=${match[2]}`);
  assert.ok(flags.length >= 10, `no service addresses in caremesh.log:\n${log.slice(0, 2000)}`);
  return flags;
}

/** Runs carectl as `profile` with JSON output; resolves with the parsed output. */
export function carectl(profile, args, input = "") {
  const argv = ["--json", "--profile", profile, ...endpoints(), ...args];
  return new Promise((resolve, reject) => {
    const child = execFile(
      CARECTL,
      argv,
      {
        env: carectlEnv(),
        timeout: 120_000,
        maxBuffer: 16 << 20,
      },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`carectl ${args.join(" ")} failed: ${stderr || error.message}`));
          return;
        }
        try {
          resolve(stdout.trim() === "" ? null : JSON.parse(stdout));
        } catch {
          resolve(stdout);
        }
      },
    );
    child.stdin.end(input);
  });
}

/** Starts a long-running carectl as `profile` (JSON output), stdout and stderr piped. */
export function spawnCarectl(profile, args) {
  return spawn(CARECTL, ["--json", "--profile", profile, ...endpoints(), ...args], { env: carectlEnv(), stdio: ["ignore", "pipe", "pipe"] });
}

let adminStep = 0;
/** Signs the bootstrap admin in (a fresh TOTP step each time; other test files use it too). */
async function adminLogin() {
  const admin = bootstrapAdmin();
  for (let attempt = 0; ; attempt++) {
    adminStep = Math.max(adminStep + 1, totpStep());
    while (adminStep > totpStep() + 1) await new Promise((r) => setTimeout(r, 1000));
    try {
      await carectl("admin", ["login", admin.username, "--password-stdin", "--totp", totp(admin.totpSecret, adminStep)], `${admin.password}\n`);
      return;
    } catch (error) {
      if (attempt >= 2) throw error;
    }
  }
}

/**
 * A user made with carectl: registered; a doctor or nurse approved by the admin with `attrs`;
 * signed in with MFA; keys published (first `msg inbox`) unless `publish` is false. `profile`
 * runs carectl as them.
 */
export async function carectlUser(name, { role = "doctor", attrs = ["dept:cardiology"], displayName, publish = true } = {}) {
  const username = unique(name);
  const profile = username;
  const shown = displayName ?? (role === "doctor" ? `Dr ${name}` : role === "nurse" ? `Nurse ${name}` : name);
  await carectl(profile, ["register", username, "--role", role, "--display-name", shown, "--password-stdin"], `${PASSWORD}\n`);
  if (role !== "patient") {
    await adminLogin();
    await carectl("admin", ["admin", "approve", username, ...attrs.flatMap((attr) => ["--attr", attr])]);
  }
  await carectl(profile, ["login", username, "--password-stdin"], `${PASSWORD}\n`);
  const enrolment = await carectl(profile, ["mfa", "enroll", "--no-qr"]);
  const secret = enrolment.secret.replace(/\s/g, "");
  const step = totpStep();
  const confirmed = await carectl(profile, ["mfa", "confirm", totp(secret, step)]);
  // `publish: false` leaves the account without an identity, for the browser to be its first device.
  if (publish) await carectl(profile, ["msg", "inbox"]);
  return { username, profile, displayName: shown, secret, step, codes: confirmed.recovery_codes };
}
