// The signed-in home: who you are (WhoAmI), the session's assurance level, the way to MFA, and
// after a sign-in with a TOTP code the offer to add a passkey.

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import type { Identity } from "../../client";
import { Button, ErrorPanel, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href } from "../../app/router";
import { PasskeyOffer } from "../passkeys/PasskeyOffer";

export function HomeScreen(): JSX.Element {
  const client = useClient();
  const [identity, setIdentity] = useState<Identity | null>(null);
  const load = useOperation("session");

  const refresh = () =>
    void load.run(async () => {
      setIdentity(await client.whoAmI());
    });
  useEffect(() => {
    refresh();
  }, []);

  return (
    <section class="card">
      <ScreenTitle>{identity ? `Welcome, ${identity.displayName || identity.username}` : "Welcome"}</ScreenTitle>
      {load.busy && !identity ? (
        <p role="status" class="progress">
          <span class="spinner" aria-hidden="true" /> Loading your account…
        </p>
      ) : null}
      <ErrorPanel error={load.error} />
      <PasskeyOffer />
      {load.error ? (
        <Button type="button" variant="secondary" onClick={refresh}>
          Try again
        </Button>
      ) : null}
      {identity ? (
        <>
          <dl class="facts" data-testid="whoami">
            <dt>Username</dt>
            <dd data-testid="username">{identity.username}</dd>
            <dt>Role</dt>
            <dd data-testid="role">{identity.role}</dd>
            <dt>Assurance level</dt>
            <dd data-testid="aal">{identity.aal}</dd>
            <dt>Two-step sign-in</dt>
            <dd>{identity.mfaEnrolled ? `on (${identity.recoveryCodesRemaining} recovery codes left)` : "off"}</dd>
            {identity.sessionExpires ? (
              <>
                <dt>Session ends</dt>
                <dd>{identity.sessionExpires.toLocaleString()}</dd>
              </>
            ) : null}
          </dl>
          {identity.role === "admin" ? (
            <p>
              <a class="button primary" href={href("admin")}>
                Administration
              </a>
            </p>
          ) : null}
          {identity.role === "auditor" ? (
            <p>
              <a class="button primary" href={href("audit")}>
                Audit log and alerts
              </a>
            </p>
          ) : null}
          <p>
            <a class="button secondary" href={href("messages")}>
              Messages
            </a>
          </p>
          <p>
            <a class="button secondary" href={href("records")}>
              Records
            </a>
          </p>
          <p>
            <a class="button secondary" href={href("account")}>
              Your account
            </a>
          </p>
          {identity.aal !== "AAL2" && !identity.mfaEnrolled ? (
            <div class="notice">
              <p>
                Health data needs assurance level AAL2: set up two-step sign-in with an authenticator app, or add a
                passkey, to read records and messages.
              </p>
              <div class="actions">
                <a class="button primary" href={href("mfa")}>
                  Set up two-step sign-in
                </a>
                <a class="button secondary" href={href("passkeys")}>
                  Add a passkey instead
                </a>
              </div>
            </div>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
