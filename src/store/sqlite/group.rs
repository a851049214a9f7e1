//! Group commit: one writer task per store turns the writes of concurrent connections and
//! runs (`accept_message`, `append_events`, `finish_run`) into one transaction per batch.
//!
//! Every SQLite statement is a hop to sqlx's worker thread and every commit an fsync
//! (`synchronous = FULL`), so per-event transactions cost most of a chat run's CPU. The
//! task takes the first queued request, yields to the runtime while that brings more
//! (up to [`GATHER_YIELDS`] times; no timed wait), takes whatever is queued (up to
//! [`MAX_BATCH`]), and executes all of them in one `BEGIN IMMEDIATE` transaction with a
//! fixed number of multi-row statements: look up repeated client ids, touch or create
//! the threads of new messages, close the finished runs, reserve each thread's seq range
//! once, insert the messages (user and assistant, in request order), the new runs and
//! the events. Only after the commit does any caller get its answer, so an `ack` or an
//! event is still never sent before it is durable. Requests that cannot succeed (an
//! inactive run, an unknown thread) are answered with their own error and write nothing;
//! a client id repeated within one batch is executed on its own after the batch (it then
//! finds the first one's ids); if the batch transaction itself fails, every request is
//! retried in a transaction of its own, so one bad request cannot fail the others.
//!
//! The task is this store's only writer and keeps one pooled connection while it has
//! work, so that connection's page cache stays valid from batch to batch (SQLite drops a
//! connection's cache whenever another connection has written the file). It gives the
//! connection back when the pool is closed, or after a connection-level error.

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{AssertSqlSafe, Connection, Sqlite, Transaction};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use super::{accept_one, append_one, finish_one};
use crate::store::OnCommit;
use crate::store::error::StoreError;
use crate::store::model::{
    Accepted, EventRecord, NewMessage, StoredEvent, completed_body, new_id, now, seal, seal_json,
    title_from,
};

/// Most requests in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// How many times the writer yields to the runtime, while each yield brings more
/// requests, before it starts a batch. Every task that is ready runs first (and the
/// runtime polls its sockets), so their writes share the commit, and the batch starts as
/// soon as the worker would otherwise have nothing to do.
///
/// It replaced a timed wait (1 ms when the previous batch was large, like Postgres's
/// `commit_delay`), which left the core idle: measured with `portcullis-loadgen chat`
/// (docs/PERFORMANCE.md), at C=100 yields alone gave round-trip p50 15.0 vs 16.5 ms and
/// p99 20.2 vs 22.7 ms (four interleaved runs each, medians), the server busy 0.89 vs
/// 0.86 of the time; at C=10, p50 4.7 vs 5.5 ms (three runs each) at more CPU per run
/// (351 vs 252 µs: smaller commits when the load is light).
const GATHER_YIELDS: usize = 8;
/// A commit (with its WAL fsync) at least this slow is logged as a warning. An fsync
/// here usually takes 0.2–0.6 ms (docs/PERFORMANCE.md).
const SLOW_COMMIT: Duration = Duration::from_millis(20);
/// Requests that may wait for the writer before senders wait too (backpressure).
pub(super) const QUEUE: usize = 1024;
/// Most rows in one multi-row statement; a power of two (see [`chunks`]).
const MAX_ROWS: usize = 64;

/// One write, with where to send its answer.
pub(super) struct Request {
    /// The thread appended to or whose run finishes; unused (empty) for `Accept`.
    pub thread_id: String,
    pub op: Op,
}

/// What to write.
pub(super) enum Op {
    Accept {
        user_id: String,
        client_id: String,
        thread_id: Option<String>,
        content: String,
        agent: String,
        reply: oneshot::Sender<Result<Accepted, StoreError>>,
    },
    Append {
        events: Vec<EventRecord>,
        reply: Reply<Vec<StoredEvent>>,
    },
    Finish {
        run_id: String,
        status: String,
        content: String,
        event: EventRecord,
        reply: Reply<StoredEvent>,
    },
}

/// Where a write's result goes: to a caller waiting for it, or to a callback the writer
/// runs right after the commit, in request order (runs publish their events from there).
pub(crate) enum Reply<T> {
    Wait(oneshot::Sender<Result<T, StoreError>>),
    Then(OnCommit<T>),
}

