// MFA enrolment: the server makes a TOTP secret, shown as a QR code and as text; a code from the
// app confirms it, the session becomes AAL2, and the 10 recovery codes are shown once.

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import type { Enrolment } from "../../client";
import { Button, CodeList, ErrorPanel, ScreenTitle, TotpField, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { navigate } from "../../app/router";
import { QrCode } from "./QrCode";

/** The base32 secret in groups of four, easier to type. */
function grouped(secret: string): string {
  return secret.replace(/(.{4})/g, "$1 ").trim();
}

export function MfaScreen(): JSX.Element {
  const client = useClient();
  const [enrolment, setEnrolment] = useState<Enrolment | null>(null);
  const [code, setCode] = useState("");
  const [recoveryCodes, setRecoveryCodes] = useState<string[] | null>(null);
  const start = useOperation("enrol");
  const confirm = useOperation("confirm");

  const begin = () =>
    void start.run(async () => {
      setEnrolment(await client.enrolTotp());
    });

  useEffect(() => {
    begin();
  }, []);

  const submit = (event: Event) => {
    event.preventDefault();
    void confirm.run(async () => {
      setRecoveryCodes(await client.confirmTotp(code));
      setCode("");
    });
  };

  if (recoveryCodes !== null) {
    return (
      <section class="card">
        <ScreenTitle>Save your recovery codes</ScreenTitle>
        <p class="notice" role="status">
          Two-step sign-in is on. This session is now at assurance level AAL2.
        </p>
        <p>
          If you lose your phone, each of these codes signs you in once instead of the app's code. They are shown only
          now: write them down or store them in a password manager.
        </p>
        <CodeList label="Recovery codes" codes={recoveryCodes} />
        <Button type="button" onClick={() => navigate("home")}>
          I have saved them
        </Button>
      </section>
    );
  }

  return (
    <section class="card">
      <ScreenTitle>Set up two-step sign-in</ScreenTitle>
      <ol class="steps">
        <li>Open an authenticator app on your phone (for example Aegis, FreeOTP or Google Authenticator).</li>
        <li>Scan the QR code, or type the secret key.</li>
        <li>Enter the 6-digit code the app shows.</li>
      </ol>
      {start.busy ? (
        <p role="status" class="progress">
          <span class="spinner" aria-hidden="true" /> Preparing your secret key…
        </p>
      ) : null}
      <ErrorPanel error={start.error} />
      {start.error ? (
        <Button type="button" variant="secondary" onClick={begin}>
          Try again
        </Button>
      ) : null}
      {enrolment ? (
        <>
          <div class="qr-box">
            <QrCode text={enrolment.otpauthUri} label="QR code of the secret key for your authenticator app" />
          </div>
          <p class="secret-label" id="secret-label">
            Secret key ({enrolment.issuer}, {enrolment.digits} digits, every {enrolment.periodSeconds} s):
          </p>
          <p class="secret" aria-labelledby="secret-label">
            <code data-testid="totp-secret" data-secret={enrolment.secret}>
              {grouped(enrolment.secret)}
            </code>
          </p>
          <details class="uri">
            <summary>Show the otpauth link</summary>
            <code class="wrap">{enrolment.otpauthUri}</code>
          </details>
          <form onSubmit={submit} noValidate>
            <TotpField id="confirm-code" label="6-digit code from the app" value={code} onInput={setCode} />
            <ErrorPanel error={confirm.error} />
            <Button busy={confirm.busy} busyLabel="Confirming…">
              Turn on two-step sign-in
            </Button>
          </form>
        </>
      ) : null}
    </section>
  );
}
