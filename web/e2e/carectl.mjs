// carectl users for the browser tests that need a second party (messaging, attachments, groups):
// a doctor or nurse made, approved (with attributes) by the bootstrap admin and signed in with MFA.
// The runner itself is support.mjs's.

import { totp, totpStep } from "./totp.mjs";
import { PASSWORD, carectl, carectlAdmin, unique } from "./support.mjs";

export { carectl, spawnCarectl } from "./support.mjs";

/**
 * A user made with carectl: registered; a doctor or nurse approved by the admin with `attrs`;
 * signed in with MFA; keys published (first `msg inbox`) unless `publish` is false. `profile`
 * runs carectl as them.
 */
export async function carectlUser(name, { role = "doctor", attrs = ["dept:cardiology"], displayName, publish = true } = {}) {
  const username = unique(name);
  const profile = username;
  const shown = displayName ?? (role === "doctor" ? `Dr ${name}` : role === "nurse" ? `Nurse ${name}` : name);
  await carectl(profile, ["register", username, "--role", role, "--display-name", shown, "--password-stdin"], `${PASSWORD}\n`);
  if (role !== "patient") {
    await carectlAdmin();
    await carectl("admin", ["admin", "approve", username, ...attrs.flatMap((attr) => ["--attr", attr])]);
  }
  await carectl(profile, ["login", username, "--password-stdin"], `${PASSWORD}\n`);
  const enrolment = await carectl(profile, ["mfa", "enroll", "--no-qr"]);
  const secret = enrolment.secret.replace(/\s/g, "");
  const step = totpStep();
  const confirmed = await carectl(profile, ["mfa", "confirm", totp(secret, step)]);
  // `publish: false` leaves the account without an identity, for the browser to be its first device.
  if (publish) await carectl(profile, ["msg", "inbox"]);
  return { username, profile, displayName: shown, secret, step, codes: confirmed.recovery_codes };
}
