//! The in-process bus (`kind = "local"`): routes each stored event to every open
//! connection of the event's user on this node (several tabs), and to nobody else.
//!
//! It holds no per-user state of its own beyond the routing table of live connections;
//! each entry is added by a session and removed when it ends. Delivery never blocks a run:
//! a connection whose bounded queue is full is marked slow and closed with 4509 by its
//! session (the events stay stored, so `resume` recovers them).

use foldhash::HashMap;
use std::sync::{Arc, Mutex};

use super::EventBus;
use crate::hub::{EventFrame, Outbound, Outbox, Pushed};

/// One registered connection.
struct Conn {
    id: String,
    outbox: Arc<Outbox>,
}

/// The routing table: user -> open connections on this node.
#[derive(Default)]
pub struct LocalBus {
    users: Mutex<HashMap<String, Vec<Conn>>>,
}

impl LocalBus {
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

    /// Bytes queued across this node's connections: (total, largest).
    pub fn queued(&self) -> (u64, u64) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let sizes = users
            .values()
            .flatten()
            .map(|c| c.outbox.queued_bytes() as u64);
        sizes.fold((0, 0), |(total, max), b| (total + b, max.max(b)))
    }

    /// Whether `user` has a connection on this node.
    pub fn has_user(&self, user: &str) -> bool {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.contains_key(user)
    }

    /// The users with a connection on this node.
    pub fn users(&self) -> Vec<String> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.keys().cloned().collect()
    }
}

impl EventBus for LocalBus {
    fn subscribe(&self, user: &str, conn_id: &str, outbox: Arc<Outbox>) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.entry(user.to_string()).or_default().push(Conn {
            id: conn_id.to_string(),
            outbox,
        });
    }

    fn unsubscribe(&self, user: &str, conn_id: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = users.get_mut(user) {
            conns.retain(|c| c.id != conn_id);
            if conns.is_empty() {
                users.remove(user);
            }
        }
    }

    fn publish(&self, user: &str, events: &[Arc<EventFrame>]) {
        self.publish_all(user, events.iter().map(|e| Outbound::Event(Arc::clone(e))));
    }

    fn notify(&self, user: &str, item: Outbound) -> usize {
        self.publish_all(user, [item])
    }

    fn queued_bytes(&self) -> (u64, u64) {
        self.queued()
    }

    fn connections_of(&self, user: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(user).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_to_every_tab_of_the_user_only_and_flags_full_queues() {
        let bus = LocalBus::default();
        let hour = std::time::Duration::from_secs(3600);
        let a1 = Arc::new(Outbox::new(64, hour));
        let a2 = Arc::new(Outbox::new(1, hour));
        let b1 = Arc::new(Outbox::new(64, hour));
        bus.subscribe("alice", "c1", Arc::clone(&a1));
        bus.subscribe("alice", "c2", Arc::clone(&a2));
        bus.subscribe("bob", "c3", Arc::clone(&b1));
        assert_eq!(bus.notify("alice", Outbound::Reply("x".into())), 2);
        assert!(a1.pop().is_some() && a2.pop().is_some());
        assert!(b1.is_empty(), "bob sees nothing of alice's");
        a2.push(Outbound::Reply("w".into()));
        let batch = [Outbound::Reply("yyy".into()), Outbound::Reply("z".into())];
        assert_eq!(bus.publish_all("alice", batch), 3, "c2 took only yyy");
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
        bus.unsubscribe("alice", "c1");
        bus.unsubscribe("alice", "c2");
        assert_eq!(bus.connections_of("alice"), 0);
        assert!(!bus.has_user("alice") && bus.has_user("bob"));
    }
}
