// The shell: header (app name, who is signed in, sign out), the current screen by route, and the
// guards that keep signed-out users on the public screens and signed-in users off them.

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import type { CaremeshClient, SessionInfo } from "../client";
import { HomeScreen } from "../features/auth/HomeScreen";
import { MfaScreen } from "../features/auth/MfaScreen";
import { RegisterScreen } from "../features/auth/RegisterScreen";
import { SecondFactorScreen } from "../features/auth/SecondFactorScreen";
import { SignInScreen } from "../features/auth/SignInScreen";
import { RecordsScreen } from "../features/records/RecordsScreen";
import { MessagesScreen } from "../features/messaging/MessagesScreen";
import { DevicesScreen } from "../features/devices/DevicesScreen";
import { AdminScreen } from "../features/admin/AdminScreen";
import { AuditScreen } from "../features/audit/AuditScreen";
import { AccountScreen } from "../features/account/AccountScreen";
import { PasskeysScreen } from "../features/passkeys/PasskeysScreen";
import { Button, ErrorPanel, useOperation } from "./components";
import { ClientContext } from "./context";
import { navigate, useRoute, type Route } from "./router";

const PUBLIC: readonly Route[] = ["register", "sign-in", "second-factor"];

function useSession(client: CaremeshClient): SessionInfo | null {
  const [info, setInfo] = useState(client.session.info);
  useEffect(() => client.session.subscribe(setInfo), [client]);
  return info;
}

export function App(props: { client: CaremeshClient }): JSX.Element {
  const { client } = props;
  const session = useSession(client);
  const route = useRoute();
  const [registeredAs, setRegisteredAs] = useState<string | null>(null);
  const signOut = useOperation("signOut");
  // A session kept in this browser ("stay signed in") is restored before any route guard runs.
  const [restoring, setRestoring] = useState(true);
  useEffect(() => {
    void client
      .restoreSession()
      .catch(() => false)
      .finally(() => setRestoring(false));
  }, [client]);

  // Where the route may not be shown in this state, go where it makes sense.
  let target: Route | null = route;
  if (restoring) {
    target = route;
  } else if (session === null) {
    if (route === null || !PUBLIC.includes(route)) target = "sign-in";
    if (route === "second-factor" && !client.awaitingSecondFactor) target = "sign-in";
  } else if (route === null || PUBLIC.includes(route)) {
    target = "home";
  }
  useEffect(() => {
    if (!restoring && target !== route && target !== null) navigate(target);
  }, [target, route, restoring]);

  const doSignOut = () =>
    void signOut.run(async () => {
      setRegisteredAs(null);
      await client.signOut();
      navigate("sign-in");
    });

  let screen: JSX.Element | null = null;
  switch (restoring || target !== route ? null : route) {
    case "register":
      screen = <RegisterScreen onRegistered={setRegisteredAs} />;
      break;
    case "sign-in":
      screen = <SignInScreen key={registeredAs ?? ""} registeredAs={registeredAs} />;
      break;
    case "second-factor":
      screen = <SecondFactorScreen />;
      break;
    case "mfa":
      screen = <MfaScreen />;
      break;
    case "home":
      screen = <HomeScreen />;
      break;
    case "records":
      screen = <RecordsScreen />;
      break;
    case "messages":
      screen = <MessagesScreen />;
      break;
    case "devices":
      screen = <DevicesScreen />;
      break;
    case "admin":
      screen = <AdminScreen />;
      break;
    case "audit":
      screen = <AuditScreen />;
      break;
    case "account":
      screen = <AccountScreen />;
      break;
    case "passkeys":
      screen = <PasskeysScreen />;
      break;
    default:
      screen = null;
  }

  return (
    <ClientContext.Provider value={client}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <span class="brand">
          <img src="/icon.svg" alt="" width="28" height="28" />
          caremesh
        </span>
        {session ? (
          <nav aria-label="Account">
            <span class="who">
              {session.role} · {session.aal}
            </span>
            <Button type="button" variant="secondary" busy={signOut.busy} busyLabel="Signing out…" onClick={doSignOut}>
              Sign out
            </Button>
          </nav>
        ) : null}
      </header>
      <main id="main">
        <ErrorPanel error={signOut.error} />
        {restoring ? (
          <p role="status" class="progress">
            <span class="spinner" aria-hidden="true" /> Opening caremesh…
          </p>
        ) : (
          screen
        )}
      </main>
    </ClientContext.Provider>
  );
}
