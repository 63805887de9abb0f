// The records screen (`#/records`): a patient sees their own records, decrypted in the browser; a
// doctor or nurse finds a patient, lists their records, opens one (if their attributes satisfy its
// policy), sees its version history with the verification of each version, marks one
// entered-in-error, and writes a new record or version with a form for four FHIR kinds or as raw
// JSON. Files: a doctor or nurse attaches one to an opened record (a new DocumentReference record
// under the same policy); DocumentReference records show their file (RecordFiles.tsx). A doctor or
// nurse can also open a record by its id (from a referral), and sees records-svc's refusal when
// the record's policy does not admit them.

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import { DOCUMENT_REFERENCE, describeRecordError, type AccessEntry, type ErrorView, type EmergencyGrant, type OpenedRecord, type PatientRef, type RecordSummary, type VersionEntry } from "../../client";
import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href } from "../../app/router";
import { RecordForm } from "./RecordForm";
import { AttachFile, RecordFileBlock } from "./RecordFiles";
import "./records.css";

function pretty(content: string): string {
  try {
    return JSON.stringify(JSON.parse(content), null, 2);
  } catch {
    return content;
  }
}

function Meta(props: { record: RecordSummary }): JSX.Element {
  const r = props.record;
  return (
    <p class="item-meta">
      Version {r.version}
      {r.updated ? ` · ${r.updated.toLocaleString()}` : ""} · readable by <code>{r.policy}</code>
      {r.enteredInError ? (
        <>
          {" "}
          <span class="badge-error">Entered in error: {r.enteredInError.reason}</span>
        </>
      ) : null}
    </p>
  );
}

/** An opened record: its file (DocumentReference) or its FHIR content. */
function OpenedContent(props: { record: OpenedRecord }): JSX.Element {
  const r = props.record;
  if (r.file !== null) return <RecordFileBlock record={r} />;
  return (
    <pre class="record-content" data-testid="record-content" tabIndex={0} aria-label={`${r.kind} content`}>
      {pretty(r.content)}
    </pre>
  );
}

/** The patient's accounting of disclosures: who accessed their records, when, how and why. */
function AccessReport(): JSX.Element {
  const client = useClient();
  const load = useOperation("session");
  const [entries, setEntries] = useState<AccessEntry[] | null>(null);
  const show = () =>
    void load.run(async () => {
      setEntries(await client.records.accessReport());
    });
  return (
    <section aria-labelledby="access-report">
      <h2 id="access-report">Who accessed my records</h2>
      <Button type="button" variant="secondary" busy={load.busy} busyLabel="Loading…" onClick={show}>
        {entries === null ? "Show who accessed my records" : "Refresh the report"}
      </Button>
      <ErrorPanel error={load.error} />
      {entries !== null && entries.length === 0 ? <p>Nobody else has accessed your records.</p> : null}
      {entries !== null && entries.length > 0 ? (
        <ul class="item-list" data-testid="access-report">
          {entries.map((e, i) => (
            <li class="list-item" key={i}>
              <strong>{e.who}</strong> ({e.role}) · {e.action} · {e.operation}
              <p class="item-meta">
                {e.at ? e.at.toLocaleString() : ""} · {e.outcome}
                {e.purpose ? ` · purpose: ${e.purpose}` : ""}
                {e.emergency ? (
                  <>
                    {" "}
                    <span class="badge-error">Emergency access</span>
                  </>
                ) : null}
              </p>
            </li>
          ))}
        </ul>
      ) : null}
    </section>
  );
}

/** Time left until `until`, updated every second (mm:ss). */
function Countdown(props: { until: Date; onExpired: () => void }): JSX.Element {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const left = Math.max(0, Math.round((props.until.getTime() - now) / 1000));
  useEffect(() => {
    if (left === 0) props.onExpired();
  }, [left === 0]);
  const text = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  return (
    <span role="timer" aria-label={`Emergency access ends in ${text}`} data-testid="countdown">
      {text}
    </span>
  );
}

