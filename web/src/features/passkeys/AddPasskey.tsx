// "Add a passkey": a name, then the browser's passkey prompt. When the passkey is the account's
// first second factor, auth-svc issues the recovery codes (shown here once) and the session
// becomes AAL2. Used by the passkeys screen and by the offer after a TOTP sign-in.

import type { ComponentChildren, JSX } from "preact";
import { useState } from "preact/hooks";

import type { PasskeyAdded } from "../../client";
import { Button, CodeList, ErrorPanel, Field, useOperation } from "../../app/components";
import { useClient } from "../../app/context";

/** `children`: more buttons beside "Add a passkey" (the offer's "Not now"). */
export function AddPasskey(props: { id: string; onAdded: (added: PasskeyAdded) => void; children?: ComponentChildren }): JSX.Element {
  const client = useClient();
  const op = useOperation("passkey");
  const [name, setName] = useState("");
  const [unnamed, setUnnamed] = useState(false);
  const [added, setAdded] = useState<PasskeyAdded | null>(null);

  const submit = (event: Event) => {
    event.preventDefault();
    setAdded(null);
    // Checked before the browser's prompt, so a missing name does not waste the ceremony.
    setUnnamed(name.trim() === "");
    if (name.trim() === "") return;
    void op.run(async () => {
      const result = await client.passkeys.add(name);
      setName("");
      setAdded(result);
      props.onAdded(result);
    });
  };

  return (
    <form onSubmit={submit} noValidate>
      <Field
        id={`${props.id}-name`}
        label="Name for the new passkey"
        hint="So you can tell your passkeys apart, for example “work laptop” or “phone”."
        value={name}
        onInput={setName}
        autoComplete="off"
        maxLength={64}
        required
      />
      {unnamed ? (
        <div class="error" role="alert">
          <p class="error-message">The passkey needs a name.</p>
          <p class="error-advice">Type a name of 1 to 64 characters, then add the passkey.</p>
        </div>
      ) : null}
      <ErrorPanel error={op.error} />
      {added ? (
        <div role="status" class="result-ok" data-testid="passkey-added">
          <p>
            <strong>Passkey “{added.passkey.name}” added.</strong> Next time, sign in with “Use a passkey”.
          </p>
          {added.recoveryCodes.length > 0 ? (
            <>
              <p>
                Two-step sign-in is on. If you lose this passkey, each of these recovery codes signs you in once. They are
                shown only now: write them down or store them in a password manager.
              </p>
              <CodeList label="Recovery codes" codes={added.recoveryCodes} />
            </>
          ) : null}
        </div>
      ) : null}
      <div class="actions">
        <Button busy={op.busy} busyLabel="Waiting for your passkey…">
          Add a passkey
        </Button>
        {props.children}
      </div>
    </form>
  );
}
