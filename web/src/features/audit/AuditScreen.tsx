// The auditor screen (`#/audit`, auditors at AAL2): the live alert stream (StreamAlerts, shown as
// alerts arrive, after the stored backlog from ListAlerts), event queries with every filter
// QueryEvents offers and paging, and the log's tamper evidence verified here in the browser: the
// signed checkpoint under the pinned verifier key, a consistency proof from the last checkpoint
// this page verified, and an inclusion proof for any listed event. User ids are shown with the
// person's name (LookupUser).

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import {
  AUDIT_ACTIONS,
  AUDIT_OUTCOMES,
  describeError,
  type AlertView,
  type AuditActionName,
  type AuditEventView,
  type AuditOutcomeName,
  type ErrorView,
  type EventFilter,
  type InclusionResult,
  type VerifiedCheckpoint,
} from "../../client";
import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { AnySelect } from "../admin/Select";
import "../admin/ops.css";

const INTEGRITY_ADVICE =
  "Do not trust this log's answers: keep this page open, note the tree sizes shown, and tell the security team.";

/** An integrity failure is not a server error: say so plainly. */
function integrityAdvice(error: ErrorView | null): ErrorView | null {
  if (error !== null && error.message.startsWith("AUDIT LOG INTEGRITY FAILURE")) return { ...error, advice: INTEGRITY_ADVICE };
  return error;
}

/** A user id from the log, with the person's name once auth-svc has given it. */
function Person(props: { userId: string }): JSX.Element {
  const client = useClient();
  const [name, setName] = useState("");
  useEffect(() => {
    let current = true;
    setName("");
    void client.audit.nameOf(props.userId).then((found) => current && setName(found));
    return () => {
      current = false;
    };
  }, [client, props.userId]);
  return <>{name ? `${name} ${props.userId}` : props.userId}</>;
}

function when(date: Date | null): string {
  return date ? date.toLocaleString() : "";
}

function AlertItem(props: { alert: AlertView; live: boolean }): JSX.Element {
  const a = props.alert;
  return (
    <li class="list-item" data-testid={props.live ? "live-alert" : "alert"}>
      <h3>
        <span class={a.severity === "high" ? "badge alarm" : "badge"}>{a.severity}</span> {a.kind}
        {props.live ? " (new)" : ""}
      </h3>
      <p>{a.summary}</p>
      <p class="item-meta">
        {when(a.raised)}
        {a.actorUserId ? (
          <>
            {" · actor "}
            <Person userId={a.actorUserId} />
          </>
        ) : null}
        {a.patientId ? (
          <>
            {" · patient "}
            <Person userId={a.patientId} />
          </>
        ) : null}
        {a.sourceAddress ? ` · from ${a.sourceAddress}` : ""} · {a.eventCount} event{a.eventCount === 1 ? "" : "s"}
      </p>
    </li>
  );
}

function Alerts(): JSX.Element {
  const client = useClient();
  const backlog = useOperation("session");
  const [stored, setStored] = useState<AlertView[] | null>(null);
  const [live, setLive] = useState<AlertView[]>([]);
  const [state, setState] = useState<{ connected: boolean; error: ErrorView | null }>({ connected: false, error: null });

  useEffect(() => {
    const abort = new AbortController();
    void client.audit.followAlerts(
      (alert) => setLive((old) => (old.some((a) => a.alertId === alert.alertId) ? old : [alert, ...old])),
      (s) => setState({ connected: s.connected, error: s.error ? describe(s.error) : null }),
      abort.signal,
    );
    void backlog.run(async () => setStored((await client.audit.listAlerts()).alerts));
    return () => abort.abort();
  }, []);

  const liveIds = new Set(live.map((a) => a.alertId));
  const older = (stored ?? []).filter((a) => !liveIds.has(a.alertId));
  return (
    <section class="ops-section" aria-labelledby="alerts">
      <h2 id="alerts">Alerts</h2>
      <p role="status" data-testid="stream-state">
        {state.connected ? "Live: new alerts appear here as they are raised." : "Connecting to the alert stream…"}
      </p>
      {state.error ? (
        <div class="error">
          <p class="error-message">
            <strong>The alert stream dropped:</strong> {state.error.message}
          </p>
          <p class="error-advice">It reconnects by itself every few seconds without missing alerts. {state.error.advice}</p>
        </div>
      ) : null}
      <div aria-live="polite">
        {live.length > 0 ? (
          <ul class="item-list" data-testid="live-alerts">
            {live.map((a) => (
              <AlertItem key={a.alertId} alert={a} live />
            ))}
          </ul>
        ) : null}
      </div>
      <ErrorPanel error={backlog.error} />
      {stored !== null && older.length === 0 && live.length === 0 ? <p>No alerts.</p> : null}
      {older.length > 0 ? (
        <ul class="item-list" data-testid="stored-alerts" aria-label="Earlier alerts">
          {older.map((a) => (
            <AlertItem key={a.alertId} alert={a} live={false} />
          ))}
        </ul>
      ) : null}
      <Button
        type="button"
        variant="secondary"
        busy={backlog.busy}
        busyLabel="Loading…"
        onClick={() => void backlog.run(async () => setStored((await client.audit.listAlerts()).alerts))}
      >
        Reload stored alerts
      </Button>
    </section>
  );
}

