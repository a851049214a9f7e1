//! The SQLite store: the embedded default, one file, WAL journal.
//!
//! SQLite allows one writer at a time. Rather than letting concurrent writers collide and
//! sleep in SQLite's busy handler (which backs off in steps of up to 100 ms), every write
//! (`accept_message`, `append_events`, `finish_run`) queues for one writer task per store,
//! which commits them in batches on one connection with `BEGIN IMMEDIATE` (see
//! `group.rs`), so they never meet `SQLITE_BUSY` from each other. Keeping that connection
//! also keeps its page cache valid: SQLite drops a connection's cache whenever another
//! connection has written. Reads take no lock: WAL lets them run beside the writer. The
//! busy timeout remains for other processes opening the same file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::OnCommit;
use super::error::{StoreError, is_unique_violation};
use super::migrations;
use super::model::{
    Accepted, EventRecord, NewMessage, StoredEvent, completed_body, new_id, now, seal, seal_json,
    title_from,
};

mod group;
mod read;
#[cfg(test)]
mod tests;

/// A pool on one SQLite file and the queue of its group-commit writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    queue: mpsc::Sender<group::Request>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the file.
    pub(crate) async fn connect(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("cannot parse sqlite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged message must survive a power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(connect_timeout.max(Duration::from_secs(5)))
            .foreign_keys(true)
            // Checkpoint every ~40 MB of WAL instead of SQLite's default ~4 MB: a page
            // that every batch rewrites (thread rows, the tail of each thread's events)
            // is then copied into the database file once per checkpoint, not ten times.
            // Durability is unchanged: each commit still fsyncs the WAL.
            .pragma("wal_autocheckpoint", "10000")
            // SQLite's temporary data (statement journals, transient tables) stays in
            // memory instead of spilling to `etilqs_*` files in /var/tmp: half of the
            // writer's `pwrite` calls went to such files (30.5 k vs 15.0 k per 2 000 chat
            // runs). Nothing durable is temporary.
            .pragma("temp_store", "MEMORY");
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    StoreError::Unavailable(format!("cannot create the database directory: {e}"))
                })?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(connect_timeout)
            .connect_with(options)
            .await?;
        migrations::sqlite().run(&pool).await?;
        let (queue, requests) = mpsc::channel(group::QUEUE);
        // Ends when the last clone of the store (the last sender) is dropped.
        tokio::spawn(group::run(pool.clone(), requests));
        Ok(Self { pool, queue })
    }

    /// Hands a write to the group-commit writer.
    async fn submit(&self, request: group::Request) -> Result<(), StoreError> {
        self.queue.send(request).await.map_err(|_| writer_gone())
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn accept_message(&self, msg: NewMessage<'_>) -> Result<Accepted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(group::Request {
            thread_id: String::new(),
            op: group::Op::Accept {
                user_id: msg.user_id.to_string(),
                client_id: msg.client_id.to_string(),
                thread_id: msg.thread_id.map(str::to_string),
                content: msg.content.to_string(),
                agent: msg.agent.to_string(),
                reply,
            },
        })
        .await?;
        answer.await.map_err(|_| writer_gone())?
    }

    pub(crate) async fn append_events(
        &self,
        thread_id: &str,
        events: Vec<EventRecord>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.submit(group::Request {
            thread_id: thread_id.to_string(),
            op: group::Op::Append {
                events,
                reply: group::Reply::Wait(reply),
            },
        })
        .await?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Queues an append without waiting for its commit, so a run can produce its next
    /// event while this one is in the current batch. Requests are committed, and their
    /// `then` run, in queue order, so a thread's seqs follow the order of these calls.
    pub(crate) async fn append_events_then(
        &self,
        thread_id: &str,
        events: Vec<EventRecord>,
        then: OnCommit<Vec<StoredEvent>>,
    ) -> Result<(), StoreError> {
        self.submit(group::Request {
            thread_id: thread_id.to_string(),
            op: group::Op::Append {
                events,
                reply: group::Reply::Then(then),
            },
        })
        .await
    }

    pub(crate) async fn finish_run(
        &self,
        thread_id: &str,
        run_id: &str,
        status: &str,
        assistant_content: &str,
        event: EventRecord,
    ) -> Result<StoredEvent, StoreError> {
        let (reply, answer) = oneshot::channel();
        let reply = group::Reply::Wait(reply);
        self.submit_finish(thread_id, run_id, status, assistant_content, event, reply)
            .await?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Queues `finish_run` like [`Self::append_events_then`].
    pub(crate) async fn finish_run_then(
        &self,
        thread_id: &str,
        run_id: &str,
        status: &str,
        assistant_content: &str,
        event: EventRecord,
        then: OnCommit<StoredEvent>,
    ) -> Result<(), StoreError> {
        let reply = group::Reply::Then(then);
        self.submit_finish(thread_id, run_id, status, assistant_content, event, reply)
            .await
    }

    async fn submit_finish(
        &self,
        thread_id: &str,
        run_id: &str,
        status: &str,
        assistant_content: &str,
        event: EventRecord,
        reply: group::Reply<StoredEvent>,
    ) -> Result<(), StoreError> {
        self.submit(group::Request {
            thread_id: thread_id.to_string(),
            op: group::Op::Finish {
                run_id: run_id.to_string(),
                status: status.to_string(),
                content: assistant_content.to_string(),
                event,
                reply,
            },
        })
        .await
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

/// Starts a write transaction on the writer's connection.
async fn begin_write(conn: &mut SqliteConnection) -> Result<Transaction<'_, Sqlite>, StoreError> {
    Ok(conn.begin_with("BEGIN IMMEDIATE").await?)
}

/// Reserves `count` seqs on the thread; returns the first. The thread row update is
/// what orders concurrent appenders.
async fn reserve_seq(
    tx: &mut Transaction<'_, Sqlite>,
    thread_id: &str,
    count: i64,
) -> Result<(i64, String), StoreError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "UPDATE threads SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? \
         RETURNING last_seq, user_id",
    )
    .bind(count)
    .bind(now())
    .bind(thread_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (last, owner) = row.ok_or(StoreError::ThreadNotFound)?;
    Ok((last - count + 1, owner))
}

async fn insert_event(
    tx: &mut Transaction<'_, Sqlite>,
    thread_id: &str,
    event: &StoredEvent,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO events (thread_id, seq, run_id, body) VALUES (?, ?, ?, ?)")
        .bind(thread_id)
        .bind(event.seq)
        .bind(&event.run_id)
        .bind(&event.json)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One append in a transaction of its own: the group writer's fallback when a batch fails.
async fn append_one(
    conn: &mut SqliteConnection,
    thread_id: &str,
    events: &[EventRecord],
) -> Result<Vec<StoredEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = begin_write(conn).await?;
    let (first, _) = reserve_seq(&mut tx, thread_id, events.len() as i64).await?;
    let mut stored = Vec::with_capacity(events.len());
    for (seq, record) in (first..).zip(events) {
        let event = StoredEvent {
            seq,
            run_id: record.run_id.clone(),
            json: seal_json(thread_id, seq, record),
        };
        insert_event(&mut tx, thread_id, &event).await?;
        stored.push(event);
    }
    tx.commit().await?;
    Ok(stored)
}

/// One finish in a transaction of its own: the group writer's fallback when a batch fails.
async fn finish_one(
    conn: &mut SqliteConnection,
    thread_id: &str,
    run_id: &str,
    status: &str,
    assistant_content: &str,
    event: &EventRecord,
) -> Result<StoredEvent, StoreError> {
    let mut tx = begin_write(conn).await?;
    let at = now();
    let closed = sqlx::query(
        "UPDATE runs SET status = ?, finished_at = ? \
         WHERE id = ? AND thread_id = ? AND status = 'running'",
    )
    .bind(status)
    .bind(&at)
    .bind(run_id)
    .bind(thread_id)
    .execute(&mut *tx)
    .await?;
    if closed.rows_affected() == 0 {
        return Err(StoreError::RunNotActive);
    }
    let (seq, owner) = reserve_seq(&mut tx, thread_id, 1).await?;
    let message_id = new_id("m");
    sqlx::query(
        "INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at) \
         VALUES (?, ?, ?, NULL, 'assistant', ?, ?, ?)",
    )
    .bind(&message_id)
    .bind(thread_id)
    .bind(&owner)
    .bind(assistant_content)
    .bind(run_id)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    let body = completed_body(event.body.clone(), status, &message_id, assistant_content);
    let record = EventRecord {
        run_id: run_id.to_string(),
        body,
    };
    let stored = seal(thread_id, seq, record);
    insert_event(&mut tx, thread_id, &stored).await?;
    tx.commit().await?;
    Ok(stored)
}

async fn find_client_message(
    conn: &mut SqliteConnection,
    user_id: &str,
    client_id: &str,
) -> Result<Option<Accepted>, StoreError> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT thread_id, id, run_id FROM messages WHERE user_id = ? AND client_id = ?",
    )
    .bind(user_id)
    .bind(client_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(thread_id, message_id, run_id)| Accepted {
        thread_id,
        message_id,
        run_id,
        duplicate: true,
    }))
}

