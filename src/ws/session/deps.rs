//! What sessions need from the process, gathered once per process and shared by every
//! connection through one `Arc`: the configuration values a session reads, the verifier,
//! the event bus, the per-user connection cap, chat submission, runs (for `cancel`) and
//! the store. An open connection holds this one pointer instead of its own copy of `App`,
//! since what an idle connection holds is memory every connection pays for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::auth::Verifier;
use crate::bus::EventBus;
use crate::config::{AuthMode, Config, RejectAt};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::runs::{Chat, RunManager};
use crate::store::Store;

/// The process-scope components a session uses.
pub struct SessionDeps {
    pub(super) settings: Settings,
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

/// The configuration values a session reads.
pub(super) struct Settings {
    pub max_message_bytes: usize,
    pub heartbeat: Duration,
    pub pong_timeout: Duration,
    pub send_queue_bytes: usize,
    pub send_timeout: Duration,
    pub messages_per_minute: u32,
    pub max_connections_per_user: Option<u32>,
    pub auth_mode: AuthMode,
    pub reject_at: RejectAt,
    pub first_message_timeout: Duration,
    /// `auth.jwt.leeway_s`, 0 without JWT.
    pub leeway_s: u64,
}

impl Settings {
    fn new(config: &Config) -> Self {
        let ws = &config.websocket;
        Self {
            max_message_bytes: ws.max_message_bytes,
            heartbeat: ws.heartbeat,
            pong_timeout: ws.pong_timeout,
            send_queue_bytes: ws.send_queue_bytes,
            send_timeout: ws.send_timeout,
            messages_per_minute: ws.messages_per_minute,
            max_connections_per_user: ws.max_connections_per_user,
            auth_mode: config.auth.mode,
            reject_at: config.auth.reject_at,
            first_message_timeout: config.auth.first_message_timeout,
            leeway_s: config.auth.jwt.as_ref().map_or(0, |j| j.leeway_s),
        }
    }
}

impl SessionDeps {
    /// Gathers what sessions use from the process (once per process, not per connection).
    pub fn new(app: &App) -> Arc<Self> {
        Arc::new(Self {
            settings: Settings::new(&app.config),
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
