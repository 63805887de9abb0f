// Passkeys (issue #17) in Chromium with the DevTools virtual authenticator (CTAP2, internal,
// resident keys, user verification): a patient who enrolled TOTP is offered a passkey after a
// TOTP sign-in ("Not now" lasts the session), adds one on the passkeys screen, renames it, signs
// in with it alone (passwordless, AAL2), then as the second factor after the password, removes
// it, and is refused by auth-svc when the authenticator, which still holds it, offers it again.
// A prompt that fails user verification shows what to do, not a crash. When an admin requires
// passkeys for nurses, a nurse with TOTP is told to add one, cannot remove her last, and then
// signs in with the passkey as the second factor, the app's code no longer offered. A patient
// whose first second factor is a passkey gets recovery codes and AAL2 at once; a copy of her
// authenticator whose counter went back is refused.

import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { carectlUser } from "./carectl.mjs";
import { DESKTOP, PASSWORD, PHONE, bootstrapAdmin, checkScreen, enrolMfa, heading, open, register, secondFactor, shows, signInAal2, signInWithPassword, unique, usedStep } from "./support.mjs";

/** A virtual platform authenticator on this page's DevTools target (it lives as long as the CDP session). */
async function virtualAuthenticator(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return {
    credentials: async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials,
    setUserVerified: (isUserVerified) => cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified }),
    /** Puts `credential` back with another signature counter (a clone of the authenticator). */
    replace: async (credential, signCount) => {
      await cdp.send("WebAuthn.removeCredential", { authenticatorId, credentialId: credential.credentialId });
      const { credentialId, isResidentCredential, rpId, privateKey, userHandle } = credential;
      await cdp.send("WebAuthn.addCredential", { authenticatorId, credential: { credentialId, isResidentCredential, rpId, privateKey, userHandle, signCount } });
    },
  };
}

async function signOut(page) {
  await page.getByRole("button", { name: "Sign out" }).click();
  await heading(page, "Sign in");
}

async function openPasskeys(page) {
  await page.getByRole("link", { name: "Your account" }).click();
  await heading(page, "Your account");
  await page.getByRole("link", { name: "Manage your passkeys" }).click();
  await heading(page, "Your passkeys");
}

/** The error panel's server message (or the browser's, for a refused prompt) and its code. */
async function shownError(page) {
  const alert = page.getByRole("alert");
  await alert.waitFor({ timeout: 20_000 }).catch(async (error) => {
    throw new Error(`no error shown; the page shows:\n${await page.locator("main").innerText().catch(() => "?")}`, { cause: error });
  });
  return { code: await alert.getAttribute("data-code"), message: (await page.getByTestId("server-message").textContent()) ?? "" };
}

