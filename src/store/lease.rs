//! Runs across nodes, as the store sees them: the node a process is, each run's lease,
//! the cancel flag, and whose turn it is in a thread.
//!
//! On Postgres (migration 5) a run row records its node and a lease the node renews
//! while the run runs; any node closes a running run whose lease expired with an
//! `agent_completed` of status `error`, code `RUN_INTERRUPTED`, so "every `agent_started`
//! has exactly one `agent_completed`" holds when a node dies. A SQLite file has one node
//! by construction (the validator refuses more), so there every answer here is the
//! trivial one and boot recovery closes every running run, as before.

use std::time::Duration;

use serde_json::{Map, json};

use super::model::new_id;
use super::{Db, Store, StoreError};
use crate::wire::ErrorCode;
use crate::wire::{EventBody, EventRecord, StoredEvent};

/// This process as a node sharing the database: a random id made at boot and the lease
/// its runs get.
#[derive(Debug, Clone)]
pub struct Node {
    /// `n_` and 32 hex digits; logged at boot and shown by `/ready`.
    pub id: String,
    /// `server.run_lease_ms`.
    pub lease: Duration,
}

impl Node {
    /// A node with a fresh random id. Not persisted: a restarted node's old runs are
    /// closed by lease expiry like any dead node's, which also holds when two processes
    /// were given the same data directory by mistake.
    pub fn new(lease: Duration) -> Node {
        Node {
            id: new_id("n"),
            lease,
        }
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// One of this node's running runs, as a renewal found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedRun {
    /// The run.
    pub run_id: String,
    /// Another node received a `cancel` for it.
    pub cancel_requested: bool,
}

/// A running run whose node stopped renewing its lease.
#[derive(Debug, Clone)]
pub(crate) struct StaleRun {
    pub thread_id: String,
    pub run_id: String,
    pub user_id: String,
    pub node_id: Option<String>,
}

/// A run this node closed for a dead node: the stored `agent_completed`, for its user.
#[derive(Debug, Clone)]
pub struct ClosedRun {
    /// Whose thread it is (the completion is published to them).
    pub user_id: String,
    /// The run's thread.
    pub thread_id: String,
    /// The stored `agent_completed`.
    pub event: StoredEvent,
}

/// The `agent_completed` error of a run whose node died.
pub(crate) fn lease_expired_event(run_id: &str) -> EventRecord {
    let mut body = Map::new();
    body.insert(
        "error".into(),
        json!({
            "code": ErrorCode::RunInterrupted.as_str(),
            "message": "the node running this run stopped (its lease expired); send the message again"
        }),
    );
    EventRecord {
        run_id: run_id.to_string(),
        body: EventBody::Map(body),
    }
}

impl Store {
    /// The node this store was connected as ([`Store::connect_node`]).
    pub fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }

    /// Renews the leases of this node's running runs (Postgres; nothing on SQLite or
    /// without a node). Returns them, each with its cancel flag.
    pub async fn renew_leases(&self) -> Result<Vec<LeasedRun>, StoreError> {
        match (&self.0.db, &self.0.node) {
            (Db::Postgres(pg), Some(node)) => {
                Box::pin(pg.renew_leases(&node.id, node.lease_ms())).await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Closes every running run whose lease expired (a dead node's) with a stored
    /// `RUN_INTERRUPTED` completion; with `unleased`, also runs that never had a lease.
    /// Returns what it stored, for publishing. A run closed meanwhile by its node or by
    /// another node's sweep is skipped. Nothing on SQLite.
    pub async fn close_expired_runs(&self, unleased: bool) -> Result<Vec<ClosedRun>, StoreError> {
        let Db::Postgres(pg) = &self.0.db else {
            return Ok(Vec::new());
        };
        let stale = Box::pin(pg.stale_runs(unleased)).await?;
        let mut closed = Vec::with_capacity(stale.len());
        for run in stale {
            let event = lease_expired_event(&run.run_id);
            match self
                .finish_run(&run.thread_id, &run.run_id, "error", "", event)
                .await
            {
                Ok(event) => {
                    tracing::warn!(run_id = %run.run_id, node_id = run.node_id.as_deref().unwrap_or("-"), "closed a run whose node stopped renewing its lease");
                    closed.push(ClosedRun {
                        user_id: run.user_id,
                        thread_id: run.thread_id,
                        event,
                    });
                }
                Err(StoreError::RunNotActive) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(closed)
    }

    /// Asks whichever node executes `run_id` to cancel it (the flag is read at its next
    /// renewal). False when `user_id` has no such running run, and always on SQLite,
    /// whose only node knows its runs without asking the database.
    pub async fn request_cancel(&self, user_id: &str, run_id: &str) -> Result<bool, StoreError> {
        match &self.0.db {
            Db::Postgres(pg) => Box::pin(pg.request_cancel(user_id, run_id)).await,
            Db::Sqlite(_) => Ok(false),
        }
    }

    /// Whether an earlier run of the thread still runs on some node, so `run_id` must
    /// wait. Always false on SQLite (runs of one node take turns in memory).
    pub async fn earlier_run_running(
        &self,
        thread_id: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        match &self.0.db {
            Db::Postgres(pg) => Box::pin(pg.earlier_run_running(thread_id, run_id)).await,
            Db::Sqlite(_) => Ok(false),
        }
    }
}
