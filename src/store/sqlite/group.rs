//! Group commit: one writer task per store turns the writes of concurrent connections and
//! runs (`accept_message`, `append_events`, `finish_run`) into one transaction per batch.
//!
//! Every commit is an fsync (`synchronous = FULL`), so per-event transactions would cost
//! most of a chat run's CPU. The task takes the first queued request, yields to the
//! runtime while that brings more (up to [`GATHER_YIELDS`] times; no timed wait), takes
//! whatever is queued (up to [`MAX_BATCH`]), and hands the batch to one blocking call on
//! the writer's own synchronous connection (`conn.rs`), which executes it in one
//! `BEGIN IMMEDIATE` transaction (`batch.rs`). While it runs (and waits for its fsync)
//! the runtime keeps serving sockets and queueing the next batch. Only after the commit
//! does any caller get its answer, so an `ack` or an event is still never sent before it
//! is durable. Requests that cannot succeed (an inactive run, an unknown thread) are
//! answered with their own error and write nothing; a client id repeated within one
//! batch is executed on its own after the batch; if the batch transaction itself fails,
//! every request is retried in a transaction of its own.
//!
//! The writer is this store's only writer and keeps its connection from batch to batch,
//! so that connection's page cache stays valid (SQLite drops a connection's cache
//! whenever another connection has written the file). It drops the connection when the
//! store's pool is closed, and reopens it after a connection-level error.

use rusqlite::Connection;
use sqlx::sqlite::SqlitePool;
use tokio::sync::mpsc;

use super::batch;
use super::conn::{self, WriterSpec};
use super::request::{Outcome, Request};
use crate::store::error::StoreError;

/// Most requests in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// How many times the writer yields to the runtime, while each yield brings more
/// requests, before it starts a batch. Every task that is ready runs first (and the
/// runtime polls its sockets), so their writes share the commit, and the batch starts as
/// soon as the worker would otherwise have nothing to do.
///
/// A timed wait (like Postgres's `commit_delay`) left the core idle, and a bound of 8 cut
/// batches short under full load; 128 costs a light load nothing (the batch stops at the
/// first yield that brings nothing). Measurements: docs/PERFORMANCE.md items 5 and 7.
const GATHER_YIELDS: usize = 128;
/// Requests that may wait for the writer before senders wait too (backpressure).
pub(super) const QUEUE: usize = 1024;

/// The writer task: runs until every sender (every clone of the store) is gone.
pub(super) async fn run(spec: WriterSpec, pool: SqlitePool, mut rx: mpsc::Receiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let spec = std::sync::Arc::new(spec);
    // Opened (and its statements prepared) before the first request, not in its latency.
    // A failure here is retried by the first batch, which reports it to its callers.
    let mut held: Option<Connection> = {
        let spec = std::sync::Arc::clone(&spec);
        let opened = tokio::task::spawn_blocking(move || conn::open(&spec)).await;
        match opened {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the SQLite writer could not open at boot; the first write retries");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "opening the SQLite writer panicked");
                None
            }
        }
    };
    loop {
        let received = if held.is_some() {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                // The store is closing: let go of the file like the pool does.
                () = pool.close_event() => {
                    held = None;
                    continue;
                }
            }
        } else {
            rx.recv_many(&mut batch, MAX_BATCH).await
        };
        if received == 0 {
            return;
        }
        // Gather more requests before committing (see GATHER_YIELDS): fewer, larger
        // commits cost less CPU per write (one fsync, and each thread's index pages
        // written once per commit).
        for _ in 0..GATHER_YIELDS {
            tokio::task::yield_now().await;
            if drain(&mut rx, &mut batch) == 0 {
                break;
            }
        }
        batch.retain(|r| !r.abandoned());
        if batch.is_empty() {
            continue;
        }
        if pool.is_closed() {
            for request in batch.drain(..) {
                request.answer(Outcome::Failed(StoreError::Unavailable(
                    "the store is closed".into(),
                )));
            }
            continue;
        }
        // The vector comes back with the answers and is reused for the next batch.
        let requests = std::mem::take(&mut batch);
        let spec = std::sync::Arc::clone(&spec);
        let conn = held.take();
        let done = tokio::task::spawn_blocking(move || {
            let mut conn = match conn {
                Some(conn) => conn,
                None => match conn::open(&spec) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let outcomes = requests.iter().map(|_| Outcome::Failed(same_error(&e)));
                        let outcomes = outcomes.collect();
                        return (None, requests, outcomes);
                    }
                },
            };
            let (outcomes, healthy) = batch::execute(&mut conn, &requests);
            // The connection may be broken: the next batch opens a fresh one.
            (healthy.then_some(conn), requests, outcomes)
        })
        .await;
        match done {
            Ok((conn, mut requests, outcomes)) => {
                held = conn;
                // In request order: runs publish their events from these callbacks.
                for (request, outcome) in requests.drain(..).zip(outcomes) {
                    request.answer(outcome);
                }
                batch = requests;
            }
            // A panic in the batch code: its requests went with it (waiting callers see
            // the writer gone; callbacks are dropped uncalled). The writer carries on
            // with a fresh connection.
            Err(e) => tracing::error!(error = %e, "the SQLite writer's batch panicked"),
        }
    }
}

/// Moves every request already queued into `batch` (up to [`MAX_BATCH`]); returns how many.
fn drain(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>) -> usize {
    let before = batch.len();
    while batch.len() < MAX_BATCH {
        let Ok(request) = rx.try_recv() else { break };
        batch.push(request);
    }
    batch.len() - before
}

/// A copy of an error for each request of a batch that failed as a whole.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::ThreadNotFound => StoreError::ThreadNotFound,
        StoreError::RunNotActive => StoreError::RunNotActive,
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Database(m) => StoreError::Database(m.clone()),
        StoreError::BadData(m) => StoreError::BadData(m.clone()),
        StoreError::BadUrl(m) => StoreError::BadUrl(m.clone()),
    }
}
