//! Postgres side of runs across nodes (migration 5): lease renewal, the scan for runs
//! whose lease expired, the cancel flag another node sets, and the check that a run's
//! turn has come. Lease times are compared with the database's clock (epoch ms), never a
//! node's, so clock skew between nodes cannot expire a live run.

use super::PgStore;
use crate::store::error::StoreError;
use crate::store::lease::{LeasedRun, StaleRun};

/// The database's clock in epoch milliseconds, as the column defaults write it (a macro
/// so statements stay `&'static str`, which sqlx wants for SQL it has not audited).
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

impl PgStore {
    /// Extends the lease of every running run of `node_id` by `lease_ms` from now, and
    /// says for each whether another node asked for it to be cancelled. A run of this
    /// node missing from the answer is no longer running in the database.
    pub(crate) async fn renew_leases(
        &self,
        node_id: &str,
        lease_ms: i64,
    ) -> Result<Vec<LeasedRun>, StoreError> {
        // The runs are locked first, in id order, as every write locks runs (`write.rs`,
        // `batch.rs`): locked in scan order, a renewal and a batch of appends deadlocked,
        // which Postgres broke after `deadlock_timeout` (1 s; docs/PERFORMANCE.md item 14).
        let rows: Vec<(String, bool)> = sqlx::query_as(concat!(
            "WITH locked AS (SELECT id FROM runs WHERE node_id = $1 AND status = 'running' \
             ORDER BY id FOR UPDATE) \
             UPDATE runs SET lease_until = ",
            now_ms!(),
            " + $2 FROM locked WHERE runs.id = locked.id \
             RETURNING runs.id, runs.cancel_requested"
        ))
        .bind(node_id)
        .bind(lease_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(run_id, cancel_requested)| LeasedRun {
                run_id,
                cancel_requested,
            })
            .collect())
    }

    /// Running runs whose lease expired, oldest first; with `unleased`, also those
    /// without a lease (inserted by a binary before migration 5), which only a boot
    /// closes.
    pub(crate) async fn stale_runs(&self, unleased: bool) -> Result<Vec<StaleRun>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(concat!(
            "SELECT r.thread_id, r.id, t.user_id, r.node_id FROM runs r \
             JOIN threads t ON t.id = r.thread_id \
             WHERE r.status = 'running' AND (r.lease_until < ",
            now_ms!(),
            " OR ($1 AND r.lease_until IS NULL)) ORDER BY r.turn"
        ))
        .bind(unleased)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(thread_id, run_id, user_id, node_id)| StaleRun {
                thread_id,
                run_id,
                user_id,
                node_id,
            })
            .collect())
    }

    /// Flags a running run of `user_id` for cancellation by whichever node executes it;
    /// false when the user has no such running run.
    pub(crate) async fn request_cancel(
        &self,
        user_id: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        let hit = sqlx::query(
            "UPDATE runs r SET cancel_requested = true FROM threads t \
             WHERE r.id = $1 AND r.status = 'running' AND t.id = r.thread_id \
             AND t.user_id = $2",
        )
        .bind(run_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(hit.rows_affected() > 0)
    }

    /// Whether a run of the thread accepted before `run_id` is still running (on any
    /// node): `run_id` must wait for its turn. Every run asks once, so the group writer
    /// asks for many at once (`group.rs`, `batch::TURNS`).
    pub(crate) async fn earlier_run_running(
        &self,
        thread_id: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        let turn = super::request::Turn {
            thread_id: thread_id.to_string(),
            run_id: run_id.to_string(),
        };
        self.submit(|reply| super::request::Request::Turn(turn, reply))
            .await
    }
}
