//! The transaction of one group-commit batch: a fixed number of multi-row statements,
//! whatever the batch holds. Look up repeated client ids, touch or create the threads of
//! new messages, check the runs that appends write to, close the finishing runs (storing
//! their replies), reserve each thread's seq range once, insert the new runs (in request
//! order: a thread's messages are its runs in insertion order) and the events.
//!
//! What each statement gets is worked out by the pure plan (`plan.rs`); each statement
//! is one function in `steps.rs`. This file runs them in order inside the transaction.

use foldhash::HashMap;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::time::{Duration, Instant};

use super::plan::{Placed, Plan};
use super::steps;
use crate::store::error::StoreError;
use crate::store::model::now;
use crate::store::sqlite::request::{Outcome, Request};

/// A commit (with its WAL fsync) at least this slow is logged as a warning. An fsync
/// here usually takes 0.2–0.6 ms (docs/PERFORMANCE.md).
const SLOW_COMMIT: Duration = Duration::from_millis(20);

/// Executes a whole batch in one transaction. `Err` means the transaction failed (and was
/// rolled back): nothing of the batch is stored. Per-request failures that write nothing
/// (`RunNotActive`, `ThreadNotFound`) are `Outcome::Failed` inside `Ok`.
pub(in crate::store::sqlite) fn commit_batch(
    conn: &mut Connection,
    batch: &[Request],
) -> Result<Vec<Outcome>, StoreError> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let at = now();
    let mut plan = Plan::new(batch);
    let placed = place_new_messages(&tx, &at, &mut plan)?;
    let targets = steps::live(&tx, &plan.live)?;
    let closed = steps::close(&tx, &at, &plan.finishes)?;
    let needs = plan.needs(&targets, closed);
    let cursors = steps::reserve(&tx, &at, &needs)?;
    let writes = plan.assign(&placed, cursors, &targets, &needs)?;
    steps::insert_runs(&tx, &at, &writes.runs)?;
    steps::insert_events(&tx, &writes.events.rows)?;
    commit(tx, started, batch.len())?;
    Ok(plan.into_outcomes())
}

/// Step 1: answers new messages whose client id is stored and finds or creates the
/// thread of every other one.
fn place_new_messages(
    tx: &Connection,
    at: &str,
    plan: &mut Plan<'_>,
) -> Result<Placed, StoreError> {
    if plan.keys.is_empty() {
        return Ok(HashMap::default());
    }
    let known = steps::lookup(tx, &plan.keys)?;
    let threads = plan.threads(known);
    let touched = steps::touch(tx, at, &threads.touch)?;
    let created = steps::create_threads(tx, at, &threads.create)?;
    plan.place(threads, touched, created)
}

/// Commits, and warns when the commit was slow.
fn commit(tx: Transaction<'_>, started: Instant, requests: usize) -> Result<(), StoreError> {
    let committing = Instant::now();
    tx.commit()?;
    let commit = committing.elapsed();
    if commit >= SLOW_COMMIT {
        // Every writer waits for this commit (its callers, and the next batch behind it),
        // so a slow disk shows up as a stall of every open run: worth an operator's eye.
        tracing::warn!(
            requests,
            commit_ms = commit.as_secs_f64() * 1e3,
            batch_ms = started.elapsed().as_secs_f64() * 1e3,
            "slow SQLite commit (WAL write and fsync); every queued write waited for it"
        );
    }
    Ok(())
}
