// The web app in a real Chromium against a real `caremesh up` (started by e2e/run.sh, which sets
// E2E_BASE_URL). Every screen is checked with axe-core (no serious or critical violations), at a
// 390×844 phone size for horizontal overflow, and for Content-Security-Policy violations.

import { createHash, X509Certificate } from "node:crypto";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";

import { chromium } from "playwright-core";

import { totp, totpStep } from "./totp.mjs";

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const BASE = process.env.E2E_BASE_URL ?? "https://localhost:8443";
// The web origin's certificate (from the dev PKI): Chromium treats it as valid by its key's hash,
// so service workers (which refuse certificate errors) register as on a trusted site.
const WEB_CERT = process.env.E2E_WEB_CERT ?? "";
const SCREENSHOTS = process.env.E2E_SCREENSHOTS ?? "";
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const PASSWORD = "correct horse battery staple 42";

let browser;

function spkiHash(certPath) {
  const spki = new X509Certificate(readFileSync(certPath)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

before(async () => {
  const trust = WEB_CERT ? [`--ignore-certificate-errors-spki-list=${spkiHash(WEB_CERT)}`] : [];
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...trust,
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh context and page; CSP violations reported by the browser are collected. */
async function open(viewport) {
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
async function checkAccessibility(page, screen) {
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

async function checkFits(page, screen) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `${screen}: ${overflow}px of horizontal scrolling at this width`);
}

async function screenshot(page, name) {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Every check a screen gets. */
async function checkScreen(page, screen, violations) {
  await checkAccessibility(page, screen);
  await checkFits(page, screen);
  assert.deepEqual(violations, [], `${screen}: CSP violations or page errors`);
  await screenshot(page, `${screen}-${page.viewportSize().width}`);
}

async function heading(page, text) {
  try {
    await page.getByRole("heading", { level: 1, name: text }).waitFor({ timeout: 15_000 });
  } catch (error) {
    const shown = await page.locator("body").innerText().catch(() => "?");
    throw new Error(`no heading "${text}" at ${page.url()}; the page shows:\n${shown}`, { cause: error });
  }
}

function unique(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
}

async function register(page, username, displayName, password = PASSWORD) {
  await page.getByRole("link", { name: "Create a patient account" }).click();
  await heading(page, "Create a patient account");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Display name").fill(displayName);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
}

async function signInWithPassword(page, username) {
  await heading(page, "Sign in");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
}

describe("a patient in the browser", () => {
  it("registers, enrols MFA, signs out and signs in again with a TOTP code (AAL2)", async () => {
    const { context, page, violations } = await open(PHONE);
    try {
      const username = unique("jane");
      await heading(page, "Sign in");
      await checkScreen(page, "sign-in", violations);

      await register(page, username, "Jane Doe");
      await heading(page, "Sign in");
      await page.getByText(`Account ${username} created`).waitFor();
      await checkScreen(page, "registered", violations);

      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Sign in" }).click();
      await heading(page, "Welcome, Jane Doe");
      assert.equal(await page.getByTestId("username").textContent(), username);
      assert.equal(await page.getByTestId("role").textContent(), "patient");
      assert.equal(await page.getByTestId("aal").textContent(), "AAL1");
      await checkScreen(page, "home-aal1", violations);

      await page.getByRole("link", { name: "Set up two-step sign-in" }).click();
      await heading(page, "Set up two-step sign-in");
      const secretElement = page.getByTestId("totp-secret");
      await secretElement.waitFor();
      // The secret as the user reads it on screen (grouped by four, spaces ignored).
      const secret = ((await secretElement.textContent()) ?? "").replace(/\s/g, "");
      assert.match(secret, /^[A-Z2-7]{16,}$/);
      assert.equal(await page.getByRole("img", { name: /QR code/ }).count(), 1);
      await checkScreen(page, "mfa-enrol", violations);

      const confirmStep = totpStep();
      await page.getByLabel("6-digit code from the app").fill(totp(secret, confirmStep));
      await page.getByRole("button", { name: "Turn on two-step sign-in" }).click();
      await heading(page, "Save your recovery codes");
      const codes = await page.getByRole("list", { name: "Recovery codes" }).getByRole("listitem").allTextContents();
      assert.equal(codes.length, 10);
      await checkScreen(page, "recovery-codes", violations);

      await page.getByRole("button", { name: "I have saved them" }).click();
      await heading(page, "Welcome, Jane Doe");
      assert.equal(await page.getByTestId("aal").textContent(), "AAL2");

      await page.getByRole("button", { name: "Sign out" }).click();
      await heading(page, "Sign in");
      assert.equal(await page.getByRole("button", { name: "Sign out" }).count(), 0);

      await signInWithPassword(page, username);
      await heading(page, "Two-step sign-in");
      await checkScreen(page, "second-factor", violations);
      // A code is accepted once: the next step's code (the server accepts one step either side).
      await page.getByLabel("6-digit code").fill(totp(secret, Math.max(confirmStep + 1, totpStep())));
      await page.getByRole("button", { name: "Continue" }).click();
      await heading(page, "Welcome, Jane Doe");
      assert.equal(await page.getByTestId("aal").textContent(), "AAL2");
      await checkScreen(page, "home-aal2", violations);

      // Sign out, then in with a recovery code instead of the app.
      await page.getByRole("button", { name: "Sign out" }).click();
      await signInWithPassword(page, username);
      await heading(page, "Two-step sign-in");
      await page.getByRole("button", { name: "Use a recovery code instead" }).click();
      await page.getByLabel("Recovery code").fill(codes[0].trim());
      await page.getByRole("button", { name: "Continue" }).click();
      await heading(page, "Welcome, Jane Doe");
      assert.equal(await page.getByTestId("aal").textContent(), "AAL2");
    } finally {
      await context.close();
    }
  });

  it("sees the server's message for a wrong password, and for a weak one at registration", async () => {
    const { context, page, violations } = await open(DESKTOP);
    try {
      const username = unique("bob");
      await register(page, username, "Bob", "password");
      const weak = page.getByRole("alert");
      await weak.waitFor();
      assert.equal(await weak.getAttribute("data-code"), "InvalidArgument");
      const weakMessage = (await page.getByTestId("server-message").textContent()) ?? "";
      assert.match(weakMessage, /password/i);
      await checkScreen(page, "register-error", violations);

      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Create account" }).click();
      await heading(page, "Sign in");
      await page.getByLabel("Password").fill("not the password at all");
      await page.getByRole("button", { name: "Sign in" }).click();
      const alert = page.getByRole("alert");
      await alert.waitFor();
      assert.equal(await page.getByTestId("server-message").textContent(), "wrong username or password");
      assert.match((await alert.textContent()) ?? "", /Check your username and password/);
      await checkScreen(page, "sign-in-error", violations);
    } finally {
      await context.close();
    }
  });

  it("keeps tokens out of storage and registers a service worker that caches only the shell", async () => {
    const { context, page } = await open(DESKTOP);
    try {
      const username = unique("sam");
      await register(page, username, "Sam");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Sam");
      const stored = await page.evaluate(() => ({
        local: Object.keys(localStorage).length,
        session: Object.keys(sessionStorage).length,
        cookie: document.cookie,
      }));
      assert.deepEqual(stored, { local: 0, session: 0, cookie: "" });

      await page.evaluate(() =>
        Promise.race([
          navigator.serviceWorker.ready.then(() => undefined),
          new Promise((_, reject) => setTimeout(() => reject(new Error("no service worker after 15 s")), 15_000)),
        ]),
      );
      const cached = await page.evaluate(async () => {
        const urls = [];
        for (const name of await caches.keys()) {
          const cache = await caches.open(name);
          for (const request of await cache.keys()) urls.push(new URL(request.url).pathname);
        }
        return urls.sort();
      });
      assert.ok(cached.includes("/index.html"), `cached: ${cached.join(", ")}`);
      for (const path of cached) {
        assert.match(path, /^\/($|index\.html$|assets\/|icon|manifest\.webmanifest$)/, `cached ${path}`);
      }
      const manifest = await (await page.request.get(BASE + "/manifest.webmanifest")).json();
      assert.equal(manifest.name, "caremesh");
    } finally {
      await context.close();
    }
  });
});
