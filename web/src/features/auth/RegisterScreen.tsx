// Registration of a patient account: username, display name, password. The server's rules
// (username characters, password strength) are enforced there; its message is shown as it is.

import type { JSX } from "preact";
import { useState } from "preact/hooks";

import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href, navigate } from "../../app/router";

export function RegisterScreen(props: { onRegistered: (username: string) => void }): JSX.Element {
  const client = useClient();
  const [username, setUsername] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [password, setPassword] = useState("");
  const { busy, error, run } = useOperation("register");

  const submit = (event: Event) => {
    event.preventDefault();
    void run(async () => {
      const registered = await client.register({ username: username.trim(), displayName: displayName.trim(), password });
      setPassword("");
      props.onRegistered(registered.username);
      navigate("sign-in");
    });
  };

  return (
    <section class="card">
      <ScreenTitle>Create a patient account</ScreenTitle>
      <p>Your messages and records are encrypted on your devices. The server never sees them.</p>
      <form onSubmit={submit} noValidate>
        <Field
          id="username"
          label="Username"
          value={username}
          onInput={setUsername}
          autoComplete="username"
          hint="3 to 64 characters: lowercase letters, digits, dots, dashes and underscores."
          required
          autoFocus
        />
        <Field
          id="display-name"
          label="Display name"
          value={displayName}
          onInput={setDisplayName}
          autoComplete="name"
          hint="How your doctors see you (optional)."
          maxLength={128}
        />
        <Field
          id="password"
          label="Password"
          type="password"
          value={password}
          onInput={setPassword}
          autoComplete="new-password"
          hint="At least 12 characters. A long phrase of unrelated words is strong and easy to remember."
          required
        />
        <ErrorPanel error={error} />
        <Button busy={busy} busyLabel="Creating account…">
          Create account
        </Button>
      </form>
      <p class="alt">
        Already registered? <a href={href("sign-in")}>Sign in</a>
      </p>
    </section>
  );
}
