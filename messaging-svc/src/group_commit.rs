//! Group commit of direct messages. Each send is checked in its own request (role, envelopes,
//! current identity keys); what it writes (the message, its delivery-log entry, its audit event)
//! then joins the sends waiting at that moment, and they are stored together: one transaction
//! and one multi-row INSERT per table, however many messages. SQLite runs one write transaction
//! at a time and PostgreSQL flushes its WAL on every commit, so under load a send costs
//! statements and commits far more than rows.
//!
//! Leader and followers, no background task: a send queues its writes, then waits for the commit
//! turn; whoever gets it stores everything queued (its own writes among them, unless an earlier
//! leader already did). The batch runs in a task of its own, so a caller that hangs up does not
//! cancel the others' writes (its own send, once queued, may still be stored: sending it again
//! with the same id returns it). A failing batch stores nothing and fails every send in it;
//! sending is idempotent by message id, so clients send again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use caremesh_proto::audit::v1::AuditEvent;
use caremesh_runtime::Error;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryTrait, Set};
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use crate::domain::MessagingDomain;
use crate::storage::{archive_copy, delivery, device_ciphertext, message};

/// The most sends stored in one transaction.
const MAX_BATCH: usize = 64;

/// A checked direct message, ready to store.
pub(crate) struct NewDirect {
    /// The row to insert (`seq` is assigned by the database).
    pub row: message::Model,
    /// Its audit event, stored with it.
    pub event: AuditEvent,
    /// Protocol v2: its ciphertexts per device, stored with it.
    pub ciphertexts: Vec<device_ciphertext::Model>,
    /// Protocol v2: the sender's archive copy, stored with it.
    pub archive: Option<archive_copy::Model>,
}

impl NewDirect {
    /// The users whose delivery logs get the message: the recipient, and the sender too when
    /// some of the sender's other devices have a ciphertext in it.
    fn delivered_to(&self) -> impl Iterator<Item = &str> {
        let sender = &self.row.sender_user_id;
        let to_sender = *sender != self.row.recipient_user_id
            && self
                .ciphertexts
                .iter()
                .any(|ciphertext| ciphertext.recipient_user_id == *sender);
        std::iter::once(self.row.recipient_user_id.as_str()).chain(to_sender.then_some(sender.as_str()))
    }
}

/// What storing a direct message found.
#[derive(Debug)]
pub(crate) enum Stored {
    /// Stored now, as returned by the database.
    Fresh(message::Model),
    /// The message id was already taken: by this very message sent before (`same`), or by
    /// another.
    Taken { existing: message::Model, same: bool },
}

struct Pending {
    send: NewDirect,
    reply: oneshot::Sender<Result<Stored, Error>>,
}

/// The sends waiting to be stored, and the turn to store them.
#[derive(Debug, Default)]
pub(crate) struct DirectSends {
    queue: Mutex<Vec<Pending>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.send.row.message_id)
    }
}

fn batch_lost() -> Error {
    Error::unavailable(
        "SEND_INTERRUPTED",
        "storing the message was interrupted: send it again with the same message id",
    )
}

impl MessagingDomain {
    /// Stores `send` with the sends waiting beside it (see the module documentation).
    pub(crate) async fn store_direct(&self, send: NewDirect) -> Result<Stored, Error> {
        let (reply, mut answer) = oneshot::channel();
        self.direct_sends.queued().push(Pending { send, reply });
        loop {
            let turn = tokio::select! {
                biased;
                stored = &mut answer => return stored.unwrap_or_else(|_| Err(batch_lost())),
                turn = Arc::clone(&self.direct_sends.turn).lock_owned() => turn,
            };
            match answer.try_recv() {
                Ok(stored) => return stored,
                Err(TryRecvError::Closed) => return Err(batch_lost()),
                Err(TryRecvError::Empty) => {}
            }
            // Oldest first: ours is in this batch unless more than a batch was queued before it.
            let batch: Vec<Pending> = {
                let mut queue = self.direct_sends.queued();
                let take = queue.len().min(MAX_BATCH);
                queue.drain(..take).collect()
            };
            let domain = self.clone();
            // Awaited, not cancelled with this call: the batch holds the others' writes too. (If
            // it failed outright, its senders' replies are gone and the next round says so.)
            let _finished = tokio::spawn(async move {
                domain.store_batch(batch).await;
                drop(turn);
            })
            .await;
        }
    }

    async fn store_batch(&self, batch: Vec<Pending>) {
        let sends: Vec<&NewDirect> = batch.iter().map(|pending| &pending.send).collect();
        match self.store_directs(&sends).await {
            Ok(outcomes) => {
                for (pending, stored) in batch.into_iter().zip(outcomes) {
                    let _ = pending.reply.send(Ok(stored));
                }
            }
            Err(error) => {
                tracing::warn!(%error, messages = batch.len(), "storing a batch of messages failed; none was stored");
                for pending in batch {
                    let shared = Error::new(error.code(), error.reason().to_owned(), error.message().to_owned());
                    let _ = pending.reply.send(Err(shared));
                }
            }
        }
    }

