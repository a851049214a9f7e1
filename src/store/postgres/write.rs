//! Postgres writes of one request, each one statement (the group writer's batches of
//! several are `batch.rs`): data-modifying CTEs do a call's checks, seq
//! reservation and inserts together, and the statement commits on its own (no
//! `BEGIN`/`COMMIT` round trips). A chat run's accept, appends and finish were ~26
//! round trips as separate statements in transactions, and on loopback each round trip's
//! wake-ups, not the SQL, were most of the CPU (docs/PERFORMANCE.md items 11-12).
//!
//! Why each statement is safe under READ COMMITTED, where every CTE reads the snapshot
//! the statement started with:
//! - Seqs: the `UPDATE` of the thread row bumps `last_seq` under its row lock, held to
//!   commit; a waiting appender re-reads the row's newest version, so seqs stay gap-free.
//! - Events of an ended run: an append locks its runs `FOR SHARE` before it bumps the
//!   thread; a finish that committed meanwhile is seen (a locking read re-checks the
//!   newest row version), so it drops the run and the append stores nothing. Every
//!   statement locks runs (sorted by id) before threads, so none can deadlock another
//!   (`batch.rs` keeps the same order with many of each).
//! - Event text: the body is stored as text around its seq (`wire::seal_around`), and
//!   the statement puts the seq in, so stored text is sent text.
//! - Duplicate client ids: a concurrent duplicate fails the unique index, which aborts the
//!   whole statement (and its new thread); the winner's ids are then read.
//! - Reported means committed: sqlx reads every reply up to `ReadyForQuery`, which
//!   follows the implicit commit, before it returns.

use sqlx::postgres::PgPool;

use super::request::{Accept, Finish};
use crate::store::error::{StoreError, is_unique_violation};
use crate::store::model::{Accepted, new_id, now, title_from};
use crate::wire::{EventRecord, SealedAround, StoredEvent, completed_body, seal_around};

/// Stores a user message, its thread when new (`$3` NULL) or the bump of the given one
/// (owner checked), and its run. No row: the thread is missing or someone else's. A row
/// with `seen` true: the client id was stored before, and these are its ids.
const ACCEPT: &str = "\
WITH seen AS (
    SELECT thread_id, id, run_id FROM messages WHERE user_id = $1 AND client_id = $2
), bumped AS (
    UPDATE threads SET updated_at = $6
    WHERE $3::TEXT IS NOT NULL AND id = $3 AND user_id = $1 AND NOT EXISTS (SELECT 1 FROM seen)
    RETURNING id
), created AS (
    INSERT INTO threads (id, user_id, title, created_at, updated_at)
    SELECT $4, $1, $5, $6, $6 WHERE $3::TEXT IS NULL AND NOT EXISTS (SELECT 1 FROM seen)
    RETURNING id
), message AS (
    INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at)
    SELECT $7, id, $1, $2, 'user', $8, $9, $6 FROM (SELECT id FROM bumped UNION ALL SELECT id FROM created) t
    RETURNING thread_id
), run AS (
    INSERT INTO runs (id, thread_id, message_id, agent, status, started_at)
    SELECT $9, thread_id, $7, $10, 'running', $6 FROM message
)
SELECT thread_id, id, run_id, TRUE FROM seen
UNION ALL
SELECT thread_id, $7, $9, FALSE FROM message";

/// Appends events (`$5` run ids, `$6`/`$7` text before and after each seq) to thread `$1`
/// if each of the `$2` runs is running there: returns the first seq (NULL if nothing was
/// stored) and whether the thread exists.
const APPEND: &str = "\
WITH live AS (
    SELECT id FROM runs WHERE thread_id = $1 AND status = 'running' AND id = ANY($2::TEXT[])
    ORDER BY id FOR SHARE
), bumped AS (
    UPDATE threads SET last_seq = last_seq + $3, updated_at = $4
    WHERE id = $1 AND (SELECT count(*) FROM live) = cardinality($2::TEXT[])
    RETURNING last_seq - $3 + 1 AS first
), stored AS (
    INSERT INTO events (thread_id, seq, run_id, body)
    SELECT $1, b.first + u.i - 1, u.r, u.p || (b.first + u.i - 1)::TEXT || u.s
    FROM bumped b, UNNEST($5::TEXT[], $6::TEXT[], $7::TEXT[]) WITH ORDINALITY AS u(r, p, s, i)
)
SELECT (SELECT first FROM bumped), EXISTS (SELECT 1 FROM threads WHERE id = $1)";

/// Ends run `$3` of thread `$4` if it is running: its status, the assistant message
/// (`$5`, content `$6`) and the `agent_completed` event (text `$7` seq `$8`). Returns the
/// event's seq; no row: the run is not running there.
const FINISH: &str = "\
WITH closed AS (
    UPDATE runs SET status = $1, finished_at = $2
    WHERE id = $3 AND thread_id = $4 AND status = 'running'
    RETURNING id
), bumped AS (
    UPDATE threads SET last_seq = last_seq + 1, updated_at = $2
    WHERE id = $4 AND EXISTS (SELECT 1 FROM closed)
    RETURNING last_seq, user_id
), reply AS (
    INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at)
    SELECT $5, $4, user_id, NULL, 'assistant', $6, $3, $2 FROM bumped
), stored AS (
    INSERT INTO events (thread_id, seq, run_id, body)
    SELECT $4, last_seq, $3, $7 || last_seq::TEXT || $8 FROM bumped
)
SELECT last_seq FROM bumped";

