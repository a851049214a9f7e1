//! Run scope: the context one agent run is given, and the traits through which it reaches
//! the outside world (the caller's thread store, the clock).
//!
//! Everything that names a user lives here and is built per message by the caller; the
//! process-scope [`crate::agent::Registry`] never holds any of it.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// Read access to the messages of the run's own thread, supplied by the caller.
///
/// The caller builds it for the run's user and thread, so the `thread_history` tool can
/// only ever see that user's conversation. It returns a boxed future (not `async fn`) so
/// it can be used as `Arc<dyn ThreadHistory>`.
pub trait ThreadHistory: Send + Sync {
    /// The most recent `limit` messages, oldest first, as `(role, content)` pairs where
    /// role is `user` or `assistant`. The error is a message safe to show the user.
    fn recent_messages(&self, limit: usize)
    -> BoxFuture<'_, Result<Vec<(String, String)>, String>>;
}

/// A history that has nothing in it, for callers without a thread store (and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyHistory;

impl ThreadHistory for EmptyHistory {
    fn recent_messages(
        &self,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Wall-clock source for the `clock` tool, injectable so tests are deterministic.
///
/// Any `Fn() -> DateTime<Utc>` is a clock, so `Arc::new(Utc::now)` is the real one.
pub trait Clock: Send + Sync {
    /// The current time in UTC.
    fn now(&self) -> DateTime<Utc>;
}

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// Everything one run needs to know about who asked what; built per user message.
#[derive(Clone)]
pub struct RunContext {
    /// Id of this run (`run_id` on the wire).
    pub run_id: String,
    /// Thread the message belongs to.
    pub thread_id: String,
    /// The authenticated user who sent the message.
    pub user_id: String,
    /// The stored user message this run answers.
    pub message_id: String,
    /// Id the caller will give the stored assistant answer (`agent_completed.message.id`).
    pub assistant_message_id: String,
    /// The user's message text.
    pub content: String,
    /// Fired by a `cancel` message or server shutdown; the run ends `cancelled`.
    pub cancel: CancellationToken,
    /// The user's own thread, for the `thread_history` tool.
    pub history: Arc<dyn ThreadHistory>,
}

impl fmt::Debug for RunContext {
    // Content is user text; it is left out so a stray `?ctx` in a log line does not leak it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.run_id)
            .field("thread_id", &self.thread_id)
            .field("user_id", &self.user_id)
            .field("message_id", &self.message_id)
            .field("assistant_message_id", &self.assistant_message_id)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}
