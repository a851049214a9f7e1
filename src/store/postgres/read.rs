//! Postgres reads: thread lists, messages, event replay and the boot-time scan for open
//! runs. None of them writes, so none takes a transaction.

use super::PgStore;
use crate::store::error::StoreError;
use crate::store::model::{MessageRow, OpenRun, ThreadColumns, ThreadSummary};
use crate::wire::StoredEvent;

impl PgStore {
    pub(crate) async fn open_runs(&self) -> Result<Vec<OpenRun>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT thread_id, id FROM runs WHERE status = 'running' ORDER BY started_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(OpenRun::from_columns).collect())
    }

    pub(crate) async fn list_threads(
        &self,
        user_id: &str,
    ) -> Result<Vec<ThreadSummary>, StoreError> {
        let rows: Vec<ThreadColumns> = sqlx::query_as(
            "SELECT id, title, created_at, updated_at, last_seq FROM threads \
             WHERE user_id = $1 ORDER BY updated_at DESC, created_at DESC, id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ThreadSummary::from_columns).collect())
    }

    pub(crate) async fn thread_owner(&self, thread_id: &str) -> Result<Option<String>, StoreError> {
        let owner = sqlx::query_scalar("SELECT user_id FROM threads WHERE id = $1")
            .bind(thread_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(owner)
    }

    pub(crate) async fn thread_messages(
        &self,
        thread_id: &str,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
            // Run order, each user message followed by the reply that ended its run (as
            // on SQLite, where one row holds both).
            "SELECT m.id, m.role, m.content, m.run_id, m.created_at FROM messages m \
             JOIN messages u ON u.thread_id = m.thread_id AND u.run_id = m.run_id \
             AND u.role = 'user' WHERE m.thread_id = $1 ORDER BY u.n, m.n",
        )
        .bind(thread_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(message_id, role, content, run_id, created_at)| MessageRow {
                    message_id,
                    role,
                    content,
                    run_id,
                    created_at,
                },
            )
            .collect())
    }

    pub(crate) async fn events_after(
        &self,
        thread_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, run_id, body FROM events WHERE thread_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(thread_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, run_id, json)| StoredEvent { seq, run_id, json })
            .collect())
    }
}