impl<T> Reply<T> {
    /// A waiting caller went away; a callback always wants its result.
    fn is_closed(&self) -> bool {
        match self {
            Reply::Wait(tx) => tx.is_closed(),
            Reply::Then(_) => false,
        }
    }

    fn send(self, result: Result<T, StoreError>) {
        match self {
            // Fails only when the caller is gone, and then nobody needs the answer.
            Reply::Wait(tx) => {
                let _ = tx.send(result);
            }
            Reply::Then(then) => then(result),
        }
    }
}

/// The result of one request of a batch.
#[derive(Debug)]
pub(super) enum Outcome {
    Accepted(Accepted),
    Appended(Vec<StoredEvent>),
    Finished(StoredEvent),
    Failed(StoreError),
    /// Not executed in the batch: run it on its own once the batch has committed.
    Alone,
}

impl Request {
    /// The caller stopped waiting (its future was dropped): nothing to do for it.
    fn abandoned(&self) -> bool {
        match &self.op {
            Op::Accept { reply, .. } => reply.is_closed(),
            Op::Append { reply, .. } => reply.is_closed(),
            Op::Finish { reply, .. } => reply.is_closed(),
        }
    }

    fn answer(self, outcome: Outcome) {
        // A send fails only when the caller is gone, and then nobody needs the answer.
        match (self.op, outcome) {
            (Op::Accept { reply, .. }, Outcome::Accepted(v)) => {
                let _ = reply.send(Ok(v));
            }
            (Op::Accept { reply, .. }, Outcome::Failed(e)) => {
                let _ = reply.send(Err(e));
            }
            (Op::Accept { reply, .. }, _) => {
                let _ = reply.send(Err(mismatch()));
            }
            (Op::Append { reply, .. }, Outcome::Appended(v)) => reply.send(Ok(v)),
            (Op::Finish { reply, .. }, Outcome::Finished(e)) => reply.send(Ok(e)),
            (Op::Append { reply, .. }, Outcome::Failed(e)) => reply.send(Err(e)),
            (Op::Finish { reply, .. }, Outcome::Failed(e)) => reply.send(Err(e)),
            (Op::Append { reply, .. }, _) => reply.send(Err(mismatch())),
            (Op::Finish { reply, .. }, _) => reply.send(Err(mismatch())),
        }
    }

    /// Executes this request alone, in its own transaction.
    async fn execute_alone(self, conn: &mut SqliteConnection) -> (Self, Outcome) {
        let outcome = match &self.op {
            Op::Accept {
                user_id,
                client_id,
                thread_id,
                content,
                agent,
                ..
            } => {
                let msg = NewMessage {
                    user_id,
                    client_id,
                    thread_id: thread_id.as_deref(),
                    content,
                    agent,
                };
                match accept_one(conn, msg).await {
                    Ok(v) => Outcome::Accepted(v),
                    Err(e) => Outcome::Failed(e),
                }
            }
            Op::Append { events, .. } => match append_one(conn, &self.thread_id, events).await {
                Ok(v) => Outcome::Appended(v),
                Err(e) => Outcome::Failed(e),
            },
            Op::Finish {
                run_id,
                status,
                content,
                event,
                ..
            } => match finish_one(conn, &self.thread_id, run_id, status, content, event).await {
                Ok(v) => Outcome::Finished(v),
                Err(e) => Outcome::Failed(e),
            },
        };
        (self, outcome)
    }
}

fn mismatch() -> StoreError {
    StoreError::Database("group commit answered with the wrong kind of result".into())
}

