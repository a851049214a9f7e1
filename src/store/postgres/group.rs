//! Group commit on Postgres: one writer task per store executes the writes that
//! concurrent runs queued meanwhile as one statement per kind (accepts, appends,
//! finishes, and each run's read of whether it must wait for its turn; `batch.rs`), the
//! kinds side by side on their own connections.
//!
//! A chat run's writes were one round trip each even as single statements, and on
//! loopback the round trip (two wake-ups and context switches on each side), not the SQL,
//! was most of a run's CPU, server and backends alike (docs/PERFORMANCE.md items 11-12).
//! While a batch is on the wire the next one queues, so batches grow with the load and
//! a lone write goes at once. Every statement commits on its own before any caller
//! hears of it. Requests of one batch never depend on each other: a caller waits for
//! each answer before its next write (a run's appends, then its finish).
//!
//! A request that cannot succeed (an inactive run, an unknown thread) gets its own
//! answer from the batch's rows and writes nothing. If the database refuses a batch
//! statement as a whole (an error it sent, so nothing of it committed: a repeated client
//! id, data it refuses, a deadlock with another node), each of its requests is executed
//! again on its own (`write.rs`) and gets its own answer. Any other failure (the
//! connection lost mid-statement, where the commit may or may not have happened) is every
//! request's answer, as it would be for each alone: retrying could store events twice.

use sqlx::postgres::PgPool;
use tokio::sync::mpsc;

use super::request::{Accept, Append, Finish, Reply, Request, Turn};
use super::{batch, write};
use crate::store::error::StoreError;
use crate::store::model::Accepted;
use crate::wire::StoredEvent;

/// Most requests of one kind in one statement.
const MAX_BATCH: usize = 256;
/// Requests that may wait for the writer before senders wait too (backpressure).
pub(super) const QUEUE: usize = 1024;

/// The writer: runs until every sender (every clone of the store) is gone.
pub(super) async fn run(pool: PgPool, mut requests: mpsc::Receiver<Request>) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let mut accepts = Vec::new();
        let mut appends = Vec::new();
        let mut finishes = Vec::new();
        let mut turns = Vec::new();
        for request in queued.drain(..) {
            match request {
                Request::Accept(a, reply) => accepts.push((a, reply)),
                Request::Append(a, reply) => appends.push((a, reply)),
                Request::Finish(f, reply) => finishes.push((f, reply)),
                Request::Turn(t, reply) => turns.push((t, reply)),
            }
        }
        tokio::join!(
            accept_all(&pool, accepts),
            append_all(&pool, appends),
            finish_all(&pool, finishes),
            turn_all(&pool, turns),
        );
    }
}

async fn accept_all(pool: &PgPool, requests: Vec<(Accept, Reply<Accepted>)>) {
    let answers = match requests.as_slice() {
        [] => return,
        [(one, _)] => vec![write::accept(pool, one).await],
        many => {
            let batch: Vec<&Accept> = many.iter().map(|(a, _)| a).collect();
            let whole = batch::accept(pool, &batch).await;
            or_each("accept", batch, whole, |a| write::accept(pool, a)).await
        }
    };
    answer(requests, answers);
}

async fn append_all(pool: &PgPool, requests: Vec<(Append, Reply<Vec<StoredEvent>>)>) {
    let answers = match requests.as_slice() {
        [] => return,
        [(one, _)] => vec![write::append(pool, &one.thread_id, &one.events).await],
        many => {
            let batch: Vec<&Append> = many.iter().map(|(a, _)| a).collect();
            let whole = batch::append(pool, &batch).await;
            or_each("append", batch, whole, |a| {
                write::append(pool, &a.thread_id, &a.events)
            })
            .await
        }
    };
    answer(requests, answers);
}

async fn finish_all(pool: &PgPool, requests: Vec<(Finish, Reply<StoredEvent>)>) {
    // Two finishes of one run in one statement would both see it running: the later
    // ones go on their own after the batch (and find it ended).
    let mut first = Vec::with_capacity(requests.len());
    let mut again = Vec::new();
    for (f, reply) in requests {
        if first
            .iter()
            .any(|(g, _): &(Finish, _)| g.run_id == f.run_id)
        {
            again.push((f, reply));
        } else {
            first.push((f, reply));
        }
    }
    let answers = match first.as_slice() {
        [] => Vec::new(),
        [(one, _)] => vec![write::finish(pool, one).await],
        many => {
            let batch: Vec<&Finish> = many.iter().map(|(f, _)| f).collect();
            let whole = batch::finish(pool, &batch).await;
            or_each("finish", batch, whole, |f| write::finish(pool, f)).await
        }
    };
    answer(first, answers);
    for (f, reply) in again {
        let _ = reply.send(write::finish(pool, &f).await);
    }
}

async fn turn_all(pool: &PgPool, requests: Vec<(Turn, Reply<bool>)>) {
    if requests.is_empty() {
        return;
    }
    let batch: Vec<&Turn> = requests.iter().map(|(t, _)| t).collect();
    let answers = match batch::turns(pool, &batch).await {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(e) => shared_error(e, batch.len()),
    };
    answer(requests, answers);
}

/// A batch statement's answers or, when the database refused it as a whole (an error it
/// sent, so nothing of it committed), each request's answer on its own (`each`).
async fn or_each<'r, R, T, F>(
    kind: &str,
    batch: Vec<&'r R>,
    whole: Result<Vec<Result<T, StoreError>>, sqlx::Error>,
    each: impl Fn(&'r R) -> F,
) -> Vec<Result<T, StoreError>>
where
    F: Future<Output = Result<T, StoreError>>,
{
    match whole {
        Err(sqlx::Error::Database(e)) => {
            tracing::debug!(error = %e, "{kind} batch refused; one by one");
            let mut answers = Vec::with_capacity(batch.len());
            for request in batch {
                answers.push(each(request).await);
            }
            answers
        }
        Err(e) => shared_error(e, batch.len()),
        Ok(answers) => answers,
    }
}

/// One failure as the answer of every request of a batch.
fn shared_error<T>(error: sqlx::Error, n: usize) -> Vec<Result<T, StoreError>> {
    let error = StoreError::from(error);
    (0..n).map(|_| Err(error.clone())).collect()
}

/// Sends each request its answer (a caller that gave up is no error).
fn answer<R, T>(requests: Vec<(R, Reply<T>)>, answers: Vec<Result<T, StoreError>>) {
    debug_assert_eq!(requests.len(), answers.len());
    for ((_, reply), result) in requests.into_iter().zip(answers) {
        let _ = reply.send(result);
    }
}
