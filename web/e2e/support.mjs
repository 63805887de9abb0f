// What every browser test shares: one Chromium per test file, a fresh context per test, the
// checks every screen gets (axe-core, phone-width overflow, CSP violations), and the steps many
// flows start with (register, sign in, enrol MFA, the bootstrap admin), and carectl against the
// same mesh (its endpoints, a carectl home per test file, TOTP steps used once).

import { execFile, spawn } from "node:child_process";
import { readFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import assert from "node:assert/strict";

import { launchChromium } from "./chromium.mjs";

import { totp, totpStep } from "./totp.mjs";

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
export const BASE = process.env.E2E_BASE_URL ?? "https://localhost:8443";
// The web origin's certificate (from the dev PKI): Chromium treats it as valid by its key's hash,
// so service workers (which refuse certificate errors) register as on a trusted site.
const WEB_CERT = process.env.E2E_WEB_CERT ?? "";
const SCREENSHOTS = process.env.E2E_SCREENSHOTS ?? "";
export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };
export const PASSWORD = "correct horse battery staple 42";

let browser;

/** The test file's Chromium (started before its tests, closed after). */
export function currentBrowser() {
  return browser;
}

before(async () => {
  browser = await launchChromium(WEB_CERT);
});

after(async () => {
  await browser?.close();
});

/** A fresh context and page; CSP violations reported by the browser are collected. */
export async function open(viewport) {
  const context = await browser.newContext({ viewport, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const violations = [];
  page.on("console", (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) violations.push(message.text());
  });
  page.on("pageerror", (error) => violations.push(`page error: ${error.message}`));
  await page.goto(BASE + "/");
  return { context, page, violations };
}

/** axe-core on the current screen (injected over the DevTools protocol: the page's CSP stays on). */
export async function checkAccessibility(page, screen) {
  const injected = await page.evaluate(() => typeof window.axe !== "undefined");
  if (!injected) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => {
    const run = await window.axe.run(document, { resultTypes: ["violations"] });
    return run.violations.map((violation) => ({
      id: violation.id,
      impact: violation.impact,
      help: violation.help,
      nodes: violation.nodes.map((node) => node.target.join(" ")).slice(0, 3),
    }));
  });
  const serious = result.filter((violation) => violation.impact === "serious" || violation.impact === "critical");
  assert.deepEqual(serious, [], `${screen}: axe violations`);
}

export async function checkFits(page, screen) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `${screen}: ${overflow}px of horizontal scrolling at this width`);
}