/** The stream's failures come through a callback, not an operation. */
function describe(error: unknown): ErrorView {
  return describeError(error, "session");
}

function Proof(props: { result: InclusionResult }): JSX.Element {
  const r = props.result;
  return (
    <p class="result-ok" role="status" data-testid="inclusion">
      <strong>Included (verified):</strong> leaf {r.leafIndex.toString()} of a tree of {r.treeSize.toString()}, root{" "}
      <span class="mono">{r.rootHex}</span>
    </p>
  );
}

function EventItem(props: { event: AuditEventView }): JSX.Element {
  const client = useClient();
  const e = props.event;
  const prove = useOperation("session");
  const [result, setResult] = useState<InclusionResult | null>(null);
  return (
    <li class="list-item" data-testid="event">
      <h3>
        {e.operation} <span class={e.outcome === "success" ? "badge" : "badge alarm"}>{e.outcome}</span>
        {e.emergency ? (
          <>
            {" "}
            <span class="badge alarm">emergency</span>
          </>
        ) : null}
      </h3>
      <p class="item-meta">
        {when(e.recorded)} · {e.action} · leaf {e.leafIndex.toString()}
        {e.outcomeReason ? ` · ${e.outcomeReason}` : ""}
        {e.purposeOfUse ? ` · purpose ${e.purposeOfUse}` : ""}
      </p>
      <p class="item-meta">
        actor {e.actorUserId ? <Person userId={e.actorUserId} /> : "unknown"} ({e.actorRole || "?"})
        {e.sourceAddress ? ` from ${e.sourceAddress}` : ""}
        {e.entityType ? ` · ${e.entityType} ${e.entityId}` : ""}
        {e.patientId ? (
          <>
            {" · patient "}
            <Person userId={e.patientId} />
          </>
        ) : null}
        {` · ${e.service}`}
      </p>
      <p class="item-meta mono">event {e.eventId}</p>
      {result ? <Proof result={result} /> : null}
      <ErrorPanel error={integrityAdvice(prove.error)} />
      <Button
        type="button"
        variant="secondary"
        busy={prove.busy}
        busyLabel="Verifying…"
        onClick={() => void prove.run(async () => setResult(await client.audit.proveEvent(e.eventId)))}
      >
        Prove it is in the log
      </Button>
    </li>
  );
}

