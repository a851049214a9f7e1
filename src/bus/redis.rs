//! The Redis bus (`kind = "redis"`): several nodes, one user's sockets on any of them.
//!
//! A node delivers its own runs' events to its own sockets at once (no Redis on that
//! path), and publishes each committed batch to one channel per environment
//! (`portcullis:<env>:events`, a pooled connection, bounded by a timeout). Every node
//! subscribes on a dedicated pub/sub connection and hands the events of users with sockets
//! here to [`order::Order`], which delivers each thread in seq order, drops duplicates and
//! fills gaps from the store. Redis only makes delivery fast; the store makes it whole:
//! a publish that failed is announced (`S` frame) once Redis answers again, and after the
//! subscription was lost every node resynchronises its users' threads from the store.
//! Centrifugo's Redis engine and its clients' offset-based recovery are the model.

mod frame;
mod link;
pub mod order;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::HashMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use super::local::LocalBus;
use super::{BusStatus, EventBus};
use crate::hub::{EventFrame, Outbound, Outbox};
use crate::store::Store;
use frame::Frame;

/// Batches waiting for the publisher; beyond this a batch is not queued but announced
/// later (its events are stored: the other nodes fetch them).
const PUBLISH_QUEUE: usize = 8192;

/// How the bus reaches Redis.
pub struct RedisTarget {
    /// Pooled connections for PUBLISH.
    pub pool: deadpool_redis::Pool,
    /// The dedicated subscriber connection's client.
    pub client: deadpool_redis::redis::Client,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
}

/// A thread of a user.
type ThreadKey = (Arc<str>, Arc<str>);

/// A batch for the publisher.
struct Outgoing {
    user: Arc<str>,
    thread: Arc<str>,
    first_seq: i64,
    payload: Vec<u8>,
}

/// `portcullis_bus_*` metrics.
#[derive(Default, Clone)]
pub struct BusMetrics {
    /// 1 while the subscription is up.
    pub redis_up: Gauge,
    /// Batches published.
    pub published: Counter,
    /// Batches whose publish failed or was not queued (announced once Redis answers).
    pub publish_failures: Counter,
    /// Batches received from other nodes for users with sockets here.
    pub received: Counter,
    /// Subscriptions (re)established.
    pub subscriptions: Counter,
    /// What the delivery order did.
    pub order: order::OrderStats,
}

impl BusMetrics {
    /// Registers the `portcullis_bus_*` entries (before `Metrics` is shared).
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register("bus_redis_up", "1 while this node's Redis subscription is up (0: events of other nodes wait for Redis; this node's own still reach its sockets)", self.redis_up.clone());
        r.register(
            "bus_published",
            "Event batches published to Redis",
            self.published.clone(),
        );
        r.register("bus_publish_failures", "Event batches whose publish to Redis failed (other nodes fetch them from the store once Redis is back)", self.publish_failures.clone());
        r.register(
            "bus_received",
            "Event batches received from other nodes for users with sockets here",
            self.received.clone(),
        );
        r.register(
            "bus_subscriptions",
            "Redis subscriptions established (more than 1: reconnects)",
            self.subscriptions.clone(),
        );
        let order = &self.order;
        r.register(
            "bus_delivered",
            "Events this node's bus handed to its sockets (once per event, not per socket)",
            order.delivered.clone(),
        );
        r.register(
            "bus_duplicates",
            "Events dropped because this node's sockets already had them",
            order.duplicates.clone(),
        );
        r.register(
            "bus_store_fills",
            "Store reads that filled a gap or resynchronised a thread (what Redis dropped)",
            order.fills.clone(),
        );
    }
}

struct Inner {
    node: u64,
    channel: String,
    local: LocalBus,
    order: order::Order,
    target: Option<RedisTarget>,
    store: OnceCell<Arc<OnceCell<Store>>>,
    queue: mpsc::Sender<Outgoing>,
    /// Threads whose events may not have left, with the seq after which.
    unsent: Mutex<HashMap<ThreadKey, i64>>,
    /// The subscription is up (false until it first is).
    subscribed: AtomicBool,
    /// The last publish succeeded.
    publishing: AtomicBool,
    last_error: Mutex<Option<String>>,
    metrics: BusMetrics,
}

