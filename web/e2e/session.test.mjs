// "Stay signed in on this browser" (the account screen, opt-in): after it, a reload and a second
// tab are signed in without a password, the tabs sharing one refresh chain (auth-svc revokes a
// session whose spent refresh token comes back, so a second reload of the first tab would fail
// otherwise); no token text is in IndexedDB, localStorage, sessionStorage or cookies; sign-out
// deletes the stored session. Without it, a reload signs out (app.test.mjs and messaging.test.mjs).

import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { DESKTOP, checkScreen, enrolMfa, heading, open, register, shows, signInWithPassword, storedText, unique } from "./support.mjs";

/** Printable runs of 24+ characters in auth-svc's answers (the tokens among them), UUIDs left out. */
function captureTokens(page) {
  const found = new Set();
  page.on("response", async (response) => {
    if (!/AuthService\/(Login|CompleteLogin|ConfirmTotp|Refresh)$/.test(response.url())) return;
    const body = (await response.body().catch(() => Buffer.alloc(0))).toString("latin1");
    for (const match of body.matchAll(/[\x21-\x7e]{24,}/g)) {
      if (!/^[0-9a-f-]{36}$/.test(match[0])) found.add(match[0]);
    }
  });
  return found;
}

describe("stay signed in", () => {
  it("keeps the session across reloads and tabs, sealed, until sign-out", async () => {
    const { context, page, violations } = await open(DESKTOP);
    try {
      const tokens = captureTokens(page);
      const username = unique("stay");
      await register(page, username, "Sam Stay");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Sam Stay");
      await enrolMfa(page, "Welcome, Sam Stay");
      await page.getByRole("link", { name: "Your account" }).click();
      await heading(page, "Your account");
      assert.equal(await page.getByTestId("stay-state").textContent(), "Not kept on this browser.");
      await page.getByRole("button", { name: "Keep me signed in on this browser" }).click();
      await shows(page, "Staying signed in on this browser.");
      await checkScreen(page, "account-stay", violations);

      // A reload: signed in, no password asked.
      await page.reload();
      await heading(page, "Your account");
      assert.equal(await page.getByTestId("account-username").textContent(), username);
      // A second tab of the same browser, then the first tab again: one refresh chain.
      const second = await context.newPage();
      await second.goto(page.url().replace(/#.*$/, "#/home"));
      await heading(second, "Welcome, Sam Stay");
      await page.reload();
      await heading(page, "Your account");
      await page.goto(page.url().replace(/#.*$/, "#/home"));
      await heading(page, "Welcome, Sam Stay");

      // No token text at rest, anywhere the page can store.
      assert.ok(tokens.size >= 2, `tokens seen in auth-svc's answers: ${tokens.size}`);
      const stored = await storedText(page);
      assert.match(stored, /caremesh-session\/records:/, "the sealed session is in IndexedDB");
      assert.match(stored, /CryptoKey\(extractable=false\)/);
      for (const token of tokens) assert.equal(stored.includes(token), false, "a token is stored in the clear");

      // Sign-out deletes it: a reload asks for the password again.
      await second.close();
      await page.getByRole("button", { name: "Sign out" }).click();
      await heading(page, "Sign in");
      assert.doesNotMatch(await storedText(page), /caremesh-session/);
      await page.reload();
      await heading(page, "Sign in");
      assert.deepEqual(violations, []);
    } finally {
      await context.close();
    }
  });
});
