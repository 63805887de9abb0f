// Files with messages between the browser and carectl against the real mesh (e2e/run.sh). A
// patient in the browser sends a 2.5 MB PNG with a caption to a doctor on carectl; the second of
// its 1 MiB AppendAttachment pieces is cut on the wire, and the upload resumes from the server's
// stored length; `carectl msg save` writes the very same bytes (SHA-256). carectl sends a PDF,
// which the browser downloads (Playwright's download event) byte for byte, and a PNG, shown as a
// preview. A PDF whose blob is altered in the mesh's data directory is refused with nothing to
// save; a file over the server's limit shows ATTACHMENT_TOO_LARGE with what to do. Every screen:
// axe, phone width, CSP, screenshots.

import { createHash } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";

import { carectl, carectlUser } from "./carectl.mjs";
import { pdf, png } from "./files.mjs";
import { DESKTOP, PHONE, checkScreen, enrolMfa, heading, open, register, signInWithPassword, unique } from "./support.mjs";

const WORK = mkdtempSync(join(tmpdir(), "caremesh-e2e-attach-"));
after(() => rmSync(WORK, { recursive: true, force: true }));

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

function write(name, bytes) {
  const path = join(WORK, name);
  writeFileSync(path, bytes);
  return path;
}

/** The stored blob of an attachment in the mesh's data directory (`<id>.blob`). */
function blobFile(attachmentId) {
  const found = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir)) {
      const full = join(dir, entry);
      if (statSync(full).isDirectory()) walk(full);
      else if (entry === `${attachmentId}.blob`) found.push(full);
    }
  };
  walk(process.env.E2E_DATA_DIR);
  assert.equal(found.length, 1, `the blob of ${attachmentId} in the data directory`);
  return found[0];
}

