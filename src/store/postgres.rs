//! The Postgres store: the store of record in production, shared by every node.
//!
//! Concurrency rests on row locks rather than on anything in this process, because
//! other nodes write the same tables: appenders serialize on the `UPDATE` of the thread
//! row that bumps `last_seq`, and duplicate client ids are caught by the unique index
//! (the loser's insert waits for the winner's commit, fails, and reads the winner's ids).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::error::{StoreError, is_unique_violation};
use super::lease::Node;
use super::migrations;
use super::model::{
    Accepted, EventRecord, NewMessage, StoredEvent, completed_body, new_id, now, seal, title_from,
};

mod lease;
mod read;

/// A connection pool to one Postgres database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
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
            .connect_with(options)
            .await?;
        migrations::postgres().run(&pool).await?;
        Ok(Self { pool })
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

    async fn find_client_message(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<Accepted>, StoreError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT thread_id, id, run_id FROM messages WHERE user_id = $1 AND client_id = $2",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(thread_id, message_id, run_id)| Accepted {
            thread_id,
            message_id,
            run_id,
            duplicate: true,
        }))
    }

    pub(crate) async fn accept_message(&self, msg: NewMessage<'_>) -> Result<Accepted, StoreError> {
        // The common repeat (a client resending after a reconnect) is answered without
        // opening a transaction; a race past this check is caught by the unique index.
        if let Some(seen) = self.find_client_message(msg.user_id, msg.client_id).await? {
            return Ok(seen);
        }
        let mut tx = self.pool.begin().await?;
        let at = now();
        let thread_id = match msg.thread_id {
            Some(id) => {
                // Owner check and activity bump in one statement: zero rows means
                // missing or someone else's, and both answer ThreadNotFound.
                let hit = sqlx::query(
                    "UPDATE threads SET updated_at = $1 WHERE id = $2 AND user_id = $3",
                )
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
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(&id)
                .bind(msg.user_id)
                .bind(title_from(msg.content))
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
             VALUES ($1, $2, $3, $4, 'user', $5, $6, $7)",
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
                // Lost the race: the aborted transaction (and its new thread) is rolled
                // back, and the winner has committed, so its ids are visible now.
                tx.rollback().await?;
                return self
                    .find_client_message(msg.user_id, msg.client_id)
                    .await?
                    .ok_or(StoreError::Database(e.to_string()));
            }
            return Err(e.into());
        }
        sqlx::query(
            "INSERT INTO runs (id, thread_id, message_id, agent, status, started_at) \
             VALUES ($1, $2, $3, $4, 'running', $5)",
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

    /// Reserves `count` seqs on the thread and returns the first, plus the owner. The row
    /// lock taken here is held until commit, which is what keeps seqs gap-free and
    /// unique across concurrent appenders on every node.
    async fn reserve_seq(
        tx: &mut Transaction<'static, Postgres>,
        thread_id: &str,
        count: i64,
    ) -> Result<(i64, String), StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "UPDATE threads SET last_seq = last_seq + $1, updated_at = $2 WHERE id = $3 \
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

    /// Inserts a batch in one statement (one round trip) by binding columns as arrays.
    async fn insert_events(
        tx: &mut Transaction<'static, Postgres>,
        thread_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let runs: Vec<&str> = events.iter().map(|e| e.run_id.as_str()).collect();
        let bodies: Vec<&str> = events.iter().map(|e| e.json.as_str()).collect();
        sqlx::query(
            "INSERT INTO events (thread_id, seq, run_id, body) \
             SELECT $1, s, r, b FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[]) AS u(s, r, b)",
        )
        .bind(thread_id)
        .bind(seqs)
        .bind(runs)
        .bind(bodies)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub(crate) async fn append_events(
        &self,
        thread_id: &str,
        events: Vec<EventRecord>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let (first, _) = Self::reserve_seq(&mut tx, thread_id, events.len() as i64).await?;
        // Only running runs of this thread take events (as on SQLite, which finds a
        // thread's events through its runs): nothing of a run follows its completion.
        let mut run_ids: Vec<&str> = events.iter().map(|e| e.run_id.as_str()).collect();
        run_ids.sort_unstable();
        run_ids.dedup();
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE thread_id = $1 AND status = 'running' \
             AND id = ANY($2)",
        )
        .bind(thread_id)
        .bind(&run_ids)
        .fetch_one(&mut *tx)
        .await?;
        if running != run_ids.len() as i64 {
            return Err(StoreError::RunNotActive);
        }
        let stored: Vec<StoredEvent> = (first..)
            .zip(events)
            .map(|(seq, record)| seal(thread_id, seq, record))
            .collect();
        Self::insert_events(&mut tx, thread_id, &stored).await?;
        tx.commit().await?;
        Ok(stored)
    }

    pub(crate) async fn finish_run(
        &self,
        thread_id: &str,
        run_id: &str,
        status: &str,
        assistant_content: &str,
        event: EventRecord,
    ) -> Result<StoredEvent, StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = now();
        // `status = 'running'` makes a second finish (or a finish racing recovery) a
        // no-op that reports RunNotActive instead of a second agent_completed.
        let closed = sqlx::query(
            "UPDATE runs SET status = $1, finished_at = $2 \
             WHERE id = $3 AND thread_id = $4 AND status = 'running'",
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
        let (seq, owner) = Self::reserve_seq(&mut tx, thread_id, 1).await?;
        let message_id = new_id("m");
        sqlx::query(
            "INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at) \
             VALUES ($1, $2, $3, NULL, 'assistant', $4, $5, $6)",
        )
        .bind(&message_id)
        .bind(thread_id)
        .bind(&owner)
        .bind(assistant_content)
        .bind(run_id)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        let body = completed_body(event.body, status, &message_id, assistant_content);
        let record = EventRecord {
            run_id: run_id.to_string(),
            body,
        };
        let stored = seal(thread_id, seq, record);
        Self::insert_events(&mut tx, thread_id, std::slice::from_ref(&stored)).await?;
        tx.commit().await?;
        Ok(stored)
    }
}