    /// One transaction: the messages (the first send of each id; a later one is answered as a
    /// resend), then delivery-log entries and audit events for those that were new.
    async fn store_directs(&self, sends: &[&NewDirect]) -> Result<Vec<Stored>, Error> {
        let mut seen = HashSet::new();
        let firsts: Vec<&NewDirect> = sends
            .iter()
            .copied()
            .filter(|send| seen.insert(send.row.message_id.as_str()))
            .collect();
        let (_turn, txn) = self.begin_write().await?;
        // PostgreSQL: each recipient's delivery-log lock, always in the same order so that two
        // replicas' batches cannot deadlock.
        let recipients: BTreeSet<&str> = firsts.iter().flat_map(|send| send.delivered_to()).collect();
        for recipient in &recipients {
            self.order_and_notify(&txn, recipient).await?;
        }
        let mut insert = message::Entity::insert_many(firsts.iter().map(|send| {
            let mut row: message::ActiveModel = send.row.clone().into();
            row.seq = NotSet;
            row
        }))
        .on_conflict(OnConflict::column(message::Column::MessageId).do_nothing().to_owned())
        .into_query();
        // The stored rows (their `seq`, and on PostgreSQL timestamps at the database's precision).
        insert.returning_all();
        let backend = txn.get_database_backend();
        let inserted = message::Entity::find()
            .from_raw_sql(backend.build(&insert))
            .all(&txn)
            .await?;
        let fresh: HashSet<String> = inserted.iter().map(|row| row.message_id.clone()).collect();
        let mut stored: HashMap<String, message::Model> =
            inserted.into_iter().map(|row| (row.message_id.clone(), row)).collect();
        let taken: Vec<String> = firsts
            .iter()
            .map(|send| send.row.message_id.clone())
            .filter(|id| !fresh.contains(id))
            .collect();
        if !taken.is_empty() {
            let existing = message::Entity::find()
                .filter(message::Column::MessageId.is_in(taken))
                .all(&txn)
                .await?;
            stored.extend(existing.into_iter().map(|row| (row.message_id.clone(), row)));
        }
        let new: Vec<&NewDirect> = firsts
            .into_iter()
            .filter(|send| fresh.contains(&send.row.message_id))
            .collect();
        if !new.is_empty() {
            delivery::Entity::insert_many(new.iter().flat_map(|send| {
                send.delivered_to().map(|user_id| delivery::ActiveModel {
                    user_id: Set(user_id.to_owned()),
                    message_id: Set(send.row.message_id.clone()),
                    kind: Set("message".to_owned()),
                    created_at: Set(send.row.created_at),
                    ..Default::default()
                })
            }))
            .exec_without_returning(&txn)
            .await?;
            let ciphertexts: Vec<device_ciphertext::ActiveModel> = new
                .iter()
                .flat_map(|send| send.ciphertexts.iter().cloned().map(Into::into))
                .collect();
            if !ciphertexts.is_empty() {
                device_ciphertext::Entity::insert_many(ciphertexts)
                    .exec_without_returning(&txn)
                    .await?;
            }
            let archives: Vec<archive_copy::ActiveModel> = new
                .iter()
                .filter_map(|send| send.archive.clone().map(Into::into))
                .collect();
            if !archives.is_empty() {
                archive_copy::Entity::insert_many(archives)
                    .exec_without_returning(&txn)
                    .await?;
            }
            let events: Vec<AuditEvent> = new.iter().map(|send| send.event.clone()).collect();
            self.outbox.record_many(&txn, &events).await?;
        }
        txn.commit().await?;
        let woken: BTreeSet<&str> = new.iter().flat_map(|send| send.delivered_to()).collect();
        for recipient in woken {
            self.notify_local(recipient);
        }
        self.outbox.wake_relay();
        let mut answered = HashSet::new();
        sends
            .iter()
            .map(|send| {
                let id = send.row.message_id.as_str();
                let row = stored.get(id).cloned().ok_or_else(|| {
                    Error::internal("storing a message", "the insert conflicted but no row was found")
                })?;
                Ok(if fresh.contains(id) && answered.insert(id) {
                    Stored::Fresh(row)
                } else {
                    let same = row.sender_user_id == send.row.sender_user_id
                        && row.recipient_user_id == send.row.recipient_user_id
                        && row.recipient_envelope == send.row.recipient_envelope
                        && row.sender_envelope == send.row.sender_envelope
                        && row.fanout_digest == send.row.fanout_digest;
                    Stored::Taken { existing: row, same }
                })
            })
            .collect()
    }
}

impl DirectSends {
    fn queued(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // The queue is consistent after any panic (pushes and drains are single calls).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
