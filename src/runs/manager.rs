//! The process-scope registry of runs in flight (for `cancel`, the lease keeper and
//! shutdown) and the turns of their threads: runs of one thread execute one at a time,
//! in message order, so a thread's events are stored and published in `seq` order.

use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::history::StoreHistory;
use super::{HeldAck, RunDeps};
use crate::agent::{Agent, RunContext};
use crate::store::Accepted;

/// A run in flight, as `cancel` finds it.
pub(super) struct Active {
    user_id: String,
    cancel: CancellationToken,
}

/// Process-scope registry of in-flight runs (for `cancel` and shutdown).
#[derive(Default)]
pub struct RunManager {
    pub(super) active: Mutex<HashMap<String, Active>>,
    /// One turn at a time per thread: runs of a thread execute in message order, so its
    /// events are stored and published in `seq` order (the writer relies on that).
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tracker: TaskTracker,
    cancel_all: CancellationToken,
}

impl RunManager {
    /// Starts the run for a freshly accepted message.
    pub fn start(
        self: &Arc<Self>,
        deps: RunDeps,
        accepted: &Accepted,
        user_id: &str,
        content: &str,
        agent: Arc<Agent>,
        ack: Arc<HeldAck>,
    ) {
        let cancel = self.cancel_all.child_token();
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                accepted.run_id.clone(),
                Active {
                    user_id: user_id.to_string(),
                    cancel: cancel.clone(),
                },
            );
        let ctx = RunContext {
            run_id: accepted.run_id.clone(),
            thread_id: accepted.thread_id.clone(),
            user_id: user_id.to_string(),
            message_id: accepted.message_id.clone(),
            assistant_message_id: String::new(),
            content: content.to_string(),
            cancel,
            history: Arc::new(StoreHistory {
                store: deps.store.clone(),
                user_id: user_id.to_string(),
                thread_id: accepted.thread_id.clone(),
            }),
        };
        self.tracker
            .spawn(Arc::clone(self).task(deps, ctx, agent, ack));
    }

    /// The turn of a thread, made when its first run asks for it.
    pub(super) fn turn_of(&self, thread_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(turns.entry(thread_id.to_string()).or_default())
    }

    /// Forgets a thread's turn lock once no run holds or waits for it.
    pub(super) fn release_turn(&self, thread_id: &str, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        drop(turn);
        if turns
            .get(thread_id)
            .is_some_and(|t| Arc::strong_count(t) == 1)
        {
            turns.remove(thread_id);
        }
    }

    /// Cancels a run of `user_id`; false when there is no such run of theirs.
    pub fn cancel(&self, user_id: &str, run_id: &str) -> bool {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        match active.get(run_id) {
            Some(a) if a.user_id == user_id => {
                a.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Cancels a run of this node whoever it belongs to (a `cancel` another node received,
    /// or a run whose lease this node lost); false when it is not running here.
    pub fn cancel_run(&self, run_id: &str) -> bool {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        match active.get(run_id) {
            Some(a) if !a.cancel.is_cancelled() => {
                a.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// The ids of the runs in flight on this node.
    pub fn running_ids(&self) -> Vec<String> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.keys().cloned().collect()
    }

    /// Runs in flight.
    pub fn in_flight(&self) -> usize {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Lets in-flight runs finish for up to `grace`, then cancels the rest and waits for
    /// their `agent_completed` (bounded).
    pub async fn drain(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                runs = self.in_flight(),
                "grace period over; cancelling runs"
            );
            self.cancel_all.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
    }
}
