//! The write queue of the single-writer backends (SQLite, PostgreSQL): the operations a
//! writer applies in the order they were queued, and the typed calls that queue them and
//! wait for the answer. The writers differ (a thread and SQLite transactions, a task and
//! PostgreSQL ones); what is queued and answered is one thing.

use crate::types::*;
use crate::{Pending, StoreError};
use preau_proto::{ChannelId, Seq};
use tokio::sync::{mpsc, oneshot};

/// What a writer applies.
pub(crate) enum Op {
    Write(Write),
    MarkRead {
        user: String,
        channel: ChannelId,
        seq: Seq,
    },
    CreateConversation(NewConversation),
    SetMute {
        channel: ChannelId,
        user: String,
        until_ms: i64,
    },
    SaveDirectory {
        school: String,
        doc: String,
    },
    SaveSetting {
        key: String,
        value: String,
    },
    PutRecord(Record),
    /// A write that only proves the store takes writes again (readiness after a failure).
    Probe,
    PurgeRecords {
        kind: String,
        before_ms: i64,
    },
    Erase(Erasure),
    Expire(Expiry),
    DeleteRecord {
        kind: String,
        school: String,
        id: String,
    },
    Lease {
        name: String,
        holder: String,
        now_ms: i64,
        until_ms: i64,
    },
}

/// What it answers.
pub(crate) enum Out {
    Appended(Appended),
    Seq(Seq),
    Conversation(Conversation),
    Erased(Erased),
    Bool(bool),
    Unit,
}

/// An operation and where its answer goes.
pub(crate) struct Job {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Out, StoreError>>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("writer stopped".into())
}

fn unexpected<T>(_: T) -> StoreError {
    StoreError::Unavailable("unexpected answer from the writer".into())
}

/// The sending side of a writer's queue.
pub(crate) struct Queue(mpsc::Sender<Job>);

impl Queue {
    /// A queue of `capacity` jobs and its receiving end, for the writer.
    pub fn bounded(capacity: usize) -> (Queue, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Queue(tx), rx)
    }

    /// The writer is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    async fn submit(&self, op: Op) -> Result<Out, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.0.send(Job { op, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn write(&self, w: Write) -> Result<Appended, StoreError> {
        match self.submit(Op::Write(w)).await? {
            Out::Appended(a) => Ok(a),
            o => Err(unexpected(o)),
        }
    }

    /// Queues a write without waiting for room: a full backlog is refused at once, so a
    /// client is told to retry instead of waiting behind everyone else's writes.
    pub fn queue_write(&self, w: Write) -> Result<Pending, StoreError> {
        let permit = match self.0.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return Err(StoreError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(stopped()),
        };
        let (reply, rx) = oneshot::channel();
        permit.send(Job { op: Op::Write(w), reply });
        Ok(Box::pin(async move {
            match rx.await.map_err(|_| stopped())?? {
                Out::Appended(a) => Ok(a),
                o => Err(unexpected(o)),
            }
        }))
    }

    async fn seq(&self, op: Op) -> Result<Seq, StoreError> {
        match self.submit(op).await? {
            Out::Seq(s) => Ok(s),
            o => Err(unexpected(o)),
        }
    }

    async fn unit(&self, op: Op) -> Result<(), StoreError> {
        self.submit(op).await.map(|_| ())
    }

    async fn erased(&self, op: Op) -> Result<Erased, StoreError> {
        match self.submit(op).await? {
            Out::Erased(x) => Ok(x),
            o => Err(unexpected(o)),
        }
    }

    pub async fn mark_read(&self, user: String, channel: ChannelId, seq: Seq) -> Result<Seq, StoreError> {
        self.seq(Op::MarkRead { user, channel, seq }).await
    }

    pub async fn create_conversation(&self, c: NewConversation) -> Result<Conversation, StoreError> {
        match self.submit(Op::CreateConversation(c)).await? {
            Out::Conversation(c) => Ok(c),
            o => Err(unexpected(o)),
        }
    }

    pub async fn set_mute(&self, channel: ChannelId, user: String, until_ms: i64) -> Result<(), StoreError> {
        self.unit(Op::SetMute { channel, user, until_ms }).await
    }

    pub async fn save_directory(&self, school: String, doc: String) -> Result<(), StoreError> {
        self.unit(Op::SaveDirectory { school, doc }).await
    }

    pub async fn save_setting(&self, key: String, value: String) -> Result<(), StoreError> {
        self.unit(Op::SaveSetting { key, value }).await
    }

    pub async fn put_record(&self, r: Record) -> Result<(), StoreError> {
        self.unit(Op::PutRecord(r)).await
    }

    pub async fn purge_records(&self, kind: String, before_ms: i64) -> Result<u64, StoreError> {
        self.seq(Op::PurgeRecords { kind, before_ms }).await
    }

    pub async fn delete_record(&self, kind: String, school: String, id: String) -> Result<(), StoreError> {
        self.unit(Op::DeleteRecord { kind, school, id }).await
    }

    pub async fn probe(&self) -> Result<(), StoreError> {
        self.unit(Op::Probe).await
    }

    pub async fn expire(&self, x: Expiry) -> Result<Erased, StoreError> {
        self.erased(Op::Expire(x)).await
    }

    pub async fn erase(&self, e: Erasure) -> Result<Erased, StoreError> {
        self.erased(Op::Erase(e)).await
    }

    pub async fn lease(&self, name: String, holder: String, now_ms: i64, until_ms: i64) -> Result<bool, StoreError> {
        match self.submit(Op::Lease { name, holder, now_ms, until_ms }).await? {
            Out::Bool(b) => Ok(b),
            o => Err(unexpected(o)),
        }
    }
}
