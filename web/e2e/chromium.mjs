// Debian's chromium as the browser tests and the benchmark launch it: headless, no downloads, and
// trusting the web origin's dev certificate by its key hash (so the service worker registers as
// on a trusted site). Shared by e2e/support.mjs and bench/run.mjs.

import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";

import { chromium } from "playwright-core";

/** The base64 SHA-256 of the certificate's public key, as Chromium's SPKI allow list takes it. */
export function spkiHash(certPath) {
  const spki = new X509Certificate(readFileSync(certPath)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/** Launches chromium; `certPath` (optional) is the web origin's certificate to trust. */
export function launchChromium(certPath) {
  return chromium.launch({
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
      ...(certPath ? [`--ignore-certificate-errors-spki-list=${spkiHash(certPath)}`] : []),
    ],
  });
}
