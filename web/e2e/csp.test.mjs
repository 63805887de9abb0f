// The origin's Content-Security-Policy, as the browser enforces it: the app's document carries
// the header without 'unsafe-inline', and a script or style injected into the running page is
// refused (the global it would set stays unset, the style does not apply) with a
// securitypolicyviolation event.

import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { BASE, DESKTOP, heading, open } from "./support.mjs";

describe("content security policy", () => {
  it("serves the CSP header and blocks an injected inline script and style", async () => {
    const { context, page } = await open(DESKTOP);
    try {
      // The document as the server sends it (the page itself may come through the service worker).
      const response = await context.request.get(BASE + "/");
      assert.equal(response.status(), 200);
      const csp = response.headers()["content-security-policy"] ?? "";
      assert.match(csp, /(^|;\s*)script-src 'self'(;|$)/, `CSP: ${csp}`);
      assert.match(csp, /(^|;\s*)style-src 'self'(;|$)/, `CSP: ${csp}`);
      assert.match(csp, /object-src 'none'/);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
      await heading(page, "Sign in");

      const result = await page.evaluate(
        () =>
          new Promise((resolve) => {
            const seen = [];
            document.addEventListener("securitypolicyviolation", (event) => seen.push(event.effectiveDirective));
            const script = document.createElement("script");
            script.textContent = "window.__cspInjected = true;";
            document.body.appendChild(script);
            const style = document.createElement("style");
            style.textContent = "body { outline: 7px solid rgb(255, 0, 0) !important; }";
            document.head.appendChild(style);
            setTimeout(
              () =>
                resolve({
                  injected: window.__cspInjected === true,
                  outline: getComputedStyle(document.body).outlineWidth,
                  seen,
                }),
              1000,
            );
          }),
      );
      assert.equal(result.injected, false, "the inline script ran");
      assert.notEqual(result.outline, "7px", "the inline style applied");
      assert.ok(result.seen.includes("script-src-elem"), `violations reported: ${result.seen.join(", ")}`);
      assert.ok(result.seen.includes("style-src-elem"), `violations reported: ${result.seen.join(", ")}`);
    } finally {
      await context.close();
    }
  });
});
