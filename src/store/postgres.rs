//! The Postgres store: the store of record in production, shared by every node.
//!
//! Concurrency rests on row locks rather than on anything in this process, because
//! other nodes write the same tables: appenders serialize on the `UPDATE` of the thread
//! row that bumps `last_seq`, and duplicate client ids are caught by the unique index
//! (the loser's insert waits for the winner's commit, fails, and reads the winner's ids).
//! Each write is one statement (`write.rs`), so one round trip that commits on its own.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::lease::Node;
use super::migrations;
use super::model::{Accepted, NewMessage};
use crate::wire::{EventRecord, StoredEvent};

mod batch;
mod group;
mod lease;
mod read;
mod request;
mod write;

/// A pooled connection idle for longer than this is pinged before it is handed out, so
/// one that died while idle (a restarted server, a failover) is replaced instead of
/// failing a write. A busy pool hands out connections idle for far less: pinging each
/// of those was one round trip in four of a chat run.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// A connection pool to one Postgres database and the queue of its group writer.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    queue: mpsc::Sender<request::Request>,
}

impl PgStore {
    /// Connects (failing after `connect_timeout` if the server does not answer) and
    /// migrates.
    pub(crate) async fn connect(
        url: &str,
        pool_size: u32,
        connect_timeout: Duration,
        node: Option<&Node>,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("cannot parse postgres URL: {e}")))?;
        if let Some(node) = node {
            // Read by the `runs` column defaults (migration 5): each run row records its
            // node and lease without the statements that insert runs knowing about it.
            options = options.options([
                ("portcullis.node_id", node.id.clone()),
                ("portcullis.run_lease_ms", node.lease_ms().to_string()),
            ]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(connect_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        // An error discards the connection; the pool opens another.
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        migrations::postgres().run(&pool).await?;
        let (queue, requests) = mpsc::channel(group::QUEUE);
        // Ends when the last clone of the store (the last sender) is dropped.
        tokio::spawn(group::run(pool.clone(), requests));
        Ok(Self { pool, queue })
    }

    /// Queues a write for the group writer and waits for its answer.
    async fn submit<T>(
        &self,
        request: impl FnOnce(request::Reply<T>) -> request::Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the store's writer has stopped".into());
        self.queue.send(request(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub(crate) async fn accept_message(&self, msg: NewMessage<'_>) -> Result<Accepted, StoreError> {
        let accept = request::Accept {
            user_id: msg.user_id.to_string(),
            client_id: msg.client_id.to_string(),
            thread_id: msg.thread_id.map(str::to_string),
            content: msg.content.to_string(),
            agent: msg.agent.to_string(),
        };
        self.submit(|reply| request::Request::Accept(accept, reply))
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
        let thread_id = thread_id.to_string();
        self.submit(|reply| request::Request::Append(request::Append { thread_id, events }, reply))
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
        let finish = request::Finish {
            thread_id: thread_id.to_string(),
            run_id: run_id.to_string(),
            status: status.to_string(),
            content: assistant_content.to_string(),
            event,
        };
        self.submit(|reply| request::Request::Finish(finish, reply))
            .await
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
}
