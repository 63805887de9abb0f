// Records in the browser against the real mesh (e2e/run.sh): a doctor made and approved with
// carectl writes a record for a patient with `carectl records put`; the patient, registered in
// the browser with MFA, reads it decrypted in the browser. A second doctor, approved with carectl
// but working only in the browser, writes a record there (FAME encryption in TypeScript); the
// patient reads it in the browser and then with carectl (Rust SDK: signature, hash and content).
// A tampered ciphertext is never shown as content (vitest covers that at the crypto layer).

import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import assert from "node:assert/strict";

import {
  PASSWORD,
  PHONE,
  DESKTOP,
  bootstrapAdmin,
  carectl,
  carectlLogin,
  checkScreen,
  enrolMfa,
  heading,
  open,
  nextCode,
  register,
  shows,
  signInWithPassword,
  unique,
  usedStep,
  waitForStep,
} from "./support.mjs";

async function login(profile, username, secret) {
  return carectlLogin(profile, username, secret, profile === "admin" ? bootstrapAdmin().password : PASSWORD);
}

/** A doctor registered and approved with carectl; with `mfa`, also MFA-enrolled in carectl. */
async function doctor(username, attributes, withCarectlMfa) {
  await carectl(username, ["register", username, "--role", "doctor", "--display-name", `Dr ${username}`, "--password-stdin"], `${PASSWORD}\n`);
  await carectl("admin", ["admin", "approve", username, ...attributes.flatMap((a) => ["--attr", a])]);
  if (!withCarectlMfa) return null;
  await login(username, username, null);
  const enrolment = await carectl(username, ["mfa", "enroll", "--no-qr"]);
  const secret = enrolment.secret.replace(/\s/g, "");
  await carectl(username, ["mfa", "confirm", nextCode(secret)]);
  await login(username, username, secret);
  return secret;
}

/** Flips one bit of a record version's ciphertext in whichever SQLite file holds record_versions. */
const TAMPER = `
import sqlite3, sys
record_id, paths = sys.argv[1], sys.argv[2:]
for path in paths:
    db = sqlite3.connect(path, timeout=30)
    try:
        if not db.execute("select 1 from sqlite_master where name = 'record_versions'").fetchone():
            continue
        (blob,) = db.execute("select ciphertext from record_versions where record_id = ? and version = 1", (record_id,)).fetchone()
        bad = bytearray(blob)
        bad[0] ^= 1
        cur = db.execute("update record_versions set ciphertext = ? where record_id = ? and version = 1", (bytes(bad), record_id))
        db.commit()
        print(cur.rowcount)
        break
    finally:
        db.close()
`;

async function gotoRecords(page) {
  await page.getByRole("link", { name: "Records" }).click();
}

