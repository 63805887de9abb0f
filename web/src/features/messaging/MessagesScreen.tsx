// Conversations (`#/messages`): sets this browser up as a device of the user (first sign-in) or
// says how to link it, then lists conversations, opens one by username, sends, shows messages as
// they arrive over the server stream with their receipts, the safety number, and warnings when a
// contact's identity or device list changes; files with a caption (./Attachments.tsx).

import type { JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

import {
  openMessenger,
  startLink,
  type ContactView,
  type ConversationView,
  type MessageView,
  type Messenger,
  type MessengerStart,
  type PendingLinkView,
} from "../../client";
import { Button, ErrorPanel, Field, ScreenTitle, useOperation } from "../../app/components";
import { useClient } from "../../app/context";
import { href } from "../../app/router";
import { QrCode } from "../auth/QrCode";
import { AttachmentBlock, FileComposer } from "./Attachments";
import { GroupMessages } from "./GroupMessages";
import "./messages.css";

const RECEIPT_REFRESH_MS = 5000;

export function MessagesScreen(): JSX.Element {
  const client = useClient();
  const [start, setStart] = useState<MessengerStart | null>(null);
  const setup = useOperation("session");

  const begin = (startOver = false) =>
    void setup.run(async () => {
      setStart(await openMessenger(client, { startOver }));
    });
  useEffect(() => {
    begin();
  }, []);

  if (start?.kind === "ready") return <Conversations messenger={start.messenger} />;
  return (
    <section class="card">
      <ScreenTitle>{start?.kind === "needsLink" ? "Link this browser from your other device" : "Messages"}</ScreenTitle>
      {setup.busy ? (
        <p role="status" class="progress">
          <span class="spinner" aria-hidden="true" /> Setting up this browser as one of your devices…
        </p>
      ) : null}
      <ErrorPanel error={setup.error} />
      {setup.error ? (
        <Button type="button" variant="secondary" onClick={() => begin()}>
          Try again
        </Button>
      ) : null}
      {start?.kind === "needsAal2" ? (
        <div class="notice">
          <p>Messages are end-to-end encrypted health data: they need two-step sign-in (assurance level AAL2).</p>
          <a class="button primary" href={href("mfa")}>
            Set up two-step sign-in
          </a>
        </div>
      ) : null}
      {start?.kind === "otherTab" ? (
        <div class="notice" data-testid="other-tab">
          <p>
            Your messages are open in another tab or window of this browser. Use that one, or close it and try
            again here (two copies of this browser's keys must never send at the same time).
          </p>
          <Button type="button" variant="secondary" onClick={() => begin()}>
            Try again
          </Button>
        </div>
      ) : null}
      {start?.kind === "needsLink" ? (
        <NeedsLink reason={start.reason} busy={setup.busy} onStartOver={() => begin(true)} onLinked={setStart} />
      ) : null}
    </section>
  );
}

function NeedsLink(props: {
  reason: "elsewhere" | "removed" | "replaced";
  busy: boolean;
  onStartOver: () => void;
  onLinked: (start: MessengerStart) => void;
}): JSX.Element {
  const client = useClient();
  const [confirm, setConfirm] = useState(false);
  const [link, setLink] = useState<PendingLinkView | null>(null);
  const linking = useOperation("session");
  useEffect(() => () => link?.cancel(), [link]);
  const why =
    props.reason === "removed"
      ? "This browser was removed from your account's devices."
      : props.reason === "replaced"
        ? "Your account's identity key was replaced on another device since this browser last ran."
        : "Your account already has an end-to-end identity, made on another device (for example with carectl).";
  const beginLink = () =>
    void linking.run(async () => {
      const pending = await startLink(client);
      setLink(pending);
      props.onLinked(await pending.wait());
    });
  return (
    <div data-testid="needs-link">
      <p>{why}</p>
      <p>
        To read and send messages here, link this browser from a device that already has your keys: this browser shows
        a code, and you type it on the other device (in this app: Messages, then Your devices; with carectl:{" "}
        <code>carectl device approve CODE</code>).
      </p>
      {link ? (
        <div class="link-code">
          <p>On your other device, enter this code:</p>
          <p class="secret" data-testid="link-code">
            {link.code}
          </p>
          <QrCode text={link.qrText} label={`QR code of the link code ${link.code}`} />
          {linking.busy ? (
            <p role="status" class="progress">
              <span class="spinner" aria-hidden="true" /> Waiting for your other device to approve this browser…
            </p>
          ) : null}
        </div>
      ) : (
        <Button type="button" busy={linking.busy} busyLabel="Starting…" onClick={beginLink}>
          Link this browser
        </Button>
      )}
      <ErrorPanel error={linking.error} />
      <div class="notice">
        <p>
          Lost your other devices? You can start over with a new identity. Your contacts will see that your key
          changed, your other devices stop working, and earlier messages cannot be read here.
        </p>
        <label class="check">
          <input type="checkbox" checked={confirm} onChange={(event) => setConfirm((event.currentTarget as HTMLInputElement).checked)} />
          I understand: start over with a new identity
        </label>
        {confirm ? (
          <Button type="button" variant="secondary" busy={props.busy} busyLabel="Creating a new identity…" onClick={props.onStartOver}>
            Start over with a new identity
          </Button>
        ) : null}
      </div>
    </div>
  );
}

function Conversations(props: { messenger: Messenger }): JSX.Element {
  const { messenger } = props;
  const role = useClient().session.info?.role;
  const [incomingGroup, setIncomingGroup] = useState<MessageView | null>(null);
  const [conversations, setConversations] = useState<ConversationView[]>([]);
  const [peer, setPeer] = useState<ContactView | null>(null);
  const [messages, setMessages] = useState<MessageView[]>([]);
  const [notices, setNotices] = useState<string[]>([]);
  const [username, setUsername] = useState("");
  const [draft, setDraft] = useState("");
  const [lifespan, setLifespan] = useState("0");
  const [streamError, setStreamError] = useState<string | null>(null);
  const load = useOperation("session");
  const open = useOperation("session");
  const send = useOperation("session");
  const accept = useOperation("session");
  const recall = useOperation("session");
  const peerRef = useRef<string | null>(null);
  peerRef.current = peer?.userId ?? null;

  const refreshNotices = async () => {
    const fresh = await messenger.takeNotices();
    if (fresh.length > 0) setNotices((old) => [...old, ...fresh]);
  };

  const refreshList = () =>
    void load.run(async () => {
      setConversations(await messenger.conversations());
    });

  useEffect(() => {
    refreshList();
    const stop = messenger.watch(
      (message) => {
        setStreamError(null);
        if (message.policy !== null) setIncomingGroup(message);
        else if (message.conversationPeerId === peerRef.current) {
          // A known id is a recall's tombstone (or our own send coming back): replace it.
          setMessages((old) =>
            old.some((m) => m.messageId === message.messageId)
              ? old.map((m) => (m.messageId === message.messageId ? message : m))
              : [...old, message],
          );
          if (!message.mine) void messenger.markRead([message.messageId]).catch(() => undefined);
        }
        void messenger.conversations().then(setConversations).catch(() => undefined);
        void refreshNotices().catch(() => undefined);
      },
      (error) => setStreamError(error instanceof Error ? error.message : "the live connection failed"),
    );
    return stop;
  }, [messenger]);

  // Receipts are not streamed: while a conversation is open, its messages are listed again now
  // and then (opened from this browser's store), which updates "delivered" and "read".
  useEffect(() => {
    if (!peer) return;
    const id = peer.userId;
    const timer = setInterval(() => {
      if (peerRef.current !== id) return;
      messenger
        .history(id)
        .then((fresh) => {
          if (peerRef.current === id) setMessages(fresh);
        })
        .catch(() => undefined);
    }, RECEIPT_REFRESH_MS);
    return () => clearInterval(timer);
  }, [messenger, peer?.userId]);

  const openWith = (userId: string | null, name?: string) =>
    void open.run(async () => {
      const id = userId ?? (await messenger.findUser(name ?? "")).userId;
      const contact = await messenger.contact(id);
      setPeer(contact);
      const history = await messenger.history(id);
      setMessages(history);
      await refreshNotices();
      const unread = history.filter((m) => !m.mine && m.text !== null).map((m) => m.messageId);
      await messenger.markRead(unread).catch(() => undefined);
    });

  const doSend = () =>
    void send.run(async () => {
      if (!peer || draft.trim() === "") return;
      const seconds = Number(lifespan);
      const sent = await messenger.send(peer.userId, draft, seconds > 0 ? seconds : undefined);
      setDraft("");
      addSent(sent);
      await refreshNotices();
    });

  const addSent = (sent: MessageView) => {
    setMessages((old) => (old.some((m) => m.messageId === sent.messageId) ? old : [...old, sent]));
    void messenger.conversations().then(setConversations).catch(() => undefined);
  };

  const doRecall = (messageId: string) =>
    void recall.run(async () => {
      const recalled = await messenger.recall(messageId);
      setMessages((old) => old.map((m) => (m.messageId === messageId ? recalled : m)));
    });

  const doAccept = () =>
    void accept.run(async () => {
      if (peer) setPeer(await messenger.acceptIdentity(peer.userId));
    });

  return (
    <section class="card messages">
      <ScreenTitle>Messages</ScreenTitle>
      <p class="hint">End-to-end encrypted: only you and the people you write to can read these messages.</p>
      <nav class="subnav" aria-label="Messages">
        <a href={href("home")}>Home</a>
        <a href={href("devices")}>Your devices</a>
      </nav>
      {notices.length > 0 ? (
        <div class="notice" role="status" data-testid="device-notices">
          <p>
            <strong>Devices changed:</strong> your messages to these contacts go to their current devices.
          </p>
          <ul>
            {notices.map((notice, index) => (
              <li key={index}>{notice}</li>
            ))}
          </ul>
          <Button type="button" variant="secondary" onClick={() => setNotices([])}>
            Dismiss
          </Button>
        </div>
      ) : null}
      {streamError ? (
        <p role="status" class="hint" data-testid="stream-error">
          Live delivery paused ({streamError}); reconnecting…
        </p>
      ) : null}

      <form
        class="start"
        onSubmit={(event) => {
          event.preventDefault();
          openWith(null, username);
        }}
      >
        <Field id="peer-username" label="Start a conversation with (username)" value={username} onInput={setUsername} autoComplete="off" required />
        <Button type="submit" variant="secondary" busy={open.busy} busyLabel="Opening…">
          Open conversation
        </Button>
      </form>
      <ErrorPanel error={open.error} />

      <h2>Conversations</h2>
      <ErrorPanel error={load.error} />
      {conversations.length === 0 && !load.busy ? <p class="hint">No conversations yet.</p> : null}
      <ul class="conversations" aria-label="Conversations">
        {conversations.map((c) => (
          <li key={c.peerUserId}>
            <button
              type="button"
              class="link"
              aria-current={peer?.userId === c.peerUserId ? "true" : undefined}
              onClick={() => openWith(c.peerUserId)}
            >
              {c.peerName}
            </button>
            {c.lastMessageTime ? <span class="hint"> · {c.lastMessageTime.toLocaleString()}</span> : null}
          </li>
        ))}
      </ul>

      {role === "doctor" || role === "nurse" ? <GroupMessages messenger={messenger} incoming={incomingGroup} /> : null}

      {peer ? (
        <section class="conversation" aria-labelledby="conversation-title">
          <h2 id="conversation-title">Conversation with {peer.displayName || peer.username}</h2>
          {peer.trust === "changed" ? (
            <div class="error" role="alert" data-testid="identity-changed">
              <p>
                <strong>{peer.username}'s identity key changed.</strong> Someone may be pretending to be them, or they
                started over on a new device. Compare the new safety number with them (in person or by phone) before you
                accept it. Sending is blocked until then.
              </p>
              <Button type="button" variant="secondary" busy={accept.busy} onClick={doAccept}>
                I compared it: accept the new key
              </Button>
              <ErrorPanel error={accept.error} />
            </div>
          ) : null}
          <details class="safety">
            <summary>Safety number ({peer.trust})</summary>
            <p class="hint">Compare these digits with {peer.username}'s screen; if they match, nobody is in between.</p>
            <p class="safety-number" data-testid="safety-number">
              {peer.safetyNumber}
            </p>
          </details>
          <ol class="message-list" aria-label={`Messages with ${peer.username}`} aria-live="polite">
            {messages.map((m) => (
              <li key={m.messageId} class={m.mine ? "mine" : "theirs"} data-testid="message">
                <span class="sender">{m.mine ? "You" : peer.displayName || peer.username}</span>
                {m.recalled ? (
                  <span class="hint">(recalled)</span>
                ) : m.text !== null ? (
                  <>
                    {m.text !== "" ? <span class="text">{m.text}</span> : null}
                    {m.attachment ? <AttachmentBlock messenger={messenger} messageId={m.messageId} attachment={m.attachment} /> : null}
                  </>
                ) : (
                  <span class="problem">Cannot open this message: {m.problem}</span>
                )}
                <span class="meta">
                  {m.sent ? m.sent.toLocaleTimeString() : ""}
                  {m.mine ? ` · ${m.status}` : ""}
                  {m.expires && !m.recalled ? ` · deleted ${m.expires.toLocaleString()}` : ""}
                </span>
                {m.mine && !m.recalled ? (
                  <button type="button" class="link recall" aria-label={`Recall your message sent ${m.sent?.toLocaleTimeString() ?? ""}`} onClick={() => doRecall(m.messageId)}>
                    Recall
                  </button>
                ) : null}
              </li>
            ))}
          </ol>
          <form
            class="composer"
            onSubmit={(event) => {
              event.preventDefault();
              doSend();
            }}
          >
            <div class="field">
              <label for="message-draft">Message</label>
              <textarea
                id="message-draft"
                name="message-draft"
                rows={3}
                value={draft}
                maxLength={200000}
                onInput={(event) => setDraft((event.currentTarget as HTMLTextAreaElement).value)}
                onKeyDown={(event) => {
                  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
                    event.preventDefault();
                    doSend();
                  }
                }}
              />
              <p class="hint">Ctrl+Enter sends.</p>
            </div>
            <div class="field">
              <label for="message-lifespan">Delete for everyone</label>
              <select
                id="message-lifespan"
                name="message-lifespan"
                value={lifespan}
                onChange={(event) => setLifespan((event.currentTarget as HTMLSelectElement).value)}
              >
                <option value="0">Never (you can recall it)</option>
                <option value="3600">After 1 hour</option>
                <option value="86400">After 1 day</option>
                <option value="604800">After 1 week</option>
              </select>
            </div>
            <Button type="submit" busy={send.busy} busyLabel="Encrypting and sending…">
              Send
            </Button>
          </form>
          <ErrorPanel error={send.error} />
          <FileComposer messenger={messenger} peerUserId={peer.userId} lifespanSeconds={Number(lifespan)} onSent={addSent} />
          <ErrorPanel error={recall.error} />
        </section>
      ) : null}
    </section>
  );
}
