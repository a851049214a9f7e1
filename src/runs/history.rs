//! The `thread_history` tool's view of a run's thread: this user's own thread, read from
//! the store, nothing else.

use futures_util::future::BoxFuture;

use crate::agent::ThreadHistory;
use crate::store::Store;

/// The `thread_history` tool's view: this user's own thread, nothing else.
pub(super) struct StoreHistory {
    pub(super) store: Store,
    pub(super) user_id: String,
    pub(super) thread_id: String,
}

impl ThreadHistory for StoreHistory {
    fn recent_messages(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, String>> {
        Box::pin(async move {
            let rows = self
                .store
                .thread_messages(&self.user_id, &self.thread_id)
                .await
                .map_err(|e| e.to_string())?;
            let skip = rows.len().saturating_sub(limit);
            Ok(rows
                .into_iter()
                .skip(skip)
                .map(|m| (m.role, m.content))
                .collect())
        })
    }
}
