// Sign-in, step one: username and password. An account with MFA continues to the second-factor
// screen; one without is signed in at AAL1.

import type { JSX } from "preact";
import { useState } from "preact/hooks";

import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href, navigate } from "../../app/router";

export function SignInScreen(props: { registeredAs: string | null }): JSX.Element {
  const client = useClient();
  const [username, setUsername] = useState(props.registeredAs ?? "");
  const [password, setPassword] = useState("");
  const { busy, error, run } = useOperation("signIn");

  const submit = (event: Event) => {
    event.preventDefault();
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
      <p class="alt">
        New here? <a href={href("register")}>Create a patient account</a>
      </p>
    </section>
  );
}
