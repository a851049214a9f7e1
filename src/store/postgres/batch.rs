//! The group writer's statements (`group.rs`): many requests of one kind in one
//! statement, columns bound as arrays, one row per request that succeeded (by its 1-based
//! position `k`), and a request without a row gets its own refusal.
//!
//! They keep `write.rs`'s guarantees (read its header) with several threads and runs per
//! statement. Rows are locked in one order everywhere: the runs involved (sorted by id),
//! then the threads (sorted by id); each lock set is taken by an aggregate over a sorted
//! `FOR SHARE`/`FOR UPDATE` subquery, which locks every row before anything reads the
//! result, so statements of several nodes cannot deadlock on each other. A thread with
//! several requests in one statement numbers them in request order.

use sqlx::postgres::PgPool;

use super::request::{Accept, Append, Finish, Turn};
use super::write::{completion, numbered};
use crate::store::error::StoreError;
use crate::store::model::{Accepted, new_id, now, title_from};
use crate::wire::{StoredEvent, seal_around};

/// [`super::write`]'s accept for many: `seen` are client ids stored before, `placed`
/// the messages stored now (a new thread, or a thread of the sender's), inserted in
/// request order so that a thread's messages (`n`) and runs (`turn`, migration 5) number
/// in the order of its requests.
const ACCEPT: &str = "\
WITH q AS (
    SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
        $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[])
    WITH ORDINALITY AS q(user_id, client_id, thread_id, new_thread, title, message_id,
        content, run_id, agent, k)
), seen AS (
    SELECT q.k, m.thread_id, m.id, m.run_id FROM q
    JOIN messages m ON m.user_id = q.user_id AND m.client_id = q.client_id
), fresh AS (
    SELECT * FROM q WHERE NOT EXISTS (SELECT 1 FROM seen WHERE seen.k = q.k)
), locked AS (
    SELECT array_agg(id) AS ids, array_agg(user_id) AS owners FROM (
        SELECT id, user_id FROM threads WHERE id IN (SELECT thread_id FROM fresh)
        ORDER BY id FOR UPDATE
    ) l
), mine AS (
    SELECT f.* FROM fresh f, locked, UNNEST(locked.ids, locked.owners) AS l(id, owner)
    WHERE f.thread_id = l.id AND f.user_id = l.owner
), bumped AS (
    UPDATE threads SET updated_at = $10 WHERE id IN (SELECT thread_id FROM mine)
), created AS (
    INSERT INTO threads (id, user_id, title, created_at, updated_at)
    SELECT new_thread, user_id, title, $10, $10 FROM fresh WHERE thread_id IS NULL
), placed AS (
    SELECT *, new_thread AS tid FROM fresh WHERE thread_id IS NULL
    UNION ALL
    SELECT *, thread_id FROM mine
), message AS (
    INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at)
    SELECT message_id, tid, user_id, client_id, 'user', content, run_id, $10 FROM placed
    ORDER BY k
), run AS (
    INSERT INTO runs (id, thread_id, message_id, agent, status, started_at)
    SELECT run_id, tid, message_id, agent, 'running', $10 FROM placed ORDER BY k
)
SELECT k, thread_id, id, run_id, TRUE FROM seen
UNION ALL
SELECT k, tid, message_id, run_id, FALSE FROM placed";

/// [`super::write`]'s append for many: requests (`$1` thread, `$2` event count) and
/// their events (`$3` request, `$4` position in it from 1, `$5` run, `$6`/`$7` text
/// around the seq). A row per request stored: its first seq.
const APPEND: &str = "\
WITH req AS (
    SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS q(thread_id, n, k)
), ev AS (
    SELECT * FROM UNNEST($3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[])
    AS e(k, i, run_id, prefix, suffix)
), live AS (
    SELECT array_agg(id) AS ids, array_agg(thread_id) AS threads FROM (
        SELECT id, thread_id FROM runs
        WHERE id IN (SELECT run_id FROM ev) AND status = 'running'
        ORDER BY id FOR SHARE
    ) r
), ok AS (
    SELECT req.* FROM req WHERE NOT EXISTS (
        SELECT 1 FROM ev WHERE ev.k = req.k AND NOT EXISTS (
            SELECT 1 FROM live, UNNEST(live.ids, live.threads) AS l(id, thread_id)
            WHERE l.id = ev.run_id AND l.thread_id = req.thread_id))
), locked AS (
    SELECT array_agg(id) AS ids, array_agg(last_seq) AS seqs FROM (
        SELECT id, last_seq FROM threads WHERE id IN (SELECT thread_id FROM ok)
        ORDER BY id FOR UPDATE
    ) t
), placed AS (
    SELECT ok.k, ok.thread_id,
        (l.last_seq + sum(ok.n) OVER (PARTITION BY ok.thread_id ORDER BY ok.k) - ok.n)::BIGINT
            AS before
    FROM ok, locked, UNNEST(locked.ids, locked.seqs) AS l(id, last_seq)
    WHERE l.id = ok.thread_id
), bumped AS (
    UPDATE threads t SET last_seq = t.last_seq + s.total, updated_at = $8
    FROM (SELECT thread_id, sum(n)::BIGINT AS total FROM ok
          WHERE k IN (SELECT k FROM placed) GROUP BY thread_id) s
    WHERE t.id = s.thread_id
), stored AS (
    INSERT INTO events (thread_id, seq, run_id, body)
    SELECT p.thread_id, p.before + ev.i, ev.run_id,
        ev.prefix || (p.before + ev.i)::TEXT || ev.suffix
    FROM placed p JOIN ev ON ev.k = p.k
)
SELECT req.k, p.before + 1, EXISTS (SELECT 1 FROM threads t WHERE t.id = req.thread_id)
FROM req LEFT JOIN placed p ON p.k = req.k";