describe("passkeys", () => {
  it("adds a passkey, signs in with it alone and as the second factor, removes it, and the removed one is refused", async () => {
    const { context, page, violations } = await open(DESKTOP);
    try {
      const authenticator = await virtualAuthenticator(context, page);
      const username = unique("pat");
      const welcome = "Welcome, Pat Key";
      await register(page, username, "Pat Key");
      await signInWithPassword(page, username);
      await heading(page, welcome);
      const { secret, step } = await enrolMfa(page, welcome);
      usedStep(secret, step);
      // No offer after the enrolment itself: only a TOTP sign-in offers a passkey.
      assert.equal(await page.getByTestId("passkey-offer").count(), 0);

      // A sign-in with the app's code: the home screen offers a passkey; "Not now" lasts the session.
      await signOut(page);
      await signInWithPassword(page, username);
      await heading(page, "Two-step sign-in");
      assert.equal(await page.getByRole("button", { name: "Use a passkey" }).count(), 0, "no passkey to offer yet");
      usedStep(secret, await secondFactor(page, secret, step));
      await heading(page, welcome);
      await page.getByRole("heading", { name: "Sign in faster with a passkey" }).waitFor();
      await checkScreen(page, "passkey-offer", violations);
      await page.getByRole("button", { name: "Not now" }).click();
      assert.equal(await page.getByTestId("passkey-offer").count(), 0);
      await openPasskeys(page);
      await page.getByTestId("no-passkeys").waitFor();
      await checkScreen(page, "passkeys-empty", violations);
      await page.getByRole("link", { name: "Back to your account" }).click();
      await heading(page, "Your account");
      await page.goto(page.url().replace(/#.*$/, "#/home"));
      await heading(page, welcome);
      assert.equal(await page.getByTestId("passkey-offer").count(), 0, "the offer came back after Not now");

      // Add one: a name first (checked before the browser's prompt), then the ceremony.
      await openPasskeys(page);
      await page.getByRole("button", { name: "Add a passkey" }).click();
      await shows(page, "The passkey needs a name.");
      assert.equal((await authenticator.credentials()).length, 0);
      await page.getByLabel("Name for the new passkey").fill("Virtual key");
      await page.getByRole("button", { name: "Add a passkey" }).click();
      await shows(page, "Passkey “Virtual key” added.");
      const items = page.getByRole("list", { name: "Passkeys" }).getByTestId("passkey");
      await items.first().waitFor();
      assert.equal(await items.count(), 1);
      assert.equal(await items.first().getByRole("heading", { level: 3 }).textContent(), "Virtual key");
      assert.match((await items.first().textContent()) ?? "", /not used to sign in yet/);
      const held = await authenticator.credentials();
      assert.equal(held.length, 1, "the authenticator holds one credential");
      assert.equal(held[0].isResidentCredential, true, "a discoverable credential");
      assert.equal(held[0].rpId, "localhost");
      await checkScreen(page, "passkeys-one", violations);
      await page.setViewportSize(PHONE);
      await checkScreen(page, "passkeys-one", violations);
      await page.setViewportSize(DESKTOP);

      // Rename it.
      await items.first().getByRole("button", { name: "Rename" }).click();
      await page.getByLabel("New name for “Virtual key”").fill("Work laptop");
      await page.getByRole("button", { name: "Save the name" }).click();
      await page.getByRole("heading", { level: 3, name: "Work laptop" }).waitFor();

      // Passwordless: a prompt that fails user verification is refused by the browser, and the
      // screen says what to do; verified, the passkey alone signs in at AAL2 (no offer then).
      await signOut(page);
      await authenticator.setUserVerified(false);
      await page.getByRole("button", { name: "Use a passkey" }).click();
      const cancelled = await shownError(page);
      assert.equal(cancelled.code, "PasskeyCancelled", `shown: ${JSON.stringify(cancelled)}`);
      assert.match((await page.getByRole("alert").textContent()) ?? "", /Try again, and confirm with your passkey/);
      await checkScreen(page, "sign-in-passkey-cancelled", violations);
      await authenticator.setUserVerified(true);
      await page.getByRole("button", { name: "Use a passkey" }).click();
      await heading(page, welcome);
      assert.equal(await page.getByTestId("aal").textContent(), "AAL2");
      assert.equal(await page.getByTestId("username").textContent(), username);
      assert.equal(await page.getByTestId("passkey-offer").count(), 0);
      assert.ok((await authenticator.credentials())[0].signCount >= 1, "the authenticator signed");

      // Password, then the passkey as the second factor (the app's code still offered beside it).
      await signOut(page);
      await signInWithPassword(page, username);
      await heading(page, "Two-step sign-in");
      assert.equal(await page.getByLabel("6-digit code").count(), 1);
      await checkScreen(page, "second-factor-passkey", violations);
      await page.getByRole("button", { name: "Use a passkey" }).click();
      await heading(page, welcome);
      assert.equal(await page.getByTestId("aal").textContent(), "AAL2");

      // The list shows its use; remove it (asked first; Cancel backs out).
      await openPasskeys(page);
      assert.match((await items.first().textContent()) ?? "", /last used /);
      await items.first().getByRole("button", { name: "Remove" }).click();
      await page.getByRole("group", { name: "Remove" }).waitFor();
      await checkScreen(page, "passkeys-remove", violations);
      await page.getByRole("button", { name: "Cancel" }).click();
      assert.equal(await items.count(), 1);
      await items.first().getByRole("button", { name: "Remove" }).click();
      await page.getByRole("button", { name: "Yes, remove it" }).click();
      await page.getByTestId("no-passkeys").waitFor();
      assert.equal((await authenticator.credentials()).length, 1, "the authenticator still holds the removed credential");

      // Offered again by the authenticator, the removed credential is refused by auth-svc.
      await signOut(page);
      await page.getByRole("button", { name: "Use a passkey" }).click();
      const refused = await shownError(page);
      assert.equal(refused.code, "Unauthenticated", `shown: ${JSON.stringify(refused)}`);
      assert.match(refused.message, /not registered|removed/, `shown: ${refused.message}`);
      await checkScreen(page, "sign-in-passkey-refused", violations);
      assert.equal(await page.getByRole("button", { name: "Sign out" }).count(), 0, "not signed in");
      // And the password's challenge no longer offers a passkey.
      await signInWithPassword(page, username);
      await heading(page, "Two-step sign-in");
      assert.equal(await page.getByRole("button", { name: "Use a passkey" }).count(), 0);
      assert.deepEqual(violations, []);
    } finally {
      await context.close();
    }
  });

  it("tells a nurse whose role requires passkeys to add one, keeps her last, and drops the TOTP field", async () => {
    const admin = bootstrapAdmin();
    const adm = await open(DESKTOP);
    const nurse = await carectlUser("nora", { role: "nurse", publish: false });
    usedStep(nurse.secret, nurse.step);
    const { context, page, violations } = await open(DESKTOP);
    /** Sets the nurses' policy in the admin screen and waits for auth-svc's answer. */
    const policy = async (required) => {
      const box = adm.page.getByTestId("passkeys-required-nurse");
      await box.waitFor();
      if ((await box.isChecked()) === required) return;
      const saved = adm.page.waitForResponse((response) => response.url().endsWith("/SetRolePolicy"));
      await box.click();
      assert.equal((await saved).headers()["grpc-status"] ?? "0", "0");
      await adm.page.waitForFunction((want) => {
        const input = document.querySelector('[data-testid="passkeys-required-nurse"]');
        return input?.checked === want && !input.disabled;
      }, required);
    };
    try {
      await signInAal2(adm.page, admin.username, admin.password, admin.totpSecret);
      await adm.page.getByRole("link", { name: "Administration" }).click();
      await heading(adm.page, "Administration");
      await policy(true);

      const authenticator = await virtualAuthenticator(context, page);
      // TOTP still signs her in while she has no passkey, and home says one is required.
      await signInAal2(page, nurse.username, PASSWORD, nurse.secret);
      await page.getByRole("heading", { name: "Add the passkey your role requires" }).waitFor();
      await page.getByTestId("passkey-required").waitFor();
      await checkScreen(page, "passkey-offer-required", violations);
      await page.getByLabel("Name for the new passkey").fill("Ward tablet");
      await page.getByRole("button", { name: "Add a passkey" }).click();
      await shows(page, "Passkey “Ward tablet” added.");
      assert.equal((await authenticator.credentials()).length, 1);

      // With a passkey, her second factor is the passkey or a recovery code: no TOTP field.
      await signOut(page);
      await signInWithPassword(page, nurse.username);
      await heading(page, "Two-step sign-in");
      await page.getByRole("button", { name: "Use a passkey" }).waitFor();
      assert.equal(await page.getByLabel("6-digit code").count(), 0, "the role requires passkeys: no TOTP field");
      assert.equal(await page.getByRole("button", { name: "Use a recovery code instead" }).count(), 1);
      await checkScreen(page, "second-factor-passkey-only", violations);
      await page.getByRole("button", { name: "Use a passkey" }).click();
      await heading(page, `Welcome, ${nurse.displayName}`);
      assert.equal(await page.getByTestId("aal").textContent(), "AAL2");

      // Her only passkey cannot be removed: auth-svc's refusal is on screen.
      await openPasskeys(page);
      await shows(page, "Your role requires a passkey: you sign in with one");
      const item = page.getByTestId("passkey").first();
      await item.getByRole("button", { name: "Remove" }).click();
      await page.getByRole("button", { name: "Yes, remove it" }).click();
      const refused = await shownError(page);
      assert.equal(refused.code, "FailedPrecondition", `shown: ${JSON.stringify(refused)}`);
      assert.match(refused.message, /requires a passkey/, `shown: ${refused.message}`);
      await checkScreen(page, "passkeys-last-required", violations);
      assert.equal(await page.getByTestId("passkey").count(), 1);
      assert.deepEqual(violations, []);
      assert.deepEqual(adm.violations, []);
    } finally {
      await context.close();
      // The mesh is shared with the test files that run later: nurses go back to the default.
      await policy(false);
      await adm.context.close();
    }
  });

  it("makes a first passkey the second factor (recovery codes, AAL2) and refuses a cloned authenticator", async () => {
    const { context, page, violations } = await open(DESKTOP);
    try {
      const authenticator = await virtualAuthenticator(context, page);
      const username = unique("cleo");
      const welcome = "Welcome, Cleo Clone";
      await register(page, username, "Cleo Clone");
      await signInWithPassword(page, username);
      await heading(page, welcome);
      assert.equal(await page.getByTestId("aal").textContent(), "AAL1");
      // No TOTP: the passkey becomes the account's first second factor.
      await page.getByRole("link", { name: "Add a passkey instead" }).click();
      await heading(page, "Your passkeys");
      await page.getByLabel("Name for the new passkey").fill("Phone");
      await page.getByRole("button", { name: "Add a passkey" }).click();
      await shows(page, "Passkey “Phone” added.");
      const codes = await page.getByRole("list", { name: "Recovery codes" }).getByRole("listitem").allTextContents();
      assert.equal(codes.length, 10, "the first second factor brings recovery codes");
      await checkScreen(page, "passkeys-first-factor", violations);
      // The session's new tokens replaced the old ones: AAL2 without signing in again.
      await shows(page.locator("header"), "patient · AAL2");
      await page.goto(page.url().replace(/#.*$/, "#/home"));
      await heading(page, welcome);
      assert.equal(await page.getByTestId("aal").textContent(), "AAL2");

      // Two passwordless sign-ins raise the stored counter; a copy of the authenticator whose
      // counter is behind is then refused.
      for (let i = 0; i < 2; i++) {
        await signOut(page);
        await page.getByRole("button", { name: "Use a passkey" }).click();
        await heading(page, welcome);
      }
      const [credential] = await authenticator.credentials();
      assert.ok(credential.signCount >= 2, `counter ${credential.signCount}`);
      await authenticator.replace(credential, 0);
      await signOut(page);
      await page.getByRole("button", { name: "Use a passkey" }).click();
      const refused = await shownError(page);
      assert.equal(refused.code, "Unauthenticated", `shown: ${JSON.stringify(refused)}`);
      assert.match(refused.message, /counter went backwards/, `shown: ${refused.message}`);
      assert.equal(await page.getByRole("button", { name: "Sign out" }).count(), 0, "not signed in");
      assert.deepEqual(violations, []);
    } finally {
      await context.close();
    }
  });
});
