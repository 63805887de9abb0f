// Files kept with records between the browser and carectl against the real mesh (e2e/run.sh,
// docs/protocol.md §13.4). A cardiology doctor in the browser attaches a PDF to a patient's
// record (sealed and uploaded in the browser, a DocumentReference record written under the same
// policy); the patient's `carectl records save` writes the very same bytes (SHA-256). A doctor on
// carectl attaches a PNG with `records attach`; the patient, in the browser, sees it as a preview
// and downloads it byte for byte (Playwright's download event). An oncology doctor, outside the
// policy, is refused by records-svc and sees its message. Every screen: axe, phone width, CSP,
// screenshots at desktop and phone size.

import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";

import { carectl, carectlUser } from "./carectl.mjs";
import { pdf, png } from "./files.mjs";
import { totp, totpStep } from "./totp.mjs";
import { DESKTOP, PASSWORD, PHONE, checkScreen, enrolMfa, heading, open, register, secondFactor, signInWithPassword, unique } from "./support.mjs";

const WORK = mkdtempSync(join(tmpdir(), "caremesh-e2e-recatt-"));
after(() => rmSync(WORK, { recursive: true, force: true }));

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

async function waitUntil(what, check, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** A carectl-made clinician signed in in a new browser, on the records screen. */
async function clinicianBrowser(user) {
  const session = await open(DESKTOP);
  await signInWithPassword(session.page, user.username);
  await secondFactor(session.page, user.secret, user.step);
  await heading(session.page, `Welcome, ${user.displayName}`);
  await session.page.getByRole("link", { name: "Records" }).click();
  await heading(session.page, "Patient records");
  return session;
}

describe("files kept with records", () => {
  it("a browser doctor's PDF saves byte for byte with carectl; a carectl doctor's PNG previews and downloads in the patient's browser; a doctor outside the policy is refused", async () => {
    const cardio = await carectlUser("drfile", { attrs: ["dept:cardiology"], publish: false });
    const cli = await carectlUser("drattach", { attrs: ["dept:cardiology"] });
    const onco = await carectlUser("droutside", { attrs: ["dept:oncology"], publish: false });

    // The patient registers in the browser (their first device) with MFA.
    const patient = unique("patfile");
    const mine = await open(DESKTOP);
    const sessions = [mine];
    try {
      const { page } = mine;
      await register(page, patient, "Pat Files");
      await signInWithPassword(page, patient);
      await heading(page, "Welcome, Pat Files");
      const patientMfa = await enrolMfa(page, "Welcome, Pat Files");
      await page.getByRole("link", { name: "Records" }).click();
      await heading(page, "My records");
      await page.getByText("You have no records yet.").waitFor({ timeout: 60_000 });

      // The record files are attached to: an Observation by the carectl doctor.
      const policy = '"role:doctor" and "dept:cardiology"';
      const observation = JSON.stringify({ resourceType: "Observation", status: "final", code: { text: "ECG" } });
      const target = await carectl(cli.profile, ["records", "put", "--patient", patient, "--kind", "Observation", "--policy", policy, observation]);
      assert.ok(target.record_id, "carectl returned the record id");

      // The cardiology doctor, in the browser, opens it and attaches a PDF (about 200 KB: 4 chunks).
      const doctor = await clinicianBrowser(cardio);
      sessions.push(doctor);
      const dpage = doctor.page;
      await dpage.getByLabel("Patient (username or user id)").fill(patient);
      await dpage.getByRole("button", { name: "Show records" }).click();
      const item = dpage.getByTestId("record").filter({ hasText: "Observation" });
      await item.waitFor({ timeout: 30_000 });
      await item.getByRole("button", { name: "Open" }).click();
      await item.getByTestId("record-content").waitFor({ timeout: 60_000 });
      await item.getByRole("button", { name: "Attach a file" }).click();
      const letter = pdf(unique("ECG-REPORT-"), 150_000);
      const letterPath = join(WORK, "ecg report.pdf");
      writeFileSync(letterPath, letter);
      await item.getByLabel("File to attach (photo, PDF, scan)").setInputFiles(letterPath);
      await item.getByTestId("chosen-record-file").waitFor();
      await checkScreen(dpage, "records-attach-form", doctor.violations);
      await dpage.setViewportSize(PHONE);
      await checkScreen(dpage, "records-attach-form", doctor.violations);
      await dpage.setViewportSize(DESKTOP);
      const started = Date.now();
      await item.getByRole("button", { name: "Encrypt and attach" }).click();
      const documentItem = dpage.getByTestId("record").filter({ hasText: "DocumentReference" });
      const failure = item.getByRole("alert");
      await waitUntil("the DocumentReference in the list", async () => {
        if ((await failure.count()) > 0) throw new Error(`attaching failed: ${await failure.first().textContent()}`);
        return (await documentItem.count()) > 0;
      }, 90_000);
      console.log(`  attach a ${letter.length}-byte PDF in the browser (seal, upload, DocumentReference): ${Date.now() - started} ms`);
      // The new record: same patient, same policy, kind DocumentReference.
      const listed = await carectl(cli.profile, ["records", "list", "--patient", patient]);
      const pdfRecord = listed.find((r) => r.kind === "DocumentReference");
      assert.ok(pdfRecord, `carectl lists the DocumentReference: ${JSON.stringify(listed)}`);
      assert.equal(pdfRecord.policy, listed.find((r) => r.record_id === target.record_id).policy, "the target's very policy");
      const document = await carectl(cli.profile, ["records", "get", pdfRecord.record_id]);
      assert.equal(document.content.context.related[0].reference, `Observation/${target.record_id}`);
      assert.equal(document.content.content[0].attachment.title, "ecg report.pdf");
      assert.equal(document.content.content[0].attachment.size, letter.length);
      assert.equal(document.content.content[0].attachment.contentType, "application/pdf");
      // The doctor opens it: the file, not its key.
      await documentItem.getByRole("button", { name: "Open" }).click();
      await documentItem.getByTestId("record-file-name").waitFor({ timeout: 60_000 });
      assert.equal(await documentItem.getByTestId("record-file-name").textContent(), "ecg report.pdf");
      assert.doesNotMatch((await dpage.locator("main").textContent()) ?? "", /attachment-key|valueBase64Binary/);
      await checkScreen(dpage, "records-attached", doctor.violations);
      await dpage.setViewportSize(PHONE);
      await checkScreen(dpage, "records-attached", doctor.violations);

      // The carectl doctor attaches a PNG to the same record.
      const xray = png(160, 90, (x, y) => [x, y * 2, 200]);
      const xrayPath = join(WORK, "chest-xray.png");
      writeFileSync(xrayPath, xray);
      const attached = await carectl(cli.profile, ["records", "attach", target.record_id, xrayPath]);
      assert.equal(attached.kind, "DocumentReference");

      // The patient sees both files; the PNG as a preview, downloaded byte for byte.
      await page.getByRole("button", { name: "Reload my records" }).click();
      const pngItem = page.getByTestId("record").filter({ hasText: "chest-xray.png" });
      await pngItem.waitFor({ timeout: 90_000 });
      await page.getByTestId("record").filter({ hasText: "ecg report.pdf" }).waitFor();
      await waitUntil("the x-ray preview", () =>
        pngItem.getByTestId("record-file-preview").evaluate((img) => img.complete && img.naturalWidth > 0).catch(() => false),
      );
      assert.equal(await pngItem.getByTestId("record-file-preview").evaluate((img) => img.naturalWidth), 160);
      const save = pngItem.getByRole("link", { name: "Save chest-xray.png" });
      const [download] = await Promise.all([page.waitForEvent("download"), save.click()]);
      assert.equal(download.suggestedFilename(), "chest-xray.png");
      const downloaded = join(WORK, "downloaded.png");
      await download.saveAs(downloaded);
      assert.equal(sha256(readFileSync(downloaded)), sha256(xray), "the browser's download is the PNG byte for byte");
      await checkScreen(page, "records-patient-files", mine.violations);
      await page.setViewportSize(PHONE);
      await checkScreen(page, "records-patient-files", mine.violations);

      // An oncology doctor is outside the policy: records-svc refuses, and says so on screen.
      const outsider = await clinicianBrowser(onco);
      sessions.push(outsider);
      await outsider.page.getByLabel("Record id (e.g. from a referral)").fill(attached.record_id);
      await outsider.page.getByRole("button", { name: "Open record" }).click();
      const refusal = outsider.page.getByRole("alert");
      await refusal.waitFor({ timeout: 30_000 });
      assert.match((await refusal.textContent()) ?? "", /do not satisfy the record's policy/);
      assert.equal(await refusal.getAttribute("data-code"), "PermissionDenied");
      assert.match((await refusal.textContent()) ?? "", /Ask the patient's care team, or use emergency access/);
      assert.equal(await outsider.page.getByTestId("record-file").count(), 0, "nothing of the file is shown");
      await checkScreen(outsider.page, "records-file-refused", outsider.violations);
      await outsider.page.setViewportSize(PHONE);
      await checkScreen(outsider.page, "records-file-refused", outsider.violations);

      // The patient's carectl saves the browser doctor's PDF: the very same bytes. (The patient's
      // keys live in the browser, so this profile starts a new identity; done last.)
      let step = Math.max(patientMfa.step + 1, totpStep());
      while (step > totpStep() + 1) await new Promise((r) => setTimeout(r, 1000));
      await carectl(patient, ["login", patient, "--password-stdin", "--totp", totp(patientMfa.secret, step)], `${PASSWORD}\n`);
      await carectl(patient, ["device", "new-identity"]);
      const out = mkdtempSync(join(WORK, "saved-"));
      const saved = await carectl(patient, ["records", "save", pdfRecord.record_id, "--out", out]);
      assert.equal(sha256(readFileSync(saved.path)), sha256(letter), "carectl saved the browser's PDF byte for byte");
      // The server holds ciphertext only: no stored file contains the PDF's bytes.
      const walk = (dir) =>
        readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
          entry.isDirectory() ? walk(join(dir, entry.name)) : entry.isFile() ? [join(dir, entry.name)] : [],
        );
      for (const file of walk(process.env.E2E_DATA_DIR)) {
        assert.equal(readFileSync(file).includes(letter.subarray(200, 264)), false, `the PDF's bytes in ${file}`);
      }
    } finally {
      for (const session of sessions) await session.context.close();
    }
  });
});