/** Break glass: emergency access to a patient's records, with a reason, for a limited time. */
function EmergencyAccess(props: { patient: PatientRef; onGranted: () => void }): JSX.Element {
  const client = useClient();
  const op = useOperation("session");
  const [reason, setReason] = useState("");
  const [minutes, setMinutes] = useState("30");
  const [grant, setGrant] = useState<EmergencyGrant | null>(null);
  const [expired, setExpired] = useState(false);
  const submit = (event: Event) => {
    event.preventDefault();
    void op.run(async () => {
      setGrant(await client.records.requestEmergencyAccess(props.patient.userId, reason.trim(), Number(minutes)));
      setExpired(false);
      props.onGranted();
    });
  };
  if (grant && grant.expires && !expired) {
    return (
      <div class="notice" data-testid="emergency-active">
        <p>
          <strong>Emergency access is active</strong> for {props.patient.displayName || props.patient.username}. It is
          audited and the auditors are alerted. Time left: <Countdown until={grant.expires} onExpired={() => setExpired(true)} />
        </p>
      </div>
    );
  }
  return (
    <form class="records-form" onSubmit={submit} aria-labelledby="break-glass">
      <h3 id="break-glass">Emergency access (break glass)</h3>
      <p class="hint">
        Only in an emergency: you get access to this patient's records for a limited time. Every use is audited, the
        auditors are alerted and the patient sees it.
      </p>
      {expired ? <p role="status">Your emergency access has ended.</p> : null}
      <Field id="eg-reason" label="Reason (no clinical detail)" value={reason} onInput={setReason} required maxLength={500} />
      <div class="field">
        <label for="eg-minutes">For how long</label>
        <select id="eg-minutes" value={minutes} onChange={(e) => setMinutes((e.currentTarget as HTMLSelectElement).value)}>
          <option value="15">15 minutes</option>
          <option value="30">30 minutes</option>
          <option value="60">1 hour</option>
        </select>
      </div>
      <ErrorPanel error={op.error} />
      <Button type="submit" variant="secondary" busy={op.busy} busyLabel="Requesting…">
        Request emergency access
      </Button>
    </form>
  );
}

/** A patient's own records, each decrypted here. */
function MyRecords(): JSX.Element {
  const client = useClient();
  const load = useOperation("session");
  const [records, setRecords] = useState<OpenedRecord[] | null>(null);
  const [progress, setProgress] = useState("");
  const [failures, setFailures] = useState<{ record: RecordSummary; message: string }[]>([]);

  const refresh = () =>
    void load.run(async () => {
      setProgress("Fetching your records…");
      const list = await client.records.list();
      const opened: OpenedRecord[] = [];
      const failed: { record: RecordSummary; message: string }[] = [];
      for (const [i, record] of list.entries()) {
        setProgress(`Decrypting record ${i + 1} of ${list.length} on this device…`);
        try {
          opened.push(await client.records.open(record.recordId));
        } catch (error) {
          failed.push({ record, message: error instanceof Error ? error.message : String(error) });
        }
      }
      setRecords(opened);
      setFailures(failed);
      setProgress("");
    });
  useEffect(refresh, []);

  return (
    <>
      {load.busy ? (
        <p role="status" class="progress">
          <span class="spinner" aria-hidden="true" /> {progress}
        </p>
      ) : null}
      <ErrorPanel error={load.error} />
      {records !== null && records.length === 0 && failures.length === 0 ? <p>You have no records yet.</p> : null}
      {records !== null ? (
        <ul class="item-list" data-testid="my-records">
          {records.map((r) => (
            <li class="list-item" key={r.recordId} data-testid="record">
              <h2>{r.file ? `File: ${r.file.fileName}` : r.kind}</h2>
              <Meta record={r} />
              <OpenedContent record={r} />
            </li>
          ))}
          {failures.map((f) => (
            <li class="list-item" key={f.record.recordId}>
              <h2>{f.record.kind}</h2>
              <Meta record={f.record} />
              <p class="unverified" role="alert">
                Not shown: {f.message}
              </p>
            </li>
          ))}
        </ul>
      ) : null}
      {records !== null ? (
        <Button type="button" variant="secondary" onClick={refresh}>
          Reload my records
        </Button>
      ) : null}
      <AccessReport />
    </>
  );
}

