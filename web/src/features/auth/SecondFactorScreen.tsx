// Sign-in, step two: the authenticator app's 6-digit code, or one of the recovery codes.

import type { JSX } from "preact";
import { useState } from "preact/hooks";

import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { navigate } from "../../app/router";

export function SecondFactorScreen(): JSX.Element {
  const client = useClient();
  const [useRecovery, setUseRecovery] = useState(false);
  const [code, setCode] = useState("");
  const [remaining, setRemaining] = useState<number | null>(null);
  const { busy, error, run } = useOperation("secondFactor");

  const submit = (event: Event) => {
    event.preventDefault();
    void run(async () => {
      const result = await client.completeSignIn(useRecovery ? { recoveryCode: code } : { totp: code });
      setCode("");
      if (useRecovery) setRemaining(result.recoveryCodesRemaining);
      navigate("home");
    });
  };

  const cancel = () => {
    client.cancelSignIn();
    navigate("sign-in");
  };

  return (
    <section class="card">
      <ScreenTitle>Two-step sign-in</ScreenTitle>
      {remaining !== null ? <p role="status">{remaining} recovery codes left.</p> : null}
      <form onSubmit={submit} noValidate>
        {useRecovery ? (
          <Field
            key="recovery"
            id="recovery-code"
            label="Recovery code"
            value={code}
            onInput={setCode}
            autoComplete="off"
            hint="One of the 10 codes you saved when you set up two-step sign-in. Each works once."
            required
            autoFocus
          />
        ) : (
          <Field
            key="totp"
            id="totp-code"
            label="6-digit code"
            value={code}
            onInput={setCode}
            autoComplete="one-time-code"
            inputMode="numeric"
            pattern="[0-9]*"
            maxLength={6}
            hint="The code your authenticator app shows for caremesh."
            required
            autoFocus
          />
        )}
        <ErrorPanel error={error} />
        <div class="actions">
          <Button busy={busy} busyLabel="Checking…">
            Continue
          </Button>
          <Button
            type="button"
            variant="secondary"
            onClick={() => {
              setUseRecovery(!useRecovery);
              setCode("");
            }}
          >
            {useRecovery ? "Use the authenticator app instead" : "Use a recovery code instead"}
          </Button>
        </div>
      </form>
      <p class="alt">
        <button type="button" class="link" onClick={cancel}>
          Start again
        </button>
      </p>
    </section>
  );
}
