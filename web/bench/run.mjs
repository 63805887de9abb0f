// The web app's benchmark (issue #15), run by `E2E_BENCH=1 bash e2e/run.sh` against the same real
// `caremesh up` as the browser tests. It prints, in one run on one machine:
// - the app's JavaScript, gzipped (goal: at most 350 KB);
// - the first screen interactive on localhost: navigation start to the sign-in form ready, in a
//   fresh browser context each time (goal: at most 1 s);
// - the protocol v2 cryptography of a message in Chromium (bench/bench.ts through vite's dev
//   server) next to the same operations in Rust (crates/crypto/examples/message_timing.rs, release);
// - FAME decryption with a 10-attribute key in Chromium next to Rust, of the same ciphertext
//   (crates/abe/examples/fame_timing.rs, release; goal: at most 150 ms in the browser).
// Figures only: nothing here passes or fails on a time.

import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

import { launchChromium } from "../e2e/chromium.mjs";

const BASE = process.env.BENCH_BASE_URL ?? process.env.E2E_BASE_URL;
const DEV = process.env.BENCH_DEV_URL;
const WEB_CERT = process.env.E2E_WEB_CERT ?? "";
const here = new URL(".", import.meta.url).pathname;
const repo = join(here, "..", "..");

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const assets = join(here, "..", "dist", "assets");
const scripts = readdirSync(assets).filter((name) => name.endsWith(".js"));
const gzipped = scripts.reduce((sum, name) => sum + gzipSync(readFileSync(join(assets, name)), { level: 9 }).length, 0);
console.log(`bench: app JavaScript ${(gzipped / 1024).toFixed(1)} KB gzipped (${scripts.length} file(s); goal <= 350 KB)`);

const browser = await launchChromium(WEB_CERT);
try {
  const interactive = [];
  for (let run = 0; run < 7; run++) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(BASE + "/");
    await page.getByRole("heading", { level: 1, name: "Sign in" }).waitFor();
    await page.getByLabel("Username").waitFor({ state: "visible" });
    // performance.now() counts from the navigation's start.
    interactive.push(await page.evaluate(() => performance.now()));
    await context.close();
  }
  console.log(
    `bench: first screen interactive (sign-in form), median of ${interactive.length} cold loads: ${median(interactive).toFixed(0)} ms (goal <= 1000 ms; runs ${interactive.map((ms) => ms.toFixed(0)).join(", ")})`,
  );

  if (DEV) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(DEV + "/bench/index.html");
    await page.waitForFunction(() => window.benchResults !== undefined, null, { timeout: 120_000 });
    const results = await page.evaluate(() => window.benchResults);
    const fame = JSON.parse(
      execFileSync("cargo", ["run", "--release", "-q", "-p", "caremesh-abe", "--example", "fame_timing"], { cwd: repo, encoding: "utf8" }),
    );
    const fameFigure = await page.evaluate((input) => window.benchFame(input), fame);
    await context.close();
    if ("error" in fameFigure) throw new Error(`the browser FAME benchmark failed: ${fameFigure.error}`);
    console.log(
      `bench: ${fameFigure.name}: Chromium ${fameFigure.msPerOp.toFixed(1)} ms, Rust ${fame.decrypt_ms.toFixed(1)} ms (${fame.runs} runs; goal <= 150 ms in the browser)`,
    );
    if ("error" in results) throw new Error(`the browser benchmark failed: ${results.error}`);
    const rust = JSON.parse(
      execFileSync("cargo", ["run", "--release", "-q", "-p", "caremesh-crypto", "--example", "message_timing"], {
        cwd: repo,
        encoding: "utf8",
      }),
    );
    const rustFigures = [rust.handshake_ms, rust.same_chain_ms, rust.dh_step_ms];
    results.figures.forEach((figure, i) => {
      console.log(
        `bench: ${figure.name}: Chromium ${figure.msPerOp.toFixed(3)} ms, Rust ${rustFigures[i].toFixed(3)} ms (${figure.iterations} runs)`,
      );
    });
  }
} finally {
  await browser.close();
}
