// Files in a conversation: the form that sends one (a file input and a caption, with upload
// progress), and a message's file (name, size, an image preview for image/*, a download). The
// preview and the download are object URLs of the Blob the client layer hands out only once
// every chunk and the digest check out; they are revoked when the message leaves the screen.

import type { JSX } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";

import { describeAttachmentError, type AttachmentView, type ErrorView, type Messenger, type MessageView } from "../../client";
import { Button, ErrorPanel } from "../../app/components";

/** Images up to this size are fetched and shown as soon as the message is on screen. */
const PREVIEW_MAX_LEN = 20 * 1024 * 1024;

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function percent(progress: { done: number; total: number }): number {
  return progress.total === 0 ? 100 : Math.floor((100 * progress.done) / progress.total);
}

/** Runs a file operation, keeping its busy flag, progress and error (with the attachment advice). */
function useFileOperation(): {
  busy: boolean;
  progress: { done: number; total: number } | null;
  error: ErrorView | null;
  run: (action: (onProgress: (done: number, total: number) => void) => Promise<void>) => Promise<void>;
} {
  const [busy, setBusy] = useState(false);
  const [progress, setProgress] = useState<{ done: number; total: number } | null>(null);
  const [error, setError] = useState<ErrorView | null>(null);
  const run = useCallback(async (action: (onProgress: (done: number, total: number) => void) => Promise<void>) => {
    setBusy(true);
    setError(null);
    setProgress(null);
    try {
      await action((done, total) => setProgress({ done, total }));
    } catch (failure) {
      setError(describeAttachmentError(failure));
    } finally {
      setBusy(false);
      setProgress(null);
    }
  }, []);
  return { busy, progress, error, run };
}

function ProgressBar(props: { id: string; label: string; progress: { done: number; total: number } | null }): JSX.Element | null {
  if (!props.progress) return null;
  const value = percent(props.progress);
  return (
    <div class="file-progress" role="status">
      <label for={props.id}>
        {props.label} {value}% ({formatSize(props.progress.done)} of {formatSize(props.progress.total)})
      </label>
      <progress id={props.id} max={100} value={value} />
    </div>
  );
}

/** The form that sends a file with a caption to the open conversation's contact. */
export function FileComposer(props: {
  messenger: Messenger;
  peerUserId: string;
  lifespanSeconds: number;
  onSent: (message: MessageView) => void;
}): JSX.Element {
  const [file, setFile] = useState<File | null>(null);
  const [caption, setCaption] = useState("");
  const [inputKey, setInputKey] = useState(0);
  const upload = useFileOperation();
  const send = () =>
    void upload.run(async (onProgress) => {
      if (!file) return;
      const sent = await props.messenger.sendFile(props.peerUserId, file, caption, {
        lifespanSeconds: props.lifespanSeconds > 0 ? props.lifespanSeconds : undefined,
        onProgress,
      });
      setFile(null);
      setCaption("");
      setInputKey((k) => k + 1);
      props.onSent(sent);
    });
  return (
    <form
      class="file-composer"
      aria-labelledby="file-composer-title"
      onSubmit={(event) => {
        event.preventDefault();
        send();
      }}
    >
      <h3 id="file-composer-title">Send a file</h3>
      <p class="hint">Encrypted in this browser before it leaves; the server stores only ciphertext. Up to 100 MB.</p>
      <div class="field">
        <label for="attach-file">File (photo, PDF, scan)</label>
        <input
          key={inputKey}
          id="attach-file"
          name="attach-file"
          type="file"
          required
          onChange={(event) => setFile((event.currentTarget as HTMLInputElement).files?.[0] ?? null)}
        />
        {file ? (
          <p class="hint" data-testid="chosen-file">
            {file.name} · {formatSize(file.size)}
          </p>
        ) : null}
      </div>
      <div class="field">
        <label for="attach-caption">Caption (optional)</label>
        <input
          id="attach-caption"
          name="attach-caption"
          type="text"
          value={caption}
          maxLength={2000}
          autoComplete="off"
          onInput={(event) => setCaption((event.currentTarget as HTMLInputElement).value)}
        />
      </div>
      <ProgressBar id="upload-progress" label="Encrypting and uploading:" progress={upload.progress} />
      <Button type="submit" variant="secondary" busy={upload.busy} busyLabel="Sending the file…">
        Send file
      </Button>
      <ErrorPanel error={upload.error} />
    </form>
  );
}

/** A message's file: its name and size, a preview for images, and a download. */
export function AttachmentBlock(props: { messenger: Messenger; messageId: string; attachment: AttachmentView }): JSX.Element {
  const { messenger, messageId, attachment } = props;
  const [url, setUrl] = useState<string | null>(null);
  const download = useFileOperation();
  const isImage = attachment.mediaType.startsWith("image/");

  const fetchFile = () =>
    download.run(async (onProgress) => {
      const blob = await messenger.downloadAttachment(messageId, onProgress);
      setUrl(URL.createObjectURL(blob));
    });

  useEffect(() => {
    if (isImage && attachment.fileLen <= PREVIEW_MAX_LEN) void fetchFile();
  }, [messageId]);
  // The object URL is let go when it is replaced or the message leaves the screen.
  useEffect(() => (url ? () => URL.revokeObjectURL(url) : undefined), [url]);

  const size = formatSize(attachment.fileLen);
  return (
    <div class="attachment" data-testid="attachment">
      <p class="attachment-name">
        <span data-testid="attachment-name">{attachment.fileName}</span> <span class="hint">· {size}</span>
      </p>
      {url && isImage ? (
        <img class="attachment-preview" src={url} alt={`Image sent: ${attachment.fileName}`} data-testid="attachment-preview" />
      ) : null}
      <ProgressBar id={`download-${messageId}`} label="Downloading and checking:" progress={download.progress} />
      {url ? (
        <a class="button secondary" href={url} download={attachment.fileName} data-testid="attachment-save">
          Save {attachment.fileName}
        </a>
      ) : (
        <Button type="button" variant="secondary" busy={download.busy} busyLabel="Downloading…" onClick={() => void fetchFile()}>
          Download {attachment.fileName} ({size})
        </Button>
      )}
      <ErrorPanel error={download.error} />
    </div>
  );
}
