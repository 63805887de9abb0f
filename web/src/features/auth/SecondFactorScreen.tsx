// Sign-in, step two: what the challenge accepts. A passkey ("Use a passkey") when the account has
// one, the authenticator app's 6-digit code unless the role requires passkeys, and one of the
// recovery codes in any case.

import type { JSX } from "preact";
import { useState } from "preact/hooks";

import { Button, ErrorPanel, Field, ScreenTitle, TotpField, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { navigate } from "../../app/router";

export function SecondFactorScreen(): JSX.Element {
  const client = useClient();
  // The route guard shows this screen only while a challenge waits; the fallback is the old offer.
  const offered = client.secondFactors ?? { totp: true, recoveryCode: true, passkey: false, expires: null };
  const [useRecovery, setUseRecovery] = useState(!offered.totp && !offered.passkey);
  const [code, setCode] = useState("");
  const [remaining, setRemaining] = useState<number | null>(null);
  const { busy, error, run, clear } = useOperation("secondFactor");
  const passkey = useOperation("passkey");

  const submit = (event: Event) => {
    event.preventDefault();
    passkey.clear();
    void run(async () => {
      const result = await client.completeSignIn(useRecovery ? { recoveryCode: code } : { totp: code });
      setCode("");
      if (useRecovery) setRemaining(result.recoveryCodesRemaining);
      navigate("home");
    });
  };

  const usePasskey = () => {
    clear();
    void passkey.run(async () => {
      await client.completeSignIn({ passkey: true });
      navigate("home");
    });
  };

  const cancel = () => {
    client.cancelSignIn();
    navigate("sign-in");
  };

  const showForm = offered.totp || useRecovery;
  return (
    <section class="card">
      <ScreenTitle>Two-step sign-in</ScreenTitle>
      {remaining !== null ? <p role="status">{remaining} recovery codes left.</p> : null}
      {offered.passkey ? (
        <div class="notice">
          <p>
            {offered.totp
              ? "Confirm with your passkey (this device's screen lock or your security key), or enter a code below."
              : "Your role signs in with a passkey: confirm with this device's screen lock or your security key. Without it, use a recovery code."}
          </p>
          <ErrorPanel error={passkey.error} />
          <Button type="button" variant={offered.totp ? "secondary" : "primary"} busy={passkey.busy} busyLabel="Waiting for your passkey…" onClick={usePasskey}>
            Use a passkey
          </Button>
        </div>
      ) : null}
      {showForm ? (
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
            <TotpField key="totp" id="totp-code" label="6-digit code" value={code} onInput={setCode} hint="The code your authenticator app shows for caremesh." autoFocus />
          )}
          <ErrorPanel error={error} />
          <div class="actions">
            <Button busy={busy} busyLabel="Checking…">
              Continue
            </Button>
            {offered.totp ? (
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
            ) : null}
          </div>
        </form>
      ) : offered.recoveryCode ? (
        <Button type="button" variant="secondary" onClick={() => setUseRecovery(true)}>
          Use a recovery code instead
        </Button>
      ) : null}
      <p class="alt">
        <button type="button" class="link" onClick={cancel}>
          Start again
        </button>
      </p>
    </section>
  );
}