describe("records in the browser", () => {
  it("a record written with carectl opens in the patient's browser; one written in a doctor's browser opens for the patient in the browser and in carectl", async () => {
    const admin = bootstrapAdmin();
    await login("admin", admin.username, admin.totpSecret);

    const cli = unique("drcli");
    await doctor(cli, ["dept:cardiology"], true);
    const web = unique("drweb");
    await doctor(web, ["dept:oncology"], false);

    // The patient registers in the browser and enrols MFA (health data needs AAL2).
    const patient = unique("pat");
    const { context, page, violations } = await open(PHONE);
    let doctorContext = null;
    try {
      await heading(page, "Sign in");
      await register(page, patient, "Pat Records");
      await heading(page, "Sign in");
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Sign in" }).click();
      await heading(page, "Welcome, Pat Records");
      const patientMfa = await enrolMfa(page, "Welcome, Pat Records");
      usedStep(patientMfa.secret, patientMfa.step);

      // Before any record: the screen says so.
      await gotoRecords(page);
      await heading(page, "My records");
      await page.getByText("You have no records yet.").waitFor({ timeout: 60_000 });
      await checkScreen(page, "records-empty", violations);

      // The carectl doctor writes an Observation for the patient (Rust SDK: FAME + AES-GCM, signed).
      const marker = unique("HR-marker-");
      const fhir = JSON.stringify({ resourceType: "Observation", status: "final", code: { text: marker }, valueQuantity: { value: 61, unit: "/min" } });
      const written = await carectl(cli, ["records", "put", "--patient", patient, "--kind", "Observation", "--policy", '"role:doctor" and "dept:cardiology"', fhir]);
      assert.ok(written.record_id, "carectl returned the record id");

      // The patient reloads the list: decrypted in the browser, signature and hash checked.
      await page.getByRole("button", { name: "Reload my records" }).click();
      const content = page.getByTestId("record-content").first();
      await content.waitFor({ timeout: 90_000 });
      assert.match(await content.textContent(), new RegExp(marker));
      assert.match(await page.getByTestId("my-records").textContent(), /Observation/);
      await checkScreen(page, "records-patient", violations);

      // The browser-only doctor signs in, enrols MFA, finds the patient and writes a Condition.
      const opened = await open(DESKTOP);
      doctorContext = opened.context;
      const dpage = opened.page;
      await signInWithPassword(dpage, web);
      await heading(dpage, `Welcome, Dr ${web}`);
      await enrolMfa(dpage, `Welcome, Dr ${web}`);
      await gotoRecords(dpage);
      await heading(dpage, "Patient records");
      await dpage.getByLabel("Patient (username or user id)").fill(patient);
      await dpage.getByRole("button", { name: "Show records" }).click();
      await dpage.getByRole("heading", { name: "Records of Pat Records" }).waitFor({ timeout: 30_000 });
      // The cardiology record's policy does not admit an oncologist: records-svc does not list it.
      await dpage.getByText("No records yet.").waitFor();
      assert.equal(await dpage.getByTestId("record").count(), 0);
      await checkScreen(dpage, "records-doctor-list", opened.violations);

      const condition = unique("AF-marker-");
      await dpage.getByRole("button", { name: "Write a record" }).click();
      await dpage.getByLabel("Kind").selectOption("Condition");
      await dpage.getByLabel("Condition (e.g. Atrial fibrillation)").fill(condition);
      await dpage.getByLabel("Who else may read it").fill('"role:doctor" and "dept:oncology"');
      await checkScreen(dpage, "records-doctor-form", opened.violations);
      await dpage.getByRole("button", { name: "Encrypt and save" }).click();
      await shows(dpage, /Saved Condition, version 1/, 90_000);

      // The doctor's own record opens for them, and its history verifies.
      const item = dpage.getByTestId("record").filter({ hasText: "Condition" });
      await item.getByRole("button", { name: "Open" }).click();
      await item.getByTestId("record-content").waitFor({ timeout: 60_000 });
      assert.match(await item.getByTestId("record-content").textContent(), new RegExp(condition));
      await item.getByRole("button", { name: "History" }).click();
      await item.getByTestId("verification").first().waitFor({ timeout: 60_000 });
      assert.equal(await item.getByTestId("verification").first().textContent(), "Signature and hash chain verified");
      await checkScreen(dpage, "records-doctor-history", opened.violations);

      // A second version through the raw JSON editor (prefilled with the opened content): the
      // history then shows two versions, each verified and chained.
      const resolved = unique("AF2-marker-");
      await item.getByRole("button", { name: "New version" }).click();
      const editor = item.getByLabel("FHIR JSON", { exact: true });
      assert.match(await editor.inputValue(), new RegExp(condition));
      await editor.fill(JSON.stringify({ resourceType: "Condition", clinicalStatus: { text: "resolved" }, code: { text: resolved } }));
      await item.getByRole("button", { name: "Save new version" }).click();
      const item2 = dpage.getByTestId("record").filter({ hasText: "Version 2" });
      await item2.waitFor({ timeout: 90_000 });
      await item2.getByRole("button", { name: "History" }).click();
      await item2.getByTestId("verification").nth(1).waitFor({ timeout: 60_000 });
      assert.deepEqual(await item2.getByTestId("verification").allTextContents(), [
        "Signature and hash chain verified",
        "Signature and hash chain verified",
      ]);
      // Raw JSON that is not the declared kind is refused before anything is encrypted.
      await item2.getByRole("button", { name: "New version" }).click();
      await item2.getByLabel("Edit as raw FHIR JSON").check();
      await item2.getByLabel("FHIR JSON", { exact: true }).fill('{"resourceType":"Observation"}');
      await item2.getByRole("button", { name: "Save new version" }).click();
      await shows(item2, "the content is a FHIR Observation, not a Condition");
      // Entered in error: stays listed, marked.
      await item2.getByRole("button", { name: "Entered in error" }).click();
      await item2.getByLabel("Why is it in error?").selectOption("WRONG_PATIENT");
      await item2.getByRole("button", { name: "Mark entered in error" }).click();
      await shows(dpage, "Entered in error: WRONG_PATIENT");

      // Break glass: the oncologist opens the cardiology record through emergency access, with a
      // reason and a visible countdown.
      await dpage.getByLabel("Reason (no clinical detail)").fill("unconscious in the emergency department");
      await dpage.getByRole("button", { name: "Request emergency access" }).click();
      await dpage.getByTestId("emergency-active").waitFor({ timeout: 60_000 });
      assert.match(await dpage.getByTestId("countdown").textContent(), /^(29|30):\d\d$/);
      const observation = dpage.getByTestId("record").filter({ hasText: "Observation" });
      await observation.waitFor({ timeout: 30_000 });
      await observation.getByRole("button", { name: "Open" }).click();
      await observation.getByTestId("record-content").waitFor({ timeout: 60_000 });
      assert.match(await observation.getByTestId("record-content").textContent(), new RegExp(marker));
      await checkScreen(dpage, "records-break-glass", opened.violations);
      // The doctor's screens at phone size too (the form, list, history and countdown).
      await dpage.setViewportSize(PHONE);
      await checkScreen(dpage, "records-doctor", opened.violations);

      // The patient sees both records, decrypted in the browser.
      await page.getByRole("button", { name: "Reload my records" }).click();
      await page.getByTestId("record-content").nth(1).waitFor({ timeout: 90_000 });
      const all = (await page.getByTestId("record-content").allTextContents()).join("\n");
      assert.match(all, new RegExp(marker));
      assert.match(all, new RegExp(resolved));
      await shows(page, "Entered in error: WRONG_PATIENT");

      // The patient's report shows the doctor's accesses, the emergency one marked (the audit
      // log is fed asynchronously: ask again until it shows).
      let report = "";
      for (let attempt = 0; attempt < 30 && !/Emergency access/.test(report); attempt++) {
        await page.getByRole("button", { name: /Show who accessed my records|Refresh the report/ }).click();
        await page.getByRole("button", { name: "Refresh the report" }).waitFor({ timeout: 30_000 });
        const list = page.getByTestId("access-report");
        report = (await list.count()) > 0 ? ((await list.textContent()) ?? "") : "";
        if (!/Emergency access/.test(report)) await new Promise((r) => setTimeout(r, 1000));
      }
      assert.match(report, new RegExp(`Dr ${web}`));
      assert.match(report, /Emergency access/);
      await checkScreen(page, "records-access-report", violations);

      // And the browser-written record opens in Rust: carectl verifies the author's signature and
      // hash and decrypts. (The patient's keys live in the browser, so this profile starts a new
      // identity; done last, as it replaces the one the browser published.)
      const records = await carectl(patient, ["login", patient, "--password-stdin", "--totp", (await waitForStep(patientMfa.secret), nextCode(patientMfa.secret))], `${PASSWORD}\n`)
        .then(() => carectl(patient, ["device", "new-identity"]))
        .then(() => carectl(patient, ["records", "list", "--include-entered-in-error"]));
      const browserWritten = records.find((r) => r.kind === "Condition");
      assert.ok(browserWritten, "carectl lists the browser-written record");
      const read = await carectl(patient, ["records", "get", browserWritten.record_id]);
      assert.equal(read.content.code.text, resolved);
      assert.equal(read.content.resourceType, "Condition");
      assert.equal(read.version, 2);
      const first = await carectl(patient, ["records", "get", browserWritten.record_id, "--version", "1"]);
      assert.equal(first.content.code.text, condition);

      // No record text reaches the server's files in the clear (databases, blobs, logs).
      const files = [];
      const walk = (dir) => {
        for (const entry of readdirSync(dir, { withFileTypes: true })) {
          const path = join(dir, entry.name);
          if (entry.isDirectory()) walk(path);
          else if (entry.isFile()) files.push(path);
        }
      };
      walk(process.env.E2E_DATA_DIR);
      assert.ok(files.some((f) => /records/.test(f)), `no records-svc files among ${files.length}`);
      for (const file of files) {
        const bytes = readFileSync(file);
        for (const text of [marker, condition, resolved]) assert.equal(bytes.includes(text), false, `${text} in ${file}`);
      }

      // A ciphertext tampered with in records-svc's database shows an error in the browser, not
      // content: the author's signature covers it.
      const databases = files.filter((f) => readFileSync(f).subarray(0, 16).toString("latin1") === "SQLite format 3\u0000");
      const changed = await new Promise((resolve, reject) =>
        execFile("python3", ["-c", TAMPER, written.record_id, ...databases], (error, stdout, stderr) =>
          error ? reject(new Error(stderr || error.message)) : resolve(stdout.trim()),
        ),
      );
      assert.equal(changed, "1", "one record version tampered with");
      await page.getByRole("button", { name: "Reload my records" }).click();
      await shows(page, "Not shown:", 90_000);
      assert.match(await page.getByTestId("my-records").textContent(), /Not shown: BadSignature: the record author signature is invalid/);
      const after = (await page.getByTestId("record-content").allTextContents()).join("\n");
      assert.doesNotMatch(after, new RegExp(marker));
      assert.match(after, new RegExp(resolved));
      await checkScreen(page, "records-tampered", violations);
    } finally {
      await doctorContext?.close();
      await context.close();
    }
  });
});
