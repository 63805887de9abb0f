// Your devices (`#/devices`): the signed device list with this browser marked, removing another
// device (it gets nothing sent from then on, and a new history key goes to the rest), and
// approving a new device by the code it shows (linking, docs/protocol.md §8).

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import { openMessenger, type DeviceView, type Messenger } from "../../client";
import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href } from "../../app/router";
import "../messaging/messages.css";

export function DevicesScreen(): JSX.Element {
  const client = useClient();
  const [messenger, setMessenger] = useState<Messenger | null>(null);
  const [notReady, setNotReady] = useState<string | null>(null);
  const [devices, setDevices] = useState<DeviceView[]>([]);
  const [code, setCode] = useState("");
  const [linked, setLinked] = useState<string | null>(null);
  const [removing, setRemoving] = useState<string | null>(null);
  const load = useOperation("session");
  const approve = useOperation("session");
  const remove = useOperation("session");

  const refresh = (m: Messenger) =>
    load.run(async () => {
      setDevices(await m.devices());
    });

  useEffect(() => {
    void load.run(async () => {
      const start = await openMessenger(client);
      if (start.kind !== "ready") {
        setNotReady(
          start.kind === "needsAal2"
            ? "Devices need two-step sign-in (AAL2)."
            : start.kind === "otherTab"
              ? "Your messages are open in another tab of this browser: use that one."
              : "This browser is not one of your devices yet.",
        );
        return;
      }
      setMessenger(start.messenger);
      setDevices(await start.messenger.devices());
    });
  }, []);

  const doApprove = () =>
    void approve.run(async () => {
      if (!messenger) return;
      const deviceId = await messenger.approveLink(code);
      setCode("");
      setLinked(deviceId);
      await refresh(messenger);
    });

  const doRemove = (deviceId: string) =>
    void remove.run(async () => {
      if (!messenger) return;
      await messenger.removeDevice(deviceId);
      setRemoving(null);
      await refresh(messenger);
    });

  return (
    <section class="card">
      <ScreenTitle>Your devices</ScreenTitle>
      <p>
        <a href={href("messages")}>Back to messages</a>
      </p>
      {load.busy && devices.length === 0 ? (
        <p role="status" class="progress">
          <span class="spinner" aria-hidden="true" /> Loading your devices…
        </p>
      ) : null}
      <ErrorPanel error={load.error} />
      {notReady ? (
        <div class="notice">
          <p>{notReady}</p>
          <a class="button primary" href={href("messages")}>
            Set up this browser
          </a>
        </div>
      ) : null}
      {messenger ? (
        <>
          <ul class="devices" aria-label="Devices">
            {devices.map((d) => (
              <li key={d.deviceId} data-testid="device">
                <code>{d.deviceId}</code>
                {d.thisDevice ? <strong> (this browser)</strong> : null}
                {d.adminRemoved ? <span> (removed by an administrator)</span> : null}
                {!d.thisDevice ? (
                  removing === d.deviceId ? (
                    <span class="actions">
                      <Button type="button" variant="secondary" busy={remove.busy} busyLabel="Removing…" onClick={() => doRemove(d.deviceId)}>
                        Yes, remove it
                      </Button>
                      <Button type="button" variant="secondary" onClick={() => setRemoving(null)}>
                        Keep it
                      </Button>
                    </span>
                  ) : (
                    <button type="button" class="button secondary" aria-label={`Remove device ${d.deviceId}`} onClick={() => setRemoving(d.deviceId)}>
                      Remove
                    </button>
                  )
                ) : null}
              </li>
            ))}
          </ul>
          <ErrorPanel error={remove.error} />
          <h2>Link a new device</h2>
          <p class="hint">On the new device, sign in and choose to link it; it shows a code. Compare and type it here.</p>
          <form
            onSubmit={(event) => {
              event.preventDefault();
              doApprove();
            }}
          >
            <Field id="link-code" label="Code from the new device" value={code} onInput={setCode} autoComplete="off" hint="16 characters, like ABCD-EFGH-JKMN-PQRS" required />
            <Button type="submit" busy={approve.busy} busyLabel="Approving…">
              Approve the new device
            </Button>
          </form>
          <ErrorPanel error={approve.error} />
          {linked ? (
            <p role="status" data-testid="linked">
              Linked device {linked}. It can now read your messages.
            </p>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
