//! One group-commit batch, executed synchronously on the writer's connection (`conn.rs`)
//! inside one `BEGIN IMMEDIATE` transaction with a fixed number of multi-row statements:
//! look up repeated client ids, touch or create the threads of new messages, close the
//! finished runs, reserve each thread's seq range once, insert the messages (user and
//! assistant, in request order), the new runs and the events.
//!
//! Runs on a blocking thread (`group.rs` hands it the batch); nothing here awaits.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use rusqlite::{Connection, Row, ToSql, TransactionBehavior};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::group::{Op, Outcome, Request, mismatch};
use crate::store::error::StoreError;
use crate::store::model::{
    Accepted, EventRecord, StoredEvent, completed_body, new_id, now, seal, seal_json, title_from,
};

/// Most rows in one multi-row statement; a power of two (see [`chunks`]).
const MAX_ROWS: usize = 64;
/// A commit (with its WAL fsync) at least this slow is logged as a warning. An fsync
/// here usually takes 0.2–0.6 ms (docs/PERFORMANCE.md).
const SLOW_COMMIT: Duration = Duration::from_millis(20);

/// Executes a batch and returns each request's outcome, in order: first in one
/// transaction; a client id repeated within the batch then runs alone (and finds the
/// first one's ids); if the batch transaction fails, every request runs in a transaction
/// of its own, so one bad request cannot fail the others. The flag is false when a
/// connection-level error (`Unavailable`) was seen: the caller reopens the connection.
pub(super) fn execute(conn: &mut Connection, batch: &[Request]) -> (Vec<Outcome>, bool) {
    match commit_batch(conn, batch) {
        Ok(mut outcomes) => {
            let mut healthy = true;
            for (request, outcome) in batch.iter().zip(outcomes.iter_mut()) {
                if matches!(outcome, Outcome::Alone) {
                    *outcome = alone(conn, request);
                    healthy &= !unavailable(outcome);
                }
            }
            (outcomes, healthy)
        }
        Err(e) if batch.len() == 1 => {
            let healthy = !matches!(e, StoreError::Unavailable(_));
            (vec![Outcome::Failed(e)], healthy)
        }
        Err(e) => {
            tracing::warn!(
                requests = batch.len(),
                error = %e,
                "group commit failed; retrying each write on its own"
            );
            let mut healthy = !matches!(e, StoreError::Unavailable(_));
            let outcomes = batch
                .iter()
                .map(|request| {
                    let outcome = alone(conn, request);
                    healthy &= !unavailable(&outcome);
                    outcome
                })
                .collect();
            (outcomes, healthy)
        }
    }
}

/// One request in a transaction of its own.
fn alone(conn: &mut Connection, request: &Request) -> Outcome {
    match commit_batch(conn, std::slice::from_ref(request)) {
        Ok(mut outcomes) => match outcomes.pop() {
            // A batch of one has no repeated client id, so it is never `Alone`.
            Some(Outcome::Alone) | None => Outcome::Failed(mismatch()),
            Some(outcome) => outcome,
        },
        Err(e) => Outcome::Failed(e),
    }
}

fn unavailable(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(StoreError::Unavailable(_)))
}

/// Splits `0..len` into ranges of at most [`MAX_ROWS`], the last ones powers of two, so
/// that only a handful of distinct statement texts (and cached prepared statements)
/// exist per table however the batch sizes vary.
pub(super) fn chunks(len: usize) -> impl Iterator<Item = Range<usize>> {
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
fn multi_row(head: &str, tuple: &str, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 2) + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(tuple);
    }
    sql.push_str(tail);
    sql
}

/// A multi-row statement: its text before the rows, one row's tuple, its text after.
type Shape = (&'static str, &'static str, &'static str);

/// Looks up (user id, client id) pairs among the stored user messages.
const LOOKUP: Shape = (
    "SELECT m.user_id, m.client_id, m.thread_id, m.id, m.run_id FROM (VALUES ",
    "(?, ?)",
    ") AS v JOIN messages m ON m.user_id = v.column1 AND m.client_id = v.column2",
);

/// The text of [`LOOKUP`] for `rows` pairs (the query-plan test checks it).
#[cfg(test)]
pub(super) fn lookup_sql(rows: usize) -> String {
    multi_row(LOOKUP.0, LOOKUP.1, rows, LOOKUP.2)
}

/// Runs one `shape` statement per chunk of `items` (see [`chunks`]). Its parameters are
/// `fixed`, then what `params` adds for each item of the chunk; `row` sees every row it
/// returns (none for an `INSERT`).
fn per_chunk<'a, T>(
    conn: &Connection,
    shape: Shape,
    items: &'a [T],
    fixed: &[&'a dyn ToSql],
    params: impl Fn(&'a T, &mut Vec<&'a dyn ToSql>),
    mut row: impl FnMut(&Row<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut values: Vec<&'a dyn ToSql> = Vec::new();
    for range in chunks(items.len()) {
        let mut stmt = conn.prepare_cached(&multi_row(shape.0, shape.1, range.len(), shape.2))?;
        values.clear();
        values.extend_from_slice(fixed);
        for item in &items[range] {
            params(item, &mut values);
        }
        for (i, value) in values.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, value)?;
        }
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            row(r)?;
        }
    }
    Ok(())
}

/// For statements that return nothing.
fn no_rows(_: &Row<'_>) -> Result<(), StoreError> {
    Ok(())
}

