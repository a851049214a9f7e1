//! Group commit of event writes (`append_events`, `finish_run`) on Postgres: the same
//! mechanism as SQLite's `group.rs`, for the same reason (per-event transactions cost four
//! round trips and a commit each).
//!
//! One writer task per store drains up to [`MAX_BATCH`] queued requests and executes them
//! in one transaction with a fixed number of statements, whatever the batch size: close
//! the finished runs, lock the batch's thread rows in id order (so two nodes' batches
//! cannot deadlock on each other), reserve each thread's seq range once, insert the
//! assistant messages and the events with `UNNEST`. Answers go out only after the commit.
//! Requests that cannot succeed (an inactive run, an unknown thread) are answered with
//! their own error and write nothing; if the batch transaction fails, each request is
//! retried alone through the one-transaction-per-call path, so one bad request cannot
//! fail the others. `accept_message` keeps its own transaction (its unique-index race
//! with other nodes is handled there).

use std::collections::{HashMap, HashSet};

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::PgStore;
use crate::store::error::StoreError;
use crate::store::model::{EventRecord, StoredEvent, completed_body, new_id, now, seal_json};

/// Most requests in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Requests that may wait for the writer before senders wait too (backpressure).
pub(super) const QUEUE: usize = 1024;

/// One write, with where to send its answer.
pub(super) struct Request {
    pub thread_id: String,
    pub op: Op,
}

/// What to write.
pub(super) enum Op {
    Append {
        events: Vec<EventRecord>,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>,
    },
    Finish {
        run_id: String,
        status: String,
        content: String,
        event: EventRecord,
        reply: oneshot::Sender<Result<StoredEvent, StoreError>>,
    },
}

/// The result of one request of a batch.
#[derive(Debug)]
enum Outcome {
    Appended(Vec<StoredEvent>),
    Finished(StoredEvent),
    Failed(StoreError),
}

impl Request {
    fn abandoned(&self) -> bool {
        match &self.op {
            Op::Append { reply, .. } => reply.is_closed(),
            Op::Finish { reply, .. } => reply.is_closed(),
        }
    }

    fn answer(self, outcome: Outcome) {
        // A send fails only when the caller is gone, and then nobody needs the answer.
        match (self.op, outcome) {
            (Op::Append { reply, .. }, Outcome::Appended(v)) => {
                let _ = reply.send(Ok(v));
            }
            (Op::Append { reply, .. }, Outcome::Failed(e)) => {
                let _ = reply.send(Err(e));
            }
            (Op::Finish { reply, .. }, Outcome::Finished(e)) => {
                let _ = reply.send(Ok(e));
            }
            (Op::Finish { reply, .. }, Outcome::Failed(e)) => {
                let _ = reply.send(Err(e));
            }
            (Op::Append { reply, .. }, _) => {
                let _ = reply.send(Err(mismatch()));
            }
            (Op::Finish { reply, .. }, _) => {
                let _ = reply.send(Err(mismatch()));
            }
        }
    }

    /// Executes this request alone, in its own transaction.
    async fn execute_alone(self, pool: &PgPool) -> (Self, Outcome) {
        let outcome = match &self.op {
            Op::Append { events, .. } => {
                match PgStore::append_one(pool, &self.thread_id, events).await {
                    Ok(v) => Outcome::Appended(v),
                    Err(e) => Outcome::Failed(e),
                }
            }
            Op::Finish {
                run_id,
                status,
                content,
                event,
                ..
            } => match PgStore::finish_one(pool, &self.thread_id, run_id, status, content, event)
                .await
            {
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
pub(super) async fn run(pool: PgPool, mut rx: mpsc::Receiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        batch.retain(|r| !r.abandoned());
        match commit_batch(&pool, &batch).await {
            Ok(outcomes) => {
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    request.answer(outcome);
                }
            }
            Err(e) if batch.len() <= 1 => {
                if let Some(request) = batch.pop() {
                    request.answer(Outcome::Failed(e));
                }
            }
            Err(e) => {
                tracing::warn!(
                    requests = batch.len(),
                    error = %e,
                    "group commit failed; retrying each write on its own"
                );
                for request in batch.drain(..) {
                    let (request, outcome) = request.execute_alone(&pool).await;
                    request.answer(outcome);
                }
            }
        }
    }
}

/// A thread's seq range reserved for this batch.
struct Reserved {
    next: i64,
    owner: String,
}

/// Executes a whole batch in one transaction; `Err` means nothing of it is stored.
async fn commit_batch(pool: &PgPool, batch: &[Request]) -> Result<Vec<Outcome>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let at = now();

    // 1. Close the runs being finished; a (run, thread) pair asked twice closes once.
    let (mut f_runs, mut f_threads, mut f_status) = (Vec::new(), Vec::new(), Vec::new());
    let mut asked = HashSet::new();
    for request in batch {
        if let Op::Finish { run_id, status, .. } = &request.op {
            if asked.insert((run_id.as_str(), request.thread_id.as_str())) {
                f_runs.push(run_id.as_str());
                f_threads.push(request.thread_id.as_str());
                f_status.push(status.as_str());
            }
        }
    }
    let mut closed: HashSet<(String, String)> = HashSet::new();
    if !f_runs.is_empty() {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "UPDATE runs r SET status = v.status, finished_at = $1 \
             FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[]) AS v(id, thread_id, status) \
             WHERE r.id = v.id AND r.thread_id = v.thread_id AND r.status = 'running' \
             RETURNING r.id, r.thread_id",
        )
        .bind(&at)
        .bind(&f_runs)
        .bind(&f_threads)
        .bind(&f_status)
        .fetch_all(&mut *tx)
        .await?;
        closed.extend(rows);
    }