export async function screenshot(page, name) {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Every check a screen gets. */
export async function checkScreen(page, screen, violations) {
  await checkAccessibility(page, screen);
  await checkFits(page, screen);
  assert.deepEqual(violations, [], `${screen}: CSP violations or page errors`);
  await screenshot(page, `${screen}-${page.viewportSize().width}`);
}

export async function heading(page, text) {
  try {
    await page.getByRole("heading", { level: 1, name: text }).waitFor({ timeout: 15_000 });
  } catch (error) {
    const shown = await page.locator("body").innerText().catch(() => "?");
    throw new Error(`no heading "${text}" at ${page.url()}; the page shows:\n${shown}`, { cause: error });
  }
}

export function unique(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
}

export async function register(page, username, displayName, password = PASSWORD) {
  await page.getByRole("link", { name: "Create a patient account" }).click();
  await heading(page, "Create a patient account");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Display name").fill(displayName);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
}

export async function signInWithPassword(page, username, password = PASSWORD) {
  await heading(page, "Sign in");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** Enrols TOTP from the signed-in home (the test reads the secret off the screen, as a user
 * types it into an app). Returns the secret, the last TOTP step used and the recovery codes. */
export async function enrolMfa(page, welcome) {
  await page.getByRole("link", { name: "Set up two-step sign-in" }).click();
  await heading(page, "Set up two-step sign-in");
  const secretElement = page.getByTestId("totp-secret");
  await secretElement.waitFor();
  const secret = ((await secretElement.textContent()) ?? "").replace(/\s/g, "");
  const step = totpStep();
  await page.getByLabel("6-digit code from the app").fill(totp(secret, step));
  await page.getByRole("button", { name: "Turn on two-step sign-in" }).click();
  await heading(page, "Save your recovery codes");
  const codes = await page.getByRole("list", { name: "Recovery codes" }).getByRole("listitem").allTextContents();
  await page.getByRole("button", { name: "I have saved them" }).click();
  await heading(page, welcome);
  return { secret, step, codes: codes.map((code) => code.trim()) };
}

/** Completes a second-factor prompt with the next unused TOTP code (the server accepts a code
 * once, and one step either side). Returns the step used. */
export async function secondFactor(page, secret, lastStep) {
  await heading(page, "Two-step sign-in");
  const step = Math.max(lastStep + 1, totpStep());
  await page.getByLabel("6-digit code").fill(totp(secret, step));
  await page.getByRole("button", { name: "Continue" }).click();
  return step;
}

/** The bootstrap admin's credentials from the mesh's data directory (run.sh sets E2E_DATA_DIR). */
export function bootstrapAdmin() {
  const dir = process.env.E2E_DATA_DIR;
  assert.ok(dir, "E2E_DATA_DIR is not set (run the tests through e2e/run.sh)");
  const fields = {};
  for (const line of readFileSync(join(dir, "bootstrap-admin.txt"), "utf8").split("\n")) {
    const match = /^(\w+): (.*)$/.exec(line);
    if (match) fields[match[1]] = match[2];
  }
  return { username: fields.username, password: fields.password, totpSecret: fields.totp_secret };
}

/** The carectl the tests run (run.sh sets CARECTL_BIN). */
export const CARECTL = process.env.CARECTL_BIN ?? "carectl";
let carectlHome = null;
after(() => {
  if (carectlHome !== null) rmSync(carectlHome, { recursive: true, force: true });
});

/** `--endpoint service=host:port` for every service, read from caremesh up's banner. */
export function endpoints() {
  const dir = process.env.E2E_DATA_DIR;
  assert.ok(dir, "E2E_DATA_DIR is not set (run the tests through e2e/run.sh)");
  const log = readFileSync(join(dir, "caremesh.log"), "utf8");
  const out = [];
  for (const match of log.matchAll(/^[ \t]+([a-z-]+-svc)[ \t]+(\S+:\d+)[ \t]+\(health/gm)) out.push("--endpoint", `${match[1]}=${match[2]}`);
  assert.ok(out.length >= 10, `service endpoints not found in caremesh.log:\n${log.slice(0, 2000)}`);
  return out;
}

/** carectl's arguments for `profile` (one carectl home per test file), with --json. */
function carectlArgs(profile, args) {
  const dir = process.env.E2E_DATA_DIR;
  carectlHome ??= mkdtempSync(join(tmpdir(), "caremesh-e2e-carectl-"));
  return ["--ca", join(dir, "pki/ca.crt"), ...endpoints(), "--home", carectlHome, "--profile", profile, "--json", ...args];
}

/** Starts a long-running carectl as `profile` (JSON output), stdout and stderr piped. */
export function spawnCarectl(profile, args) {
  return spawn(CARECTL, carectlArgs(profile, args), { stdio: ["ignore", "pipe", "pipe"] });
}

/** Runs carectl for `profile` with --json; resolves with the parsed output. */
export function carectl(profile, args, stdin = "") {
  const argv = carectlArgs(profile, args);
  return new Promise((resolve, reject) => {
    const child = execFile(CARECTL, argv, { timeout: 120_000 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error(`carectl ${args.join(" ")} failed: ${stderr || error.message}`));
        return;
      }
      try {
        resolve(stdout.trim() === "" ? null : JSON.parse(stdout));
      } catch {
        resolve(stdout);
      }
    });
    child.stdin.end(stdin);
  });
}

// TOTP codes are single use per account: remember the last step each secret used.
const lastStep = new Map();

/** Notes that `secret` used `step` (e.g. the browser's MFA enrolment). */
export function usedStep(secret, step) {
  lastStep.set(secret, Math.max(step, lastStep.get(secret) ?? 0));
}

/** The next unused TOTP code of `secret`. */
export function nextCode(secret) {
  const step = Math.max((lastStep.get(secret) ?? 0) + 1, totpStep());
  lastStep.set(secret, step);
  return totp(secret, step);
}

/** The server accepts one step either side of now: never run ahead more than one step. */
export async function waitForStep(secret) {
  while ((lastStep.get(secret) ?? 0) >= totpStep() + 1) await new Promise((r) => setTimeout(r, 1000));
}

/** `carectl login` (with a TOTP code when `secret`); another test file may just have used a step
 * of the same account (the bootstrap admin): on INVALID_CODE, the next step. */
export async function carectlLogin(profile, username, secret, password = PASSWORD) {
  for (let attempt = 1; ; attempt++) {
    if (secret) await waitForStep(secret);
    const args = ["login", username, "--password-stdin"];
    if (secret) args.push("--totp", nextCode(secret));
    try {
      return await carectl(profile, args, `${password}\n`);
    } catch (error) {
      if (!secret || attempt >= 3 || !String(error).includes("INVALID_CODE")) throw error;
    }
  }
}

/** Password, then TOTP; a code another test file just used is refused: then the next step. */
export async function signInAal2(page, username, password, secret) {
  await signInWithPassword(page, username, password);
  for (let attempt = 1; ; attempt++) {
    await heading(page, "Two-step sign-in");
    await waitForStep(secret);
    await page.getByLabel("6-digit code").fill(nextCode(secret));
    await page.getByRole("button", { name: "Continue" }).click();
    const outcome = await Promise.race([
      page.getByRole("heading", { level: 1, name: /^Welcome/ }).waitFor({ timeout: 20_000 }).then(() => "in"),
      page.getByRole("alert").waitFor({ timeout: 20_000 }).then(() => "refused"),
    ]);
    if (outcome === "in") return;
    assert.ok(attempt < 3, `the second factor was refused ${attempt} times`);
  }
}

/** The bootstrap admin signed in with carectl as profile "admin". */
export async function carectlAdmin() {
  const admin = bootstrapAdmin();
  return carectlLogin("admin", admin.username, admin.totpSecret, admin.password);
}

/** Waits for `text` in `scope`; on timeout, fails with what the page shows instead. */
export async function shows(scope, text, timeout = 30_000) {
  try {
    await scope.getByText(text).first().waitFor({ timeout });
  } catch (error) {
    const page = "page" in scope ? scope.page() : scope;
    const shown = await page.locator("main").innerText().catch(() => "?");
    throw new Error(`"${text}" did not show; the page shows:\n${shown}`, { cause: error });
  }
}

/** All the page can store: every IndexedDB record (bytes as latin1, CryptoKeys by their flags),
 * localStorage, sessionStorage and cookies, as one text to search for secrets. */
export async function storedText(page) {
  return page.evaluate(async () => {
    const text = (v) => {
      if (v instanceof Uint8Array || v instanceof ArrayBuffer) return Array.from(new Uint8Array(v), (b) => String.fromCharCode(b)).join("");
      if (v instanceof CryptoKey) return `CryptoKey(extractable=${v.extractable})`;
      if (v && typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}=${text(x)}`).join(";");
      return String(v);
    };
    const out = [`localStorage:${JSON.stringify({ ...localStorage })}`, `sessionStorage:${JSON.stringify({ ...sessionStorage })}`, `cookie:${document.cookie}`];
    for (const info of await indexedDB.databases()) {
      const db = await new Promise((resolve, reject) => {
        const req = indexedDB.open(info.name);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      for (const name of db.objectStoreNames) {
        const all = await new Promise((resolve, reject) => {
          const req = db.transaction(name, "readonly").objectStore(name).getAll();
          req.onsuccess = () => resolve(req.result);
          req.onerror = () => reject(req.error);
        });
        out.push(`${info.name}/${name}:${all.map(text).join("|")}`);
      }
      db.close();
    }
    return out.join("\n");
  });
}
