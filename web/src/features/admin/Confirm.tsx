// A destructive action asks first: the button opens a short question with the consequences, and
// only "Yes, …" does it (Escape or "Cancel" backs out). Used by the admin and account screens.

import type { ComponentChildren, JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

import { Button } from "../../app/components";

export function Confirm(props: {
  /** The button's text, e.g. "Disable the account". */
  label: string;
  /** What will happen, in plain words. */
  question: ComponentChildren;
  /** The confirming button's text, e.g. "Yes, disable". */
  confirmLabel: string;
  busy: boolean;
  onConfirm: () => void;
  children?: ComponentChildren;
}): JSX.Element {
  const [asking, setAsking] = useState(false);
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (asking) ref.current?.focus();
  }, [asking]);
  useEffect(() => {
    if (!props.busy) setAsking(false);
  }, [props.busy]);
  if (!asking) {
    return (
      <Button type="button" variant="secondary" onClick={() => setAsking(true)}>
        {props.label}
      </Button>
    );
  }
  return (
    <div
      class="confirm"
      role="group"
      aria-label={props.label}
      tabIndex={-1}
      ref={ref}
      onKeyDown={(event) => {
        if (event.key === "Escape") setAsking(false);
      }}
    >
      <p>{props.question}</p>
      {props.children}
      <div class="actions">
        <Button type="button" busy={props.busy} busyLabel="Working…" onClick={props.onConfirm}>
          {props.confirmLabel}
        </Button>
        <Button type="button" variant="secondary" onClick={() => setAsking(false)}>
          Cancel
        </Button>
      </div>
    </div>
  );
}