    // 2. Seqs each thread needs, in request order.
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
    let mut needs: Vec<(&str, i64)> = Vec::new();
    let mut need_index: HashMap<&str, usize> = HashMap::new();
    for request in batch {
        let count = match &request.op {
            Op::Append { events, .. } => events.len() as i64,
            Op::Finish { run_id, .. } => {
                if closed.remove(&(run_id.clone(), request.thread_id.clone())) {
                    1
                } else {
                    outcomes.push(Some(Outcome::Failed(StoreError::RunNotActive)));
                    continue;
                }
            }
        };
        outcomes.push(None);
        let i = *need_index
            .entry(request.thread_id.as_str())
            .or_insert_with(|| {
                needs.push((request.thread_id.as_str(), 0));
                needs.len() - 1
            });
        needs[i].1 += count;
    }

    // 3. Lock the thread rows in id order, then reserve every range in one statement.
    let mut reserved: HashMap<String, Reserved> = HashMap::with_capacity(needs.len());
    if !needs.is_empty() {
        let mut ids: Vec<&str> = needs.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        sqlx::query("SELECT 1 FROM threads WHERE id = ANY($1::TEXT[]) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let (ids, counts): (Vec<&str>, Vec<i64>) = needs.iter().copied().unzip();
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "UPDATE threads t SET last_seq = t.last_seq + v.n, updated_at = $1 \
             FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS v(id, n) WHERE t.id = v.id \
             RETURNING t.id, t.last_seq, t.user_id",
        )
        .bind(&at)
        .bind(&ids)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await?;
        for (thread_id, last, owner) in rows {
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

    // 4. Assign seqs in request order, seal, and lay out the rows.
    let (mut m_ids, mut m_threads, mut m_users, mut m_contents, mut m_runs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (request, outcome) in batch.iter().zip(outcomes.iter_mut()) {
        if outcome.is_some() {
            continue;
        }
        let thread_id = request.thread_id.as_str();
        let Some(cursor) = reserved.get_mut(thread_id) else {
            if matches!(request.op, Op::Finish { .. }) {
                // Its run was just closed and runs reference their thread.
                return Err(StoreError::Database(
                    "finished a run whose thread has no row".into(),
                ));
            }
            *outcome = Some(Outcome::Failed(StoreError::ThreadNotFound));
            continue;
        };
        *outcome = Some(match &request.op {
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
                let record = EventRecord {
                    run_id: run_id.clone(),
                    body: completed_body(event.body.clone(), status, &message_id, content),
                };
                m_ids.push(message_id);
                m_threads.push(thread_id);
                m_users.push(cursor.owner.clone());
                m_contents.push(content.as_str());
                m_runs.push(run_id.as_str());
                Outcome::Finished(StoredEvent {
                    seq,
                    run_id: run_id.clone(),
                    json: seal_json(thread_id, seq, &record),
                })
            }
        });
    }

    // 5. Assistant messages (in request order), then the events.
    if !m_ids.is_empty() {
        sqlx::query(
            "INSERT INTO messages \
             (id, thread_id, user_id, client_id, role, content, run_id, created_at) \
             SELECT id, t, u, NULL, 'assistant', c, r, $1 \
             FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[]) \
             WITH ORDINALITY AS v(id, t, u, c, r, n) ORDER BY n",
        )
        .bind(&at)
        .bind(&m_ids)
        .bind(&m_threads)
        .bind(&m_users)
        .bind(&m_contents)
        .bind(&m_runs)
        .execute(&mut *tx)
        .await?;
    }
    let (mut e_threads, mut e_seqs, mut e_runs, mut e_bodies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (request, outcome) in batch.iter().zip(&outcomes) {
        let events: &[StoredEvent] = match outcome {
            Some(Outcome::Appended(events)) => events,
            Some(Outcome::Finished(event)) => std::slice::from_ref(event),
            _ => continue,
        };
        for e in events {
            e_threads.push(request.thread_id.as_str());
            e_seqs.push(e.seq);
            e_runs.push(e.run_id.as_str());
            e_bodies.push(e.json.as_str());
        }
    }
    if !e_seqs.is_empty() {
        sqlx::query(
            "INSERT INTO events (thread_id, seq, run_id, body) \
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[])",
        )
        .bind(&e_threads)
        .bind(&e_seqs)
        .bind(&e_runs)
        .bind(&e_bodies)
        .execute(&mut *tx)
        .await?;
    }

    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed(mismatch())))
        .collect())
}
