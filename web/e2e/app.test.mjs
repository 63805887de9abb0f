// The web app in a real Chromium against a real `caremesh up` (started by e2e/run.sh, which sets
// E2E_BASE_URL). Every screen is checked with axe-core (no serious or critical violations), at a
// 390×844 phone size for horizontal overflow, and for Content-Security-Policy violations.

import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { totp, totpStep } from "./totp.mjs";
import { BASE, DESKTOP, PASSWORD, PHONE, checkScreen, heading, open, register, signInWithPassword, unique } from "./support.mjs";

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
