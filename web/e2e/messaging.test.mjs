// End-to-end messages between the browser and carectl against the real mesh (e2e/run.sh): a
// patient registers in the browser, enrols MFA, becomes a device (first sign-in) and writes to a
// doctor that carectl created, approved and signed in; the doctor reads it with `carectl msg read`
// and replies with `carectl msg send`, which arrives live in the browser; both sides show the same
// safety number. The marker texts appear neither in the browser's IndexedDB (read through the
// page) nor in any file of the mesh's data directory (SQLite databases, their WAL files, the log),
// and sign-out deletes the device database. A user whose identity was made by carectl gets the
// "link this browser" screen, links it by code with `carectl device approve`, reads a message
// from before from the archive, and removes the carectl device from the devices screen.

import { execFile } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { carectl, carectlUser, spawnCarectl } from "./carectl.mjs";
import {
  DESKTOP,
  PASSWORD,
  PHONE,
  checkScreen,
  enrolMfa,
  heading,
  open,
  register,
  secondFactor,
  signInWithPassword,
  unique,
} from "./support.mjs";

/** A doctor made with carectl (approved, MFA on, keys published), or a patient (`role`). */
function doctor(name, role = "doctor") {
  return carectlUser(name, { role, displayName: role === "doctor" ? `Dr ${name}` : name });
}

/**
 * `carectl device link` for a new profile of `user` (signed in with a recovery code): resolves
 * with the code it shows and a promise of its end (it waits for an approval).
 */
async function carectlLink(user, recoveryCode) {
  const profile = `${user.username}-new`;
  await carectl(profile, ["login", user.username, "--password-stdin", "--recovery-code", recoveryCode], `${PASSWORD}\n`);
  const child = spawnCarectl(profile, ["device", "link", "--no-qr"]);
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const done = new Promise((resolve, reject) => {
    child.on("exit", (status) => (status === 0 ? resolve(stdout) : reject(new Error(`carectl device link: ${stderr}`))));
  });
  const code = await new Promise((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      const match = /"code":"([^"]+)"/.exec(stdout);
      if (match) resolve(match[1]);
    });
    done.catch(reject);
  });
  return { profile, code, done };
}

