//! Messaging commands: `msg send|inbox|read|watch|recall|save` and `contacts verify`. Messages
//! and attached files are sealed and opened by the SDK on this machine; device keys live next to
//! the profile's session.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use caremesh_sdk::SdkError;
use caremesh_sdk::attachments::{Progress, safe_file_name};
use caremesh_sdk::auth::Session;
use caremesh_sdk::messaging::{Content, Messenger, Opened};
use caremesh_sdk::proto::messaging::v1 as pb;
use clap::Subcommand;
use futures::StreamExt;
use serde_json::json;

use crate::Ctx;

#[derive(Subcommand)]
pub enum MsgCommand {
    /// Send a message: the text as an argument, from --file, or from standard input. With
    /// --policy (doctors and nurses), to everyone whose attributes satisfy the policy; then the
    /// only argument is the text.
    Send {
        /// The recipient's username (or user id); with --policy, the text.
        #[arg(required_unless_present = "policy")]
        user: Option<String>,
        /// The message text (omit to use --file or standard input).
        text: Option<String>,
        /// Read the message from this file.
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        /// Send this file as an attachment (up to 100 MiB, encrypted here), with the text, if
        /// any, as its caption.
        #[arg(long, conflicts_with_all = ["file", "policy"])]
        attach: Option<PathBuf>,
        /// Purge the message for everyone this many seconds after sending (60 to 31622400).
        #[arg(long)]
        lifespan: Option<u64>,
        /// Address a group by ABE policy, e.g. '"role:doctor" and "dept:cardiology"'.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Messages addressed to you, newest first.
    Inbox {
        /// Only messages you have not read.
        #[arg(long)]
        unread: bool,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// A conversation, oldest first: a username, user id or conversation id.
    Read {
        conversation: String,
        /// Do not send read receipts.
        #[arg(long)]
        no_receipts: bool,
    },
    /// Follow new messages as they arrive (Ctrl-C to stop); resumes after --cursor.
    Watch {
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// Recall a message you sent: deleted for everyone, with its attachment.
    Recall { message_id: String },
    /// Save a message's attachment into a directory, decrypted here (under the sender's file
    /// name, made safe; never over an existing file).
    Save {
        message_id: String,
        /// The directory to save into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ContactsCommand {
    /// Show the safety number with a contact; compare it with theirs in person.
    Verify {
        user: String,
        /// Accept the contact's current identity key (after it changed).
        #[arg(long)]
        accept: bool,
    },
}

/// This profile's device. A new profile of a user who has devices elsewhere must be linked
/// first: opening it would make a new identity and cut the other devices off.
pub(crate) async fn messenger(ctx: &Ctx, session: &Session) -> Result<Messenger, SdkError> {
    if !Messenger::has_device(ctx.store.dir(), &ctx.profile)
        && Messenger::published_identity(&ctx.client, session).await?.is_some()
    {
        return Err(SdkError::Local(format!(
            "your account already has a device elsewhere: link this profile with `carectl --profile {0} device link`,              or start over with a new identity: `carectl --profile {0} device new-identity`",
            ctx.profile
        )));
    }
    let messenger = Messenger::open(ctx.client.clone(), ctx.store.dir(), &ctx.profile, session).await?;
    print_notices(&messenger)?;
    Ok(messenger)
}

/// Tells the user, on standard error, which contacts added or removed devices.
pub(crate) fn print_notices(messenger: &Messenger) -> Result<(), SdkError> {
    for notice in messenger.take_device_notices()? {
        eprintln!("note: {notice}");
    }
    Ok(())
}

fn looks_like_id(value: &str) -> bool {
    value.len() == 36 && value.bytes().filter(|byte| *byte == b'-').count() == 4
}

pub(crate) async fn resolve(ctx: &Ctx, session: &Session, user: &str) -> Result<String, SdkError> {
    if looks_like_id(user) {
        return Ok(user.to_owned());
    }
    Ok(ctx.client.lookup_user(session, user).await?.user_id)
}

fn opened_json(item: &Opened) -> serde_json::Value {
    let message = &item.message;
    json!({
        "message_id": message.message_id,
        "conversation_id": message.conversation_id,
        "sender_user_id": message.sender_user_id,
        "recipient_user_id": message.recipient_user_id,
        "create_time": message.create_time.map(|t| t.seconds),
        "expire_time": message.expire_time.map(|t| t.seconds),
        "state": message.state().as_str_name(),
        "text": item.content.text(),
        "attachment": match &item.content {
            Content::Attachment { attachment, .. } => json!({
                "attachment_id": attachment.attachment_id,
                "file_name": attachment.file_name,
                "file_length": attachment.file_len,
                "media_type": attachment.media_type,
            }),
            _ => serde_json::Value::Null,
        },
    })
}

/// Usernames for user ids, looked up once each; an id that cannot be looked up is shown as is.
#[derive(Default)]
struct Names(std::collections::HashMap<String, String>);

impl Names {
    async fn of(&mut self, ctx: &Ctx, session: &Session, user_id: &str) -> String {
        if let Some(name) = self.0.get(user_id) {
            return name.clone();
        }
        let name = match ctx.client.lookup_user_id(session, user_id).await {
            Ok(profile) => profile.username,
            Err(_) => user_id.to_owned(),
        };
        self.0.insert(user_id.to_owned(), name.clone());
        name
    }

    async fn lines(&mut self, ctx: &Ctx, session: &Session, items: &[Opened]) -> Vec<String> {
        let mut lines = Vec::with_capacity(items.len());
        for item in items {
            let sender = self.of(ctx, session, &item.message.sender_user_id).await;
            lines.push(opened_line(item, &sender));
        }
        lines
    }
}

fn opened_line(item: &Opened, sender: &str) -> String {
    let message = &item.message;
    let when = message
        .create_time
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    format!("{when}  {}  from {sender}: {}", message.message_id, item.content.text())
}

pub async fn msg(ctx: &Ctx, command: MsgCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let messenger = messenger(ctx, &session).await?;
    match command {
        MsgCommand::Send {
            user: Some(user),
            text,
            attach: Some(path),
            lifespan,
            ..
        } => {
            let recipient = resolve(ctx, &session, &user).await?;
            let sent = messenger
                .send_file(
                    &session,
                    &recipient,
                    &path,
                    text.as_deref().unwrap_or_default(),
                    lifespan.map(Duration::from_secs),
                    progress_bar("sending", ctx.json),
                )
                .await?;
            ctx.print(
                json!({
                    "message_id": sent.message_id,
                    "conversation_id": sent.conversation_id,
                    "recipient_user_id": sent.recipient_user_id,
                    "file": path.display().to_string(),
                }),
                || format!("sent {} with {} to {user}", sent.message_id, path.display()),
            );
        }
        MsgCommand::Send {
            user,
            text,
            file,
            lifespan,
            policy,
            ..
        } => {
            // With --policy there is no recipient: the one positional argument is the text.
            let (user, text) = match (&policy, user, text) {
                (Some(_), Some(_), Some(_)) => {
                    return Err(SdkError::Local(
                        "with --policy give only the text (no recipient)".to_owned(),
                    ));
                }
                (Some(_), first, None) => (None, first),
                (_, user, text) => (user, text),
            };
            let body = match (text, file) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(path)) => std::fs::read(&path)
                    .map_err(|error| SdkError::Local(format!("cannot read {}: {error}", path.display())))?,
                (None, None) => {
                    let mut body = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut body)
                        .map_err(|error| SdkError::Local(format!("cannot read standard input: {error}")))?;
                    body
                }
            };
            let lifespan = lifespan.map(Duration::from_secs);
            let (sent, to) = match (policy, user) {
                (Some(policy), _) => (messenger.send_group(&session, &policy, &body, lifespan).await?, policy),
                (None, Some(user)) => {
                    let recipient = resolve(ctx, &session, &user).await?;
                    (messenger.send(&session, &recipient, &body, lifespan).await?, user)
                }
                (None, None) => return Err(SdkError::Local("name a recipient or give --policy".to_owned())),
            };
            ctx.print(
                json!({
                    "message_id": sent.message_id,
                    "conversation_id": sent.conversation_id,
                    "recipient_user_id": sent.recipient_user_id,
                    "policy": sent.policy,
                }),
                || format!("sent {} to {to}", sent.message_id),
            );
        }
        MsgCommand::Inbox { unread, limit } => {
            let (items, _) = messenger
                .inbox(
                    &session,
                    pb::ListInboxRequest {
                        page_size: limit,
                        page_token: String::new(),
                        order: pb::SortOrder::NewestFirst.into(),
                        unread_only: unread,
                        ..Default::default()
                    },
                )
                .await?;
            let ids: Vec<String> = items.iter().map(|item| item.message.message_id.clone()).collect();
            if !ids.is_empty() {
                messenger.receipts(&session, ids, false).await?;
            }
            let lines = Names::default().lines(ctx, &session, &items).await;
            ctx.print(json!(items.iter().map(opened_json).collect::<Vec<_>>()), || {
                if items.is_empty() {
                    "no messages".to_owned()
                } else {
                    lines.join("\n")
                }
            });
        }
        MsgCommand::Read {
            conversation,
            no_receipts,
        } => {
            let target = if conversation.starts_with("dm-") {
                pb::list_conversation_messages_request::Target::ConversationId(conversation)
            } else {
                pb::list_conversation_messages_request::Target::PeerUserId(resolve(ctx, &session, &conversation).await?)
            };
            let items = messenger.history(&session, target, pb::SortOrder::OldestFirst).await?;
            let unread: Vec<String> = items
                .iter()
                .filter(|item| item.message.recipient_user_id == session.user_id)
                .map(|item| item.message.message_id.clone())
                .collect();
            if !no_receipts {
                for chunk in unread.chunks(100) {
                    messenger.receipts(&session, chunk.to_vec(), true).await?;
                }
            }
            let lines = Names::default().lines(ctx, &session, &items).await;
            ctx.print(json!(items.iter().map(opened_json).collect::<Vec<_>>()), || {
                lines.join("\n")
            });
        }
        MsgCommand::Watch { cursor } => {
            let mut names = Names::default();
            let mut stream = messenger.watch(&session, &cursor).await?;
            while let Some(item) = stream.next().await {
                let item = item?;
                let Some(message) = item.message else { continue };
                let opened = messenger.open_message(&session, &message).await?;
                messenger
                    .receipts(&session, vec![message.message_id.clone()], false)
                    .await?;
                if ctx.json {
                    let mut value = opened_json(&opened);
                    if let Some(object) = value.as_object_mut() {
                        object.insert("cursor".to_owned(), json!(item.cursor));
                    }
                    println!("{}", serde_json::to_string(&value).unwrap_or_default());
                } else {
                    let sender = names.of(ctx, &session, &opened.message.sender_user_id).await;
                    println!("{}  (cursor {})", opened_line(&opened, &sender), item.cursor);
                }
            }
        }
        MsgCommand::Save { message_id, out } => {
            let opened = messenger.get(&session, &message_id).await?;
            let Content::Attachment { attachment, .. } = &opened.content else {
                return Err(SdkError::Local(format!(
                    "message {message_id} has no attachment ({})",
                    opened.content.text()
                )));
            };
            let path = out.join(safe_file_name(
                &attachment.file_name,
                &format!("attachment-{message_id}"),
            ));
            let len = messenger
                .save_attachment(&session, attachment, &path, progress_bar("saving", ctx.json))
                .await?;
            ctx.print(
                json!({"message_id": message_id, "path": path.display().to_string(), "file_length": len}),
                || format!("saved {} ({len} bytes)", path.display()),
            );
        }
        MsgCommand::Recall { message_id } => {
            let tombstone = messenger.recall(&session, &message_id).await?;
            ctx.print(
                json!({"message_id": tombstone.message_id, "state": tombstone.state().as_str_name()}),
                || format!("recalled {message_id}"),
            );
        }
    }
    print_notices(&messenger)?;
    Ok(())
}

/// A progress bar on standard error for a long transfer, when it is a terminal (and the output
/// is not JSON); redrawn at each whole percent.
pub(crate) fn progress_bar(verb: &'static str, json: bool) -> Option<Progress> {
    use std::io::{IsTerminal, Write};
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let shown = std::sync::atomic::AtomicU64::new(u64::MAX);
    Some(std::sync::Arc::new(move |done: u64, total: u64| {
        let percent = (done.saturating_mul(100)).checked_div(total).unwrap_or(100).min(100);
        if shown.swap(percent, std::sync::atomic::Ordering::Relaxed) == percent {
            return;
        }
        let filled = usize::try_from(percent / 4).unwrap_or(25);
        let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
        let mut stderr = std::io::stderr();
        let _ = write!(
            stderr,
            "\r{verb} [{:<25}] {percent:>3}%  {:.1}/{:.1} MiB",
            "#".repeat(filled),
            mib(done),
            mib(total)
        );
        if done >= total {
            let _ = writeln!(stderr);
        }
        let _ = stderr.flush();
    }))
}

pub async fn contacts(ctx: &Ctx, command: ContactsCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let messenger = messenger(ctx, &session).await?;
    match command {
        ContactsCommand::Verify { user, accept } => {
            let user_id = resolve(ctx, &session, &user).await?;
            let contact = if accept {
                messenger.accept_identity(&session, &user_id).await?
            } else {
                messenger.contact(&session, &user_id).await?
            };
            ctx.print(
                json!({
                    "user_id": contact.user_id,
                    "identity_key_id": contact.identity_key_id,
                    "safety_number": contact.safety_number,
                    "trust": contact.trust,
                }),
                || {
                    let mut text = format!("safety number with {user}:\n{}", contact.safety_number);
                    if contact.trust == "changed" {
                        text.push_str(&format!(
                            "\n\nWARNING: {user}'s identity key changed. Compare the number with them, then run \
                             `carectl contacts verify {user} --accept`."
                        ));
                    }
                    text
                },
            );
        }
    }
    Ok(())
}
