// The cross-role flow of issue #15 against the real mesh (e2e/run.sh), every role in its own
// browser: a patient registers in the browser, enrols MFA and writes to a doctor; the bootstrap
// admin approves that doctor (registered with carectl, pending) in the admin screen; the doctor
// reads and replies from carectl and from the browser (linked to the carectl device by code);
// the doctor writes a record in the browser, which the patient reads in the browser and with
// carectl; a second doctor, also approved in the admin screen, uses break glass in the browser and
// the auditor (created with `carectl admin create --role auditor`) sees the alert arrive on the
// auditor screen's live stream, verifies the signed checkpoint, a consistency proof and an
// event's inclusion proof in the browser; the patient's report lists both doctors' accesses.
// Then the admin screen's other actions (disable / enable, unlock, end sessions, reset MFA, a stale
// etag) and the account screen (password change ending the other sessions, new recovery codes).

import { describe, it } from "node:test";
import assert from "node:assert/strict";

import {
  DESKTOP,
  PASSWORD,
  PHONE,
  bootstrapAdmin,
  carectl,
  carectlAdmin,
  carectlLogin,
  checkScreen,
  enrolMfa,
  heading,
  nextCode,
  open,
  register,
  shows,
  signInAal2,
  signInWithPassword,
  unique,
  usedStep,
  waitForStep,
} from "./support.mjs";

/** A doctor registered with carectl: pending until an admin approves. */
async function pendingDoctor(name) {
  const username = unique(name);
  await carectl(username, ["register", username, "--role", "doctor", "--display-name", `Dr ${name}`, "--password-stdin"], `${PASSWORD}\n`);
  return username;
}

/** Approves `username` in the admin screen with `attributes`, from the pending list. */
async function approveInBrowser(page, username, attributes) {
  await page.getByRole("button", { name: "Reload the list" }).click();
  const row = page.getByTestId("pending").getByTestId("user-row").filter({ hasText: username });
  await row.waitFor({ timeout: 30_000 });
  await row.getByRole("button", { name: `Review ${username}` }).click();
  const account = page.getByTestId("account");
  await account.getByLabel("Attributes to assign").fill(attributes.join("\n"));
  await account.getByRole("button", { name: `Approve ${username}` }).click();
  await shows(account, `Saved. ${username}: doctor · active`);
  assert.equal(await account.getByTestId("account-attributes").textContent(), attributes.join(", "));
}

/** A doctor's records screen, showing `patient`'s records. */
async function patientRecords(page, patient, displayName) {
  await page.getByRole("link", { name: "Records" }).click();
  await heading(page, "Patient records");
  await page.getByLabel("Patient (username or user id)").fill(patient);
  await page.getByRole("button", { name: "Show records" }).click();
  await page.getByRole("heading", { name: `Records of ${displayName}` }).waitFor({ timeout: 30_000 });
}