async fn find_client_message(
    pool: &PgPool,
    user_id: &str,
    client_id: &str,
) -> Result<Option<Accepted>, StoreError> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT thread_id, id, run_id FROM messages WHERE user_id = $1 AND client_id = $2",
    )
    .bind(user_id)
    .bind(client_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(thread_id, message_id, run_id)| Accepted {
        thread_id,
        message_id,
        run_id,
        duplicate: true,
    }))
}

/// Stores a user message (see [`crate::store::Store::accept_message`]).
pub(super) async fn accept(pool: &PgPool, msg: &Accept) -> Result<Accepted, StoreError> {
    let (message_id, run_id) = (new_id("m"), new_id("r"));
    let title = msg.thread_id.is_none().then(|| title_from(&msg.content));
    let row: Result<Option<(String, String, String, bool)>, _> = sqlx::query_as(ACCEPT)
        .bind(&msg.user_id)
        .bind(&msg.client_id)
        .bind(&msg.thread_id)
        .bind(new_id("t"))
        .bind(title.as_deref().unwrap_or(""))
        .bind(now())
        .bind(&message_id)
        .bind(&msg.content)
        .bind(&run_id)
        .bind(&msg.agent)
        .fetch_optional(pool)
        .await;
    match row {
        Ok(Some((thread_id, message_id, run_id, duplicate))) => Ok(Accepted {
            thread_id,
            message_id,
            run_id,
            duplicate,
        }),
        Ok(None) => Err(StoreError::ThreadNotFound),
        // Lost a race with the same client id: nothing of this statement was stored,
        // and the winner has committed, so its ids are visible now.
        Err(e) if is_unique_violation(&e) => {
            find_client_message(pool, &msg.user_id, &msg.client_id)
                .await?
                .ok_or(StoreError::Database(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Appends events to a thread (see [`crate::store::Store::append_events`]).
pub(super) async fn append(
    pool: &PgPool,
    thread_id: &str,
    events: &[EventRecord],
) -> Result<Vec<StoredEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut run_ids: Vec<&str> = events.iter().map(|e| e.run_id.as_str()).collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    let around: Vec<_> = events.iter().map(|e| seal_around(thread_id, e)).collect();
    let (first, thread_exists): (Option<i64>, bool) = sqlx::query_as(APPEND)
        .bind(thread_id)
        .bind(&run_ids)
        .bind(events.len() as i64)
        .bind(now())
        .bind(events.iter().map(|e| e.run_id.as_str()).collect::<Vec<_>>())
        .bind(around.iter().map(|a| a.prefix.as_str()).collect::<Vec<_>>())
        .bind(around.iter().map(|a| a.suffix.as_str()).collect::<Vec<_>>())
        .fetch_one(pool)
        .await?;
    match first {
        Some(first) => Ok(numbered(first, events, &around)),
        None if !thread_exists => Err(StoreError::ThreadNotFound),
        // Only running runs of this thread take events (as on SQLite, which finds a
        // thread's events through its runs): nothing of a run follows its completion.
        None => Err(StoreError::RunNotActive),
    }
}

/// Events as stored from `first` on: the text the statement stored, rebuilt here.
pub(super) fn numbered(
    first: i64,
    events: &[EventRecord],
    around: &[SealedAround],
) -> Vec<StoredEvent> {
    (first..)
        .zip(events.iter().zip(around))
        .map(|(seq, (record, around))| StoredEvent {
            seq,
            json: around.with_seq(seq),
            run_id: record.run_id.clone(),
        })
        .collect()
}

/// The `agent_completed` record of a finish, with its assistant message id.
pub(super) fn completion(f: &Finish) -> (String, SealedAround) {
    let message_id = new_id("m");
    let body = completed_body(f.event.body.clone(), &f.status, &message_id, &f.content);
    let record = EventRecord {
        run_id: f.run_id.clone(),
        body,
    };
    let around = seal_around(&f.thread_id, &record);
    (message_id, around)
}

/// Ends a run (see [`crate::store::Store::finish_run`]).
pub(super) async fn finish(pool: &PgPool, f: &Finish) -> Result<StoredEvent, StoreError> {
    let (message_id, around) = completion(f);
    let seq: Option<i64> = sqlx::query_scalar(FINISH)
        .bind(&f.status)
        .bind(now())
        .bind(&f.run_id)
        .bind(&f.thread_id)
        .bind(&message_id)
        .bind(&f.content)
        .bind(&around.prefix)
        .bind(&around.suffix)
        .fetch_optional(pool)
        .await?;
    // `status = 'running'` makes a second finish (or a finish racing recovery) a
    // no-op that reports RunNotActive instead of a second agent_completed.
    let seq = seq.ok_or(StoreError::RunNotActive)?;
    Ok(StoredEvent {
        seq,
        json: around.with_seq(seq),
        run_id: f.run_id.clone(),
    })
}
