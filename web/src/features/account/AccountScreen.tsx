// The account screen (`#/account`, every signed-in user): who is signed in (WhoAmI), "stay
// signed in on this browser" (opt-in: the refresh token sealed in IndexedDB), the way to the
// passkeys (`#/passkeys`), a password
// change (auth-svc then ends every other session of the account, which the screen says before and
// after), and new recovery codes (the old ones stop working; shown once).

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import type { Identity } from "../../client";
import { Button, CodeList, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href } from "../../app/router";
import { Confirm } from "../admin/Confirm";
import "../admin/ops.css";

function Who(props: { identity: Identity }): JSX.Element {
  const i = props.identity;
  return (
    <dl class="facts" data-testid="identity">
      <dt>Username</dt>
      <dd data-testid="account-username">{i.username}</dd>
      <dt>Display name</dt>
      <dd>{i.displayName || "none"}</dd>
      <dt>User id</dt>
      <dd class="mono">{i.userId}</dd>
      <dt>Role</dt>
      <dd>{i.role}</dd>
      <dt>Account</dt>
      <dd>{i.status}</dd>
      <dt>Assurance level</dt>
      <dd>{i.aal}</dd>
      <dt>Two-step sign-in</dt>
      <dd>{i.mfaEnrolled ? `on (${i.recoveryCodesRemaining} recovery codes left)` : "off"}</dd>
      {i.sessionExpires ? (
        <>
          <dt>Session ends</dt>
          <dd>{i.sessionExpires.toLocaleString()}</dd>
        </>
      ) : null}
    </dl>
  );
}

function ChangePassword(): JSX.Element {
  const client = useClient();
  const op = useOperation("session");
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [mismatch, setMismatch] = useState(false);
  const [done, setDone] = useState<number | null>(null);
  const submit = (event: Event) => {
    event.preventDefault();
    setDone(null);
    setMismatch(next !== again);
    if (next !== again) return;
    void op.run(async () => {
      const ended = await client.changePassword(current, next);
      setCurrent("");
      setNext("");
      setAgain("");
      setDone(ended);
    });
  };
  return (
    <section class="ops-section" aria-labelledby="password">
      <h2 id="password">Change your password</h2>
      <p class="notice" id="password-note">
        Changing your password signs you out everywhere else: every other session of this account ends (other browsers,
        carectl). This one stays signed in.
      </p>
      <form class="ops-form" onSubmit={submit} aria-describedby="password-note">
        <Field id="pw-current" label="Current password" type="password" autoComplete="current-password" value={current} onInput={setCurrent} required />
        <Field
          id="pw-new"
          label="New password"
          type="password"
          autoComplete="new-password"
          hint="At least 12 characters; a passphrase of several words is best."
          value={next}
          onInput={setNext}
          required
        />
        <Field id="pw-again" label="New password again" type="password" autoComplete="new-password" value={again} onInput={setAgain} required />
        {mismatch ? (
          <div class="error" role="alert">
            <p class="error-message">The two new passwords differ.</p>
            <p class="error-advice">Type the same new password in both fields.</p>
          </div>
        ) : null}
        <ErrorPanel error={op.error} />
        {done !== null ? (
          <p role="status" class="result-ok" data-testid="password-changed">
            Password changed. {done === 0 ? "No other session was open." : `${done} other session${done === 1 ? " was" : "s were"} ended.`}
          </p>
        ) : null}
        <Button type="submit" busy={op.busy} busyLabel="Changing…">
          Change password
        </Button>
      </form>
    </section>
  );
}

function RecoveryCodes(props: { onChanged: () => void }): JSX.Element {
  const client = useClient();
  const op = useOperation("session");
  const [codes, setCodes] = useState<string[] | null>(null);
  return (
    <section class="ops-section" aria-labelledby="recovery">
      <h2 id="recovery">Recovery codes</h2>
      <p>Each recovery code signs you in once when you do not have your authenticator app.</p>
      <ErrorPanel error={op.error} />
      {codes ? (
        <div class="notice">
          <p>
            <strong>Your new recovery codes.</strong> Save them now: they are not shown again, and the old codes no longer
            work.
          </p>
          <CodeList label="New recovery codes" codes={codes} />
          <Button type="button" variant="secondary" onClick={() => setCodes(null)}>
            I have saved them
          </Button>
        </div>
      ) : (
        <Confirm
          label="Make new recovery codes"
          confirmLabel="Yes, make new codes"
          busy={op.busy}
          question="You get 10 new codes and every old code stops working."
          onConfirm={() =>
            void op.run(async () => {
              setCodes(await client.regenerateRecoveryCodes());
              props.onChanged();
            })
          }
        />
      )}
    </section>
  );
}

function StaySignedIn(): JSX.Element {
  const client = useClient();
  const op = useOperation("session");
  const [on, setOn] = useState(client.staysSignedIn);
  const toggle = () =>
    void op.run(async () => {
      await client.setStaySignedIn(!on);
      setOn(client.staysSignedIn);
    });
  return (
    <section class="ops-section" aria-labelledby="stay">
      <h2 id="stay">Stay signed in on this browser</h2>
      <p>
        {on
          ? "This browser keeps you signed in when you reload or come back, until you sign out."
          : "Now a reload or closing the tab signs you out."}{" "}
        When on, your sign-in is kept in this browser's storage, encrypted under a key that no script can read out;
        signing out deletes it. Do not turn it on on a shared computer.
      </p>
      <ErrorPanel error={op.error} />
      <p role="status" data-testid="stay-state">
        {on ? "Staying signed in on this browser." : "Not kept on this browser."}
      </p>
      <Button type="button" variant="secondary" busy={op.busy} busyLabel="Saving…" onClick={toggle}>
        {on ? "Stop keeping me signed in" : "Keep me signed in on this browser"}
      </Button>
    </section>
  );
}

export function AccountScreen(): JSX.Element {
  const client = useClient();
  const load = useOperation("session");
  const [identity, setIdentity] = useState<Identity | null>(null);
  const refresh = () => void load.run(async () => setIdentity(await client.whoAmI()));
  useEffect(refresh, []);
  return (
    <section class="card">
      <ScreenTitle>Your account</ScreenTitle>
      <ErrorPanel error={load.error} />
      {identity ? <Who identity={identity} /> : null}
      {load.error ? (
        <Button type="button" variant="secondary" onClick={refresh}>
          Try again
        </Button>
      ) : null}
      <StaySignedIn />
      <section class="ops-section" aria-labelledby="passkeys">
        <h2 id="passkeys">Passkeys</h2>
        <p>A passkey signs you in with this device's screen lock or a security key, without a password or code.</p>
        <a class="button secondary" href={href("passkeys")}>
          Manage your passkeys
        </a>
      </section>
      <ChangePassword />
      {identity?.mfaEnrolled ? (
        <RecoveryCodes onChanged={refresh} />
      ) : identity ? (
        <section class="ops-section" aria-labelledby="recovery">
          <h2 id="recovery">Recovery codes</h2>
          <p>
            You get recovery codes when you <a href={href("mfa")}>set up two-step sign-in</a>.
          </p>
        </section>
      ) : null}
    </section>
  );
}
