// Group messages in the browser against the real mesh (e2e/run.sh): a doctor on carectl sends a
// message to the policy `"role:nurse" and "dept:cardiology"`; a cardiology nurse signed in in the
// browser (her first device) reads it, opened with her attribute key; an oncology nurse's browser
// is not given it. The cardiology nurse composes a policy in the builder (AND within a group, OR
// between groups), sees its text, and sends to it; the doctor reads it with carectl. Every
// screen: axe, phone width, CSP, screenshots.

import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { carectl, carectlUser } from "./carectl.mjs";
import { DESKTOP, PHONE, checkScreen, heading, open, secondFactor, signInWithPassword, unique } from "./support.mjs";

/** Signs a carectl-made clinician in in a new browser and opens Messages (the browser becomes their first device). */
async function browserFor(user) {
  const session = await open(DESKTOP);
  const { page } = session;
  await signInWithPassword(page, user.username);
  await secondFactor(page, user.secret, user.step);
  await heading(page, `Welcome, ${user.displayName}`);
  await page.getByRole("link", { name: "Messages" }).click();
  await heading(page, "Messages");
  await page.getByRole("heading", { level: 2, name: "Group messages" }).waitFor({ timeout: 60_000 });
  return session;
}

describe("group messages addressed to a policy", () => {
  it("a cardiology nurse reads the doctor's group message in the browser, an oncology nurse is not given it; the builder's policy reaches the doctor", async () => {
    const doc = await carectlUser("osler");
    const cardio = await carectlUser("nightingale", { role: "nurse", attrs: ["dept:cardiology"], publish: false });
    const onco = await carectlUser("seacole", { role: "nurse", attrs: ["dept:oncology"], publish: false });
    const policy = '"role:nurse" and "dept:cardiology"';
    const text = `GROUP-${unique("handover")}-bed-4`;
    await carectl(doc.profile, ["msg", "send", "--policy", policy, text]);

    const a = await browserFor(cardio);
    const b = await browserFor(onco);
    try {
      const groups = a.page.getByRole("list", { name: "Group conversations" });
      await groups.getByRole("button", { name: policy }).click();
      await a.page.getByTestId("group-message").filter({ hasText: text }).waitFor();
      await checkScreen(a.page, "messages-groups", a.violations);

      // The oncology nurse's attributes do not satisfy the policy: nothing is listed or shown.
      await b.page.getByTestId("no-groups").waitFor();
      assert.equal(await b.page.getByText(text).count(), 0);
      assert.equal(await b.page.getByRole("list", { name: "Group conversations" }).getByRole("listitem").count(), 0);

      // The builder: (role:nurse AND dept:cardiology) OR role:doctor, shown as the canonical text.
      await a.page.getByRole("button", { name: "OR another group of attributes" }).click();
      await a.page.getByRole("textbox", { name: "Group 2, attribute 1" }).fill("role:doctor");
      const expected = '("role:nurse" and "dept:cardiology") or "role:doctor"';
      assert.equal(await a.page.getByTestId("policy-text").locator("code").textContent(), expected);
      // An attribute without a namespace is refused before anything is sealed.
      await a.page.getByRole("textbox", { name: "Group 2, attribute 1" }).fill("doctor");
      await a.page.getByTestId("policy-problem").waitFor();
      await a.page.getByRole("textbox", { name: "Group 2, attribute 1" }).fill("role:doctor");
      assert.equal(await a.page.getByTestId("policy-problem").count(), 0);
      const reply = `REPLY-${unique("seen")}-bed-4`;
      await a.page.getByLabel("Message to the group").fill(reply);
      await a.page.getByRole("button", { name: "Send to the group" }).click();
      await a.page.getByTestId("group-message").filter({ hasText: reply }).waitFor({ timeout: 30_000 });

      const inbox = await carectl(doc.profile, ["msg", "inbox"]);
      assert.ok(
        inbox.some((m) => m.text === reply),
        `carectl msg inbox shows: ${JSON.stringify(inbox.map((m) => m.text))}`,
      );
      assert.equal(await b.page.getByText(reply).count(), 0);

      await a.page.setViewportSize(PHONE);
      await checkScreen(a.page, "messages-groups", a.violations);
    } finally {
      await a.context.close();
      await b.context.close();
    }
  });
});