/// See the module header.
pub struct RedisBus {
    inner: Arc<Inner>,
    queue: Mutex<Option<mpsc::Receiver<Outgoing>>>,
}

impl RedisBus {
    /// A bus on `target` (absent only when a checked-but-not-served configuration has no
    /// URL), publishing on the environment's channel.
    pub fn new(env: &str, target: Option<RedisTarget>) -> Self {
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let metrics = BusMetrics::default();
        Self {
            inner: Arc::new(Inner {
                node: rand::random(),
                channel: format!("portcullis:{env}:events"),
                local: LocalBus::default(),
                order: order::Order::new(metrics.order.clone()),
                target,
                store: OnceCell::new(),
                queue: tx,
                unsent: Mutex::new(HashMap::default()),
                subscribed: AtomicBool::new(false),
                publishing: AtomicBool::new(true),
                last_error: Mutex::new(None),
                metrics,
            }),
            queue: Mutex::new(Some(rx)),
        }
    }

    /// Its metrics, for registration.
    pub fn metrics(&self) -> &BusMetrics {
        &self.inner.metrics
    }
}

impl Inner {
    fn store(&self) -> Option<&Store> {
        self.store.get().and_then(|s| s.get())
    }

    /// Remembers that events of a thread after `after` may not have reached Redis.
    fn mark_unsent(&self, user: &Arc<str>, thread: &Arc<str>, after: i64) {
        self.metrics.publish_failures.inc();
        let mut unsent = self.unsent.lock().unwrap_or_else(|p| p.into_inner());
        let e = unsent
            .entry((Arc::clone(user), Arc::clone(thread)))
            .or_insert(after);
        *e = (*e).min(after);
    }

    fn set_error(&self, e: impl ToString) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }
}

impl EventBus for RedisBus {
    fn subscribe(&self, user: &str, conn_id: &str, outbox: Arc<Outbox>) {
        let first = !self.inner.local.has_user(user);
        self.inner.local.subscribe(user, conn_id, outbox);
        if first && !self.inner.subscribed.load(Relaxed) {
            // Redis is away: note where the user's threads stand, so what is missed
            // meanwhile can be fetched when it is back.
            link::snapshot_later(&self.inner, user.to_string());
        }
    }

    fn unsubscribe(&self, user: &str, conn_id: &str) {
        self.inner.local.unsubscribe(user, conn_id);
        if !self.inner.local.has_user(user) {
            self.inner.order.forget(user);
        }
    }

    fn publish(&self, user: &str, events: &[Arc<EventFrame>]) {
        let Some(first) = events.first() else {
            return;
        };
        let inner = &self.inner;
        if inner.local.has_user(user)
            && let Some(fill) = inner
                .order
                .arrive(&inner.local, user, &first.thread_id, events)
        {
            link::fill_later(inner, fill);
        }
        let payload = frame::encode(&Frame::Events {
            node: inner.node,
            user,
            thread: &first.thread_id,
            events: events
                .iter()
                .map(|e| (e.seq, e.kind, e.json.as_str()))
                .collect(),
        });
        let out = Outgoing {
            user: Arc::from(user),
            thread: Arc::clone(&first.thread_id),
            first_seq: first.seq,
            payload,
        };
        if let Err(e) = inner.queue.try_send(out) {
            let out = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            inner.mark_unsent(&out.user, &out.thread, out.first_seq - 1);
        }
    }

    fn notify(&self, user: &str, item: Outbound) -> usize {
        self.inner.local.publish_all(user, [item])
    }

    fn queued_bytes(&self) -> (u64, u64) {
        self.inner.local.queued()
    }

    fn connections_of(&self, user: &str) -> usize {
        self.inner.local.connections_of(user)
    }

    fn start(&self, store: Arc<OnceCell<Store>>, shutdown: CancellationToken) {
        let _ = self.inner.store.set(store);
        let rx = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            link::start(&self.inner, rx, shutdown);
        }
    }

    fn status(&self) -> Option<BusStatus> {
        let inner = &self.inner;
        Some(BusStatus {
            kind: "redis",
            subscribed: inner.subscribed.load(Relaxed),
            publishing: inner.publishing.load(Relaxed),
            unsent_threads: inner.unsent.lock().unwrap_or_else(|p| p.into_inner()).len(),
            last_error: inner
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            node: format!("{:016x}", inner.node),
        })
    }
}