function History(props: { recordId: string }): JSX.Element {
  const client = useClient();
  const load = useOperation("session");
  const [versions, setVersions] = useState<VersionEntry[] | null>(null);
  useEffect(
    () =>
      void load.run(async () => {
        setVersions(await client.records.history(props.recordId));
      }),
    [props.recordId],
  );
  return (
    <div data-testid="history">
      <h3>Version history</h3>
      {load.busy ? (
        <p role="status" class="progress">
          <span class="spinner" aria-hidden="true" /> Checking every version's signature…
        </p>
      ) : null}
      <ErrorPanel error={load.error} />
      {versions ? (
        <ol class="item-list">
          {versions.map((v) => (
            <li class="list-item" key={v.version}>
              <Meta record={v} />
              <p class={v.verification === "verified" ? "verified" : "unverified"} data-testid="verification">
                {v.verification === "verified" ? "Signature and hash chain verified" : `Not verified: ${v.verification}`}
              </p>
            </li>
          ))}
        </ol>
      ) : null}
    </div>
  );
}

/** One record in a doctor's list: open, history, entered-in-error, new version. */
function PatientRecord(props: { record: RecordSummary; canWrite: boolean; onChanged: () => void }): JSX.Element {
  const client = useClient();
  const op = useOperation("session");
  const [opened, setOpened] = useState<OpenedRecord | null>(null);
  const [panel, setPanel] = useState<"none" | "history" | "error" | "edit" | "attach">("none");
  const [reason, setReason] = useState("WRONG_PATIENT");
  const r = props.record;
  const id = r.recordId;

  const open = () =>
    void op.run(async () => {
      setOpened(await client.records.open(id));
    });
  const mark = (event: Event) => {
    event.preventDefault();
    void op.run(async () => {
      await client.records.markEnteredInError(id, 0, reason);
      setPanel("none");
      props.onChanged();
    });
  };

  return (
    <li class="list-item" data-testid="record">
      <h3>{r.kind}</h3>
      <Meta record={r} />
      <div class="record-actions">
        <Button type="button" variant="secondary" busy={op.busy} busyLabel="Decrypting…" onClick={open}>
          Open
        </Button>
        <Button type="button" variant="secondary" onClick={() => setPanel(panel === "history" ? "none" : "history")}>
          History
        </Button>
        {props.canWrite && opened ? (
          <Button type="button" variant="secondary" onClick={() => setPanel(panel === "attach" ? "none" : "attach")}>
            Attach a file
          </Button>
        ) : null}
        {props.canWrite ? (
          <>
            {r.kind !== DOCUMENT_REFERENCE ? (
              <Button type="button" variant="secondary" onClick={() => setPanel(panel === "edit" ? "none" : "edit")}>
                New version
              </Button>
            ) : null}
            <Button type="button" variant="secondary" onClick={() => setPanel(panel === "error" ? "none" : "error")}>
              Entered in error
            </Button>
          </>
        ) : null}
      </div>
      <ErrorPanel error={op.error} />
      {opened ? <OpenedContent record={opened} /> : null}
      {panel === "attach" ? (
        <AttachFile
          record={r}
          onAttached={() => {
            setPanel("none");
            props.onChanged();
          }}
        />
      ) : null}
      {panel === "history" ? <History recordId={id} /> : null}
      {panel === "error" ? (
        <form onSubmit={mark}>
          <div class="field">
            <label for={`eie-${id}`}>Why is it in error?</label>
            <select id={`eie-${id}`} value={reason} onChange={(e) => setReason((e.currentTarget as HTMLSelectElement).value)}>
              {/* Reasons are codes, never health data (records-svc refuses free text). */}
              <option value="WRONG_PATIENT">Wrong patient</option>
              <option value="DUPLICATE">Duplicate</option>
              <option value="WRONG_CONTENT">Wrong content</option>
              <option value="ENTERED_BY_MISTAKE">Entered by mistake</option>
            </select>
          </div>
          <Button type="submit" busy={op.busy} busyLabel="Marking…">
            Mark entered in error
          </Button>
        </form>
      ) : null}
      {panel === "edit" ? (
        <RecordForm
          patientId={r.patientId}
          kind={r.kind}
          initial={opened?.content}
          submitLabel="Save new version"
          onSave={async (input) => {
            await client.records.edit(id, input.content, input.policy.trim() === "" ? undefined : input.policy);
            setPanel("none");
            setOpened(null);
            props.onChanged();
          }}
        />
      ) : null}
    </li>
  );
}

