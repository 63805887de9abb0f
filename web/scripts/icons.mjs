// Renders public/icon.svg to the PNG icons of the manifest (public/icon-192.png, icon-512.png)
// with Debian's chromium. Run after changing the SVG: `node scripts/icons.mjs`; the PNGs are
// committed, so the build does not need a browser.

import { readFileSync } from "node:fs";

import { chromium } from "playwright-core";

const svg = readFileSync("public/icon.svg", "utf8");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  for (const size of [192, 512]) {
    const page = await browser.newPage({ viewport: { width: size, height: size } });
    const sized = svg.replace(/width="512" height="512"/, `width="${size}" height="${size}"`);
    await page.setContent(`<html><body style="margin:0">${sized}</body></html>`);
    await page.locator("svg").screenshot({ path: `public/icon-${size}.png`, omitBackground: true });
    await page.close();
  }
} finally {
  await browser.close();
}