/** Every record of the page's IndexedDB databases, as text (ciphertext bytes as latin1). */
async function indexedDbDump(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const info of await indexedDB.databases()) {
      const db = await new Promise((resolve, reject) => {
        const req = indexedDB.open(info.name);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      for (const storeName of db.objectStoreNames) {
        const tx = db.transaction(storeName, "readonly");
        const store = tx.objectStore(storeName);
        const [keys, values] = await Promise.all(
          [store.getAllKeys(), store.getAll()].map(
            (req) => new Promise((resolve, reject) => ((req.onsuccess = () => resolve(req.result)), (req.onerror = () => reject(req.error)))),
          ),
        );
        keys.forEach((key, i) => {
          const value = values[i];
          const text = (v) => {
            if (v instanceof Uint8Array) return Array.from(v, (b) => String.fromCharCode(b)).join("");
            if (v instanceof CryptoKey) return `CryptoKey(extractable=${v.extractable},${v.algorithm.name})`;
            if (v && typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}=${text(x)}`).join(";");
            return String(v);
          };
          out.push({ db: info.name, key: String(key), kind: value instanceof CryptoKey ? "key" : typeof value, text: text(value) });
        });
      }
      db.close();
    }
    return out;
  });
}

/**
 * Flips the last byte of the newest device ciphertext in messaging-svc's SQLite database (the
 * end of the encoded DeviceCiphertext: its AEAD tag), with Python's sqlite3 (Node.js 20 has none).
 */
function tamperLastCiphertext() {
  const script = `
import glob, os, sqlite3, sys
for path in glob.glob(os.path.join(sys.argv[1], "**", "*"), recursive=True):
    if not os.path.isfile(path) or path.endswith(("-wal", "-shm", ".log")):
        continue
    try:
        db = sqlite3.connect(path, timeout=10)
        row = db.execute("SELECT rowid, body FROM message_device_ciphertexts ORDER BY rowid DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError:
        continue
    body = bytearray(row[1])
    body[-1] ^= 1
    db.execute("UPDATE message_device_ciphertexts SET body = ? WHERE rowid = ?", (bytes(body), row[0]))
    db.commit()
    print(path)
    sys.exit(0)
sys.exit("no messaging database found")
`;
  return new Promise((resolve, reject) => {
    execFile("python3", ["-c", script, process.env.E2E_DATA_DIR], (error, stdout, stderr) =>
      error ? reject(new Error(`tampering failed: ${stderr || error.message}`)) : resolve(stdout.trim()),
    );
  });
}

/** Files of a directory tree that contain `needle` (as UTF-8 bytes). */
function filesContaining(dir, needle) {
  const found = [];
  const bytes = Buffer.from(needle, "utf8");
  const walk = (path) => {
    for (const entry of readdirSync(path)) {
      const full = join(path, entry);
      const stat = statSync(full);
      if (stat.isDirectory()) walk(full);
      else if (stat.isFile() && readFileSync(full).includes(bytes)) found.push(full);
    }
  };
  walk(dir);
  return found;
}

describe("messages between the browser and carectl", () => {
  it("a patient in the browser writes to a doctor; the doctor reads and replies with carectl, live", async () => {
    const doc = await doctor("house");
    const { context, page, violations } = await open(DESKTOP);
    try {
      const username = unique("pat");
      await register(page, username, "Pat Patient");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Pat Patient");
      const mfa = await enrolMfa(page, "Welcome, Pat Patient");

      await page.getByRole("link", { name: "Messages" }).click();
      await heading(page, "Messages");
      await page.getByLabel("Start a conversation with (username)").waitFor({ timeout: 60_000 });
      await checkScreen(page, "messages-empty", violations);

      // A username that does not exist: the server's message is shown.
      await page.getByLabel("Start a conversation with (username)").fill(unique("nobody"));
      await page.getByRole("button", { name: "Open conversation" }).click();
      await page.getByRole("alert").waitFor();
      assert.ok(((await page.getByTestId("server-message").textContent()) ?? "").length > 0);

      await page.getByLabel("Start a conversation with (username)").fill(doc.username);
      await page.getByRole("button", { name: "Open conversation" }).click();
      await page.getByRole("heading", { level: 2, name: "Conversation with Dr house" }).waitFor();

      const marker = `MARKER-${unique("ankle")}-swollen`;
      await page.getByLabel("Message", { exact: true }).fill(marker);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: marker }).waitFor();
      await checkScreen(page, "messages-conversation", violations);

      // The doctor reads it with carectl (which also sends read receipts).
      const read = await carectl(doc.profile, ["msg", "read", username]);
      assert.ok(
        read.some((m) => m.text === marker),
        `carectl msg read shows: ${JSON.stringify(read.map((m) => m.text))}`,
      );

      // Both sides compute the same safety number.
      const verify = await carectl(doc.profile, ["contacts", "verify", username]);
      await page.locator("summary", { hasText: "Safety number" }).click();
      assert.equal((await page.getByTestId("safety-number").textContent())?.trim(), verify.safety_number);

      // The reply arrives over the live stream, without reloading.
      const reply = `REPLY-${unique("rest")}-ice`;
      await carectl(doc.profile, ["msg", "send", username, reply]);
      await page.getByTestId("message").filter({ hasText: reply }).waitFor({ timeout: 30_000 });
      // The doctor's read receipt shows on the first message (the open conversation refreshes).
      await page.getByTestId("message").filter({ hasText: marker }).filter({ hasText: "· read" }).waitFor({ timeout: 20_000 });

      await page.setViewportSize(PHONE);
      await checkScreen(page, "messages-conversation", violations);

      // No marker text unencrypted in the browser's storage...
      const dump = await indexedDbDump(page);
      assert.ok(dump.length >= 3, `IndexedDB records: ${JSON.stringify(dump.map((r) => r.key))}`);
      const key = dump.find((r) => r.kind === "key");
      assert.ok(key && /CryptoKey\(extractable=false,AES-GCM\)/.test(key.text), "the device state key is a non-extractable AES-GCM CryptoKey");
      for (const record of dump) {
        for (const needle of [marker, reply, "signing_seed", "secret", username]) {
          assert.ok(!record.text.includes(needle), `IndexedDB record ${record.key} contains ${needle}`);
        }
      }
      // ...nor in any file of the mesh (SQLite databases and WAL files, the log). The scan does
      // read the databases: the patient's username, which auth-svc stores, is found.
      assert.ok(filesContaining(process.env.E2E_DATA_DIR, username).length > 0, "the scan finds the stored username");
      for (const needle of [marker, reply]) {
        assert.deepEqual(filesContaining(process.env.E2E_DATA_DIR, needle), [], `files containing ${needle}`);
      }

      // A reload forgets the session (tokens live in memory) but not the device: signed in again,
      // the same device shows the conversation.
      await page.reload();
      await signInWithPassword(page, username);
      await secondFactor(page, mfa.secret, mfa.step);
      await heading(page, "Welcome, Pat Patient");
      await page.getByRole("link", { name: "Messages" }).click();
      await page.getByRole("button", { name: "Dr house", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: marker }).waitFor();
      await page.getByTestId("message").filter({ hasText: reply }).waitFor();

      // Sign-out deletes this browser's device database.
      await page.getByRole("button", { name: "Sign out" }).click();
      await heading(page, "Sign in");
      const left = await page.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
      assert.deepEqual(left.filter((name) => name.startsWith("caremesh-device-")), []);

      // Signed in again, the browser holds no keys: it must be linked, or start over with a new
      // identity, which the doctor's carectl then refuses to write to until accepted.
      await signInWithPassword(page, username);
      await heading(page, "Two-step sign-in");
      await page.getByRole("button", { name: "Use a recovery code instead" }).click();
      await page.getByLabel("Recovery code").fill(mfa.codes[0]);
      await page.getByRole("button", { name: "Continue" }).click();
      await heading(page, "Welcome, Pat Patient");
      await page.getByRole("link", { name: "Messages" }).click();
      await heading(page, "Link this browser from your other device");
      await page.getByLabel("I understand: start over with a new identity").check();
      await page.getByRole("button", { name: "Start over with a new identity" }).click();
      await page.getByLabel("Start a conversation with (username)").waitFor({ timeout: 60_000 });
      await assert.rejects(carectl(doc.profile, ["msg", "send", username, "after the new identity"]), /identity key/);
      const accepted = await carectl(doc.profile, ["contacts", "verify", username, "--accept"]);
      const fresh = `FRESH-${unique("knee")}`;
      await carectl(doc.profile, ["msg", "send", username, fresh]);
      await page.getByRole("button", { name: "Dr house", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: fresh }).waitFor();
      // The earlier messages were sealed for the old keys: shown as unreadable, never as text.
      await page.getByTestId("message").filter({ hasText: "Cannot open this message" }).first().waitFor();
      await page.locator("summary", { hasText: "Safety number" }).click();
      assert.equal((await page.getByTestId("safety-number").textContent())?.trim(), accepted.safety_number);
    } finally {
      await context.close();
    }
  });

  it("the browser approves a carectl device, which reads the history; the doctor's new device is shown as a change", async () => {
    const doc = await doctor("cuddy");
    const { context, page, violations } = await open(DESKTOP);
    try {
      const username = unique("lee");
      await register(page, username, "Lee");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Lee");
      const mfa = await enrolMfa(page, "Welcome, Lee");
      await page.getByRole("link", { name: "Messages" }).click();
      await page.getByLabel("Start a conversation with (username)").fill(doc.username);
      await page.getByRole("button", { name: "Open conversation" }).click();
      const first = `FIRST-${unique("rash")}`;
      await page.getByLabel("Message", { exact: true }).fill(first);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: first }).waitFor();
      const answer = `ANSWER-${unique("cream")}`;
      await carectl(doc.profile, ["msg", "send", username, answer]);
      await page.getByTestId("message").filter({ hasText: answer }).waitFor({ timeout: 30_000 });

      // A second tab of the same browser does not open the device while this one has it.
      const tab = await context.newPage();
      await tab.goto(page.url().replace(/#.*$/, ""));
      await signInWithPassword(tab, username);
      await heading(tab, "Two-step sign-in");
      await tab.getByRole("button", { name: "Use a recovery code instead" }).click();
      await tab.getByLabel("Recovery code").fill(mfa.codes[1]);
      await tab.getByRole("button", { name: "Continue" }).click();
      await heading(tab, "Welcome, Lee");
      await tab.getByRole("link", { name: "Messages" }).click();
      await tab.getByTestId("other-tab").waitFor();
      await tab.close();

      // The patient links carectl as a second device, approving it in the browser.
      const patientCli = await carectlLink({ username }, mfa.codes[0]);
      await page.getByRole("link", { name: "Your devices" }).click();
      await heading(page, "Your devices");
      await page.getByLabel("Code from the new device").fill(patientCli.code.toLowerCase());
      await page.getByRole("button", { name: "Approve the new device" }).click();
      await page.getByTestId("linked").waitFor();
      await patientCli.done;
      assert.equal(await page.getByTestId("device").count(), 2);
      await checkScreen(page, "devices-linked", violations);
      // carectl opens the conversation from the patient's archive copies, sealed by the browser.
      const history = await carectl(patientCli.profile, ["msg", "read", doc.username]);
      assert.deepEqual(
        history.map((m) => m.text),
        [first, answer],
      );

      // The doctor links a second device: the browser's next send notices and shows it.
      const doctorCli = await carectlLink(doc, doc.codes[0]);
      await carectl(doc.profile, ["device", "approve", doctorCli.code]);
      await doctorCli.done;
      await page.getByRole("link", { name: "Back to messages" }).click();
      await page.getByRole("button", { name: "Dr cuddy", exact: true }).click();
      const second = `SECOND-${unique("itch")}`;
      await page.getByLabel("Message", { exact: true }).fill(second);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: second }).waitFor();
      await page.getByTestId("device-notices").filter({ hasText: "added a device" }).waitFor();
      await checkScreen(page, "messages-device-notice", violations);
      // Both of the doctor's devices and the patient's carectl device can read it.
      for (const [profile, peer] of [
        [doc.profile, username],
        [doctorCli.profile, username],
        [patientCli.profile, doc.username],
      ]) {
        const read = await carectl(profile, ["msg", "read", peer]);
        assert.ok(read.some((m) => m.text === second), `${profile}: ${JSON.stringify(read.map((m) => m.text))}`);
      }

      // The doctor starts over with a new identity: the browser warns and refuses to send until
      // the new key is accepted.
      const reset = `${doc.username}-reset`;
      await carectl(reset, ["login", doc.username, "--password-stdin", "--recovery-code", doc.codes[1]], `${PASSWORD}\n`);
      await carectl(reset, ["device", "new-identity"]);
      await page.getByRole("button", { name: "Dr cuddy", exact: true }).click();
      await page.getByTestId("identity-changed").waitFor();
      await checkScreen(page, "messages-identity-changed", violations);
      const refused = `REFUSED-${unique("x")}`;
      await page.getByLabel("Message", { exact: true }).fill(refused);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByText(/identity key changed since you last talked/).last().waitFor();
      assert.equal(await page.getByTestId("message").filter({ hasText: refused }).count(), 0);
      await page.getByRole("button", { name: "I compared it: accept the new key" }).click();
      await page.getByTestId("identity-changed").waitFor({ state: "detached" });
      const accepted = await carectl(reset, ["contacts", "verify", username]);
      await page.locator("summary", { hasText: "Safety number" }).click();
      assert.equal((await page.getByTestId("safety-number").textContent())?.trim(), accepted.safety_number);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: refused }).waitFor();
      const afterNew = await carectl(reset, ["msg", "read", username]);
      assert.ok(afterNew.some((m) => m.text === refused), JSON.stringify(afterNew.map((m) => m.text)));

      // A message with a lifespan, then recalled: carectl sees its expiry, then the recall.
      const brief = `BRIEF-${unique("temp")}`;
      await page.getByLabel("Delete for everyone").selectOption("3600");
      await page.getByLabel("Message", { exact: true }).fill(brief);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      const briefItem = page.getByTestId("message").filter({ hasText: brief });
      await briefItem.filter({ hasText: "deleted" }).waitFor();
      const withLifespan = (await carectl(reset, ["msg", "read", username])).find((m) => m.text === brief);
      assert.ok(withLifespan?.expire_time > withLifespan?.create_time, JSON.stringify(withLifespan));
      await briefItem.getByRole("button", { name: /^Recall/ }).click();
      await page.getByTestId("message").filter({ hasText: "(recalled)" }).waitFor();
      assert.equal(await page.getByTestId("message").filter({ hasText: brief }).count(), 0);
      const recalled = (await carectl(reset, ["msg", "read", username])).find((m) => m.message_id === withLifespan.message_id);
      assert.equal(recalled?.state, "MESSAGE_STATE_RECALLED", JSON.stringify(recalled));
    } finally {
      await context.close();
    }
  });

  it("a second browser is linked from the first by its code and reads the conversation", async () => {
    const doc = await doctor("chase");
    const first = await open(DESKTOP);
    const second = await open(PHONE);
    try {
      const username = unique("ana");
      const { page } = first;
      await register(page, username, "Ana");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Ana");
      const mfa = await enrolMfa(page, "Welcome, Ana");
      await page.getByRole("link", { name: "Messages" }).click();
      await page.getByLabel("Start a conversation with (username)").fill(doc.username);
      await page.getByRole("button", { name: "Open conversation" }).click();
      const before = `BEFORE-${unique("fever")}`;
      await page.getByLabel("Message", { exact: true }).fill(before);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: before }).waitFor();

      // The second browser signs in (with a recovery code) and shows a code...
      const other = second.page;
      await signInWithPassword(other, username);
      await heading(other, "Two-step sign-in");
      await other.getByRole("button", { name: "Use a recovery code instead" }).click();
      await other.getByLabel("Recovery code").fill(mfa.codes[0]);
      await other.getByRole("button", { name: "Continue" }).click();
      await heading(other, "Welcome, Ana");
      await other.getByRole("link", { name: "Messages" }).click();
      await heading(other, "Link this browser from your other device");
      await other.getByRole("button", { name: "Link this browser" }).click();
      const code = ((await other.getByTestId("link-code").textContent()) ?? "").trim();

      // ...which the first one approves.
      await page.getByRole("link", { name: "Your devices" }).click();
      await heading(page, "Your devices");
      await page.getByLabel("Code from the new device").fill("0000-0000-0000-0000");
      await page.getByRole("button", { name: "Approve the new device" }).click();
      await page.getByRole("alert").filter({ hasText: /LinkCodeMismatch|code/i }).waitFor();
      await page.getByLabel("Code from the new device").fill(code);
      await page.getByRole("button", { name: "Approve the new device" }).click();
      await page.getByTestId("linked").waitFor();

      await other.getByLabel("Start a conversation with (username)").waitFor({ timeout: 30_000 });
      await checkScreen(other, "messages-linked-browser", second.violations);
      await other.getByRole("button", { name: "Dr chase", exact: true }).click();
      await other.getByTestId("message").filter({ hasText: before }).waitFor();
      // The doctor's reply reaches both browsers.
      const reply = `BOTH-${unique("rest")}`;
      await carectl(doc.profile, ["msg", "send", username, reply]);
      await other.getByTestId("message").filter({ hasText: reply }).waitFor({ timeout: 30_000 });
      await page.getByRole("link", { name: "Back to messages" }).click();
      await page.getByRole("button", { name: "Dr chase", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: reply }).waitFor();
    } finally {
      await first.context.close();
      await second.context.close();
    }
  });

  it("a ciphertext changed in the server's database shows an error, not content", async () => {
    const doc = await doctor("foreman");
    const { context, page, violations } = await open(DESKTOP);
    try {
      const username = unique("max");
      await register(page, username, "Max");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Max");
      await enrolMfa(page, "Welcome, Max");
      await page.getByRole("link", { name: "Messages" }).click();
      await page.getByLabel("Start a conversation with (username)").fill(doc.username);
      await page.getByRole("button", { name: "Open conversation" }).click();
      await page.getByLabel("Message", { exact: true }).fill("hello");
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: "hello" }).waitFor();
      // Away from the conversation (no live delivery), the doctor writes and the stored
      // ciphertext for the patient's browser gets one byte changed (its AEAD tag's last byte).
      await page.evaluate(() => (location.hash = "#/home"));
      await heading(page, "Welcome, Max");
      const secret = `TAMPERED-${unique("dose")}`;
      await carectl(doc.profile, ["msg", "send", username, secret]);
      await tamperLastCiphertext();
      await page.evaluate(() => (location.hash = "#/messages"));
      await page.getByRole("button", { name: "Dr foreman", exact: true }).click();
      const broken = page.getByTestId("message").filter({ hasText: "Cannot open this message" });
      await broken.waitFor();
      assert.match((await broken.textContent()) ?? "", /DecryptionFailed/);
      assert.equal(await page.getByText(secret).count(), 0);
      await checkScreen(page, "messages-tampered", violations);
    } finally {
      await context.close();
    }
  });

  it("a user whose keys were made with carectl links this browser from carectl and reads earlier messages", async () => {
    const doc = await doctor("wilson");
    // Before the browser exists: a patient (carectl) writes, the doctor's carectl device opens it
    // (storing the doctor's archive copy).
    const patient = await doctor("kim", "patient");
    const earlier = `EARLIER-${unique("cough")}`;
    await carectl(patient.profile, ["msg", "send", doc.username, earlier]);
    await carectl(doc.profile, ["msg", "read", patient.username]);

    const { context, page, violations } = await open(PHONE);
    try {
      await signInWithPassword(page, doc.username);
      await secondFactor(page, doc.secret, doc.step);
      await heading(page, "Welcome, Dr wilson");
      await page.getByRole("link", { name: "Messages" }).click();
      await heading(page, "Link this browser from your other device");
      await page.getByTestId("needs-link").waitFor();
      await checkScreen(page, "messages-needs-link", violations);

      await page.getByRole("button", { name: "Link this browser" }).click();
      const code = ((await page.getByTestId("link-code").textContent()) ?? "").trim();
      assert.match(code, /^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$/);
      await checkScreen(page, "messages-link-code", violations);
      await carectl(doc.profile, ["device", "approve", code]);
      await page.getByLabel("Start a conversation with (username)").waitFor({ timeout: 30_000 });

      // The earlier message opens from the archive; a new one goes to the patient and to the
      // doctor's carectl device.
      await page.getByLabel("Start a conversation with (username)").fill(patient.username);
      await page.getByRole("button", { name: "Open conversation" }).click();
      await page.getByTestId("message").filter({ hasText: earlier }).waitFor();
      const fromBrowser = `FROM-BROWSER-${unique("rest")}`;
      await page.getByLabel("Message", { exact: true }).fill(fromBrowser);
      await page.getByRole("button", { name: "Send", exact: true }).click();
      await page.getByTestId("message").filter({ hasText: fromBrowser }).waitFor();
      const patientSees = await carectl(patient.profile, ["msg", "read", doc.username]);
      assert.ok(patientSees.some((m) => m.text === fromBrowser), JSON.stringify(patientSees.map((m) => m.text)));
      const doctorSees = await carectl(doc.profile, ["msg", "read", patient.username]);
      assert.ok(doctorSees.some((m) => m.text === fromBrowser), JSON.stringify(doctorSees.map((m) => m.text)));

      // Both devices are listed; the browser removes the carectl one.
      await page.getByRole("link", { name: "Your devices" }).click();
      await heading(page, "Your devices");
      await page.getByTestId("device").nth(1).waitFor();
      assert.equal(await page.getByTestId("device").count(), 2);
      assert.equal(await page.getByTestId("device").filter({ hasText: "(this browser)" }).count(), 1);
      await checkScreen(page, "devices", violations);
      await page.getByTestId("device").filter({ hasNotText: "(this browser)" }).getByRole("button", { name: "Remove" }).click();
      await page.getByRole("button", { name: "Yes, remove it" }).click();
      await page.getByTestId("device").nth(1).waitFor({ state: "detached" });
      assert.equal(await page.getByTestId("device").count(), 1);
      await assert.rejects(carectl(doc.profile, ["msg", "inbox"]), /removed/);
    } finally {
      await context.close();
    }
  });
});
