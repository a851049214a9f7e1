//! Runs this process abandoned: their `agent_completed` could not be stored when they
//! ended (the client got it unstored, with status `error` and `STORAGE_UNAVAILABLE`).
//! The store keeps them and stores that same completion later, so a replay never shows
//! a run without its end and no reboot is needed: a sweep every [`SWEEP_INTERVAL`] for
//! as long as the store lives, and at once when the next run of the same thread takes
//! its turn (so the end is stored ahead of that run's events).
//!
//! Only runs this process abandoned are swept, never every `running` row: with several
//! nodes on one database, the other nodes' running runs are alive. Runs still abandoned
//! when the process exits are closed by the next boot's recovery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::{Inner, Store, StoreError};
use crate::wire::EventRecord;

/// How often the store retries storing the completions of abandoned runs. Each round
/// stops at the first failure that may pass (the database is still away), so a longer
/// outage costs one failed call per round.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// An abandoned run and the completion its client was sent.
#[derive(Debug, Clone)]
struct Run {
    thread_id: String,
    run_id: String,
    content: String,
    /// The delivered `agent_completed` body (status `error`, its `error`); the store adds
    /// the reply's message id and the seq.
    event: EventRecord,
    /// Failed attempts that waiting will not fix, logged once.
    faults: u32,
}

/// The runs whose completion is still to be stored, in the order they ended.
#[derive(Debug, Default)]
pub(super) struct Abandoned {
    /// Never held across an await; a run stays listed until its end is stored, also
    /// while an attempt is in progress.
    runs: Mutex<Vec<Run>>,
    /// How many `runs` holds, read without a lock: a run start with nothing abandoned
    /// costs one atomic load.
    count: AtomicUsize,
    /// Held while ends are being stored, so a thread's next run waits for an attempt
    /// already in progress and its own events follow that run's end.
    closing: tokio::sync::Mutex<()>,
}

impl Abandoned {
    fn runs(&self) -> MutexGuard<'_, Vec<Run>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies of the listed runs of `thread_id` (all when `None`), oldest first.
    fn of(&self, thread_id: Option<&str>) -> Vec<Run> {
        let runs = self.runs();
        let wanted = |r: &&Run| thread_id.is_none_or(|t| t == r.thread_id);
        runs.iter().filter(wanted).cloned().collect()
    }

    /// Forgets a run whose end is stored.
    fn remove(&self, run_id: &str) {
        let mut runs = self.runs();
        if let Some(i) = runs.iter().position(|r| r.run_id == run_id) {
            runs.remove(i);
            self.count.fetch_sub(1, Ordering::Release);
        }
    }
}

impl Store {
    /// Takes over a run whose completion (`event`, status `error`, answer `content`)
    /// could not be stored: the store keeps retrying until it is stored or the run is
    /// found closed.
    pub fn abandon(&self, thread_id: &str, run_id: &str, content: &str, event: EventRecord) {
        let abandoned = &self.0.abandoned;
        abandoned.runs().push(Run {
            thread_id: thread_id.to_string(),
            run_id: run_id.to_string(),
            content: content.to_string(),
            event,
            faults: 0,
        });
        abandoned.count.fetch_add(1, Ordering::Release);
    }

    /// Whether any run waits for its completion to be stored.
    pub fn has_abandoned(&self) -> bool {
        self.0.abandoned.count.load(Ordering::Acquire) > 0
    }

    /// Stores the completions of abandoned runs of `thread_id` (of every thread when
    /// `None`), oldest first, after any attempt already in progress. Returns how many
    /// runs remain abandoned.
    pub async fn close_abandoned(&self, thread_id: Option<&str>) -> usize {
        let abandoned = &self.0.abandoned;
        if !self.has_abandoned() || abandoned.of(thread_id).is_empty() {
            return abandoned.count.load(Ordering::Acquire);
        }
        let _closing = abandoned.closing.lock().await;
        // Listed again: an attempt that held the lock may have stored some.
        for run in abandoned.of(thread_id) {
            match self.close_one(&run).await {
                Ok(()) => abandoned.remove(&run.run_id),
                // The database is still away: the rest waits for the next round.
                Err(e) if e.is_retryable() => break,
                Err(e) => {
                    let mut runs = abandoned.runs();
                    if let Some(listed) = runs.iter_mut().find(|r| r.run_id == run.run_id) {
                        if listed.faults == 0 {
                            tracing::error!(run_id = %run.run_id, error = %e, "cannot store the completion of a run that ended unstored; retrying every sweep");
                        }
                        listed.faults += 1;
                    }
                }
            }
        }
        abandoned.count.load(Ordering::Acquire)
    }

    /// Stores one abandoned run's completion; `Ok` also when the run is already closed.
    async fn close_one(&self, run: &Run) -> Result<(), StoreError> {
        let stored = self
            .finish_run(
                &run.thread_id,
                &run.run_id,
                "error",
                &run.content,
                run.event.clone(),
            )
            .await;
        match stored {
            Ok(event) => {
                tracing::info!(run_id = %run.run_id, seq = event.seq, "stored the completion of a run that had ended unstored");
                Ok(())
            }
            // Closed already: an earlier attempt committed and its answer was lost, or a
            // boot's recovery closed it.
            Err(StoreError::RunNotActive) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The sweep task: ends when the store is closed or its last handle is dropped (it holds
/// none between rounds, so it keeps neither the pool nor the SQLite writer alive).
pub(super) async fn run(store: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let store = Store(inner);
        if store.is_closed() {
            return;
        }
        store.close_abandoned(None).await;
    }
}