function flipByte(path, at) {
  const fd = openSync(path, "r+");
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    byte[0] ^= 0x01;
    writeSync(fd, byte, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

async function waitUntil(what, check, timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

describe("attachments between the browser and carectl", () => {
  it("sends a PNG from the browser (resuming a cut upload), receives a PDF and a PNG from carectl, refuses a tampered blob", async () => {
    const doc = await carectlUser("lister");
    const { context, page, violations } = await open(DESKTOP);
    try {
      const username = unique("pat");
      await register(page, username, "Pat Files");
      await signInWithPassword(page, username);
      await heading(page, "Welcome, Pat Files");
      await enrolMfa(page, "Welcome, Pat Files");
      await page.getByRole("link", { name: "Messages" }).click();
      await heading(page, "Messages");
      await page.getByLabel("Start a conversation with (username)").fill(doc.username);
      await page.getByRole("button", { name: "Open conversation" }).click();
      await page.getByRole("heading", { level: 2, name: `Conversation with ${doc.displayName}` }).waitFor({ timeout: 60_000 });

      // A 2.5 MB image: three 1 MiB pieces. The second AppendAttachment is cut on the wire once.
      const image = png(960, 900, (x, y) => [(x * 7 + y) & 0xff, (x ^ y) & 0xff, (Math.random() * 256) | 0], true);
      assert.ok(image.length > 2.4e6, `the PNG is ${image.length} bytes`);
      const imagePath = write("rash-photo.png", image);
      const appends = [];
      let cut = 0;
      await page.route("**/caremesh.messaging.v1.MessagingService/AppendAttachment", async (route) => {
        appends.push(Date.now());
        if (appends.length === 2 && cut === 0) {
          cut += 1;
          await route.abort("connectionreset");
          return;
        }
        await route.continue();
      });
      const caption = `CAPTION-${unique("rash")}`;
      await page.getByLabel("File (photo, PDF, scan)").setInputFiles(imagePath);
      await page.getByTestId("chosen-file").filter({ hasText: "rash-photo.png" }).waitFor();
      await page.getByLabel("Caption (optional)").fill(caption);
      const started = Date.now();
      await page.getByRole("button", { name: "Send file" }).click();
      const sent = page.getByTestId("message").filter({ hasText: caption });
      await sent.waitFor({ timeout: 90_000 });
      const uploadMs = Date.now() - started;
      assert.equal(cut, 1, "one upload piece was cut");
      // 3 pieces, the cut one sent again from the stored length.
      assert.equal(appends.length, 4, `AppendAttachment calls: ${appends.length}`);
      await page.unroute("**/caremesh.messaging.v1.MessagingService/AppendAttachment");
      // The sender sees its own image too (downloaded, checked, decrypted).
      await waitUntil("the sent image's preview", () =>
        sent.getByTestId("attachment-preview").evaluate((img) => img.complete && img.naturalWidth === 960).catch(() => false),
      );
      console.log(`  upload of a ${image.length}-byte PNG (3 pieces, one cut and resumed): ${uploadMs} ms`);

      // The doctor saves it with carectl: the very same bytes.
      const read = await carectl(doc.profile, ["msg", "read", username]);
      const withFile = read.find((m) => m.attachment && m.text.includes(caption));
      assert.ok(withFile, `carectl msg read shows: ${JSON.stringify(read.map((m) => m.text))}`);
      assert.equal(withFile.attachment.file_name, "rash-photo.png");
      assert.equal(withFile.attachment.media_type, "image/png");
      assert.equal(withFile.attachment.file_length, image.length);
      const saveDir = mkdtempSync(join(WORK, "saved-"));
      const saved = await carectl(doc.profile, ["msg", "save", withFile.message_id, "--out", saveDir]);
      assert.equal(sha256(readFileSync(saved.path)), sha256(image), "carectl saved the PNG byte for byte");
      // The server holds only ciphertext: the stored blob is not the file.
      const stored = readFileSync(blobFile(withFile.attachment.attachment_id));
      assert.equal(stored.length, image.length + 16 * Math.ceil(image.length / 65536));
      assert.ok(!stored.includes(image.subarray(0, 64)), "the blob does not contain the file's bytes");

      // carectl sends a PDF: it arrives live; the browser downloads it byte for byte.
      const letter = pdf("Discharge letter", 150_000);
      const letterPath = write("discharge-letter.pdf", letter);
      await carectl(doc.profile, ["msg", "send", username, "Your discharge letter", "--attach", letterPath]);
      const letterMessage = page.getByTestId("message").filter({ hasText: "Your discharge letter" });
      await letterMessage.waitFor({ timeout: 30_000 });
      assert.equal(await letterMessage.getByTestId("attachment-name").textContent(), "discharge-letter.pdf");
      await letterMessage.getByRole("button", { name: /^Download discharge-letter\.pdf/ }).click();
      const save = letterMessage.getByRole("link", { name: "Save discharge-letter.pdf" });
      await save.waitFor();
      const [download] = await Promise.all([page.waitForEvent("download"), save.click()]);
      assert.equal(download.suggestedFilename(), "discharge-letter.pdf");
      const downloaded = join(WORK, "downloaded.pdf");
      await download.saveAs(downloaded);
      assert.equal(sha256(readFileSync(downloaded)), sha256(letter), "the browser's download is the PDF byte for byte");

      // carectl sends a PNG: shown as a preview, decoded by the browser.
      const xray = png(120, 80, (x, y) => [x * 2, y * 3, 128]);
      await carectl(doc.profile, ["msg", "send", username, "Your x-ray", "--attach", write("xray.png", xray)]);
      const xrayMessage = page.getByTestId("message").filter({ hasText: "Your x-ray" });
      await xrayMessage.waitFor({ timeout: 30_000 });
      await waitUntil("the x-ray preview", () =>
        xrayMessage.getByTestId("attachment-preview").evaluate((img) => img.complete && img.naturalWidth > 0).catch(() => false),
      );
      assert.equal(await xrayMessage.getByTestId("attachment-preview").evaluate((img) => img.naturalWidth), 120);
      await checkScreen(page, "messages-attachments", violations);

      // A PDF whose stored blob is altered on the server's disk: refused, nothing to save.
      const scan = pdf("Scan", 90_000);
      await carectl(doc.profile, ["msg", "send", username, "Your scan", "--attach", write("scan.pdf", scan)]);
      const scanMessage = page.getByTestId("message").filter({ hasText: "Your scan" });
      await scanMessage.waitFor({ timeout: 30_000 });
      const again = await carectl(doc.profile, ["msg", "read", username]);
      const scanSent = again.find((m) => m.attachment?.file_name === "scan.pdf");
      // In the first chunk: it fails its tag as soon as the next chunk arrives, before the digest is known.
      flipByte(blobFile(scanSent.attachment.attachment_id), 1000);
      await scanMessage.getByRole("button", { name: /^Download scan\.pdf/ }).click();
      const refusal = scanMessage.getByRole("alert");
      await refusal.waitFor();
      assert.match((await refusal.textContent()) ?? "", /AttachmentDamaged/);
      assert.match((await refusal.textContent()) ?? "", /Ask the sender to send it again/);
      assert.equal(await scanMessage.getByRole("link", { name: /^Save/ }).count(), 0, "nothing of the tampered file is offered");

      // Over the server's limit (100 MiB of file): ATTACHMENT_TOO_LARGE, with what to do.
      const hugePath = join(WORK, "huge-scan.pdf");
      closeSync(openSync(hugePath, "w"));
      truncateSync(hugePath, 101 * 1024 * 1024); // sparse: nothing is written
      await page.getByLabel("File (photo, PDF, scan)").setInputFiles(hugePath);
      await page.getByRole("button", { name: "Send file" }).click();
      const tooLarge = page.locator(".file-composer [role=alert]");
      await tooLarge.waitFor();
      assert.match((await tooLarge.textContent()) ?? "", /larger than the server accepts/);
      assert.ok(((await tooLarge.getByTestId("server-message").textContent()) ?? "").length > 0, "the server's message is shown");
      await checkScreen(page, "messages-attachment-error", violations);

      await page.setViewportSize(PHONE);
      await checkScreen(page, "messages-attachments", violations);
    } finally {
      await context.close();
    }
  });
});
