// Your passkeys (`#/passkeys`, from the account screen): the list (name, added, last used,
// whether it is synced), rename, remove (asked first), add one, and the notice when an
// administrator requires passkeys for your role.

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import type { PasskeyList, PasskeyView } from "../../client";
import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href } from "../../app/router";
import { Confirm } from "../admin/Confirm";
import { AddPasskey } from "./AddPasskey";
import "../admin/ops.css";

function syncState(passkey: PasskeyView): string {
  if (passkey.synced) return "synced to your other devices";
  return passkey.syncable ? "can be synced, not synced now" : "kept on one device only";
}

function PasskeyItem(props: { passkey: PasskeyView; last: boolean; required: boolean; onChanged: () => void }): JSX.Element {
  const client = useClient();
  const p = props.passkey;
  const rename = useOperation("passkey");
  const remove = useOperation("passkey");
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(p.name);

  const saveName = (event: Event) => {
    event.preventDefault();
    void rename.run(async () => {
      await client.passkeys.rename(p.passkeyId, name);
      setRenaming(false);
      props.onChanged();
    });
  };

  return (
    <li class="list-item" data-testid="passkey">
      <h3>{p.name}</h3>
      <p class="item-meta">
        Added {p.created ? p.created.toLocaleString() : "at an unknown time"} ·{" "}
        {p.lastUsed ? `last used ${p.lastUsed.toLocaleString()}` : "not used to sign in yet"} · {syncState(p)}
      </p>
      {renaming ? (
        <form onSubmit={saveName} noValidate>
          <Field id={`rename-${p.passkeyId}`} label={`New name for “${p.name}”`} value={name} onInput={setName} autoComplete="off" maxLength={64} required autoFocus />
          <ErrorPanel error={rename.error} />
          <div class="ops-actions">
            <Button busy={rename.busy} busyLabel="Saving…">
              Save the name
            </Button>
            <Button
              type="button"
              variant="secondary"
              onClick={() => {
                setRenaming(false);
                setName(p.name);
                rename.clear();
              }}
            >
              Cancel
            </Button>
          </div>
        </form>
      ) : (
        <div class="ops-actions">
          <Button type="button" variant="secondary" onClick={() => setRenaming(true)}>
            Rename
          </Button>
          <Confirm
            label="Remove"
            confirmLabel="Yes, remove it"
            busy={remove.busy}
            question={
              <>
                Remove the passkey “{p.name}”? It can no longer sign you in. Your device may still list it: delete it there
                too.
                {props.last && props.required ? " Your role requires a passkey, so the last one cannot be removed." : ""}
              </>
            }
            onConfirm={() =>
              void remove.run(async () => {
                await client.passkeys.remove(p.passkeyId);
                props.onChanged();
              })
            }
          />
        </div>
      )}
      <ErrorPanel error={remove.error} />
    </li>
  );
}

/** What a role that requires passkeys means for you (here and in the offer after sign-in). */
export function PasskeyRequired(props: { count: number }): JSX.Element {
  return props.count === 0 ? (
    <p data-testid="passkey-required">
      <strong>Your role requires a passkey.</strong> Add one now: once you have it, you sign in with it (or a recovery
      code) instead of the authenticator app's code.
    </p>
  ) : (
    <p data-testid="passkey-required">
      Your role requires a passkey: you sign in with one (or a recovery code). Add another one before you remove your
      last.
    </p>
  );
}

export function PasskeysScreen(): JSX.Element {
  const client = useClient();
  const load = useOperation("passkey");
  const [list, setList] = useState<PasskeyList | null>(null);
  const refresh = () => void load.run(async () => setList(await client.passkeys.list()));
  useEffect(refresh, []);

  return (
    <section class="card">
      <ScreenTitle>Your passkeys</ScreenTitle>
      <p>
        <a href={href("account")}>Back to your account</a>
      </p>
      <p>
        A passkey signs you in with this device's screen lock (fingerprint, face or PIN) or a security key: no password,
        no code, and it works only on caremesh's own site, so it cannot be phished.
      </p>
      {load.busy && !list ? (
        <p role="status" class="progress">
          <span class="spinner" aria-hidden="true" /> Loading your passkeys…
        </p>
      ) : null}
      <ErrorPanel error={load.error} />
      {load.error ? (
        <Button type="button" variant="secondary" onClick={refresh}>
          Try again
        </Button>
      ) : null}
      {list ? (
        <>
          {list.required ? (
            <div class="notice" role="status">
              <PasskeyRequired count={list.passkeys.length} />
            </div>
          ) : null}
          {list.passkeys.length === 0 ? (
            <p data-testid="no-passkeys">You have no passkey yet.</p>
          ) : (
            <ul class="item-list" aria-label="Passkeys">
              {list.passkeys.map((p) => (
                <PasskeyItem key={`${p.passkeyId}-${p.name}`} passkey={p} last={list.passkeys.length === 1} required={list.required} onChanged={refresh} />
              ))}
            </ul>
          )}
        </>
      ) : null}
      <section class="ops-section" aria-labelledby="add-passkey">
        <h2 id="add-passkey">Add a passkey</h2>
        <p class="hint">Your browser asks you to confirm with this device's screen lock or a security key.</p>
        <AddPasskey id="add" onAdded={refresh} />
      </section>
    </section>
  );
}
