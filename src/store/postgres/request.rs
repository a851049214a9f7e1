//! The group writer's requests (`group.rs` queues them; `batch.rs` and `write.rs` execute
//! them), apart from all three so the writer and the statements depend on these types,
//! not on each other.

use tokio::sync::oneshot;

use crate::store::error::StoreError;
use crate::store::model::Accepted;
use crate::wire::{EventRecord, StoredEvent};

/// An answer's way back to its caller.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A user message to store, owned so that it can wait in the queue.
#[derive(Debug)]
pub(super) struct Accept {
    pub user_id: String,
    pub client_id: String,
    pub thread_id: Option<String>,
    pub content: String,
    pub agent: String,
}

/// Events to append to one thread.
#[derive(Debug)]
pub(super) struct Append {
    pub thread_id: String,
    pub events: Vec<EventRecord>,
}

/// A run to end.
#[derive(Debug)]
pub(super) struct Finish {
    pub thread_id: String,
    pub run_id: String,
    pub status: String,
    pub content: String,
    pub event: EventRecord,
}

/// Whether a run must wait for an earlier run of its thread (`lease.rs`): a read, but
/// one per run, so it shares the batches' round trips too.
#[derive(Debug)]
pub(super) struct Turn {
    pub thread_id: String,
    pub run_id: String,
}

/// One queued request.
pub(super) enum Request {
    Accept(Accept, Reply<Accepted>),
    Append(Append, Reply<Vec<StoredEvent>>),
    Finish(Finish, Reply<StoredEvent>),
    Turn(Turn, Reply<bool>),
}
