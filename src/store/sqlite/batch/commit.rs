//! The transaction of one group-commit batch: a fixed number of multi-row statements,
//! whatever the batch holds. Look up repeated client ids, touch or create the threads of
//! new messages, check the runs that appends write to, close the finishing runs (storing
//! their replies), reserve each thread's seq range once, insert the new runs (in request
//! order: a thread's messages are its runs in insertion order) and the events.
//!
//! The layout (migration 4) keeps what a chat run writes on few pages: one row per run,
//! events appended to the end of their table (indexed by the run's integer `no`), and one
//! small entry per run in the only thread-keyed index (`runs_by_thread`).
//! docs/PERFORMANCE.md item 9.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use rusqlite::{Connection, ToSql, TransactionBehavior};
use std::time::{Duration, Instant};

use super::{Shape, no_rows, per_chunk};
use crate::store::error::StoreError;
use crate::store::model::{
    Accepted, EventRecord, StoredEvent, completed_body, new_id, now, seal, seal_json, title_from,
};
use crate::store::sqlite::group::{Op, Outcome, Request, mismatch};

/// A commit (with its WAL fsync) at least this slow is logged as a warning. An fsync
/// here usually takes 0.2–0.6 ms (docs/PERFORMANCE.md).
const SLOW_COMMIT: Duration = Duration::from_millis(20);

/// Looks up (user id, client id) pairs among the stored user messages (one per run).
const LOOKUP: Shape = (
    "SELECT r.user_id, r.client_id, t.id, r.message_id, r.id FROM (VALUES ",
    "(?, ?)",
    ") AS v JOIN runs r ON r.user_id = v.column1 AND r.client_id = v.column2 \
     JOIN threads t ON t.no = r.thread_no",
);

/// Touches the user's existing threads that new messages go to.
const TOUCH: Shape = (
    "UPDATE OR FAIL threads SET updated_at = ? FROM (VALUES ",
    "(?, ?)",
    ") AS v WHERE threads.id = v.column1 AND threads.user_id = v.column2 \
     RETURNING threads.id, threads.user_id, threads.no",
);

/// Creates the threads of new messages that name none.
const NEW_THREADS: Shape = (
    "INSERT OR FAIL INTO threads (id, user_id, title, created_at, updated_at) VALUES ",
    "(?, ?, ?, ?, ?)",
    " RETURNING id, no",
);

/// For each (run, thread) pair of the appends whose thread exists: the run's `no` if it is
/// a running run of that thread, else NULL.
const LIVE: Shape = (
    "SELECT v.column1, v.column2, r.no FROM (VALUES ",
    "(?, ?)",
    ") AS v JOIN threads t ON t.id = v.column2 LEFT JOIN runs r ON r.id = v.column1 \
     AND r.thread_no = t.no AND r.status = 'running'",
);

/// What step 2 found for a (run, thread) pair of the appends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    NoThread,
    NotRunning,
    /// The run's `no`.
    Running(i64),
}

/// Ends running runs of the named threads and stores their replies.
const CLOSE: Shape = (
    "UPDATE OR FAIL runs SET status = v.column3, finished_at = ?, reply_id = v.column4, \
     reply = v.column5 FROM (VALUES ",
    "(?, ?, ?, ?, ?)",
    ") AS v WHERE runs.id = v.column1 AND runs.status = 'running' \
     AND runs.thread_no = (SELECT no FROM threads WHERE threads.id = v.column2) \
     RETURNING runs.id, (SELECT id FROM threads WHERE threads.no = runs.thread_no), runs.no",
);

/// Reserves each thread's seqs: bumps `last_seq` by the count and returns the new value.
const RESERVE: Shape = (
    "UPDATE OR FAIL threads SET last_seq = last_seq + v.column2, updated_at = ? FROM (VALUES ",
    "(?, ?)",
    ") AS v WHERE threads.id = v.column1 \
     RETURNING threads.id, threads.last_seq, threads.user_id",
);

