//! Process-scope components, built once at boot from the validated configuration and
//! shared by every filter and connection: the store, the JWT verifier, the agent registry,
//! the event bus, the run manager, metrics, the rate limiter, the Redis pool and the
//! connection cap.
//! Nothing in here is per user; per-user state lives in sessions and runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Registry;
use crate::auth::Verifier;
use crate::bus::EventBus;
use crate::compile::Compiled;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::runs::{Chat, RunManager};
use crate::store::{Node, Store};

/// Everything built once per process.
#[derive(Clone)]
pub struct App {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The store, once connected (the server listens before the database answers, so
    /// `ready` can say what is missing instead of the process dying at boot).
    pub store: Arc<OnceCell<Store>>,
    /// JWT verification (absent when `auth.mode = "none"`).
    pub verifier: Option<Arc<Verifier>>,
    /// Configured agents.
    pub agents: Arc<Registry>,
    /// Routes stored events to the user's connections (`components.event_bus`).
    pub bus: Arc<dyn EventBus>,
    /// In-flight runs.
    pub runs: Arc<RunManager>,
    /// Chat submission: what a `user_message` needs, whatever transport carried it.
    pub chat: Arc<Chat>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Chat message rate, per user or per connection (`components.rate_limiter.scope`).
    pub limiter: Arc<RateLimiter>,
    /// Redis pool (process scope), when a Redis service is declared. deadpool connects
    /// lazily, so building it at boot opens no connection.
    pub redis: Option<deadpool_redis::Pool>,
    /// Connection cap (`server.max_connections`).
    pub connections: Arc<Semaphore>,
    /// This process as a node sharing the store: a random id made at boot, logged and
    /// shown by `/ready`, and the lease of its runs (`server.run_lease_ms`).
    pub node: Node,
    /// Fired after runs drained: sessions close with 1001.
    pub close_sessions: CancellationToken,
    /// Open sessions, waited for on shutdown.
    pub sessions: TaskTracker,
    draining: Arc<AtomicBool>,
}

impl App {
    /// Assembles the process from its compiled components (`crate::compile` built and
    /// checked every one of them; nothing here can fail or touch the network).
    pub fn new(compiled: Compiled) -> App {
        let Compiled {
            config,
            verifier,
            agents,
            limiter,
            metrics,
            redis,
            bus,
        } = compiled;
        let node = Node::new(config.server.run_lease);
        tracing::info!(node_id = %node.id, "node started");
        let store = Arc::new(OnceCell::new());
        let runs = Arc::new(RunManager::default());
        let draining = Arc::new(AtomicBool::new(false));
        let chat = Arc::new(Chat {
            agents: Arc::clone(&agents),
            limiter: Arc::clone(&limiter),
            runs: Arc::clone(&runs),
            store: Arc::clone(&store),
            bus: Arc::clone(&bus),
            metrics: Arc::clone(&metrics),
            draining: Arc::clone(&draining),
            messages_per_minute: config.websocket.messages_per_minute,
            several_nodes: config.server.nodes > 1,
        });
        App {
            node,
            redis,
            limiter,
            connections: Arc::new(Semaphore::new(config.server.max_connections as usize)),
            config,
            store,
            verifier,
            agents,
            bus,
            runs,
            chat,
            metrics,
            close_sessions: CancellationToken::new(),
            sessions: TaskTracker::new(),
            draining,
        }
    }

    /// Starts what works in the background until `shutdown`: a remote JWT key source, the
    /// event bus's links, the MCP tool servers, and the refresh of this node's connection
    /// entries in Redis (shared per-user cap).
    /// The server listens meanwhile; `ready` reports their state.
    pub fn start(&self, shutdown: CancellationToken) {
        self.agents.start(&shutdown);
        if let Some(verifier) = &self.verifier {
            verifier.start(shutdown.clone());
        }
        self.bus.start(Arc::clone(&self.store), shutdown.clone());
        // Keeps this node's per-user connection entries alive in Redis (shared limits).
        self.limiter.start(shutdown);
    }

    /// Connects the store, retrying with backoff until it answers or shutdown begins.
    /// Interrupted runs of a previous process are closed so replay stays consistent.
    pub async fn connect_store(&self, shutdown: CancellationToken) {
        let Some((name, svc)) = self.config.database() else {
            return;
        };
        let Some(url) = svc.url.clone() else { return };
        let mut delay = Duration::from_millis(200);
        loop {
            let node = self.node.clone();
            match Store::connect_node(url.expose(), svc.pool_size, svc.connect_timeout, node).await
            {
                Ok(store) => {
                    store.record_calls(self.metrics.store_calls.clone());
                    match store.recover_runs_at_boot().await {
                        Ok(closed) if !closed.is_empty() => {
                            tracing::warn!(
                                runs = closed.len(),
                                "closed runs interrupted by a restart"
                            );
                            crate::runs::lease::publish_closed(self.bus.as_ref(), closed);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "could not close interrupted runs"),
                    }
                    // Renews this node's leases until its runs have drained (`drain`).
                    tokio::spawn(crate::runs::lease::keep(
                        store.clone(),
                        Arc::clone(&self.runs),
                        Arc::clone(&self.bus),
                        self.close_sessions.clone(),
                    ));
                    let _ = self.store.set(store);
                    tracing::info!(service = name, "store connected");
                    return;
                }
                Err(e) => {
                    tracing::error!(service = name, error = %e, retry_in_ms = delay.as_millis() as u64, "store not reachable; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// The networks whose forwarded client addresses are believed (`crate::proxy`).
    pub fn trusted_proxies(&self) -> Arc<[ipnet::IpNet]> {
        self.config.server.trusted_proxies.clone().into()
    }

    /// True once shutdown has begun (`ready` answers 503, new messages are refused).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the process as draining.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Shutdown after the listener stopped: let runs finish (up to the grace period),
    /// then close every session with 1001 once its queue is flushed.
    pub async fn drain(&self) {
        self.start_draining();
        self.runs.drain(self.config.server.shutdown_grace).await;
        self.close_sessions.cancel();
        self.sessions.close();
        if tokio::time::timeout(Duration::from_secs(5), self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close in time");
        }
    }
}
