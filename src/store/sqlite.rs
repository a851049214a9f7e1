//! The SQLite store: the embedded default, one file, WAL journal.
//!
//! SQLite allows one writer at a time. Rather than letting concurrent writers collide and
//! sleep in SQLite's busy handler (which backs off in steps of up to 100 ms), every write
//! (`accept_message`, `append_events`, `finish_run`) queues for one writer task per store,
//! which commits them in batches with `BEGIN IMMEDIATE` on its own synchronous connection
//! (`group.rs`, `batch.rs`, `conn.rs`), so they never meet `SQLITE_BUSY` from each other.
//! Keeping that connection also keeps its page cache valid: SQLite drops a connection's
//! cache whenever another connection has written. Reads go through the `sqlx` pool and
//! take no lock: WAL lets them run beside the writer. Migrations run on the pool before
//! the writer starts. The busy timeout remains for other processes opening the file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

use super::OnCommit;
use super::error::StoreError;
use super::migrations;
use super::model::{Accepted, NewMessage};
use crate::wire::{EventRecord, StoredEvent};

mod batch;
mod conn;
mod group;
mod read;
mod request;
#[cfg(test)]
mod tests;

/// A pool on one SQLite file and the queue of its group-commit writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    queue: mpsc::Sender<request::Request>,
    /// How the group-commit writer opens its own connection (kept for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    writer: conn::WriterSpec,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the file.
    pub(crate) async fn connect(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let busy_timeout = connect_timeout.max(Duration::from_secs(5));
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("cannot parse sqlite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged message must survive a power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
            // The writer's setting (`conn::WAL_AUTOCHECKPOINT`), should a pooled
            // connection ever commit. Durability does not depend on it: each commit
            // fsyncs the WAL.
            .pragma("wal_autocheckpoint", conn::WAL_AUTOCHECKPOINT.to_string())
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
        let writer = conn::WriterSpec {
            path: options.get_filename().to_path_buf(),
            busy_timeout,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(connect_timeout)
            .connect_with(options)
            .await?;
        migrations::sqlite().run(&pool).await?;
        let (queue, requests) = mpsc::channel(group::QUEUE);
        // Ends when the last clone of the store (the last sender) is dropped.
        tokio::spawn(group::run(writer.clone(), pool.clone(), requests));
        Ok(Self {
            pool,
            queue,
            writer,
        })
    }

    /// Hands a write to the group-commit writer.
    async fn submit(&self, request: request::Request) -> Result<(), StoreError> {
        self.queue.send(request).await.map_err(|_| writer_gone())
    }

    /// Queues the request `op` builds around a fresh reply channel and waits for the
    /// writer's answer.
    async fn ask<T>(
        &self,
        thread_id: String,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> request::Op,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(request::Request {
            thread_id,
            op: op(reply),
        })
        .await?;
        answer.await.map_err(|_| writer_gone())?
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    pub(crate) async fn accept_message(&self, msg: NewMessage<'_>) -> Result<Accepted, StoreError> {
        self.ask(String::new(), |reply| request::Op::Accept {
            user_id: msg.user_id.to_string(),
            client_id: msg.client_id.to_string(),
            thread_id: msg.thread_id.map(str::to_string),
            content: msg.content.to_string(),
            agent: msg.agent.to_string(),
            reply,
        })
        .await
    }

    pub(crate) async fn append_events(
        &self,
        thread_id: &str,
        events: Vec<EventRecord>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.ask(thread_id.to_string(), |reply| request::Op::Append {
            events,
            reply: request::Reply::Wait(reply),
        })
        .await
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
        self.submit(request::Request {
            thread_id: thread_id.to_string(),
            op: request::Op::Append {
                events,
                reply: request::Reply::Then(then),
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
        let reply = request::Reply::Wait(reply);
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
        let reply = request::Reply::Then(then);
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
        reply: request::Reply<StoredEvent>,
    ) -> Result<(), StoreError> {
        self.submit(request::Request {
            thread_id: thread_id.to_string(),
            op: request::Op::Finish {
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
