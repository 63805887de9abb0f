// Group messages (doctors and nurses): a policy builder that composes attributes with AND within
// a group and OR between groups, shows the policy text as it will be sealed (canonical, or why it
// is refused), and sends a message everyone whose attributes satisfy it can read; the group
// conversations this user takes part in (the server lists only those whose policy the user's
// attributes satisfy), opened in the browser with the user's attribute key.

import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";

import { checkPolicy, type GroupConversationView, type Messenger, type MessageView } from "../../client";
import { Button, ErrorPanel, useOperation } from "../../app/components";

/** Clauses joined by OR, each a list of attributes joined by AND. */
type Clauses = string[][];

/** The policy text of the builder's clauses (empty attributes left out). */
export function policyText(clauses: Clauses): string {
  const parts = clauses
    .map((clause) => clause.map((a) => a.trim()).filter((a) => a !== ""))
    .filter((clause) => clause.length > 0)
    .map((clause) => clause.map((a) => `"${a.replaceAll('"', "")}"`).join(" and "));
  if (parts.length === 1) return parts[0]!;
  return parts.map((part) => (part.includes(" and ") ? `(${part})` : part)).join(" or ");
}

function PolicyBuilder(props: { clauses: Clauses; onChange: (clauses: Clauses) => void }): JSX.Element {
  const { clauses, onChange } = props;
  const set = (i: number, j: number, value: string) => onChange(clauses.map((c, ci) => (ci === i ? c.map((a, aj) => (aj === j ? value : a)) : c)));
  return (
    <fieldset class="policy-builder">
      <legend>Who can read it (attributes, e.g. role:nurse, dept:cardiology)</legend>
      {clauses.map((clause, i) => (
        <div class="policy-clause" key={i} role="group" aria-label={`Group ${i + 1} of attributes, all required`}>
          {i > 0 ? <p class="policy-op">OR</p> : null}
          {clause.map((attribute, j) => (
            <div class="policy-attribute" key={j}>
              {j > 0 ? <span class="policy-op">AND</span> : null}
              <label for={`policy-${i}-${j}`} class="visually-hidden">
                Group {i + 1}, attribute {j + 1}
              </label>
              <input
                id={`policy-${i}-${j}`}
                type="text"
                value={attribute}
                autoComplete="off"
                placeholder="namespace:value"
                onInput={(event) => set(i, j, (event.currentTarget as HTMLInputElement).value)}
              />
              {clause.length > 1 || clauses.length > 1 ? (
                <button
                  type="button"
                  class="link"
                  aria-label={`Remove group ${i + 1}, attribute ${j + 1}`}
                  onClick={() =>
                    onChange(
                      clauses.map((c, ci) => (ci === i ? c.filter((_, aj) => aj !== j) : c)).filter((c) => c.length > 0),
                    )
                  }
                >
                  Remove
                </button>
              ) : null}
            </div>
          ))}
          <button type="button" class="link" onClick={() => onChange(clauses.map((c, ci) => (ci === i ? [...c, ""] : c)))}>
            AND another attribute (group {i + 1})
          </button>
        </div>
      ))}
      <button type="button" class="link" onClick={() => onChange([...clauses, [""]])}>
        OR another group of attributes
      </button>
    </fieldset>
  );
}

