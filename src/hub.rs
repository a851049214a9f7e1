//! The in-process event bus: routes each stored event to every open connection of the
//! event's user (several tabs), and to nobody else.
//!
//! Process scope, but it holds no per-user state of its own beyond the routing table of
//! live connections; each entry is added by a session and removed when it ends.
//! Delivery never blocks a run: a connection whose queue stays over its byte budget, or
//! does not drain, is marked slow and closed with 4509 by its session (the events stay
//! stored, so `resume` recovers them).

use foldhash::HashMap;
use std::sync::{Arc, Mutex};

use tokio_tungstenite::tungstenite::Utf8Bytes;

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

impl Outbound {
    /// A stored event.
    pub fn event(thread_id: Arc<str>, seq: i64, kind: &'static str, json: Utf8Bytes) -> Self {
        Self::Event(Arc::new(EventFrame {
            thread_id,
            seq,
            kind,
            json,
        }))
    }
}

/// One registered connection.
struct Conn {
    id: String,
    outbox: Arc<Outbox>,
}

/// The routing table: user -> open connections.
#[derive(Default)]
pub struct Hub {
    users: Mutex<HashMap<String, Vec<Conn>>>,
}

impl Hub {
    /// Registers a connection of `user`.
    pub fn register(&self, user: &str, conn_id: &str, outbox: Arc<Outbox>) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.entry(user.to_string()).or_default().push(Conn {
            id: conn_id.to_string(),
            outbox,
        });
    }

    /// Removes a connection.
    pub fn unregister(&self, user: &str, conn_id: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = users.get_mut(user) {
            conns.retain(|c| c.id != conn_id);
            if conns.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Sends an event to every connection of `user`; returns how many took it. A
    /// connection whose queue is full is marked slow (its task closes it).
    pub fn publish(&self, user: &str, item: Outbound) -> usize {
        self.publish_all(user, [item])
    }

    /// Sends `items`, in order, to every connection of `user`, looking the user up once;
    /// returns how many (connection, item) deliveries were queued.
    pub fn publish_all(&self, user: &str, items: impl IntoIterator<Item = Outbound>) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conns) = users.get(user) else {
            return 0;
        };
        let mut delivered = 0;
        for item in items {
            for c in conns {
                if c.outbox.push(item.clone()) == Pushed::Queued {
                    delivered += 1;
                }
            }
        }
        delivered
    }

    /// Open connections of a user (for tests and metrics).
    pub fn connections_of(&self, user: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(user).map_or(0, Vec::len)
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

    #[tokio::test]
    async fn delivers_to_every_tab_of_the_user_only_and_flags_full_queues() {
        let hub = Hub::default();
        let hour = std::time::Duration::from_secs(3600);
        let a1 = Arc::new(Outbox::new(64, hour));
        let a2 = Arc::new(Outbox::new(1, hour));
        let b1 = Arc::new(Outbox::new(64, hour));
        hub.register("alice", "c1", Arc::clone(&a1));
        hub.register("alice", "c2", Arc::clone(&a2));
        hub.register("bob", "c3", Arc::clone(&b1));
        assert_eq!(hub.publish("alice", Outbound::Reply("x".into())), 2);
        assert!(a1.pop().is_some() && a2.pop().is_some());
        assert!(b1.is_empty(), "bob sees nothing of alice's");
        a2.push(Outbound::Reply("w".into()));
        let batch = [Outbound::Reply("yyy".into()), Outbound::Reply("z".into())];
        assert_eq!(hub.publish_all("alice", batch), 3, "c2 took only yyy");
        assert!(
            a2.is_slow(),
            "a queue far over budget marks the connection slow"
        );
        assert!(
            matches!(a1.pop(), Some(Outbound::Reply(t)) if &*t == "yyy"),
            "in order"
        );
        assert!(matches!(a1.pop(), Some(Outbound::Reply(t)) if &*t == "z"));
        assert!(!a1.is_slow());
        hub.unregister("alice", "c1");
        hub.unregister("alice", "c2");
        assert_eq!(hub.connections_of("alice"), 0);
    }
}
