//! The event bus seam: how stored events reach every open connection of their user.
//! `[components.event_bus] kind` picks the implementation ([`build`]): `local` delivers
//! to this process's connections only ([`local::LocalBus`]).
//!
//! The contract every implementation keeps: events are published only after their commit,
//! one thread's events in `seq` order; a connection's queue never blocks a publisher (a
//! full queue marks the connection slow, and the events stay stored for `resume`).

use std::sync::Arc;

use crate::config::{Config, EventBusKind};
use crate::hub::{EventFrame, Outbound, Outbox};

pub mod local;

/// Routes stored events to the connections of their user.
pub trait EventBus: Send + Sync {
    /// Registers a connection of `user` (its queue receives the user's events).
    fn subscribe(&self, user: &str, conn_id: &str, outbox: Arc<Outbox>);

    /// Removes a connection.
    fn unsubscribe(&self, user: &str, conn_id: &str);

    /// Publishes committed events of one thread, in `seq` order, to every connection of
    /// `user`; returns how many (connection, event) deliveries this node queued.
    fn publish(&self, user: &str, events: &[Arc<EventFrame>]) -> usize;

    /// Sends something that is not a stored event (a run's end that could not be stored)
    /// to `user`'s connections on this node; returns how many took it.
    fn notify(&self, user: &str, item: Outbound) -> usize;

    /// Open connections of a user on this node (for tests and metrics).
    fn connections_of(&self, user: &str) -> usize;
}

/// The bus `components.event_bus.kind` names.
pub fn build(config: &Config) -> Arc<dyn EventBus> {
    match config.components.event_bus.kind {
        EventBusKind::Local => Arc::new(local::LocalBus::default()),
    }
}
