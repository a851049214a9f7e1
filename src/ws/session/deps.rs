//! What sessions need from the process, gathered once per process and shared by every
//! connection through one `Arc`: its `[websocket]` and `[auth]` sections, the verifier,
//! the event bus, the per-user connection cap, chat submission, runs (for `cancel`) and
//! the store. An open connection holds this one pointer instead of its own copy of `App`,
//! since what an idle connection holds is memory every connection pays for.

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::auth::Verifier;
use crate::bus::EventBus;
use crate::config::{AuthConfig, WebSocketConfig};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::runs::{Chat, RunManager};
use crate::store::Store;

/// The process-scope components a session uses.
pub struct SessionDeps {
    /// `[websocket]`: limits, heartbeat, queue budget.
    pub(super) websocket: WebSocketConfig,
    /// `[auth]`: mode, when a missing token is refused, the first-message wait, leeway.
    pub(super) auth: AuthConfig,
    pub(super) verifier: Option<Arc<Verifier>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) bus: Arc<dyn EventBus>,
    /// The per-user connection cap (`websocket.max_connections_per_user`).
    pub(super) limiter: Arc<RateLimiter>,
    pub(super) chat: Arc<Chat>,
    pub(super) runs: Arc<RunManager>,
    pub(super) store: Arc<OnceCell<Store>>,
    /// Fired after runs drained: sessions close with 1001.
    pub(super) close_sessions: CancellationToken,
    /// Where open connections' tasks are tracked, so shutdown waits for them.
    pub(super) sessions: TaskTracker,
}

impl SessionDeps {
    /// Gathers what sessions use from the process (once per process, not per connection).
    pub fn new(app: &App) -> Arc<Self> {
        Arc::new(Self {
            websocket: app.config.websocket.clone(),
            auth: app.config.auth.clone(),
            verifier: app.verifier.clone(),
            metrics: Arc::clone(&app.metrics),
            bus: Arc::clone(&app.bus),
            limiter: Arc::clone(&app.limiter),
            chat: Arc::clone(&app.chat),
            runs: Arc::clone(&app.runs),
            store: Arc::clone(&app.store),
            close_sessions: app.close_sessions.clone(),
            sessions: app.sessions.clone(),
        })
    }
}