/// The runs of new messages.
const NEW_RUNS: Shape = (
    "INSERT OR FAIL INTO runs \
     (id, thread_no, user_id, client_id, message_id, content, agent, status, started_at) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, 'running', ?)",
    "",
);

/// The events, a row per run: see [`EventRow`].
const EVENTS: Shape = (
    "INSERT OR FAIL INTO events (run_no, first_seq, last_seq, body) VALUES ",
    "(?, ?, ?, ?)",
    "",
);

/// Every statement a batch may run, in every chunk size.
const SHAPES: [Shape; 8] = [
    LOOKUP,
    TOUCH,
    NEW_THREADS,
    LIVE,
    CLOSE,
    RESERVE,
    NEW_RUNS,
    EVENTS,
];

/// Prepares every statement a batch may run, in every chunk size, into the connection's
/// statement cache, and returns how many. Compiling them on first use stalled the first
/// batches of a fresh process by 8–15 ms each (every open run waits for the batch);
/// at boot the writer does it before any request arrives.
pub(in crate::store::sqlite) fn warm(conn: &Connection) -> Result<usize, StoreError> {
    let mut prepared = 0;
    for shape in SHAPES {
        let mut rows = 1;
        while rows <= super::MAX_ROWS {
            conn.prepare_cached(&super::multi_row(shape.0, shape.1, rows, shape.2))?;
            prepared += 1;
            rows *= 2;
        }
    }
    Ok(prepared)
}

/// The text of [`LOOKUP`] for `rows` pairs (the query-plan test checks it).
#[cfg(test)]
pub(in crate::store::sqlite) fn lookup_sql(rows: usize) -> String {
    super::multi_row(LOOKUP.0, LOOKUP.1, rows, LOOKUP.2)
}

/// A thread's seq range reserved for this batch.
struct Reserved {
    next: i64,
}

/// A run row of a new message.
struct RunRow<'a> {
    id: String,
    thread_no: i64,
    user_id: &'a str,
    client_id: &'a str,
    message_id: String,
    content: &'a str,
    agent: &'a str,
}

/// A run's consecutive events of one batch, as one row: their JSON texts joined by
/// newlines. Compact JSON never contains a newline of its own (strings escape it), so
/// the reader splits the text back exactly (`read.rs`; a test in `model.rs` checks
/// every kind of event).
struct EventRow {
    run_no: i64,
    first_seq: i64,
    last_seq: i64,
    body: String,
}

impl EventRow {
    fn new(run_no: i64, event: &StoredEvent) -> Self {
        // Room for a scripted run's six events without growing.
        let mut body = String::with_capacity(event.json.len().max(1536));
        body.push_str(&event.json);
        Self {
            run_no,
            first_seq: event.seq,
            last_seq: event.seq,
            body,
        }
    }

    fn push(&mut self, event: &StoredEvent) {
        self.body.push('\n');
        self.body.push_str(&event.json);
        self.last_seq = event.seq;
    }
}

/// The event rows of a batch, one per run while its events are consecutive (they are:
/// its thread's other runs wait for their turn).
#[derive(Default)]
struct EventRows {
    rows: Vec<EventRow>,
    row_of_run: HashMap<i64, usize>,
}

impl EventRows {
    fn add(&mut self, run_no: i64, event: &StoredEvent) {
        match self.row_of_run.get(&run_no).map(|&i| &mut self.rows[i]) {
            Some(row) if row.last_seq + 1 == event.seq => row.push(event),
            _ => {
                self.row_of_run.insert(run_no, self.rows.len());
                self.rows.push(EventRow::new(run_no, event));
            }
        }
    }
}

/// A run being finished: (run id, thread id, status, reply id, reply).
type Finish<'a> = (&'a str, &'a str, &'a str, String, &'a str);