/// The writer task: runs until every sender (every clone of the store) is gone.
pub(super) async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<PoolConnection<Sqlite>> = None;
    loop {
        let received = if held.is_some() {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                // `close` waits for checked-out connections: give ours back.
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
        let conn = match &mut held {
            Some(conn) => conn,
            None => match pool.acquire().await {
                Ok(conn) => held.insert(conn),
                Err(e) => {
                    let e = StoreError::from(e);
                    for request in batch.drain(..) {
                        request.answer(Outcome::Failed(same_error(&e)));
                    }
                    continue;
                }
            },
        };
        if !execute(conn, &mut batch).await {
            // The connection may be broken: take a fresh one for the next batch.
            held = None;
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

/// Executes and answers a batch; false if a connection-level error was seen.
async fn execute(conn: &mut SqliteConnection, batch: &mut Vec<Request>) -> bool {
    match commit_batch(conn, batch).await {
        Ok(outcomes) => {
            let mut alone = Vec::new();
            for (request, outcome) in batch.drain(..).zip(outcomes) {
                match outcome {
                    Outcome::Alone => alone.push(request),
                    outcome => request.answer(outcome),
                }
            }
            let mut healthy = true;
            for request in alone {
                let (request, outcome) = request.execute_alone(conn).await;
                healthy &= !matches!(outcome, Outcome::Failed(StoreError::Unavailable(_)));
                request.answer(outcome);
            }
            healthy
        }
        Err(e) if batch.len() == 1 => {
            let healthy = !matches!(e, StoreError::Unavailable(_));
            if let Some(request) = batch.pop() {
                request.answer(Outcome::Failed(e));
            }
            healthy
        }
        Err(e) => {
            tracing::warn!(
                requests = batch.len(),
                error = %e,
                "group commit failed; retrying each write on its own"
            );
            let mut healthy = !matches!(e, StoreError::Unavailable(_));
            for request in batch.drain(..) {
                let (request, outcome) = request.execute_alone(conn).await;
                healthy &= !matches!(outcome, Outcome::Failed(StoreError::Unavailable(_)));
                request.answer(outcome);
            }
            healthy
        }
    }
}

/// A copy of an error for each request of a batch that failed as a whole.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::ThreadNotFound => StoreError::ThreadNotFound,
        StoreError::RunNotActive => StoreError::RunNotActive,
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Database(m) => StoreError::Database(m.clone()),
        StoreError::BadUrl(m) => StoreError::BadUrl(m.clone()),
    }
}

/// Splits `0..len` into ranges of at most [`MAX_ROWS`], the last ones powers of two, so
/// that only a handful of distinct statement texts (and cached prepared statements)
/// exist per table however the batch sizes vary.
fn chunks(len: usize) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = len - start;
        if left == 0 {
            return None;
        }
        let size = if left >= MAX_ROWS {
            MAX_ROWS
        } else {
            1 << (usize::BITS - 1 - left.leading_zeros())
        };
        let range = start..start + size;
        start += size;
        Some(range)
    })
}

/// `head` followed by `rows` copies of `tuple`, comma-separated, then `tail`.
fn multi_row(head: &str, tuple: &str, rows: usize, tail: &str) -> AssertSqlSafe<String> {
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 2) + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(tuple);
    }
    sql.push_str(tail);
    AssertSqlSafe(sql)
}

/// A thread's seq range reserved for this batch.
struct Reserved {
    next: i64,
    owner: String,
}

