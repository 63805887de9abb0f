// The admin screen (`#/admin`, admins at AAL2): the doctors and nurses waiting for approval, a
// search over all accounts (status, role, locked, username prefix, paged), and one account:
// its state and attributes, approve with attributes, change attributes, disable (with a reason
// code) / enable, unlock, end all sessions, reset two-step sign-in; and which roles must sign in
// with a passkey. Destructive actions ask first.
// Each change sends the account's etag: if someone changed it meanwhile, the server refuses
// (ABORTED) and the screen says to reload it.

import type { JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

import {
  parseAttributes,
  type AccountStatus,
  type AdminUserView,
  type ErrorView,
  type RoleName,
  type RolePolicyView,
} from "../../client";
import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { Confirm } from "./Confirm";
import { AnySelect } from "./Select";
import "./ops.css";

/** The server's message with advice that fits an admin change. */
export function adminAdvice(error: ErrorView | null): ErrorView | null {
  if (error?.code === "Aborted") {
    return { ...error, advice: "The account changed since you opened it. Reload it, check it again, then retry." };
  }
  return error;
}

function statusLine(user: AdminUserView): string {
  const parts: string[] = [user.role, user.status];
  if (user.locked) parts.push("locked");
  parts.push(user.mfaEnrolled ? "two-step sign-in on" : "two-step sign-in off");
  return parts.join(" · ");
}

function UserRow(props: { user: AdminUserView; onOpen: (user: AdminUserView) => void }): JSX.Element {
  const u = props.user;
  return (
    <li class="list-item" data-testid="user-row">
      <h3>
        {u.displayName || u.username} <span class="mono">({u.username})</span>
      </h3>
      <p class="item-meta">
        {statusLine(u)}
        {u.created ? ` · registered ${u.created.toLocaleString()}` : ""}
      </p>
      <Button type="button" variant="secondary" onClick={() => props.onOpen(u)}>
        {u.status === "pending" ? `Review ${u.username}` : `Open ${u.username}`}
      </Button>
    </li>
  );
}

function Pending(props: { onOpen: (user: AdminUserView) => void; version: number }): JSX.Element {
  const client = useClient();
  const load = useOperation("session");
  const [users, setUsers] = useState<AdminUserView[] | null>(null);
  const [next, setNext] = useState("");
  const fetchPage = (token: string) =>
    void load.run(async () => {
      const page = await client.admin.pending(token);
      setUsers((old) => (token === "" ? page.users : [...(old ?? []), ...page.users]));
      setNext(page.nextPageToken);
    });
  useEffect(() => fetchPage(""), [props.version]);
  return (
    <section class="ops-section" aria-labelledby="pending">
      <h2 id="pending">Waiting for approval</h2>
      <ErrorPanel error={load.error} />
      {users !== null && users.length === 0 ? <p>Nobody is waiting for approval.</p> : null}
      {users !== null && users.length > 0 ? (
        <ul class="item-list" data-testid="pending">
          {users.map((u) => (
            <UserRow key={u.userId} user={u} onOpen={props.onOpen} />
          ))}
        </ul>
      ) : null}
      <div class="ops-actions">
        <Button type="button" variant="secondary" busy={load.busy} busyLabel="Loading…" onClick={() => fetchPage("")}>
          Reload the list
        </Button>
        {next !== "" ? (
          <Button type="button" variant="secondary" onClick={() => fetchPage(next)}>
            More
          </Button>
        ) : null}
      </div>
    </section>
  );
}

function Search(props: { onOpen: (user: AdminUserView) => void }): JSX.Element {
  const client = useClient();
  const load = useOperation("session");
  const [prefix, setPrefix] = useState("");
  const [status, setStatus] = useState<AccountStatus>("unknown");
  const [role, setRole] = useState<RoleName>("unknown");
  const [lockedOnly, setLockedOnly] = useState(false);
  const [users, setUsers] = useState<AdminUserView[] | null>(null);
  const [next, setNext] = useState("");
  const fetchPage = (token: string) =>
    void load.run(async () => {
      const page = await client.admin.listUsers({
        usernamePrefix: prefix,
        status,
        role,
        locked: lockedOnly ? true : undefined,
        pageToken: token,
      });
      setUsers((old) => (token === "" ? page.users : [...(old ?? []), ...page.users]));
      setNext(page.nextPageToken);
    });
  return (
    <section class="ops-section" aria-labelledby="search">
      <h2 id="search">Find accounts</h2>
      <form
        class="ops-form"
        onSubmit={(event) => {
          event.preventDefault();
          fetchPage("");
        }}
      >
        <div class="ops-grid">
          <Field id="adm-prefix" label="Username starts with" value={prefix} onInput={setPrefix} />
          <AnySelect<AccountStatus>
            id="adm-status"
            label="Status"
            value={status}
            onChange={setStatus}
            options={[
              { value: "pending", label: "Pending" },
              { value: "active", label: "Active" },
              { value: "disabled", label: "Disabled" },
            ]}
          />
          <AnySelect<RoleName> id="adm-role" label="Role" value={role} onChange={setRole} options={["patient", "doctor", "nurse", "admin", "auditor"]} />
        </div>
        <label class="checkbox">
          <input type="checkbox" checked={lockedOnly} onChange={(e) => setLockedOnly((e.currentTarget as HTMLInputElement).checked)} />
          Only locked accounts
        </label>
        <Button type="submit" variant="secondary" busy={load.busy} busyLabel="Searching…">
          Search
        </Button>
      </form>
      <ErrorPanel error={load.error} />
      {users !== null && users.length === 0 ? <p>No account matches.</p> : null}
      {users !== null && users.length > 0 ? (
        <ul class="item-list" data-testid="search-results">
          {users.map((u) => (
            <UserRow key={u.userId} user={u} onOpen={props.onOpen} />
          ))}
        </ul>
      ) : null}
      {next !== "" ? (
        <Button type="button" variant="secondary" busy={load.busy} onClick={() => fetchPage(next)}>
          More
        </Button>
      ) : null}
    </section>
  );
}

/** One account: its state, and what an admin may do with it. */
function Account(props: { user: AdminUserView; onChanged: (user: AdminUserView) => void; onClose: () => void }): JSX.Element {
  const client = useClient();
  const u = props.user;
  const op = useOperation("session");
  const [done, setDone] = useState("");
  const [attributes, setAttributes] = useState(u.attributes.join("\n"));
  const [reason, setReason] = useState("");
  // A changed account (a new etag) shows its attributes. Not on mount: the state starts with them,
  // and an effect run after the first paint would wipe what the admin typed meanwhile.
  const shownEtag = useRef(u.etag);
  useEffect(() => {
    if (shownEtag.current === u.etag) return;
    shownEtag.current = u.etag;
    setAttributes(u.attributes.join("\n"));
  }, [u.etag]);

  const act = (what: () => Promise<AdminUserView | string>) =>
    void op.run(async () => {
      setDone("");
      const result = await what();
      if (typeof result === "string") setDone(result);
      else {
        props.onChanged(result);
        setDone(`Saved. ${result.username}: ${statusLine(result)}.`);
      }
    });
  const reload = () => act(async () => client.admin.getUser(u.userId));

  return (
    <section class="ops-section card" aria-labelledby="account" data-testid="account">
      <h2 id="account" tabIndex={-1}>
        {u.displayName || u.username} ({u.username})
      </h2>
      <dl class="facts">
        <dt>User id</dt>
        <dd class="mono">{u.userId}</dd>
        <dt>Role</dt>
        <dd>{u.role}</dd>
        <dt>Status</dt>
        <dd data-testid="account-status">{u.status}</dd>
        <dt>Locked</dt>
        <dd>{u.locked ? `yes (${u.failedLoginAttempts} failed sign-ins)` : "no"}</dd>
        <dt>Two-step sign-in</dt>
        <dd>{u.mfaEnrolled ? "on" : "off"}</dd>
        <dt>Attributes</dt>
        <dd data-testid="account-attributes">{u.attributes.length > 0 ? u.attributes.join(", ") : "none"}</dd>
        <dt>Derived</dt>
        <dd>{u.derivedAttributes.join(", ") || "none"}</dd>
        {u.approved ? (
          <>
            <dt>Approved</dt>
            <dd>{u.approved.toLocaleString()}</dd>
          </>
        ) : null}
      </dl>
      {done !== "" ? (
        <p role="status" class="result-ok" data-testid="admin-done">
          {done}
        </p>
      ) : null}
      <ErrorPanel error={adminAdvice(op.error)} />

      <form
        class="ops-form"
        onSubmit={(event) => {
          event.preventDefault();
          const list = parseAttributes(attributes);
          act(() => (u.status === "pending" ? client.admin.approve(u, list) : client.admin.updateAttributes(u, list)));
        }}
      >
        <div class="field">
          <label for="adm-attrs">{u.status === "pending" ? "Attributes to assign" : "Assigned attributes"}</label>
          <textarea
            id="adm-attrs"
            aria-describedby="adm-attrs-hint"
            value={attributes}
            spellcheck={false}
            onInput={(e) => setAttributes((e.currentTarget as HTMLTextAreaElement).value)}
          />
          <p class="hint" id="adm-attrs-hint">
            One per line or separated by commas, e.g. dept:cardiology, org:st-mary. They decide which records the user
            can open; role: and patient: are set by caremesh.
          </p>
        </div>
        <Button type="submit" busy={op.busy} busyLabel="Saving…">
          {u.status === "pending" ? `Approve ${u.username}` : "Save attributes"}
        </Button>
      </form>

      <div class="ops-actions">
        <Button type="button" variant="secondary" onClick={reload}>
          Reload
        </Button>
        {u.locked ? (
          <Button type="button" variant="secondary" busy={op.busy} onClick={() => act(() => client.admin.unlock(u))}>
            Unlock
          </Button>
        ) : null}
        {u.status === "disabled" ? (
          <Button type="button" variant="secondary" busy={op.busy} onClick={() => act(() => client.admin.enable(u))}>
            Enable the account
          </Button>
        ) : null}
        {u.status !== "disabled" ? (
          <Confirm
            label="Disable the account"
            confirmLabel={`Yes, disable ${u.username}`}
            busy={op.busy}
            question={`${u.username} will not be able to sign in, and every session of theirs ends now.`}
            onConfirm={() => act(() => client.admin.disable(u, reason))}
          >
            <Field
              id="adm-reason"
              label="Reason code for the audit log (optional)"
              hint="A short code such as LEFT_ORGANIZATION; never health data."
              value={reason}
              onInput={setReason}
              maxLength={64}
            />
          </Confirm>
        ) : null}
        <Confirm
          label="End all sessions"
          confirmLabel="Yes, end them"
          busy={op.busy}
          question={`Every session of ${u.username} ends: they must sign in again. Access tokens already issued still work for up to 10 minutes.`}
          onConfirm={() =>
            act(async () => {
              const n = await client.admin.revokeSessions(u);
              return `Ended ${n} session${n === 1 ? "" : "s"} of ${u.username}.`;
            })
          }
        />
        {u.mfaEnrolled ? (
          <Confirm
            label="Reset two-step sign-in"
            confirmLabel="Yes, reset it"
            busy={op.busy}
            question={`${u.username}'s authenticator and recovery codes stop working and their sessions end. They must set up two-step sign-in again before reaching health data.`}
            onConfirm={() => act(() => client.admin.resetMfa(u))}
          />
        ) : null}
        <Button type="button" variant="secondary" onClick={props.onClose}>
          Close
        </Button>
      </div>
    </section>
  );
}

/** Which roles must use a passkey as their second factor. */
function RolePolicies(): JSX.Element {
  const client = useClient();
  const op = useOperation("session");
  const [policies, setPolicies] = useState<RolePolicyView[] | null>(null);
  useEffect(() => void op.run(async () => setPolicies(await client.admin.rolePolicies())), []);
  const set = (role: RoleName, required: boolean) =>
    void op.run(async () => {
      const changed = await client.admin.setRolePolicy(role, required);
      setPolicies((old) => (old ?? []).map((policy) => (policy.role === role ? changed : policy)));
    });
  return (
    <section class="ops-section" aria-labelledby="policies">
      <h2 id="policies">Passkeys required</h2>
      <p class="item-meta">
        People of a checked role sign in with a passkey (or a recovery code) as their second factor. Until they have
        registered one, their authenticator app still works, so that they can.
      </p>
      <ErrorPanel error={op.error} />
      {policies?.map((policy) => (
        <label class="checkbox" key={policy.role}>
          <input
            type="checkbox"
            checked={policy.passkeyRequired}
            disabled={op.busy}
            data-testid={`passkeys-required-${policy.role}`}
            onChange={(event) => set(policy.role, event.currentTarget.checked)}
          />
          {policy.role}s must use a passkey
        </label>
      ))}
    </section>
  );
}

export function AdminScreen(): JSX.Element {
  const client = useClient();
  const find = useOperation("session");
  const [selected, setSelected] = useState<AdminUserView | null>(null);
  const [lookup, setLookup] = useState("");
  const [version, setVersion] = useState(0);
  const role = client.session.info?.role;

  if (role !== "admin") {
    return (
      <section class="card">
        <ScreenTitle>Administration</ScreenTitle>
        <p>This screen is for administrators. Sign in with an administrator account to approve and manage accounts.</p>
      </section>
    );
  }

  const open = (user: AdminUserView) => {
    setSelected(user);
    setTimeout(() => document.getElementById("account")?.focus(), 0);
  };
  return (
    <section class="card">
      <ScreenTitle>Administration</ScreenTitle>
      <form
        class="ops-form"
        onSubmit={(event) => {
          event.preventDefault();
          void find.run(async () => open(await client.admin.getUser(lookup)));
        }}
      >
        <Field id="adm-lookup" label="Open an account (username or user id)" value={lookup} onInput={setLookup} required />
        <Button type="submit" variant="secondary" busy={find.busy} busyLabel="Looking up…">
          Open
        </Button>
      </form>
      <ErrorPanel error={find.error} />
      {selected ? (
        <Account
          key={selected.userId}
          user={selected}
          onChanged={(user) => {
            setSelected(user);
            setVersion((v) => v + 1);
          }}
          onClose={() => setSelected(null)}
        />
      ) : null}
      <Pending onOpen={open} version={version} />
      <Search onOpen={open} />
      <RolePolicies />
    </section>
  );
}