async function gotoHome(page, welcome) {
  await page.goto(page.url().replace(/#.*$/, "#/home"));
  await heading(page, welcome);
}

describe("the cross-role flow", () => {
  it("patient, admin, doctors, auditor: approval, messages, records, break glass, live alert, verified log, access report", async () => {
    const admin = bootstrapAdmin();
    const doc = await pendingDoctor("flow");
    const doc2 = await pendingDoctor("glass");

    const contexts = [];
    const browser = async (viewport) => {
      const opened = await open(viewport);
      contexts.push(opened.context);
      return opened;
    };
    try {
      // The admin signs in (AAL2) and approves the first doctor in the admin screen.
      const adm = await browser(DESKTOP);
      await signInAal2(adm.page, admin.username, admin.password, admin.totpSecret);
      await adm.page.getByRole("link", { name: "Administration" }).click();
      await heading(adm.page, "Administration");
      await adm.page.getByTestId("pending").getByTestId("user-row").first().waitFor({ timeout: 30_000 });
      await checkScreen(adm.page, "admin-pending", adm.violations);
      await approveInBrowser(adm.page, doc, ["dept:cardiology"]);
      await checkScreen(adm.page, "admin-account", adm.violations);
      await adm.page.setViewportSize(PHONE);
      await checkScreen(adm.page, "admin-account", adm.violations);
      await adm.page.setViewportSize(DESKTOP);
      // Approved, the doctor is no longer pending.
      await adm.page.getByRole("button", { name: "Reload the list" }).click();
      await adm.page.getByTestId("account").waitFor();
      await shows(adm.page, /Nobody is waiting for approval|Review /);
      assert.equal(await adm.page.getByTestId("pending").getByTestId("user-row").filter({ hasText: doc }).count(), 0);

      // The doctor's carectl: MFA, keys published.
      await carectlLogin(doc, doc, null);
      const enrolment = await carectl(doc, ["mfa", "enroll", "--no-qr"]);
      const docSecret = enrolment.secret.replace(/\s/g, "");
      await carectl(doc, ["mfa", "confirm", nextCode(docSecret)]);
      await carectlLogin(doc, doc, docSecret);
      await carectl(doc, ["msg", "inbox"]);

      // The patient registers in the browser, enrols MFA and writes to the doctor.
      const patient = unique("pat");
      const pat = await browser(PHONE);
      await register(pat.page, patient, "Pat Flow");
      await signInWithPassword(pat.page, patient);
      await heading(pat.page, "Welcome, Pat Flow");
      const patMfa = await enrolMfa(pat.page, "Welcome, Pat Flow");
      usedStep(patMfa.secret, patMfa.step);
      // The admin and audit screens are not for patients.
      await pat.page.goto(pat.page.url().replace(/#.*$/, "#/admin"));
      await shows(pat.page, "This screen is for administrators.");
      await pat.page.goto(pat.page.url().replace(/#.*$/, "#/audit"));
      await shows(pat.page, "This screen is for auditors.");
      await gotoHome(pat.page, "Welcome, Pat Flow");
      await pat.page.getByRole("link", { name: "Messages" }).click();
      await heading(pat.page, "Messages");
      await pat.page.getByLabel("Start a conversation with (username)").fill(doc);
      await pat.page.getByRole("button", { name: "Open conversation" }).click();
      await pat.page.getByRole("heading", { level: 2, name: "Conversation with Dr flow" }).waitFor({ timeout: 60_000 });
      const question = `Q-${unique("knee")}`;
      await pat.page.getByLabel("Message", { exact: true }).fill(question);
      await pat.page.getByRole("button", { name: "Send", exact: true }).click();
      await pat.page.getByTestId("message").filter({ hasText: question }).waitFor({ timeout: 30_000 });

      // The doctor reads it with carectl and replies from there.
      const read = await carectl(doc, ["msg", "read", patient]);
      assert.ok(read.some((m) => m.text === question), JSON.stringify(read.map((m) => m.text)));
      const fromCli = `CLI-${unique("ice")}`;
      await carectl(doc, ["msg", "send", patient, fromCli]);
      await pat.page.getByTestId("message").filter({ hasText: fromCli }).waitFor({ timeout: 60_000 });

      // The doctor's browser, linked from carectl by its code, reads the question and replies.
      const dr = await browser(DESKTOP);
      await signInAal2(dr.page, doc, PASSWORD, docSecret);
      await dr.page.getByRole("link", { name: "Messages" }).click();
      await heading(dr.page, "Link this browser from your other device");
      await dr.page.getByRole("button", { name: "Link this browser" }).click();
      const code = ((await dr.page.getByTestId("link-code").textContent()) ?? "").trim();
      await carectl(doc, ["device", "approve", code]);
      await dr.page.getByLabel("Start a conversation with (username)").waitFor({ timeout: 60_000 });
      await dr.page.getByLabel("Start a conversation with (username)").fill(patient);
      await dr.page.getByRole("button", { name: "Open conversation" }).click();
      await dr.page.getByTestId("message").filter({ hasText: question }).waitFor({ timeout: 60_000 });
      const fromWeb = `WEB-${unique("rest")}`;
      await dr.page.getByLabel("Message", { exact: true }).fill(fromWeb);
      await dr.page.getByRole("button", { name: "Send", exact: true }).click();
      await pat.page.getByTestId("message").filter({ hasText: fromWeb }).waitFor({ timeout: 60_000 });

      // The doctor writes a record in the browser.
      await gotoHome(dr.page, "Welcome, Dr flow");
      await patientRecords(dr.page, patient, "Pat Flow");
      const condition = `FLOW-${unique("meniscus")}`;
      await dr.page.getByRole("button", { name: "Write a record" }).click();
      await dr.page.getByLabel("Kind").selectOption("Condition");
      await dr.page.getByLabel("Condition (e.g. Atrial fibrillation)").fill(condition);
      await dr.page.getByLabel("Who else may read it").fill('"role:doctor" and "dept:cardiology"');
      await dr.page.getByRole("button", { name: "Encrypt and save" }).click();
      await shows(dr.page, /Saved Condition, version 1/, 90_000);

      // The patient reads it in the browser.
      await gotoHome(pat.page, "Welcome, Pat Flow");
      await pat.page.getByRole("link", { name: "Records" }).click();
      await heading(pat.page, "My records");
      await pat.page.getByTestId("record-content").first().waitFor({ timeout: 90_000 });
      assert.match(await pat.page.getByTestId("record-content").first().textContent(), new RegExp(condition));

      // The auditor, created with carectl, signs in, enrols MFA and follows the alert stream.
      await carectlAdmin();
      const auditorName = unique("aud");
      const created = await carectl("admin", ["admin", "create", auditorName, "--role", "auditor", "--display-name", "Audrey Auditor"]);
      assert.ok(created.initial_password, "carectl admin create returned an initial password");
      const aud = await browser(DESKTOP);
      await signInWithPassword(aud.page, auditorName, created.initial_password);
      await heading(aud.page, "Welcome, Audrey Auditor");
      await enrolMfa(aud.page, "Welcome, Audrey Auditor");
      await aud.page.getByRole("link", { name: "Audit log and alerts" }).click();
      await heading(aud.page, "Audit");
      await shows(aud.page, "Live: new alerts appear here as they are raised.");
      // A first checkpoint verified in this browser (signed now, so it exists).
      await aud.page.getByRole("button", { name: "Sign a checkpoint now and verify it" }).click();
      const checkpoint = aud.page.getByTestId("checkpoint-result");
      await checkpoint.waitFor({ timeout: 30_000 });
      assert.match(await checkpoint.textContent(), /Verified\..*no earlier checkpoint/);
      const firstSize = BigInt((await aud.page.getByTestId("tree-size").textContent()) ?? "0");
      assert.ok(firstSize > 0n, "the first checkpoint has events");
      assert.match((await aud.page.getByTestId("root-hash").textContent()) ?? "", /^[0-9a-f]{64}$/);
      await checkScreen(aud.page, "audit", aud.violations);

      // The second doctor: approved in the admin screen (oncology), MFA in the browser, break glass.
      await approveInBrowser(adm.page, doc2, ["dept:oncology"]);
      const dr2 = await browser(DESKTOP);
      await signInWithPassword(dr2.page, doc2);
      await heading(dr2.page, "Welcome, Dr glass");
      await enrolMfa(dr2.page, "Welcome, Dr glass");
      await patientRecords(dr2.page, patient, "Pat Flow");
      await dr2.page.getByText("No records yet.").waitFor();
      await dr2.page.getByLabel("Reason (no clinical detail)").fill("unconscious in the emergency department");
      await dr2.page.getByRole("button", { name: "Request emergency access" }).click();
      await dr2.page.getByTestId("emergency-active").waitFor({ timeout: 60_000 });
      const glassRecord = dr2.page.getByTestId("record").filter({ hasText: "Condition" });
      await glassRecord.waitFor({ timeout: 30_000 });
      await glassRecord.getByRole("button", { name: "Open" }).click();
      await glassRecord.getByTestId("record-content").waitFor({ timeout: 60_000 });
      assert.match(await glassRecord.getByTestId("record-content").textContent(), new RegExp(condition));

      // The auditor's screen shows the emergency-access alert as it arrives on the stream.
      const alert = aud.page.getByTestId("live-alert").filter({ hasText: "emergency access" });
      await alert.first().waitFor({ timeout: 90_000 });
      assert.match(await alert.first().textContent(), /high|medium|low/);
      await checkScreen(aud.page, "audit-live-alert", aud.violations);

      // Back on the screen later: the stored alerts (ListAlerts) hold it too.
      await gotoHome(aud.page, "Welcome, Audrey Auditor");
      await aud.page.getByRole("link", { name: "Audit log and alerts" }).click();
      await heading(aud.page, "Audit");
      await aud.page.getByTestId("alert").filter({ hasText: "emergency access" }).first().waitFor({ timeout: 30_000 });

      // The log grew: the next checkpoint is proven consistent with the one verified before.
      await aud.page.getByRole("button", { name: "Sign a checkpoint now and verify it" }).click();
      await shows(aud.page, `extends the checkpoint verified before (tree size ${firstSize})`, 30_000);
      const secondSize = BigInt((await aud.page.getByTestId("tree-size").textContent()) ?? "0");
      assert.ok(secondSize > firstSize, `the log grew from ${firstSize} to ${secondSize}`);

      // An actor nobody has: the server's message and what to do.
      await aud.page.getByLabel("Actor (username or user id)").fill(unique("nobody"));
      await aud.page.getByRole("button", { name: "Search the log" }).click();
      await aud.page.getByRole("alert").waitFor();
      assert.ok(((await aud.page.getByTestId("server-message").textContent()) ?? "").length > 0);

      // The emergency access events, filtered by the second doctor; one proven in the log.
      await aud.page.getByLabel("Actor (username or user id)").fill(doc2);
      await aud.page.getByLabel("Only emergency access").check();
      await aud.page.getByRole("button", { name: "Search the log" }).click();
      const event = aud.page.getByTestId("event").first();
      await event.waitFor({ timeout: 30_000 });
      assert.match(await event.textContent(), /emergency/);
      // The log holds ids only; the screen names the person beside each one.
      await shows(event, `Dr glass (@${doc2})`);
      await event.getByRole("button", { name: "Prove it is in the log" }).click();
      await event.getByTestId("inclusion").waitFor({ timeout: 30_000 });
      // Proven against the latest tree, which may have grown since (the auditor's own queries are logged).
      const included = /Included \(verified\): leaf \d+ of a tree of (\d+)/.exec(await event.getByTestId("inclusion").textContent());
      assert.ok(included && BigInt(included[1]) >= secondSize, `inclusion in a tree of at least ${secondSize}: ${included?.[0]}`);
      // A filter that matches nothing says so.
      await aud.page.getByLabel("Outcome").selectOption("error");
      await aud.page.getByRole("button", { name: "Search the log" }).click();
      await shows(aud.page, "No event matches.");
      await aud.page.setViewportSize(PHONE);
      await checkScreen(aud.page, "audit", aud.violations);

      // The patient's report lists both doctors, the emergency access marked.
      let report = "";
      for (let attempt = 0; attempt < 30 && !(report.includes("Dr glass") && report.includes("Dr flow") && /Emergency access/.test(report)); attempt++) {
        await pat.page.getByRole("button", { name: /Show who accessed my records|Refresh the report/ }).click();
        await pat.page.getByRole("button", { name: "Refresh the report" }).waitFor({ timeout: 30_000 });
        const list = pat.page.getByTestId("access-report");
        report = (await list.count()) > 0 ? ((await list.textContent()) ?? "") : "";
        if (!report.includes("Dr glass")) await new Promise((r) => setTimeout(r, 1000));
      }
      assert.match(report, /Dr flow/);
      assert.match(report, /Dr glass/);
      assert.match(report, /Emergency access/);

      // And the patient reads the browser-written record with carectl (done last: a new identity
      // for the carectl profile replaces the one the browser published).
      await waitForStep(patMfa.secret);
      await carectlLogin(patient, patient, patMfa.secret);
      await carectl(patient, ["device", "new-identity"]);
      const records = await carectl(patient, ["records", "list"]);
      const written = records.find((r) => r.kind === "Condition");
      assert.ok(written, "carectl lists the browser-written record");
      const opened = await carectl(patient, ["records", "get", written.record_id]);
      assert.equal(opened.content.code.text, condition);
    } finally {
      for (const context of contexts) await context.close();
    }
  });

  it("the admin screen disables, enables, ends sessions, resets MFA and refuses a stale change; the account screen changes the password and makes new recovery codes", async () => {
    const admin = bootstrapAdmin();
    // A patient with MFA, signed in in the browser (the account screen) and with carectl.
    const { context, page, violations } = await open(DESKTOP);
    const adm = await open(PHONE);
    try {
      const username = unique("acct");
      await register(page, username, "Ann Account");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Ann Account");
      const mfa = await enrolMfa(page, "Welcome, Ann Account");
      usedStep(mfa.secret, mfa.step);
      await carectlLogin(username, username, mfa.secret);

      // The account screen: who is signed in, then new recovery codes.
      await page.getByRole("link", { name: "Your account" }).click();
      await heading(page, "Your account");
      await shows(page, username);
      assert.equal(await page.getByTestId("account-username").textContent(), username);
      await checkScreen(page, "account", violations);
      await page.getByRole("button", { name: "Make new recovery codes" }).click();
      await page.getByRole("button", { name: "Yes, make new codes" }).click();
      await page.getByRole("list", { name: "New recovery codes" }).getByRole("listitem").nth(9).waitFor({ timeout: 30_000 });
      const fresh = (await page.getByRole("list", { name: "New recovery codes" }).getByRole("listitem").allTextContents()).map((c) => c.trim());
      assert.equal(fresh.length, 10);
      assert.equal(fresh.filter((c) => mfa.codes.includes(c)).length, 0, "the new codes are new");
      await page.getByRole("button", { name: "I have saved them" }).click();

      // A wrong current password: the server's message, nothing changed.
      await page.getByLabel("Current password").fill("not my password at all");
      await page.getByLabel("New password", { exact: true }).fill("another horse battery staple 43");
      await page.getByLabel("New password again").fill("another horse battery staple 43");
      await page.getByRole("button", { name: "Change password" }).click();
      await page.getByRole("alert").waitFor();
      assert.ok(((await page.getByTestId("server-message").textContent()) ?? "").length > 0);
      // The right one: the carectl session is ended, this one stays.
      const newPassword = "another horse battery staple 43";
      await page.getByLabel("Current password").fill(PASSWORD);
      await page.getByRole("button", { name: "Change password" }).click();
      await shows(page, /Password changed\. [1-9]\d* other sessions? (was|were) ended\./);
      await checkScreen(page, "account-password-changed", violations);
      await page.setViewportSize(PHONE);
      await checkScreen(page, "account", violations);
      // With the new password: an old recovery code no longer works, a new one does.
      await page.getByRole("button", { name: "Sign out" }).click();
      await signInWithPassword(page, username, newPassword);
      await heading(page, "Two-step sign-in");
      await page.getByRole("button", { name: "Use a recovery code instead" }).click();
      await page.getByLabel("Recovery code").fill(mfa.codes[0]);
      await page.getByRole("button", { name: "Continue" }).click();
      await page.getByRole("alert").waitFor();
      await page.getByLabel("Recovery code").fill(fresh[0]);
      await page.getByRole("button", { name: "Continue" }).click();
      await heading(page, "Welcome, Ann Account");

      // The admin opens the account.
      await signInAal2(adm.page, admin.username, admin.password, admin.totpSecret);
      await adm.page.getByRole("link", { name: "Administration" }).click();
      await heading(adm.page, "Administration");
      await adm.page.getByLabel("Open an account (username or user id)").fill(username);
      await adm.page.getByRole("button", { name: "Open", exact: true }).click();
      const account = adm.page.getByTestId("account");
      await account.waitFor();
      assert.equal(await account.getByTestId("account-status").textContent(), "active");

      // A change made elsewhere meanwhile: the screen's etag is stale, the server refuses.
      await carectlAdmin();
      await carectl("admin", ["admin", "attrs", username, "--attr", "org:elsewhere"]);
      await account.getByLabel("Assigned attributes").fill("org:here");
      await account.getByRole("button", { name: "Save attributes" }).click();
      await shows(account, "The account changed since you opened it. Reload it, check it again, then retry.");
      await account.getByRole("button", { name: "Reload", exact: true }).click();
      await shows(account, "org:elsewhere");
      await account.getByLabel("Assigned attributes").fill("org:here");
      await account.getByRole("button", { name: "Save attributes" }).click();
      await shows(account, /Saved\./);
      assert.equal(await account.getByTestId("account-attributes").textContent(), "org:here");

      // Disable asks first (by keyboard: Enter opens the question, focused; Escape backs out);
      // then sign-in is refused; enable restores it.
      await account.getByRole("button", { name: "Disable the account" }).focus();
      await adm.page.keyboard.press("Enter");
      const question = account.getByRole("group", { name: "Disable the account" });
      await question.waitFor();
      assert.equal(await question.evaluate((el) => el === document.activeElement), true, "the question has the focus");
      await checkScreen(adm.page, "admin-confirm", adm.violations);
      await adm.page.keyboard.press("Escape");
      await question.waitFor({ state: "detached" });
      await account.getByRole("button", { name: "Disable the account" }).click();
      await account.getByRole("button", { name: "Cancel" }).click();
      assert.equal(await account.getByTestId("account-status").textContent(), "active");
      await account.getByRole("button", { name: "Disable the account" }).click();
      await account.getByLabel("Reason code for the audit log (optional)").fill("E2E_TEST");
      await account.getByRole("button", { name: `Yes, disable ${username}` }).click();
      await shows(account, /Saved\..*disabled/);
      await assert.rejects(carectlLogin(username, username, mfa.secret, newPassword));
      await account.getByRole("button", { name: "Enable the account" }).click();
      await shows(account, /Saved\..*active/);
      // Enabled again: the same sign-in works.
      await carectlLogin(username, username, mfa.secret, newPassword);
      // Three wrong passwords lock the account (run.sh sets the threshold); then even the right
      // one is refused until the admin unlocks it.
      const passwordStep = (password) => carectl(username, ["login", username, "--password-stdin"], `${password}\n`);
      for (let attempt = 0; attempt < 3; attempt++) {
        await assert.rejects(passwordStep("not the password at all"), /wrong username or password/);
      }
      await assert.rejects(passwordStep(newPassword), /locked/);
      await account.getByRole("button", { name: "Reload", exact: true }).click();
      await shows(account, "yes (3 failed sign-ins)");
      await account.getByRole("button", { name: "Unlock" }).click();
      await shows(account, /Saved\./);
      await carectlLogin(username, username, mfa.secret, newPassword);
      // The admin then ends that session.
      await account.getByRole("button", { name: "End all sessions" }).click();
      await account.getByRole("button", { name: "Yes, end them" }).click();
      await shows(account, /Ended [1-9]\d* sessions? of /);

      // Reset MFA: the account is at AAL1 until it enrols again.
      await account.getByRole("button", { name: "Reset two-step sign-in" }).click();
      await account.getByRole("button", { name: "Yes, reset it" }).click();
      await shows(account, /Saved\..*two-step sign-in off/);
      await checkScreen(adm.page, "admin-actions", adm.violations);
    } finally {
      await adm.context.close();
      await context.close();
    }
  });
});