/// [`super::write`]'s finish for many (each run at most once): a row per run ended, with
/// its completion's seq.
const FINISH: &str = "\
WITH req AS (
    SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
        $6::TEXT[], $7::TEXT[])
    WITH ORDINALITY AS q(thread_id, run_id, status, message_id, content, prefix, suffix, k)
), closing AS (
    SELECT array_agg(id) AS ids FROM (
        SELECT r.id FROM runs r JOIN req ON r.id = req.run_id AND r.thread_id = req.thread_id
        WHERE r.status = 'running' ORDER BY r.id FOR UPDATE OF r
    ) r
), closed AS (
    UPDATE runs r SET status = req.status, finished_at = $8 FROM req, closing
    WHERE r.id = req.run_id AND r.id = ANY(closing.ids) AND r.status = 'running'
    RETURNING req.k
), locked AS (
    SELECT array_agg(id) AS ids, array_agg(last_seq) AS seqs, array_agg(user_id) AS owners
    FROM (
        SELECT id, last_seq, user_id FROM threads
        WHERE id IN (SELECT req.thread_id FROM req JOIN closed ON closed.k = req.k)
        ORDER BY id FOR UPDATE
    ) t
), placed AS (
    SELECT req.*, l.owner,
        l.last_seq + row_number() OVER (PARTITION BY req.thread_id ORDER BY req.k) AS seq
    FROM req JOIN closed ON closed.k = req.k, locked,
        UNNEST(locked.ids, locked.seqs, locked.owners) AS l(id, last_seq, owner)
    WHERE l.id = req.thread_id
), bumped AS (
    UPDATE threads t SET last_seq = s.last, updated_at = $8
    FROM (SELECT thread_id, max(seq) AS last FROM placed GROUP BY thread_id) s
    WHERE t.id = s.thread_id
), reply AS (
    INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at)
    SELECT message_id, thread_id, owner, NULL, 'assistant', content, run_id, $8 FROM placed
    ORDER BY k
), stored AS (
    INSERT INTO events (thread_id, seq, run_id, body)
    SELECT thread_id, seq, run_id, prefix || seq::TEXT || suffix FROM placed
)
SELECT k, seq FROM placed";

/// Whether an earlier run of each request's thread is running (`lease.rs`'s query, for
/// many): a row per request, in order.
const TURNS: &str = "\
SELECT EXISTS (
    SELECT 1 FROM runs r WHERE r.thread_id = q.thread_id AND r.status = 'running'
    AND r.turn < (SELECT turn FROM runs WHERE id = q.run_id))
FROM UNNEST($1::TEXT[], $2::TEXT[]) WITH ORDINALITY AS q(thread_id, run_id, k)
ORDER BY q.k";

/// Answers by position: `rows` carries `(k, answer)` for the requests that have a row.
fn by_position<T>(
    n: usize,
    rows: impl IntoIterator<Item = (i64, Result<T, StoreError>)>,
    missing: impl Fn() -> StoreError,
) -> Vec<Result<T, StoreError>> {
    let mut answers: Vec<Option<Result<T, StoreError>>> = (0..n).map(|_| None).collect();
    for (k, answer) in rows {
        if let Some(slot) = usize::try_from(k - 1).ok().and_then(|i| answers.get_mut(i)) {
            *slot = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(missing())))
        .collect()
}