/** Doctors and nurses: open one record by its id (records-svc says why when its policy does not admit them). */
function RecordById(): JSX.Element {
  const client = useClient();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ErrorView | null>(null);
  const [recordId, setRecordId] = useState("");
  const [opened, setOpened] = useState<OpenedRecord | null>(null);
  const submit = (event: Event) => {
    event.preventDefault();
    setOpened(null);
    setError(null);
    setBusy(true);
    client.records
      .open(recordId.trim())
      .then(setOpened, (failure: unknown) => setError(describeRecordError(failure)))
      .finally(() => setBusy(false));
  };
  return (
    <section aria-labelledby="record-by-id">
      <h2 id="record-by-id">Open a record by its id</h2>
      <form onSubmit={submit}>
        <Field id="record-id" label="Record id (e.g. from a referral)" value={recordId} onInput={setRecordId} required autoComplete="off" />
        <Button type="submit" variant="secondary" busy={busy} busyLabel="Decrypting…">
          Open record
        </Button>
      </form>
      <ErrorPanel error={error} />
      {opened ? (
        <div class="list-item" data-testid="record-by-id">
          <h3>{opened.file ? `File: ${opened.file.fileName}` : opened.kind}</h3>
          <Meta record={opened} />
          <OpenedContent record={opened} />
        </div>
      ) : null}
    </section>
  );
}

/** Doctors and nurses: find a patient, list and write their records. */
function PatientRecords(props: { canWrite: boolean }): JSX.Element {
  const client = useClient();
  const find = useOperation("session");
  const [query, setQuery] = useState("");
  const [patient, setPatient] = useState<PatientRef | null>(null);
  const [records, setRecords] = useState<RecordSummary[] | null>(null);
  const [writing, setWriting] = useState(false);
  const [saved, setSaved] = useState("");

  const load = (who: PatientRef) =>
    void find.run(async () => {
      setRecords(await client.records.list(who.userId));
    });
  const submit = (event: Event) => {
    event.preventDefault();
    void find.run(async () => {
      const who = await client.records.findPatient(query);
      setPatient(who);
      setSaved("");
      setRecords(await client.records.list(who.userId));
    });
  };

  return (
    <>
      <form onSubmit={submit}>
        <Field id="patient" label="Patient (username or user id)" value={query} onInput={setQuery} required autoComplete="off" />
        <Button type="submit" busy={find.busy} busyLabel="Looking up…">
          Show records
        </Button>
      </form>
      <ErrorPanel error={find.error} />
      {patient && records ? (
        <section aria-labelledby="patient-records">
          <h2 id="patient-records">
            Records of {patient.displayName || patient.username}
          </h2>
          {saved ? (
            <p role="status" class="verified">
              {saved}
            </p>
          ) : null}
          {records.length === 0 ? <p>No records yet.</p> : null}
          <ul class="item-list" data-testid="patient-records">
            {records.map((r) => (
              <PatientRecord
                key={`${r.recordId}-${r.version}-${r.enteredInError ? 1 : 0}`}
                record={r}
                canWrite={props.canWrite}
                onChanged={() => {
                  setSaved("");
                  load(patient);
                }}
              />
            ))}
          </ul>
          {props.canWrite ? <EmergencyAccess patient={patient} onGranted={() => load(patient)} /> : null}
          {props.canWrite && !writing ? (
            <Button type="button" onClick={() => setWriting(true)}>
              Write a record
            </Button>
          ) : null}
          {props.canWrite && writing ? (
            <RecordForm
              patientId={patient.userId}
              submitLabel="Encrypt and save"
              onSave={async (input) => {
                const created = await client.records.create({ patientId: patient.userId, ...input });
                setWriting(false);
                setSaved(`Saved ${created.kind}, version ${created.version}.`);
                load(patient);
              }}
            />
          ) : null}
        </section>
      ) : null}
    </>
  );
}

export function RecordsScreen(): JSX.Element {
  const client = useClient();
  const role = client.session.info?.role ?? "unknown";
  return (
    <section class="card">
      <ScreenTitle>{role === "patient" ? "My records" : "Patient records"}</ScreenTitle>
      <p class="hint">
        Records are encrypted on the writer's device and decrypted only on yours; the server stores ciphertext.
      </p>
      {role === "patient" ? <MyRecords /> : null}
      {role === "doctor" || role === "nurse" ? (
        <>
          <PatientRecords canWrite={role === "doctor" || role === "nurse"} />
          <RecordById />
        </>
      ) : null}
      {role !== "patient" && role !== "doctor" && role !== "nurse" ? (
        <p>Your role does not read health records.</p>
      ) : null}
      <p>
        <a href={href("home")}>Back to home</a>
      </p>
    </section>
  );
}
