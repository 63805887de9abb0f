// Files kept with records (docs/protocol.md §13.4): the form a doctor or nurse attaches a file
// with (a file input and the upload's progress), and a DocumentReference record's file (name,
// size, an image preview for image/*, a download). The preview and the save link are object URLs
// of the Blob the client hands out only once every chunk and the digest check out; they are
// revoked when the record leaves the screen. records-svc's refusals show with what to do.

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import { describeAttachmentError, type ErrorView, type OpenedRecord, type RecordSummary } from "../../client";
import { Button, ErrorPanel } from "../../app/components";
import { useClient } from "../../app/context";
import { formatSize } from "../messaging/Attachments";

/** Images up to this size are fetched and shown as soon as the record is on screen. */
const PREVIEW_MAX_LEN = 20 * 1024 * 1024;

type Moved = { done: number; total: number };

/** A transfer's state: its progress while it runs, then its error (with the attachment advice). */
function useTransfer(): {
  moved: Moved | null;
  failure: ErrorView | null;
  busy: boolean;
  start: (work: (onProgress: (done: number, total: number) => void) => Promise<void>) => void;
} {
  const [moved, setMoved] = useState<Moved | null>(null);
  const [failure, setFailure] = useState<ErrorView | null>(null);
  const [busy, setBusy] = useState(false);
  const start = (work: (onProgress: (done: number, total: number) => void) => Promise<void>) => {
    setFailure(null);
    setBusy(true);
    work((done, total) => setMoved({ done, total }))
      .catch((error: unknown) => setFailure(describeAttachmentError(error, "session", "record")))
      .finally(() => {
        setBusy(false);
        setMoved(null);
      });
  };
  return { moved, failure, busy, start };
}

function Moving(props: { id: string; what: string; moved: Moved | null }): JSX.Element | null {
  const moved = props.moved;
  if (moved === null) return null;
  const share = moved.total === 0 ? 100 : Math.floor((moved.done * 100) / moved.total);
  return (
    <div class="record-file-progress" role="status">
      <label for={props.id}>
        {props.what} {share}% ({formatSize(moved.done)} of {formatSize(moved.total)})
      </label>
      <progress id={props.id} max={100} value={share} />
    </div>
  );
}

/** Doctors and nurses: attach a file to the record `record` (a new DocumentReference record). */
export function AttachFile(props: { record: RecordSummary; onAttached: (created: RecordSummary) => void }): JSX.Element {
  const client = useClient();
  const transfer = useTransfer();
  const [chosen, setChosen] = useState<File | null>(null);
  const inputId = `attach-${props.record.recordId}`;
  const submit = (event: Event) => {
    event.preventDefault();
    const file = chosen;
    if (file === null) return;
    transfer.start(async (onProgress) => {
      const created = await client.records.attachFile(props.record.recordId, file, onProgress);
      setChosen(null);
      props.onAttached(created);
    });
  };
  return (
    <form class="record-file-form" onSubmit={submit} aria-labelledby={`${inputId}-title`}>
      <h4 id={`${inputId}-title`}>Attach a file</h4>
      <p class="hint">
        Encrypted in this browser and kept as a new record under the same policy: <code>{props.record.policy}</code>.
        Up to 100 MB.
      </p>
      <div class="field">
        <label for={inputId}>File to attach (photo, PDF, scan)</label>
        <input
          id={inputId}
          type="file"
          required
          onChange={(event) => setChosen((event.currentTarget as HTMLInputElement).files?.[0] ?? null)}
        />
        {chosen ? (
          <p class="hint" data-testid="chosen-record-file">
            {chosen.name} · {formatSize(chosen.size)}
          </p>
        ) : null}
      </div>
      <Moving id={`${inputId}-progress`} what="Encrypting and uploading:" moved={transfer.moved} />
      <Button type="submit" busy={transfer.busy} busyLabel="Attaching the file…">
        Encrypt and attach
      </Button>
      <ErrorPanel error={transfer.failure} />
    </form>
  );
}

/** A DocumentReference record's file: name, size, an image preview, a download. */
export function RecordFileBlock(props: { record: OpenedRecord }): JSX.Element | null {
  const client = useClient();
  const transfer = useTransfer();
  const [url, setUrl] = useState<string | null>(null);
  const { record } = props;
  const file = record.file;
  const isImage = file !== null && file.mediaType.startsWith("image/");

  const fetchFile = () =>
    transfer.start(async (onProgress) => {
      const opened = await client.records.openAttachment(record, onProgress);
      setUrl(URL.createObjectURL(opened.blob));
    });
  useEffect(() => {
    if (isImage && file.fileLen <= PREVIEW_MAX_LEN) fetchFile();
  }, [record.recordId, record.version]);
  useEffect(() => (url ? () => URL.revokeObjectURL(url) : undefined), [url]);

  if (file === null) return null;
  const size = formatSize(file.fileLen);
  return (
    <div class="record-file" data-testid="record-file">
      <p class="record-file-name">
        <span data-testid="record-file-name">{file.fileName}</span>{" "}
        <span class="hint">
          · {size}
          {file.mediaType ? ` · ${file.mediaType}` : ""}
          {file.related ? ` · attached to ${file.related.split("/")[0]}` : ""}
        </span>
      </p>
      {url && isImage ? (
        <img class="record-file-preview" src={url} alt={`Attached image: ${file.fileName}`} data-testid="record-file-preview" />
      ) : null}
      <Moving id={`file-${record.recordId}`} what="Downloading and checking:" moved={transfer.moved} />
      {url ? (
        <a class="button secondary" href={url} download={file.fileName} data-testid="record-file-save">
          Save {file.fileName}
        </a>
      ) : (
        <Button type="button" variant="secondary" busy={transfer.busy} busyLabel="Downloading…" onClick={fetchFile}>
          Download {file.fileName} ({size})
        </Button>
      )}
      <ErrorPanel error={transfer.failure} />
    </div>
  );
}