/// Executes a whole batch in one transaction. `Err` means the transaction failed (and was
/// rolled back): nothing of the batch is stored. Per-request failures that write nothing
/// (`RunNotActive`, `ThreadNotFound`) are `Outcome::Failed` inside `Ok`.
pub(super) async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &[Request],
) -> Result<Vec<Outcome>, StoreError> {
    let started = Instant::now();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let at = now();
    let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();

    // 1. New user messages: a client id already stored is answered with its ids; one
    // repeated within the batch runs alone afterwards (and then finds the first).
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut accepts: Vec<usize> = Vec::new();
    let mut key_seen = HashSet::new();
    for (i, request) in batch.iter().enumerate() {
        if let Op::Accept {
            user_id, client_id, ..
        } = &request.op
        {
            if key_seen.insert((user_id.as_str(), client_id.as_str())) {
                keys.push((user_id, client_id));
                accepts.push(i);
            } else {
                outcomes[i] = Some(Outcome::Alone);
            }
        }
    }
    let mut known: HashMap<(String, String), Accepted> = HashMap::new();
    for range in chunks(keys.len()) {
        let sql = multi_row(
            "SELECT m.user_id, m.client_id, m.thread_id, m.id, m.run_id FROM (VALUES ",
            "(?, ?)",
            range.len(),
            ") AS v JOIN messages m ON m.user_id = v.column1 AND m.client_id = v.column2",
        );
        let mut query = sqlx::query_as::<_, (String, String, String, String, String)>(sql);
        for &(user_id, client_id) in &keys[range] {
            query = query.bind(user_id).bind(client_id);
        }
        for (user_id, client_id, thread_id, message_id, run_id) in query.fetch_all(&mut *tx).await?
        {
            let seen = Accepted {
                thread_id,
                message_id,
                run_id,
                duplicate: true,
            };
            known.insert((user_id, client_id), seen);
        }
    }
    // Each new message's thread: an existing one (touched, and checked to be the user's)
    // or a new one.
    let mut touch: Vec<(&str, &str)> = Vec::new();
    let mut new_threads: Vec<(String, &str, String)> = Vec::new(); // (id, user, title)
    let mut accept_thread: HashMap<usize, String> = HashMap::new();
    for &i in &accepts {
        let Op::Accept {
            user_id,
            client_id,
            thread_id,
            content,
            ..
        } = &batch[i].op
        else {
            continue;
        };
        if let Some(seen) = known.remove(&(user_id.clone(), client_id.clone())) {
            outcomes[i] = Some(Outcome::Accepted(seen));
            continue;
        }
        match thread_id {
            Some(id) => touch.push((id, user_id)),
            None => {
                let id = new_id("t");
                accept_thread.insert(i, id.clone());
                new_threads.push((id, user_id, title_from(content)));
            }
        }
    }
    let mut touched: HashSet<(String, String)> = HashSet::new();
    let mut asked_touch = HashSet::new();
    touch.retain(|pair| asked_touch.insert(*pair));
    for range in chunks(touch.len()) {
        let sql = multi_row(
            "UPDATE threads SET updated_at = ? FROM (VALUES ",
            "(?, ?)",
            range.len(),
            ") AS v WHERE threads.id = v.column1 AND threads.user_id = v.column2 \
             RETURNING threads.id, threads.user_id",
        );
        let mut query = sqlx::query_as::<_, (String, String)>(sql).bind(&at);
        for &(thread_id, user_id) in &touch[range] {
            query = query.bind(thread_id).bind(user_id);
        }
        touched.extend(query.fetch_all(&mut *tx).await?);
    }
    for &i in &accepts {
        if outcomes[i].is_some() || accept_thread.contains_key(&i) {
            continue;
        }
        if let Op::Accept {
            user_id,
            thread_id: Some(id),
            ..
        } = &batch[i].op
        {
            if touched.contains(&(id.clone(), user_id.clone())) {
                accept_thread.insert(i, id.clone());
            } else {
                // Missing or someone else's: both answer ThreadNotFound.
                outcomes[i] = Some(Outcome::Failed(StoreError::ThreadNotFound));
            }
        }
    }
    for range in chunks(new_threads.len()) {
        let sql = multi_row(
            "INSERT INTO threads (id, user_id, title, created_at, updated_at) VALUES ",
            "(?, ?, ?, ?, ?)",
            range.len(),
            "",
        );
        let mut query = sqlx::query(sql);
        for (id, user_id, title) in &new_threads[range] {
            query = query
                .bind(id)
                .bind(*user_id)
                .bind(title)
                .bind(&at)
                .bind(&at);
        }
        query.execute(&mut *tx).await?;
    }

    // 2. Close the runs being finished. A (run, thread) pair asked for twice in one
    // batch is closed once; only its first request may succeed.
    let mut finishes: Vec<(&str, &str, &str)> = Vec::new();
    let mut asked = HashSet::new();
    for request in batch {
        if let Op::Finish { run_id, status, .. } = &request.op {
            if asked.insert((run_id.as_str(), request.thread_id.as_str())) {
                finishes.push((run_id, &request.thread_id, status));
            }
        }
    }
    let mut closed: HashSet<(String, String)> = HashSet::new();
    for range in chunks(finishes.len()) {
        let sql = multi_row(
            "UPDATE runs SET status = v.column3, finished_at = ? FROM (VALUES ",
            "(?, ?, ?)",
            range.len(),
            ") AS v WHERE runs.id = v.column1 AND runs.thread_id = v.column2 \
             AND runs.status = 'running' RETURNING runs.id, runs.thread_id",
        );
        let mut query = sqlx::query_as::<_, (String, String)>(sql).bind(&at);
        for &(run_id, thread_id, status) in &finishes[range] {
            query = query.bind(run_id).bind(thread_id).bind(status);
        }
        closed.extend(query.fetch_all(&mut *tx).await?);
    }

    // 3. Seqs each thread needs, counted in request order.
    let mut needs: Vec<(&str, i64)> = Vec::new();
    let mut need_index: HashMap<&str, usize> = HashMap::new();
    for (request, outcome) in batch.iter().zip(outcomes.iter_mut()) {
        let count = match &request.op {
            Op::Accept { .. } => continue,
            Op::Append { events, .. } => events.len() as i64,
            Op::Finish { run_id, .. } => {
                if closed.remove(&(run_id.clone(), request.thread_id.clone())) {
                    1
                } else {
                    *outcome = Some(Outcome::Failed(StoreError::RunNotActive));
                    continue;
                }
            }
        };
        let i = *need_index
            .entry(request.thread_id.as_str())
            .or_insert_with(|| {
                needs.push((request.thread_id.as_str(), 0));
                needs.len() - 1
            });
        needs[i].1 += count;
    }

    // 4. Reserve every thread's range with one statement per chunk of threads.
    let mut reserved: HashMap<String, Reserved> = HashMap::with_capacity(needs.len());
    for range in chunks(needs.len()) {
        let sql = multi_row(
            "UPDATE threads SET last_seq = last_seq + v.column2, updated_at = ? FROM (VALUES ",
            "(?, ?)",
            range.len(),
            ") AS v WHERE threads.id = v.column1 \
             RETURNING threads.id, threads.last_seq, threads.user_id",
        );
        let mut query = sqlx::query_as::<_, (String, i64, String)>(sql).bind(&at);
        for &(thread_id, count) in &needs[range] {
            query = query.bind(thread_id).bind(count);
        }
        for (thread_id, last, owner) in query.fetch_all(&mut *tx).await? {
            let count = need_index
                .get(thread_id.as_str())
                .map(|&i| needs[i].1)
                .ok_or_else(|| StoreError::Database("seq reserved for an unknown thread".into()))?;
            reserved.insert(
                thread_id,
                Reserved {
                    next: last - count + 1,
                    owner,
                },
            );
        }
    }

    // 5. Assign seqs in request order, seal the events, and lay out the messages (user
    // and assistant) and new runs in request order: thread order is insertion order.
    let mut messages: Vec<MessageRow<'_>> = Vec::new();
    // (run id, thread id, message id, agent) of each new run.
    let mut runs: Vec<(String, String, String, &str)> = Vec::new();
    for (i, (request, outcome)) in batch.iter().zip(outcomes.iter_mut()).enumerate() {
        if outcome.is_some() {
            continue;
        }
        if let Op::Accept {
            user_id,
            client_id,
            content,
            agent,
            ..
        } = &request.op
        {
            let Some(thread_id) = accept_thread.remove(&i) else {
                return Err(StoreError::Database("a new message has no thread".into()));
            };
            let message_id = new_id("m");
            let run_id = new_id("r");
            messages.push(MessageRow {
                id: message_id.clone(),
                thread_id: thread_id.clone(),
                user_id: user_id.clone(),
                client_id: Some(client_id),
                role: "user",
                content,
                run_id: run_id.clone(),
            });
            runs.push((run_id.clone(), thread_id.clone(), message_id.clone(), agent));
            *outcome = Some(Outcome::Accepted(Accepted {
                thread_id,
                message_id,
                run_id,
                duplicate: false,
            }));
            continue;
        }
        let thread_id = request.thread_id.as_str();
        let Some(cursor) = reserved.get_mut(thread_id) else {
            *outcome = Some(match &request.op {
                // Its run row was just closed, and runs reference their thread: the
                // database disagrees with itself, so let the whole batch retry alone.
                Op::Finish { .. } => {
                    return Err(StoreError::Database(
                        "finished a run whose thread has no row".into(),
                    ));
                }
                _ => Outcome::Failed(StoreError::ThreadNotFound),
            });
            continue;
        };
        *outcome = Some(match &request.op {
            Op::Accept { .. } => continue,
            Op::Append { events, .. } => Outcome::Appended(
                events
                    .iter()
                    .map(|record| {
                        let seq = cursor.next;
                        cursor.next += 1;
                        StoredEvent {
                            seq,
                            run_id: record.run_id.clone(),
                            json: seal_json(thread_id, seq, record),
                        }
                    })
                    .collect(),
            ),
            Op::Finish {
                run_id,
                status,
                content,
                event,
                ..
            } => {
                let seq = cursor.next;
                cursor.next += 1;
                let message_id = new_id("m");
                let body = completed_body(event.body.clone(), status, &message_id, content);
                let record = EventRecord {
                    run_id: run_id.clone(),
                    body,
                };
                messages.push(MessageRow {
                    id: message_id,
                    thread_id: thread_id.to_string(),
                    user_id: cursor.owner.clone(),
                    client_id: None,
                    role: "assistant",
                    content,
                    run_id: run_id.clone(),
                });
                Outcome::Finished(seal(thread_id, seq, record))
            }
        });
    }

    // 6. The messages and new runs.
    for range in chunks(messages.len()) {
        let sql = multi_row(
            "INSERT INTO messages \
             (id, thread_id, user_id, client_id, role, content, run_id, created_at) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?, ?)",
            range.len(),
            "",
        );
        let mut query = sqlx::query(sql);
        for m in &messages[range] {
            query = query
                .bind(&m.id)
                .bind(&m.thread_id)
                .bind(&m.user_id)
                .bind(m.client_id)
                .bind(m.role)
                .bind(m.content)
                .bind(&m.run_id)
                .bind(&at);
        }
        query.execute(&mut *tx).await?;
    }
    for range in chunks(runs.len()) {
        let sql = multi_row(
            "INSERT INTO runs (id, thread_id, message_id, agent, status, started_at) VALUES ",
            "(?, ?, ?, ?, 'running', ?)",
            range.len(),
            "",
        );
        let mut query = sqlx::query(sql);
        for (run_id, thread_id, message_id, agent) in &runs[range] {
            query = query
                .bind(run_id)
                .bind(thread_id)
                .bind(message_id)
                .bind(*agent)
                .bind(&at);
        }
        query.execute(&mut *tx).await?;
    }

    // 7. The events.
    let mut rows: Vec<(&str, &StoredEvent)> = Vec::new();
    for (request, outcome) in batch.iter().zip(&outcomes) {
        match outcome {
            Some(Outcome::Appended(events)) => {
                rows.extend(events.iter().map(|e| (request.thread_id.as_str(), e)));
            }
            Some(Outcome::Finished(event)) => rows.push((request.thread_id.as_str(), event)),
            _ => {}
        }
    }
    insert_events(&mut tx, &rows).await?;

    let committing = Instant::now();
    tx.commit().await?;
    let commit = committing.elapsed();
    if commit >= SLOW_COMMIT {
        // Every writer waits for this commit (its callers, and the next batch behind it),
        // so a slow disk shows up as a stall of every open run: worth an operator's eye.
        tracing::warn!(
            requests = batch.len(),
            commit_ms = commit.as_secs_f64() * 1e3,
            batch_ms = started.elapsed().as_secs_f64() * 1e3,
            "slow SQLite commit (WAL write and fsync); every queued write waited for it"
        );
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed(mismatch())))
        .collect())
}

/// A message row of a batch.
struct MessageRow<'a> {
    id: String,
    thread_id: String,
    user_id: String,
    client_id: Option<&'a str>,
    role: &'static str,
    content: &'a str,
    run_id: String,
}

async fn insert_events(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[(&str, &StoredEvent)],
) -> Result<(), StoreError> {
    for range in chunks(rows.len()) {
        let sql = multi_row(
            "INSERT INTO events (thread_id, seq, run_id, body) VALUES ",
            "(?, ?, ?, ?)",
            range.len(),
            "",
        );
        let mut query = sqlx::query(sql);
        for (thread_id, event) in &rows[range] {
            query = query
                .bind(*thread_id)
                .bind(event.seq)
                .bind(event.run_id.as_str())
                .bind(event.json.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_the_range_in_few_distinct_sizes() {
        for len in 0..300 {
            let ranges: Vec<_> = chunks(len).collect();
            let mut next = 0;
            for r in &ranges {
                assert_eq!(r.start, next);
                assert!(r.len().is_power_of_two() && r.len() <= super::MAX_ROWS);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
}
