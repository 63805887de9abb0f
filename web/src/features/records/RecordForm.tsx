// The record form: a few fields per common FHIR kind (Observation, Condition, MedicationStatement,
// AllergyIntolerance) that build the FHIR JSON, or the raw JSON editor; and who else may read it
// (the patient and emergency access always can). Checks the JSON before encrypting.

import type { JSX } from "preact";
import { useState } from "preact/hooks";

import { fhirProblem, RECORD_KINDS } from "../../client";
import { Button, ErrorPanel, Field, useOperation } from "../../app/components";

export interface RecordInput {
  readonly kind: string;
  readonly policy: string;
  readonly content: string;
}

interface Fields {
  text: string;
  value: string;
  unit: string;
  status: string;
}

function build(kind: string, f: Fields, patientId: string): string {
  const subject = { reference: `Patient/${patientId}` };
  switch (kind) {
    case "Observation": {
      const value = Number(f.value);
      return JSON.stringify({
        resourceType: "Observation",
        status: "final",
        code: { text: f.text },
        subject,
        ...(f.value.trim() !== "" && Number.isFinite(value)
          ? { valueQuantity: { value, unit: f.unit } }
          : f.value.trim() !== ""
            ? { valueString: f.value }
            : {}),
      });
    }
    case "Condition":
      return JSON.stringify({
        resourceType: "Condition",
        clinicalStatus: {
          coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-clinical", code: f.status || "active" }],
        },
        code: { text: f.text },
        subject,
      });
    case "MedicationStatement":
      return JSON.stringify({
        resourceType: "MedicationStatement",
        status: f.status || "active",
        medicationCodeableConcept: { text: f.text },
        subject,
        ...(f.value.trim() !== "" ? { dosage: [{ text: f.value }] } : {}),
      });
    case "AllergyIntolerance":
      return JSON.stringify({
        resourceType: "AllergyIntolerance",
        code: { text: f.text },
        criticality: f.status || "low",
        patient: subject,
      });
    default:
      return JSON.stringify({ resourceType: kind });
  }
}

const STATUS: Record<string, { label: string; options: string[] } | undefined> = {
  Condition: { label: "Clinical status", options: ["active", "recurrence", "remission", "resolved"] },
  MedicationStatement: { label: "Status", options: ["active", "completed", "stopped", "on-hold"] },
  AllergyIntolerance: { label: "Criticality", options: ["low", "high", "unable-to-assess"] },
};

const TEXT_LABEL: Record<string, string> = {
  Observation: "What was observed (e.g. Heart rate)",
  Condition: "Condition (e.g. Atrial fibrillation)",
  MedicationStatement: "Medication (e.g. Apixaban 5 mg)",
  AllergyIntolerance: "Substance (e.g. Penicillin)",
};

export function RecordForm(props: {
  patientId: string;
  kind?: string;
  initial?: string;
  submitLabel: string;
  onSave: (input: RecordInput) => Promise<void>;
}): JSX.Element {
  const save = useOperation("session");
  const [kind, setKind] = useState(props.kind ?? "Observation");
  const [fields, setFields] = useState<Fields>({ text: "", value: "", unit: "", status: "" });
  const [raw, setRaw] = useState(props.initial !== undefined);
  const [json, setJson] = useState(props.initial ?? "");
  const [policy, setPolicy] = useState(props.kind ? "" : '"role:doctor"');
  const [problem, setProblem] = useState<string | null>(null);
  const fixedKind = props.kind !== undefined;
  const set = (key: keyof Fields) => (value: string) => setFields({ ...fields, [key]: value });
  const status = STATUS[kind];

  const toggleRaw = (event: Event) => {
    const on = (event.currentTarget as HTMLInputElement).checked;
    if (on && json.trim() === "") setJson(JSON.stringify(JSON.parse(build(kind, fields, props.patientId)), null, 2));
    setRaw(on);
  };

  const submit = (event: Event) => {
    event.preventDefault();
    const content = raw ? json : build(kind, fields, props.patientId);
    const issue = fhirProblem(kind, content);
    setProblem(issue);
    if (issue !== null) return;
    void save.run(() => props.onSave({ kind, policy, content }));
  };

  const idp = fixedKind ? "edit" : "new";
  return (
    <form class="records-form" onSubmit={submit} aria-label={props.submitLabel}>
      <div class="field">
        <label for={`${idp}-kind`}>Kind</label>
        <select id={`${idp}-kind`} value={kind} disabled={fixedKind} onChange={(e) => setKind((e.currentTarget as HTMLSelectElement).value)}>
          {RECORD_KINDS.map((k) => (
            <option key={k} value={k}>
              {k}
            </option>
          ))}
        </select>
      </div>
      <label class="checkbox">
        <input type="checkbox" checked={raw} onChange={toggleRaw} /> Edit as raw FHIR JSON
      </label>
      {raw ? (
        <div class="field">
          <label for={`${idp}-json`}>FHIR JSON</label>
          <textarea
            id={`${idp}-json`}
            value={json}
            spellcheck={false}
            onInput={(e) => setJson((e.currentTarget as HTMLTextAreaElement).value)}
          />
        </div>
      ) : (
        <>
          <Field id={`${idp}-text`} label={TEXT_LABEL[kind] ?? "Description"} value={fields.text} onInput={set("text")} required />
          {kind === "Observation" ? (
            <>
              <Field id={`${idp}-value`} label="Value" value={fields.value} onInput={set("value")} />
              <Field id={`${idp}-unit`} label="Unit" value={fields.unit} onInput={set("unit")} />
            </>
          ) : null}
          {kind === "MedicationStatement" ? (
            <Field id={`${idp}-dosage`} label="Dosage" value={fields.value} onInput={set("value")} />
          ) : null}
          {status ? (
            <div class="field">
              <label for={`${idp}-status`}>{status.label}</label>
              <select id={`${idp}-status`} value={fields.status || status.options[0]} onChange={(e) => set("status")((e.currentTarget as HTMLSelectElement).value)}>
                {status.options.map((o) => (
                  <option key={o} value={o}>
                    {o}
                  </option>
                ))}
              </select>
            </div>
          ) : null}
        </>
      )}
      <Field
        id={`${idp}-policy`}
        label="Who else may read it"
        value={policy}
        onInput={setPolicy}
        hint={
          fixedKind
            ? "Leave empty to keep the current policy. The patient and emergency access can always read it."
            : 'A policy such as "role:doctor" and "dept:cardiology". The patient and emergency access can always read it.'
        }
      />
      {problem ? (
        <p class="unverified" role="alert">
          {problem}
        </p>
      ) : null}
      <ErrorPanel error={save.error} />
      <Button type="submit" busy={save.busy} busyLabel="Encrypting…">
        {props.submitLabel}
      </Button>
    </form>
  );
}
