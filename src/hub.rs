//! What a connection is sent: the items of its outbound queue ([`Outbound`]) and the queue
//! itself ([`Outbox`]). Routing them to the user's connections is the event bus's job
//! (`crate::bus`).

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::wire::StoredEvent;

mod coalesce;
mod outbox;
pub use coalesce::Deltas;
pub use outbox::{Outbox, Pushed};

/// What a connection sends. Kept to two words plus a tag: queued items cost memory per
/// busy connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A reply to this connection only (ack, error, pong, …).
    Reply(Arc<str>),
    /// A stored thread event, shared by every connection of the user.
    Event(Arc<EventFrame>),
    /// Replay stored events of a thread (a `resume`).
    Replay(Box<ReplayRequest>),
    /// Consecutive `agent_response` deltas of one run, merged while they waited.
    Deltas(Box<Deltas>),
}

/// A stored event on its way to the user's connections.
#[derive(Debug)]
pub struct EventFrame {
    /// Its thread.
    pub thread_id: Arc<str>,
    /// Its seq in the thread.
    pub seq: i64,
    /// Its `type` (for metrics).
    pub kind: &'static str,
    /// The exact stored JSON, shared (not copied) by every connection's outgoing frame.
    pub json: Utf8Bytes,
}

/// A `resume` request, checked for ownership, for the writer to serve.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The thread.
    pub thread_id: String,
    /// Replay events with a larger seq.
    pub after_seq: i64,
    /// The client message id, for an error reply.
    pub ref_id: Option<String>,
}

impl EventFrame {
    /// The frame of stored event `ev` of `thread_id`, its JSON moved, not copied.
    pub fn stored(thread_id: Arc<str>, kind: &'static str, ev: StoredEvent) -> Arc<Self> {
        Arc::new(Self {
            thread_id,
            seq: ev.seq,
            kind,
            json: Utf8Bytes::from(ev.json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_items_stay_small() {
        assert!(
            std::mem::size_of::<Outbound>() <= 24,
            "{}",
            std::mem::size_of::<Outbound>()
        );
    }
}