pub(super) async fn accept(
    pool: &PgPool,
    batch: &[&Accept],
) -> Result<Vec<Result<Accepted, StoreError>>, sqlx::Error> {
    let col = |f: fn(&Accept) -> &str| batch.iter().map(|a| f(a)).collect::<Vec<_>>();
    let new_threads: Vec<String> = batch.iter().map(|_| new_id("t")).collect();
    let titles: Vec<String> = batch
        .iter()
        .map(|a| match a.thread_id {
            None => title_from(&a.content),
            Some(_) => String::new(),
        })
        .collect();
    let message_ids: Vec<String> = batch.iter().map(|_| new_id("m")).collect();
    let run_ids: Vec<String> = batch.iter().map(|_| new_id("r")).collect();
    let rows: Vec<(i64, String, String, String, bool)> = sqlx::query_as(ACCEPT)
        .bind(col(|a| &a.user_id))
        .bind(col(|a| &a.client_id))
        .bind(
            batch
                .iter()
                .map(|a| a.thread_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(&new_threads)
        .bind(&titles)
        .bind(&message_ids)
        .bind(col(|a| &a.content))
        .bind(&run_ids)
        .bind(col(|a| &a.agent))
        .bind(now())
        .fetch_all(pool)
        .await?;
    let rows = rows
        .into_iter()
        .map(|(k, thread_id, message_id, run_id, duplicate)| {
            let accepted = Accepted {
                thread_id,
                message_id,
                run_id,
                duplicate,
            };
            (k, Ok(accepted))
        });
    Ok(by_position(batch.len(), rows, || {
        StoreError::ThreadNotFound
    }))
}

pub(super) async fn append(
    pool: &PgPool,
    batch: &[&Append],
) -> Result<Vec<Result<Vec<StoredEvent>, StoreError>>, sqlx::Error> {
    let around: Vec<Vec<_>> = batch
        .iter()
        .map(|a| {
            a.events
                .iter()
                .map(|e| seal_around(&a.thread_id, e))
                .collect()
        })
        .collect();
    let (mut ks, mut is) = (Vec::<i64>::new(), Vec::<i64>::new());
    let (mut runs, mut prefixes, mut suffixes) = (Vec::<&str>::new(), Vec::new(), Vec::new());
    for (k, (a, around)) in (1_i64..).zip(batch.iter().zip(&around)) {
        for (i, (e, around)) in (1_i64..).zip(a.events.iter().zip(around)) {
            ks.push(k);
            is.push(i);
            runs.push(e.run_id.as_str());
            prefixes.push(around.prefix.as_str());
            suffixes.push(around.suffix.as_str());
        }
    }
    let rows: Vec<(i64, Option<i64>, bool)> = sqlx::query_as(APPEND)
        .bind(
            batch
                .iter()
                .map(|a| a.thread_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|a| a.events.len() as i64)
                .collect::<Vec<_>>(),
        )
        .bind(ks)
        .bind(is)
        .bind(runs)
        .bind(prefixes)
        .bind(suffixes)
        .bind(now())
        .fetch_all(pool)
        .await?;
    let rows = rows.into_iter().map(|(k, first, thread_exists)| {
        let i = usize::try_from(k - 1).unwrap_or(usize::MAX);
        let answer = match (first, batch.get(i), around.get(i)) {
            (Some(first), Some(a), Some(around)) => Ok(numbered(first, &a.events, around)),
            (None, ..) if !thread_exists => Err(StoreError::ThreadNotFound),
            _ => Err(StoreError::RunNotActive),
        };
        (k, answer)
    });
    Ok(by_position(batch.len(), rows, || StoreError::RunNotActive))
}

pub(super) async fn finish(
    pool: &PgPool,
    batch: &[&Finish],
) -> Result<Vec<Result<StoredEvent, StoreError>>, sqlx::Error> {
    let ends: Vec<_> = batch.iter().map(|f| completion(f)).collect();
    let col = |f: fn(&Finish) -> &str| batch.iter().map(|x| f(x)).collect::<Vec<_>>();
    let rows: Vec<(i64, i64)> = sqlx::query_as(FINISH)
        .bind(col(|f| &f.thread_id))
        .bind(col(|f| &f.run_id))
        .bind(col(|f| &f.status))
        .bind(ends.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
        .bind(col(|f| &f.content))
        .bind(
            ends.iter()
                .map(|(_, a)| a.prefix.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            ends.iter()
                .map(|(_, a)| a.suffix.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(now())
        .fetch_all(pool)
        .await?;
    let rows = rows.into_iter().map(|(k, seq)| {
        let i = usize::try_from(k - 1).unwrap_or(usize::MAX);
        let answer = match (batch.get(i), ends.get(i)) {
            (Some(f), Some((_, around))) => Ok(StoredEvent {
                seq,
                json: around.with_seq(seq),
                run_id: f.run_id.clone(),
            }),
            _ => Err(StoreError::RunNotActive),
        };
        (k, answer)
    });
    Ok(by_position(batch.len(), rows, || StoreError::RunNotActive))
}

pub(super) async fn turns(pool: &PgPool, batch: &[&Turn]) -> Result<Vec<bool>, sqlx::Error> {
    let waits: Vec<bool> = sqlx::query_scalar(TURNS)
        .bind(
            batch
                .iter()
                .map(|t| t.thread_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|t| t.run_id.as_str()).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
    if waits.len() != batch.len() {
        return Err(sqlx::Error::Protocol(format!(
            "turn check returned {} rows for {} runs",
            waits.len(),
            batch.len()
        )));
    }
    Ok(waits)
}
