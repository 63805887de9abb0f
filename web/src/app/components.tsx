// Small shared pieces of UI: labelled fields, buttons with a busy state, the error panel, and a
// hook that runs an operation and turns its failure into what the error panel shows.

import type { ComponentChildren, JSX } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

import { describeError, type ErrorView, type Operation } from "../client";

export function Field(props: {
  id: string;
  label: string;
  value: string;
  onInput: (value: string) => void;
  type?: "text" | "password";
  autoComplete?: string;
  hint?: string;
  inputMode?: "numeric" | "text";
  required?: boolean;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  autoFocus?: boolean;
}): JSX.Element {
  const hintId = props.hint ? `${props.id}-hint` : undefined;
  const ref = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (props.autoFocus) ref.current?.focus();
  }, [props.autoFocus]);
  const common = {
    ref,
    id: props.id,
    name: props.id,
    value: props.value,
    onInput: (event: Event) => props.onInput((event.currentTarget as HTMLInputElement).value),
    autocomplete: props.autoComplete,
    "aria-describedby": hintId,
    inputMode: props.inputMode,
    required: props.required,
    minLength: props.minLength,
    maxLength: props.maxLength,
    pattern: props.pattern,
    spellcheck: false,
    autocapitalize: "off" as const,
  };
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      {props.type === "password" ? <input type="password" {...common} /> : <input type="text" {...common} />}
      {props.hint ? (
        <p class="hint" id={hintId}>
          {props.hint}
        </p>
      ) : null}
    </div>
  );
}

/** A field for the authenticator app's 6-digit code (the browser's one-time-code autofill). */
export function TotpField(props: { id: string; label: string; value: string; onInput: (value: string) => void; hint?: string; autoFocus?: boolean }): JSX.Element {
  return <Field {...props} autoComplete="one-time-code" inputMode="numeric" pattern="[0-9]*" maxLength={6} required />;
}

export function Button(props: {
  busy?: boolean;
  busyLabel?: string;
  type?: "submit" | "button";
  variant?: "primary" | "secondary";
  onClick?: () => void;
  children: ComponentChildren;
}): JSX.Element {
  return (
    <button
      type={props.type ?? "submit"}
      class={`button ${props.variant ?? "primary"}${props.busy ? " busy" : ""}`}
      disabled={props.busy}
      aria-busy={props.busy ? "true" : "false"}
      onClick={props.onClick}
    >
      {props.busy ? (
        <>
          <span class="spinner" aria-hidden="true" />
          {props.busyLabel ?? "Working…"}
        </>
      ) : (
        props.children
      )}
    </button>
  );
}

export function ErrorPanel(props: { error: ErrorView | null }): JSX.Element | null {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (props.error) ref.current?.focus();
  }, [props.error]);
  if (!props.error) return null;
  return (
    <div class="error" role="alert" tabIndex={-1} ref={ref} data-code={props.error.code}>
      <p class="error-message">
        <strong>Error:</strong> <span data-testid="server-message">{props.error.message}</span>
      </p>
      <p class="error-advice">{props.error.advice}</p>
    </div>
  );
}

/** Runs `action`, keeping a busy flag and the error of its last failure. */
export function useOperation(operation: Operation): {
  busy: boolean;
  error: ErrorView | null;
  run: (action: () => Promise<void>) => Promise<void>;
  clear: () => void;
} {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ErrorView | null>(null);
  const run = useCallback(
    async (action: () => Promise<void>) => {
      setBusy(true);
      setError(null);
      try {
        await action();
      } catch (failure) {
        setError(describeError(failure, operation));
      } finally {
        setBusy(false);
      }
    },
    [operation],
  );
  return { busy, error, run, clear: () => setError(null) };
}

/** Single-use recovery codes, shown once (MFA enrolment, new codes, a first passkey). */
export function CodeList(props: { label: string; codes: readonly string[] }): JSX.Element {
  return (
    <ol class="codes" aria-label={props.label}>
      {props.codes.map((code) => (
        <li key={code}>
          <code>{code}</code>
        </li>
      ))}
    </ol>
  );
}

/** A screen's heading, focused when the screen opens (screen readers announce the new screen). */
export function ScreenTitle(props: { children: ComponentChildren }): JSX.Element {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    ref.current?.focus();
  }, []);
  return (
    <h1 tabIndex={-1} ref={ref}>
      {props.children}
    </h1>
  );
}
