//! `portcullis_store_call_duration_seconds{op}`: how long each store call took as its
//! caller saw it (for the queued SQLite writes, from the call to the commit callback).
//! The histograms are looked up once per op, not per call (a family lookup allocates).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::Label;

/// The store calls that are timed.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    /// `accept_message`.
    Accept,
    /// `append_events` / `append_events_then`.
    Append,
    /// `finish_run` / `finish_run_then`.
    Finish,
    /// `events_after` (resume, replay).
    EventsAfter,
    /// `thread_messages` (history).
    ThreadMessages,
    /// `list_threads`.
    ListThreads,
    /// `thread_owner`.
    ThreadOwner,
    /// `ping` (readiness).
    Ping,
}

const OPS: [&str; 8] = [
    "accept_message",
    "append_events",
    "finish_run",
    "events_after",
    "thread_messages",
    "list_threads",
    "thread_owner",
    "ping",
];

/// The store's latency histograms; clones share them.
#[derive(Debug, Clone)]
pub struct StoreCalls {
    by_op: Arc<[Histogram; OPS.len()]>,
}

impl StoreCalls {
    /// One histogram per op, created in `family` (registered by `Metrics::new`).
    pub(super) fn new(family: &Family<Label, Histogram>) -> StoreCalls {
        let by_op = OPS.map(|op| family.get_or_create(&super::label(op)).clone());
        StoreCalls {
            by_op: Arc::new(by_op),
        }
    }

    /// Records one call.
    pub fn observe(&self, op: StoreOp, took: Duration) {
        self.by_op[op as usize].observe(took.as_secs_f64());
    }

    /// A timer that records `op` when dropped.
    pub fn start(&self, op: StoreOp) -> CallTimer {
        CallTimer {
            calls: self.clone(),
            op,
            started: Instant::now(),
        }
    }
}

/// Records its op's duration when dropped (so early returns and errors count too).
#[derive(Debug)]
pub struct CallTimer {
    calls: StoreCalls,
    op: StoreOp,
    started: Instant,
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        self.calls.observe(self.op, self.started.elapsed());
    }
}

/// The buckets: sub-millisecond for SQLite's commits up to seconds for a struggling
/// Postgres.
pub(super) fn histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    ])
}