export function GroupMessages(props: { messenger: Messenger; incoming: MessageView | null }): JSX.Element {
  const { messenger } = props;
  const [clauses, setClauses] = useState<Clauses>([["role:nurse", "dept:cardiology"]]);
  const [draft, setDraft] = useState("");
  const [groups, setGroups] = useState<GroupConversationView[]>([]);
  const [openGroup, setOpenGroup] = useState<GroupConversationView | null>(null);
  const [messages, setMessages] = useState<MessageView[]>([]);
  const [names, setNames] = useState<Record<string, string>>({});
  const load = useOperation("session");
  const send = useOperation("session");
  const text = policyText(clauses);
  const checked = text === "" ? { canonical: null, problem: "add at least one attribute" } : checkPolicy(text);

  const refresh = () =>
    void load.run(async () => {
      setGroups(await messenger.groupConversations());
    });
  useEffect(refresh, [messenger]);
  // Senders by name (looked up once each; the id when the lookup fails).
  useEffect(() => {
    for (const id of new Set(messages.map((m) => m.senderUserId))) {
      if (names[id] !== undefined) continue;
      messenger
        .user(id)
        .then((user) => setNames((old) => ({ ...old, [id]: user.displayName || user.username })))
        .catch(() => setNames((old) => ({ ...old, [id]: id })));
    }
  }, [messages]);
  // A group message arriving live: listed, and shown when its conversation is open.
  useEffect(() => {
    const message = props.incoming;
    if (!message || message.policy === null) return;
    if (openGroup && message.conversationId === openGroup.conversationId) {
      setMessages((old) => (old.some((m) => m.messageId === message.messageId) ? old : [...old, message]));
    }
    refresh();
  }, [props.incoming]);

  const show = (group: GroupConversationView) =>
    void load.run(async () => {
      setOpenGroup(group);
      setMessages(await messenger.groupHistory(group.conversationId));
    });

  const doSend = () =>
    void send.run(async () => {
      if (checked.canonical === null || draft.trim() === "") return;
      const sent = await messenger.sendGroup(checked.canonical, draft);
      setDraft("");
      const fresh = await messenger.groupConversations();
      setGroups(fresh);
      const group = fresh.find((g) => g.conversationId === sent.conversationId);
      if (group) {
        setOpenGroup(group);
        setMessages(await messenger.groupHistory(group.conversationId));
      }
    });

  return (
    <section class="groups" aria-labelledby="groups-title">
      <h2 id="groups-title">Group messages</h2>
      <p class="hint">
        Sealed in this browser under a policy: only people whose attributes satisfy it can open the message.
      </p>
      <form
        class="group-composer"
        onSubmit={(event) => {
          event.preventDefault();
          doSend();
        }}
      >
        <PolicyBuilder clauses={clauses} onChange={setClauses} />
        <p class="policy-text" data-testid="policy-text">
          Policy: <code>{checked.canonical ?? (text || "(none)")}</code>
        </p>
        {checked.problem !== null ? (
          <p class="problem" data-testid="policy-problem">
            This policy cannot be used: {checked.problem}
          </p>
        ) : null}
        <div class="field">
          <label for="group-draft">Message to the group</label>
          <textarea
            id="group-draft"
            name="group-draft"
            rows={2}
            value={draft}
            maxLength={200000}
            onInput={(event) => setDraft((event.currentTarget as HTMLTextAreaElement).value)}
          />
        </div>
        <Button type="submit" variant="secondary" busy={send.busy} busyLabel="Sealing and sending…">
          Send to the group
        </Button>
        <ErrorPanel error={send.error} />
      </form>

      <h3>Your group conversations</h3>
      <ErrorPanel error={load.error} />
      {groups.length === 0 && !load.busy ? <p class="hint" data-testid="no-groups">No group messages for you.</p> : null}
      <ul class="conversations" aria-label="Group conversations">
        {groups.map((g) => (
          <li key={g.conversationId}>
            <button type="button" class="link" aria-current={openGroup?.conversationId === g.conversationId ? "true" : undefined} onClick={() => show(g)}>
              {g.policy}
            </button>
            {g.lastMessageTime ? <span class="hint"> · {g.lastMessageTime.toLocaleString()}</span> : null}
          </li>
        ))}
      </ul>
      {openGroup ? (
        <ol class="message-list" aria-label={`Group messages to ${openGroup.policy}`} aria-live="polite">
          {messages.map((m) => (
            <li key={m.messageId} class={m.mine ? "mine" : "theirs"} data-testid="group-message">
              <span class="sender">{m.mine ? "You" : (names[m.senderUserId] ?? m.senderUserId)}</span>
              {m.text !== null ? <span class="text">{m.text}</span> : <span class="problem">Cannot open this message: {m.problem}</span>}
              <span class="meta">{m.sent ? m.sent.toLocaleTimeString() : ""}</span>
            </li>
          ))}
        </ol>
      ) : null}
    </section>
  );
}
