//! The event bus seam: how stored events reach every open connection of their user.
//! `[components.event_bus] kind` picks the implementation ([`build`]): `local` delivers
//! to this process's connections only ([`local::LocalBus`]).
//!
//! The contract every implementation keeps: events are published only after their commit,
//! one thread's events in `seq` order; a connection's queue never blocks a publisher (a
//! full queue marks the connection slow, and the events stay stored for `resume`).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EventBusKind};
use crate::diagnostic::Finding;
use crate::hub::{EventFrame, Outbound, Outbox};
use crate::keypath::kp;
use crate::store::Store;

pub mod local;
pub mod redis;

/// A bus's state for `/ready` (the `local` bus has none to report).
#[derive(Debug, Clone, Serialize)]
pub struct BusStatus {
    /// Its kind.
    pub kind: &'static str,
    /// Events of other nodes arrive (the subscription is up).
    pub subscribed: bool,
    /// This node's last publish succeeded.
    pub publishing: bool,
    /// Threads whose events could not be published yet (announced when Redis is back).
    pub unsent_threads: usize,
    /// The last Redis error (never contains the URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// This node's id on the bus.
    pub node: String,
}

/// Routes stored events to the connections of their user.
pub trait EventBus: Send + Sync {
    /// Registers a connection of `user` (its queue receives the user's events).
    fn subscribe(&self, user: &str, conn_id: &str, outbox: Arc<Outbox>);

    /// Removes a connection.
    fn unsubscribe(&self, user: &str, conn_id: &str);

    /// Publishes committed events of one thread, in `seq` order, to every connection of
    /// `user`, on this node and (with Redis) on the others.
    fn publish(&self, user: &str, events: &[Arc<EventFrame>]);

    /// Sends something that is not a stored event (a run's end that could not be stored)
    /// to `user`'s connections on this node; returns how many took it.
    fn notify(&self, user: &str, item: Outbound) -> usize;

    /// Open connections of a user on this node (for tests and metrics).
    fn connections_of(&self, user: &str) -> usize;

    /// Bytes waiting in this node's connection queues: the total and the largest one
    /// (read when `/metrics` is scraped, so delivery pays nothing for it).
    fn queued_bytes(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Starts background work (the Redis bus's links), until `shutdown`.
    fn start(&self, _store: Arc<OnceCell<Store>>, _shutdown: CancellationToken) {}

    /// Its state for `/ready`, when it has one.
    fn status(&self) -> Option<BusStatus> {
        None
    }
}

/// The bus `components.event_bus.kind` names, and its metrics registered. Offline: the
/// Redis bus's clients connect when [`EventBus::start`] runs.
pub fn build(
    config: &Config,
    pool: Option<&deadpool_redis::Pool>,
    metrics: &mut crate::metrics::Metrics,
    findings: &mut Vec<Finding>,
) -> Arc<dyn EventBus> {
    match config.components.event_bus.kind {
        EventBusKind::Local => Arc::new(local::LocalBus::default()),
        EventBusKind::Redis => {
            let target = config.redis().and_then(|(name, svc)| {
                let url = svc.url.as_ref().filter(|u| u.is_set())?;
                let client = match deadpool_redis::redis::Client::open(url.expose()) {
                    Ok(c) => c,
                    Err(e) => {
                        findings.push(Finding::error(
                            "E_SERVICE_URL",
                            kp(&format!("services.{name}.url")),
                            format!("service `{name}`: the Redis client cannot use this URL: {e}"),
                            "write redis://host:6379 (or rediss:// for TLS), credentials in url_env",
                        ));
                        return None;
                    }
                };
                Some(redis::RedisTarget {
                    pool: pool?.clone(),
                    client,
                    timeout: svc.connect_timeout,
                })
            });
            let bus = redis::RedisBus::new(&config.name, target);
            metrics.add(|r| bus.metrics().register(r));
            Arc::new(bus)
        }
    }
}
