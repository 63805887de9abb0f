// After a sign-in with the authenticator app's code, the home screen offers adding a passkey when
// the account has none (required, if an administrator requires passkeys for the role). "Not now"
// ends the offer for this session (the client forgets it only at the next sign-in).

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import { Button } from "../../app/components";
import { useClient } from "../../app/context";
import { href } from "../../app/router";
import { AddPasskey } from "./AddPasskey";
import { PasskeyRequired } from "./PasskeysScreen";

export function PasskeyOffer(): JSX.Element | null {
  const client = useClient();
  const [state, setState] = useState<"checking" | "offer" | "added" | "hidden">(client.passkeys.offerPending ? "checking" : "hidden");
  const [required, setRequired] = useState(false);

  useEffect(() => {
    if (state !== "checking") return;
    client.passkeys.list().then(
      (list) => {
        if (list.passkeys.length > 0) {
          client.passkeys.setOffer(false);
          setState("hidden");
        } else {
          setRequired(list.required);
          setState("offer");
        }
      },
      // Only an offer: if the list cannot be read now, the passkeys screen says why.
      () => setState("hidden"),
    );
  }, []);

  if (state === "hidden" || state === "checking") return null;
  return (
    <section class="notice" aria-labelledby="passkey-offer" data-testid="passkey-offer">
      <h2 id="passkey-offer">{required ? "Add the passkey your role requires" : "Sign in faster with a passkey"}</h2>
      {required ? (
        <PasskeyRequired count={0} />
      ) : (
        <p>
          A passkey signs you in with this device's screen lock or a security key, without your password or a code. You can
          manage your passkeys on <a href={href("passkeys")}>your passkeys</a> page.
        </p>
      )}
      <AddPasskey id="offer" onAdded={() => setState("added")}>
        {state === "offer" ? (
          <Button
            type="button"
            variant="secondary"
            onClick={() => {
              client.passkeys.setOffer(false);
              setState("hidden");
            }}
          >
            Not now
          </Button>
        ) : null}
      </AddPasskey>
    </section>
  );
}
