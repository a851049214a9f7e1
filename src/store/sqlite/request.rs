//! The group writer's requests (`group.rs` queues them, `batch.rs` executes them): what
//! to write, where its answer goes, and the outcome of each request of a batch. Apart from
//! both so the writer and the batch depend on these types, not on each other.

use tokio::sync::oneshot;

use crate::store::OnCommit;
use crate::store::error::StoreError;
use crate::store::model::Accepted;
use crate::wire::{EventRecord, StoredEvent};

/// One write, with where to send its answer.
pub(super) struct Request {
    /// The thread appended to or whose run finishes; unused (empty) for `Accept`.
    pub thread_id: String,
    pub op: Op,
}

/// What to write.
pub(super) enum Op {
    Accept {
        user_id: String,
        client_id: String,
        thread_id: Option<String>,
        content: String,
        agent: String,
        reply: oneshot::Sender<Result<Accepted, StoreError>>,
    },
    Append {
        events: Vec<EventRecord>,
        reply: Reply<Vec<StoredEvent>>,
    },
    Finish {
        run_id: String,
        status: String,
        content: String,
        event: EventRecord,
        reply: Reply<StoredEvent>,
    },
}

/// Where a write's result goes: to a caller waiting for it, or to a callback the writer
/// runs right after the commit, in request order (runs publish their events from there).
pub(crate) enum Reply<T> {
    Wait(oneshot::Sender<Result<T, StoreError>>),
    Then(OnCommit<T>),
}

impl<T> Reply<T> {
    /// A waiting caller went away; a callback always wants its result.
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Reply::Wait(tx) => tx.is_closed(),
            Reply::Then(_) => false,
        }
    }

    fn send(self, result: Result<T, StoreError>) {
        match self {
            // Fails only when the caller is gone, and then nobody needs the answer.
            Reply::Wait(tx) => {
                let _ = tx.send(result);
            }
            Reply::Then(then) => then(result),
        }
    }
}

/// The result of one request of a batch.
#[derive(Debug)]
pub(super) enum Outcome {
    Accepted(Accepted),
    Appended(Vec<StoredEvent>),
    Finished(StoredEvent),
    Failed(StoreError),
    /// Not executed in the batch: run it on its own once the batch has committed.
    Alone,
}

impl Request {
    /// The caller stopped waiting (its future was dropped): nothing to do for it.
    pub(super) fn abandoned(&self) -> bool {
        match &self.op {
            Op::Accept { reply, .. } => reply.is_closed(),
            Op::Append { reply, .. } => reply.is_closed(),
            Op::Finish { reply, .. } => reply.is_closed(),
        }
    }

    pub(super) fn answer(self, outcome: Outcome) {
        // A send fails only when the caller is gone, and then nobody needs the answer.
        match (self.op, outcome) {
            (Op::Accept { reply, .. }, Outcome::Accepted(v)) => {
                let _ = reply.send(Ok(v));
            }
            (Op::Accept { reply, .. }, Outcome::Failed(e)) => {
                let _ = reply.send(Err(e));
            }
            (Op::Accept { reply, .. }, _) => {
                let _ = reply.send(Err(mismatch()));
            }
            (Op::Append { reply, .. }, Outcome::Appended(v)) => reply.send(Ok(v)),
            (Op::Finish { reply, .. }, Outcome::Finished(e)) => reply.send(Ok(e)),
            (Op::Append { reply, .. }, Outcome::Failed(e)) => reply.send(Err(e)),
            (Op::Finish { reply, .. }, Outcome::Failed(e)) => reply.send(Err(e)),
            (Op::Append { reply, .. }, _) => reply.send(Err(mismatch())),
            (Op::Finish { reply, .. }, _) => reply.send(Err(mismatch())),
        }
    }
}

pub(super) fn mismatch() -> StoreError {
    StoreError::Database("group commit answered with the wrong kind of result".into())
}