/// One accept in a transaction of its own: the group writer's fallback when a batch fails,
/// and the path of a client id repeated within one batch.
async fn accept_one(
    conn: &mut SqliteConnection,
    msg: NewMessage<'_>,
) -> Result<Accepted, StoreError> {
    let mut tx = begin_write(conn).await?;
    // Inside the write transaction, so no other writer can slip in between the
    // lookup and the insert (from this process; the unique index covers the rest).
    let seen: Option<(String, String, String)> = sqlx::query_as(
        "SELECT thread_id, id, run_id FROM messages WHERE user_id = ? AND client_id = ?",
    )
    .bind(msg.user_id)
    .bind(msg.client_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((thread_id, message_id, run_id)) = seen {
        return Ok(Accepted {
            thread_id,
            message_id,
            run_id,
            duplicate: true,
        });
    }
    let at = now();
    let thread_id = match msg.thread_id {
        Some(id) => {
            // Owner check and activity bump in one statement: zero rows means
            // missing or someone else's, and both answer ThreadNotFound.
            let hit = sqlx::query("UPDATE threads SET updated_at = ? WHERE id = ? AND user_id = ?")
                .bind(&at)
                .bind(id)
                .bind(msg.user_id)
                .execute(&mut *tx)
                .await?;
            if hit.rows_affected() == 0 {
                return Err(StoreError::ThreadNotFound);
            }
            id.to_string()
        }
        None => {
            let id = new_id("t");
            sqlx::query(
                "INSERT INTO threads (id, user_id, title, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&id)
            .bind(msg.user_id)
            .bind(title_from(msg.content))
            .bind(&at)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    let message_id = new_id("m");
    let run_id = new_id("r");
    let inserted = sqlx::query(
        "INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at) \
         VALUES (?, ?, ?, ?, 'user', ?, ?, ?)",
    )
    .bind(&message_id)
    .bind(&thread_id)
    .bind(msg.user_id)
    .bind(msg.client_id)
    .bind(msg.content)
    .bind(&run_id)
    .bind(&at)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        if is_unique_violation(&e) {
            // Another process won the race on the same file: answer with its ids.
            drop(tx);
            return find_client_message(conn, msg.user_id, msg.client_id)
                .await?
                .ok_or(StoreError::Database(e.to_string()));
        }
        return Err(e.into());
    }
    sqlx::query(
        "INSERT INTO runs (id, thread_id, message_id, agent, status, started_at) \
         VALUES (?, ?, ?, ?, 'running', ?)",
    )
    .bind(&run_id)
    .bind(&thread_id)
    .bind(&message_id)
    .bind(msg.agent)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Accepted {
        thread_id,
        message_id,
        run_id,
        duplicate: false,
    })
}
