//! The SQL of one group-commit batch: each statement's text and one function per step
//! that runs it over the rows the plan (`plan.rs`) gave it, a statement per chunk of
//! rows, and returns what the database answered.
//!
//! The layout (migration 4) keeps what a chat run writes on few pages: one row per run,
//! events appended to the end of their table (indexed by the run's integer `no`), and one
//! small entry per run in the only thread-keyed index (`runs_by_thread`).
//! docs/PERFORMANCE.md item 9.

// Every write of a batch is a multi-row statement `OR FAIL`. SQLite gives a multi-row
// statement a statement journal (a copy of every page it changes, so that a failing row
// can undo the statement's earlier rows) when a constraint could `ABORT` it, the default
// conflict behaviour. A batch never keeps part of a failed statement (any error rolls
// the whole transaction back), so `FAIL`, which keeps the earlier rows, is as good here
// and needs no such journal. The constraints are all still enforced. Measured under
// callgrind (docs/PERFORMANCE.md item 7): the journal's page copies went from 13.5 k to
// 4.6 k instructions per chat run; with the foreign keys gone (migration 4) no insert
// keeps one.

use foldhash::{HashMap, HashMapExt};
use rusqlite::{Connection, ToSql};

use super::plan::{Cursors, EventRow, Finish, Needs, Pair, RunRow, Target, Unique};
use super::{MAX_ROWS, Shape, multi_row, no_rows, per_chunk};
use crate::store::error::StoreError;
use crate::store::model::Accepted;

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
/// statement cache, and returns how many. Compiled on first use, they stalled a fresh
/// process's first batches, and every open run waits for a batch; so the writer does it at
/// boot, before any request arrives (docs/PERFORMANCE.md item 9, change 3).
pub(in crate::store::sqlite) fn warm(conn: &Connection) -> Result<usize, StoreError> {
    let mut prepared = 0;
    for shape in SHAPES {
        let mut rows = 1;
        while rows <= MAX_ROWS {
            conn.prepare_cached(&multi_row(shape.0, shape.1, rows, shape.2))?;
            prepared += 1;
            rows *= 2;
        }
    }
    Ok(prepared)
}

/// The text of [`LOOKUP`] for `rows` pairs (the query-plan test checks it).
#[cfg(test)]
pub(in crate::store::sqlite) fn lookup_sql(rows: usize) -> String {
    multi_row(LOOKUP.0, LOOKUP.1, rows, LOOKUP.2)
}

/// Step 1a: the stored messages among (user id, client id) `keys`, by key.
pub(super) fn lookup(
    tx: &Connection,
    keys: &[Pair<'_>],
) -> Result<HashMap<(String, String), Accepted>, StoreError> {
    let mut known = HashMap::new();
    per_chunk(
        tx,
        LOOKUP,
        keys,
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
    Ok(known)
}

/// Step 1b: touches the (thread id, user id) threads that exist and are the user's;
/// returns their `no` by pair.
pub(super) fn touch(
    tx: &Connection,
    at: &str,
    threads: &[Pair<'_>],
) -> Result<HashMap<(String, String), i64>, StoreError> {
    let mut touched = HashMap::new();
    per_chunk(
        tx,
        TOUCH,
        threads,
        &[&at],
        |(thread_id, user_id), v| v.extend([thread_id as &dyn ToSql, user_id]),
        |row| {
            touched.insert((row.get(0)?, row.get(1)?), row.get(2)?);
            Ok(())
        },
    )?;
    Ok(touched)
}

/// Step 1c: creates the (id, user id, title) threads; returns their `no` by id.
pub(super) fn create_threads(
    tx: &Connection,
    at: &str,
    threads: &[(String, &str, String)],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut created = HashMap::with_capacity(threads.len());
    per_chunk(
        tx,
        NEW_THREADS,
        threads,
        &[],
        |(id, user_id, title), v| v.extend([id as &dyn ToSql, user_id, title, &at, &at]),
        |row| {
            created.insert(row.get(0)?, row.get(1)?);
            Ok(())
        },
    )?;
    Ok(created)
}

/// Step 2: whether each (run, thread) pair of the appends names a running run of that
/// thread, by position in `pairs`. Appends write only to running runs of their own
/// thread: a thread's events are found through its runs, so an event filed under
/// another thread's run would be replayed there (and never here).
pub(super) fn live(
    tx: &Connection,
    pairs: &Unique<Pair<'_>, Pair<'_>>,
) -> Result<Vec<Target>, StoreError> {
    let mut targets = vec![Target::NoThread; pairs.list.len()];
    per_chunk(
        tx,
        LIVE,
        &pairs.list,
        &[],
        |(run_id, thread_id), v| v.extend([run_id as &dyn ToSql, thread_id]),
        |row| {
            let (run_id, thread_id): (String, String) = (row.get(0)?, row.get(1)?);
            if let Some(i) = pairs.get(&(run_id.as_str(), thread_id.as_str())) {
                targets[i] = match row.get(2)? {
                    Some(no) => Target::Running(no),
                    None => Target::NotRunning,
                };
            }
            Ok(())
        },
    )?;
    Ok(targets)
}

/// Step 3: closes the running runs being finished, with their replies; returns the `no`
/// of each run it closed, by position in `finishes`.
pub(super) fn close(
    tx: &Connection,
    at: &str,
    finishes: &Unique<Pair<'_>, Finish<'_>>,
) -> Result<Vec<Option<i64>>, StoreError> {
    let mut closed = vec![None; finishes.list.len()];
    per_chunk(
        tx,
        CLOSE,
        &finishes.list,
        &[&at],
        |(run_id, thread_id, status, reply_id, content), v| {
            v.extend([run_id as &dyn ToSql, thread_id, status, reply_id, content])
        },
        |row| {
            let (run_id, thread_id): (String, String) = (row.get(0)?, row.get(1)?);
            if let Some(i) = finishes.get(&(run_id.as_str(), thread_id.as_str())) {
                closed[i] = Some(row.get(2)?);
            }
            Ok(())
        },
    )?;
    Ok(closed)
}

/// Step 4: reserves every thread's seq range, a statement per chunk of threads; returns
/// each existing thread's first seq.
pub(super) fn reserve(tx: &Connection, at: &str, needs: &Needs<'_>) -> Result<Cursors, StoreError> {
    let mut cursors = Cursors::with_capacity(needs.threads.list.len());
    per_chunk(
        tx,
        RESERVE,
        &needs.threads.list,
        &[&at],
        |(thread_id, count), v| v.extend([thread_id as &dyn ToSql, count]),
        |row| {
            let thread_id: String = row.get(0)?;
            let first = needs.first_seq(&thread_id, row.get(1)?)?;
            cursors.insert(thread_id, first);
            Ok(())
        },
    )?;
    Ok(cursors)
}

/// Step 5a: the new messages' runs.
pub(super) fn insert_runs(
    tx: &Connection,
    at: &str,
    runs: &[RunRow<'_>],
) -> Result<(), StoreError> {
    per_chunk(
        tx,
        NEW_RUNS,
        runs,
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
    )
}

/// Step 5b: the event rows.
pub(super) fn insert_events(tx: &Connection, rows: &[EventRow]) -> Result<(), StoreError> {
    per_chunk(
        tx,
        EVENTS,
        rows,
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
    )
}