// Every write of a batch is a multi-row statement `OR FAIL`. SQLite gives a multi-row
// statement a statement journal (a copy of every page it changes, so that a failing row
// can undo the statement's earlier rows) when a constraint could `ABORT` it, the default
// conflict behaviour. A batch never keeps part of a failed statement (any error rolls
// the whole transaction back), so `FAIL`, which keeps the earlier rows, is as good here
// and needs no such journal. The constraints are all still enforced. Measured under
// callgrind (docs/PERFORMANCE.md item 7): the journal's page copies went from 13.5 k to
// 4.6 k instructions per chat run; with the foreign keys gone (migration 4) no insert
// keeps one.

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
    let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();

    // 1. New messages: repeated client ids are answered, the rest get their threads.
    let accept_thread = accepts(&tx, batch, &mut outcomes, &at)?;

    // 2. Appends write only to running runs of their own thread: a thread's events are
    // found through its runs, so an event filed under another thread's run would be
    // replayed there (and never here).
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut pair_index: HashMap<(&str, &str), usize> = HashMap::new();
    for request in batch {
        if let Op::Append { events, .. } = &request.op {
            for record in events {
                let pair = (record.run_id.as_str(), request.thread_id.as_str());
                pair_index.entry(pair).or_insert_with(|| {
                    pairs.push(pair);
                    pairs.len() - 1
                });
            }
        }
    }
    let mut targets = vec![Target::NoThread; pairs.len()];
    per_chunk(
        &tx,
        LIVE,
        &pairs,
        &[],
        |(run_id, thread_id), v| v.extend([run_id as &dyn ToSql, thread_id]),
        |row| {
            let (run_id, thread_id): (String, String) = (row.get(0)?, row.get(1)?);
            if let Some(&i) = pair_index.get(&(run_id.as_str(), thread_id.as_str())) {
                targets[i] = match row.get(2)? {
                    Some(no) => Target::Running(no),
                    None => Target::NotRunning,
                };
            }
            Ok(())
        },
    )?;

    // 3. Close the runs being finished, with their replies. A (run, thread) pair asked
    // for twice in one batch is closed once; only its first request may succeed.
    let mut finishes: Vec<Finish<'_>> = Vec::new();
    let mut finish_index: HashMap<(&str, &str), usize> = HashMap::new();
    for request in batch {
        if let Op::Finish {
            run_id,
            status,
            content,
            ..
        } = &request.op
        {
            let pair = (run_id.as_str(), request.thread_id.as_str());
            finish_index.entry(pair).or_insert_with(|| {
                finishes.push((run_id, &request.thread_id, status, new_id("m"), content));
                finishes.len() - 1
            });
        }
    }
    // The `no` of each of `finishes` that closed its run; taken by the first request of a pair.
    let mut closed: Vec<Option<i64>> = vec![None; finishes.len()];
    per_chunk(
        &tx,
        CLOSE,
        &finishes,
        &[&at],
        |(run_id, thread_id, status, reply_id, content), v| {
            v.extend([run_id as &dyn ToSql, thread_id, status, reply_id, content])
        },
        |row| {
            let (run_id, thread_id): (String, String) = (row.get(0)?, row.get(1)?);
            if let Some(&i) = finish_index.get(&(run_id.as_str(), thread_id.as_str())) {
                closed[i] = Some(row.get(2)?);
            }
            Ok(())
        },
    )?;

    // 4. Seqs each thread needs, counted in request order. An append after its run's
    // end in the same batch is refused like one after an earlier batch's.
    let mut needs: Vec<(&str, i64)> = Vec::new();
    let mut need_index: HashMap<&str, usize> = HashMap::new();
    let mut ended: HashSet<&str> = HashSet::new();
    // The `no` of the run each of `finishes` ended (for its completion's event row).
    let mut finished_no: Vec<Option<i64>> = vec![None; finishes.len()];
    for (request, outcome) in batch.iter().zip(outcomes.iter_mut()) {
        let thread_id = request.thread_id.as_str();
        let count = match &request.op {
            Op::Accept { .. } => continue,
            Op::Append { events, .. } => {
                let target = |record: &EventRecord| {
                    let pair = (record.run_id.as_str(), thread_id);
                    match pair_index.get(&pair).map(|&i| targets[i]) {
                        Some(Target::Running(_)) if ended.contains(pair.0) => Target::NotRunning,
                        Some(target) => target,
                        None => Target::NoThread,
                    }
                };
                let error = if events.iter().any(|r| target(r) == Target::NoThread) {
                    Some(StoreError::ThreadNotFound)
                } else if events
                    .iter()
                    .any(|r| !matches!(target(r), Target::Running(_)))
                {
                    Some(StoreError::RunNotActive)
                } else {
                    None
                };
                if let Some(e) = error {
                    *outcome = Some(Outcome::Failed(e));
                    continue;
                }
                events.len() as i64
            }
            Op::Finish { run_id, .. } => {
                let first = finish_index.get(&(run_id.as_str(), thread_id)).copied();
                if let Some(i) = first.filter(|&i| closed[i].is_some()) {
                    finished_no[i] = closed[i].take();
                    ended.insert(run_id);
                    1
                } else {
                    *outcome = Some(Outcome::Failed(StoreError::RunNotActive));
                    continue;
                }
            }
        };
        let i = *need_index.entry(thread_id).or_insert_with(|| {
            needs.push((thread_id, 0));
            needs.len() - 1
        });
        needs[i].1 += count;
    }

    // 5. Reserve every thread's range with one statement per chunk of threads.
    let mut reserved: HashMap<String, Reserved> = HashMap::with_capacity(needs.len());
    per_chunk(
        &tx,
        RESERVE,
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
            reserved.insert(
                thread_id,
                Reserved {
                    next: last - count + 1,
                },
            );
            Ok(())
        },
    )?;

    // 6. Assign seqs in request order, seal the events (each also goes into its run's
    // event row, under the run `no` found in step 2 or 3), and lay out the new runs in
    // request order.
    let mut runs: Vec<RunRow<'_>> = Vec::new();
    let mut rows = EventRows::default();
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
            let Some((thread_id, thread_no)) = accept_thread.get(&i) else {
                return Err(StoreError::Database("a new message has no thread".into()));
            };
            let message_id = new_id("m");
            let run_id = new_id("r");
            runs.push(RunRow {
                id: run_id.clone(),
                thread_no: *thread_no,
                user_id,
                client_id,
                message_id: message_id.clone(),
                content,
                agent,
            });
            *outcome = Some(Outcome::Accepted(Accepted {
                thread_id: thread_id.clone(),
                message_id,
                run_id,
                duplicate: false,
            }));
            continue;
        }
        let thread_id = request.thread_id.as_str();
        let Some(cursor) = reserved.get_mut(thread_id) else {
            *outcome = Some(match &request.op {
                // Its run was just closed in this thread: the database disagrees with
                // itself, so let the whole batch retry alone.
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
            Op::Append { events, .. } => {
                let mut stored = Vec::with_capacity(events.len());
                for record in events {
                    let no = match pair_index.get(&(record.run_id.as_str(), thread_id)) {
                        Some(&i) => match targets[i] {
                            Target::Running(no) => no,
                            _ => return Err(mismatch()),
                        },
                        None => return Err(mismatch()),
                    };
                    let seq = cursor.next;
                    cursor.next += 1;
                    let event = StoredEvent {
                        seq,
                        run_id: record.run_id.clone(),
                        json: seal_json(thread_id, seq, record),
                    };
                    rows.add(no, &event);
                    stored.push(event);
                }
                Outcome::Appended(stored)
            }
            Op::Finish {
                run_id,
                status,
                content,
                event,
                ..
            } => {
                let seq = cursor.next;
                cursor.next += 1;
                let i = *finish_index
                    .get(&(run_id.as_str(), thread_id))
                    .ok_or_else(mismatch)?;
                let no = finished_no[i].ok_or_else(mismatch)?;
                let body = completed_body(event.body.clone(), status, &finishes[i].3, content);
                let record = EventRecord {
                    run_id: run_id.clone(),
                    body,
                };
                let event = seal(thread_id, seq, record);
                rows.add(no, &event);
                Outcome::Finished(event)
            }
        });
    }

    // 7. The new runs, then the events.
    per_chunk(
        &tx,
        NEW_RUNS,
        &runs,
        &[],
        |r, v| {
            v.extend([
                &r.id as &dyn ToSql,
                &r.thread_no,
                &r.user_id,
                &r.client_id,
                &r.message_id,
                &r.content,
                &r.agent,
                &at,
            ])
        },
        no_rows,
    )?;
    per_chunk(
        &tx,
        EVENTS,
        &rows.rows,
        &[],
        |row, v| {
            v.extend([
                &row.run_no as &dyn ToSql,
                &row.first_seq,
                &row.last_seq,
                &row.body,
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

/// Step 1: answers new messages whose client id is already stored, marks one repeated
/// within the batch to run alone afterwards (it then finds the first), and finds or
/// creates the thread of every other one: `(thread id, thread no)` by request index.
fn accepts(
    tx: &Connection,
    batch: &[Request],
    outcomes: &mut [Option<Outcome>],
    at: &str,
) -> Result<HashMap<usize, (String, i64)>, StoreError> {
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
    let mut accept_thread: HashMap<usize, (String, i64)> = HashMap::new();
    if accepts.is_empty() {
        return Ok(accept_thread);
    }
    let mut known: HashMap<(String, String), Accepted> = HashMap::new();
    per_chunk(
        tx,
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
    let mut new_thread_of: HashMap<usize, String> = HashMap::new();
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
                new_thread_of.insert(i, id.clone());
                new_threads.push((id, user_id, title_from(content)));
            }
        }
    }
    let mut touched: HashMap<(String, String), i64> = HashMap::new();
    let mut asked_touch = HashSet::new();
    touch.retain(|pair| asked_touch.insert(*pair));
    per_chunk(
        tx,
        TOUCH,
        &touch,
        &[&at],
        |(thread_id, user_id), v| v.extend([thread_id as &dyn ToSql, user_id]),
        |row| {
            touched.insert((row.get(0)?, row.get(1)?), row.get(2)?);
            Ok(())
        },
    )?;
    let mut created: HashMap<String, i64> = HashMap::with_capacity(new_threads.len());
    per_chunk(
        tx,
        NEW_THREADS,
        &new_threads,
        &[],
        |(id, user_id, title), v| v.extend([id as &dyn ToSql, user_id, title, &at, &at]),
        |row| {
            created.insert(row.get(0)?, row.get(1)?);
            Ok(())
        },
    )?;
    for &i in &accepts {
        if outcomes[i].is_some() {
            continue;
        }
        let Op::Accept {
            user_id, thread_id, ..
        } = &batch[i].op
        else {
            continue;
        };
        let found = match (thread_id, new_thread_of.remove(&i)) {
            (_, Some(id)) => created.get(&id).map(|&no| (id, no)),
            (Some(id), None) => touched
                .get(&(id.clone(), user_id.clone()))
                .map(|&no| (id.clone(), no)),
            (None, None) => None,
        };
        match found {
            Some(thread) => {
                accept_thread.insert(i, thread);
            }
            // Missing or someone else's: both answer ThreadNotFound.
            None if thread_id.is_some() => {
                outcomes[i] = Some(Outcome::Failed(StoreError::ThreadNotFound));
            }
            None => return Err(StoreError::Database("a new thread was not created".into())),
        }
    }
    Ok(accept_thread)
}
