//! SQLite reads: thread lists, messages, event replay and the boot-time scan for open
//! runs. None of them writes, so none takes a transaction or the writer slot.
//!
//! A thread's messages and events are found through its runs (`runs_by_thread`): each run
//! row holds the user's message and the assistant's reply, and its events are indexed by
//! its integer `no` (migration 4, `batch/commit.rs`).

use futures_util::TryStreamExt;

use super::SqliteStore;
use crate::store::error::StoreError;
use crate::store::model::{MessageRow, OpenRun, ThreadColumns, ThreadSummary};
use crate::wire::StoredEvent;

impl SqliteStore {
    pub(crate) async fn open_runs(&self) -> Result<Vec<OpenRun>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT t.id, r.id FROM runs r JOIN threads t ON t.no = r.thread_no \
             WHERE r.status = 'running' ORDER BY r.no",
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
             WHERE user_id = ? ORDER BY updated_at DESC, created_at DESC, id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ThreadSummary::from_columns).collect())
    }

    pub(crate) async fn thread_owner(&self, thread_id: &str) -> Result<Option<String>, StoreError> {
        let owner = sqlx::query_scalar("SELECT user_id FROM threads WHERE id = ?")
            .bind(thread_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(owner)
    }

    pub(crate) async fn thread_messages(
        &self,
        thread_id: &str,
    ) -> Result<Vec<MessageRow>, StoreError> {
        // Run order (insertion), each user message followed by the reply that ended its run.
        type Row = (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT r.message_id, r.content, r.id, r.started_at, r.reply_id, r.reply, \
             r.finished_at FROM threads t JOIN runs r ON r.thread_no = t.no \
             WHERE t.id = ? ORDER BY r.no",
        )
        .bind(thread_id)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = Vec::with_capacity(rows.len() * 2);
        for (message_id, content, run_id, started_at, reply_id, reply, finished_at) in rows {
            let reply = reply_id.map(|id| MessageRow {
                message_id: id,
                role: "assistant".into(),
                content: reply.unwrap_or_default(),
                run_id: run_id.clone(),
                created_at: finished_at.unwrap_or_default(),
            });
            messages.push(MessageRow {
                message_id,
                role: "user".into(),
                content,
                run_id,
                created_at: started_at,
            });
            messages.extend(reply);
        }
        Ok(messages)
    }

    pub(crate) async fn events_after(
        &self,
        thread_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = limit as usize;
        let mut events = Vec::new();
        if limit == 0 {
            return Ok(events);
        }
        // Rows hold a run's consecutive events (`batch/commit.rs`); read them in order
        // until `limit` events after `after_seq` are in hand.
        let mut rows = sqlx::query_as::<_, (i64, i64, String, String)>(
            "SELECT e.first_seq, e.last_seq, r.id, e.body FROM threads t \
             JOIN runs r ON r.thread_no = t.no \
             JOIN events e ON e.run_no = r.no AND e.last_seq > ? \
             WHERE t.id = ? ORDER BY e.first_seq",
        )
        .bind(after_seq)
        .bind(thread_id)
        .fetch(&self.pool);
        while let Some((first, last, run_id, body)) = rows.try_next().await? {
            let texts = body.split('\n');
            let mut seq = first;
            for json in texts {
                if seq > after_seq && events.len() < limit {
                    events.push(StoredEvent {
                        seq,
                        run_id: run_id.clone(),
                        json: json.to_string(),
                    });
                }
                seq += 1;
            }
            if seq != last + 1 {
                return Err(StoreError::Database(format!(
                    "the stored events {first}..={last} of run {run_id} hold {} texts",
                    seq - first
                )));
            }
            if events.len() == limit {
                break;
            }
        }
        Ok(events)
    }
}
