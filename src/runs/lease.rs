//! The node's lease keeper (process scope, Postgres only): every tick it renews the
//! leases of this node's running runs, cancels those another node was asked to cancel
//! (`Store::request_cancel`), and closes any node's runs whose lease expired, publishing
//! each stored `RUN_INTERRUPTED` completion to the run's user.
//!
//! Cross-node cancel travels through the database, not Redis: a run needs the store to
//! store anything, so the flag reaches its node whenever the run could still make
//! progress, also while Redis is down; the cost is up to one tick of latency.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RunManager;
use crate::bus::EventBus;
use crate::hub::EventFrame;
use crate::store::{ClosedRun, Store};
use crate::wire::EventKind;

/// The longest time between two ticks: bounds how late a cross-node cancel is acted on
/// and how long after its lease a dead node's run stays open.
const MAX_TICK: Duration = Duration::from_millis(500);

/// How often the keeper runs for a lease: at least four renewals per lease, so one or
/// two slow round trips do not let a live run's lease expire.
pub fn tick_for(lease: Duration) -> Duration {
    (lease / 4).min(MAX_TICK)
}

/// Keeps this node's leases until `stop` (fired once the node's runs have drained).
/// Does nothing for a store without a node (SQLite).
pub async fn keep(
    store: Store,
    runs: Arc<RunManager>,
    bus: Arc<dyn EventBus>,
    stop: CancellationToken,
) {
    let Some(node) = store.node() else { return };
    let mut tick = tokio::time::interval(tick_for(node.lease));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if runs.in_flight() > 0 {
            renew(&store, &runs).await;
        }
        match store.close_expired_runs(false).await {
            Ok(closed) => publish_closed(bus.as_ref(), closed),
            Err(e) => tracing::warn!(error = %e, "could not look for runs of dead nodes"),
        }
    }
}

/// One renewal: cancels the runs flagged by other nodes and those no longer running in
/// the database (closed by another node after this one stalled past their lease).
async fn renew(store: &Store, runs: &RunManager) {
    // Listed before the renewal: every listed run's row was committed before it started,
    // so one missing from the answer has really stopped running in the store.
    let before = runs.running_ids();
    let leased = match store.renew_leases().await {
        Ok(leased) => leased,
        Err(e) => {
            tracing::warn!(error = %e, "could not renew the leases of this node's runs");
            return;
        }
    };
    for run in leased.iter().filter(|r| r.cancel_requested) {
        runs.cancel_run(&run.run_id);
    }
    for run_id in before {
        // Usually a run that has just ended; otherwise another node closed it.
        if !leased.iter().any(|r| r.run_id == run_id) && runs.cancel_run(&run_id) {
            tracing::info!(run_id = %run_id, "run no longer running in the store; stopped");
        }
    }
}

/// Waits until no earlier run of the thread runs on any node (runs of one thread take
/// turns across nodes as they do within one), polling every [`TURN_POLL`]; an earlier
/// run of a dead node ends when its lease expires. A store error ends the wait: the run
/// then meets the same error storing its events and ends with it.
/// `before_waiting` runs once, if the run has to wait.
pub async fn wait_for_turn(
    store: &Store,
    thread_id: &str,
    run_id: &str,
    before_waiting: impl FnOnce(),
) {
    let mut before_waiting = Some(before_waiting);
    loop {
        match store.earlier_run_running(thread_id, run_id).await {
            Ok(false) => return,
            Ok(true) => {
                if let Some(f) = before_waiting.take() {
                    f();
                }
                tokio::time::sleep(TURN_POLL).await;
            }
            Err(e) => {
                tracing::warn!(run_id, error = %e, "could not check the thread's turn");
                return;
            }
        }
    }
}

/// How often a run waiting for an earlier run of its thread on another node checks.
const TURN_POLL: Duration = Duration::from_millis(50);

/// Sends each stored completion to its user's connections on this node.
pub fn publish_closed(bus: &dyn EventBus, closed: Vec<ClosedRun>) {
    for run in closed {
        let thread: Arc<str> = Arc::from(run.thread_id.as_str());
        let frame = EventFrame::stored(thread, EventKind::AgentCompleted.as_str(), run.event);
        bus.publish(&run.user_id, &[frame]);
    }
}