/** "2026-12-03T12:00" from a datetime-local input, as a local time. */
function localTime(text: string): Date | null {
  if (text === "") return null;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

function Events(): JSX.Element {
  const client = useClient();
  const load = useOperation("session");
  const [actor, setActor] = useState("");
  const [patient, setPatient] = useState("");
  const [action, setAction] = useState<AuditActionName>("unknown");
  const [outcome, setOutcome] = useState<AuditOutcomeName>("unknown");
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [operation, setOperation] = useState("");
  const [entityType, setEntityType] = useState("");
  const [entityId, setEntityId] = useState("");
  const [emergencyOnly, setEmergencyOnly] = useState(false);
  const [oldestFirst, setOldestFirst] = useState(false);
  const [filter, setFilter] = useState<EventFilter | null>(null);
  const [events, setEvents] = useState<AuditEventView[] | null>(null);
  const [next, setNext] = useState("");

  const fetchPage = (f: EventFilter, token: string) =>
    void load.run(async () => {
      const page = await client.audit.queryEvents(f, token);
      setEvents((old) => (token === "" ? page.events : [...(old ?? []), ...page.events]));
      setNext(page.nextPageToken);
    });
  const submit = (event: Event) => {
    event.preventDefault();
    void load.run(async () => {
      // Usernames are resolved to user ids (the log holds ids only).
      const resolve = async (text: string) => (text.trim() === "" ? "" : (await client.records.findPatient(text)).userId);
      const f: EventFilter = {
        actorUserId: await resolve(actor),
        patientId: await resolve(patient),
        action,
        outcome,
        from: localTime(from),
        to: localTime(to),
        operation,
        entityType,
        entityId,
        emergencyOnly,
        oldestFirst,
      };
      setFilter(f);
      const page = await client.audit.queryEvents(f, "");
      setEvents(page.events);
      setNext(page.nextPageToken);
    });
  };
  const dateField = (id: string, label: string, value: string, set: (v: string) => void) => (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} type="datetime-local" value={value} onInput={(e) => set((e.currentTarget as HTMLInputElement).value)} />
    </div>
  );

  return (
    <section class="ops-section" aria-labelledby="events">
      <h2 id="events">Events</h2>
      <form class="ops-form" onSubmit={submit} aria-label="Event filters">
        <div class="ops-grid">
          <Field id="ev-actor" label="Actor (username or user id)" value={actor} onInput={setActor} />
          <Field id="ev-patient" label="Patient (username or user id)" value={patient} onInput={setPatient} />
          <AnySelect<AuditActionName> id="ev-action" label="Action" value={action} onChange={setAction} options={AUDIT_ACTIONS} />
          <AnySelect<AuditOutcomeName> id="ev-outcome" label="Outcome" value={outcome} onChange={setOutcome} options={AUDIT_OUTCOMES} />
          {dateField("ev-from", "From (your local time)", from, setFrom)}
          {dateField("ev-to", "Until", to, setTo)}
          <Field id="ev-operation" label="Operation" hint="e.g. login or emergency_access" value={operation} onInput={setOperation} />
          <Field id="ev-entity-type" label="Entity type" hint="e.g. Record, User, EmergencyGrant" value={entityType} onInput={setEntityType} />
          <Field id="ev-entity-id" label="Entity id" value={entityId} onInput={setEntityId} />
        </div>
        <label class="checkbox">
          <input type="checkbox" checked={emergencyOnly} onChange={(e) => setEmergencyOnly((e.currentTarget as HTMLInputElement).checked)} />
          Only emergency access
        </label>
        <label class="checkbox">
          <input type="checkbox" checked={oldestFirst} onChange={(e) => setOldestFirst((e.currentTarget as HTMLInputElement).checked)} />
          Oldest first
        </label>
        <Button type="submit" busy={load.busy} busyLabel="Searching…">
          Search the log
        </Button>
      </form>
      <ErrorPanel error={load.error} />
      {events !== null && events.length === 0 ? <p>No event matches.</p> : null}
      {events !== null && events.length > 0 ? (
        <ul class="item-list" data-testid="events">
          {events.map((e) => (
            <EventItem key={e.eventId} event={e} />
          ))}
        </ul>
      ) : null}
      {next !== "" && filter !== null ? (
        <Button type="button" variant="secondary" busy={load.busy} busyLabel="Loading…" onClick={() => fetchPage(filter, next)}>
          Next page
        </Button>
      ) : null}
    </section>
  );
}

function Checkpoints(): JSX.Element {
  const client = useClient();
  const op = useOperation("session");
  const [result, setResult] = useState<VerifiedCheckpoint | null>(null);
  const verify = (signNow: boolean) =>
    void op.run(async () => {
      setResult(null);
      setResult(await client.audit.verifyLatest(signNow));
    });
  const failed = op.error !== null;
  return (
    <section class="ops-section" aria-labelledby="checkpoint">
      <h2 id="checkpoint">Is the log intact?</h2>
      <p class="hint">
        This browser checks the signed checkpoint with the log's key, and that the log only grew since the last checkpoint
        it verified (kept until you close or reload the page).
      </p>
      <div class="ops-actions">
        <Button type="button" busy={op.busy} busyLabel="Verifying…" onClick={() => verify(false)}>
          Verify the latest checkpoint
        </Button>
        <Button type="button" variant="secondary" busy={op.busy} busyLabel="Verifying…" onClick={() => verify(true)}>
          Sign a checkpoint now and verify it
        </Button>
      </div>
      {result ? (
        <div class="result-ok" role="status" data-testid="checkpoint-result">
          <p>
            <strong>Verified.</strong> Signature by <span class="mono">{result.verifierKey}</span> is valid; the log{" "}
            {result.extends === null
              ? "has no earlier checkpoint in this browser to compare with."
              : `extends the checkpoint verified before (tree size ${result.extends.toString()}).`}
          </p>
          <dl class="facts">
            <dt>Log</dt>
            <dd>{result.origin}</dd>
            <dt>Tree size</dt>
            <dd data-testid="tree-size">{result.treeSize.toString()}</dd>
            <dt>Root hash</dt>
            <dd class="mono" data-testid="root-hash">
              {result.rootHex}
            </dd>
            <dt>Signed</dt>
            <dd>{when(result.signed)}</dd>
          </dl>
        </div>
      ) : null}
      {failed ? (
        <div class="result-failed" data-testid="checkpoint-failed">
          <p>
            <strong>Not verified.</strong>
          </p>
        </div>
      ) : null}
      <ErrorPanel error={integrityAdvice(op.error)} />
    </section>
  );
}

export function AuditScreen(): JSX.Element {
  const client = useClient();
  if (client.session.info?.role !== "auditor") {
    return (
      <section class="card">
        <ScreenTitle>Audit</ScreenTitle>
        <p>This screen is for auditors. Sign in with an auditor account to search the audit log and follow alerts.</p>
      </section>
    );
  }
  return (
    <section class="card">
      <ScreenTitle>Audit</ScreenTitle>
      <Alerts />
      <Checkpoints />
      <Events />
    </section>
  );
}
