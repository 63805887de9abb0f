// Sign-in, step one: username and password. An account with MFA continues to the second-factor
// screen; one without is signed in at AAL1. Or "Use a passkey": a discoverable passkey signs in
// alone, without a username or password (AAL2).

import type { JSX } from "preact";
import { useState } from "preact/hooks";

import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href, navigate } from "../../app/router";

export function SignInScreen(props: { registeredAs: string | null }): JSX.Element {
  const client = useClient();
  const [username, setUsername] = useState(props.registeredAs ?? "");
  const [password, setPassword] = useState("");
  const { busy, error, run, clear } = useOperation("signIn");
  const passkey = useOperation("passkey");

  const submit = (event: Event) => {
    event.preventDefault();
    passkey.clear();
    void run(async () => {
      const result = await client.signIn(username.trim(), password);
      setPassword("");
      navigate(result.kind === "secondFactor" ? "second-factor" : "home");
    });
  };

  return (
    <section class="card">
      <ScreenTitle>Sign in</ScreenTitle>
      {props.registeredAs ? (
        <p class="notice" role="status">
          Account <strong>{props.registeredAs}</strong> created. Sign in with your password, then set up two-step
          sign-in.
        </p>
      ) : null}
      <form onSubmit={submit} noValidate>
        <Field id="username" label="Username" value={username} onInput={setUsername} autoComplete="username" required />
        <Field
          id="password"
          label="Password"
          type="password"
          value={password}
          onInput={setPassword}
          autoComplete="current-password"
          required
          autoFocus={props.registeredAs !== null}
        />
        <ErrorPanel error={error} />
        <Button busy={busy} busyLabel="Signing in…">
          Sign in
        </Button>
      </form>
      <div class="alt">
        <p>Or sign in without a password, with the passkey on this device or a security key:</p>
        <ErrorPanel error={passkey.error} />
        <Button
          type="button"
          variant="secondary"
          busy={passkey.busy}
          busyLabel="Waiting for your passkey…"
          onClick={() => {
            clear();
            void passkey.run(async () => {
              await client.signInWithPasskey();
              setPassword("");
              navigate("home");
            });
          }}
        >
          Use a passkey
        </Button>
      </div>
      <p class="alt">
        New here? <a href={href("register")}>Create a patient account</a>
      </p>
    </section>
  );
}