/// A thread's seq range reserved for this batch.
struct Reserved {
    next: i64,
    owner: String,
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

// Every write of a batch is a multi-row statement `OR FAIL`. SQLite gives a multi-row
// statement a statement journal (a copy of every page it changes, so that a failing row
// can undo the statement's earlier rows) when a constraint could `ABORT` it, the default
// conflict behaviour. A batch never keeps part of a failed statement (any error rolls
// the whole transaction back), so `FAIL`, which keeps the earlier rows, is as good here
// and needs no such journal. The constraints are all still enforced. The immediate
// foreign keys of `messages` and `runs` still make their inserts keep one. Measured
// under callgrind (docs/PERFORMANCE.md): the journal's page copies went from 13.5 k to
// 4.6 k instructions per chat run.

/// Executes a whole batch in one transaction. `Err` means the transaction failed (and was
/// rolled back): nothing of the batch is stored. Per-request failures that write nothing
/// (`RunNotActive`, `ThreadNotFound`) are `Outcome::Failed` inside `Ok`.
pub(super) fn commit_batch(
    conn: &mut Connection,
    batch: &[Request],
) -> Result<Vec<Outcome>, StoreError> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
    per_chunk(
        &tx,
        LOOKUP,
        &keys,
        &[],
        |(user_id, client_id), v| v.extend([user_id as &dyn ToSql, client_id]),
        |row| {
            let seen = Accepted {
                thread_id: row.get(2)?,
                message_id: row.get(3)?,
                run_id: row.get(4)?,
                duplicate: true,
            };
            known.insert((row.get(0)?, row.get(1)?), seen);
            Ok(())
        },
    )?;
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
    per_chunk(
        &tx,
        (
            "UPDATE OR FAIL threads SET updated_at = ? FROM (VALUES ",
            "(?, ?)",
            ") AS v WHERE threads.id = v.column1 AND threads.user_id = v.column2 \
             RETURNING threads.id, threads.user_id",
        ),
        &touch,
        &[&at],
        |(thread_id, user_id), v| v.extend([thread_id as &dyn ToSql, user_id]),
        |row| {
            touched.insert((row.get(0)?, row.get(1)?));
            Ok(())
        },
    )?;
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
    per_chunk(
        &tx,
        (
            "INSERT OR FAIL INTO threads (id, user_id, title, created_at, updated_at) VALUES ",
            "(?, ?, ?, ?, ?)",
            "",
        ),
        &new_threads,
        &[],
        |(id, user_id, title), v| v.extend([id as &dyn ToSql, user_id, title, &at, &at]),
        no_rows,
    )?;

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
    per_chunk(
        &tx,
        (
            "UPDATE OR FAIL runs SET status = v.column3, finished_at = ? FROM (VALUES ",
            "(?, ?, ?)",
            ") AS v WHERE runs.id = v.column1 AND runs.thread_id = v.column2 \
             AND runs.status = 'running' RETURNING runs.id, runs.thread_id",
        ),
        &finishes,
        &[&at],
        |(run_id, thread_id, status), v| v.extend([run_id as &dyn ToSql, thread_id, status]),
        |row| {
            closed.insert((row.get(0)?, row.get(1)?));
            Ok(())
        },
    )?;

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
    per_chunk(
        &tx,
        (
            "UPDATE OR FAIL threads SET last_seq = last_seq + v.column2, updated_at = ? FROM (VALUES ",
            "(?, ?)",
            ") AS v WHERE threads.id = v.column1 \
             RETURNING threads.id, threads.last_seq, threads.user_id",
        ),
        &needs,
        &[&at],
        |(thread_id, count), v| v.extend([thread_id as &dyn ToSql, count]),
        |row| {
            let thread_id: String = row.get(0)?;
            let last: i64 = row.get(1)?;
            let count = need_index
                .get(thread_id.as_str())
                .map(|&i| needs[i].1)
                .ok_or_else(|| StoreError::Database("seq reserved for an unknown thread".into()))?;
            let owner = row.get(2)?;
            reserved.insert(
                thread_id,
                Reserved {
                    next: last - count + 1,
                    owner,
                },
            );
            Ok(())
        },
    )?;

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
    per_chunk(
        &tx,
        (
            "INSERT OR FAIL INTO messages \
             (id, thread_id, user_id, client_id, role, content, run_id, created_at) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?, ?)",
            "",
        ),
        &messages,
        &[],
        |m, v| {
            v.extend([
                &m.id as &dyn ToSql,
                &m.thread_id,
                &m.user_id,
                &m.client_id,
                &m.role,
                &m.content,
                &m.run_id,
                &at,
            ])
        },
        no_rows,
    )?;
    per_chunk(
        &tx,
        (
            "INSERT OR FAIL INTO runs (id, thread_id, message_id, agent, status, started_at) VALUES ",
            "(?, ?, ?, ?, 'running', ?)",
            "",
        ),
        &runs,
        &[],
        |(run_id, thread_id, message_id, agent), v| {
            v.extend([run_id as &dyn ToSql, thread_id, message_id, agent, &at])
        },
        no_rows,
    )?;

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
    per_chunk(
        &tx,
        (
            "INSERT OR FAIL INTO events (thread_id, seq, run_id, body) VALUES ",
            "(?, ?, ?, ?)",
            "",
        ),
        &rows,
        &[],
        |(thread_id, event), v| {
            v.extend([
                thread_id as &dyn ToSql,
                &event.seq,
                &event.run_id,
                &event.json,
            ])
        },
        no_rows,
    )?;

    let committing = Instant::now();
    tx.commit()?;
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
